// CUDA kernels of the likelihood family: masked_normal_logprob, masked_bernoulli_logprob,
// masked_studentt_logprob, masked_poisson_logprob, selfmask_logprob,
// notmiwae_normal_terms, masked_categorical_logprob and their backward passes. The ops
// (notmiwae_fast/likelihood_ops.h, shared with the CPU) run one of two kernels,
// row_sums_kernel (forward) and row_grads_kernel (backward), with the op's operand layout
// and per-element term (notmiwae_fast/likelihood.h); the categorical op has its own two.
// float32, float64, float16 and bfloat16; half types compute and accumulate in float32
// (at::opmath_type).
//
// One block per (b, k) row (grid-stride over the B·K rows), its threads striding over
// the D features (the G columns of the categorical op) and reducing with
// cuda::block_sum. Per-feature gradients (W, b, df) are summed over rows with atomicAdd
// into an opmath-typed [D] buffer.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <type_traits>
#include <utility>

#include "launch.cuh"
#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/likelihood.h"
#include "notmiwae_fast/likelihood_ops.h"
#include "notmiwae_fast/math.h"
#include "reduce.cuh"

namespace notmiwae_fast {
namespace {

using namespace likelihood;  // the operand kinds (Row, Mask, Sample, Feature) and the terms

template <typename scalar_t>
using opmath_t = at::opmath_type<scalar_t>;

// N pointers, passed to a kernel by value.
template <typename T, size_t N>
struct Pointers {
  T* p[N > 0 ? N : 1];
};

// Element (b, d) / (i, d) / d of an operand of kind Kind, in acc_t: Row and Sample
// operands are scalar_t, the mask bool, features acc_t (see prepared_operand).
template <typename Kind, typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t load(const void* p, int64_t b, int64_t i, int64_t d, int64_t D) {
  if constexpr (std::is_same_v<Kind, Mask>) {
    return static_cast<acc_t>(static_cast<const bool*>(p)[b * D + d]);
  } else if constexpr (std::is_same_v<Kind, Row>) {
    return static_cast<acc_t>(static_cast<const scalar_t*>(p)[b * D + d]);
  } else if constexpr (std::is_same_v<Kind, Sample>) {
    return static_cast<acc_t>(static_cast<const scalar_t*>(p)[i * D + d]);
  } else {
    return static_cast<const acc_t*>(p)[d];
  }
}

// An op's operands, in the order of its layout.
template <typename scalar_t, typename L>
struct Operands;

template <typename scalar_t, typename... Kinds>
struct Operands<scalar_t, Layout<Kinds...>> {
  using acc_t = opmath_t<scalar_t>;
  const void* p[sizeof...(Kinds)];

  // Term's value at element d of row i = b·K + k.
  template <typename Term>
  __device__ acc_t value(int64_t b, int64_t i, int64_t d, int64_t D) const {
    return value<Term>(b, i, d, D, std::index_sequence_for<Kinds...>());
  }
  template <typename Term, size_t... I>
  __device__ acc_t value(int64_t b, int64_t i, int64_t d, int64_t D,
                         std::index_sequence<I...>) const {
    return Term::template value<math::LibM>(load<Kinds, scalar_t, acc_t>(p[I], b, i, d, D)...);
  }

  // Term's gradients at element d of row i, given the row's incoming gradients g.
  template <typename Term>
  __device__ auto grads(const acc_t (&g)[Term::kRowGrads], int64_t b, int64_t i, int64_t d,
                        int64_t D) const {
    return grads<Term>(g, b, i, d, D, std::make_index_sequence<Term::kRowGrads>(),
                       std::index_sequence_for<Kinds...>());
  }
  template <typename Term, size_t... G, size_t... I>
  __device__ auto grads(const acc_t (&g)[Term::kRowGrads], int64_t b, int64_t i, int64_t d,
                        int64_t D, std::index_sequence<G...>, std::index_sequence<I...>) const {
    return Term::template grads<math::LibM>(g[G]...,
                                            load<Kinds, scalar_t, acc_t>(p[I], b, i, d, D)...);
  }
};

// ------------------------------------------------------------------------------------
// The kernels: out[t][i] = Σ_d Terms[t]::value(operands at (i, d)); the gradients of Term
// per element (per-sample ones stored, per-feature ones added atomically to [D] sums).
// ------------------------------------------------------------------------------------
template <typename scalar_t, typename L, typename... Terms>
__global__ void row_sums_kernel(Operands<scalar_t, L> ops, int64_t rows, int64_t K, int64_t D,
                                Pointers<scalar_t, sizeof...(Terms)> out) {
  using acc_t = opmath_t<scalar_t>;
  constexpr size_t nT = sizeof...(Terms);
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    acc_t sum[nT] = {};
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      size_t t = 0;
      ((sum[t++] += ops.template value<Terms>(b, i, d, D)), ...);
    }
    for (int t = 0; t < nT; ++t) sum[t] = cuda::block_sum(sum[t]);
    if (threadIdx.x == 0)
      for (int t = 0; t < nT; ++t) out.p[t][i] = static_cast<scalar_t>(sum[t]);
  }
}

