// Elementary functions for the CPU loops that the compiler can vectorise.
//
// The C library's expf / logf / log1pf are opaque calls, so a loop that calls them
// runs one element at a time. VecMath::Exp / Log / Log1p for float are the classic
// Cephes polynomials (about 1 ulp) and Tanh a rational function (a few ulp), written
// branch-free (selects only) and inline, so GCC vectorises the loops that use them.
// For double they are the C library's functions (the float64 path keeps its 1e-10
// accuracy). VecMath is passed as the policy F of the formulas in notmiwae_fast/math.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace notmiwae_fast {
namespace cpu {

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

inline int32_t float_to_bits(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

struct VecMath {
  // exp(x): x = n·ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n
  // assembled in the exponent bits. x is clamped to [-87.3, 88] (so the result stays
  // a normal float: exp of less than -87.3 gives about 1.2e-38 instead of less).
  static inline float Exp(float x) {
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kRound = 12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.0f ? 88.0f : x;
    const float t = x * kLog2e + kRound;
    const float n = t - kRound;
    const int32_t ni = float_to_bits(t) - float_to_bits(kRound);
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * bits_to_float((ni + 127) << 23);
  }

  // log(x): x = m · 2^e with m in [sqrt(1/2), sqrt(2)), log(m) by a polynomial in m − 1.
  // 0 gives -inf, negatives and NaN give NaN, +inf gives +inf; subnormal x (below
  // 1.2e-38) is taken as the smallest normal float (log = -87.3).
  static inline float Log(float x) {
    const float xs = x < std::numeric_limits<float>::min() ? std::numeric_limits<float>::min() : x;
    const int32_t bits = float_to_bits(xs);
    float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
    float m = bits_to_float((bits & 0x007fffff) | 0x3f000000);  // [0.5, 1)
    // Every branch value is computed first and then selected: no arithmetic under a
    // condition, so the compiler can if-convert and vectorise the caller's loop.
    const bool low = m < 0.707106781186547524f;
    const float e_low = e - 1.0f, m_low = m + m - 1.0f, m_high = m - 1.0f;
    e = low ? e_low : e;
    m = low ? m_low : m_high;
    const float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y = y - 2.12194440e-4f * e;
    y = y - 0.5f * z;
    float r = m + y + 0.693359375f * e;
    r = x == 0.0f ? -std::numeric_limits<float>::infinity() : r;
    r = x == std::numeric_limits<float>::infinity() ? x : r;
    r = x < 0.0f ? std::numeric_limits<float>::quiet_NaN() : r;
    r = x != x ? x : r;  // NaN stays NaN
    return r;
  }

  // log1p(x) for x > −1 (the formulas call it on exp(−|l|) in (0, 1], on z²/df and on
  // −Φ(−t) in [−½, 0]): log(u) with u = 1 + x, corrected by (x − (u − 1)) / u for the
  // rounding of u.
  static inline float Log1p(float x) {
    const float u = 1.0f + x;
    const float r = Log(u) + (x - (u - 1.0f)) / u;
    return u == std::numeric_limits<float>::infinity() ? u : r;
  }

  static inline double Exp(double x) { return std::exp(x); }
  static inline double Log(double x) { return std::log(x); }
  static inline double Log1p(double x) { return std::log1p(x); }

  // tanh(x) as a rational function of x on [−7.905, 7.905], odd degree 13 over even
  // degree 6 (the coefficients of Eigen's float tanh): no exp, one division and only
  // selects, so the loops that call it vectorise. Relative error below 5 · 2⁻²⁴
  // (tests/test_mlp.py holds it to 8 · 2⁻²⁴ against float64 over [−30, 30]). ±1 beyond
  // |x| = 9 (float32's tanh is 1 there), x itself for |x| < 4e-4, NaN stays NaN.
  static inline float Tanh(float x) {
    constexpr float kClamp = 7.90531110763549805f;
    const float a = x < 0.0f ? -x : x;
    float c = x > kClamp ? kClamp : x;
    c = c < -kClamp ? -kClamp : c;
    const float x2 = c * c;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    const float rational = c * p / q;
    const float one = x < 0.0f ? -1.0f : 1.0f;
    float r = a < 4e-4f ? x : rational;
    r = a > 9.0f ? one : r;
    return r;
  }
  static inline double Tanh(double x) { return std::tanh(x); }
};

}  // namespace cpu
}  // namespace notmiwae_fast
