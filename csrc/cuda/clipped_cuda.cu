// CUDA kernel of the clipped family: clipped_impute, one thread per pixel streaming over
// the K draws, with the math of notmiwae_fast/clipped.h (math::clipped_impute_pixel,
// shared with the CPU loop). float32 and float64; float16 / bfloat16 compute in float32.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "notmiwae_fast/clipped.h"
#include "launch.cuh"

namespace notmiwae_fast {
namespace {

using cuda::element_blocks;
constexpr int kThreads = cuda::kElementThreads;

template <typename scalar_t>
__global__ void clipped_impute_kernel(int64_t N, int64_t C, int64_t L, int64_t H, int64_t K,
                                      const scalar_t* __restrict__ x,
                                      const bool* __restrict__ lost,
                                      const scalar_t* __restrict__ context,
                                      const scalar_t* __restrict__ mu,
                                      const scalar_t* __restrict__ sd,
                                      const scalar_t* __restrict__ eps,
                                      const scalar_t* __restrict__ w_latent,
                                      const scalar_t* __restrict__ w_out,
                                      const scalar_t* __restrict__ b_out, double clip,
                                      double min_scale, bool censored,
                                      scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; n < N;
       n += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    math::clipped_impute_pixel<math::LibM, false, acc_t, scalar_t>(
        C, L, H, K, x + n * C, lost + n * C, context + n * H, mu + n * L, sd + n * L, eps,
        w_latent, w_out, b_out, static_cast<acc_t>(clip), static_cast<acc_t>(min_scale),
        censored, out + n * C);
  }
}

at::Tensor clipped_impute_cuda(const at::Tensor& x_, const at::Tensor& lost_,
                               const at::Tensor& context_, const at::Tensor& mu_,
                               const at::Tensor& std_, const at::Tensor& eps_,
                               const at::Tensor& w_latent_, const at::Tensor& w_out_,
                               const at::Tensor& b_out_, double clip, double min_scale,
                               bool censored) {
  check_clipped_impute(x_, lost_, context_, mu_, std_, eps_, w_latent_, w_out_, b_out_, clip,
                       min_scale);
  c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), lost = lost_.contiguous(), ctx = context_.contiguous();
  const at::Tensor mu = mu_.contiguous(), sd = std_.contiguous(), eps = eps_.contiguous();
  const at::Tensor wl = w_latent_.contiguous(), wo = w_out_.contiguous(), bo = b_out_.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = ctx.size(1), L = mu.size(1), K = eps.size(0);
  at::Tensor out = at::empty_like(x);
  if (N == 0) return out;
  NOTMIWAE_DISPATCH_CUDA(x.scalar_type(), "clipped_impute_cuda", [&] {
    clipped_impute_kernel<scalar_t>
        <<<element_blocks(N), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            N, C, L, H, K, x.const_data_ptr<scalar_t>(), lost.const_data_ptr<bool>(),
            ctx.const_data_ptr<scalar_t>(), mu.const_data_ptr<scalar_t>(),
            sd.const_data_ptr<scalar_t>(), eps.const_data_ptr<scalar_t>(),
            wl.const_data_ptr<scalar_t>(), wo.const_data_ptr<scalar_t>(),
            bo.const_data_ptr<scalar_t>(), clip, min_scale, censored,
            out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CUDA, m) { m.impl("clipped_impute", &clipped_impute_cuda); }

}  // namespace notmiwae_fast
