// CUDA kernels of the likelihood family: masked_normal_logprob, masked_bernoulli_logprob,
// masked_studentt_logprob, selfmask_logprob, notmiwae_normal_terms and their backward
// passes. The per-element math is in notmiwae_fast/math.h (shared with the CPU).
// float32, float64, float16 and bfloat16; half types compute and accumulate in float32
// (at::opmath_type).
//
// One block per (b, k) row (grid-stride over the B·K rows), its threads striding over
// the D features and reducing with cuda::block_sum. Per-feature gradients (W, b, df)
// are summed over rows with atomicAdd into an opmath-typed [D] buffer. Entries under
// mask = 0 are removed by selection, so NaN / ±inf stored there never propagate.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/likelihood.h"
#include "notmiwae_fast/math.h"
#include "launch.cuh"
#include "reduce.cuh"

namespace notmiwae_fast {
namespace {

// Launch shape of a per-row kernel: one block of row_block_size(D) threads per row.
struct RowLaunch {
  unsigned blocks;
  int threads;
};

RowLaunch row_launch(int64_t rows, int64_t D) {
  return RowLaunch{static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(rows, 1), 1 << 20)),
                   cuda::row_block_size(D)};
}

template <typename scalar_t>
using opmath_t = at::opmath_type<scalar_t>;

// An opmath-typed tensor of zeros, [D], for atomically summed per-feature gradients.
template <typename scalar_t>
at::Tensor feature_accumulator(int64_t D, const at::Tensor& like) {
  return at::zeros({D}, like.options().dtype(c10::CppTypeToScalarType<opmath_t<scalar_t>>::value));
}

// ------------------------------------------------------------------------------------
// Forward kernels: out[i] = Σ_d term(i, d) for each row i = b·K + k.
// ------------------------------------------------------------------------------------
template <typename scalar_t>
__global__ void normal_forward_kernel(const scalar_t* __restrict__ x, const bool* __restrict__ mask,
                                      const scalar_t* __restrict__ loc,
                                      const scalar_t* __restrict__ scale, int64_t rows, int64_t K,
                                      int64_t D, scalar_t* __restrict__ out) {
  using acc_t = opmath_t<scalar_t>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    acc_t sum = 0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const bool m = mask[b * D + d];
      const acc_t loc_d = loc[i * D + d];
      const acc_t x_d = m ? static_cast<acc_t>(x[b * D + d]) : loc_d;
      const acc_t v = math::normal_log_density(x_d, loc_d, static_cast<acc_t>(scale[i * D + d]));
      sum += m ? v : acc_t(0);
    }
    sum = cuda::block_sum(sum);
    if (threadIdx.x == 0) out[i] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t>
__global__ void bernoulli_forward_kernel(const scalar_t* __restrict__ x,
                                         const bool* __restrict__ mask,
                                         const scalar_t* __restrict__ logits, int64_t rows,
                                         int64_t K, int64_t D, scalar_t* __restrict__ out) {
  using acc_t = opmath_t<scalar_t>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    acc_t sum = 0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const bool m = mask[b * D + d];
      const acc_t x_d = m ? static_cast<acc_t>(x[b * D + d]) : acc_t(0);
      const acc_t v = math::bernoulli_log_prob(x_d, static_cast<acc_t>(logits[i * D + d]));
      sum += m ? v : acc_t(0);
    }
    sum = cuda::block_sum(sum);
    if (threadIdx.x == 0) out[i] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t>
__global__ void studentt_forward_kernel(const scalar_t* __restrict__ x,
                                        const bool* __restrict__ mask,
                                        const scalar_t* __restrict__ loc,
                                        const scalar_t* __restrict__ scale,
                                        const scalar_t* __restrict__ df,
                                        const opmath_t<scalar_t>* __restrict__ log_norm,
                                        int64_t rows, int64_t K, int64_t D,
                                        scalar_t* __restrict__ out) {
  using acc_t = opmath_t<scalar_t>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    acc_t sum = 0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const bool m = mask[b * D + d];
      const acc_t loc_d = loc[i * D + d];
      const acc_t x_d = m ? static_cast<acc_t>(x[b * D + d]) : loc_d;
      const acc_t v = math::studentt_log_density(x_d, loc_d, static_cast<acc_t>(scale[i * D + d]),
                                                 static_cast<acc_t>(df[d]), log_norm[d]);
      sum += m ? v : acc_t(0);
    }
    sum = cuda::block_sum(sum);
    if (threadIdx.x == 0) out[i] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t>
