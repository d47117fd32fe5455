// Autograd kernels of the *_backward operators: the gradients are not themselves
// differentiable (no operator has a double backward). The kernel runs below autograd;
// when it is called with create_graph=True on inputs that require grad, its results
// get an Error node as grad_fn, linked to those inputs, so that a second derivative
// through them raises instead of coming out as zero or None (without an Autograd
// kernel torch only warns and treats the gradient as a constant). A first
// grad(..., create_graph=True) works as usual.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/stack.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <string>
#include <vector>

namespace notmiwae_fast {
namespace {

// The tensors of an argument (a tensor, a tensor list, or none).
std::vector<at::Tensor> tensors_of(const c10::IValue& value) {
  if (value.isTensorList()) return value.toTensorVector();
  if (value.isTensor()) return {value.toTensor()};
  return {};
}

void not_twice_differentiable(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                              torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  torch::autograd::variable_list inputs;  // those that require grad
  if (at::GradMode::is_enabled()) {
    for (const c10::IValue& value : torch::jit::last(*stack, schema.arguments().size()))
      for (const at::Tensor& t : tensors_of(value))
        if (t.defined() && t.requires_grad()) inputs.push_back(t);
  }
  {
    // Below autograd for the kernel's own calls too (ATen's out= variants refuse inputs
    // that require grad while grad mode is on).
    at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
  }
  if (inputs.empty()) return;
  auto error = c10::make_intrusive<torch::autograd::Error>(
      std::string(schema.name()) +
          ": notmiwae_fast's gradients are not differentiable (no "
          "double backward); use backend=\"reference\" for higher-order derivatives",
      torch::autograd::collect_next_edges(inputs));
  for (const c10::IValue& value : torch::jit::last(*stack, schema.returns().size()))
    for (const at::Tensor& t : tensors_of(value))
      if (t.defined() && t.is_floating_point()) torch::autograd::set_history(t, error);
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, Autograd, m) {
  for (const char* name : {"iw_logmeanexp_backward", "iw_weights_backward", "iw_impute_backward",
                           "masked_normal_logprob_backward", "masked_bernoulli_logprob_backward",
                           "masked_studentt_logprob_backward", "selfmask_logprob_backward",
                           "notmiwae_normal_terms_backward", "latent_terms_backward",
                           "mlp_tanh_backward", "softplus_scale_backward"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&not_twice_differentiable>());
  }
}

}  // namespace notmiwae_fast
