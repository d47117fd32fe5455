// C++ autograd of the latent family: latent_terms with latent_terms_backward as its
// derivative (gradients for mu and std; eps is noise and gets none). See
// iw_autograd.cpp for why autograd lives in C++.
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "notmiwae_fast/dispatch.h"

namespace notmiwae_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using LatentFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&,
                                                                const at::Tensor&,
                                                                const at::Tensor&);
using LatentBackwardFn = std::tuple<at::Tensor, at::Tensor>(const std::optional<at::Tensor>&,
                                                            const std::optional<at::Tensor>&,
                                                            const std::optional<at::Tensor>&,
                                                            const at::Tensor&, const at::Tensor&,
                                                            const at::Tensor&);

std::optional<at::Tensor> if_defined(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

class LatentTerms : public torch::autograd::Function<LatentTerms> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& std,
                               const at::Tensor& eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = find_op<LatentFn>("notmiwae_fast::latent_terms");
    auto [z, log_p, log_q] = fwd.call(mu, std, eps);
    ctx->save_for_backward({mu, std, eps});
    return {z, log_p, log_q};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = find_op<LatentBackwardFn>("notmiwae_fast::latent_terms_backward");
    const auto saved = ctx->get_saved_variables();
    if (!grads[0].defined() && !grads[1].defined() && !grads[2].defined())
      return {at::Tensor(), at::Tensor(), at::Tensor()};
    auto [grad_mu, grad_std] = bwd.call(if_defined(grads[0]), if_defined(grads[1]),
                                        if_defined(grads[2]), saved[0], saved[1], saved[2]);
    return {grad_mu, grad_std, at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> latent_terms_autograd(const at::Tensor& mu,
                                                                     const at::Tensor& std,
                                                                     const at::Tensor& eps) {
  auto out = LatentTerms::apply(mu, std, eps);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, Autograd, m) { m.impl("latent_terms", &latent_terms_autograd); }

}  // namespace notmiwae_fast
