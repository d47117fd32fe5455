// CPU kernels of the likelihood family: masked_normal_logprob, masked_bernoulli_logprob,
// masked_studentt_logprob, selfmask_logprob, notmiwae_normal_terms and their backward
// passes. The per-element math is in notmiwae_fast/math.h (shared with CUDA).
//
// Every kernel runs over the B·K rows (b, k) in parallel, each row a loop over the D
// features; per-feature gradients (W, b, df) are summed over rows in one buffer per
// thread. Per-element math runs in at::opmath_type (float for float32: float32
// transcendentals are several times cheaper) and every sum over D or over rows
// accumulates in at::acc_type (float64 for float32).
// Entries under mask = 0 are removed by selection (never by multiplying with 0), so
// whatever x holds there (NaN, ±inf) cannot reach a value or a gradient.
// The loops below are written branch-free (selects, not branches) so that GCC can
// vectorise them; two options let it: FP comparisons do not trap (so selects may be
// if-converted) and no jump threading (which would turn repeated selects on one mask
// back into branches). Neither changes any result.
// The row kernels are also compiled for AVX-512 and AVX2 + FMA (x86-64-v4 / v3) next to
// the baseline, the best one picked at load time (GCC function multi-versioning).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#pragma GCC optimize("no-thread-jumps")
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NMF_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NMF_VECTOR_CLONES
#endif

#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/OpMathType.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/likelihood.h"
#include "notmiwae_fast/math.h"
#include "vec_math.h"

namespace notmiwae_fast {
namespace {

// Elements one parallel task should touch (ATen's grain size for element-wise loops).
constexpr int64_t kGrainElements = 32768;

// Features per tile of a row sum: per-element values go to a stack buffer by a loop the
// compiler vectorises, then are added up in acc_t.
constexpr int64_t kTile = 256;

// The elementary functions of the formulas (vectorisable polynomials for float).
using F = cpu::VecMath;

// Σ v[0..n) in acc_t over eight independent lanes (vectorisable, short dependency chains).
template <typename acc_t, typename T>
acc_t lane_sum(const T* __restrict v, int64_t n) {
  acc_t lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += static_cast<acc_t>(v[j + l]);
  acc_t sum = 0;
  for (; j < n; ++j) sum += static_cast<acc_t>(v[j]);
  for (int l = 0; l < 8; ++l) sum += lanes[l];
  return sum;
}

// The mask as 0/1 values of the data's dtype (nonzero = observed), contiguous: the
// loops select with it; same-width loads keep them vectorisable.
at::Tensor mask_values(const at::Tensor& mask, at::ScalarType dtype) {
  return mask_as_bool(mask).to(dtype);
}

// Runs body(i0, i1) over the rows [0, rows) of length D in parallel.
template <typename F>
void parallel_rows(int64_t rows, int64_t D, const F& body) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, D));
  at::parallel_for(0, rows, grain, body);
}

// Per-thread partial sums of `n` per-feature gradients ([D] each), added up at the end,
// so that the parallel loop over rows needs no atomics and stays deterministic for a
// fixed thread count.
template <typename acc_t>
class FeatureSums {
 public:
  FeatureSums(int64_t n, int64_t D)
      : n_(n), D_(D), buf_(static_cast<size_t>(at::get_num_threads() * n * D), acc_t(0)) {}

  // The calling thread's buffer of gradient `which` (call inside the parallel loop).
  acc_t* local(int64_t which) {
    return buf_.data() + (static_cast<int64_t>(at::get_thread_num()) * n_ + which) * D_;
  }

  // Gradient `which` summed over threads, as a [D] tensor of `options`' dtype.
  at::Tensor total(int64_t which, const at::TensorOptions& options) const {
    at::Tensor out = at::empty({D_}, options);
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "feature_sums", [&] {
      scalar_t* o = out.mutable_data_ptr<scalar_t>();
      const int64_t threads = static_cast<int64_t>(buf_.size()) / std::max<int64_t>(1, n_ * D_);
      for (int64_t d = 0; d < D_; ++d) {
        acc_t s = 0;
        for (int64_t t = 0; t < threads; ++t) s += buf_[(t * n_ + which) * D_ + d];
        o[d] = static_cast<scalar_t>(s);
      }
    });
    return out;
  }

 private:
  int64_t n_, D_;
  std::vector<acc_t> buf_;
};

