// C++ autograd of the likelihood family.
//
// Registered on the Autograd key, so backward works wherever the shared library is
// loaded (TorchScript included). Forward and backward both go through the dispatcher
// and reach the CPU or CUDA kernel of the inputs' device. Nothing of size [B, K, D] is
// saved besides the inputs themselves: the backward kernels recompute what they need.
//
// Gradients flow to the parameters only: loc, scale, logits, df, x_full, W, b. The data
// x, the mask and the noise eps of notmiwae_normal_terms get none (an undefined
// gradient, i.e. None in Python).
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "notmiwae_fast/dispatch.h"

namespace notmiwae_fast {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using T = const Tensor&;
using Pair = std::tuple<Tensor, Tensor>;
using Triple = std::tuple<Tensor, Tensor, Tensor>;
using Quad = std::tuple<Tensor, Tensor, Tensor, Tensor>;

// The results of an op (a tensor or a tuple of them) as a list.
variable_list as_list(const Tensor& t) { return {t}; }
template <typename... Ts>
variable_list as_list(const std::tuple<Ts...>& t) {
  return std::apply([](const auto&... x) { return variable_list{x...}; }, t);
}

// How many inputs and results a signature R(Args...) has.
template <typename Signature>
struct Arity;
template <typename R, typename... Args>
struct Arity<R(Args...)> {
  static constexpr size_t kInputs = sizeof...(Args);
  static constexpr size_t kResults = [] {
    if constexpr (std::is_same_v<R, Tensor>) {
      return size_t{1};
    } else {
      return std::tuple_size_v<R>;
    }
  }();
};

// A likelihood op as an autograd function (Op: the function's own class, which names
// the op, kName, gives the signatures of the op, Forward, and of <op>_backward, Backward:
// the gradients of the results, then the op's inputs, and says which inputs the
// backward's results belong to, kGradOf). The forward saves its inputs; the backward
// gets an unused result's gradient as zeros (materialised by autograd).
template <typename Op>
class LikelihoodFunction : public torch::autograd::Function<Op> {
 public:
  template <typename... Inputs>
  static variable_list forward(AutogradContext* ctx, const Inputs&... inputs) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<typename Op::Forward>(Op::kName);
    ctx->save_for_backward({inputs...});
    return as_list(op.call(inputs...));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using A = Arity<typename Op::Forward>;
    const variable_list saved = ctx->get_saved_variables();
    const variable_list g = call_backward(grads, saved, std::make_index_sequence<A::kResults>(),
                                          std::make_index_sequence<A::kInputs>());
    variable_list out(A::kInputs);
    for (size_t j = 0; j < Op::kGradOf.size(); ++j) out[Op::kGradOf[j]] = g[j];
    return out;
  }

 private:
  template <size_t... G, size_t... I>
  static variable_list call_backward(const variable_list& grads, const variable_list& saved,
                                     std::index_sequence<G...>, std::index_sequence<I...>) {
    static auto op = find_op<typename Op::Backward>((std::string(Op::kName) + "_backward").c_str());
    return as_list(op.call(grads[G]..., saved[I]...));
  }
};

class MaskedNormal : public LikelihoodFunction<MaskedNormal> {
 public:
  static constexpr const char* kName = "notmiwae_fast::masked_normal_logprob";
  using Forward = Tensor(T, T, T, T);  // x, mask, loc, scale
  using Backward = Pair(T, T, T, T, T);
  static constexpr std::array<size_t, 2> kGradOf = {2, 3};
};

class MaskedBernoulli : public LikelihoodFunction<MaskedBernoulli> {
 public:
  static constexpr const char* kName = "notmiwae_fast::masked_bernoulli_logprob";
  using Forward = Tensor(T, T, T);  // x, mask, logits
  using Backward = Tensor(T, T, T, T);
  static constexpr std::array<size_t, 1> kGradOf = {2};
};

class MaskedStudentT : public LikelihoodFunction<MaskedStudentT> {
 public:
  static constexpr const char* kName = "notmiwae_fast::masked_studentt_logprob";
  using Forward = Tensor(T, T, T, T, T);  // x, mask, loc, scale, df
  using Backward = Triple(T, T, T, T, T, T);
  static constexpr std::array<size_t, 3> kGradOf = {2, 3, 4};
};

class SelfMask : public LikelihoodFunction<SelfMask> {
 public:
  static constexpr const char* kName = "notmiwae_fast::selfmask_logprob";
  using Forward = Tensor(T, T, T, T);  // x_full, mask, W, b
  using Backward = Triple(T, T, T, T, T);
  static constexpr std::array<size_t, 3> kGradOf = {0, 2, 3};
};

class NotMiwaeNormalTerms : public LikelihoodFunction<NotMiwaeNormalTerms> {
 public:
  static constexpr const char* kName = "notmiwae_fast::notmiwae_normal_terms";
  using Forward = Pair(T, T, T, T, T, T, T);  // x, mask, loc, scale, eps, W, b
  using Backward = Quad(T, T, T, T, T, T, T, T, T);
  static constexpr std::array<size_t, 4> kGradOf = {2, 3, 5, 6};
};

Tensor masked_normal_logprob_autograd(T x, T mask, T loc, T scale) {
  return MaskedNormal::apply(x, mask, loc, scale)[0];
}
Tensor masked_bernoulli_logprob_autograd(T x, T mask, T logits) {
  return MaskedBernoulli::apply(x, mask, logits)[0];
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
  m.impl("masked_studentt_logprob", &masked_studentt_logprob_autograd);
  m.impl("selfmask_logprob", &selfmask_logprob_autograd);
  m.impl("notmiwae_normal_terms", &notmiwae_normal_terms_autograd);
}

}  // namespace notmiwae_fast
