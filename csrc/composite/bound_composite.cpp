// gauss_bound: the whole importance-weighted bound of a Gaussian-decoder MIWAE or
// self-masking not-MIWAE in one operator (family "bound"), composed in C++ of the other
// operators: encoder MLP -> latent samples and densities -> decoder MLP -> scale ->
// masked Gaussian likelihood (+ the self-masking likelihood of s) -> log-mean-exp.
//
// It adds no new arithmetic: every step is an operator tested on its own, reached
// through the dispatcher (so the CPU or CUDA kernel of the inputs' device runs). What it
// removes is the cost around them at small batches — a dozen Python calls and autograd
// nodes per forward and as many per backward (a batch-16 training step of the paper's
// model spends more time there than in its arithmetic). The backward is the chain rule
// through the same steps with their backward operators.
//
// Registered twice: CompositeExplicitAutograd (the forward alone, on any device and for
// calls below autograd) and Autograd (forward keeping what the backward needs).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/FunctionRef.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/dispatch.h"
#include "notmiwae_fast/mlp.h"

namespace notmiwae_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;
using Tensors = std::vector<at::Tensor>;

// log σ² of the encoder is clamped to this range (as networks.Encoder does).
constexpr double kLogVarBound = 10.0;

// The key under which GaussBound's forward keeps the loss's gradients (see
// loss_gradients_of).
constexpr const char* kLossGradients = "loss_gradients";

using T = const at::Tensor&;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor2 = std::tuple<at::Tensor, at::Tensor>;

// An operator's typed handle, looked up by name.
template <typename Signature>
class Op {
 public:
  explicit Op(const char* name) : handle_(find_op<Signature>(name)) {}
  template <typename... Args>
  decltype(auto) call(Args&&... args) const {
    return handle_.call(std::forward<Args>(args)...);
  }

 private:
  c10::TypedOperatorHandle<Signature> handle_;
};

// The operators the bound is composed of, and their backward operators.
struct BoundOps {
  Op<std::tuple<at::Tensor, Tensors>(T, at::TensorList, at::TensorList)> mlp{
      "notmiwae_fast::mlp_tanh_forward"};
  Op<Tensor3(T, T, T)> latent{"notmiwae_fast::latent_terms"};
  Op<at::Tensor(T, double)> scale{"notmiwae_fast::softplus_scale"};
  Op<Tensor2(T, T, T, T, T, T, T)> terms{"notmiwae_fast::notmiwae_normal_terms"};
  Op<at::Tensor(T, T, T, T)> normal{"notmiwae_fast::masked_normal_logprob"};
  Op<at::Tensor(T)> logmeanexp{"notmiwae_fast::iw_logmeanexp"};

  Op<std::tuple<at::Tensor, Tensors, Tensors>(T, T, at::TensorList, at::TensorList)> mlp_backward{
      "notmiwae_fast::mlp_tanh_backward"};
  Op<Tensor2(const OptTensor&, const OptTensor&, const OptTensor&, T, T, T)> latent_backward{
      "notmiwae_fast::latent_terms_backward"};
  Op<at::Tensor(T, T)> scale_backward{"notmiwae_fast::softplus_scale_backward"};
  Op<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(T, T, T, T, T, T, T, T, T)>
      terms_backward{"notmiwae_fast::notmiwae_normal_terms_backward"};
  Op<Tensor2(T, T, T, T, T)> normal_backward{"notmiwae_fast::masked_normal_logprob_backward"};
  Op<at::Tensor(T, T)> logmeanexp_backward{"notmiwae_fast::iw_logmeanexp_backward"};
};

// The operators, looked up in the dispatcher on first use.
const BoundOps& bound_ops() {
  static const BoundOps ops;
  return ops;
}