// ------------------------------------------------------------------------------------
// Row kernels: one (b, k) row of D features. Pointer arguments are __restrict (they
// never overlap), which lets GCC vectorise the loops without runtime alias checks;
// every loop body is branch-free: both sides of each select are computed first and x
// is loaded unconditionally. `x`, `mask` point at row b of [B, D]; the per-sample
// pointers at row (b, k) of [B, K, D]; the per-feature ones at [D].
// Forward rows fill tile buffers of values and add them up in acc_t.
// ------------------------------------------------------------------------------------
template <typename scalar_t, typename math_t = at::opmath_type<scalar_t>>
NMF_VECTOR_CLONES at::acc_type<scalar_t, false> normal_row(int64_t D, const scalar_t* __restrict x,
                                         const scalar_t* __restrict mask,
                                         const scalar_t* __restrict loc,
                                         const scalar_t* __restrict scale) {
  using acc_t = at::acc_type<scalar_t, false>;
  math_t buf[kTile];
  acc_t sum = 0;
  for (int64_t d0 = 0; d0 < D; d0 += kTile) {
    const int64_t n = std::min(kTile, D - d0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t d = d0 + j;
      const bool m = mask[d] != scalar_t(0);
      const math_t loc_d = loc[d], x_raw = x[d];
      const math_t x_d = m ? x_raw : loc_d;
      const math_t v = math::normal_log_density<F>(x_d, loc_d, static_cast<math_t>(scale[d]));
      buf[j] = m ? v : math_t(0);
    }
    sum += lane_sum<acc_t>(buf, n);
  }
  return sum;
}

template <typename scalar_t, typename math_t = at::opmath_type<scalar_t>>
NMF_VECTOR_CLONES void normal_backward_row(int64_t D, math_t g, const scalar_t* __restrict x,
                         const scalar_t* __restrict mask, const scalar_t* __restrict loc,
                         const scalar_t* __restrict scale, scalar_t* __restrict grad_loc,
                         scalar_t* __restrict grad_scale) {
  for (int64_t d = 0; d < D; ++d) {
    const bool m = mask[d] != scalar_t(0);
    const math_t loc_d = loc[d], x_raw = x[d];
    const math_t x_d = m ? x_raw : loc_d;
    const auto dn = math::normal_log_density_grad(x_d, loc_d, static_cast<math_t>(scale[d]));
    const math_t gl = g * dn.loc, gs = g * dn.scale;
    grad_loc[d] = static_cast<scalar_t>(m ? gl : math_t(0));
    grad_scale[d] = static_cast<scalar_t>(m ? gs : math_t(0));
  }
}

template <typename scalar_t, typename math_t = at::opmath_type<scalar_t>>
NMF_VECTOR_CLONES at::acc_type<scalar_t, false> bernoulli_row(int64_t D, const scalar_t* __restrict x,
                                            const scalar_t* __restrict mask,
                                            const scalar_t* __restrict logits) {
  using acc_t = at::acc_type<scalar_t, false>;
  math_t buf[kTile];
  acc_t sum = 0;
  for (int64_t d0 = 0; d0 < D; d0 += kTile) {
    const int64_t n = std::min(kTile, D - d0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t d = d0 + j;
      const bool m = mask[d] != scalar_t(0);
      const math_t x_raw = x[d];
      const math_t x_d = m ? x_raw : math_t(0);
      const math_t v = math::bernoulli_log_prob<F>(x_d, static_cast<math_t>(logits[d]));
      buf[j] = m ? v : math_t(0);
    }
    sum += lane_sum<acc_t>(buf, n);
  }
  return sum;
}

