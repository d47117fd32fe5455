// The multi-layer perceptron family (mlp_tanh and its forward / backward ops): the
// layer loop, written once for every device.
//
//   y = L_n(tanh(L_{n−1}( … tanh(L_1(x)) … ))),   L_i(h) = h · W_iᵀ + b_i
//
// x [N, in], W_i [out_i, in_i] (nn.Linear's layout), b_i [out_i], y [N, out_n]. The
// matrix products are ATen's (MKL / oneDNN on CPU, cuBLAS on CUDA): they are the bulk
// of the FLOPs and already at the hardware's peak. What the fusion removes is the rest:
// per layer one addmm straight into the activation buffer and one in-place activation
// pass (the backend's element kernel, math in math.h), one mm per gradient and one
// in-place pass for the activation's chain rule, no autograd graph of a dozen nodes per
// MLP, and a tanh that is several times faster than ATen's on CPU (vec_math.h).
// csrc/cpu/mlp_cpu.cpp and csrc/cuda/mlp_cuda.cu supply the element kernels and
// register these functions; csrc/autograd/mlp_autograd.cpp ties forward to backward.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>
#include <vector>

#include "notmiwae_fast/checks.h"

namespace notmiwae_fast {
namespace mlp {

// The element kernels of one backend; both work in place on contiguous tensors.
struct ElementKernels {
  void (*tanh_)(at::Tensor& h);                                 // h ← tanh(h)
  void (*tanh_backward_)(at::Tensor& grad, const at::Tensor& y);  // grad ← grad · (1 − y²)
};

inline std::string indexed(const char* name, size_t i) {
  return std::string(name) + "[" + std::to_string(i) + "]";
}

// x [N, in]; weights[i] [out_i, in_i] with in_0 = in and in_i = out_{i−1}; biases[i]
// [out_i]; all on x's device, of x's dtype.
inline void check_layers(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  check_floating(x, "x");
  check_dim(x, 2, "x", "[N, in_features]");
  TORCH_CHECK_VALUE(!weights.empty(), "notmiwae_fast: argument 'weights' must hold at least "
                    "one layer; got an empty list");
  TORCH_CHECK_VALUE(weights.size() == biases.size(), "notmiwae_fast: arguments 'weights' and "
                    "'biases' must have one entry per layer; got ", weights.size(), " and ",
                    biases.size());
  int64_t width = x.size(1);
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string w = indexed("weights", i), b = indexed("biases", i);
    check_same_device_dtype(weights[i], w.c_str(), x, "x");
    check_same_device_dtype(biases[i], b.c_str(), x, "x");
    check_dim(weights[i], 2, w.c_str(), "[out_features, in_features]");
    check_size(weights[i], 1, width, w.c_str(), "[out_features, in_features]");
    width = weights[i].size(0);
    check_dim(biases[i], 1, b.c_str(), "[out_features]");
    check_size(biases[i], 0, width, b.c_str(), "[out_features]");
  }
}

// Returns y and, when keep_hidden, the n − 1 hidden activations (after tanh), which the
// backward pass needs.
inline std::tuple<at::Tensor, std::vector<at::Tensor>> forward(
    const at::Tensor& x, at::TensorList weights, at::TensorList biases,
    const ElementKernels& kernels, bool keep_hidden) {
  check_layers(x, weights, biases);
  std::vector<at::Tensor> hidden;
  at::Tensor h = x;
  for (size_t i = 0; i < weights.size(); ++i) {
    at::Tensor out = at::addmm(biases[i], h, weights[i].t());
    if (i + 1 < weights.size()) {
      kernels.tanh_(out);
      if (keep_hidden) hidden.push_back(out);
    }
    h = std::move(out);
  }
  return {h, hidden};
}

// Gradients of Σ grad · y with respect to x, every weight and every bias, from the
// hidden activations that forward kept.
inline std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> backward(
    const at::Tensor& grad, const at::Tensor& x, at::TensorList weights, at::TensorList hidden,
    const ElementKernels& kernels) {
  const size_t n = weights.size();
  TORCH_CHECK_VALUE(n >= 1 && hidden.size() + 1 == n, "notmiwae_fast: argument 'hidden' must "
                    "hold one activation per hidden layer (", n == 0 ? 0 : n - 1, "); got ",
                    hidden.size());
  check_floating(grad, "grad");
  check_dim(grad, 2, "grad", "[N, out_features]");
  check_size(grad, 0, x.size(0), "grad", "[N, out_features]");
  check_size(grad, 1, weights[n - 1].size(0), "grad", "[N, out_features]");
  std::vector<at::Tensor> grad_weights(n), grad_biases(n);
  at::Tensor g = grad;
  for (size_t j = n; j-- > 0;) {
    const at::Tensor& input = j == 0 ? x : hidden[j - 1];
    grad_weights[j] = at::mm(g.t(), input);
    grad_biases[j] = g.sum(0);
    at::Tensor g_input = at::mm(g, weights[j]);
    if (j > 0) {
      const std::string h = indexed("hidden", j - 1);
      check_same_device_dtype(hidden[j - 1], h.c_str(), x, "x");
      TORCH_CHECK_VALUE(hidden[j - 1].sizes() == g_input.sizes(), "notmiwae_fast: argument '",
                        h, "' must have shape ", g_input.sizes(), "; got ", hidden[j - 1].sizes());
      kernels.tanh_backward_(g_input, hidden[j - 1]);
    }
    g = std::move(g_input);
  }
  return {g, grad_weights, grad_biases};
}

}  // namespace mlp
}  // namespace notmiwae_fast