// Runs fn, on the calling thread alone where the bound is small on the CPU (as the MLP
// runs its small products, see mlp::ElementKernels::serially_): B·K samples through the
// decoder's widest layer under mlp::kSerialMultiplyAdds multiply-adds (a batch-16 step
// of the paper's model is).
void on_bound_threads(const at::Tensor& x, const at::Tensor& eps_z, at::TensorList dec_weights,
                      c10::function_ref<void()> fn) {
  const int64_t widest = mlp::widest_layer(dec_weights);
  if (x.is_cpu() && x.size(0) * eps_z.size(1) * widest * widest < mlp::kSerialMultiplyAdds)
    mlp::serially_on_cpu(fn);
  else
    fn();
}

// The forward's results and what its backward needs.
struct Pass {
  at::Tensor bound, log_w, log_px, log_ps, log_pz, log_qz;
  at::Tensor enc_out, std, z, dec_out, scale;
  Tensors enc_hidden, dec_hidden;
};

void check_inputs(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& eps_z,
                  const OptTensor& eps_x, at::TensorList enc_weights, at::TensorList enc_biases,
                  at::TensorList dec_weights, at::TensorList dec_biases, const OptTensor& W,
                  const OptTensor& b) {
  check_floating(x, "x");
  check_dim(x, 2, "x", "[B, D]");
  check_same_device_dtype(mask, "mask", x, "x");
  check_shape(mask, "mask", x, "the shape of 'x'");
  check_same_device_dtype(eps_z, "eps_z", x, "x");
  check_dim(eps_z, 3, "eps_z", "[B, K, L]");
  check_size(eps_z, 0, x.size(0), "eps_z", "[B, K, L]");
  TORCH_CHECK_VALUE(eps_z.size(1) >= 1,
                    "notmiwae_fast: argument 'eps_z' must have K >= 1 "
                    "samples; got shape ",
                    eps_z.sizes());
  mlp::check_layers(x, enc_weights, enc_biases, "enc_");
  mlp::check_layers(eps_z.select(1, 0), dec_weights, dec_biases, "dec_");  // z: [B·K, L]
  const int64_t L = eps_z.size(2), D = x.size(1);
  TORCH_CHECK_VALUE(enc_weights.back().dim() == 2 && enc_weights.back().size(0) == 2 * L,
                    "notmiwae_fast: the encoder's last layer must have 2 L = ", 2 * L,
                    " outputs (mean and log-variance); got weight shape ",
                    enc_weights.back().sizes());
  TORCH_CHECK_VALUE(dec_weights.back().dim() == 2 && dec_weights.back().size(0) == 2 * D,
                    "notmiwae_fast: the decoder's last layer must have 2 D = ", 2 * D,
                    " outputs (loc and raw scale); got weight shape ", dec_weights.back().sizes());
  TORCH_CHECK_VALUE(W.has_value() == b.has_value(),
                    "notmiwae_fast: arguments 'W' and 'b' "
                    "must be given together (self-masking) or both left out (MIWAE)");
  TORCH_CHECK_VALUE(!W.has_value() || eps_x.has_value(),
                    "notmiwae_fast: argument 'eps_x' "
                    "is required with a self-masking process (W, b)");
  if (eps_x.has_value()) {
    check_same_device_dtype(*eps_x, "eps_x", x, "x");
    TORCH_CHECK_VALUE(eps_x->dim() == 3 && eps_x->size(0) == x.size(0) &&
                          eps_x->size(1) == eps_z.size(1) && eps_x->size(2) == D,
                      "notmiwae_fast: argument 'eps_x' must have shape [B, K, D] = [", x.size(0),
                      ", ", eps_z.size(1), ", ", D, "]; got ", eps_x->sizes());
  }
}