template <typename scalar_t, typename math_t = at::opmath_type<scalar_t>>
NMF_VECTOR_CLONES void bernoulli_backward_row(int64_t D, math_t g, const scalar_t* __restrict x,
                            const scalar_t* __restrict mask, const scalar_t* __restrict logits,
                            scalar_t* __restrict grad_logits) {
  for (int64_t d = 0; d < D; ++d) {
    const bool m = mask[d] != scalar_t(0);
    const math_t x_raw = x[d];
    const math_t x_d = m ? x_raw : math_t(0);
    const math_t gl = g * math::bernoulli_log_prob_dlogit<F>(x_d, static_cast<math_t>(logits[d]));
    grad_logits[d] = static_cast<scalar_t>(m ? gl : math_t(0));
  }
}

// log_norm, dlog_norm: the per-feature c(df), c'(df) in math_t (studentt_feature_terms).
template <typename scalar_t, typename math_t = at::opmath_type<scalar_t>>
NMF_VECTOR_CLONES at::acc_type<scalar_t, false> studentt_row(int64_t D, const scalar_t* __restrict x,
                                           const scalar_t* __restrict mask,
                                           const scalar_t* __restrict loc,
                                           const scalar_t* __restrict scale,
                                           const scalar_t* __restrict df,
                                           const math_t* __restrict log_norm) {
  using acc_t = at::acc_type<scalar_t, false>;
  math_t buf[kTile];
  acc_t sum = 0;
  for (int64_t d0 = 0; d0 < D; d0 += kTile) {
    const int64_t n = std::min(kTile, D - d0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t d = d0 + j;
      const bool m = mask[d] != scalar_t(0);
      const math_t loc_d = loc[d], x_raw = x[d];
      const math_t x_d = m ? x_raw : loc_d;
      const math_t v = math::studentt_log_density<F>(x_d, loc_d, static_cast<math_t>(scale[d]),
                                                     static_cast<math_t>(df[d]), log_norm[d]);
      buf[j] = m ? v : math_t(0);
    }
    sum += lane_sum<acc_t>(buf, n);
  }
  return sum;
}

template <typename scalar_t, typename math_t = at::opmath_type<scalar_t>,
          typename acc_t = at::acc_type<scalar_t, false>>
NMF_VECTOR_CLONES void studentt_backward_row(int64_t D, math_t g, const scalar_t* __restrict x,
                           const scalar_t* __restrict mask, const scalar_t* __restrict loc,
                           const scalar_t* __restrict scale, const scalar_t* __restrict df,
                           const math_t* __restrict dlog_norm, scalar_t* __restrict grad_loc,
                           scalar_t* __restrict grad_scale, acc_t* __restrict grad_df) {
  for (int64_t d = 0; d < D; ++d) {
    const bool m = mask[d] != scalar_t(0);
    const math_t loc_d = loc[d], x_raw = x[d];
    const math_t x_d = m ? x_raw : loc_d;
    const auto dt = math::studentt_log_density_grad<F>(
        x_d, loc_d, static_cast<math_t>(scale[d]), static_cast<math_t>(df[d]), dlog_norm[d]);
    const math_t gl = g * dt.loc, gs = g * dt.scale, gdf = g * dt.df;
    grad_loc[d] = static_cast<scalar_t>(m ? gl : math_t(0));
    grad_scale[d] = static_cast<scalar_t>(m ? gs : math_t(0));
    grad_df[d] += static_cast<acc_t>(m ? gdf : math_t(0));
  }
}

