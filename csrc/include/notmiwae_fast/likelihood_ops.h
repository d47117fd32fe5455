// The operators of the likelihood family, written once for every backend: their argument
// checks, then the backend's two drivers with the op's operand layout and per-element
// term (notmiwae_fast/likelihood.h). A backend (csrc/cpu/likelihood_cpu.cpp,
// csrc/cuda/likelihood_cuda.cu) supplies
//   check_dtype(t, name)            the dtypes its kernels take (checked after the shapes)
//   row_sums<Layout, Terms...>(operands)         one [B, K] result per term
//   row_grads<Layout, Term>(grads, operands)     the term's gradients: per-sample
//                                                [B, K, D] ones, then per-feature [D] ones
//   categorical_sums(x, mask, logits, offsets)         masked_categorical_logprob [B, K]
//   categorical_grads(grad, x, mask, logits, offsets)  its gradient [B, K, T]
//     (contiguous x and logits, a contiguous bool mask, checked arguments; both drivers
//     loop over the (row, column) pairs of likelihood.h's CategoricalColumns)
// and registers LikelihoodOps<Backend> with register_likelihood_kernels.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <type_traits>
#include <utility>

#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/likelihood.h"

namespace notmiwae_fast {

template <size_t N>
using Tensors = std::array<at::Tensor, N>;

// An operand as a backend's kernels read it: contiguous; the mask as mask_dtype (bool, or
// 0/1 values of the op's dtype), per-feature operands in feature_dtype.
template <typename Kind>
at::Tensor prepared_operand(const at::Tensor& t, at::ScalarType mask_dtype,
                            at::ScalarType feature_dtype) {
  if constexpr (std::is_same_v<Kind, likelihood::Mask>) {
    return mask_as_bool(t).to(mask_dtype);
  } else if constexpr (std::is_same_v<Kind, likelihood::Feature>) {
    return t.to(feature_dtype).contiguous();
  } else {
    return t.contiguous();
  }
}

template <typename... Kinds, size_t... I>
Tensors<sizeof...(Kinds)> prepared_operands(likelihood::Layout<Kinds...>,
                                            const Tensors<sizeof...(Kinds)>& in,
                                            at::ScalarType mask_dtype, at::ScalarType feature_dtype,
                                            std::index_sequence<I...>) {
  return {prepared_operand<Kinds>(in[I], mask_dtype, feature_dtype)...};
}

// The operands of an op of layout L, prepared (prepared_operand).
template <typename L>
Tensors<L::kSize> prepared_operands(const Tensors<L::kSize>& in, at::ScalarType mask_dtype,
                                    at::ScalarType feature_dtype) {
  return prepared_operands(L(), in, mask_dtype, feature_dtype,
                           std::make_index_sequence<L::kSize>());
}

// The [B, K] results of row_sums, one per term, uninitialised; ref: the reference operand.
template <int N>
Tensors<N> row_results(const at::Tensor& ref) {
  Tensors<N> out;
  for (at::Tensor& o : out) o = at::empty({ref.size(0), ref.size(1)}, ref.options());
  return out;
}

// The results of row_grads: nS per-sample gradients [B, K, D] (uninitialised), then nF
// per-feature ones [D], zeros when there are no elements and undefined otherwise (the
// driver's sums).
template <int nS, int nF>
Tensors<nS + nF> gradient_results(const at::Tensor& ref) {
  Tensors<nS + nF> out;
  for (int s = 0; s < nS; ++s) out[s] = at::empty(ref.sizes(), ref.options());
  if (ref.numel() == 0)
    for (int f = nS; f < nS + nF; ++f) out[f] = at::zeros({ref.size(2)}, ref.options());
  return out;
}

template <typename Backend>
struct LikelihoodOps {
  using T = const at::Tensor&;
  using Tensor = at::Tensor;

  template <size_t N>
  static auto as_tuple(const Tensors<N>& t) {
    return std::apply([](const auto&... x) { return std::make_tuple(x...); }, t);
  }

  static void check_normal_op(T x, T mask, T loc, T scale) {
    check_location_scale(x, mask, loc, scale);
    Backend::check_dtype(x, "x");
  }

  static Tensor masked_normal_logprob(T x, T mask, T loc, T scale) {
    check_normal_op(x, mask, loc, scale);
    return Backend::template row_sums<likelihood::NormalOperands, likelihood::Normal>(
        {x, mask, loc, scale})[0];
  }

