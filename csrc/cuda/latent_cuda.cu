// CUDA kernels of the latent family: latent_terms and latent_terms_backward, with the
// math of notmiwae_fast/math.h (latent_term, latent_term_grad). One thread per row
// (b, k) in the forward, one per (b, l) in the backward (summing over k). float32,
// float64, float16 and bfloat16 (half types compute in float32, at::opmath_type).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "launch.cuh"
#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/latent.h"
#include "notmiwae_fast/math.h"

namespace notmiwae_fast {
namespace {

using cuda::element_blocks;
constexpr int kThreads = cuda::kElementThreads;

template <typename scalar_t>
__global__ void latent_forward_kernel(const scalar_t* __restrict__ mu,
                                      const scalar_t* __restrict__ sd,
                                      const scalar_t* __restrict__ eps, int64_t rows, int64_t K,
                                      int64_t L, scalar_t* __restrict__ z,
                                      scalar_t* __restrict__ log_p, scalar_t* __restrict__ log_q) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t constant = static_cast<acc_t>(L) * static_cast<acc_t>(math::kHalfLog2Pi);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / K;
    acc_t sum_p = 0, sum_q = 0;
    for (int64_t l = 0; l < L; ++l) {
      const acc_t std_bl = sd[b * L + l];
      const auto t = math::latent_term(static_cast<acc_t>(mu[b * L + l]), std_bl,
                                       static_cast<acc_t>(eps[i * L + l]));
      z[i * L + l] = static_cast<scalar_t>(t.z);
      sum_p += t.log_p;
      sum_q += t.log_q_without_log_std - math::LibM::Log(std_bl);
    }
    log_p[i] = static_cast<scalar_t>(sum_p - constant);
    log_q[i] = static_cast<scalar_t>(sum_q - constant);
  }
}

template <typename scalar_t>
__global__ void latent_backward_kernel(
    const scalar_t* __restrict__ gz, const scalar_t* __restrict__ gp,
    const scalar_t* __restrict__ gq, const scalar_t* __restrict__ mu,
    const scalar_t* __restrict__ sd, const scalar_t* __restrict__ eps, int64_t B, int64_t K,
    int64_t L, scalar_t* __restrict__ grad_mu, scalar_t* __restrict__ grad_std) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < B * L;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = j / L, l = j % L;
    const acc_t mu_bl = mu[j], std_bl = sd[j];
    acc_t sum_mu = 0, sum_std = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t i = b * K + k;
      const acc_t eps_i = eps[i * L + l];
      const auto g = math::latent_term_grad<acc_t>(
          gz ? static_cast<acc_t>(gz[i * L + l]) : acc_t(0),
          gp ? static_cast<acc_t>(gp[i]) : acc_t(0), gq ? static_cast<acc_t>(gq[i]) : acc_t(0),
          mu_bl + std_bl * eps_i, std_bl, eps_i);
      sum_mu += g.mu;
      sum_std += g.std;
    }
    grad_mu[j] = static_cast<scalar_t>(sum_mu);
    grad_std[j] = static_cast<scalar_t>(sum_std);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> latent_terms_cuda(const at::Tensor& mu_,
                                                                 const at::Tensor& std_,
                                                                 const at::Tensor& eps_) {
  check_latent(mu_, std_, eps_);
  c10::cuda::CUDAGuard guard(mu_.device());
  const at::Tensor mu = mu_.contiguous(), sd = std_.contiguous(), eps = eps_.contiguous();
  const int64_t B = eps.size(0), K = eps.size(1), L = eps.size(2);
  at::Tensor z = at::empty({B, K, L}, eps.options());
  at::Tensor log_p = at::empty({B, K}, eps.options()), log_q = at::empty({B, K}, eps.options());
  if (B * K == 0) return {z, log_p, log_q};
  NOTMIWAE_DISPATCH_CUDA(mu.scalar_type(), "latent_terms_cuda", [&] {
    latent_forward_kernel<scalar_t>
        <<<element_blocks(B * K), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            mu.const_data_ptr<scalar_t>(), sd.const_data_ptr<scalar_t>(),
            eps.const_data_ptr<scalar_t>(), B * K, K, L, z.mutable_data_ptr<scalar_t>(),
            log_p.mutable_data_ptr<scalar_t>(), log_q.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {z, log_p, log_q};
}

std::tuple<at::Tensor, at::Tensor> latent_terms_backward_cuda(
    const std::optional<at::Tensor>& grad_z_, const std::optional<at::Tensor>& grad_log_p_,
    const std::optional<at::Tensor>& grad_log_q_, const at::Tensor& mu_, const at::Tensor& std_,
    const at::Tensor& eps_) {
  check_latent(mu_, std_, eps_);
  c10::cuda::CUDAGuard guard(mu_.device());
  const int64_t B = eps_.size(0), K = eps_.size(1), L = eps_.size(2);
  const LatentOutputGrads grads = latent_output_grads(grad_z_, grad_log_p_, grad_log_q_, eps_);
  const at::Tensor &gz = grads.z, &gp = grads.log_p, &gq = grads.log_q;
  const at::Tensor mu = mu_.contiguous(), sd = std_.contiguous(), eps = eps_.contiguous();
  at::Tensor grad_mu = at::empty({B, L}, mu.options()), grad_std = at::empty({B, L}, mu.options());
  if (B * L == 0) return {grad_mu, grad_std};
  NOTMIWAE_DISPATCH_CUDA(mu.scalar_type(), "latent_terms_backward_cuda", [&] {
    latent_backward_kernel<scalar_t>
        <<<element_blocks(B * L), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            gz.defined() ? gz.const_data_ptr<scalar_t>() : nullptr,
            gp.defined() ? gp.const_data_ptr<scalar_t>() : nullptr,
            gq.defined() ? gq.const_data_ptr<scalar_t>() : nullptr, mu.const_data_ptr<scalar_t>(),
            sd.const_data_ptr<scalar_t>(), eps.const_data_ptr<scalar_t>(), B, K, L,
            grad_mu.mutable_data_ptr<scalar_t>(), grad_std.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_mu, grad_std};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CUDA, m) {
  m.impl("latent_terms", &latent_terms_cuda);
  m.impl("latent_terms_backward", &latent_terms_backward_cuda);
}

}  // namespace notmiwae_fast