template <typename scalar_t, typename math_t = at::opmath_type<scalar_t>>
NMF_VECTOR_CLONES at::acc_type<scalar_t, false> selfmask_row(int64_t D, const scalar_t* __restrict x_full,
                                           const scalar_t* __restrict mask,
                                           const scalar_t* __restrict W,
                                           const scalar_t* __restrict bias) {
  using acc_t = at::acc_type<scalar_t, false>;
  math_t buf[kTile];
  acc_t sum = 0;
  for (int64_t d0 = 0; d0 < D; d0 += kTile) {
    const int64_t n = std::min(kTile, D - d0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t d = d0 + j;
      const math_t l = math::selfmask_logit(static_cast<math_t>(x_full[d]),
                                            static_cast<math_t>(W[d]), static_cast<math_t>(bias[d]));
      buf[j] = math::bernoulli_log_prob<F>(static_cast<math_t>(mask[d]), l);
    }
    sum += lane_sum<acc_t>(buf, n);
  }
  return sum;
}

template <typename scalar_t, typename math_t = at::opmath_type<scalar_t>,
          typename acc_t = at::acc_type<scalar_t, false>>
NMF_VECTOR_CLONES void selfmask_backward_row(int64_t D, math_t g, const scalar_t* __restrict x_full,
                           const scalar_t* __restrict mask, const scalar_t* __restrict W,
                           const scalar_t* __restrict bias, scalar_t* __restrict grad_x,
                           acc_t* __restrict grad_W, acc_t* __restrict grad_b) {
  for (int64_t d = 0; d < D; ++d) {
    const math_t x_d = x_full[d], w = W[d], c = bias[d];
    const math_t l = math::selfmask_logit(x_d, w, c);
    const math_t dl = g * math::bernoulli_log_prob_dlogit<F>(static_cast<math_t>(mask[d]), l);
    grad_x[d] = static_cast<scalar_t>(-w * dl);
    grad_W[d] -= static_cast<acc_t>((x_d - c) * dl);
    grad_b[d] += static_cast<acc_t>(w * dl);
  }
}

// Both not-MIWAE terms of one row, x̂ = mask ? x : loc + scale·eps kept in a register.
template <typename scalar_t, typename math_t = at::opmath_type<scalar_t>,
          typename acc_t = at::acc_type<scalar_t, false>>
NMF_VECTOR_CLONES void notmiwae_row(int64_t D, const scalar_t* __restrict x, const scalar_t* __restrict mask,
                  const scalar_t* __restrict loc, const scalar_t* __restrict scale,
                  const scalar_t* __restrict eps, const scalar_t* __restrict W,
                  const scalar_t* __restrict bias, acc_t& log_obs, acc_t& log_miss) {
  math_t buf_obs[kTile], buf_miss[kTile];
  acc_t sum_obs = 0, sum_miss = 0;
  for (int64_t d0 = 0; d0 < D; d0 += kTile) {
    const int64_t n = std::min(kTile, D - d0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t d = d0 + j;
      const math_t s = mask[d];
      const bool m = s != math_t(0);
      const math_t loc_d = loc[d], scale_d = scale[d], x_raw = x[d];
      const math_t x_d = m ? x_raw : loc_d;
      const math_t v = math::normal_log_density<F>(x_d, loc_d, scale_d);
      buf_obs[j] = m ? v : math_t(0);
      const math_t x_sample = loc_d + scale_d * static_cast<math_t>(eps[d]);
      const math_t x_hat = m ? x_d : x_sample;
      const math_t l = math::selfmask_logit(x_hat, static_cast<math_t>(W[d]),
                                            static_cast<math_t>(bias[d]));
      buf_miss[j] = math::bernoulli_log_prob<F>(s, l);
    }
    sum_obs += lane_sum<acc_t>(buf_obs, n);
    sum_miss += lane_sum<acc_t>(buf_miss, n);
  }
  log_obs = sum_obs;
  log_miss = sum_miss;
}

// Gradients of one row, with g_o = grad_obs[b, k], g_m = grad_miss[b, k], ℓ the
// self-masking logit of x̂ and δ = g_m · ∂/∂ℓ log Bernoulli(s; σ(ℓ)):
//   observed (s = 1):  d loc = g_o ∂_loc log N,   d scale = g_o ∂_scale log N
//   missing  (s = 0):  d loc = δ · (−W),           d scale = δ · (−W) · eps
//   every feature:     d W  += δ · (−(x̂ − b)),    d b     += δ · W.
template <typename scalar_t, typename math_t = at::opmath_type<scalar_t>,
          typename acc_t = at::acc_type<scalar_t, false>>