Pass forward_pass(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& eps_z,
                  const OptTensor& eps_x, at::TensorList enc_weights, at::TensorList enc_biases,
                  at::TensorList dec_weights, at::TensorList dec_biases, const OptTensor& W,
                  const OptTensor& b, double min_scale) {
  const BoundOps& op = bound_ops();
  check_inputs(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights, dec_biases, W, b);
  const int64_t B = x.size(0), K = eps_z.size(1), L = eps_z.size(2), D = x.size(1);
  Pass p;
  on_bound_threads(x, eps_z, dec_weights, [&] {
    std::tie(p.enc_out, p.enc_hidden) = op.mlp.call(x, enc_weights, enc_biases);
    const at::Tensor mu = p.enc_out.narrow(1, 0, L);
    p.std = at::exp(0.5 * p.enc_out.narrow(1, L, L).clamp(-kLogVarBound, kLogVarBound));
    std::tie(p.z, p.log_pz, p.log_qz) = op.latent.call(mu, p.std, eps_z);
    std::tie(p.dec_out, p.dec_hidden) = op.mlp.call(p.z.view({B * K, L}), dec_weights, dec_biases);
    const at::Tensor params = p.dec_out.view({B, K, 2 * D});
    const at::Tensor loc = params.narrow(2, 0, D);
    p.scale = op.scale.call(params.narrow(2, D, D), min_scale);
    if (W.has_value()) {
      std::tie(p.log_px, p.log_ps) = op.terms.call(x, mask, loc, p.scale, *eps_x, *W, *b);
      p.log_w = p.log_px + p.log_ps + p.log_pz - p.log_qz;
    } else {
      p.log_px = op.normal.call(x, mask, loc, p.scale);
      p.log_ps = at::zeros_like(p.log_px);
      p.log_w = p.log_px + p.log_pz - p.log_qz;
    }
    p.bound = op.logmeanexp.call(p.log_w);
  });
  return p;
}

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Outputs outputs(const Pass& p) {
  return {p.bound, p.log_w, p.log_px, p.log_ps, p.log_pz, p.log_qz};
}

Outputs gauss_bound_composite(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& eps_z,
                              const OptTensor& eps_x, at::TensorList enc_weights,
                              at::TensorList enc_biases, at::TensorList dec_weights,
                              at::TensorList dec_biases, const OptTensor& W, const OptTensor& b,
                              double min_scale) {
  return outputs(forward_pass(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights,
                              dec_biases, W, b, min_scale));
}

// Adds b to a where b is defined (an output nobody differentiated has no gradient).
at::Tensor plus(const at::Tensor& a, const at::Tensor& b) { return b.defined() ? a + b : a; }

// What the backward reads: the inputs and the forward's intermediates.
struct Saved {
  at::Tensor x, mask, eps_z, eps_x, W, b, log_w, enc_out, std, z, dec_out, scale;
  at::TensorList enc_weights, dec_weights, enc_hidden, dec_hidden;

  // The twelve tensors, then the tensors of the four lists (for save_for_backward).
  Tensors flat() const {
    Tensors v{x, mask, eps_z, eps_x, W, b, log_w, enc_out, std, z, dec_out, scale};
    for (at::TensorList list : {enc_weights, dec_weights, enc_hidden, dec_hidden})
      v.insert(v.end(), list.begin(), list.end());
    return v;
  }

  // The inverse of flat for n_enc encoder and n_dec decoder layers (v outlives the result).
  static Saved from_flat(const Tensors& v, int64_t n_enc, int64_t n_dec) {
    const at::Tensor* rest = v.data() + 12;
    return {v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            v[5],
            v[6],
            v[7],
            v[8],
            v[9],
            v[10],
            v[11],
            at::TensorList(rest, n_enc),
            at::TensorList(rest + n_enc, n_dec),
            at::TensorList(rest + n_enc + n_dec, n_enc - 1),
            at::TensorList(rest + 2 * n_enc + n_dec - 1, n_dec - 1)};
  }
};

