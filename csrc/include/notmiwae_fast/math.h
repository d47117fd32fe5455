// The math of notmiwae_fast, written once.
//
// Every per-element formula used by the kernels lives here as a host-device inline
// function. The CPU loops (csrc/cpu/*.cpp) and the CUDA kernels (csrc/cuda/*.cu)
// include this header, so the CPU test-suite exercises exactly the formulas the GPU
// runs. Arguments are in the accumulation type (float or double); callers convert
// half / bfloat16 inputs before calling.
//
// The likelihood formulas take the elementary functions (exp, log, log1p, tanh) as a policy
// parameter F: LibM, the C library / CUDA functions, by default; the CPU loops pass
// the branch-free polynomial versions of csrc/cpu/vec_math.h, which the compiler can
// vectorise. The formulas themselves are written once, here.
#pragma once

#include <cmath>
#include <limits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define NOTMIWAE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define NOTMIWAE_HOST_DEVICE inline
#endif

namespace notmiwae_fast {
namespace math {

#if !defined(__CUDACC__) && !defined(__HIPCC__)
// Host builds: the float and double overloads of the C math functions. (nvcc
// provides host-device overloads of the unqualified names itself.)
using std::erfc;
using std::exp;
using std::log;
using std::log1p;
using std::tanh;
#endif

template <typename T>
NOTMIWAE_HOST_DEVICE T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// ---------------------------------------------------------------------------
// Online log-sum-exp.
//
// A running (max, sum) pair summarises a set of log-values {a_i}:
//   sum = Σ_i exp(a_i - max),   log Σ_i exp(a_i) = max + log(sum).
// An empty set, or a set of -inf only, is (-inf, 0). Two summaries merge exactly,
// so a reduction may split K into chunks (threads, warps, blocks) in any order and
// its working memory does not grow with K.
// ---------------------------------------------------------------------------
template <typename T>
struct LseState {
  T max;
  T sum;
};

template <typename T>
NOTMIWAE_HOST_DEVICE LseState<T> lse_empty() {
  return LseState<T>{neg_inf<T>(), T(0)};
}

// Adds one log-value to the summary.
template <typename T>
NOTMIWAE_HOST_DEVICE LseState<T> lse_push(LseState<T> s, T a) {
  if (a == neg_inf<T>()) return s;  // exp(-inf) = 0 adds nothing (and avoids inf - inf)
  if (a > s.max) {
    // s.max may be -inf (empty state): exp(-inf) = 0 keeps the sum at 0.
    return LseState<T>{a, s.sum * exp(s.max - a) + T(1)};
  }
  return LseState<T>{s.max, s.sum + exp(a - s.max)};
}

// Merges two summaries (associative and commutative up to rounding). Only an empty
// summary (max −inf, sum 0) is skipped: one that has seen a NaN has max −inf and a NaN
// sum, and the NaN must reach the merged sum (lse_value then gives −inf, as for the same
// values pushed one by one) instead of being dropped by whichever thread merged it.
template <typename T>
NOTMIWAE_HOST_DEVICE LseState<T> lse_merge(LseState<T> x, LseState<T> y) {
  if (y.max == neg_inf<T>() && y.sum == T(0)) return x;
  if (x.max == neg_inf<T>() && x.sum == T(0)) return y;
  if (x.max >= y.max) return LseState<T>{x.max, x.sum + y.sum * exp(y.max - x.max)};
  return LseState<T>{y.max, y.sum + x.sum * exp(x.max - y.max)};
}

// log Σ exp(a_i); -inf for an empty / all -inf set.
template <typename T>
NOTMIWAE_HOST_DEVICE T lse_value(LseState<T> s) {
  return s.sum > T(0) ? s.max + log(s.sum) : neg_inf<T>();
}

// The factor exp(old_max - new_max) that carries sums kept relative to old_max over to a
// new running maximum new_max >= old_max (0 when nothing was kept: old_max = -inf).
template <typename T>
NOTMIWAE_HOST_DEVICE T lse_rescale(T old_max, T new_max) {
  return old_max == neg_inf<T>() ? T(0) : exp(old_max - new_max);
}

// Self-normalised weight exp(a - lse) of a log-value given the log-sum-exp of its
// set. A set with no mass (lse = -inf) gives weight 0, never NaN.
template <typename T>
NOTMIWAE_HOST_DEVICE T softmax_weight(T a, T lse) {
  return lse == neg_inf<T>() ? T(0) : exp(a - lse);
}

// The normaliser of a row's softmax, w = exp(a - max) / sum, kept as (max, 1 / sum)
// rather than as lse = max + log(sum): exp(a - lse) with a rounded lse loses up to
// |lse|·eps of relative accuracy (5e-4 in float32 at |a| ~ 1e4), while a - max is
// exact for the entries that carry the weight. A row with no mass has inv_sum = 0.
template <typename T>
struct SoftmaxNorm {
  T max;
  T inv_sum;
};

template <typename T>
NOTMIWAE_HOST_DEVICE SoftmaxNorm<T> softmax_norm(LseState<T> s) {
  return s.sum > T(0) ? SoftmaxNorm<T>{s.max, T(1) / s.sum} : SoftmaxNorm<T>{neg_inf<T>(), T(0)};
}

// Self-normalised weight of a log-value given its row's normaliser (0 for a row with
// no mass, never NaN).
template <typename T>
NOTMIWAE_HOST_DEVICE T softmax_weight(T a, SoftmaxNorm<T> n) {
  return n.inv_sum == T(0) ? T(0) : exp(a - n.max) * n.inv_sum;
}

// ---------------------------------------------------------------------------
// Stable sigmoid-family functions (softplus form; finite for |x| up to 1e4 and beyond).
// ---------------------------------------------------------------------------

// log(1 + exp(x))
template <typename T>
NOTMIWAE_HOST_DEVICE T softplus(T x) {
  return x > T(0) ? x + log1p(exp(-x)) : log1p(exp(x));
}

// log σ(x) = -softplus(-x)
template <typename T>
NOTMIWAE_HOST_DEVICE T log_sigmoid(T x) {
  return -softplus(-x);
}

// The elementary functions of the C library (host) or of CUDA (device): the default
// policy F of the formulas below. (A table, one line per function: not reformatted.)
// clang-format off
struct LibM {
  template <typename T> NOTMIWAE_HOST_DEVICE static T Exp(T x) { return exp(x); }
  template <typename T> NOTMIWAE_HOST_DEVICE static T Log(T x) { return log(x); }
  template <typename T> NOTMIWAE_HOST_DEVICE static T Log1p(T x) { return log1p(x); }
  template <typename T> NOTMIWAE_HOST_DEVICE static T Tanh(T x) { return tanh(x); }
};
// clang-format on

// ---------------------------------------------------------------------------
// The hidden-layer activation of the MLPs (family "mlp"): y = tanh(x), and the chain
// rule through it from the stored output, ∂L/∂x = ∂L/∂y · (1 − y²).
// ---------------------------------------------------------------------------
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T tanh_activation(T x) {
  return F::Tanh(x);
}

template <typename T>
NOTMIWAE_HOST_DEVICE T tanh_activation_grad(T grad_y, T y) {
  return grad_y * (T(1) - y * y);
}

// The decoders' positive scale, softplus(x) + floor = max(x, 0) + log1p(exp(−|x|)) +
// floor (branch-free), and its derivative σ(x).
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T softplus_scale(T x, T floor) {
  const T minus_x = -x;
  const T negative_abs = x < T(0) ? x : minus_x;  // −|x|
  const T positive_part = x > T(0) ? x : T(0);
  return positive_part + F::Log1p(F::Exp(negative_abs)) + floor;
}

// σ(x), without overflow for large |x|; branch-free (selects only).
// (Both sides of every select are computed first: no arithmetic under a condition, so
// CPU loops calling these functions can be if-converted and vectorised.)
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T sigmoid(T x) {
  const T minus_x = -x;
  const T e = F::Exp(x < T(0) ? x : minus_x);  // exp(−|x|), in (0, 1]
  const T r = T(1) / (T(1) + e);
  const T er = e * r;
  return x >= T(0) ? r : er;
}

// ---------------------------------------------------------------------------
// Per-element log-densities of the likelihood family and their derivatives.
// The masked sums over D, the selection of observed entries and the chain rule
// through x̂ live in the kernels; the formulas live here only.
// ---------------------------------------------------------------------------

// 0.5 · log(2π)
constexpr double kHalfLog2Pi = 0.91893853320467274178032973640562;

// log N(x; loc, scale) = −z²/2 − log(scale) − log(2π)/2,  z = (x − loc) / scale.
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T normal_log_density(T x, T loc, T scale) {
  const T z = (x - loc) / scale;
  return T(-0.5) * z * z - F::Log(scale) - T(kHalfLog2Pi);
}

// The latent terms of one (b, k, l): z = mu + std · eps, and the per-coordinate parts
// of log p(z) = log N(z; 0, 1) and log q(z | x) = log N(z; mu, std) = log N(eps; 0, 1) −
// log std. The kernels add, once per row, the −log(2π)/2 constants and −Σ_l log std
// (the same for every k: computed once per b).
template <typename T>
struct LatentTerm {
  T z;
  T log_p;
  T log_q_without_log_std;
};

template <typename T>
NOTMIWAE_HOST_DEVICE LatentTerm<T> latent_term(T mu, T std, T eps) {
  const T z = mu + std * eps;
  return LatentTerm<T>{z, T(-0.5) * z * z, T(-0.5) * eps * eps};
}

// The chain rule of latent_term for one (b, k, l), given ∂L/∂z, ∂L/∂log p, ∂L/∂log q:
// the contributions to ∂L/∂mu and ∂L/∂std (summed over k by the kernels).
template <typename T>
struct LatentGrad {
  T mu;
  T std;
};

template <typename T>
NOTMIWAE_HOST_DEVICE LatentGrad<T> latent_term_grad(T grad_z, T grad_log_p, T grad_log_q, T z,
                                                    T std, T eps) {
  const T dz = grad_z - grad_log_p * z;  // z's total gradient (log p(z) = −z²/2)
  return LatentGrad<T>{dz, dz * eps - grad_log_q / std};
}

// ∂/∂loc and ∂/∂scale of normal_log_density (∂/∂x = −∂/∂loc).
template <typename T>
struct NormalGrad {
  T loc;
  T scale;
};

template <typename T>
NOTMIWAE_HOST_DEVICE NormalGrad<T> normal_log_density_grad(T x, T loc, T scale) {
  const T inv = T(1) / scale;
  const T z = (x - loc) * inv;
  return NormalGrad<T>{z * inv, (z * z - T(1)) * inv};
}

// x · log σ(l) + (1 − x) · log σ(−l) for x in [0, 1] (a Bernoulli log-mass when x is 0
// or 1), with one exp and one log1p: log σ(±l) = −max(∓l, 0) − log1p(exp(−|l|)).
// Finite for any finite l.
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T bernoulli_log_prob(T x, T l) {
  const T minus_l = -l;
  // max(l, 0) and max(−l, 0), written so that a NaN logit stays NaN in both (as
  // l > 0 ? l : 0 would turn it into 0, and the term into a finite −log 2).
  const T pos = l <= T(0) ? T(0) : l;
  const T neg = l >= T(0) ? T(0) : minus_l;
  return -F::Log1p(F::Exp(-(pos + neg))) - x * neg - (T(1) - x) * pos;
}

// ∂/∂l of bernoulli_log_prob = x − σ(l). (∂/∂x = l.)
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T bernoulli_log_prob_dlogit(T x, T l) {
  return x - sigmoid<F>(l);
}

// x · log λ − λ − lgamma(x + 1) with λ = exp(log_rate) (a Poisson log-mass when x is a
// count), given lgamma(x + 1); its ∂/∂log_rate = x − λ.
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T poisson_log_prob(T x, T log_rate, T lgamma_x1) {
  return x * log_rate - F::Exp(log_rate) - lgamma_x1;
}

template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T poisson_log_prob_dlog_rate(T x, T log_rate) {
  return x - F::Exp(log_rate);
}

// The self-masking logit ℓ = −W · (x − b) of one feature (SPEC §1, `selfmasking`);
// ∂ℓ/∂x = −W, ∂ℓ/∂W = −(x − b), ∂ℓ/∂b = W.
template <typename T>
NOTMIWAE_HOST_DEVICE T selfmask_logit(T x, T W, T b) {
  return -W * (x - b);
}

// Student-t, split into a per-feature part that depends on df only and a per-element
// part:  log StudentT(x; df, loc, scale) = c(df) − log(scale) − (df + 1)/2 · log1p(z²/df)
// with c(df) = lgamma((df + 1)/2) − lgamma(df/2) − log(df·π)/2, computed once per
// feature by the caller (studentt_log_norm in notmiwae_fast/likelihood.h), and
// z = (x − loc) / scale.
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T studentt_log_density(T x, T loc, T scale, T df, T log_norm) {
  const T z = (x - loc) / scale;
  return log_norm - F::Log(scale) - T(0.5) * (df + T(1)) * F::Log1p(z * z / df);
}

// ∂/∂loc, ∂/∂scale and ∂/∂df of studentt_log_density, given dc(df)/d df of the
// per-feature part (∂/∂x = −∂/∂loc):
//   r = (df + 1) / (df + z²),  ∂/∂loc = r z / scale,  ∂/∂scale = (r z² − 1) / scale,
//   ∂/∂df = c'(df) − log1p(z²/df)/2 + r z² / (2 df).
template <typename T>
struct StudentTGrad {
  T loc;
  T scale;
  T df;
};

template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE StudentTGrad<T> studentt_log_density_grad(T x, T loc, T scale, T df,
                                                               T dlog_norm) {
  const T inv = T(1) / scale;
  const T z = (x - loc) * inv;
  const T z2 = z * z;
  const T r = (df + T(1)) / (df + z2);
  return StudentTGrad<T>{r * z * inv, (r * z2 - T(1)) * inv,
                         dlog_norm - T(0.5) * F::Log1p(z2 / df) + T(0.5) * r * z2 / df};
}

// ---------------------------------------------------------------------------
// The censored normal of the clipped-pixel model: y ~ N(loc, scale²), x = clip(y, 0, 1).
// ---------------------------------------------------------------------------

// erfcx(x) = exp(x²)·erfc(x) for x ≥ 0, the scaled complementary error function: the
// normal tails below are written with it, so their exp(−x²) factors cancel analytically
// instead of numerically. float: the Chebyshev fit of Numerical Recipes (1.2e-7
// relative); double: exp(x²)·erfc(x) below 26, the asymptotic series above (its first
// omitted term is below 1e-12 relative there).
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T erfcx_nonnegative(T x) {
  if (sizeof(T) < 8) {
    const T t = T(1) / (T(1) + T(0.5) * x);
    const T poly =
        T(-1.26551223) +
        t * (T(1.00002368) +
             t * (T(0.37409196) +
                  t * (T(0.09678418) +
                       t * (T(-0.18628806) +
                            t * (T(0.27886807) +
                                 t * (T(-1.13520398) +
                                      t * (T(1.48851587) +
                                           t * (T(-0.82215223) + t * T(0.17087277)))))))));
    return t * F::Exp(poly);
  }
  if (x < T(26)) return exp(x * x) * erfc(x);
  const T r = T(1) / (x * x);
  return T(0.56418958354775628695) / x *  // 1/(x√π) Σ (−1)ⁿ (2n−1)!! / (2x²)ⁿ
         (T(1) + r * (T(-0.5) + r * (T(0.75) + r * (T(-1.875) + r * T(6.5625)))));
}

constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kSqrtTwoOverPi = 0.79788456080286535588;  // 2 φ(0)
constexpr double kInvSqrtTwoPi = 0.39894228040143267794;   // φ(0)

// The formulas below are branch-free: both sides of every select are computed first
// (a discarded side may be inf or NaN), so CPU loops over them vectorise.

// log Φ(t), accurate in both tails: with u = |t|/√2, Φ(−|t|) = ½·erfcx(u)·e^{−u²}, so
// t < 0: log(½·erfcx(u)) − u²; t ≥ 0: log1p(−Φ(−t)).
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE T log_ndtr(T t) {
  const T u = (t < T(0) ? -t : t) * T(kSqrtHalf);
  const T half_erfcx = T(0.5) * erfcx_nonnegative<F>(u);
  const T lower = F::Log(half_erfcx) - u * u;
  const T upper = F::Log1p(-half_erfcx * F::Exp(-u * u));
  return t < T(0) ? lower : upper;
}

// A lost value of the clipped-pixel model, y ~ N(loc, scale²) known to be ≥ c (c ≤ 1):
// log P(y ≥ c), its importance-weight term, and E[min(y, 1) | y ≥ c] ∈ [c, 1], its
// imputation.
template <typename T>
struct ClippedTerm {
  T log_p;
  T mean;
};

// With a = (c − loc)/s ≤ b = (1 − loc)/s, u_a = |a|/√2, u_b = |b|/√2, g = e^{−u²}:
//   Φ(−a) = ½·erfcx(u_a)·g_a (a ≥ 0, kept as its log) or 1 − ½·erfcx(u_a)·g_a (a < 0);
//   E[y | y ≥ c] = loc + s·λ(a), λ(a) = φ(a)/Φ(−a) = √(2/π)/erfcx(u_a) for a ≥ 0;
//   less E[(y − 1)⁺ | y ≥ c] = s·(φ(b) − b·Φ(−b))/Φ(−a), which for a ≥ 0 (so b ≥ 0) is
//   s·e^{−(b²−a²)/2}·(√(2/π) − b·erfcx(u_b))/erfcx(u_a): no tail probability that could
//   underflow, the exp(−x²) factors cancelled analytically.
template <typename F = LibM, typename T>
NOTMIWAE_HOST_DEVICE ClippedTerm<T> clipped_term(T loc, T scale, T c) {
  const T a = (c - loc) / scale, b = (T(1) - loc) / scale;
  const T ua = (a < T(0) ? -a : a) * T(kSqrtHalf), ub = (b < T(0) ? -b : b) * T(kSqrtHalf);
  const T ex_a = erfcx_nonnegative<F>(ua), ex_b = erfcx_nonnegative<F>(ub);
  const T g_a = F::Exp(-ua * ua), g_b = F::Exp(-ub * ub);
  const bool upper = a >= T(0);
  // a < 0: Φ(−a) ≥ ½ and the plain ratios
  const T tail_a = T(1) - T(0.5) * ex_a * g_a;
  const T tail_b = b >= T(0) ? T(0.5) * ex_b * g_b : T(1) - T(0.5) * ex_b * g_b;  // Φ(−b)
  const T lambda_lower = T(kInvSqrtTwoPi) * g_a / tail_a;
  const T above_lower = (T(kInvSqrtTwoPi) * g_b - b * tail_b) / tail_a;
  // a ≥ 0: the erfcx ratios, times e^{−(b²−a²)/2} ≤ 1
  const T decay = F::Exp(-(ub - ua) * (ub + ua));
  const T lambda_upper = T(kSqrtTwoOverPi) / ex_a;
  const T above_upper = decay * (T(kSqrtTwoOverPi) - b * ex_b) / ex_a;
  ClippedTerm<T> term;
  term.log_p = upper ? F::Log(T(0.5) * ex_a) - ua * ua : F::Log(tail_a);
  const T mean = loc + scale * (upper ? lambda_upper - above_upper : lambda_lower - above_lower);
  term.mean = mean < c ? c : (mean > T(1) ? T(1) : mean);
  return term;
}

}  // namespace math
}  // namespace notmiwae_fast
