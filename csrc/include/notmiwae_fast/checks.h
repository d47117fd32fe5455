// Argument checks shared by the CPU and CUDA kernels.
//
// Every message names the argument and the expected shape. Shape and device errors
// raise ValueError in Python (TORCH_CHECK_VALUE), dtype errors TypeError
// (TORCH_CHECK_TYPE), matching the Python-side checks in notmiwae_fast/_checks.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace notmiwae_fast {

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "notmiwae_fast: argument '", name,
                   "' must be a floating-point tensor; got dtype ", t.scalar_type());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* shape) {
  TORCH_CHECK_VALUE(t.dim() == dim, "notmiwae_fast: argument '", name, "' must have shape ",
                    shape, " (", dim, " dimensions); got shape ", t.sizes());
}

inline void check_size(const at::Tensor& t, int64_t d, int64_t expected, const char* name,
                       const char* shape) {
  TORCH_CHECK_VALUE(t.size(d) == expected, "notmiwae_fast: argument '", name,
                    "' must have shape ", shape, " with size ", expected, " in dimension ", d,
                    "; got shape ", t.sizes());
}

inline void check_same_device_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref,
                                    const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), "notmiwae_fast: argument '", name,
                    "' is on ", t.device(), " but '", ref_name, "' is on ", ref.device(),
                    "; move them to one device");
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), "notmiwae_fast: argument '", name,
                   "' has dtype ", t.scalar_type(), " but '", ref_name, "' has dtype ",
                   ref.scalar_type(), "; use one floating dtype");
}

// CPU kernels are compiled for float32 and float64 only.
inline void check_cpu_dtype(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                   "notmiwae_fast: on CPU, argument '", name,
                   "' must be float32 or float64; got ", t.scalar_type());
}

// log_w: [B, K] floating, K >= 1.
inline void check_log_weights(const at::Tensor& log_w, const char* name = "log_w") {
  check_floating(log_w, name);
  check_dim(log_w, 2, name, "[B, K]");
  TORCH_CHECK_VALUE(log_w.size(1) >= 1, "notmiwae_fast: argument '", name,
                    "' must have at least one importance sample (K >= 1); got shape ",
                    log_w.sizes());
}

// values: [B, K, D] matching log_w [B, K].
inline void check_iw_values(const at::Tensor& log_w, const at::Tensor& values) {
  check_log_weights(log_w);
  check_floating(values, "values");
  check_dim(values, 3, "values", "[B, K, D]");
  check_size(values, 0, log_w.size(0), "values", "[B, K, D] (B from log_w)");
  check_size(values, 1, log_w.size(1), "values", "[B, K, D] (K from log_w)");
  check_same_device_dtype(values, "values", log_w, "log_w");
}

}  // namespace notmiwae_fast