// What the backward of the forward pass p reads (p outlives the result).
Saved saved_for_backward(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& eps_z,
                         const OptTensor& eps_x, const OptTensor& W, const OptTensor& b,
                         at::TensorList enc_weights, at::TensorList dec_weights, const Pass& p) {
  return {x,
          mask,
          eps_z,
          eps_x.value_or(at::Tensor()),
          W.value_or(at::Tensor()),
          b.value_or(at::Tensor()),
          p.log_w,
          p.enc_out,
          p.std,
          p.z,
          p.dec_out,
          p.scale,
          enc_weights,
          dec_weights,
          p.enc_hidden,
          p.dec_hidden};
}

// backward_pass's steps, writing the gradients into result (sized by it).
void chain_rule(const Saved& s, const variable_list& grads, Tensors& result) {
  const BoundOps& op = bound_ops();
  const int64_t B = s.x.size(0), K = s.eps_z.size(1), L = s.eps_z.size(2), D = s.x.size(1);
  // d/d log_w of everything that depends on it: the bound's and log_w's own gradients.
  at::Tensor g_log_w =
      grads[0].defined() ? op.logmeanexp_backward.call(grads[0], s.log_w) : at::zeros_like(s.log_w);
  g_log_w = plus(g_log_w, grads[1]);
  const at::Tensor g_px = plus(g_log_w, grads[2]);
  const at::Tensor g_pz = plus(g_log_w, grads[4]);
  const at::Tensor g_qz = grads[5].defined() ? grads[5] - g_log_w : -g_log_w;

  const at::Tensor params = s.dec_out.view({B, K, 2 * D});
  const at::Tensor loc = params.narrow(2, 0, D), raw = params.narrow(2, D, D);
  at::Tensor g_loc, g_scale;
  if (s.W.defined()) {
    const at::Tensor g_ps = plus(g_log_w, grads[3]);
    std::tie(g_loc, g_scale, result[result.size() - 2], result.back()) =
        op.terms_backward.call(g_px, g_ps, s.x, s.mask, loc, s.scale, s.eps_x, s.W, s.b);
  } else {
    std::tie(g_loc, g_scale) = op.normal_backward.call(g_px, s.x, s.mask, loc, s.scale);
  }
  const at::Tensor g_raw = op.scale_backward.call(g_scale, raw);
  const at::Tensor g_dec_out = at::cat({g_loc, g_raw}, 2).view({B * K, 2 * D});
  auto [g_z, g_dec_w, g_dec_b] =
      op.mlp_backward.call(g_dec_out, s.z.view({B * K, L}), s.dec_weights, s.dec_hidden);
  auto [g_mu, g_std] = op.latent_backward.call(g_z.view({B, K, L}), g_pz, g_qz,
                                               s.enc_out.narrow(1, 0, L), s.std, s.eps_z);
  // std = exp(½ clamp(v)): dstd/dv = ½ std inside the clamp's range (ends included, as
  // torch.clamp's gradient), 0 outside.
  const at::Tensor log_var = s.enc_out.narrow(1, L, L);
  const at::Tensor inside = log_var.abs() <= kLogVarBound;
  const at::Tensor g_log_var = at::where(inside, 0.5 * g_std * s.std, at::zeros_like(s.std));
  const at::Tensor g_enc_out = at::cat({g_mu, g_log_var}, 1);
  auto [g_x, g_enc_w, g_enc_b] = op.mlp_backward.call(g_enc_out, s.x, s.enc_weights, s.enc_hidden);
  size_t j = 0;
  for (auto& g : g_enc_w) result[j++] = g;
  for (auto& g : g_enc_b) result[j++] = g;
  for (auto& g : g_dec_w) result[j++] = g;
  for (auto& g : g_dec_b) result[j++] = g;
}

// The chain rule through the forward's steps with their backward operators: from the
// gradients of the six outputs (any may be undefined) to those of the encoder's weights
// and biases, the decoder's weights and biases, W and b (2 n_enc + 2 n_dec + 2 tensors,
// in that order; W's and b's undefined without self-masking).
Tensors backward_pass(const Saved& s, const variable_list& grads) {
  Tensors result(2 * s.enc_weights.size() + 2 * s.dec_weights.size() + 2);
  on_bound_threads(s.x, s.eps_z, s.dec_weights, [&] { chain_rule(s, grads, result); });
  return result;
}

