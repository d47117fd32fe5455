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

namespace notmiwae_fast {
namespace {

// Elements one parallel task should touch (ATen's grain size for element-wise loops).
constexpr int64_t kGrainElements = 32768;

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
// masked_normal_logprob
// ------------------------------------------------------------------------------------
at::Tensor masked_normal_logprob_cpu(const at::Tensor& x_, const at::Tensor& mask_,
                                     const at::Tensor& loc_, const at::Tensor& scale_) {
  check_location_scale(x_, mask_, loc_, scale_);
  check_cpu_dtype(x_, "x");
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  at::Tensor out = at::empty({B, K}, loc_.options());
  if (B * K == 0) return out;
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_normal_logprob_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *lp = loc.const_data_ptr<scalar_t>(),
                   *sp = scale.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        const scalar_t *xb = xp + b * D, *li = lp + i * D, *si = sp + i * D;
        const bool* mb = mp + b * D;
        acc_t sum = 0;
        for (int64_t d = 0; d < D; ++d) {
          const math_t loc_d = li[d];
          const math_t x_d = mb[d] ? static_cast<math_t>(xb[d]) : loc_d;
          const math_t v = math::normal_log_density(x_d, loc_d, static_cast<math_t>(si[d]));
          sum += mb[d] ? v : math_t(0);
        }
        o[i] = static_cast<scalar_t>(sum);
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
  check_row_grad(grad_, "grad", loc_, B, K);
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0) return {grad_loc, grad_scale};
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous(), grad = grad_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_normal_logprob_backward_cpu", [&] {
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *lp = loc.const_data_ptr<scalar_t>(),
                   *sp = scale.const_data_ptr<scalar_t>(), *gp = grad.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t *glp = grad_loc.mutable_data_ptr<scalar_t>(),
             *gsp = grad_scale.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        const scalar_t *xb = xp + b * D, *li = lp + i * D, *si = sp + i * D;
        const bool* mb = mp + b * D;
        const math_t g = gp[i];
        for (int64_t d = 0; d < D; ++d) {
          const math_t loc_d = li[d];
          const math_t x_d = mb[d] ? static_cast<math_t>(xb[d]) : loc_d;
          const auto dn = math::normal_log_density_grad(x_d, loc_d, static_cast<math_t>(si[d]));
          glp[i * D + d] = static_cast<scalar_t>(mb[d] ? g * dn.loc : math_t(0));
          gsp[i * D + d] = static_cast<scalar_t>(mb[d] ? g * dn.scale : math_t(0));
        }
      }
    });
  });
  return {grad_loc, grad_scale};
}

// ------------------------------------------------------------------------------------
// masked_bernoulli_logprob
// ------------------------------------------------------------------------------------
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
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), logits = logits_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "masked_bernoulli_logprob_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *lp = logits.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        const scalar_t *xb = xp + b * D, *li = lp + i * D;
        const bool* mb = mp + b * D;
        acc_t sum = 0;
        for (int64_t d = 0; d < D; ++d) {
          const math_t x_d = mb[d] ? static_cast<math_t>(xb[d]) : math_t(0);
          const math_t v = math::bernoulli_log_prob(x_d, static_cast<math_t>(li[d]));
          sum += mb[d] ? v : math_t(0);
        }
        o[i] = static_cast<scalar_t>(sum);
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
  check_row_grad(grad_, "grad", logits_, B, K);
  at::Tensor grad_logits = at::empty({B, K, D}, logits_.options());
  if (grad_logits.numel() == 0) return grad_logits;
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_),
                   logits = logits_.contiguous(), grad = grad_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "masked_bernoulli_logprob_backward_cpu", [&] {
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *lp = logits.const_data_ptr<scalar_t>(),
                   *gp = grad.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t* o = grad_logits.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        const scalar_t *xb = xp + b * D, *li = lp + i * D;
        const bool* mb = mp + b * D;
        const math_t g = gp[i];
        for (int64_t d = 0; d < D; ++d) {
          const math_t x_d = mb[d] ? static_cast<math_t>(xb[d]) : math_t(0);
          const math_t dl = math::bernoulli_log_prob_dlogit(x_d, static_cast<math_t>(li[d]));
          o[i * D + d] = static_cast<scalar_t>(mb[d] ? g * dl : math_t(0));
        }
      }
    });
  });
  return grad_logits;
}