  static std::tuple<Tensor, Tensor> masked_normal_logprob_backward(T grad, T x, T mask, T loc,
                                                                   T scale) {
    check_normal_op(x, mask, loc, scale);
    check_row_grad(grad, "grad", loc, "loc", loc.size(0), loc.size(1));
    return as_tuple(Backend::template row_grads<likelihood::NormalOperands, likelihood::Normal>(
        {grad}, {x, mask, loc, scale}));
  }

  static void check_bernoulli_op(T x, T mask, T logits) {
    check_bernoulli(x, mask, logits);
    Backend::check_dtype(x, "x");
  }

  static Tensor masked_bernoulli_logprob(T x, T mask, T logits) {
    check_bernoulli_op(x, mask, logits);
    return Backend::template row_sums<likelihood::BernoulliOperands, likelihood::Bernoulli>(
        {x, mask, logits})[0];
  }

  static Tensor masked_bernoulli_logprob_backward(T grad, T x, T mask, T logits) {
    check_bernoulli_op(x, mask, logits);
    check_row_grad(grad, "grad", logits, "logits", logits.size(0), logits.size(1));
    return Backend::template row_grads<likelihood::BernoulliOperands, likelihood::Bernoulli>(
        {grad}, {x, mask, logits})[0];
  }

  static void check_poisson_op(T x, T mask, T log_rate) {
    check_poisson(x, mask, log_rate);
    Backend::check_dtype(x, "x");
  }

  // lgamma(x + 1), once per [B, D] entry, in the accumulation type (NaN or ±inf under
  // mask = 0 are never read).
  static Tensor lgamma_x1(T x) {
    return at::lgamma(x.to(at::toOpMathType(x.scalar_type())) + 1).to(x.scalar_type());
  }

  static Tensor masked_poisson_logprob(T x, T mask, T log_rate) {
    check_poisson_op(x, mask, log_rate);
    return Backend::template row_sums<likelihood::PoissonOperands, likelihood::Poisson>(
        {x, mask, log_rate, lgamma_x1(x)})[0];
  }

  static Tensor masked_poisson_logprob_backward(T grad, T x, T mask, T log_rate) {
    check_poisson_op(x, mask, log_rate);
    check_row_grad(grad, "grad", log_rate, "log_rate", log_rate.size(0), log_rate.size(1));
    // the last operand (lgamma(x + 1)) is not read by the gradient: x stands in for it
    return Backend::template row_grads<likelihood::PoissonOperands, likelihood::Poisson>(
        {grad}, {x, mask, log_rate, x})[0];
  }

  static void check_categorical_op(T x, T mask, T logits, c10::IntArrayRef offsets) {
    check_categorical(x, mask, logits, offsets);
    Backend::check_dtype(x, "x");
  }

  static Tensor masked_categorical_logprob(T x, T mask, T logits, c10::IntArrayRef offsets) {
    check_categorical_op(x, mask, logits, offsets);
    return Backend::categorical_sums(x.contiguous(), mask_as_bool(mask), logits.contiguous(),
                                     offsets);
  }

  static Tensor masked_categorical_logprob_backward(T grad, T x, T mask, T logits,
                                                    c10::IntArrayRef offsets) {
    check_categorical_op(x, mask, logits, offsets);
    check_row_grad(grad, "grad", logits, "logits", logits.size(0), logits.size(1));
    return Backend::categorical_grads(grad.contiguous(), x.contiguous(), mask_as_bool(mask),
                                      logits.contiguous(), offsets);
  }

  static void check_studentt_op(T x, T mask, T loc, T scale, T df) {
    check_studentt(x, mask, loc, scale, df);
    Backend::check_dtype(x, "x");
  }

  static Tensor masked_studentt_logprob(T x, T mask, T loc, T scale, T df) {
    check_studentt_op(x, mask, loc, scale, df);
    const Tensor c = studentt_log_norm(df);
    return Backend::template row_sums<likelihood::StudentTOperands, likelihood::StudentT>(
        {x, mask, loc, scale, df, c})[0];
  }

