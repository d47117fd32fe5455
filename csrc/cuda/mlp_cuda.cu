// CUDA kernels of the MLP family: mlp_tanh, mlp_tanh_forward, mlp_tanh_backward, and
// softplus_scale (the decoders' positive scale) with its backward.
// The layer loop is notmiwae_fast/mlp.h (shared with the CPU; the matrix products are
// cuBLAS's); here are its two element kernels, bias and tanh in place and the chain rule
// of tanh in place, with the math of notmiwae_fast/math.h. float32, float64, float16 and bfloat16
// (half types compute in float32, at::opmath_type).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "launch.cuh"
#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/math.h"
#include "notmiwae_fast/mlp.h"

namespace notmiwae_fast {
namespace {

using cuda::element_blocks;
constexpr int kThreads = cuda::kElementThreads;

// h [n / cols, cols] ← tanh(h + bias), bias [cols].
template <typename scalar_t>
__global__ void bias_tanh_kernel(int64_t n, int64_t cols, scalar_t* __restrict__ h,
                                 const scalar_t* __restrict__ bias) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    h[j] = static_cast<scalar_t>(
        math::tanh_activation(static_cast<opmath_t>(h[j]) + static_cast<opmath_t>(bias[j % cols])));
  }
}

template <typename scalar_t>
__global__ void tanh_backward_kernel(int64_t n, scalar_t* __restrict__ g,
                                     const scalar_t* __restrict__ y) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    g[j] = static_cast<scalar_t>(
        math::tanh_activation_grad(static_cast<opmath_t>(g[j]), static_cast<opmath_t>(y[j])));
  }
}

template <typename scalar_t>
__global__ void softplus_scale_kernel(int64_t n, const scalar_t* __restrict__ x,
                                      at::opmath_type<scalar_t> floor, scalar_t* __restrict__ out) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[j] = static_cast<scalar_t>(math::softplus_scale(static_cast<opmath_t>(x[j]), floor));
  }
}

template <typename scalar_t>
__global__ void softplus_scale_backward_kernel(int64_t n, const scalar_t* __restrict__ g,
                                               const scalar_t* __restrict__ x,
                                               scalar_t* __restrict__ out) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[j] = static_cast<scalar_t>(static_cast<opmath_t>(g[j]) *
                                   math::sigmoid(static_cast<opmath_t>(x[j])));
  }
}

void bias_tanh_inplace_cuda(at::Tensor& h, const at::Tensor& bias_) {
  TORCH_INTERNAL_ASSERT(h.is_contiguous() && h.dim() == 2);
  const at::Tensor bias = bias_.contiguous();
  const int64_t n = h.numel();
  if (n == 0) return;
  NOTMIWAE_DISPATCH_CUDA(h.scalar_type(), "mlp_tanh_cuda", [&] {
    bias_tanh_kernel<scalar_t>
        <<<element_blocks(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            n, h.size(1), h.mutable_data_ptr<scalar_t>(), bias.const_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void tanh_backward_inplace_cuda(at::Tensor& grad, const at::Tensor& y_) {
  TORCH_INTERNAL_ASSERT(grad.is_contiguous());
  const at::Tensor y = y_.contiguous();
  const int64_t n = grad.numel();
  if (n == 0) return;
  NOTMIWAE_DISPATCH_CUDA(grad.scalar_type(), "mlp_tanh_backward_cuda", [&] {
    tanh_backward_kernel<scalar_t>
        <<<element_blocks(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            n, grad.mutable_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor softplus_scale_cuda(const at::Tensor& raw_, double min_scale) {
  check_floating(raw_, "raw");
  c10::cuda::CUDAGuard guard(raw_.device());
  const at::Tensor raw = raw_.contiguous();
  at::Tensor out = at::empty_like(raw);
  const int64_t n = raw.numel();
  if (n == 0) return out;
  NOTMIWAE_DISPATCH_CUDA(raw.scalar_type(), "softplus_scale_cuda", [&] {
    softplus_scale_kernel<scalar_t>
        <<<element_blocks(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            n, raw.const_data_ptr<scalar_t>(), static_cast<at::opmath_type<scalar_t>>(min_scale),
            out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor softplus_scale_backward_cuda(const at::Tensor& grad_, const at::Tensor& raw_) {
  mlp::check_scale_grad(grad_, raw_);
  c10::cuda::CUDAGuard guard(raw_.device());
  const at::Tensor raw = raw_.contiguous(), grad = grad_.contiguous();
  at::Tensor out = at::empty_like(raw);
  const int64_t n = raw.numel();
  if (n == 0) return out;
  NOTMIWAE_DISPATCH_CUDA(raw.scalar_type(), "softplus_scale_backward_cuda", [&] {
    softplus_scale_backward_kernel<scalar_t>
        <<<element_blocks(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            n, grad.const_data_ptr<scalar_t>(), raw.const_data_ptr<scalar_t>(),
            out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

constexpr mlp::ElementKernels kCudaKernels{&bias_tanh_inplace_cuda, &tanh_backward_inplace_cuda,
                                           /*transpose_=*/nullptr, /*serially_=*/nullptr,
                                           /*block_bytes=*/0};

// The entry points check their arguments before setting the device guard: the dispatcher
// picks these kernels when any argument is on CUDA, and a guard built from a CPU x would
// throw instead of the message that names the argument on the wrong device.
at::Tensor mlp_tanh_cuda(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  mlp::check_layers(x, weights, biases);
  c10::cuda::CUDAGuard guard(x.device());
  return std::get<0>(mlp::forward(x, weights, biases, kCudaKernels, /*keep_hidden=*/false));
}

std::tuple<at::Tensor, std::vector<at::Tensor>> mlp_tanh_forward_cuda(const at::Tensor& x,
                                                                      at::TensorList weights,
                                                                      at::TensorList biases) {
  mlp::check_layers(x, weights, biases);
  c10::cuda::CUDAGuard guard(x.device());
  return mlp::forward(x, weights, biases, kCudaKernels, /*keep_hidden=*/true);
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> mlp_tanh_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, at::TensorList weights, at::TensorList hidden) {
  mlp::check_backward(grad, x, weights, hidden);
  c10::cuda::CUDAGuard guard(x.device());
  return mlp::backward(grad, x, weights, hidden, kCudaKernels);
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CUDA, m) {
  m.impl("mlp_tanh", &mlp_tanh_cuda);
  m.impl("mlp_tanh_forward", &mlp_tanh_forward_cuda);
  m.impl("mlp_tanh_backward", &mlp_tanh_backward_cuda);
  m.impl("softplus_scale", &softplus_scale_cuda);
  m.impl("softplus_scale_backward", &softplus_scale_backward_cuda);
}

}  // namespace notmiwae_fast
