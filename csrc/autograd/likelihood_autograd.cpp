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

#include <tuple>

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

class MaskedNormal : public torch::autograd::Function<MaskedNormal> {
 public:
  static Tensor forward(AutogradContext* ctx, T x, T mask, T loc, T scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = find_op<Tensor(T, T, T, T)>("notmiwae_fast::masked_normal_logprob");
    ctx->save_for_backward({x, mask, loc, scale});
    return fwd.call(x, mask, loc, scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd =
        find_op<Pair(T, T, T, T, T)>("notmiwae_fast::masked_normal_logprob_backward");
    const auto s = ctx->get_saved_variables();
    auto [g_loc, g_scale] = bwd.call(grads[0], s[0], s[1], s[2], s[3]);
    return {Tensor(), Tensor(), g_loc, g_scale};
  }
};

class MaskedBernoulli : public torch::autograd::Function<MaskedBernoulli> {
 public:
  static Tensor forward(AutogradContext* ctx, T x, T mask, T logits) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = find_op<Tensor(T, T, T)>("notmiwae_fast::masked_bernoulli_logprob");
    ctx->save_for_backward({x, mask, logits});
    return fwd.call(x, mask, logits);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd =
        find_op<Tensor(T, T, T, T)>("notmiwae_fast::masked_bernoulli_logprob_backward");
    const auto s = ctx->get_saved_variables();
    return {Tensor(), Tensor(), bwd.call(grads[0], s[0], s[1], s[2])};
  }
};

class MaskedStudentT : public torch::autograd::Function<MaskedStudentT> {
 public:
  static Tensor forward(AutogradContext* ctx, T x, T mask, T loc, T scale, T df) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = find_op<Tensor(T, T, T, T, T)>("notmiwae_fast::masked_studentt_logprob");
    ctx->save_for_backward({x, mask, loc, scale, df});
    return fwd.call(x, mask, loc, scale, df);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd =
        find_op<Triple(T, T, T, T, T, T)>("notmiwae_fast::masked_studentt_logprob_backward");
    const auto s = ctx->get_saved_variables();
    auto [g_loc, g_scale, g_df] = bwd.call(grads[0], s[0], s[1], s[2], s[3], s[4]);
    return {Tensor(), Tensor(), g_loc, g_scale, g_df};
  }
};

class SelfMask : public torch::autograd::Function<SelfMask> {
 public:
  static Tensor forward(AutogradContext* ctx, T x_full, T mask, T W, T b) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = find_op<Tensor(T, T, T, T)>("notmiwae_fast::selfmask_logprob");
    ctx->save_for_backward({x_full, mask, W, b});
    return fwd.call(x_full, mask, W, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd =
        find_op<Triple(T, T, T, T, T)>("notmiwae_fast::selfmask_logprob_backward");
    const auto s = ctx->get_saved_variables();
    auto [g_x, g_W, g_b] = bwd.call(grads[0], s[0], s[1], s[2], s[3]);
    return {g_x, Tensor(), g_W, g_b};
  }
};

class NotMiwaeNormalTerms : public torch::autograd::Function<NotMiwaeNormalTerms> {
 public:
  static variable_list forward(AutogradContext* ctx, T x, T mask, T loc, T scale, T eps, T W,
                               T b) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd =
        find_op<Pair(T, T, T, T, T, T, T)>("notmiwae_fast::notmiwae_normal_terms");
    ctx->save_for_backward({x, mask, loc, scale, eps, W, b});
    auto [log_obs, log_miss] = fwd.call(x, mask, loc, scale, eps, W, b);
    return {log_obs, log_miss};
  }
  // An unused output arrives as a zero gradient (materialised by autograd).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = find_op<Quad(T, T, T, T, T, T, T, T, T)>(
        "notmiwae_fast::notmiwae_normal_terms_backward");
    const auto s = ctx->get_saved_variables();
    auto [g_loc, g_scale, g_W, g_b] =
        bwd.call(grads[0], grads[1], s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    return {Tensor(), Tensor(), g_loc, g_scale, Tensor(), g_W, g_b};
  }
};

Tensor masked_normal_logprob_autograd(T x, T mask, T loc, T scale) {
  return MaskedNormal::apply(x, mask, loc, scale);
}
Tensor masked_bernoulli_logprob_autograd(T x, T mask, T logits) {
  return MaskedBernoulli::apply(x, mask, logits);
}
Tensor masked_studentt_logprob_autograd(T x, T mask, T loc, T scale, T df) {
  return MaskedStudentT::apply(x, mask, loc, scale, df);
}
Tensor selfmask_logprob_autograd(T x_full, T mask, T W, T b) {
  return SelfMask::apply(x_full, mask, W, b);
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