// ------------------------------------------------------------------------------------
// masked_studentt_logprob
// ------------------------------------------------------------------------------------
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
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous(), df = df_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_studentt_logprob_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const at::Tensor log_norm =
        studentt_feature_terms(df, c10::CppTypeToScalarType<math_t>::value).first;
    const math_t* cp = log_norm.const_data_ptr<math_t>();
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *lp = loc.const_data_ptr<scalar_t>(),
                   *sp = scale.const_data_ptr<scalar_t>(), *dfp = df.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        const scalar_t *xb = xp + b * D, *li = lp + i * D, *si = sp + i * D;
        const bool* mb = mp + b * D;
        acc_t sum = 0;
        for (int64_t d = 0; d < D; ++d) {
          const math_t loc_d = li[d];
          const math_t x_d = mb[d] ? static_cast<math_t>(xb[d]) : loc_d;
          const math_t v = math::studentt_log_density(x_d, loc_d, static_cast<math_t>(si[d]),
                                                     static_cast<math_t>(dfp[d]), cp[d]);
          sum += mb[d] ? v : math_t(0);
        }
        o[i] = static_cast<scalar_t>(sum);
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
  check_row_grad(grad_, "grad", loc_, B, K);
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0) return {grad_loc, grad_scale, at::zeros({D}, loc_.options())};
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous(), df = df_.contiguous(), grad = grad_.contiguous();
  at::Tensor grad_df;
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_studentt_logprob_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const at::Tensor dlog_norm =
        studentt_feature_terms(df, c10::CppTypeToScalarType<math_t>::value).second;
    const math_t* dcp = dlog_norm.const_data_ptr<math_t>();
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *lp = loc.const_data_ptr<scalar_t>(),
                   *sp = scale.const_data_ptr<scalar_t>(), *dfp = df.const_data_ptr<scalar_t>(),
                   *gp = grad.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t *glp = grad_loc.mutable_data_ptr<scalar_t>(),
             *gsp = grad_scale.mutable_data_ptr<scalar_t>();
    FeatureSums<acc_t> sums(1, D);
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      acc_t* gdf = sums.local(0);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        const scalar_t *xb = xp + b * D, *li = lp + i * D, *si = sp + i * D;
        const bool* mb = mp + b * D;
        const math_t g = gp[i];
        for (int64_t d = 0; d < D; ++d) {
          const math_t loc_d = li[d];
          const math_t x_d = mb[d] ? static_cast<math_t>(xb[d]) : loc_d;
          const auto dt = math::studentt_log_density_grad(
              x_d, loc_d, static_cast<math_t>(si[d]), static_cast<math_t>(dfp[d]), dcp[d]);
          glp[i * D + d] = static_cast<scalar_t>(mb[d] ? g * dt.loc : math_t(0));
          gsp[i * D + d] = static_cast<scalar_t>(mb[d] ? g * dt.scale : math_t(0));
          gdf[d] += mb[d] ? g * dt.df : math_t(0);
        }
      }
    });
    grad_df = sums.total(0, loc.options());
  });
  return {grad_loc, grad_scale, grad_df};
}

