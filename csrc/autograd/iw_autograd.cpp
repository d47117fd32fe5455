// C++ autograd of the importance-weighting family.
//
// Registered on the Autograd key, so backward works wherever the shared library is
// loaded, including a TorchScript program that never imports the Python package.
// Forward and backward both go through the dispatcher, so they reach the CPU or CUDA
// kernel of the inputs' device.
#include <torch/autograd.h>
#include <torch/library.h>

#include "notmiwae_fast/dispatch.h"

namespace notmiwae_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using UnaryFn = at::Tensor(const at::Tensor&);
using BinaryFn = at::Tensor(const at::Tensor&, const at::Tensor&);
using ImputeBackwardFn = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&);

class IwLogMeanExp : public torch::autograd::Function<IwLogMeanExp> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& log_w) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = find_op<UnaryFn>("notmiwae_fast::iw_logmeanexp");
    at::Tensor out = fwd.call(log_w);
    ctx->save_for_backward({log_w});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = find_op<BinaryFn>("notmiwae_fast::iw_logmeanexp_backward");
    const auto saved = ctx->get_saved_variables();
    return {bwd.call(grads[0], saved[0])};
  }
};

class IwWeights : public torch::autograd::Function<IwWeights> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& log_w) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = find_op<UnaryFn>("notmiwae_fast::iw_weights");
    at::Tensor out = fwd.call(log_w);
    ctx->save_for_backward({out});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = find_op<BinaryFn>("notmiwae_fast::iw_weights_backward");
    const auto saved = ctx->get_saved_variables();
    return {bwd.call(grads[0], saved[0])};
  }
};

class IwImpute : public torch::autograd::Function<IwImpute> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& log_w,
                            const at::Tensor& values) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = find_op<BinaryFn>("notmiwae_fast::iw_impute");
    at::Tensor out = fwd.call(log_w, values);
    ctx->save_for_backward({log_w, values, out});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = find_op<ImputeBackwardFn>("notmiwae_fast::iw_impute_backward");
    const auto saved = ctx->get_saved_variables();
    auto [grad_log_w, grad_values] = bwd.call(grads[0], saved[0], saved[1], saved[2]);
    return {grad_log_w, grad_values};
  }
};

at::Tensor iw_logmeanexp_autograd(const at::Tensor& log_w) { return IwLogMeanExp::apply(log_w); }
at::Tensor iw_weights_autograd(const at::Tensor& log_w) { return IwWeights::apply(log_w); }
at::Tensor iw_impute_autograd(const at::Tensor& log_w, const at::Tensor& values) {
  return IwImpute::apply(log_w, values);
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, Autograd, m) {
  m.impl("iw_logmeanexp", &iw_logmeanexp_autograd);
  m.impl("iw_weights", &iw_weights_autograd);
  m.impl("iw_impute", &iw_impute_autograd);
}

}  // namespace notmiwae_fast
