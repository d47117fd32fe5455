// The likelihood family (masked_normal_logprob, masked_bernoulli_logprob,
// masked_studentt_logprob, masked_poisson_logprob, selfmask_logprob,
// notmiwae_normal_terms, masked_categorical_logprob), shared by the CPU and CUDA kernels:
// where each op's operands live, the per-element terms that the kernels add up over D
// (or whose gradients they write), the per-column term of the categorical op, and
// host-side helpers.
//
// Each op is a sum over the features d of one [B, K] row i = b·K + k of per-element
// terms. The kernels of both backends are one generic row-sum driver and one generic
// gradient driver, fed with an operand layout (Layout below) and a term (the structs
// below). Entries under mask = 0 are removed by selection (never by multiplying with 0),
// so whatever x holds there (NaN, ±inf) reaches no value and no gradient. Every term is
// branch-free (selects only): the CPU loops over them vectorise.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cmath>
#include <initializer_list>
#include <type_traits>

#include "notmiwae_fast/math.h"

namespace notmiwae_fast {
namespace likelihood {

// Where an operand lives, by its shape; element (b, k, d) of row i = b·K + k reads
//   Row [B, D] at (b, d), Mask [B, D] at (b, d) (nonzero = observed),
//   Sample [B, K, D] at (i, d), Feature [D] at d.
struct Row {};
struct Mask {};
struct Sample {};
struct Feature {};

// An op's operands in the order of its schema. kReference: the first per-sample operand,
// whose shape [B, K, D], dtype and device the op's results take.
template <typename... Kinds>
struct Layout {
  static constexpr int kSize = sizeof...(Kinds);
  static constexpr int kReference = [] {
    int k = 0;
    for (bool sample : {std::is_same_v<Kinds, Sample>...}) {
      if (sample) return k;
      ++k;
    }
    return -1;
  }();
  static_assert(kReference >= 0, "a likelihood op has a per-sample operand");
};

using NormalOperands = Layout<Row, Mask, Sample, Sample>;  // x, mask, loc, scale
using BernoulliOperands = Layout<Row, Mask, Sample>;       // x, mask, logits
using PoissonOperands = Layout<Row, Mask, Sample, Row>;    // x, mask, log_rate, lgamma(x + 1)
using StudentTOperands = Layout<Row, Mask, Sample, Sample, Feature, Feature>;  // …, df, c(df)
using SelfMaskOperands = Layout<Sample, Mask, Feature, Feature>;               // x_full, mask, W, b
using NotMiwaeOperands =  // x, mask, loc, scale, eps, W, b
    Layout<Row, Mask, Sample, Sample, Sample, Feature, Feature>;

// The gradients of one element: those of per-sample operands first, then those of
// per-feature operands (summed over rows by the kernels).
template <typename T, int N>
struct Grads {
  T v[N];
};

// ---------------------------------------------------------------------------------------
// The terms. value(operands...) is an element's term of the row's sum; grads(g...,
// operands...) its gradients given the gradient g of each [B, K] result at its row.
// kRowGrads, kSampleGrads, kFeatureGrads: how many incoming gradients and outgoing ones
// of each shape. F: the elementary functions (math.h's policy).
// ---------------------------------------------------------------------------------------

// masked_normal_logprob: mask · log N(x; loc, scale). Operands x, mask, loc, scale (and
// any further ones, unused: notmiwae_normal_terms's observation term).
struct Normal {
  static constexpr int kRowGrads = 1, kSampleGrads = 2, kFeatureGrads = 0;

  template <typename F, typename T, typename... Unused>
  NOTMIWAE_HOST_DEVICE static T value(T x, T mask, T loc, T scale, Unused...) {
    const bool observed = mask != T(0);
    const T v = math::normal_log_density<F>(observed ? x : loc, loc, scale);
    return observed ? v : T(0);
  }

