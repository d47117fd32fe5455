// An operator as a C++ autograd function, for the ops whose derivative is another
// operator, <op>_backward (iw_autograd.cpp, likelihood_autograd.cpp).
//
// Registered on the Autograd key, so backward works wherever the shared library is
// loaded, including a TorchScript program that never imports the Python package.
// Forward and backward both go through the dispatcher, so they reach the CPU or CUDA
// kernel of the inputs' device.
#pragma once

#include <torch/autograd.h>

#include <array>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "notmiwae_fast/dispatch.h"

namespace notmiwae_fast {
namespace autograd {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The results of an op (a tensor or a tuple of them) as a list.
inline variable_list as_list(const Tensor& t) { return {t}; }
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

// What the forward of an OpFunction saves for <op>_backward, after the gradients of the
// op's results: its inputs, its results, or both (in that order).
enum class Saved { kInputs, kResults, kInputsAndResults };

// An op as an autograd function. Op is the function's own class (its name is the
// autograd node's), which names the op (kName); Forward and Backward are the signatures
// of the op and of <op>_backward, kSaved what the forward saves, kGradOf the inputs
// that the backward's results belong to (the others get no gradient). The backward gets
// an unused result's gradient as zeros (materialised by autograd).
template <typename Op, typename Forward, typename Backward, Saved kSaved, size_t... kGradOf>
class OpFunction : public torch::autograd::Function<Op> {
 public:
  template <typename... Inputs>
  static variable_list forward(AutogradContext* ctx, const Inputs&... inputs) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = find_op<Forward>(Op::kName);
    const variable_list results = as_list(op.call(inputs...));
    variable_list saved;
    if (kSaved != Saved::kResults) saved = {inputs...};
    if (kSaved != Saved::kInputs) saved.insert(saved.end(), results.begin(), results.end());
    ctx->save_for_backward(saved);
    return results;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using A = Arity<Forward>;
    constexpr size_t kSavedCount =
        (kSaved != Saved::kResults ? A::kInputs : 0) + (kSaved != Saved::kInputs ? A::kResults : 0);
    const variable_list saved = ctx->get_saved_variables();
    const variable_list g = call_backward(grads, saved, std::make_index_sequence<A::kResults>(),
                                          std::make_index_sequence<kSavedCount>());
    constexpr size_t grad_of[] = {kGradOf...};
    variable_list out(A::kInputs);
    for (size_t j = 0; j < sizeof...(kGradOf); ++j) out[grad_of[j]] = g[j];
    return out;
  }

 private:
  template <size_t... G, size_t... I>
  static variable_list call_backward(const variable_list& grads, const variable_list& saved,
                                     std::index_sequence<G...>, std::index_sequence<I...>) {
    static auto op = find_op<Backward>((std::string(Op::kName) + "_backward").c_str());
    return as_list(op.call(grads[G]..., saved[I]...));
  }
};

}  // namespace autograd
}  // namespace notmiwae_fast
