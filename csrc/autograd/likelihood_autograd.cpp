// C++ autograd of the likelihood family (see op_function.h). Nothing of size [B, K, D] is
// saved besides the inputs themselves: the backward kernels recompute what they need.
//
// Gradients flow to the parameters only: loc, scale, logits, log_rate, df, x_full, W, b.
// The data x, the mask and the noise eps of notmiwae_normal_terms get none (an undefined
// gradient, i.e. None in Python).
#include <torch/library.h>

#include <vector>

#include <tuple>

#include "op_function.h"

namespace notmiwae_fast {
namespace {

using namespace autograd;  // OpFunction, Saved, Tensor

using T = const Tensor&;
using Pair = std::tuple<Tensor, Tensor>;
using Triple = std::tuple<Tensor, Tensor, Tensor>;
using Quad = std::tuple<Tensor, Tensor, Tensor, Tensor>;

// Each op: its signature, that of its backward, and the inputs with a gradient.
struct MaskedNormal  // (x, mask, loc, scale) -> loc, scale
    : OpFunction<MaskedNormal, Tensor(T, T, T, T), Pair(T, T, T, T, T), Saved::kInputs, 2, 3> {
  static constexpr const char* kName = "notmiwae_fast::masked_normal_logprob";
};

struct MaskedBernoulli  // (x, mask, logits) -> logits
    : OpFunction<MaskedBernoulli, Tensor(T, T, T), Tensor(T, T, T, T), Saved::kInputs, 2> {
  static constexpr const char* kName = "notmiwae_fast::masked_bernoulli_logprob";
};

struct MaskedPoisson  // (x, mask, log_rate) -> log_rate
    : OpFunction<MaskedPoisson, Tensor(T, T, T), Tensor(T, T, T, T), Saved::kInputs, 2> {
  static constexpr const char* kName = "notmiwae_fast::masked_poisson_logprob";
};

// (x, mask, logits, offsets) -> logits. Its own autograd function: OpFunction saves
// tensors only, and offsets is an int[] (kept in saved_data).
struct MaskedCategorical : torch::autograd::Function<MaskedCategorical> {
  static constexpr const char* kName = "notmiwae_fast::masked_categorical_logprob";

  static Tensor forward(AutogradContext* ctx, T x, T mask, T logits, c10::IntArrayRef offsets) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<Tensor(T, T, T, c10::IntArrayRef)>(kName);
    ctx->save_for_backward({x, mask, logits});
    ctx->saved_data["offsets"] = offsets.vec();
    return op.call(x, mask, logits, offsets);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = find_op<Tensor(T, T, T, T, c10::IntArrayRef)>(
        "notmiwae_fast::masked_categorical_logprob_backward");
    const variable_list saved = ctx->get_saved_variables();
    const std::vector<int64_t> offsets = ctx->saved_data["offsets"].toIntVector();
    return {Tensor(), Tensor(), op.call(grads[0], saved[0], saved[1], saved[2], offsets), Tensor()};
  }
};

struct MaskedStudentT  // (x, mask, loc, scale, df) -> loc, scale, df
    : OpFunction<MaskedStudentT, Tensor(T, T, T, T, T), Triple(T, T, T, T, T, T), Saved::kInputs, 2,
                 3, 4> {
  static constexpr const char* kName = "notmiwae_fast::masked_studentt_logprob";
};

struct SelfMask  // (x_full, mask, W, b) -> x_full, W, b
    : OpFunction<SelfMask, Tensor(T, T, T, T), Triple(T, T, T, T, T), Saved::kInputs, 0, 2, 3> {
  static constexpr const char* kName = "notmiwae_fast::selfmask_logprob";
};

struct NotMiwaeNormalTerms  // (x, mask, loc, scale, eps, W, b) -> loc, scale, W, b
    : OpFunction<NotMiwaeNormalTerms, Pair(T, T, T, T, T, T, T), Quad(T, T, T, T, T, T, T, T, T),
                 Saved::kInputs, 2, 3, 5, 6> {
  static constexpr const char* kName = "notmiwae_fast::notmiwae_normal_terms";
};

Tensor masked_normal_logprob_autograd(T x, T mask, T loc, T scale) {
  return MaskedNormal::apply(x, mask, loc, scale)[0];
}
Tensor masked_bernoulli_logprob_autograd(T x, T mask, T logits) {
  return MaskedBernoulli::apply(x, mask, logits)[0];
}
Tensor masked_poisson_logprob_autograd(T x, T mask, T log_rate) {
  return MaskedPoisson::apply(x, mask, log_rate)[0];
}
Tensor masked_categorical_logprob_autograd(T x, T mask, T logits, c10::IntArrayRef offsets) {
  return MaskedCategorical::apply(x, mask, logits, offsets);
}
Tensor masked_studentt_logprob_autograd(T x, T mask, T loc, T scale, T df) {
  return MaskedStudentT::apply(x, mask, loc, scale, df)[0];
}
Tensor selfmask_logprob_autograd(T x_full, T mask, T W, T b) {
  return SelfMask::apply(x_full, mask, W, b)[0];
}
Pair notmiwae_normal_terms_autograd(T x, T mask, T loc, T scale, T eps, T W, T b) {
  const auto out = NotMiwaeNormalTerms::apply(x, mask, loc, scale, eps, W, b);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, Autograd, m) {
  m.impl("masked_normal_logprob", &masked_normal_logprob_autograd);
  m.impl("masked_bernoulli_logprob", &masked_bernoulli_logprob_autograd);
  m.impl("masked_poisson_logprob", &masked_poisson_logprob_autograd);
  m.impl("masked_categorical_logprob", &masked_categorical_logprob_autograd);
  m.impl("masked_studentt_logprob", &masked_studentt_logprob_autograd);
  m.impl("selfmask_logprob", &selfmask_logprob_autograd);
  m.impl("notmiwae_normal_terms", &notmiwae_normal_terms_autograd);
}

}  // namespace notmiwae_fast
