// Argument checks of the latent family (latent_terms and its backward), shared by the
// CPU and CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "notmiwae_fast/checks.h"

namespace notmiwae_fast {

// mu, std [B, L]; eps [B, K, L]; one device and floating dtype.
inline void check_latent(const at::Tensor& mu, const at::Tensor& std, const at::Tensor& eps) {
  check_floating(mu, "mu");
  check_dim(mu, 2, "mu", "[B, L]");
  check_same_device_dtype(std, "std", mu, "mu");
  check_dim(std, 2, "std", "[B, L]");
  check_size(std, 0, mu.size(0), "std", "[B, L] (B from mu)");
  check_size(std, 1, mu.size(1), "std", "[B, L] (L from mu)");
  check_same_device_dtype(eps, "eps", mu, "mu");
  check_dim(eps, 3, "eps", "[B, K, L]");
  check_size(eps, 0, mu.size(0), "eps", "[B, K, L] (B from mu)");
  check_size(eps, 2, mu.size(1), "eps", "[B, K, L] (L from mu)");
}

// An incoming gradient, if given, has the shape of the output it belongs to.
inline void check_latent_grad(const std::optional<at::Tensor>& grad, const at::Tensor& like,
                              at::IntArrayRef shape, const char* name) {
  if (!grad.has_value() || !grad->defined()) return;
  check_same_device_dtype(*grad, name, like, "mu");
  TORCH_CHECK_VALUE(grad->sizes() == shape, "notmiwae_fast: argument '", name, "' must have shape ",
                    shape, "; got ", grad->sizes());
}

// An optional incoming gradient as a contiguous tensor; undefined when not given.
inline at::Tensor contiguous_if_given(const std::optional<at::Tensor>& grad) {
  return grad.has_value() && grad->defined() ? grad->contiguous() : at::Tensor();
}

// The incoming gradients of latent_terms_backward (for z [B, K, L], log p and log q
// [B, K]), checked and contiguous; undefined where not given.
struct LatentOutputGrads {
  at::Tensor z;
  at::Tensor log_p;
  at::Tensor log_q;
};

inline LatentOutputGrads latent_output_grads(const std::optional<at::Tensor>& grad_z,
                                             const std::optional<at::Tensor>& grad_log_p,
                                             const std::optional<at::Tensor>& grad_log_q,
                                             const at::Tensor& eps) {
  const at::IntArrayRef rows = eps.sizes().slice(0, 2);  // the [B, K] of the row terms
  check_latent_grad(grad_z, eps, eps.sizes(), "grad_z");
  check_latent_grad(grad_log_p, eps, rows, "grad_log_p");
  check_latent_grad(grad_log_q, eps, rows, "grad_log_q");
  return {contiguous_if_given(grad_z), contiguous_if_given(grad_log_p),
          contiguous_if_given(grad_log_q)};
}

}  // namespace notmiwae_fast
