// torch.autocast for the notmiwae_fast operators (dispatch keys AutocastCPU and
// AutocastCUDA), with ATen's own policy for the matching ATen ops:
//   - mlp_tanh runs in autocast's lower-precision dtype (bfloat16 on CPU by default,
//     float16 on CUDA), like nn.Linear: its floating inputs are cast (weights through
//     autocast's cache, so once per autocast region) and its result has that dtype;
//   - the likelihood, latent, scale and importance-weighting ops run in float32, like
//     log_softmax and the losses: reduced-precision inputs are cast up, float32 and
//     float64 inputs are left alone.
// Casts are differentiable (the gradients of float32 parameters come back in float32).
// Without these kernels autocast would pass reduced-precision tensors through to
// kernels that do not take them. The backward and *_forward ops have no autocast
// kernel: autograd calls them with the tensors the forward saved.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <vector>

namespace notmiwae_fast {
namespace {

enum class Policy { kLowerPrecision, kFloat32 };

// One boxed kernel for every op: casts the op's Tensor and Tensor[] arguments on the
// stack, then calls the op again below autocast.
template <c10::DeviceType device, Policy policy>
void autocast_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const at::ScalarType to = policy == Policy::kFloat32
                                ? at::kFloat
                                : at::autocast::get_lower_precision_fp_from_device_type(device);
  const size_t n = op.schema().arguments().size();
  for (size_t i = stack->size() - n; i < stack->size(); ++i) {
    c10::IValue& arg = (*stack)[i];
    // cached_cast casts only floating tensors on this device that are not float64.
    if (arg.isTensor()) {
      arg = at::autocast::cached_cast(to, arg.toTensor(), device);
    } else if (arg.isTensorList()) {
      const std::vector<at::Tensor> list = arg.toTensorVector();
      arg = at::autocast::cached_cast(to, at::TensorList(list), device);
    }
  }
  op.callBoxed(stack);
}

template <c10::DeviceType device>
void register_autocast(torch::Library& m) {
  m.impl("mlp_tanh", torch::CppFunction::makeFromBoxedFunction<
                         &autocast_kernel<device, Policy::kLowerPrecision>>());
  for (const char* name :
       {"iw_logmeanexp", "iw_weights", "iw_impute", "masked_normal_logprob",
        "masked_bernoulli_logprob", "masked_studentt_logprob", "masked_poisson_logprob",
        "masked_categorical_logprob", "selfmask_logprob", "notmiwae_normal_terms", "latent_terms",
        "softplus_scale"}) {
    m.impl(name,
           torch::CppFunction::makeFromBoxedFunction<&autocast_kernel<device, Policy::kFloat32>>());
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, AutocastCPU, m) { register_autocast<c10::DeviceType::CPU>(m); }

TORCH_LIBRARY_IMPL(notmiwae_fast, AutocastCUDA, m) { register_autocast<c10::DeviceType::CUDA>(m); }

}  // namespace notmiwae_fast