NMF_VECTOR_CLONES void notmiwae_backward_row(int64_t D, math_t g_obs, math_t g_miss, const scalar_t* __restrict x,
                           const scalar_t* __restrict mask, const scalar_t* __restrict loc,
                           const scalar_t* __restrict scale, const scalar_t* __restrict eps,
                           const scalar_t* __restrict W, const scalar_t* __restrict bias,
                           scalar_t* __restrict grad_loc, scalar_t* __restrict grad_scale,
                           acc_t* __restrict grad_W, acc_t* __restrict grad_b) {
  for (int64_t d = 0; d < D; ++d) {
    const math_t s = mask[d];
    const bool m = s != math_t(0);
    const math_t loc_d = loc[d], scale_d = scale[d], eps_d = eps[d], w = W[d], c = bias[d];
    const math_t x_raw = x[d];
    const math_t x_d = m ? x_raw : loc_d;
    const auto dn = math::normal_log_density_grad(x_d, loc_d, scale_d);
    const math_t x_sample = loc_d + scale_d * eps_d;
    const math_t x_hat = m ? x_d : x_sample;
    const math_t l = math::selfmask_logit(x_hat, w, c);
    const math_t delta = g_miss * math::bernoulli_log_prob_dlogit<F>(s, l);
    const math_t d_x_hat = -w * delta;
    const math_t gl_obs = g_obs * dn.loc, gs_obs = g_obs * dn.scale, gs_miss = d_x_hat * eps_d;
    grad_loc[d] = static_cast<scalar_t>(m ? gl_obs : d_x_hat);
    grad_scale[d] = static_cast<scalar_t>(m ? gs_obs : gs_miss);
    grad_W[d] -= static_cast<acc_t>((x_hat - c) * delta);
    grad_b[d] += static_cast<acc_t>(w * delta);
  }
}

// ------------------------------------------------------------------------------------
// Operators: checks, contiguous inputs, the parallel loop over the B·K rows.
// ------------------------------------------------------------------------------------
at::Tensor masked_normal_logprob_cpu(const at::Tensor& x_, const at::Tensor& mask_,
                                     const at::Tensor& loc_, const at::Tensor& scale_) {
  check_location_scale(x_, mask_, loc_, scale_);
  check_cpu_dtype(x_, "x");
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  at::Tensor out = at::empty({B, K}, loc_.options());
  if (B * K == 0) return out;
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_normal_logprob_cpu", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        o[i] = static_cast<scalar_t>(normal_row(D, xp + b * D, mp + b * D, lp + i * D, sp + i * D));
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> masked_normal_logprob_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& mask_,
    const at::Tensor& loc_, const at::Tensor& scale_) {
  check_location_scale(x_, mask_, loc_, scale_);
  check_cpu_dtype(x_, "x");
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  check_row_grad(grad_, "grad", loc_, "loc", B, K);
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0) return {grad_loc, grad_scale};
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous(), grad = grad_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_normal_logprob_backward_cpu", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>(),
                   *gp = grad.const_data_ptr<scalar_t>();
    scalar_t *glp = grad_loc.mutable_data_ptr<scalar_t>(),
             *gsp = grad_scale.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        normal_backward_row<scalar_t>(D, gp[i], xp + b * D, mp + b * D, lp + i * D, sp + i * D,
                                      glp + i * D, gsp + i * D);
      }
    });
  });
  return {grad_loc, grad_scale};
}

void check_bernoulli_cpu(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& logits) {
  check_bernoulli(x, mask, logits);
  check_cpu_dtype(x, "x");
}