template <typename scalar_t, typename L, typename Term>
__global__ void row_grads_kernel(Operands<scalar_t, L> ops,
                                 Pointers<const scalar_t, Term::kRowGrads> grads, int64_t rows,
                                 int64_t K, int64_t D,
                                 Pointers<scalar_t, Term::kSampleGrads> sample_grads,
                                 Pointers<opmath_t<scalar_t>, Term::kFeatureGrads> feature_grads) {
  using acc_t = opmath_t<scalar_t>;
  constexpr int nS = Term::kSampleGrads, nF = Term::kFeatureGrads;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t b = i / K;
    acc_t g[Term::kRowGrads];
    for (int k = 0; k < Term::kRowGrads; ++k) g[k] = static_cast<acc_t>(grads.p[k][i]);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const auto r = ops.template grads<Term>(g, b, i, d, D);
      for (int s = 0; s < nS; ++s) sample_grads.p[s][i * D + d] = static_cast<scalar_t>(r.v[s]);
      // a zero adds nothing (the masked-out entries): no atomic for it
      for (int f = 0; f < nF; ++f)
        if (r.v[nS + f] != acc_t(0)) atomicAdd(feature_grads.p[f] + d, r.v[nS + f]);
    }
  }
}

// masked_categorical_logprob: out[i] = Σ_g (column g's term), and its gradient (every
// column's of row i), threads striding over the G columns.
template <typename scalar_t>
__global__ void categorical_sums_kernel(CategoricalColumns<scalar_t> columns, int64_t rows,
                                        scalar_t* out) {
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    opmath_t<scalar_t> sum = 0;
    for (int64_t g = threadIdx.x; g < columns.G; g += blockDim.x)
      sum += columns.template term<math::LibM>(i, g);
    sum = cuda::block_sum(sum);
    if (threadIdx.x == 0) out[i] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t>
__global__ void categorical_grads_kernel(CategoricalColumns<scalar_t> columns, const scalar_t* grad,
                                         int64_t rows, scalar_t* out) {
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const auto g_row = static_cast<opmath_t<scalar_t>>(grad[i]);
    for (int64_t g = threadIdx.x; g < columns.G; g += blockDim.x)
      columns.template term_grad<math::LibM>(g_row, i, g, out);
  }
}

// ------------------------------------------------------------------------------------
// The host drivers. Shapes come from the layout's first per-sample operand [B, K, D].
// ------------------------------------------------------------------------------------

template <typename scalar_t, typename L>
Operands<scalar_t, L> operand_pointers(const Tensors<L::kSize>& t) {
  Operands<scalar_t, L> ops;
  for (int k = 0; k < L::kSize; ++k) ops.p[k] = t[k].const_data_ptr();
  return ops;
}

// Launches a per-row kernel: one block of row_block_size(D) threads per row (at most 2^20
// blocks: the kernels stride over the rest).
template <typename Kernel, typename... Args>
void launch_rows(Kernel kernel, int64_t rows, int64_t D, const Args&... args) {
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(rows, 1), 1 << 20));
  kernel<<<blocks, cuda::row_block_size(D), 0, c10::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The CUDA backend of LikelihoodOps (notmiwae_fast/likelihood_ops.h).
struct CudaLikelihood {
  static void check_dtype(const at::Tensor& t, const char* name) {
    check_float_or_half(t, name, "CUDA");
  }

  // The forward: one [B, K] result per term.
  template <typename L, typename... Terms>
  static Tensors<sizeof...(Terms)> row_sums(const Tensors<L::kSize>& in) {
    constexpr int nT = sizeof...(Terms);
    const at::Tensor& ref = in[L::kReference];
    c10::cuda::CUDAGuard guard(ref.device());
    const int64_t B = ref.size(0), K = ref.size(1), D = ref.size(2);
    Tensors<nT> out = row_results<nT>(ref);
    if (B * K == 0) return out;
    const Tensors<L::kSize> ops =
        prepared_operands<L>(in, at::kBool, at::toOpMathType(ref.scalar_type()));
    NOTMIWAE_DISPATCH_CUDA(ref.scalar_type(), "likelihood_row_sums_cuda", [&] {
      Pointers<scalar_t, nT> o;
      for (int t = 0; t < nT; ++t) o.p[t] = out[t].template mutable_data_ptr<scalar_t>();
      launch_rows(row_sums_kernel<scalar_t, L, Terms...>, B * K, D,
                  operand_pointers<scalar_t, L>(ops), B * K, K, D, o);
    });
    return out;
  }