// ------------------------------------------------------------------------------------
// selfmask_logprob
// ------------------------------------------------------------------------------------
at::Tensor selfmask_logprob_cpu(const at::Tensor& x_full_, const at::Tensor& mask_,
                                const at::Tensor& W_, const at::Tensor& b_) {
  check_selfmask(x_full_, mask_, W_, b_);
  check_cpu_dtype(x_full_, "x_full");
  const int64_t B = x_full_.size(0), K = x_full_.size(1), D = x_full_.size(2);
  at::Tensor out = at::empty({B, K}, x_full_.options());
  if (B * K == 0) return out;
  const at::Tensor xf = x_full_.contiguous(), mask = mask_as_bool(mask_), W = W_.contiguous(),
                   bias = b_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xf.scalar_type(), "selfmask_logprob_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = xf.const_data_ptr<scalar_t>(), *wp = W.const_data_ptr<scalar_t>(),
                   *bp = bias.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const scalar_t* xi = xp + i * D;
        const bool* mb = mp + (i / K) * D;
        acc_t sum = 0;
        for (int64_t d = 0; d < D; ++d) {
          const math_t l = math::selfmask_logit(static_cast<math_t>(xi[d]),
                                               static_cast<math_t>(wp[d]),
                                               static_cast<math_t>(bp[d]));
          sum += math::bernoulli_log_prob(static_cast<math_t>(mb[d]), l);
        }
        o[i] = static_cast<scalar_t>(sum);
      }
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
  check_row_grad(grad_, "grad", x_full_, B, K);
  at::Tensor grad_x = at::empty({B, K, D}, x_full_.options());
  if (grad_x.numel() == 0)
    return {grad_x, at::zeros({D}, x_full_.options()), at::zeros({D}, x_full_.options())};
  const at::Tensor xf = x_full_.contiguous(), mask = mask_as_bool(mask_), W = W_.contiguous(),
                   bias = b_.contiguous(), grad = grad_.contiguous();
  at::Tensor grad_W, grad_b;
  AT_DISPATCH_FLOATING_TYPES(xf.scalar_type(), "selfmask_logprob_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = xf.const_data_ptr<scalar_t>(), *wp = W.const_data_ptr<scalar_t>(),
                   *bp = bias.const_data_ptr<scalar_t>(), *gp = grad.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t* gx = grad_x.mutable_data_ptr<scalar_t>();
    FeatureSums<acc_t> sums(2, D);
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      acc_t *gw = sums.local(0), *gb = sums.local(1);
      for (int64_t i = i0; i < i1; ++i) {
        const scalar_t* xi = xp + i * D;
        const bool* mb = mp + (i / K) * D;
        const math_t g = gp[i];
        for (int64_t d = 0; d < D; ++d) {
          const math_t x_d = xi[d], w = wp[d], c = bp[d];
          const math_t l = math::selfmask_logit(x_d, w, c);
          const math_t dl = g * math::bernoulli_log_prob_dlogit(static_cast<math_t>(mb[d]), l);
          gx[i * D + d] = static_cast<scalar_t>(-w * dl);
          gw[d] -= (x_d - c) * dl;
          gb[d] += w * dl;
        }
      }
    });
    grad_W = sums.total(0, xf.options());
    grad_b = sums.total(1, xf.options());
  });
  return {grad_x, grad_W, grad_b};
}

// ------------------------------------------------------------------------------------
// notmiwae_normal_terms: one pass over [B, K, D], x̂ kept in a register.
// ------------------------------------------------------------------------------------
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
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous(), eps = eps_.contiguous(), W = W_.contiguous(),
                   bias = b_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "notmiwae_normal_terms_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *lp = loc.const_data_ptr<scalar_t>(),
                   *sp = scale.const_data_ptr<scalar_t>(), *ep = eps.const_data_ptr<scalar_t>(),
                   *wp = W.const_data_ptr<scalar_t>(), *bp = bias.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t *oo = log_obs.mutable_data_ptr<scalar_t>(), *om = log_miss.mutable_data_ptr<scalar_t>();
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        const scalar_t *xb = xp + b * D, *li = lp + i * D, *si = sp + i * D, *ei = ep + i * D;
        const bool* mb = mp + b * D;
        acc_t sum_obs = 0, sum_miss = 0;
        for (int64_t d = 0; d < D; ++d) {
          const bool m = mb[d];
          const math_t loc_d = li[d], scale_d = si[d];
          const math_t x_d = m ? static_cast<math_t>(xb[d]) : loc_d;
          const math_t v = math::normal_log_density(x_d, loc_d, scale_d);
          sum_obs += m ? v : math_t(0);
          const math_t x_hat = m ? x_d : loc_d + scale_d * static_cast<math_t>(ei[d]);
          const math_t l = math::selfmask_logit(x_hat, static_cast<math_t>(wp[d]),
                                               static_cast<math_t>(bp[d]));
          sum_miss += math::bernoulli_log_prob(static_cast<math_t>(m), l);
        }
        oo[i] = static_cast<scalar_t>(sum_obs);
        om[i] = static_cast<scalar_t>(sum_miss);
      }
    });
  });
  return {log_obs, log_miss};
}