__global__ void selfmask_forward_kernel(const scalar_t* __restrict__ x_full,
                                        const bool* __restrict__ mask,
                                        const scalar_t* __restrict__ W,
                                        const scalar_t* __restrict__ bias, int64_t rows,
                                        int64_t K, int64_t D, scalar_t* __restrict__ out) {
  using acc_t = opmath_t<scalar_t>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    acc_t sum = 0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const acc_t l = math::selfmask_logit(static_cast<acc_t>(x_full[i * D + d]),
                                           static_cast<acc_t>(W[d]), static_cast<acc_t>(bias[d]));
      sum += math::bernoulli_log_prob(static_cast<acc_t>(mask[b * D + d]), l);
    }
    sum = cuda::block_sum(sum);
    if (threadIdx.x == 0) out[i] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t>
__global__ void notmiwae_forward_kernel(const scalar_t* __restrict__ x,
                                        const bool* __restrict__ mask,
                                        const scalar_t* __restrict__ loc,
                                        const scalar_t* __restrict__ scale,
                                        const scalar_t* __restrict__ eps,
                                        const scalar_t* __restrict__ W,
                                        const scalar_t* __restrict__ bias, int64_t rows,
                                        int64_t K, int64_t D, scalar_t* __restrict__ log_obs,
                                        scalar_t* __restrict__ log_miss) {
  using acc_t = opmath_t<scalar_t>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    acc_t sum_obs = 0, sum_miss = 0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const bool m = mask[b * D + d];
      const acc_t loc_d = loc[i * D + d], scale_d = scale[i * D + d];
      const acc_t x_d = m ? static_cast<acc_t>(x[b * D + d]) : loc_d;
      const acc_t v = math::normal_log_density(x_d, loc_d, scale_d);
      sum_obs += m ? v : acc_t(0);
      const acc_t x_hat = m ? x_d : loc_d + scale_d * static_cast<acc_t>(eps[i * D + d]);
      const acc_t l = math::selfmask_logit(x_hat, static_cast<acc_t>(W[d]),
                                           static_cast<acc_t>(bias[d]));
      sum_miss += math::bernoulli_log_prob(static_cast<acc_t>(m), l);
    }
    sum_obs = cuda::block_sum(sum_obs);
    sum_miss = cuda::block_sum(sum_miss);
    if (threadIdx.x == 0) {
      log_obs[i] = static_cast<scalar_t>(sum_obs);
      log_miss[i] = static_cast<scalar_t>(sum_miss);
    }
  }
}

// ------------------------------------------------------------------------------------
// Backward kernels: per-element gradients, per-feature ones by atomicAdd.
// ------------------------------------------------------------------------------------
template <typename scalar_t>
__global__ void normal_backward_kernel(const scalar_t* __restrict__ grad,
                                       const scalar_t* __restrict__ x,
                                       const bool* __restrict__ mask,
                                       const scalar_t* __restrict__ loc,
                                       const scalar_t* __restrict__ scale, int64_t rows,
                                       int64_t K, int64_t D, scalar_t* __restrict__ grad_loc,
                                       scalar_t* __restrict__ grad_scale) {
  using acc_t = opmath_t<scalar_t>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    const acc_t g = grad[i];
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const bool m = mask[b * D + d];
      const acc_t loc_d = loc[i * D + d];
      const acc_t x_d = m ? static_cast<acc_t>(x[b * D + d]) : loc_d;
      const auto dn =
          math::normal_log_density_grad(x_d, loc_d, static_cast<acc_t>(scale[i * D + d]));
      grad_loc[i * D + d] = static_cast<scalar_t>(m ? g * dn.loc : acc_t(0));
      grad_scale[i * D + d] = static_cast<scalar_t>(m ? g * dn.scale : acc_t(0));
    }
  }
}

