// CPU kernels of the likelihood family: masked_normal_logprob, masked_bernoulli_logprob,
// masked_studentt_logprob, masked_poisson_logprob, selfmask_logprob,
// notmiwae_normal_terms, masked_categorical_logprob and their backward passes. The ops
// (notmiwae_fast/likelihood_ops.h, shared with CUDA) run one of the two drivers of
// CpuLikelihood, row_sums (forward) and row_grads (backward), with the op's operand
// layout and per-element term (notmiwae_fast/likelihood.h), in tiles
// (likelihood_tiles.h); the categorical op has its own two, a loop over (row, column).
//
// Per-element math runs in at::opmath_type (float for float32) and every sum over D or
// over rows accumulates in at::acc_type (float64 for float32). The element loops are
// branch-free and vectorised (see vectorize.h, included first).
#include "vectorize.h"

#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "likelihood_tiles.h"
#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/likelihood.h"
#include "notmiwae_fast/likelihood_ops.h"
#include "vec_math.h"

namespace notmiwae_fast {
namespace {

using namespace likelihood;  // the operand kinds (Row, Mask, Sample, Feature) and the terms
using cpu::kTile;
using cpu::Tile;

// The elementary functions of the terms (vectorisable polynomials for float).
using F = cpu::VecMath;

// ------------------------------------------------------------------------------------
// Element loops over one tile: every pointer is an array of the tile's t.n elements, in
// the order of the term's arguments. The arrays never overlap (ivdep: GCC vectorises
// without runtime alias checks); the terms are branch-free. The values are added up per
// row, the per-feature gradients folded over the tile's rows, in the same clones.
// ------------------------------------------------------------------------------------

// Σ v[0..n) in acc_t over eight independent lanes (vectorisable, short dependency chains).
template <typename acc_t, typename T>
inline acc_t lane_sum(const T* v, int64_t n) {
  acc_t lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += static_cast<acc_t>(v[j + l]);
  acc_t sum = 0;
  for (; j < n; ++j) sum += static_cast<acc_t>(v[j]);
  for (int l = 0; l < 8; ++l) sum += lanes[l];
  return sum;
}

// sums[r] += Σ_d Term::value(in[0][j], in[1][j], …), j = r·width + d, over the tile's rows.
template <typename Term, typename T, typename acc_t, size_t N, size_t... I>
NOTMIWAE_VECTOR_CLONES NOTMIWAE_FLATTEN void tile_row_sums(const Tile& t,
                                                           const std::array<const T*, N>& in,
                                                           acc_t* sums, std::index_sequence<I...>) {
  const T* p[N] = {in[I]...};
  alignas(64) T values[kTile];
#pragma GCC ivdep
  for (int64_t j = 0; j < t.n; ++j) values[j] = Term::template value<F>(p[I][j]...);
  for (int64_t r = 0; r < t.rows; ++r) sums[r] += lane_sum<acc_t>(values + r * t.width, t.width);
}

// Term::grads(g…, in[0][j], …) of each element j, g the gradients g[k][r] of the [B, K]
// results at the element's row r: the per-sample gradients into out[0 .. nS)[j], the
// per-feature ones added to feature_sums[f][d] (d = j mod width).
template <typename Term, typename T, typename acc_t, size_t nG, size_t N, size_t nS, size_t nF,
          size_t... G, size_t... I, size_t... O>
NOTMIWAE_VECTOR_CLONES NOTMIWAE_FLATTEN void tile_grads(
    const Tile& t, const std::array<const T*, nG>& g, const std::array<const T*, N>& in,
    const std::array<T*, nS>& out, const std::array<acc_t*, nF>& feature_sums,
    std::index_sequence<G...>, std::index_sequence<I...>, std::index_sequence<O...>) {
  alignas(64) T g_elements[nG][kTile];
  for (size_t k = 0; k < nG; ++k)
    for (int64_t r = 0; r < t.rows; ++r) std::fill_n(g_elements[k] + r * t.width, t.width, g[k][r]);
  const T* p[N] = {in[I]...};
  alignas(64) T feature_values[nF + 1][kTile];
  T* o[nS + nF + 1];
  for (size_t s = 0; s < nS; ++s) o[s] = out[s];
  for (size_t f = 0; f < nF; ++f) o[nS + f] = feature_values[f];
#pragma GCC ivdep
  for (int64_t j = 0; j < t.n; ++j) {
    const auto r = Term::template grads<F>(g_elements[G][j]..., p[I][j]...);
    ((o[O][j] = r.v[O]), ...);
  }
  for (size_t f = 0; f < nF; ++f)
    for (int64_t r = 0; r < t.rows; ++r)
      for (int64_t d = 0; d < t.width; ++d)
        feature_sums[f][d] += static_cast<acc_t>(feature_values[f][r * t.width + d]);
}

// ------------------------------------------------------------------------------------
// Operands.
// ------------------------------------------------------------------------------------

// One parallel task's view of an op's operands: each one's array over a tile (per-sample
// ones in place, rows and features expanded into the task's buffers).
template <typename scalar_t, typename L>
class TileOperands;

template <typename scalar_t, typename... Kinds>
class TileOperands<scalar_t, Layout<Kinds...>> {
 public:
  static constexpr int N = sizeof...(Kinds);
  using Tiler = cpu::Tiler<scalar_t, scalar_t>;
  using Arrays = std::array<const scalar_t*, N>;

