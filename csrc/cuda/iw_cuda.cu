// CUDA kernels of the importance-weighting family: iw_logmeanexp, iw_weights, iw_impute
// and their backward passes. The math is in notmiwae_fast/math.h (shared with the CPU).
// float32, float64, float16 and bfloat16; half types accumulate in float32.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

#include "launch.cuh"
#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/math.h"
#include "reduce.cuh"

namespace notmiwae_fast {
namespace {

using math::LseState;

using math::SoftmaxNorm;

// The (max, sum) summary of row a[0..K), reduced over the block (valid in thread 0).
template <typename scalar_t, typename acc_t>
__device__ LseState<acc_t> block_row_state(const scalar_t* __restrict__ a, int64_t K) {
  LseState<acc_t> s = math::lse_empty<acc_t>();
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
    s = math::lse_push(s, static_cast<acc_t>(a[k]));
  return cuda::block_lse(s);
}

// out[b] = log Σ_k exp(a[b, k]) − offset, one block per row (grid-stride over rows).
template <typename scalar_t, typename acc_t, typename out_t>
__global__ void rows_lse_kernel(const scalar_t* __restrict__ a, int64_t B, int64_t K, acc_t offset,
                                out_t* __restrict__ out) {
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const LseState<acc_t> s = block_row_state<scalar_t, acc_t>(a + b * K, K);
    if (threadIdx.x == 0) out[b] = static_cast<out_t>(math::lse_value(s) - offset);
  }
}

// norm[b] = the softmax normaliser of row b, one block per row.
template <typename scalar_t, typename acc_t>
__global__ void rows_norm_kernel(const scalar_t* __restrict__ a, int64_t B, int64_t K,
                                 SoftmaxNorm<acc_t>* __restrict__ norm) {
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const LseState<acc_t> s = block_row_state<scalar_t, acc_t>(a + b * K, K);
    if (threadIdx.x == 0) norm[b] = math::softmax_norm(s);
  }
}

