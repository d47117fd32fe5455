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
  TORCH_CHECK_VALUE(t.dim() == dim, "notmiwae_fast: argument '", name, "' must have shape ", shape,
                    " (", dim, " dimensions); got shape ", t.sizes());
}

inline void check_size(const at::Tensor& t, int64_t d, int64_t expected, const char* name,
                       const char* shape) {
  TORCH_CHECK_VALUE(t.size(d) == expected, "notmiwae_fast: argument '", name, "' must have shape ",
                    shape, " with size ", expected, " in dimension ", d, "; got shape ", t.sizes());
}

inline void check_same_device_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref,
                                    const char* ref_name) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), "notmiwae_fast: argument '", name, "' is on ",
                    t.device(), " but '", ref_name, "' is on ", ref.device(),
                    "; move them to one device");
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), "notmiwae_fast: argument '", name,
                   "' has dtype ", t.scalar_type(), " but '", ref_name, "' has dtype ",
                   ref.scalar_type(), "; use one floating dtype");
}

// t has the shape of ref; `shape` is how the message names it ("the shape of 'x'").
inline void check_shape(const at::Tensor& t, const char* name, const at::Tensor& ref,
                        const char* shape) {
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), "notmiwae_fast: argument '", name, "' must have ",
                    shape, " ", ref.sizes(), "; got ", t.sizes());
}

// CPU kernels are compiled for float32 and float64 only.
inline void check_cpu_dtype(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                   "notmiwae_fast: on CPU, argument '", name, "' must be float32 or float64; got ",
                   t.scalar_type());
}

// float32, float64, bfloat16 or float16 (the half types' math runs in float32): what
// every CUDA kernel and the CPU's MLP family (what torch.autocast gives it:
// csrc/autocast.cpp) take. The float8 and float4 types, which ATen counts as floating
// too, are refused here rather than deep in a dispatch macro. `device` names the
// backend in the message ("CPU", "CUDA").
inline void check_float_or_half(const at::Tensor& t, const char* name, const char* device) {
  const auto type = t.scalar_type();
  TORCH_CHECK_TYPE(
      type == at::kFloat || type == at::kDouble || type == at::kBFloat16 || type == at::kHalf,
      "notmiwae_fast: on ", device, ", argument '", name,
      "' must be float32, float64, bfloat16 or float16; got ", type);
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

// ---------------------------------------------------------------------------
// The likelihood family: data x / mask [B, D], per-sample [B, K, D], per-feature [D].
// ---------------------------------------------------------------------------

// mask: bool or floating (nonzero = observed).
inline void check_mask_dtype(const at::Tensor& mask) {
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kBool || at::isFloatingType(mask.scalar_type()),
                   "notmiwae_fast: argument 'mask' must be bool or floating (1 = observed, "
                   "0 = missing); got dtype ",
                   mask.scalar_type());
}

// mask: [B, D] like x (shape and device), bool or floating.
inline void check_mask(const at::Tensor& mask, const at::Tensor& x, const char* x_name) {
  check_mask_dtype(mask);
  TORCH_CHECK_VALUE(mask.sizes() == x.sizes(),
                    "notmiwae_fast: argument 'mask' must have shape "
                    "[B, D] = ",
                    x.sizes(), " (the shape of '", x_name, "'); got shape ", mask.sizes());
  TORCH_CHECK_VALUE(mask.device() == x.device(), "notmiwae_fast: argument 'mask' is on ",
                    mask.device(), " but '", x_name, "' is on ", x.device(),
                    "; move them to one device");
}

// x: [B, D] floating, and its mask.
inline void check_data(const at::Tensor& x, const at::Tensor& mask) {
  check_floating(x, "x");
  check_dim(x, 2, "x", "[B, D]");
  check_mask(mask, x, "x");
}

// t: [B, K, D] with B and D from x [B, D], same device and dtype as x.
inline void check_per_sample(const at::Tensor& t, const char* name, const at::Tensor& x) {
  check_floating(t, name);
  check_dim(t, 3, name, "[B, K, D]");
  check_size(t, 0, x.size(0), name, "[B, K, D] (B from x)");
  check_size(t, 2, x.size(1), name, "[B, K, D] (D from x)");
  check_same_device_dtype(t, name, x, "x");
}

// t: the shape, device and dtype of the per-sample tensor ref [B, K, D].
inline void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref,
                       const char* ref_name) {
  check_floating(t, name);
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), "notmiwae_fast: argument '", name,
                    "' must have shape [B, K, D] = ", ref.sizes(), " (the shape of '", ref_name,
                    "'); got shape ", t.sizes());
  check_same_device_dtype(t, name, ref, ref_name);
}

// t: [D] per-feature parameter, same device and dtype as ref.
inline void check_per_feature(const at::Tensor& t, const char* name, int64_t D,
                              const at::Tensor& ref, const char* ref_name) {
  check_floating(t, name);
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == D, "notmiwae_fast: argument '", name,
                    "' must have shape [D] = [", D, "] (one value per feature); got shape ",
                    t.sizes());
  check_same_device_dtype(t, name, ref, ref_name);
}

// masked_normal_logprob / masked_studentt_logprob: x, mask [B, D]; loc, scale [B, K, D].
inline void check_location_scale(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& loc,
                                 const at::Tensor& scale) {
  check_data(x, mask);
  check_per_sample(loc, "loc", x);
  check_like(scale, "scale", loc, "loc");
}

// masked_bernoulli_logprob: x, mask [B, D]; logits [B, K, D].
inline void check_bernoulli(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& logits) {
  check_data(x, mask);
  check_per_sample(logits, "logits", x);
}

// masked_poisson_logprob: x, mask [B, D]; log_rate [B, K, D].
inline void check_poisson(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& log_rate) {
  check_data(x, mask);
  check_per_sample(log_rate, "log_rate", x);
}

