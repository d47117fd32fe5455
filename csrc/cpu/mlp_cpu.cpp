// CPU kernels of the MLP family: mlp_tanh, mlp_tanh_forward, mlp_tanh_backward, and
// softplus_scale (the decoders' positive scale) with its backward.
// The layer loop is notmiwae_fast/mlp.h (shared with CUDA); here are the two element
// kernels it needs, bias and tanh in place and the chain rule of tanh in place, vectorised (the
// tanh of vec_math.h for float32, faster than ATen's) and run in parallel over blocks of elements.
// float32 and float64; the MLP also bfloat16 and float16 (math in float32), which is what it gets
// under torch.autocast.
#include "vectorize.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "buffer_pool.h"
#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/math.h"
#include "notmiwae_fast/mlp.h"
#include "one_thread.h"
#include "parallel.h"
#include "vec_math.h"

namespace notmiwae_fast {

void mlp::serially_on_cpu(c10::function_ref<void()> fn) {
  const cpu::OneThread one;
  fn();
}

namespace {

using F = cpu::VecMath;

using cpu::kGrainElements;

// opmath_t: float for bfloat16 and float16 (the math runs in float32, rounded once).
template <typename scalar_t, typename opmath_t = at::opmath_type<scalar_t>>
NOTMIWAE_VECTOR_CLONES void bias_tanh_values(int64_t n, scalar_t* __restrict h,
                                             const scalar_t* __restrict bias) {
  for (int64_t j = 0; j < n; ++j)
    h[j] = static_cast<scalar_t>(
        math::tanh_activation<F>(static_cast<opmath_t>(h[j]) + static_cast<opmath_t>(bias[j])));
}

template <typename scalar_t, typename opmath_t = at::opmath_type<scalar_t>>
NOTMIWAE_VECTOR_CLONES void tanh_grads(int64_t n, scalar_t* __restrict g,
                                       const scalar_t* __restrict y) {
  for (int64_t j = 0; j < n; ++j)
    g[j] = static_cast<scalar_t>(
        math::tanh_activation_grad(static_cast<opmath_t>(g[j]), static_cast<opmath_t>(y[j])));
}

void bias_tanh_inplace_cpu(at::Tensor& h, const at::Tensor& bias_) {
  TORCH_INTERNAL_ASSERT(h.is_contiguous() && h.dim() == 2);
  const at::Tensor bias = bias_.contiguous();
  const int64_t cols = h.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h.scalar_type(), "mlp_tanh_cpu", [&] {
    scalar_t* data = h.data_ptr<scalar_t>();
    const scalar_t* b = bias.const_data_ptr<scalar_t>();
    at::parallel_for(0, h.size(0), cpu::rows_per_task(cols), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) bias_tanh_values(cols, data + r * cols, b);
    });
  });
}

void tanh_backward_inplace_cpu(at::Tensor& grad, const at::Tensor& y_) {
  TORCH_INTERNAL_ASSERT(grad.is_contiguous());
  const at::Tensor y = y_.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, grad.scalar_type(), "mlp_tanh_backward_cpu", [&] {
        scalar_t* g = grad.data_ptr<scalar_t>();
        const scalar_t* yd = y.data_ptr<scalar_t>();
        at::parallel_for(0, grad.numel(), kGrainElements, [&](int64_t begin, int64_t end) {
          tanh_grads(end - begin, g + begin, yd + begin);
        });
      });
}

// dst [m, n] ← srcᵀ, src [n, m], both contiguous, n small (a narrow product's result):
// blocks of kTransposeRows rows of dst, whose writes stay in L1 while src is read in
// runs along its rows (ATen's copy of a transposed view goes element by element).
constexpr int64_t kTransposeRows = 64;

void transpose_cpu(const at::Tensor& src, at::Tensor& dst) {
  TORCH_INTERNAL_ASSERT(src.is_contiguous() && dst.is_contiguous() && src.dim() == 2 &&
                        dst.dim() == 2 && src.size(0) == dst.size(1) && src.size(1) == dst.size(0));
  const int64_t n = src.size(0), m = src.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, src.scalar_type(), "transpose_cpu", [&] {
        const scalar_t* s = src.const_data_ptr<scalar_t>();
        scalar_t* d = dst.mutable_data_ptr<scalar_t>();
        const int64_t blocks = (m + kTransposeRows - 1) / kTransposeRows;
        at::parallel_for(
            0, blocks, cpu::rows_per_task(kTransposeRows * n), [&](int64_t b0, int64_t b1) {
              for (int64_t blk = b0; blk < b1; ++blk) {
                const int64_t i0 = blk * kTransposeRows, i1 = std::min(m, i0 + kTransposeRows);
                for (int64_t j = 0; j < n; ++j)
                  for (int64_t i = i0; i < i1; ++i) d[i * n + j] = s[j * m + i];
              }
            });
      });
}