at::Tensor masked_bernoulli_logprob_cpu(const at::Tensor& x_, const at::Tensor& mask_,
                                        const at::Tensor& logits_) {
  check_bernoulli_cpu(x_, mask_, logits_);
  const int64_t B = logits_.size(0), K = logits_.size(1), D = logits_.size(2);
  at::Tensor out = at::empty({B, K}, logits_.options());
  if (B * K == 0) return out;
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, logits_.scalar_type()),
                   logits = logits_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "masked_bernoulli_logprob_cpu", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = logits.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        o[i] = static_cast<scalar_t>(bernoulli_row(D, xp + b * D, mp + b * D, lp + i * D));
      }
    });
  });
  return out;
}

at::Tensor masked_bernoulli_logprob_backward_cpu(const at::Tensor& grad_, const at::Tensor& x_,
                                                 const at::Tensor& mask_,
                                                 const at::Tensor& logits_) {
  check_bernoulli_cpu(x_, mask_, logits_);
  const int64_t B = logits_.size(0), K = logits_.size(1), D = logits_.size(2);
  check_row_grad(grad_, "grad", logits_, "logits", B, K);
  at::Tensor grad_logits = at::empty({B, K, D}, logits_.options());
  if (grad_logits.numel() == 0) return grad_logits;
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, logits_.scalar_type()),
                   logits = logits_.contiguous(), grad = grad_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "masked_bernoulli_logprob_backward_cpu", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = logits.const_data_ptr<scalar_t>(), *gp = grad.const_data_ptr<scalar_t>();
    scalar_t* o = grad_logits.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        bernoulli_backward_row<scalar_t>(D, gp[i], xp + b * D, mp + b * D, lp + i * D, o + i * D);
      }
    });
  });
  return grad_logits;
}

void check_studentt_cpu(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& loc,
                        const at::Tensor& scale, const at::Tensor& df) {
  check_studentt(x, mask, loc, scale, df);
  check_cpu_dtype(x, "x");
}

at::Tensor masked_studentt_logprob_cpu(const at::Tensor& x_, const at::Tensor& mask_,
                                       const at::Tensor& loc_, const at::Tensor& scale_,
                                       const at::Tensor& df_) {
  check_studentt_cpu(x_, mask_, loc_, scale_, df_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  at::Tensor out = at::empty({B, K}, loc_.options());
  if (B * K == 0) return out;
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous(), df = df_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_studentt_logprob_cpu", [&] {
    using math_t = at::opmath_type<scalar_t>;
    // c(df) in float64 for both dtypes (D values), then in math_t.
    const at::Tensor log_norm = studentt_feature_terms(df, at::kDouble)
                                    .first.to(c10::CppTypeToScalarType<math_t>::value);
    const math_t* cp = log_norm.const_data_ptr<math_t>();
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>(),
                   *dfp = df.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        o[i] = static_cast<scalar_t>(
            studentt_row(D, xp + b * D, mp + b * D, lp + i * D, sp + i * D, dfp, cp));
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_studentt_logprob_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& mask_,
    const at::Tensor& loc_, const at::Tensor& scale_, const at::Tensor& df_) {
  check_studentt_cpu(x_, mask_, loc_, scale_, df_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  check_row_grad(grad_, "grad", loc_, "loc", B, K);
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0) return {grad_loc, grad_scale, at::zeros({D}, loc_.options())};
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous(), df = df_.contiguous(),
                   grad = grad_.contiguous();
  at::Tensor grad_df;
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_studentt_logprob_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const at::Tensor dlog_norm = studentt_feature_terms(df, at::kDouble)
                                     .second.to(c10::CppTypeToScalarType<math_t>::value);
    const math_t* dcp = dlog_norm.const_data_ptr<math_t>();
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>(),
                   *dfp = df.const_data_ptr<scalar_t>(), *gp = grad.const_data_ptr<scalar_t>();
    scalar_t *glp = grad_loc.mutable_data_ptr<scalar_t>(),
             *gsp = grad_scale.mutable_data_ptr<scalar_t>();
    FeatureSums<acc_t> sums(1, D);
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      acc_t* gdf = sums.local(0);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        studentt_backward_row<scalar_t>(D, gp[i], xp + b * D, mp + b * D, lp + i * D,
                                        sp + i * D, dfp, dcp, glp + i * D, gsp + i * D, gdf);
      }
    });
    grad_df = sums.total(0, loc.options());
  });
  return {grad_loc, grad_scale, grad_df};
}