// The bound's incoming gradient when the loss is −mean(bound): −1/B for every row.
variable_list loss_seed(const at::Tensor& bound) {
  return {at::full_like(bound, -1.0 / static_cast<double>(bound.size(0))), {}, {}, {}, {}, {}};
}

bool any_requires_grad(std::initializer_list<at::TensorList> lists, const OptTensor& W,
                       const OptTensor& b) {
  for (at::TensorList list : lists)
    for (const at::Tensor& t : list)
      if (t.requires_grad()) return true;
  return (W.has_value() && W->requires_grad()) || (b.has_value() && b->requires_grad());
}

// c when every entry of g (a CPU tensor) equals c; nothing otherwise.
std::optional<double> uniform_value(const at::Tensor& g) {
  if (!g.defined() || !g.is_cpu() || g.numel() == 0) return std::nullopt;
  const at::Tensor c = g.contiguous();
  std::optional<double> value;
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "uniform_value", [&] {
    const scalar_t* d = c.const_data_ptr<scalar_t>();
    for (int64_t i = 1; i < c.numel(); ++i)
      if (d[i] != d[0]) return;
    value = static_cast<double>(d[0]);
  });
  return value;
}

// Where the forward computed the gradients of −mean(bound) (kLossGradients) and the
// incoming gradients are those of a multiple of it — the bound's gradient the same c for
// every row, no other output's defined — the parameters' gradients are those, times
// −B·c; they are handed on once (a second backward through a retained graph runs the
// chain rule). Empty otherwise: the caller runs backward_pass.
Tensors loss_gradients_of(AutogradContext* ctx, const variable_list& grads) {
  auto found = ctx->saved_data.find(kLossGradients);
  if (found == ctx->saved_data.end()) return {};
  Tensors g = found->second.toTensorVector();
  ctx->saved_data.erase(found);
  for (size_t i = 1; i < grads.size(); ++i)
    if (grads[i].defined()) return {};
  const std::optional<double> c = uniform_value(grads[0]);
  if (!c.has_value()) return {};
  const double scale = -static_cast<double>(grads[0].size(0)) * *c;
  if (scale != 1.0)
    for (at::Tensor& t : g) t.mul_(scale);
  return g;
}

class GaussBound : public torch::autograd::Function<GaussBound> {
 public:
  // Inputs, in this order: x, mask, eps_z, eps_x, the encoder's n_e weights and biases,
  // the decoder's n_d weights and biases, W, b, min_scale, and whether to compute the
  // loss's gradients now (kLossGradients). Gradients: the weights, biases, W and b (x
  // and mask are data, eps_z and eps_x noise).
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& mask,
                               const at::Tensor& eps_z, const OptTensor& eps_x,
                               at::TensorList enc_weights, at::TensorList enc_biases,
                               at::TensorList dec_weights, at::TensorList dec_biases,
                               const OptTensor& W, const OptTensor& b, double min_scale,
                               bool loss_gradients) {
    at::AutoDispatchBelowADInplaceOrView guard;
    Pass p = forward_pass(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights, dec_biases,
                          W, b, min_scale);
    const int64_t n_enc = static_cast<int64_t>(enc_weights.size());
    const int64_t n_dec = static_cast<int64_t>(dec_weights.size());
    const Saved saved =
        saved_for_backward(x, mask, eps_z, eps_x, W, b, enc_weights, dec_weights, p);
    ctx->save_for_backward(saved.flat());
    ctx->saved_data["n_enc"] = n_enc;
    ctx->saved_data["n_dec"] = n_dec;
    ctx->set_materialize_grads(false);  // backward_pass takes undefined gradients as zeros
    if (loss_gradients) {
      Tensors g = backward_pass(saved, loss_seed(p.bound));
      if (!W.has_value()) g.resize(g.size() - 2);  // no W, b: their gradients are undefined
      ctx->saved_data[kLossGradients] = c10::List<at::Tensor>(g);
    }
    if (!W.has_value()) ctx->mark_non_differentiable({p.log_ps});
    return {p.bound, p.log_w, p.log_px, p.log_ps, p.log_pz, p.log_qz};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t n_enc = ctx->saved_data["n_enc"].toInt();
    const int64_t n_dec = ctx->saved_data["n_dec"].toInt();
    Tensors g = loss_gradients_of(ctx, grads);
    if (g.empty()) {
      const Tensors v = ctx->get_saved_variables();
      g = backward_pass(Saved::from_flat(v, n_enc, n_dec), grads);
    }
    g.resize(2 * n_enc + 2 * n_dec + 2);  // without self-masking: W's and b's undefined
    // One entry per forward argument (min_scale and loss_gradients included, as autograd
    // counts them): none for x, mask, eps_z, eps_x, min_scale and loss_gradients.
    variable_list result(4);
    result.insert(result.end(), g.begin(), g.end());
    result.resize(result.size() + 2);
    return result;
  }
};