  static std::tuple<Tensor, Tensor, Tensor> masked_studentt_logprob_backward(T grad, T x, T mask,
                                                                             T loc, T scale, T df) {
    check_studentt_op(x, mask, loc, scale, df);
    check_row_grad(grad, "grad", loc, "loc", loc.size(0), loc.size(1));
    const Tensor dc = studentt_dlog_norm(df);
    return as_tuple(Backend::template row_grads<likelihood::StudentTOperands, likelihood::StudentT>(
        {grad}, {x, mask, loc, scale, df, dc}));
  }

  static void check_selfmask_op(T x_full, T mask, T W, T b) {
    check_selfmask(x_full, mask, W, b);
    Backend::check_dtype(x_full, "x_full");
  }

  static Tensor selfmask_logprob(T x_full, T mask, T W, T b) {
    check_selfmask_op(x_full, mask, W, b);
    return Backend::template row_sums<likelihood::SelfMaskOperands, likelihood::SelfMask>(
        {x_full, mask, W, b})[0];
  }

  static std::tuple<Tensor, Tensor, Tensor> selfmask_logprob_backward(T grad, T x_full, T mask, T W,
                                                                      T b) {
    check_selfmask_op(x_full, mask, W, b);
    check_row_grad(grad, "grad", x_full, "x_full", x_full.size(0), x_full.size(1));
    return as_tuple(Backend::template row_grads<likelihood::SelfMaskOperands, likelihood::SelfMask>(
        {grad}, {x_full, mask, W, b}));
  }

  static void check_notmiwae_op(T x, T mask, T loc, T scale, T eps, T W, T b) {
    check_notmiwae(x, mask, loc, scale, eps, W, b);
    Backend::check_dtype(x, "x");
  }

  // The two terms in two loops over the elements, which vectorise where one fused loop
  // does not.
  static std::tuple<Tensor, Tensor> notmiwae_normal_terms(T x, T mask, T loc, T scale, T eps, T W,
                                                          T b) {
    check_notmiwae_op(x, mask, loc, scale, eps, W, b);
    return as_tuple(
        Backend::template row_sums<likelihood::NotMiwaeOperands, likelihood::Normal,
                                   likelihood::NotMiwaeMissing>({x, mask, loc, scale, eps, W, b}));
  }

  static std::tuple<Tensor, Tensor, Tensor, Tensor> notmiwae_normal_terms_backward(
      T grad_obs, T grad_miss, T x, T mask, T loc, T scale, T eps, T W, T b) {
    check_notmiwae_op(x, mask, loc, scale, eps, W, b);
    check_row_grad(grad_obs, "grad_obs", loc, "loc", loc.size(0), loc.size(1));
    check_row_grad(grad_miss, "grad_miss", loc, "loc", loc.size(0), loc.size(1));
    return as_tuple(Backend::template row_grads<likelihood::NotMiwaeOperands, likelihood::NotMiwae>(
        {grad_obs, grad_miss}, {x, mask, loc, scale, eps, W, b}));
  }
};

template <typename Backend>
void register_likelihood_kernels(torch::Library& m) {
  using Ops = LikelihoodOps<Backend>;
  m.impl("masked_normal_logprob", &Ops::masked_normal_logprob);
  m.impl("masked_normal_logprob_backward", &Ops::masked_normal_logprob_backward);
  m.impl("masked_bernoulli_logprob", &Ops::masked_bernoulli_logprob);
  m.impl("masked_bernoulli_logprob_backward", &Ops::masked_bernoulli_logprob_backward);
  m.impl("masked_studentt_logprob", &Ops::masked_studentt_logprob);
  m.impl("masked_studentt_logprob_backward", &Ops::masked_studentt_logprob_backward);
  m.impl("masked_poisson_logprob", &Ops::masked_poisson_logprob);
  m.impl("masked_poisson_logprob_backward", &Ops::masked_poisson_logprob_backward);
  m.impl("masked_categorical_logprob", &Ops::masked_categorical_logprob);
  m.impl("masked_categorical_logprob_backward", &Ops::masked_categorical_logprob_backward);
  m.impl("selfmask_logprob", &Ops::selfmask_logprob);
  m.impl("selfmask_logprob_backward", &Ops::selfmask_logprob_backward);
  m.impl("notmiwae_normal_terms", &Ops::notmiwae_normal_terms);
  m.impl("notmiwae_normal_terms_backward", &Ops::notmiwae_normal_terms_backward);
}

}  // namespace notmiwae_fast
