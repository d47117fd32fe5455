// C++ autograd of the MLP family. softplus_scale: its backward from the saved input.
// mlp_tanh = mlp_tanh_forward (keeping the hidden
// activations) with mlp_tanh_backward as its derivative. Without gradients to compute
// (no_grad, or nothing requires grad) it calls the plain mlp_tanh kernel, which keeps
// no activations. Forward and backward go through the dispatcher, so they reach the
// CPU or CUDA kernel of the inputs' device (see iw_autograd.cpp).
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "notmiwae_fast/dispatch.h"

namespace notmiwae_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using MlpFn = at::Tensor(const at::Tensor&, at::TensorList, at::TensorList);
using MlpForwardFn = std::tuple<at::Tensor, std::vector<at::Tensor>>(const at::Tensor&,
                                                                     at::TensorList,
                                                                     at::TensorList);
using MlpBackwardFn = std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>(
    const at::Tensor&, const at::Tensor&, at::TensorList, at::TensorList);

class MlpTanh : public torch::autograd::Function<MlpTanh> {
 public:
  // Saved: x, the n weights, the n − 1 hidden activations.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList weights,
                            at::TensorList biases) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = find_op<MlpForwardFn>("notmiwae_fast::mlp_tanh_forward");
    auto [out, hidden] = fwd.call(x, weights, biases);
    std::vector<at::Tensor> saved;
    saved.reserve(2 * weights.size());
    saved.push_back(x);
    saved.insert(saved.end(), weights.begin(), weights.end());
    saved.insert(saved.end(), hidden.begin(), hidden.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["layers"] = static_cast<int64_t>(weights.size());
    return out;
  }

  // One gradient per input variable: x, then each weight, then each bias.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = find_op<MlpBackwardFn>("notmiwae_fast::mlp_tanh_backward");
    const int64_t n = ctx->saved_data["layers"].toInt();
    const auto saved = ctx->get_saved_variables();
    if (!grads[0].defined()) return variable_list(1 + 2 * n);
    const at::TensorList weights(saved.data() + 1, n);
    const at::TensorList hidden(saved.data() + 1 + n, n - 1);
    auto [grad_x, grad_weights, grad_biases] = bwd.call(grads[0], saved[0], weights, hidden);
    variable_list out;
    out.reserve(1 + 2 * n);
    out.push_back(grad_x);
    out.insert(out.end(), grad_weights.begin(), grad_weights.end());
    out.insert(out.end(), grad_biases.begin(), grad_biases.end());
    return out;
  }
};

using ScaleFn = at::Tensor(const at::Tensor&, double);
using ScaleBackwardFn = at::Tensor(const at::Tensor&, const at::Tensor&);

class SoftplusScale : public torch::autograd::Function<SoftplusScale> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& raw, double min_scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = find_op<ScaleFn>("notmiwae_fast::softplus_scale");
    ctx->save_for_backward({raw});
    return fwd.call(raw, min_scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = find_op<ScaleBackwardFn>("notmiwae_fast::softplus_scale_backward");
    const auto saved = ctx->get_saved_variables();
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor()};
    return {bwd.call(grads[0], saved[0]), at::Tensor()};
  }
};

at::Tensor softplus_scale_autograd(const at::Tensor& raw, double min_scale) {
  return SoftplusScale::apply(raw, min_scale);
}

bool any_requires_grad(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  if (x.requires_grad()) return true;
  for (const auto& t : weights)
    if (t.requires_grad()) return true;
  for (const auto& t : biases)
    if (t.requires_grad()) return true;
  return false;
}

at::Tensor mlp_tanh_autograd(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  if (!at::GradMode::is_enabled() || !any_requires_grad(x, weights, biases)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto plain = find_op<MlpFn>("notmiwae_fast::mlp_tanh");
    return plain.call(x, weights, biases);
  }
  return MlpTanh::apply(x, weights, biases);
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, Autograd, m) {
  m.impl("mlp_tanh", &mlp_tanh_autograd);
  m.impl("softplus_scale", &softplus_scale_autograd);
}

}  // namespace notmiwae_fast