  // ∂/∂loc, ∂/∂scale
  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static Grads<T, 2> grads(T g, T x, T mask, T loc, T scale) {
    const bool observed = mask != T(0);
    const auto d = math::normal_log_density_grad(observed ? x : loc, loc, scale);
    const T g_loc = g * d.loc, g_scale = g * d.scale;
    return {{observed ? g_loc : T(0), observed ? g_scale : T(0)}};
  }
};

// masked_bernoulli_logprob: mask · (x log σ(l) + (1 − x) log σ(−l)). Operands x, mask, logits.
struct Bernoulli {
  static constexpr int kRowGrads = 1, kSampleGrads = 1, kFeatureGrads = 0;

  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static T value(T x, T mask, T logit) {
    const bool observed = mask != T(0);
    const T v = math::bernoulli_log_prob<F>(observed ? x : T(0), logit);
    return observed ? v : T(0);
  }

  // ∂/∂logit
  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static Grads<T, 1> grads(T g, T x, T mask, T logit) {
    const bool observed = mask != T(0);
    const T g_logit = g * math::bernoulli_log_prob_dlogit<F>(observed ? x : T(0), logit);
    return {{observed ? g_logit : T(0)}};
  }
};

// masked_poisson_logprob: mask · (x log λ − λ − lgamma(x + 1)), λ = exp(log_rate).
// Operands x, mask, log_rate and lgamma(x + 1) (computed once per [B, D] entry).
struct Poisson {
  static constexpr int kRowGrads = 1, kSampleGrads = 1, kFeatureGrads = 0;

  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static T value(T x, T mask, T log_rate, T lgamma_x1) {
    const bool observed = mask != T(0);
    const T v =
        math::poisson_log_prob<F>(observed ? x : T(0), log_rate, observed ? lgamma_x1 : T(0));
    return observed ? v : T(0);
  }

  // ∂/∂log_rate
  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static Grads<T, 1> grads(T g, T x, T mask, T log_rate, T) {
    const bool observed = mask != T(0);
    const T g_rate = g * math::poisson_log_prob_dlog_rate<F>(observed ? x : T(0), log_rate);
    return {{observed ? g_rate : T(0)}};
  }
};

// masked_studentt_logprob: mask · log StudentT(x; df, loc, scale). Operands x, mask, loc,
// scale, df, and the per-feature c(df) (value) or c'(df) (grads) of studentt_log_norm /
// studentt_dlog_norm.
struct StudentT {
  static constexpr int kRowGrads = 1, kSampleGrads = 2, kFeatureGrads = 1;

  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static T value(T x, T mask, T loc, T scale, T df, T log_norm) {
    const bool observed = mask != T(0);
    const T v = math::studentt_log_density<F>(observed ? x : loc, loc, scale, df, log_norm);
    return observed ? v : T(0);
  }

  // ∂/∂loc, ∂/∂scale, ∂/∂df
  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static Grads<T, 3> grads(T g, T x, T mask, T loc, T scale, T df,
                                                T dlog_norm) {
    const bool observed = mask != T(0);
    const auto d =
        math::studentt_log_density_grad<F>(observed ? x : loc, loc, scale, df, dlog_norm);
    const T g_loc = g * d.loc, g_scale = g * d.scale, g_df = g * d.df;
    return {{observed ? g_loc : T(0), observed ? g_scale : T(0), observed ? g_df : T(0)}};
  }
};

// selfmask_logprob: log Bernoulli(mask; σ(ℓ)), ℓ = −W (x_full − b), every feature.
// Operands x_full, mask, W, b.
struct SelfMask {
  static constexpr int kRowGrads = 1, kSampleGrads = 1, kFeatureGrads = 2;

  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static T value(T x_full, T mask, T W, T b) {
    return math::bernoulli_log_prob<F>(mask, math::selfmask_logit(x_full, W, b));
  }