  // The backward: Term's per-sample gradients [B, K, D], then its per-feature ones [D].
  template <typename L, typename Term>
  static Tensors<Term::kSampleGrads + Term::kFeatureGrads> row_grads(
      const Tensors<Term::kRowGrads>& grads, const Tensors<L::kSize>& in) {
    constexpr int nG = Term::kRowGrads, nS = Term::kSampleGrads, nF = Term::kFeatureGrads;
    const at::Tensor& ref = in[L::kReference];
    c10::cuda::CUDAGuard guard(ref.device());
    const int64_t B = ref.size(0), K = ref.size(1), D = ref.size(2);
    Tensors<nS + nF> out = gradient_results<nS, nF>(ref);
    if (B * K * D == 0) return out;
    const at::ScalarType acc = at::toOpMathType(ref.scalar_type());
    const Tensors<L::kSize> ops = prepared_operands<L>(in, at::kBool, acc);
    Tensors<nG> g;
    for (int k = 0; k < nG; ++k) g[k] = grads[k].contiguous();
    Tensors<nF> sums;  // per-feature gradients, summed atomically in acc
    if (nF > 0)        // the order of the atomic additions varies from run to run
      at::globalContext().alertNotDeterministic("notmiwae_fast likelihood backward on CUDA");
    for (at::Tensor& s : sums) s = at::zeros({D}, ref.options().dtype(acc));
    NOTMIWAE_DISPATCH_CUDA(ref.scalar_type(), "likelihood_row_grads_cuda", [&] {
      using acc_t = opmath_t<scalar_t>;
      Pointers<const scalar_t, nG> gp;
      for (int k = 0; k < nG; ++k) gp.p[k] = g[k].template const_data_ptr<scalar_t>();
      Pointers<scalar_t, nS> sp;
      for (int s = 0; s < nS; ++s) sp.p[s] = out[s].template mutable_data_ptr<scalar_t>();
      Pointers<acc_t, nF> fp;
      for (int f = 0; f < nF; ++f) fp.p[f] = sums[f].template mutable_data_ptr<acc_t>();
      launch_rows(row_grads_kernel<scalar_t, L, Term>, B * K, D, operand_pointers<scalar_t, L>(ops),
                  gp, B * K, K, D, sp, fp);
    });
    for (int f = 0; f < nF; ++f) out[nS + f] = sums[f].to(ref.scalar_type());
    return out;
  }

  // The categorical columns' offsets (int64) on logits' device, copied from pinned memory
  // without waiting: a copy from pageable memory blocks the host until the GPU has caught
  // up, in every forward and backward of a mixed model.
  static at::Tensor device_offsets(c10::IntArrayRef offsets, const at::Tensor& logits) {
    return at::tensor(offsets).pin_memory().to(logits.options().dtype(at::kLong),
                                               /*non_blocking=*/true);
  }

  // masked_categorical_logprob's operands; `offsets` holds the offsets on the device.
  template <typename scalar_t>
  static CategoricalColumns<scalar_t> categorical_columns(const at::Tensor& x,
                                                          const at::Tensor& mask,
                                                          const at::Tensor& logits,
                                                          const at::Tensor& offsets) {
    return {x.const_data_ptr<scalar_t>(),
            mask.const_data_ptr<bool>(),
            logits.const_data_ptr<scalar_t>(),
            offsets.const_data_ptr<int64_t>(),
            logits.size(1),
            x.size(1),
            logits.size(2)};
  }

  static at::Tensor categorical_sums(const at::Tensor& x, const at::Tensor& mask,
                                     const at::Tensor& logits, c10::IntArrayRef offsets) {
    c10::cuda::CUDAGuard guard(logits.device());
    at::Tensor out = at::empty({logits.size(0), logits.size(1)}, logits.options());
    if (out.numel() == 0) return out;
    const at::Tensor off = device_offsets(offsets, logits);
    NOTMIWAE_DISPATCH_CUDA(logits.scalar_type(), "categorical_sums_cuda", [&] {
      launch_rows(categorical_sums_kernel<scalar_t>, out.numel(), x.size(1),
                  categorical_columns<scalar_t>(x, mask, logits, off), out.numel(),
                  out.mutable_data_ptr<scalar_t>());
    });
    return out;
  }

  static at::Tensor categorical_grads(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& mask, const at::Tensor& logits,
                                      c10::IntArrayRef offsets) {
    c10::cuda::CUDAGuard guard(logits.device());
    at::Tensor out = at::empty(logits.sizes(), logits.options());
    if (out.numel() == 0) return out;
    const at::Tensor off = device_offsets(offsets, logits);
    NOTMIWAE_DISPATCH_CUDA(logits.scalar_type(), "categorical_grads_cuda", [&] {
      launch_rows(categorical_grads_kernel<scalar_t>, grad.numel(), x.size(1),
                  categorical_columns<scalar_t>(x, mask, logits, off),
                  grad.const_data_ptr<scalar_t>(), grad.numel(), out.mutable_data_ptr<scalar_t>());
    });
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CUDA, m) { register_likelihood_kernels<CudaLikelihood>(m); }

}  // namespace notmiwae_fast