template <typename scalar_t>
NOTMIWAE_VECTOR_CLONES void softplus_scale_values(int64_t n, const scalar_t* __restrict x,
                                                  scalar_t floor, scalar_t* __restrict out) {
  for (int64_t j = 0; j < n; ++j) out[j] = math::softplus_scale<F>(x[j], floor);
}

template <typename scalar_t>
NOTMIWAE_VECTOR_CLONES void softplus_scale_grads(int64_t n, const scalar_t* __restrict g,
                                                 const scalar_t* __restrict x,
                                                 scalar_t* __restrict out) {
  for (int64_t j = 0; j < n; ++j) out[j] = g[j] * math::sigmoid<F>(x[j]);
}

at::Tensor softplus_scale_cpu(const at::Tensor& raw_, double min_scale) {
  check_floating(raw_, "raw");
  check_cpu_dtype(raw_, "raw");
  const at::Tensor raw = raw_.contiguous();
  at::Tensor out = at::empty_like(raw);
  AT_DISPATCH_FLOATING_TYPES(raw.scalar_type(), "softplus_scale_cpu", [&] {
    const scalar_t* x = raw.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const auto floor = static_cast<scalar_t>(min_scale);
    at::parallel_for(0, raw.numel(), kGrainElements, [&](int64_t begin, int64_t end) {
      softplus_scale_values(end - begin, x + begin, floor, o + begin);
    });
  });
  return out;
}

at::Tensor softplus_scale_backward_cpu(const at::Tensor& grad_, const at::Tensor& raw_) {
  check_cpu_dtype(raw_, "raw");
  mlp::check_scale_grad(grad_, raw_);
  const at::Tensor raw = raw_.contiguous(), grad = grad_.contiguous();
  at::Tensor out = at::empty_like(raw);
  AT_DISPATCH_FLOATING_TYPES(raw.scalar_type(), "softplus_scale_backward_cpu", [&] {
    const scalar_t* x = raw.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, raw.numel(), kGrainElements, [&](int64_t begin, int64_t end) {
      softplus_scale_grads(end - begin, g + begin, x + begin, o + begin);
    });
  });
  return out;
}

constexpr mlp::ElementKernels kCpuKernels{
    &bias_tanh_inplace_cpu,     &tanh_backward_inplace_cpu, &transpose_cpu, &mlp::serially_on_cpu,
    /*block_bytes=*/512 * 1024, &cpu::pooled_empty};

at::Tensor mlp_tanh_cpu(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  check_float_or_half(x, "x", "CPU");
  return std::get<0>(mlp::forward(x, weights, biases, kCpuKernels, /*keep_hidden=*/false));
}

std::tuple<at::Tensor, std::vector<at::Tensor>> mlp_tanh_forward_cpu(const at::Tensor& x,
                                                                     at::TensorList weights,
                                                                     at::TensorList biases) {
  check_float_or_half(x, "x", "CPU");
  return mlp::forward(x, weights, biases, kCpuKernels, /*keep_hidden=*/true);
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> mlp_tanh_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, at::TensorList weights, at::TensorList hidden) {
  check_float_or_half(x, "x", "CPU");  // grad and the rest: mlp::backward's check_backward
  return mlp::backward(grad, x, weights, hidden, kCpuKernels);
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CPU, m) {
  m.impl("mlp_tanh", &mlp_tanh_cpu);
  m.impl("mlp_tanh_forward", &mlp_tanh_forward_cpu);
  m.impl("mlp_tanh_backward", &mlp_tanh_backward_cpu);
  m.impl("softplus_scale", &softplus_scale_cpu);
  m.impl("softplus_scale_backward", &softplus_scale_backward_cpu);
}

}  // namespace notmiwae_fast
