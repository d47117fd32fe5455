// The math of notmiwae_fast, written once.
//
// Every per-element formula used by the kernels lives here as a host-device inline
// function. The CPU loops (csrc/cpu/*.cpp) and the CUDA kernels (csrc/cuda/*.cu)
// include this header, so the CPU test-suite exercises exactly the formulas the GPU
// runs. Arguments are in the accumulation type (float or double); callers convert
// half / bfloat16 inputs before calling.
#pragma once

#include <cmath>
#include <limits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define NMF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define NMF_HOST_DEVICE inline
#endif

namespace notmiwae_fast {
namespace math {

#if !defined(__CUDACC__) && !defined(__HIPCC__)
// Host builds: the float and double overloads of the C math functions. (nvcc
// provides host-device overloads of the unqualified names itself.)
using std::exp;
using std::log;
using std::log1p;
#endif

template <typename T>
NMF_HOST_DEVICE T neg_inf() {
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
NMF_HOST_DEVICE LseState<T> lse_empty() {
  return LseState<T>{neg_inf<T>(), T(0)};
}

// Adds one log-value to the summary.
template <typename T>
NMF_HOST_DEVICE LseState<T> lse_push(LseState<T> s, T a) {
  if (a == neg_inf<T>()) return s;  // exp(-inf) = 0 adds nothing (and avoids inf - inf)
  if (a > s.max) {
    // s.max may be -inf (empty state): exp(-inf) = 0 keeps the sum at 0.
    return LseState<T>{a, s.sum * exp(s.max - a) + T(1)};
  }
  return LseState<T>{s.max, s.sum + exp(a - s.max)};
}

// Merges two summaries (associative and commutative up to rounding).
template <typename T>
NMF_HOST_DEVICE LseState<T> lse_merge(LseState<T> x, LseState<T> y) {
  if (y.max == neg_inf<T>()) return x;
  if (x.max == neg_inf<T>()) return y;
  if (x.max >= y.max) return LseState<T>{x.max, x.sum + y.sum * exp(y.max - x.max)};
  return LseState<T>{y.max, y.sum + x.sum * exp(x.max - y.max)};
}

// log Σ exp(a_i); -inf for an empty / all -inf set.
template <typename T>
NMF_HOST_DEVICE T lse_value(LseState<T> s) {
  return s.sum > T(0) ? s.max + log(s.sum) : neg_inf<T>();
}

// The factor exp(old_max - new_max) that carries sums kept relative to old_max over to a
// new running maximum new_max >= old_max (0 when nothing was kept: old_max = -inf).
template <typename T>
NMF_HOST_DEVICE T lse_rescale(T old_max, T new_max) {
  return old_max == neg_inf<T>() ? T(0) : exp(old_max - new_max);
}

// Self-normalised weight exp(a - lse) of a log-value given the log-sum-exp of its
// set. A set with no mass (lse = -inf) gives weight 0, never NaN.
template <typename T>
NMF_HOST_DEVICE T softmax_weight(T a, T lse) {
  return lse == neg_inf<T>() ? T(0) : exp(a - lse);
}

// ---------------------------------------------------------------------------
// Stable sigmoid-family functions (softplus form; finite for |x| up to 1e4 and beyond).
// ---------------------------------------------------------------------------

// log(1 + exp(x))
template <typename T>
NMF_HOST_DEVICE T softplus(T x) {
  return x > T(0) ? x + log1p(exp(-x)) : log1p(exp(x));
}

// log σ(x) = -softplus(-x)
template <typename T>
NMF_HOST_DEVICE T log_sigmoid(T x) {
  return -softplus(-x);
}

// σ(x), without overflow for large |x|
template <typename T>
NMF_HOST_DEVICE T sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + exp(-x));
  const T e = exp(x);
  return e / (T(1) + e);
}

}  // namespace math
}  // namespace notmiwae_fast
