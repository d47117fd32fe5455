// CUDA kernel of the clipped family: clipped_impute, one thread per pixel streaming over
// the K draws, with the math of notmiwae_fast/clipped.h (math::clipped_impute_pixel, shared with
// the CPU loop). float32 and float64; float16 / bfloat16 compute in float32.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "launch.cuh"
#include "notmiwae_fast/clipped.h"

namespace notmiwae_fast {
namespace {

template <typename scalar_t>
__global__ void clipped_impute_kernel(int64_t N, const ClippedInputs<scalar_t> in,
                                      scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; n < N;
       n += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    math::clipped_impute_pixel<math::LibM, false, acc_t>(in, n, out + n * in.C);
  }
}

at::Tensor clipped_impute_cuda(const at::Tensor& x, const at::Tensor& lost,
                               const at::Tensor& context, const at::Tensor& mu,
                               const at::Tensor& std, const at::Tensor& eps,
                               const at::Tensor& w_latent, const at::Tensor& w_out,
                               const at::Tensor& b_out, double clip, double min_scale,
                               bool censored) {
  // Checked before the guard: with x on the CPU (and another argument on CUDA) a guard
  // built from x would throw instead of the message naming the argument.
  const ClippedTensors t = clipped_tensors(x, lost, context, mu, std, eps, w_latent, w_out, b_out,
                                           clip, min_scale, censored);
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = t.x.size(0);
  at::Tensor out = at::empty_like(t.x);
  if (N == 0) return out;
  NOTMIWAE_DISPATCH_CUDA(t.x.scalar_type(), "clipped_impute_cuda", [&] {
    clipped_impute_kernel<scalar_t>
        <<<cuda::element_blocks(N), cuda::kElementThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            N, t.inputs<scalar_t>(), out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CUDA, m) { m.impl("clipped_impute", &clipped_impute_cuda); }

}  // namespace notmiwae_fast
