// The multi-layer perceptron family (mlp_tanh and its forward / backward ops): the
// layer loop, written once for every device.
//
//   y = L_n(tanh(L_{n−1}( … tanh(L_1(x)) … ))),   L_i(h) = h · W_iᵀ + b_i
//
// x [N, in], W_i [out_i, in_i] (nn.Linear's layout), b_i [out_i], y [N, out_n]. The
// matrix products are ATen's (MKL / oneDNN on CPU, cuBLAS on CUDA): they are the bulk
// of the FLOPs and already at the hardware's peak. What the fusion removes is the rest:
// per hidden layer one mm straight into the activation buffer and one in-place pass that
// adds the bias and applies the activation (the backend's element kernel, math in
// math.h), one mm per gradient and one in-place pass for the activation's chain rule, no
// autograd graph of a dozen nodes per MLP, and on the CPU a tanh faster than ATen's
// (vec_math.h) and small products kept on the calling thread.
// csrc/cpu/mlp_cpu.cpp and csrc/cuda/mlp_cuda.cu supply the element kernels and
// register these functions; csrc/autograd/mlp_autograd.cpp ties forward to backward.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/FunctionRef.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "notmiwae_fast/checks.h"

namespace notmiwae_fast {
namespace mlp {

// What the layer loop needs of one backend: its element kernels (in place on contiguous
// tensors), the transposing copy of a backend whose matrix products prefer narrow
// results computed transposed (see product; null: no transposed products), how it runs
// small products serially (see product; null: it does not), and the size of the row
// blocks of an inference forward (see forward; 0: no blocks).
struct ElementKernels {
  // h ← tanh(h + bias), h [N, out], bias [out]: the hidden layers' bias and activation
  // in one pass over the product (an addmm would first copy the bias into every row).
  void (*bias_tanh_)(at::Tensor& h, const at::Tensor& bias);
  void (*tanh_backward_)(at::Tensor& grad, const at::Tensor& y);  // grad ← grad · (1 − y²)
  void (*transpose_)(const at::Tensor& src, at::Tensor& dst);     // dst [m, n] ← srcᵀ [n, m]
  // Runs fn on the calling thread alone (null: fn runs as it is). A backend whose
  // threads sleep between parallel regions (the CPU's OpenMP and MKL) runs its small
  // products this way: waking the other threads costs more than they save.
  void (*serially_)(c10::function_ref<void()> fn);
  int64_t block_bytes;
  // Allocates the layer loop's activations, gradients and temporaries (null: at::empty).
  // The CPU's keeps its large buffers for reuse (csrc/cpu/buffer_pool.h): fresh ones
  // page-fault on every call.
  at::Tensor (*empty_)(at::IntArrayRef sizes, const at::TensorOptions& options) = nullptr;
};

// An uninitialised [rows, cols] tensor with like's options, from the backend's empty_.
inline at::Tensor empty_matrix(int64_t rows, int64_t cols, const at::Tensor& like,
                               const ElementKernels& kernels) {
  return kernels.empty_ != nullptr ? kernels.empty_({rows, cols}, like.options())
                                   : at::empty({rows, cols}, like.options());
}

// Results with fewer columns than this count as narrow.
constexpr int64_t kNarrowColumns = 32;

// Products with fewer multiply-adds than this run serially where the backend asks for it
// (a batch-16 step of the paper's model: all of them; batch 128: the 128-wide layers'
// products run on every thread).
constexpr int64_t kSerialMultiplyAdds = int64_t{1} << 24;

inline at::Tensor product_any_threads(const at::Tensor& bias, const at::Tensor& A,
                                      const at::Tensor& B, const ElementKernels& kernels,
                                      at::Tensor out);

// The CPU backend's serially_ (csrc/cpu/mlp_cpu.cpp): fn on the calling thread alone.
// Composites of these operators that are small as a whole run through it on the CPU.
void serially_on_cpu(c10::function_ref<void()> fn);

// The widest layer's output size (1 for no layers).
inline int64_t widest_layer(at::TensorList weights) {
  int64_t widest = 1;
  for (const at::Tensor& w : weights) widest = std::max(widest, w.size(0));
  return widest;
}

// bias + A · B (bias [n] broadcast over rows; undefined: none), A [m, k], B [k, n];
// contiguous [m, n]. A narrow result (n < 32, m > n: the latent and output layers of
// the paper's networks, and the gradients of their inputs and weights) is computed as
// (Bᵀ · Aᵀ)ᵀ when the backend asks for it: MKL's sgemm is much faster on such shapes in
// that orientation, and the backend's transposing copy back is small.
// With ``out`` defined ([m, n], contiguous) the result is written there and returned.
inline at::Tensor product(const at::Tensor& bias, const at::Tensor& A, const at::Tensor& B,
                          const ElementKernels& kernels, at::Tensor out = {}) {
  if (kernels.serially_ != nullptr && A.size(0) * A.size(1) * B.size(1) < kSerialMultiplyAdds) {
    at::Tensor result;
    kernels.serially_([&] { result = product_any_threads(bias, A, B, kernels, out); });
    return result;
  }
  return product_any_threads(bias, A, B, kernels, out);
}

// product on as many threads as the backend's matrix product uses.
inline at::Tensor product_any_threads(const at::Tensor& bias, const at::Tensor& A,
                                      const at::Tensor& B, const ElementKernels& kernels,
                                      at::Tensor out) {
  const int64_t m = A.size(0), n = B.size(1);
  at::Tensor result = out.defined() ? out : empty_matrix(m, n, A, kernels);
  if (kernels.transpose_ != nullptr && n < kNarrowColumns && m > n) {
    at::Tensor t = empty_matrix(n, m, A, kernels);
    if (bias.defined())
      at::addmm_out(t, bias.unsqueeze(1), B.t(), A.t());
    else
      at::mm_out(t, B.t(), A.t());
    kernels.transpose_(t, result);
    return result;
  }
  return bias.defined() ? at::addmm_out(result, bias, A, B) : at::mm_out(result, A, B);
}

// softplus_scale_backward: grad of raw's shape, device and dtype.
inline void check_scale_grad(const at::Tensor& grad, const at::Tensor& raw) {
  check_same_device_dtype(grad, "grad", raw, "raw");
  check_shape(grad, "grad", raw, "the shape of 'raw'");
}

inline std::string indexed(const char* name, size_t i) {
  return std::string(name) + "[" + std::to_string(i) + "]";
}

// x [N, in]; weights[i] [out_i, in_i] with in_0 = in and in_i = out_{i−1}; biases[i]
// [out_i]; all on x's device, of x's dtype. ``prefix`` names the lists as the caller's
// arguments ("dec_": 'dec_weights[0]').
inline void check_layers(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                         const std::string& prefix = "") {
  const std::string ws = prefix + "weights", bs = prefix + "biases";
  check_floating(x, "x");
  check_dim(x, 2, "x", "[N, in_features]");
  TORCH_CHECK_VALUE(!weights.empty(), "notmiwae_fast: argument '", ws,
                    "' must hold at least "
                    "one layer; got an empty list");
  TORCH_CHECK_VALUE(weights.size() == biases.size(), "notmiwae_fast: arguments '", ws, "' and '",
                    bs, "' must have one entry per layer; got ", weights.size(), " and ",
                    biases.size());
  int64_t width = x.size(1);
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string w = indexed(ws.c_str(), i), b = indexed(bs.c_str(), i);
    check_same_device_dtype(weights[i], w.c_str(), x, "x");
    check_same_device_dtype(biases[i], b.c_str(), x, "x");
    check_dim(weights[i], 2, w.c_str(), "[out_features, in_features]");
    check_size(weights[i], 1, width, w.c_str(), "[out_features, in_features]");
    width = weights[i].size(0);
    check_dim(biases[i], 1, b.c_str(), "[out_features]");
    check_size(biases[i], 0, width, b.c_str(), "[out_features]");
  }
}

inline std::tuple<at::Tensor, std::vector<at::Tensor>> forward_rows(
    const at::Tensor& x, at::TensorList weights, at::TensorList biases,
    const ElementKernels& kernels, bool keep_hidden, at::Tensor out = {});

// Returns y and, when keep_hidden, the n − 1 hidden activations (after tanh), which the
// backward pass needs. Without them (inference: imputation decodes 10⁵–10⁶ rows per
// call) and when the backend asks for it, the rows go through the network in blocks
// whose widest activation takes about block_bytes: the activations stay in cache from
// one layer to the next and their buffers are reused from block to block instead of
// being fresh, page-faulting memory. Each row's result is the same math (equal to
// rounding).
inline std::tuple<at::Tensor, std::vector<at::Tensor>> forward(const at::Tensor& x,
                                                               at::TensorList weights,
                                                               at::TensorList biases,
                                                               const ElementKernels& kernels,
                                                               bool keep_hidden) {
  check_layers(x, weights, biases);
  const int64_t widest = widest_layer(weights);
  const int64_t rows = x.size(0);
  const int64_t block = std::max<int64_t>(256, kernels.block_bytes / (widest * x.element_size()));
  if (keep_hidden || kernels.block_bytes == 0 || rows <= 2 * block)
    return forward_rows(x, weights, biases, kernels, keep_hidden);
  at::Tensor y = at::empty({rows, weights.back().size(0)}, x.options());
  for (int64_t r = 0; r < rows; r += block) {
    const int64_t n = std::min(block, rows - r);
    forward_rows(x.narrow(0, r, n), weights, biases, kernels, false, y.narrow(0, r, n));
  }
  return {y, {}};
}

// forward on all rows at once (arguments checked); the last layer writes into ``out``
// when it is defined.
inline std::tuple<at::Tensor, std::vector<at::Tensor>> forward_rows(
    const at::Tensor& x, at::TensorList weights, at::TensorList biases,
    const ElementKernels& kernels, bool keep_hidden, at::Tensor out) {
  std::vector<at::Tensor> hidden;
  at::Tensor h = x;
  for (size_t i = 0; i < weights.size(); ++i) {
    const bool last = i + 1 == weights.size();
    at::Tensor layer = product(last ? biases[i] : at::Tensor(), h, weights[i].t(), kernels,
                               last ? out : at::Tensor());
    if (!last) {
      kernels.bias_tanh_(layer, biases[i]);
      if (keep_hidden) hidden.push_back(layer);
    }
    h = std::move(layer);
  }
  return {h, hidden};
}

// backward's arguments: grad [N, out_n], x [N, in], weights[i] [out_i, in_i] chained from
// in, hidden[i] [N, out_i] for the n − 1 hidden layers, all on x's device with x's dtype.
inline void check_backward(const at::Tensor& grad, const at::Tensor& x, at::TensorList weights,
                           at::TensorList hidden) {
  const size_t n = weights.size();
  TORCH_CHECK_VALUE(n >= 1 && hidden.size() + 1 == n,
                    "notmiwae_fast: argument 'hidden' must "
                    "hold one activation per hidden layer (",
                    n == 0 ? 0 : n - 1, "); got ", hidden.size());
  check_floating(x, "x");
  check_dim(x, 2, "x", "[N, in_features]");
  int64_t width = 0;
  for (size_t i = 0; i < n; ++i) {
    const std::string w = indexed("weights", i);
    check_same_device_dtype(weights[i], w.c_str(), x, "x");
    check_dim(weights[i], 2, w.c_str(), "[out_features, in_features]");
    if (i == 0)  // the first layer's weights say how wide x must be
      check_size(x, 1, weights[0].size(1), "x", "[N, in_features]");
    else
      check_size(weights[i], 1, width, w.c_str(), "[out_features, in_features]");
    width = weights[i].size(0);
    if (i + 1 < n) {
      const std::string h = indexed("hidden", i);
      check_same_device_dtype(hidden[i], h.c_str(), x, "x");
      TORCH_CHECK_VALUE(
          hidden[i].dim() == 2 && hidden[i].size(0) == x.size(0) && hidden[i].size(1) == width,
          "notmiwae_fast: argument '", h, "' must have shape [", x.size(0), ", ", width, "]; got ",
          hidden[i].sizes());
    }
  }
  check_same_device_dtype(grad, "grad", x, "x");
  check_dim(grad, 2, "grad", "[N, out_features]");
  check_size(grad, 0, x.size(0), "grad", "[N, out_features]");
  check_size(grad, 1, width, "grad", "[N, out_features]");
}

// Gradients of Σ grad · y with respect to x, every weight and every bias, from the
// hidden activations that forward kept.
inline std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> backward(
    const at::Tensor& grad, const at::Tensor& x, at::TensorList weights, at::TensorList hidden,
    const ElementKernels& kernels) {
  check_backward(grad, x, weights, hidden);
  const size_t n = weights.size();
  std::vector<at::Tensor> grad_weights(n), grad_biases(n);
  at::Tensor g = grad;
  for (size_t j = n; j-- > 0;) {
    const at::Tensor& input = j == 0 ? x : hidden[j - 1];
    grad_weights[j] = product({}, g.t(), input, kernels);
    grad_biases[j] = g.sum(0);
    at::Tensor g_input = product({}, g, weights[j], kernels);
    if (j > 0) kernels.tanh_backward_(g_input, hidden[j - 1]);
    g = std::move(g_input);
  }
  return {g, grad_weights, grad_biases};
}

}  // namespace mlp
}  // namespace notmiwae_fast