template <typename scalar_t>
__global__ void bernoulli_backward_kernel(const scalar_t* __restrict__ grad,
                                          const scalar_t* __restrict__ x,
                                          const bool* __restrict__ mask,
                                          const scalar_t* __restrict__ logits, int64_t rows,
                                          int64_t K, int64_t D,
                                          scalar_t* __restrict__ grad_logits) {
  using acc_t = opmath_t<scalar_t>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    const acc_t g = grad[i];
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const bool m = mask[b * D + d];
      const acc_t x_d = m ? static_cast<acc_t>(x[b * D + d]) : acc_t(0);
      const acc_t dl = math::bernoulli_log_prob_dlogit(x_d, static_cast<acc_t>(logits[i * D + d]));
      grad_logits[i * D + d] = static_cast<scalar_t>(m ? g * dl : acc_t(0));
    }
  }
}

template <typename scalar_t>
__global__ void studentt_backward_kernel(const scalar_t* __restrict__ grad,
                                         const scalar_t* __restrict__ x,
                                         const bool* __restrict__ mask,
                                         const scalar_t* __restrict__ loc,
                                         const scalar_t* __restrict__ scale,
                                         const scalar_t* __restrict__ df,
                                         const opmath_t<scalar_t>* __restrict__ dlog_norm,
                                         int64_t rows, int64_t K, int64_t D,
                                         scalar_t* __restrict__ grad_loc,
                                         scalar_t* __restrict__ grad_scale,
                                         opmath_t<scalar_t>* __restrict__ grad_df) {
  using acc_t = opmath_t<scalar_t>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    const acc_t g = grad[i];
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const bool m = mask[b * D + d];
      const acc_t loc_d = loc[i * D + d];
      const acc_t x_d = m ? static_cast<acc_t>(x[b * D + d]) : loc_d;
      const auto dt = math::studentt_log_density_grad(
          x_d, loc_d, static_cast<acc_t>(scale[i * D + d]), static_cast<acc_t>(df[d]),
          dlog_norm[d]);
      grad_loc[i * D + d] = static_cast<scalar_t>(m ? g * dt.loc : acc_t(0));
      grad_scale[i * D + d] = static_cast<scalar_t>(m ? g * dt.scale : acc_t(0));
      if (m) atomicAdd(grad_df + d, g * dt.df);
    }
  }
}

template <typename scalar_t>
__global__ void selfmask_backward_kernel(const scalar_t* __restrict__ grad,
                                         const scalar_t* __restrict__ x_full,
                                         const bool* __restrict__ mask,
                                         const scalar_t* __restrict__ W,
                                         const scalar_t* __restrict__ bias, int64_t rows,
                                         int64_t K, int64_t D, scalar_t* __restrict__ grad_x,
                                         opmath_t<scalar_t>* __restrict__ grad_W,
                                         opmath_t<scalar_t>* __restrict__ grad_b) {
  using acc_t = opmath_t<scalar_t>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    const acc_t g = grad[i];
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const acc_t x_d = x_full[i * D + d], w = W[d], c = bias[d];
      const acc_t l = math::selfmask_logit(x_d, w, c);
      const acc_t dl =
          g * math::bernoulli_log_prob_dlogit(static_cast<acc_t>(mask[b * D + d]), l);
      grad_x[i * D + d] = static_cast<scalar_t>(-w * dl);
      atomicAdd(grad_W + d, -(x_d - c) * dl);
      atomicAdd(grad_b + d, w * dl);
    }
  }
}