  // ∂/∂x_full, ∂/∂W, ∂/∂b
  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static Grads<T, 3> grads(T g, T x_full, T mask, T W, T b) {
    const T dl = g * math::bernoulli_log_prob_dlogit<F>(mask, math::selfmask_logit(x_full, W, b));
    return {{-W * dl, -(x_full - b) * dl, W * dl}};
  }
};

// notmiwae_normal_terms: (Normal's term, NotMiwaeMissing's term) of the operands x, mask,
// loc, scale, eps, W, b. The missing-process term is log Bernoulli(mask; σ(ℓ(x̂))) with
// x̂ = mask ? x : loc + scale · eps.
struct NotMiwaeMissing {
  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static T value(T x, T mask, T loc, T scale, T eps, T W, T b) {
    const T x_sample = loc + scale * eps;
    const T x_hat = mask != T(0) ? x : x_sample;
    return math::bernoulli_log_prob<F>(mask, math::selfmask_logit(x_hat, W, b));
  }
};

// The gradients of notmiwae_normal_terms, with g_o, g_m the gradients of its two results
// at the element's row, ℓ the self-masking logit of x̂ and δ = g_m · ∂/∂ℓ log
// Bernoulli(mask; σ(ℓ)):
//   observed (mask = 1):  d loc = g_o ∂_loc log N,   d scale = g_o ∂_scale log N
//   missing  (mask = 0):  d loc = δ · (−W),           d scale = δ · (−W) · eps
//   every feature:        d W  = δ · (−(x̂ − b)),     d b     = δ · W.
struct NotMiwae {
  static constexpr int kRowGrads = 2, kSampleGrads = 2, kFeatureGrads = 2;

  template <typename F, typename T>
  NOTMIWAE_HOST_DEVICE static Grads<T, 4> grads(T g_obs, T g_miss, T x, T mask, T loc, T scale,
                                                T eps, T W, T b) {
    const bool observed = mask != T(0);
    const T x_obs = observed ? x : loc;
    const auto dn = math::normal_log_density_grad(x_obs, loc, scale);
    const T x_sample = loc + scale * eps;
    const T x_hat = observed ? x_obs : x_sample;
    const T delta =
        g_miss * math::bernoulli_log_prob_dlogit<F>(mask, math::selfmask_logit(x_hat, W, b));
    const T d_x_hat = -W * delta;
    const T g_loc = g_obs * dn.loc, g_scale = g_obs * dn.scale, g_scale_miss = d_x_hat * eps;
    return {{observed ? g_loc : d_x_hat, observed ? g_scale : g_scale_miss, -(x_hat - b) * delta,
             W * delta}};
  }
};

// ---------------------------------------------------------------------------------------
// masked_categorical_logprob: a sum over the G categorical columns of a row, column g
// owning the n = offsets[g + 1] − offsets[g] logits l[0..n) of its categories. Its term
// is log_softmax(l)[c] for the observed code c, computed with the group's maximum
// subtracted. Both backends call the two functions below once per (row, column); T is
// the math type, scalar_t the stored one. A masked column reads neither its code nor its
// logits. An observed code that is not an integer in [0, n) (NaN, ±inf, fractional, out
// of range) is a category of probability 0: its term is −inf and its logits get no
// gradient; the logits are only ever indexed with a valid code.
// ---------------------------------------------------------------------------------------

// Whether code c names one of n categories (false for NaN).
template <typename T>
NOTMIWAE_HOST_DEVICE bool valid_code(T c, int64_t n) {
  return c >= T(0) && c < static_cast<T>(n) && c == static_cast<T>(static_cast<int64_t>(c));
}

// The group's maximum logit and Σ_j exp(l[j] − max).
template <typename T>
struct CategoricalNorm {
  T max, sum;
};

template <typename F, typename T, typename scalar_t>
NOTMIWAE_HOST_DEVICE CategoricalNorm<T> categorical_norm(const scalar_t* l, int64_t n) {
  T m = static_cast<T>(l[0]);
  for (int64_t j = 1; j < n; ++j) m = static_cast<T>(l[j]) > m ? static_cast<T>(l[j]) : m;
  T sum = T(0);
  for (int64_t j = 0; j < n; ++j) sum += F::Exp(static_cast<T>(l[j]) - m);
  return {m, sum};
}

// The column's term of the row's sum: 0 when masked, log_softmax(l)[code] when observed.
template <typename F, typename T, typename scalar_t>
NOTMIWAE_HOST_DEVICE T categorical_term(bool observed, T code, const scalar_t* l, int64_t n) {
  if (!observed) return T(0);
  if (!valid_code(code, n)) return math::neg_inf<T>();
  const CategoricalNorm<T> s = categorical_norm<F, T>(l, n);
  return (static_cast<T>(l[static_cast<int64_t>(code)]) - s.max) - F::Log(s.sum);
}

// Its gradient with respect to l, given the gradient g of the row's result:
// out[j] = g · (onehot(code)[j] − softmax(l)[j]) when observed with a valid code, else 0.
template <typename F, typename T, typename scalar_t>
NOTMIWAE_HOST_DEVICE void categorical_term_grad(T g, bool observed, T code, const scalar_t* l,
                                                int64_t n, scalar_t* out) {
  if (!observed || !valid_code(code, n)) {
    for (int64_t j = 0; j < n; ++j) out[j] = static_cast<scalar_t>(T(0));
    return;
  }
  const CategoricalNorm<T> s = categorical_norm<F, T>(l, n);
  const T g_over_sum = g / s.sum;
  const int64_t c = static_cast<int64_t>(code);
  for (int64_t j = 0; j < n; ++j) {
    const T onehot = j == c ? g : T(0);
    out[j] = static_cast<scalar_t>(onehot - F::Exp(static_cast<T>(l[j]) - s.max) * g_over_sum);
  }
}

// The operands of masked_categorical_logprob as both backends' drivers read them:
// contiguous x [B, G], the mask as bool [B, G], contiguous logits [B, K, width] and the
// G + 1 offsets (in host or device memory, wherever the driver runs). Column g of row
// i = b·K + k: its term and its gradient, math in opmath_t.
template <typename scalar_t>
struct CategoricalColumns {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  const bool* mask;
  const scalar_t* logits;
  const int64_t* offsets;
  int64_t K, G, width;