  TileOperands(const Tiler& tiler, const Tensors<N>& tensors) : tiler_(tiler) {
    constexpr bool is_feature[N] = {std::is_same_v<Kinds, Feature>...};
    for (int k = 0; k < N; ++k) {
      data_[k] = tensors[k].template const_data_ptr<scalar_t>();
      if (is_feature[k]) features_[k] = tiler.expand_features(data_[k]);
    }
  }

  // The operands' arrays over tile t.
  Arrays arrays(const Tile& t) { return arrays(t, std::make_index_sequence<N>()); }

 private:
  template <size_t... I>
  Arrays arrays(const Tile& t, std::index_sequence<I...>) {
    return {array<Kinds>(I, t)...};
  }

  template <typename Kind>
  const scalar_t* array(size_t k, const Tile& t) {
    if constexpr (std::is_same_v<Kind, Sample>) {
      return tiler_.sample(data_[k], t);
    } else if constexpr (std::is_same_v<Kind, Feature>) {
      return tiler_.feature(features_[k].data(), t);
    } else {  // Row, Mask
      return tiler_.data(data_[k], t, rows_[k]);
    }
  }

  const Tiler& tiler_;
  const scalar_t* data_[N];
  std::vector<scalar_t> features_[N];
  alignas(64) scalar_t rows_[N][kTile];
};

// ------------------------------------------------------------------------------------
// The two drivers. Shapes come from the layout's first per-sample operand [B, K, D].
// ------------------------------------------------------------------------------------

// The CPU backend of LikelihoodOps (notmiwae_fast/likelihood_ops.h).
struct CpuLikelihood {
  static void check_dtype(const at::Tensor& t, const char* name) { check_cpu_dtype(t, name); }

  // The forward: one [B, K] result per term, out[i] = Σ_d Term::value(operands at (i, d)).
  template <typename L, typename... Terms>
  static Tensors<sizeof...(Terms)> row_sums(const Tensors<L::kSize>& in) {
    constexpr int nT = sizeof...(Terms);
    const at::Tensor& ref = in[L::kReference];
    const int64_t B = ref.size(0), K = ref.size(1), D = ref.size(2);
    Tensors<nT> out = row_results<nT>(ref);
    if (B * K == 0) return out;
    const Tensors<L::kSize> ops = prepared_operands<L>(in, ref.scalar_type(), ref.scalar_type());
    AT_DISPATCH_FLOATING_TYPES(ref.scalar_type(), "likelihood_row_sums_cpu", [&] {
      using acc_t = at::acc_type<scalar_t, false>;
      std::array<scalar_t*, nT> o;
      for (int t = 0; t < nT; ++t) o[t] = out[t].template mutable_data_ptr<scalar_t>();
      cpu::parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
        TileOperands<scalar_t, L> operands(tiler, ops);
        std::vector<acc_t> sums[nT];
        for (auto& s : sums) s.assign(i1 - i0, acc_t(0));
        tiler.for_each(i0, i1, [&](const Tile& tile) {
          const auto in_tile = operands.arrays(tile);
          int t = 0;
          (tile_row_sums<Terms>(tile, in_tile, sums[t++].data() + tile.r0 - i0,
                                std::make_index_sequence<L::kSize>()),
           ...);
        });
        for (int t = 0; t < nT; ++t)
          for (int64_t r = 0; r < i1 - i0; ++r) o[t][i0 + r] = static_cast<scalar_t>(sums[t][r]);
      });
    });
    return out;
  }