at::Tensor selfmask_logprob_cpu(const at::Tensor& x_full_, const at::Tensor& mask_,
                                const at::Tensor& W_, const at::Tensor& b_) {
  check_selfmask(x_full_, mask_, W_, b_);
  check_cpu_dtype(x_full_, "x_full");
  const int64_t B = x_full_.size(0), K = x_full_.size(1), D = x_full_.size(2);
  at::Tensor out = at::empty({B, K}, x_full_.options());
  if (B * K == 0) return out;
  const at::Tensor xf = x_full_.contiguous(), mask = mask_values(mask_, x_full_.scalar_type()),
                   W = W_.contiguous(), bias = b_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xf.scalar_type(), "selfmask_logprob_cpu", [&] {
    const scalar_t *xp = xf.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *wp = W.const_data_ptr<scalar_t>(), *bp = bias.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        o[i] = static_cast<scalar_t>(selfmask_row(D, xp + i * D, mp + (i / K) * D, wp, bp));
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> selfmask_logprob_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_full_, const at::Tensor& mask_,
    const at::Tensor& W_, const at::Tensor& b_) {
  check_selfmask(x_full_, mask_, W_, b_);
  check_cpu_dtype(x_full_, "x_full");
  const int64_t B = x_full_.size(0), K = x_full_.size(1), D = x_full_.size(2);
  check_row_grad(grad_, "grad", x_full_, "x_full", B, K);
  at::Tensor grad_x = at::empty({B, K, D}, x_full_.options());
  if (grad_x.numel() == 0)
    return {grad_x, at::zeros({D}, x_full_.options()), at::zeros({D}, x_full_.options())};
  const at::Tensor xf = x_full_.contiguous(), mask = mask_values(mask_, x_full_.scalar_type()),
                   W = W_.contiguous(), bias = b_.contiguous(), grad = grad_.contiguous();
  at::Tensor grad_W, grad_b;
  AT_DISPATCH_FLOATING_TYPES(xf.scalar_type(), "selfmask_logprob_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    const scalar_t *xp = xf.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *wp = W.const_data_ptr<scalar_t>(), *bp = bias.const_data_ptr<scalar_t>(),
                   *gp = grad.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    FeatureSums<acc_t> sums(2, D);
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      acc_t *gw = sums.local(0), *gb = sums.local(1);
      for (int64_t i = i0; i < i1; ++i)
        selfmask_backward_row<scalar_t>(D, gp[i], xp + i * D, mp + (i / K) * D, wp, bp,
                                        gxp + i * D, gw, gb);
    });
    grad_W = sums.total(0, xf.options());
    grad_b = sums.total(1, xf.options());
  });
  return {grad_x, grad_W, grad_b};
}

void check_notmiwae_cpu(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& loc,
                        const at::Tensor& scale, const at::Tensor& eps, const at::Tensor& W,
                        const at::Tensor& b) {
  check_notmiwae(x, mask, loc, scale, eps, W, b);
  check_cpu_dtype(x, "x");
}