// Launches rows_lse_kernel on the current stream.
template <typename scalar_t, typename acc_t, typename out_t>
void launch_rows_lse(const scalar_t* a, int64_t B, int64_t K, acc_t offset, out_t* out) {
  if (B == 0) return;
  const int threads = cuda::row_block_size(K);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(B, 1 << 20));
  rows_lse_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(a, B, K, offset, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The softmax normalisers of the rows of log_w [B, K]: a [B, 2] tensor in the
// accumulation type holding B SoftmaxNorm<acc_t> (see norm_ptr).
template <typename scalar_t, typename acc_t>
at::Tensor rows_norm(const at::Tensor& log_w) {
  const int64_t B = log_w.size(0), K = log_w.size(1);
  at::Tensor norm =
      at::empty({B, 2}, log_w.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  if (B == 0) return norm;
  const int threads = cuda::row_block_size(K);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(B, 1 << 20));
  rows_norm_kernel<scalar_t, acc_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      log_w.const_data_ptr<scalar_t>(), B, K,
      reinterpret_cast<SoftmaxNorm<acc_t>*>(norm.mutable_data_ptr<acc_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return norm;
}

template <typename acc_t>
const SoftmaxNorm<acc_t>* norm_ptr(const at::Tensor& norm) {
  return reinterpret_cast<const SoftmaxNorm<acc_t>*>(norm.const_data_ptr<acc_t>());
}

// w[b, k] = exp(a[b, k] − max[b]) / sum[b]  (scaled by grad[b] when grad is given).
template <typename scalar_t, typename acc_t>
__global__ void softmax_weights_kernel(const scalar_t* __restrict__ a,
                                       const SoftmaxNorm<acc_t>* __restrict__ norm,
                                       const scalar_t* __restrict__ row_scale, int64_t B, int64_t K,
                                       scalar_t* __restrict__ out) {
  const int64_t n = B * K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / K;
    acc_t w = math::softmax_weight(static_cast<acc_t>(a[i]), norm[b]);
    if (row_scale != nullptr) w *= static_cast<acc_t>(row_scale[b]);
    out[i] = static_cast<scalar_t>(w);
  }
}

template <typename scalar_t, typename acc_t>
void launch_softmax_weights(const at::Tensor& log_w, const at::Tensor& norm,
                            const scalar_t* row_scale, at::Tensor& out) {
  const int64_t B = log_w.size(0), K = log_w.size(1);
  if (B * K == 0) return;
  constexpr int threads = 256;
  softmax_weights_kernel<scalar_t, acc_t>
      <<<cuda::grid_size(B * K, threads), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          log_w.const_data_ptr<scalar_t>(), norm_ptr<acc_t>(norm), row_scale, B, K,
          out.mutable_data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor iw_logmeanexp_cuda(const at::Tensor& log_w_) {
  check_log_weights(log_w_);
  c10::cuda::CUDAGuard guard(log_w_.device());
  const at::Tensor log_w = log_w_.contiguous();
  const int64_t B = log_w.size(0), K = log_w.size(1);
  at::Tensor out = at::empty({B}, log_w.options());
  NOTMIWAE_DISPATCH_CUDA(log_w.scalar_type(), "iw_logmeanexp_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_rows_lse<scalar_t, acc_t, scalar_t>(log_w.const_data_ptr<scalar_t>(), B, K,
                                               std::log(static_cast<acc_t>(K)),
                                               out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor iw_logmeanexp_backward_cuda(const at::Tensor& grad_, const at::Tensor& log_w_) {
  check_iw_logmeanexp_grad(grad_, log_w_);
  c10::cuda::CUDAGuard guard(log_w_.device());
  const at::Tensor log_w = log_w_.contiguous(), grad = grad_.contiguous();
  at::Tensor out = at::empty_like(log_w);
  NOTMIWAE_DISPATCH_CUDA(log_w.scalar_type(), "iw_logmeanexp_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    // The row normaliser is recomputed in the accumulation type (K scalars per row).
    const at::Tensor norm = rows_norm<scalar_t, acc_t>(log_w);
    launch_softmax_weights<scalar_t, acc_t>(log_w, norm, grad.const_data_ptr<scalar_t>(), out);
  });
  return out;
}

at::Tensor iw_weights_cuda(const at::Tensor& log_w_) {
  check_log_weights(log_w_);
  c10::cuda::CUDAGuard guard(log_w_.device());
  const at::Tensor log_w = log_w_.contiguous();
  at::Tensor out = at::empty_like(log_w);
  NOTMIWAE_DISPATCH_CUDA(log_w.scalar_type(), "iw_weights_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor norm = rows_norm<scalar_t, acc_t>(log_w);
    launch_softmax_weights<scalar_t, acc_t>(log_w, norm, nullptr, out);
  });
  return out;
}

// grad_in = w ⊙ (g − Σ_k g_k w_k), one block per row.
template <typename scalar_t, typename acc_t>
__global__ void weights_backward_kernel(const scalar_t* __restrict__ g,
                                        const scalar_t* __restrict__ w, int64_t B, int64_t K,
                                        scalar_t* __restrict__ out) {
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const int64_t row = b * K;
    acc_t dot = 0;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
      dot += static_cast<acc_t>(g[row + k]) * static_cast<acc_t>(w[row + k]);
    dot = cuda::block_sum(dot);
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
      out[row + k] = static_cast<scalar_t>(static_cast<acc_t>(w[row + k]) *
                                           (static_cast<acc_t>(g[row + k]) - dot));
  }
}

at::Tensor iw_weights_backward_cuda(const at::Tensor& grad_, const at::Tensor& weights_) {
  check_iw_weights_grad(grad_, weights_);
  c10::cuda::CUDAGuard guard(weights_.device());
  const at::Tensor w = weights_.contiguous(), grad = grad_.contiguous();
  const int64_t B = w.size(0), K = w.size(1);
  at::Tensor out = at::empty_like(w);
  if (B == 0) return out;
  NOTMIWAE_DISPATCH_CUDA(w.scalar_type(), "iw_weights_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(B, 1 << 20));
    weights_backward_kernel<scalar_t, acc_t>
        <<<blocks, cuda::row_block_size(K), 0, c10::cuda::getCurrentCUDAStream()>>>(
            grad.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), B, K,
            out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// iw_impute: a block of kImputeCols × kImputeRows threads per (row b, tile of 32
// columns). Thread (x, y) accumulates the weighted values of column d = tile·32 + x over
// k ≡ y (mod kImputeRows), so reads of a values row are coalesced; the kImputeRows
// partial sums are then added in shared memory. Working memory does not depend on K.
constexpr int kImputeCols = 32;
constexpr int kImputeRows = 8;

template <typename scalar_t, typename acc_t>
__global__ void impute_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ v,
                              const SoftmaxNorm<acc_t>* __restrict__ norm, int64_t B, int64_t K,
                              int64_t D, scalar_t* __restrict__ out) {
  __shared__ acc_t partial[kImputeRows][kImputeCols + 1];
  const int64_t tiles = (D + kImputeCols - 1) / kImputeCols;
  for (int64_t t = blockIdx.x; t < B * tiles; t += gridDim.x) {
    const int64_t b = t / tiles;
    const int64_t d = (t % tiles) * kImputeCols + threadIdx.x;
    acc_t acc = 0;
    for (int64_t k = threadIdx.y; k < K; k += kImputeRows) {
      const acc_t w = math::softmax_weight(static_cast<acc_t>(a[b * K + k]), norm[b]);
      if (w != acc_t(0) && d < D) acc += w * static_cast<acc_t>(v[(b * K + k) * D + d]);
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && d < D) {
      acc_t total = 0;
      for (int r = 0; r < kImputeRows; ++r) total += partial[r][threadIdx.x];
      out[b * D + d] = static_cast<scalar_t>(total);
    }
    __syncthreads();
  }
}

at::Tensor iw_impute_cuda(const at::Tensor& log_w_, const at::Tensor& values_) {
  check_iw_values(log_w_, values_);
  c10::cuda::CUDAGuard guard(values_.device());
  const at::Tensor log_w = log_w_.contiguous(), values = values_.contiguous();
  const int64_t B = values.size(0), K = values.size(1), D = values.size(2);
  at::Tensor out = at::empty({B, D}, values.options());
  if (out.numel() == 0) return out;
  NOTMIWAE_DISPATCH_CUDA(values.scalar_type(), "iw_impute_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor norm = rows_norm<scalar_t, acc_t>(log_w);
    const int64_t tiles = (D + kImputeCols - 1) / kImputeCols;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(B * tiles, 1 << 20));
    impute_kernel<scalar_t, acc_t>
        <<<blocks, dim3(kImputeCols, kImputeRows), 0, c10::cuda::getCurrentCUDAStream()>>>(
            log_w.const_data_ptr<scalar_t>(), values.const_data_ptr<scalar_t>(),
            norm_ptr<acc_t>(norm), B, K, D, out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// Gradients of iw_impute, one warp per (b, k):
//   d values[b,k,:] = w · g[b,:],   d log_w[b,k] = w · Σ_d g[b,d] (values[b,k,d] − r[b,d]).
template <typename scalar_t, typename acc_t>
__global__ void impute_backward_kernel(
    const scalar_t* __restrict__ g, const scalar_t* __restrict__ a, const scalar_t* __restrict__ v,
    const scalar_t* __restrict__ r, const SoftmaxNorm<acc_t>* __restrict__ norm, int64_t B,
    int64_t K, int64_t D, scalar_t* __restrict__ grad_a, scalar_t* __restrict__ grad_v) {
  const int lane = threadIdx.x % cuda::kWarpSize;
  const int64_t warps_per_block = blockDim.x / cuda::kWarpSize;
  const int64_t n_warps = int64_t(gridDim.x) * warps_per_block;
  for (int64_t i = blockIdx.x * warps_per_block + threadIdx.x / cuda::kWarpSize; i < B * K;
       i += n_warps) {
    const int64_t b = i / K;
    const acc_t w = math::softmax_weight(static_cast<acc_t>(a[i]), norm[b]);
    acc_t dot = 0;
    for (int64_t d = lane; d < D; d += cuda::kWarpSize) {
      const acc_t gd = static_cast<acc_t>(g[b * D + d]);
      grad_v[i * D + d] = static_cast<scalar_t>(w * gd);
      if (w != acc_t(0))
        dot += gd * (static_cast<acc_t>(v[i * D + d]) - static_cast<acc_t>(r[b * D + d]));
    }
    dot = cuda::warp_sum(dot);
    if (lane == 0) grad_a[i] = static_cast<scalar_t>(w * dot);
  }
}

std::tuple<at::Tensor, at::Tensor> iw_impute_backward_cuda(const at::Tensor& grad_,
                                                           const at::Tensor& log_w_,
                                                           const at::Tensor& values_,
                                                           const at::Tensor& result_) {
  check_iw_impute_grad(grad_, log_w_, values_, result_);
  const int64_t B = values_.size(0), K = values_.size(1), D = values_.size(2);
  c10::cuda::CUDAGuard guard(values_.device());
  const at::Tensor log_w = log_w_.contiguous(), values = values_.contiguous(),
                   grad = grad_.contiguous(), result = result_.contiguous();
  at::Tensor grad_log_w = at::empty({B, K}, values.options());
  at::Tensor grad_values = at::empty({B, K, D}, values.options());
  if (B * K == 0) return {grad_log_w, grad_values};
  NOTMIWAE_DISPATCH_CUDA(values.scalar_type(), "iw_impute_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor norm = rows_norm<scalar_t, acc_t>(log_w);
    constexpr int threads = 256;
    const int64_t rows_per_block = threads / cuda::kWarpSize;
    const unsigned blocks = static_cast<unsigned>(
        std::min<int64_t>((B * K + rows_per_block - 1) / rows_per_block, 1 << 20));
    impute_backward_kernel<scalar_t, acc_t>
        <<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            grad.const_data_ptr<scalar_t>(), log_w.const_data_ptr<scalar_t>(),
            values.const_data_ptr<scalar_t>(), result.const_data_ptr<scalar_t>(),
            norm_ptr<acc_t>(norm), B, K, D, grad_log_w.mutable_data_ptr<scalar_t>(),
            grad_values.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_log_w, grad_values};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CUDA, m) {
  m.impl("iw_logmeanexp", &iw_logmeanexp_cuda);
  m.impl("iw_logmeanexp_backward", &iw_logmeanexp_backward_cuda);
  m.impl("iw_weights", &iw_weights_cuda);
  m.impl("iw_weights_backward", &iw_weights_backward_cuda);
  m.impl("iw_impute", &iw_impute_cuda);
  m.impl("iw_impute_backward", &iw_impute_backward_cuda);
}

}  // namespace notmiwae_fast