  // The backward: Term's per-sample gradients [B, K, D], then its per-feature ones [D]
  // (summed over rows), given the gradients of the forward's [B, K] results.
  template <typename L, typename Term>
  static Tensors<Term::kSampleGrads + Term::kFeatureGrads> row_grads(
      const Tensors<Term::kRowGrads>& grads_, const Tensors<L::kSize>& in) {
    constexpr int nG = Term::kRowGrads, nS = Term::kSampleGrads, nF = Term::kFeatureGrads;
    const at::Tensor& ref = in[L::kReference];
    const int64_t B = ref.size(0), K = ref.size(1), D = ref.size(2);
    Tensors<nS + nF> out = gradient_results<nS, nF>(ref);
    if (B * K * D == 0) return out;
    const Tensors<L::kSize> ops = prepared_operands<L>(in, ref.scalar_type(), ref.scalar_type());
    Tensors<nG> grads;
    for (int g = 0; g < nG; ++g) grads[g] = grads_[g].contiguous();
    AT_DISPATCH_FLOATING_TYPES(ref.scalar_type(), "likelihood_row_grads_cpu", [&] {
      using acc_t = at::acc_type<scalar_t, false>;
      std::array<const scalar_t*, nG> gp;
      for (int g = 0; g < nG; ++g) gp[g] = grads[g].template const_data_ptr<scalar_t>();
      std::array<scalar_t*, nS> sp;
      for (int s = 0; s < nS; ++s) sp[s] = out[s].template mutable_data_ptr<scalar_t>();
      cpu::FeatureSums<acc_t> sums(nF, D);
      cpu::parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
        TileOperands<scalar_t, L> operands(tiler, ops);
        std::array<acc_t*, nF> f_sums;
        for (int f = 0; f < nF; ++f) f_sums[f] = sums.local(f);
        tiler.for_each(i0, i1, [&](const Tile& tile) {
          std::array<const scalar_t*, nG> g_arr;
          for (int g = 0; g < nG; ++g) g_arr[g] = gp[g] + tile.r0;
          std::array<scalar_t*, nS> s_arr;
          for (int s = 0; s < nS; ++s) s_arr[s] = tiler.sample(sp[s], tile);
          std::array<acc_t*, nF> f_arr;
          for (int f = 0; f < nF; ++f) f_arr[f] = f_sums[f] + tile.d0;
          tile_grads<Term>(tile, g_arr, operands.arrays(tile), s_arr, f_arr,
                           std::make_index_sequence<nG>(), std::make_index_sequence<L::kSize>(),
                           std::make_index_sequence<nS + nF>());
        });
      });
      for (int f = 0; f < nF; ++f) out[nS + f] = sums.total(f, ref.options());
    });
    return out;
  }

  // masked_categorical_logprob's operands (offsets in host memory).
  template <typename scalar_t>
  static CategoricalColumns<scalar_t> categorical_columns(const at::Tensor& x,
                                                          const at::Tensor& mask,
                                                          const at::Tensor& logits,
                                                          c10::IntArrayRef offsets) {
    return {x.const_data_ptr<scalar_t>(),
            mask.const_data_ptr<bool>(),
            logits.const_data_ptr<scalar_t>(),
            offsets.data(),
            logits.size(1),
            x.size(1),
            logits.size(2)};
  }

  // masked_categorical_logprob: out[i] = Σ_g (column g's term), rows in parallel, the
  // sum over columns in acc_t.
  static at::Tensor categorical_sums(const at::Tensor& x, const at::Tensor& mask,
                                     const at::Tensor& logits, c10::IntArrayRef offsets) {
    at::Tensor out = at::empty({logits.size(0), logits.size(1)}, logits.options());
    AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "categorical_sums_cpu", [&] {
      const auto columns = categorical_columns<scalar_t>(x, mask, logits, offsets);
      scalar_t* o = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, out.numel(), cpu::rows_per_task(columns.width),
                       [&](int64_t i0, int64_t i1) {
                         for (int64_t i = i0; i < i1; ++i) {
                           at::acc_type<scalar_t, false> sum = 0;
                           for (int64_t g = 0; g < columns.G; ++g)
                             sum += columns.template term<F>(i, g);
                           o[i] = static_cast<scalar_t>(sum);
                         }
                       });
    });
    return out;
  }

  // Its gradient [B, K, T]: every column's of every row.
  static at::Tensor categorical_grads(const at::Tensor& grad, const at::Tensor& x,
                                      const at::Tensor& mask, const at::Tensor& logits,
                                      c10::IntArrayRef offsets) {
    at::Tensor out = at::empty(logits.sizes(), logits.options());
    AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "categorical_grads_cpu", [&] {
      const auto columns = categorical_columns<scalar_t>(x, mask, logits, offsets);
      const scalar_t* g_row = grad.const_data_ptr<scalar_t>();
      scalar_t* o = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, grad.numel(), cpu::rows_per_task(columns.width),
                       [&](int64_t i0, int64_t i1) {
                         for (int64_t i = i0; i < i1; ++i)
                           for (int64_t g = 0; g < columns.G; ++g)
                             columns.template term_grad<F>(g_row[i], i, g, o);
                       });
    });
    return out;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CPU, m) { register_likelihood_kernels<CpuLikelihood>(m); }

}  // namespace notmiwae_fast
