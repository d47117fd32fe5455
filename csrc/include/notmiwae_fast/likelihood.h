// Host-side helpers of the likelihood family shared by the CPU and CUDA kernels:
// reading the mask, and the per-feature (df-only) part of the Student-t log-density.
// The per-element formulas are in math.h.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

namespace notmiwae_fast {

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
// df: [D]. Return [D], contiguous, on df's device. D values only, so ATen ops (which
// exist on every device) are used instead of a device lgamma / digamma.
inline at::Tensor studentt_log_norm(const at::Tensor& df, at::ScalarType acc) {
  const at::Tensor v = df.to(acc);
  return (at::lgamma((v + 1) * 0.5) - at::lgamma(v * 0.5) - 0.5 * at::log(v * M_PI))
      .contiguous();
}

inline at::Tensor studentt_dlog_norm(const at::Tensor& df, at::ScalarType acc) {
  const at::Tensor v = df.to(acc);
  return (0.5 * (at::digamma((v + 1) * 0.5) - at::digamma(v * 0.5)) - 0.5 / v).contiguous();
}

}  // namespace notmiwae_fast