template <typename scalar_t>
__global__ void notmiwae_backward_kernel(
    const scalar_t* __restrict__ grad_obs, const scalar_t* __restrict__ grad_miss,
    const scalar_t* __restrict__ x, const bool* __restrict__ mask,
    const scalar_t* __restrict__ loc, const scalar_t* __restrict__ scale,
    const scalar_t* __restrict__ eps, const scalar_t* __restrict__ W,
    const scalar_t* __restrict__ bias, int64_t rows, int64_t K, int64_t D,
    scalar_t* __restrict__ grad_loc, scalar_t* __restrict__ grad_scale,
    opmath_t<scalar_t>* __restrict__ grad_W, opmath_t<scalar_t>* __restrict__ grad_b) {
  using acc_t = opmath_t<scalar_t>;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    const acc_t g_obs = grad_obs[i], g_miss = grad_miss[i];
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const bool m = mask[b * D + d];
      const acc_t loc_d = loc[i * D + d], scale_d = scale[i * D + d];
      const acc_t eps_d = eps[i * D + d], w = W[d], c = bias[d];
      const acc_t x_d = m ? static_cast<acc_t>(x[b * D + d]) : loc_d;
      const auto dn = math::normal_log_density_grad(x_d, loc_d, scale_d);
      const acc_t x_hat = m ? x_d : loc_d + scale_d * eps_d;
      const acc_t l = math::selfmask_logit(x_hat, w, c);
      const acc_t delta = g_miss * math::bernoulli_log_prob_dlogit(static_cast<acc_t>(m), l);
      const acc_t d_x_hat = -w * delta;
      grad_loc[i * D + d] = static_cast<scalar_t>(m ? g_obs * dn.loc : d_x_hat);
      grad_scale[i * D + d] = static_cast<scalar_t>(m ? g_obs * dn.scale : d_x_hat * eps_d);
      atomicAdd(grad_W + d, -(x_hat - c) * delta);
      atomicAdd(grad_b + d, w * delta);
    }
  }
}

// ------------------------------------------------------------------------------------
// Host entry points
// ------------------------------------------------------------------------------------
#define NOTMIWAE_LAUNCH(kernel, rows, D, ...)                                                 \
  do {                                                                                   \
    const RowLaunch launch_ = row_launch(rows, D);                                       \
    kernel<scalar_t><<<launch_.blocks, launch_.threads, 0,                               \
                       c10::cuda::getCurrentCUDAStream()>>>(__VA_ARGS__);                \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                      \
  } while (0)

template <typename scalar_t>
const scalar_t* cptr(const at::Tensor& t) {
  return t.const_data_ptr<scalar_t>();
}

template <typename scalar_t>
scalar_t* mptr(at::Tensor& t) {
  return t.mutable_data_ptr<scalar_t>();
}