std::tuple<at::Tensor, at::Tensor> notmiwae_normal_terms_cpu(
    const at::Tensor& x_, const at::Tensor& mask_, const at::Tensor& loc_,
    const at::Tensor& scale_, const at::Tensor& eps_, const at::Tensor& W_,
    const at::Tensor& b_) {
  check_notmiwae_cpu(x_, mask_, loc_, scale_, eps_, W_, b_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  at::Tensor log_obs = at::empty({B, K}, loc_.options());
  at::Tensor log_miss = at::empty({B, K}, loc_.options());
  if (B * K == 0) return {log_obs, log_miss};
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous(), eps = eps_.contiguous(),
                   W = W_.contiguous(), bias = b_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "notmiwae_normal_terms_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>(),
                   *ep = eps.const_data_ptr<scalar_t>(), *wp = W.const_data_ptr<scalar_t>(),
                   *bp = bias.const_data_ptr<scalar_t>();
    scalar_t *oo = log_obs.mutable_data_ptr<scalar_t>(), *om = log_miss.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        acc_t obs, miss;
        notmiwae_row(D, xp + b * D, mp + b * D, lp + i * D, sp + i * D, ep + i * D, wp, bp, obs,
                     miss);
        oo[i] = static_cast<scalar_t>(obs);
        om[i] = static_cast<scalar_t>(miss);
      }
    });
  });
  return {log_obs, log_miss};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> notmiwae_normal_terms_backward_cpu(
    const at::Tensor& grad_obs_, const at::Tensor& grad_miss_, const at::Tensor& x_,
    const at::Tensor& mask_, const at::Tensor& loc_, const at::Tensor& scale_,
    const at::Tensor& eps_, const at::Tensor& W_, const at::Tensor& b_) {
  check_notmiwae_cpu(x_, mask_, loc_, scale_, eps_, W_, b_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  check_row_grad(grad_obs_, "grad_obs", loc_, "loc", B, K);
  check_row_grad(grad_miss_, "grad_miss", loc_, "loc", B, K);
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0)
    return {grad_loc, grad_scale, at::zeros({D}, loc_.options()), at::zeros({D}, loc_.options())};
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous(), eps = eps_.contiguous(),
                   W = W_.contiguous(), bias = b_.contiguous(), grad_obs = grad_obs_.contiguous(),
                   grad_miss = grad_miss_.contiguous();
  at::Tensor grad_W, grad_b;
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "notmiwae_normal_terms_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>(),
                   *ep = eps.const_data_ptr<scalar_t>(), *wp = W.const_data_ptr<scalar_t>(),
                   *bp = bias.const_data_ptr<scalar_t>(), *gop = grad_obs.const_data_ptr<scalar_t>(),
                   *gmp = grad_miss.const_data_ptr<scalar_t>();
    scalar_t *glp = grad_loc.mutable_data_ptr<scalar_t>(),
             *gsp = grad_scale.mutable_data_ptr<scalar_t>();
    FeatureSums<acc_t> sums(2, D);
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      acc_t *gw = sums.local(0), *gb = sums.local(1);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        notmiwae_backward_row<scalar_t>(D, gop[i], gmp[i], xp + b * D, mp + b * D, lp + i * D,
                                        sp + i * D, ep + i * D, wp, bp, glp + i * D,
                                        gsp + i * D, gw, gb);
      }
    });
    grad_W = sums.total(0, loc.options());
    grad_b = sums.total(1, loc.options());
  });
  return {grad_loc, grad_scale, grad_W, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CPU, m) {
  m.impl("masked_normal_logprob", &masked_normal_logprob_cpu);
  m.impl("masked_normal_logprob_backward", &masked_normal_logprob_backward_cpu);
  m.impl("masked_bernoulli_logprob", &masked_bernoulli_logprob_cpu);
  m.impl("masked_bernoulli_logprob_backward", &masked_bernoulli_logprob_backward_cpu);
  m.impl("masked_studentt_logprob", &masked_studentt_logprob_cpu);
  m.impl("masked_studentt_logprob_backward", &masked_studentt_logprob_backward_cpu);
  m.impl("selfmask_logprob", &selfmask_logprob_cpu);
  m.impl("selfmask_logprob_backward", &selfmask_logprob_backward_cpu);
  m.impl("notmiwae_normal_terms", &notmiwae_normal_terms_cpu);
  m.impl("notmiwae_normal_terms_backward", &notmiwae_normal_terms_backward_cpu);
}

}  // namespace notmiwae_fast