// masked_categorical_logprob: x, mask [B, G] (one category code per column); logits
// [B, K, T]; offsets: G + 1 strictly increasing column starts from 0 to T.
inline void check_categorical(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& logits,
                              c10::IntArrayRef offsets) {
  check_floating(x, "x");
  check_dim(x, 2, "x", "[B, G]");
  check_mask(mask, x, "x");
  check_floating(logits, "logits");
  check_dim(logits, 3, "logits", "[B, K, T]");
  check_size(logits, 0, x.size(0), "logits", "[B, K, T] (B from x)");
  check_same_device_dtype(logits, "logits", x, "x");
  const int64_t G = x.size(1);
  TORCH_CHECK_VALUE(static_cast<int64_t>(offsets.size()) == G + 1,
                    "notmiwae_fast: argument 'offsets' must hold G + 1 = ", G + 1,
                    " column starts (G from x); got ", offsets.size());
  TORCH_CHECK_VALUE(offsets[0] == 0 && offsets[G] == logits.size(2),
                    "notmiwae_fast: argument 'offsets' must run from 0 to T = ", logits.size(2),
                    " (T from logits); got ", offsets);
  for (int64_t g = 0; g < G; ++g)
    TORCH_CHECK_VALUE(offsets[g] < offsets[g + 1],
                      "notmiwae_fast: argument 'offsets' must be strictly increasing (each "
                      "column has at least one category); got ",
                      offsets);
}

// masked_studentt_logprob: x, mask [B, D]; loc, scale [B, K, D]; df [D].
inline void check_studentt(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& loc,
                           const at::Tensor& scale, const at::Tensor& df) {
  check_location_scale(x, mask, loc, scale);
  check_per_feature(df, "df", x.size(1), x, "x");
}

// notmiwae_normal_terms: x, mask [B, D]; loc, scale, eps [B, K, D]; W, b [D].
inline void check_notmiwae(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& loc,
                           const at::Tensor& scale, const at::Tensor& eps, const at::Tensor& W,
                           const at::Tensor& b) {
  check_location_scale(x, mask, loc, scale);
  check_like(eps, "eps", loc, "loc");
  check_per_feature(W, "W", x.size(1), x, "x");
  check_per_feature(b, "b", x.size(1), x, "x");
}

// selfmask_logprob: x_full [B, K, D], mask [B, D], W and b [D].
inline void check_selfmask(const at::Tensor& x_full, const at::Tensor& mask, const at::Tensor& W,
                           const at::Tensor& b) {
  check_floating(x_full, "x_full");
  check_dim(x_full, 3, "x_full", "[B, K, D]");
  check_dim(mask, 2, "mask", "[B, D]");
  TORCH_CHECK_VALUE(mask.size(0) == x_full.size(0) && mask.size(1) == x_full.size(2),
                    "notmiwae_fast: argument 'mask' must have shape [B, D] = [", x_full.size(0),
                    ", ", x_full.size(2), "] (B and D from 'x_full'); got shape ", mask.sizes());
  check_mask_dtype(mask);
  TORCH_CHECK_VALUE(mask.device() == x_full.device(), "notmiwae_fast: argument 'mask' is on ",
                    mask.device(), " but 'x_full' is on ", x_full.device(),
                    "; move them to one device");
  check_per_feature(W, "W", x_full.size(2), x_full, "x_full");
  check_per_feature(b, "b", x_full.size(2), x_full, "x_full");
}

// The gradient of a [B, K] result: shape [B, K], device and dtype of ref.
inline void check_row_grad(const at::Tensor& grad, const char* name, const at::Tensor& ref,
                           const char* ref_name, int64_t B, int64_t K) {
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == B && grad.size(1) == K,
                    "notmiwae_fast: argument '", name, "' must have shape [B, K] = [", B, ", ", K,
                    "]; got shape ", grad.sizes());
  check_same_device_dtype(grad, name, ref, ref_name);
}

// Backward inputs of the iw family (the forward arguments are checked as above).
inline void check_iw_logmeanexp_grad(const at::Tensor& grad, const at::Tensor& log_w) {
  check_log_weights(log_w);
  check_same_device_dtype(grad, "grad", log_w, "log_w");
  TORCH_CHECK_VALUE(grad.dim() == 1 && grad.size(0) == log_w.size(0),
                    "notmiwae_fast: iw_logmeanexp_backward: 'grad' must have shape [B] = [",
                    log_w.size(0), "]; got ", grad.sizes());
}

inline void check_iw_weights_grad(const at::Tensor& grad, const at::Tensor& weights) {
  check_log_weights(weights, "weights");
  check_same_device_dtype(grad, "grad", weights, "weights");
  TORCH_CHECK_VALUE(grad.sizes() == weights.sizes(),
                    "notmiwae_fast: iw_weights_backward: 'grad' must have the shape of 'weights' ",
                    weights.sizes(), "; got ", grad.sizes());
}

inline void check_iw_impute_grad(const at::Tensor& grad, const at::Tensor& log_w,
                                 const at::Tensor& values, const at::Tensor& result) {
  check_iw_values(log_w, values);
  check_same_device_dtype(grad, "grad", values, "values");
  check_same_device_dtype(result, "result", values, "values");
  const int64_t B = values.size(0), D = values.size(2);
  TORCH_CHECK_VALUE(
      grad.dim() == 2 && grad.size(0) == B && grad.size(1) == D && result.sizes() == grad.sizes(),
      "notmiwae_fast: iw_impute_backward: 'grad' and 'result' must have shape [B, D] = [", B, ", ",
      D, "]; got ", grad.sizes(), " and ", result.sizes());
}

}  // namespace notmiwae_fast