  template <typename F>
  NOTMIWAE_HOST_DEVICE opmath_t term(int64_t i, int64_t g) const {
    const int64_t e = (i / K) * G + g;
    return categorical_term<F, opmath_t>(mask[e], static_cast<opmath_t>(x[e]),
                                         logits + i * width + offsets[g],
                                         offsets[g + 1] - offsets[g]);
  }

  // Writes the column's gradient into its place in `out` [B, K, width], given the
  // gradient of row i's result.
  template <typename F>
  NOTMIWAE_HOST_DEVICE void term_grad(opmath_t grad, int64_t i, int64_t g, scalar_t* out) const {
    const int64_t e = (i / K) * G + g, start = i * width + offsets[g];
    categorical_term_grad<F, opmath_t>(grad, mask[e], static_cast<opmath_t>(x[e]), logits + start,
                                       offsets[g + 1] - offsets[g], out + start);
  }
};

}  // namespace likelihood

// The mask as a contiguous bool tensor (nonzero = observed): bool masks are used as
// they are, floating ones are compared with 0 (a [B, D] pass, small next to [B, K, D]).
// ne keeps the input's layout (a transposed mask stays transposed): hence contiguous().
inline at::Tensor mask_as_bool(const at::Tensor& mask) {
  return (mask.scalar_type() == at::kBool ? mask : mask.ne(0)).contiguous();
}

// The df-only part of log StudentT (forward) and its derivative (backward), per
// feature, in dtype `acc`:
//   c(df)  = lgamma((df + 1)/2) − lgamma(df/2) − log(df·π)/2
//   c'(df) = (digamma((df + 1)/2) − digamma(df/2))/2 − 1/(2 df)
// df: [D]. Return [D] float64, contiguous, on df's device: each is a difference of two
// large lgamma / digamma values, which float32 would leave with few correct digits once
// df is in the hundreds. D values only, so ATen ops (which exist on every device) are
// used instead of a device lgamma / digamma.
inline at::Tensor studentt_log_norm(const at::Tensor& df) {
  const at::Tensor v = df.to(at::kDouble);
  return (at::lgamma((v + 1) * 0.5) - at::lgamma(v * 0.5) - 0.5 * at::log(v * M_PI)).contiguous();
}

inline at::Tensor studentt_dlog_norm(const at::Tensor& df) {
  const at::Tensor v = df.to(at::kDouble);
  return (0.5 * (at::digamma((v + 1) * 0.5) - at::digamma(v * 0.5)) - 0.5 / v).contiguous();
}

}  // namespace notmiwae_fast