// gauss_bound_grads: the forward and the gradients of the models' loss −mean(bound)
// with respect to the weights, biases, W and b, in one call and without an autograd
// graph (a training step's forward and backward: Trainer's fast path).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, Tensors>
gauss_bound_grads(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& eps_z,
                  const OptTensor& eps_x, at::TensorList enc_weights, at::TensorList enc_biases,
                  at::TensorList dec_weights, at::TensorList dec_biases, const OptTensor& W,
                  const OptTensor& b, double min_scale) {
  at::AutoDispatchBelowADInplaceOrView guard;
  const Pass p = forward_pass(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights,
                              dec_biases, W, b, min_scale);
  const Saved s = saved_for_backward(x, mask, eps_z, eps_x, W, b, enc_weights, dec_weights, p);
  Tensors g = backward_pass(s, loss_seed(p.bound));
  if (!W.has_value()) g.resize(g.size() - 2);
  return {p.bound, p.log_w, p.log_px, p.log_ps, p.log_pz, p.log_qz, g};
}

Outputs gauss_bound_autograd(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& eps_z,
                             const OptTensor& eps_x, at::TensorList enc_weights,
                             at::TensorList enc_biases, at::TensorList dec_weights,
                             at::TensorList dec_biases, const OptTensor& W, const OptTensor& b,
                             double min_scale) {
  // On the CPU, where a small step's backward costs more in calls and autograd nodes than
  // in arithmetic, a forward that autograd records computes the gradients of the loss
  // −mean(bound) in the same pass (as gauss_bound_grads does); backward hands them on,
  // scaled, when that is all it is asked for (see loss_gradients_of).
  const bool loss_gradients =
      x.is_cpu() && at::GradMode::is_enabled() &&
      any_requires_grad({enc_weights, enc_biases, dec_weights, dec_biases}, W, b);
  auto out = GaussBound::apply(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights,
                               dec_biases, W, b, min_scale, loss_gradients);
  return {out[0], out[1], out[2], out[3], out[4], out[5]};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CompositeExplicitAutograd, m) {
  m.impl("gauss_bound", &gauss_bound_composite);
  m.impl("gauss_bound_grads", &gauss_bound_grads);
}

// gauss_bound_grads builds no graph: its Autograd kernel is itself (below autograd), so
// its results are plain tensors however the weights require grad.
TORCH_LIBRARY_IMPL(notmiwae_fast, Autograd, m) {
  m.impl("gauss_bound", &gauss_bound_autograd);
  m.impl("gauss_bound_grads", &gauss_bound_grads);
}

}  // namespace notmiwae_fast