// Gradients, with g_o = grad_obs[b, k], g_m = grad_miss[b, k], ℓ the self-masking logit
// of x̂ and δ = g_m · ∂/∂ℓ log Bernoulli(s; σ(ℓ)):
//   observed (s = 1):  d loc = g_o ∂_loc log N,   d scale = g_o ∂_scale log N
//   missing  (s = 0):  d loc = δ · (−W),           d scale = δ · (−W) · eps
//   every feature:     d W  += δ · (−(x̂ − b)),    d b     += δ · W.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> notmiwae_normal_terms_backward_cpu(
    const at::Tensor& grad_obs_, const at::Tensor& grad_miss_, const at::Tensor& x_,
    const at::Tensor& mask_, const at::Tensor& loc_, const at::Tensor& scale_,
    const at::Tensor& eps_, const at::Tensor& W_, const at::Tensor& b_) {
  check_notmiwae_cpu(x_, mask_, loc_, scale_, eps_, W_, b_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  check_row_grad(grad_obs_, "grad_obs", loc_, B, K);
  check_row_grad(grad_miss_, "grad_miss", loc_, B, K);
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0)
    return {grad_loc, grad_scale, at::zeros({D}, loc_.options()), at::zeros({D}, loc_.options())};
  const at::Tensor x = x_.contiguous(), mask = mask_as_bool(mask_), loc = loc_.contiguous(),
                   scale = scale_.contiguous(), eps = eps_.contiguous(), W = W_.contiguous(),
                   bias = b_.contiguous(), grad_obs = grad_obs_.contiguous(),
                   grad_miss = grad_miss_.contiguous();
  at::Tensor grad_W, grad_b;
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "notmiwae_normal_terms_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *lp = loc.const_data_ptr<scalar_t>(),
                   *sp = scale.const_data_ptr<scalar_t>(), *ep = eps.const_data_ptr<scalar_t>(),
                   *wp = W.const_data_ptr<scalar_t>(), *bp = bias.const_data_ptr<scalar_t>(),
                   *gop = grad_obs.const_data_ptr<scalar_t>(),
                   *gmp = grad_miss.const_data_ptr<scalar_t>();
    const bool* mp = mask.const_data_ptr<bool>();
    scalar_t *glp = grad_loc.mutable_data_ptr<scalar_t>(),
             *gsp = grad_scale.mutable_data_ptr<scalar_t>();
    FeatureSums<acc_t> sums(2, D);
    parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) {
      acc_t *gw = sums.local(0), *gb = sums.local(1);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / K;
        const scalar_t *xb = xp + b * D, *li = lp + i * D, *si = sp + i * D, *ei = ep + i * D;
        const bool* mb = mp + b * D;
        const math_t g_obs = gop[i], g_miss = gmp[i];
        for (int64_t d = 0; d < D; ++d) {
          const bool m = mb[d];
          const math_t loc_d = li[d], scale_d = si[d], eps_d = ei[d], w = wp[d], c = bp[d];
          const math_t x_d = m ? static_cast<math_t>(xb[d]) : loc_d;
          const auto dn = math::normal_log_density_grad(x_d, loc_d, scale_d);
          const math_t x_hat = m ? x_d : loc_d + scale_d * eps_d;
          const math_t l = math::selfmask_logit(x_hat, w, c);
          const math_t delta = g_miss * math::bernoulli_log_prob_dlogit(static_cast<math_t>(m), l);
          const math_t d_x_hat = -w * delta;
          glp[i * D + d] = static_cast<scalar_t>(m ? g_obs * dn.loc : d_x_hat);
          gsp[i * D + d] = static_cast<scalar_t>(m ? g_obs * dn.scale : d_x_hat * eps_d);
          gw[d] -= (x_hat - c) * delta;
          gb[d] += w * delta;
        }
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