at::Tensor masked_normal_logprob_cuda(const at::Tensor& x_, const at::Tensor& mask_,
                                      const at::Tensor& loc_, const at::Tensor& scale_) {
  check_location_scale(x_, mask_, loc_, scale_);
  c10::cuda::CUDAGuard guard(loc_.device());
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  at::Tensor out = at::empty({B, K}, loc_.options());
  if (B * K == 0) return out;
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous();
  NOTMIWAE_DISPATCH_CUDA(loc.scalar_type(), "masked_normal_logprob_cuda", [&] {
    NOTMIWAE_LAUNCH(normal_forward_kernel, B * K, D, cptr<scalar_t>(x), mask.const_data_ptr<bool>(),
               cptr<scalar_t>(loc), cptr<scalar_t>(scale), B * K, K, D, mptr<scalar_t>(out));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> masked_normal_logprob_backward_cuda(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& mask_,
    const at::Tensor& loc_, const at::Tensor& scale_) {
  check_location_scale(x_, mask_, loc_, scale_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  check_row_grad(grad_, "grad", loc_, "loc", B, K);
  c10::cuda::CUDAGuard guard(loc_.device());
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0) return {grad_loc, grad_scale};
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous(), grad = grad_.contiguous();
  NOTMIWAE_DISPATCH_CUDA(loc.scalar_type(), "masked_normal_logprob_backward_cuda", [&] {
    NOTMIWAE_LAUNCH(normal_backward_kernel, B * K, D, cptr<scalar_t>(grad), cptr<scalar_t>(x),
               mask.const_data_ptr<bool>(), cptr<scalar_t>(loc), cptr<scalar_t>(scale), B * K,
               K, D, mptr<scalar_t>(grad_loc), mptr<scalar_t>(grad_scale));
  });
  return {grad_loc, grad_scale};
}

at::Tensor masked_bernoulli_logprob_cuda(const at::Tensor& x_, const at::Tensor& mask_,
                                         const at::Tensor& logits_) {
  check_bernoulli(x_, mask_, logits_);
  c10::cuda::CUDAGuard guard(logits_.device());
  const int64_t B = logits_.size(0), K = logits_.size(1), D = logits_.size(2);
  at::Tensor out = at::empty({B, K}, logits_.options());
  if (B * K == 0) return out;
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), logits = logits_.contiguous();
  NOTMIWAE_DISPATCH_CUDA(logits.scalar_type(), "masked_bernoulli_logprob_cuda", [&] {
    NOTMIWAE_LAUNCH(bernoulli_forward_kernel, B * K, D, cptr<scalar_t>(x),
               mask.const_data_ptr<bool>(), cptr<scalar_t>(logits), B * K, K, D,
               mptr<scalar_t>(out));
  });
  return out;
}

at::Tensor masked_bernoulli_logprob_backward_cuda(const at::Tensor& grad_, const at::Tensor& x_,
                                                  const at::Tensor& mask_,
                                                  const at::Tensor& logits_) {
  check_bernoulli(x_, mask_, logits_);
  const int64_t B = logits_.size(0), K = logits_.size(1), D = logits_.size(2);
  check_row_grad(grad_, "grad", logits_, "logits", B, K);
  c10::cuda::CUDAGuard guard(logits_.device());
  at::Tensor grad_logits = at::empty({B, K, D}, logits_.options());
  if (grad_logits.numel() == 0) return grad_logits;
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_),
                   logits = logits_.contiguous(), grad = grad_.contiguous();
  NOTMIWAE_DISPATCH_CUDA(logits.scalar_type(), "masked_bernoulli_logprob_backward_cuda", [&] {
    NOTMIWAE_LAUNCH(bernoulli_backward_kernel, B * K, D, cptr<scalar_t>(grad), cptr<scalar_t>(x),
               mask.const_data_ptr<bool>(), cptr<scalar_t>(logits), B * K, K, D,
               mptr<scalar_t>(grad_logits));
  });
  return grad_logits;
}

at::Tensor masked_studentt_logprob_cuda(const at::Tensor& x_, const at::Tensor& mask_,
                                        const at::Tensor& loc_, const at::Tensor& scale_,
                                        const at::Tensor& df_) {
  check_studentt(x_, mask_, loc_, scale_, df_);
  c10::cuda::CUDAGuard guard(loc_.device());
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  at::Tensor out = at::empty({B, K}, loc_.options());
  if (B * K == 0) return out;
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous(), df = df_.contiguous();
  NOTMIWAE_DISPATCH_CUDA(loc.scalar_type(), "masked_studentt_logprob_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    const at::Tensor log_norm =
        studentt_log_norm(df, c10::CppTypeToScalarType<acc_t>::value);
    NOTMIWAE_LAUNCH(studentt_forward_kernel, B * K, D, cptr<scalar_t>(x), mask.const_data_ptr<bool>(),
               cptr<scalar_t>(loc), cptr<scalar_t>(scale), cptr<scalar_t>(df),
               log_norm.const_data_ptr<acc_t>(), B * K, K, D, mptr<scalar_t>(out));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_studentt_logprob_backward_cuda(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& mask_,
    const at::Tensor& loc_, const at::Tensor& scale_, const at::Tensor& df_) {
  check_studentt(x_, mask_, loc_, scale_, df_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  check_row_grad(grad_, "grad", loc_, "loc", B, K);
  c10::cuda::CUDAGuard guard(loc_.device());
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0) return {grad_loc, grad_scale, at::zeros({D}, loc_.options())};
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous(), df = df_.contiguous(), grad = grad_.contiguous();
  at::Tensor grad_df;
  NOTMIWAE_DISPATCH_CUDA(loc.scalar_type(), "masked_studentt_logprob_backward_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    const at::Tensor dlog_norm =
        studentt_dlog_norm(df, c10::CppTypeToScalarType<acc_t>::value);
    at::Tensor acc_df = feature_accumulator<scalar_t>(D, loc);
    NOTMIWAE_LAUNCH(studentt_backward_kernel, B * K, D, cptr<scalar_t>(grad), cptr<scalar_t>(x),
               mask.const_data_ptr<bool>(), cptr<scalar_t>(loc), cptr<scalar_t>(scale),
               cptr<scalar_t>(df), dlog_norm.const_data_ptr<acc_t>(), B * K, K, D,
               mptr<scalar_t>(grad_loc), mptr<scalar_t>(grad_scale),
               acc_df.mutable_data_ptr<acc_t>());
    grad_df = acc_df.to(loc.scalar_type());
  });
  return {grad_loc, grad_scale, grad_df};
}

at::Tensor selfmask_logprob_cuda(const at::Tensor& x_full_, const at::Tensor& mask_,
                                 const at::Tensor& W_, const at::Tensor& b_) {
  check_selfmask(x_full_, mask_, W_, b_);
  c10::cuda::CUDAGuard guard(x_full_.device());
  const int64_t B = x_full_.size(0), K = x_full_.size(1), D = x_full_.size(2);
  at::Tensor out = at::empty({B, K}, x_full_.options());
  if (B * K == 0) return out;
  const at::Tensor xf = x_full_.contiguous(), mask = mask_as_bool(mask_), W = W_.contiguous(),
                   bias = b_.contiguous();
  NOTMIWAE_DISPATCH_CUDA(xf.scalar_type(), "selfmask_logprob_cuda", [&] {
    NOTMIWAE_LAUNCH(selfmask_forward_kernel, B * K, D, cptr<scalar_t>(xf),
               mask.const_data_ptr<bool>(), cptr<scalar_t>(W), cptr<scalar_t>(bias), B * K, K,
               D, mptr<scalar_t>(out));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> selfmask_logprob_backward_cuda(
    const at::Tensor& grad_, const at::Tensor& x_full_, const at::Tensor& mask_,
    const at::Tensor& W_, const at::Tensor& b_) {
  check_selfmask(x_full_, mask_, W_, b_);
  const int64_t B = x_full_.size(0), K = x_full_.size(1), D = x_full_.size(2);
  check_row_grad(grad_, "grad", x_full_, "x_full", B, K);
  c10::cuda::CUDAGuard guard(x_full_.device());
  at::Tensor grad_x = at::empty({B, K, D}, x_full_.options());
  if (grad_x.numel() == 0)
    return {grad_x, at::zeros({D}, x_full_.options()), at::zeros({D}, x_full_.options())};
  const at::Tensor xf = x_full_.contiguous(), mask = mask_as_bool(mask_), W = W_.contiguous(),
                   bias = b_.contiguous(), grad = grad_.contiguous();
  at::Tensor grad_W, grad_b;
  NOTMIWAE_DISPATCH_CUDA(xf.scalar_type(), "selfmask_logprob_backward_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    at::Tensor acc_W = feature_accumulator<scalar_t>(D, xf);
    at::Tensor acc_b = feature_accumulator<scalar_t>(D, xf);
    NOTMIWAE_LAUNCH(selfmask_backward_kernel, B * K, D, cptr<scalar_t>(grad), cptr<scalar_t>(xf),
               mask.const_data_ptr<bool>(), cptr<scalar_t>(W), cptr<scalar_t>(bias), B * K, K,
               D, mptr<scalar_t>(grad_x), acc_W.mutable_data_ptr<acc_t>(),
               acc_b.mutable_data_ptr<acc_t>());
    grad_W = acc_W.to(xf.scalar_type());
    grad_b = acc_b.to(xf.scalar_type());
  });
  return {grad_x, grad_W, grad_b};
}

std::tuple<at::Tensor, at::Tensor> notmiwae_normal_terms_cuda(
    const at::Tensor& x_, const at::Tensor& mask_, const at::Tensor& loc_,
    const at::Tensor& scale_, const at::Tensor& eps_, const at::Tensor& W_,
    const at::Tensor& b_) {
  check_notmiwae(x_, mask_, loc_, scale_, eps_, W_, b_);
  c10::cuda::CUDAGuard guard(loc_.device());
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  at::Tensor log_obs = at::empty({B, K}, loc_.options());
  at::Tensor log_miss = at::empty({B, K}, loc_.options());
  if (B * K == 0) return {log_obs, log_miss};
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous(), eps = eps_.contiguous(), W = W_.contiguous(),
                   bias = b_.contiguous();
  NOTMIWAE_DISPATCH_CUDA(loc.scalar_type(), "notmiwae_normal_terms_cuda", [&] {
    NOTMIWAE_LAUNCH(notmiwae_forward_kernel, B * K, D, cptr<scalar_t>(x), mask.const_data_ptr<bool>(),
               cptr<scalar_t>(loc), cptr<scalar_t>(scale), cptr<scalar_t>(eps),
               cptr<scalar_t>(W), cptr<scalar_t>(bias), B * K, K, D, mptr<scalar_t>(log_obs),
               mptr<scalar_t>(log_miss));
  });
  return {log_obs, log_miss};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> notmiwae_normal_terms_backward_cuda(
    const at::Tensor& grad_obs_, const at::Tensor& grad_miss_, const at::Tensor& x_,
    const at::Tensor& mask_, const at::Tensor& loc_, const at::Tensor& scale_,
    const at::Tensor& eps_, const at::Tensor& W_, const at::Tensor& b_) {
  check_notmiwae(x_, mask_, loc_, scale_, eps_, W_, b_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  check_row_grad(grad_obs_, "grad_obs", loc_, "loc", B, K);
  check_row_grad(grad_miss_, "grad_miss", loc_, "loc", B, K);
  c10::cuda::CUDAGuard guard(loc_.device());
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0)
    return {grad_loc, grad_scale, at::zeros({D}, loc_.options()), at::zeros({D}, loc_.options())};
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous(), eps = eps_.contiguous(), W = W_.contiguous(),
                   bias = b_.contiguous(), grad_obs = grad_obs_.contiguous(),
                   grad_miss = grad_miss_.contiguous();
  at::Tensor grad_W, grad_b;
  NOTMIWAE_DISPATCH_CUDA(loc.scalar_type(), "notmiwae_normal_terms_backward_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    at::Tensor acc_W = feature_accumulator<scalar_t>(D, loc);
    at::Tensor acc_b = feature_accumulator<scalar_t>(D, loc);
    NOTMIWAE_LAUNCH(notmiwae_backward_kernel, B * K, D, cptr<scalar_t>(grad_obs),
               cptr<scalar_t>(grad_miss), cptr<scalar_t>(x), mask.const_data_ptr<bool>(),
               cptr<scalar_t>(loc), cptr<scalar_t>(scale), cptr<scalar_t>(eps),
               cptr<scalar_t>(W), cptr<scalar_t>(bias), B * K, K, D, mptr<scalar_t>(grad_loc),
               mptr<scalar_t>(grad_scale), acc_W.mutable_data_ptr<acc_t>(),
               acc_b.mutable_data_ptr<acc_t>());
    grad_W = acc_W.to(loc.scalar_type());
    grad_b = acc_b.to(loc.scalar_type());
  });
  return {grad_loc, grad_scale, grad_W, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CUDA, m) {
  m.impl("masked_normal_logprob", &masked_normal_logprob_cuda);
  m.impl("masked_normal_logprob_backward", &masked_normal_logprob_backward_cuda);
  m.impl("masked_bernoulli_logprob", &masked_bernoulli_logprob_cuda);
  m.impl("masked_bernoulli_logprob_backward", &masked_bernoulli_logprob_backward_cuda);
  m.impl("masked_studentt_logprob", &masked_studentt_logprob_cuda);
  m.impl("masked_studentt_logprob_backward", &masked_studentt_logprob_backward_cuda);
  m.impl("selfmask_logprob", &selfmask_logprob_cuda);
  m.impl("selfmask_logprob_backward", &selfmask_logprob_backward_cuda);
  m.impl("notmiwae_normal_terms", &notmiwae_normal_terms_cuda);
  m.impl("notmiwae_normal_terms_backward", &notmiwae_normal_terms_backward_cuda);
}

}  // namespace notmiwae_fast
