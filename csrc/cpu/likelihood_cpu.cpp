// CPU kernels of the likelihood family: masked_normal_logprob, masked_bernoulli_logprob,
// masked_studentt_logprob, selfmask_logprob, notmiwae_normal_terms and their backward
// passes. The per-element math is in notmiwae_fast/math.h (shared with CUDA).
//
// Work is cut into tiles of at most kTile elements of the flattened [B·K, D] problem:
// several whole rows when D is small (tabular data), a segment of one row when D is
// large (images). An element kernel (*_values / *_grads below) runs over one tile; its
// operands are contiguous arrays of the tile's length: per-sample tensors are used in
// place, x / mask rows, per-feature parameters and per-row gradients are expanded into
// small thread-local buffers when a tile spans several rows. Values are then added up
// per row, per-feature gradients folded into per-thread [D] sums. Tiles run in
// parallel over the B·K rows (at::parallel_for).
//
// Per-element math runs in at::opmath_type (float for float32) and every sum over D or
// over rows accumulates in at::acc_type (float64 for float32). Entries under mask = 0
// are removed by selection (never by multiplying with 0), so whatever x holds there
// (NaN, ±inf) cannot reach a value or a gradient.
//
// The element kernels are branch-free and vectorised (see vectorize.h, included first).
#include "vectorize.h"

#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/OpMathType.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/likelihood.h"
#include "notmiwae_fast/math.h"
#include "parallel.h"
#include "vec_math.h"

namespace notmiwae_fast {
namespace {

// Elements per tile (see above): the expanded operands and the per-element values of a
// tile live in stack buffers of this size, in L1.
constexpr int64_t kTile = 256;

// The elementary functions of the formulas (vectorisable polynomials for float).
using F = cpu::VecMath;

// Σ v[0..n) in acc_t over eight independent lanes (vectorisable, short dependency chains).
template <typename acc_t, typename T>
acc_t lane_sum(const T* __restrict v, int64_t n) {
  acc_t lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += static_cast<acc_t>(v[j + l]);
  acc_t sum = 0;
  for (; j < n; ++j) sum += static_cast<acc_t>(v[j]);
  for (int l = 0; l < 8; ++l) sum += lanes[l];
  return sum;
}

// The mask as 0/1 values of the data's dtype (nonzero = observed), contiguous: the
// loops select with it; same-width loads keep them vectorisable.
at::Tensor mask_values(const at::Tensor& mask, at::ScalarType dtype) {
  return mask_as_bool(mask).to(dtype);
}

// Runs body(i0, i1) over the rows [0, rows) of length D in parallel.
template <typename Body>
void parallel_rows(int64_t rows, int64_t D, const Body& body) {
  at::parallel_for(0, rows, cpu::rows_per_task(D), body);
}

// Per-thread partial sums of `n` per-feature gradients ([D] each), added up at the end,
// so that the parallel loop over rows needs no atomics and stays deterministic for a
// fixed thread count.
template <typename acc_t>
class FeatureSums {
 public:
  FeatureSums(int64_t n, int64_t D)
      : n_(n), D_(D), buf_(static_cast<size_t>(at::get_num_threads() * n * D), acc_t(0)) {}

  // The calling thread's buffer of gradient `which` (call inside the parallel loop).
  acc_t* local(int64_t which) {
    return buf_.data() + (static_cast<int64_t>(at::get_thread_num()) * n_ + which) * D_;
  }

  // Gradient `which` summed over threads, as a [D] tensor of `options`' dtype.
  at::Tensor total(int64_t which, const at::TensorOptions& options) const {
    at::Tensor out = at::empty({D_}, options);
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "feature_sums", [&] {
      scalar_t* o = out.mutable_data_ptr<scalar_t>();
      const int64_t threads = static_cast<int64_t>(buf_.size()) / std::max<int64_t>(1, n_ * D_);
      for (int64_t d = 0; d < D_; ++d) {
        acc_t s = 0;
        for (int64_t t = 0; t < threads; ++t) s += buf_[(t * n_ + which) * D_ + d];
        o[d] = static_cast<scalar_t>(s);
      }
    });
    return out;
  }

 private:
  int64_t n_, D_;
  std::vector<acc_t> buf_;
};

// ------------------------------------------------------------------------------------
// Element kernels over one tile of n elements. Every pointer is a contiguous array of n
// values and __restrict (they never overlap), which lets GCC vectorise the loops with
// no runtime alias checks; every loop body is branch-free: both sides of each select
// are computed first, and x is loaded unconditionally.
// ------------------------------------------------------------------------------------
template <typename scalar_t, typename math_t>
NOTMIWAE_VECTOR_CLONES void normal_values(int64_t n, const scalar_t* __restrict x,
                                     const scalar_t* __restrict mask,
                                     const scalar_t* __restrict loc,
                                     const scalar_t* __restrict scale, math_t* __restrict out) {
  for (int64_t j = 0; j < n; ++j) {
    const bool m = mask[j] != scalar_t(0);
    const math_t loc_j = loc[j], x_raw = x[j];
    const math_t x_j = m ? x_raw : loc_j;
    const math_t v = math::normal_log_density<F>(x_j, loc_j, static_cast<math_t>(scale[j]));
    out[j] = m ? v : math_t(0);
  }
}

template <typename scalar_t, typename math_t>
NOTMIWAE_VECTOR_CLONES void normal_grads(int64_t n, const math_t* __restrict g,
                                    const scalar_t* __restrict x,
                                    const scalar_t* __restrict mask,
                                    const scalar_t* __restrict loc,
                                    const scalar_t* __restrict scale,
                                    scalar_t* __restrict grad_loc,
                                    scalar_t* __restrict grad_scale) {
  for (int64_t j = 0; j < n; ++j) {
    const bool m = mask[j] != scalar_t(0);
    const math_t loc_j = loc[j], x_raw = x[j];
    const math_t x_j = m ? x_raw : loc_j;
    const auto dn = math::normal_log_density_grad(x_j, loc_j, static_cast<math_t>(scale[j]));
    const math_t gl = g[j] * dn.loc, gs = g[j] * dn.scale;
    grad_loc[j] = static_cast<scalar_t>(m ? gl : math_t(0));
    grad_scale[j] = static_cast<scalar_t>(m ? gs : math_t(0));
  }
}

template <typename scalar_t, typename math_t>
NOTMIWAE_VECTOR_CLONES void bernoulli_values(int64_t n, const scalar_t* __restrict x,
                                        const scalar_t* __restrict mask,
                                        const scalar_t* __restrict logits,
                                        math_t* __restrict out) {
  for (int64_t j = 0; j < n; ++j) {
    const bool m = mask[j] != scalar_t(0);
    const math_t x_raw = x[j];
    const math_t x_j = m ? x_raw : math_t(0);
    const math_t v = math::bernoulli_log_prob<F>(x_j, static_cast<math_t>(logits[j]));
    out[j] = m ? v : math_t(0);
  }
}

template <typename scalar_t, typename math_t>
NOTMIWAE_VECTOR_CLONES void bernoulli_grads(int64_t n, const math_t* __restrict g,
                                       const scalar_t* __restrict x,
                                       const scalar_t* __restrict mask,
                                       const scalar_t* __restrict logits,
                                       scalar_t* __restrict grad_logits) {
  for (int64_t j = 0; j < n; ++j) {
    const bool m = mask[j] != scalar_t(0);
    const math_t x_raw = x[j];
    const math_t x_j = m ? x_raw : math_t(0);
    const math_t dl = math::bernoulli_log_prob_dlogit<F>(x_j, static_cast<math_t>(logits[j]));
    const math_t gl = g[j] * dl;
    grad_logits[j] = static_cast<scalar_t>(m ? gl : math_t(0));
  }
}

// log_norm / dlog_norm: the per-feature c(df) / c'(df) (studentt_log_norm / _dlog_norm).
template <typename scalar_t, typename math_t>
NOTMIWAE_VECTOR_CLONES void studentt_values(int64_t n, const scalar_t* __restrict x,
                                       const scalar_t* __restrict mask,
                                       const scalar_t* __restrict loc,
                                       const scalar_t* __restrict scale,
                                       const math_t* __restrict df,
                                       const math_t* __restrict log_norm,
                                       math_t* __restrict out) {
  for (int64_t j = 0; j < n; ++j) {
    const bool m = mask[j] != scalar_t(0);
    const math_t loc_j = loc[j], x_raw = x[j];
    const math_t x_j = m ? x_raw : loc_j;
    const math_t v = math::studentt_log_density<F>(x_j, loc_j, static_cast<math_t>(scale[j]),
                                                   df[j], log_norm[j]);
    out[j] = m ? v : math_t(0);
  }
}

template <typename scalar_t, typename math_t>
NOTMIWAE_VECTOR_CLONES void studentt_grads(int64_t n, const math_t* __restrict g,
                                      const scalar_t* __restrict x,
                                      const scalar_t* __restrict mask,
                                      const scalar_t* __restrict loc,
                                      const scalar_t* __restrict scale,
                                      const math_t* __restrict df,
                                      const math_t* __restrict dlog_norm,
                                      scalar_t* __restrict grad_loc,
                                      scalar_t* __restrict grad_scale,
                                      math_t* __restrict grad_df) {
  for (int64_t j = 0; j < n; ++j) {
    const bool m = mask[j] != scalar_t(0);
    const math_t loc_j = loc[j], x_raw = x[j];
    const math_t x_j = m ? x_raw : loc_j;
    const auto dt = math::studentt_log_density_grad<F>(
        x_j, loc_j, static_cast<math_t>(scale[j]), df[j], dlog_norm[j]);
    const math_t gl = g[j] * dt.loc, gs = g[j] * dt.scale, gdf = g[j] * dt.df;
    grad_loc[j] = static_cast<scalar_t>(m ? gl : math_t(0));
    grad_scale[j] = static_cast<scalar_t>(m ? gs : math_t(0));
    grad_df[j] = m ? gdf : math_t(0);
  }
}

template <typename scalar_t, typename math_t>
NOTMIWAE_VECTOR_CLONES void selfmask_values(int64_t n, const scalar_t* __restrict x_full,
                                       const scalar_t* __restrict mask,
                                       const math_t* __restrict W,
                                       const math_t* __restrict bias,
                                       math_t* __restrict out) {
  for (int64_t j = 0; j < n; ++j) {
    const math_t l = math::selfmask_logit(static_cast<math_t>(x_full[j]), W[j], bias[j]);
    out[j] = math::bernoulli_log_prob<F>(static_cast<math_t>(mask[j]), l);
  }
}

template <typename scalar_t, typename math_t>
NOTMIWAE_VECTOR_CLONES void selfmask_grads(int64_t n, const math_t* __restrict g,
                                      const scalar_t* __restrict x_full,
                                      const scalar_t* __restrict mask,
                                      const math_t* __restrict W,
                                      const math_t* __restrict bias,
                                      scalar_t* __restrict grad_x,
                                      math_t* __restrict grad_W,
                                      math_t* __restrict grad_b) {
  for (int64_t j = 0; j < n; ++j) {
    const math_t x_j = x_full[j], w = W[j], c = bias[j];
    const math_t l = math::selfmask_logit(x_j, w, c);
    const math_t dl = g[j] * math::bernoulli_log_prob_dlogit<F>(static_cast<math_t>(mask[j]), l);
    grad_x[j] = static_cast<scalar_t>(-w * dl);
    grad_W[j] = -(x_j - c) * dl;
    grad_b[j] = w * dl;
  }
}

// The missing-process term of notmiwae_normal_terms, x̂ = mask ? x : loc + scale·eps
// kept in a register (its observation term is normal_values; two loops over the
// tile, which stays in L1, vectorise where one fused loop does not).
template <typename scalar_t, typename math_t>
NOTMIWAE_VECTOR_CLONES void notmiwae_missing_values(int64_t n, const scalar_t* __restrict x,
                                               const scalar_t* __restrict mask,
                                               const scalar_t* __restrict loc,
                                               const scalar_t* __restrict scale,
                                               const scalar_t* __restrict eps,
                                               const math_t* __restrict W,
                                               const math_t* __restrict bias,
                                               math_t* __restrict out) {
  for (int64_t j = 0; j < n; ++j) {
    const math_t s = mask[j];
    const math_t x_raw = x[j];
    const math_t x_sample = loc[j] + scale[j] * static_cast<math_t>(eps[j]);
    const math_t x_hat = s != math_t(0) ? x_raw : x_sample;
    out[j] = math::bernoulli_log_prob<F>(s, math::selfmask_logit(x_hat, W[j], bias[j]));
  }
}

// Gradients, with g_o, g_m the gradients of the two [B, K] results at the element's row,
// ℓ the self-masking logit of x̂ and δ = g_m · ∂/∂ℓ log Bernoulli(s; σ(ℓ)):
//   observed (s = 1):  d loc = g_o ∂_loc log N,   d scale = g_o ∂_scale log N
//   missing  (s = 0):  d loc = δ · (−W),           d scale = δ · (−W) · eps
//   every feature:     d W  = δ · (−(x̂ − b)),     d b     = δ · W.
template <typename scalar_t, typename math_t>
NOTMIWAE_VECTOR_CLONES void notmiwae_grads(int64_t n, const math_t* __restrict g_obs,
                                      const math_t* __restrict g_miss,
                                      const scalar_t* __restrict x,
                                      const scalar_t* __restrict mask,
                                      const scalar_t* __restrict loc,
                                      const scalar_t* __restrict scale,
                                      const scalar_t* __restrict eps,
                                      const math_t* __restrict W,
                                      const math_t* __restrict bias,
                                      scalar_t* __restrict grad_loc,
                                      scalar_t* __restrict grad_scale,
                                      math_t* __restrict grad_W, math_t* __restrict grad_b) {
  for (int64_t j = 0; j < n; ++j) {
    const math_t s = mask[j];
    const bool m = s != math_t(0);
    const math_t loc_j = loc[j], scale_j = scale[j], eps_j = eps[j], w = W[j], c = bias[j];
    const math_t x_raw = x[j];
    const math_t x_j = m ? x_raw : loc_j;
    const auto dn = math::normal_log_density_grad(x_j, loc_j, scale_j);
    const math_t x_sample = loc_j + scale_j * eps_j;
    const math_t x_hat = m ? x_j : x_sample;
    const math_t l = math::selfmask_logit(x_hat, w, c);
    const math_t delta = g_miss[j] * math::bernoulli_log_prob_dlogit<F>(s, l);
    const math_t d_x_hat = -w * delta;
    const math_t gl_obs = g_obs[j] * dn.loc, gs_obs = g_obs[j] * dn.scale,
                 gs_miss = d_x_hat * eps_j;
    grad_loc[j] = static_cast<scalar_t>(m ? gl_obs : d_x_hat);
    grad_scale[j] = static_cast<scalar_t>(m ? gs_obs : gs_miss);
    grad_W[j] = -(x_hat - c) * delta;
    grad_b[j] = w * delta;
  }
}

// ------------------------------------------------------------------------------------
// Tiles of the flattened [B·K, D] problem.
// ------------------------------------------------------------------------------------
// A tile: rows [r0, r0 + rows) whole (rows > 1, d0 = 0, n = rows·D) or a segment
// [d0, d0 + n) of row r0 (rows = 1).
struct Tile {
  int64_t r0, rows, d0, n;
};

// Thread-local operands of the tiles of one parallel task: walks the task's rows in
// tiles and lays out the broadcast operands ([B, D] rows, [D] features, [B, K] per-row
// gradients) as arrays matching the tile's elements.
template <typename scalar_t, typename math_t>
class Tiler {
 public:
  Tiler(int64_t K, int64_t D)
      : K_(K), D_(D), rows_per_tile_(D >= kTile ? 1 : kTile / std::max<int64_t>(D, 1)) {}

  // Calls fn(tile) for every tile of the rows [i0, i1), in order.
  template <typename Fn>
  void for_each(int64_t i0, int64_t i1, const Fn& fn) const {
    if (rows_per_tile_ == 1) {
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t d0 = 0; d0 < D_; d0 += kTile) fn(Tile{i, 1, d0, std::min(kTile, D_ - d0)});
    } else {
      for (int64_t r0 = i0; r0 < i1; r0 += rows_per_tile_) {
        const int64_t rows = std::min(rows_per_tile_, i1 - r0);
        fn(Tile{r0, rows, 0, rows * D_});
      }
    }
  }

  // A [B, K, D] tensor's elements of the tile (in place).
  template <typename T>
  const T* sample(const T* p, const Tile& t) const {
    return p + t.r0 * D_ + t.d0;
  }
  template <typename T>
  T* sample(T* p, const Tile& t) const {
    return p + t.r0 * D_ + t.d0;
  }

  // A [B, D] tensor's rows b = r / K under the tile's rows (copied into buf when the
  // tile spans several rows).
  const scalar_t* data(const scalar_t* p, const Tile& t, scalar_t* buf) const {
    if (t.rows == 1) return p + (t.r0 / K_) * D_ + t.d0;
    for (int64_t r = 0; r < t.rows; ++r)
      std::copy_n(p + ((t.r0 + r) / K_) * D_, D_, buf + r * D_);
    return buf;
  }

  // A [D] per-feature parameter in math_t, repeated for rows_per_tile rows; `features`
  // is filled once by expand_features.
  const math_t* feature(const math_t* features, const Tile& t) const { return features + t.d0; }
  template <typename T>
  std::vector<math_t> expand_features(const T* p) const {
    std::vector<math_t> out(static_cast<size_t>(rows_per_tile_ * D_));
    for (int64_t r = 0; r < rows_per_tile_; ++r)
      for (int64_t d = 0; d < D_; ++d) out[r * D_ + d] = static_cast<math_t>(p[d]);
    return out;
  }

  // A [B, K] per-row gradient, one value per element of the tile, into buf.
  const math_t* per_row(const scalar_t* g, const Tile& t, math_t* buf) const {
    const int64_t width = t.rows == 1 ? t.n : D_;
    for (int64_t r = 0; r < t.rows; ++r)
      std::fill_n(buf + r * width, width, static_cast<math_t>(g[t.r0 + r]));
    return buf;
  }

  // Adds the tile's per-element values up per row into sums[r − i0].
  template <typename acc_t>
  void add_rows(const Tile& t, const math_t* values, int64_t i0, acc_t* sums) const {
    const int64_t width = t.rows == 1 ? t.n : D_;
    for (int64_t r = 0; r < t.rows; ++r)
      sums[t.r0 + r - i0] += lane_sum<acc_t>(values + r * width, width);
  }

  // Folds the tile's per-element gradient of a per-feature parameter into acc [D].
  template <typename acc_t>
  void fold_features(const Tile& t, const math_t* values, acc_t* acc) const {
    const int64_t width = t.rows == 1 ? t.n : D_;
    for (int64_t r = 0; r < t.rows; ++r)
      for (int64_t d = 0; d < width; ++d)
        acc[t.d0 + d] += static_cast<acc_t>(values[r * width + d]);
  }

 private:
  int64_t K_, D_, rows_per_tile_;
};

// Runs fn(tiler, i0, i1) over the B·K rows in parallel (tasks of about cpu::kGrainElements).
template <typename scalar_t, typename Fn>
void parallel_tiles(int64_t B, int64_t K, int64_t D, const Fn& fn) {
  using math_t = at::opmath_type<scalar_t>;
  const Tiler<scalar_t, math_t> tiler(K, D);
  parallel_rows(B * K, D, [&](int64_t i0, int64_t i1) { fn(tiler, i0, i1); });
}

// Writes per-row sums (acc_t) of a task's rows into out[i0, i1).
template <typename scalar_t, typename acc_t>
void store_rows(const std::vector<acc_t>& sums, int64_t i0, scalar_t* out) {
  for (size_t r = 0; r < sums.size(); ++r)
    out[i0 + static_cast<int64_t>(r)] = static_cast<scalar_t>(sums[r]);
}

// ------------------------------------------------------------------------------------
// Operators: checks, contiguous inputs, the parallel loop over tiles.
// ------------------------------------------------------------------------------------
at::Tensor masked_normal_logprob_cpu(const at::Tensor& x_, const at::Tensor& mask_,
                                     const at::Tensor& loc_, const at::Tensor& scale_) {
  check_location_scale(x_, mask_, loc_, scale_);
  check_cpu_dtype(x_, "x");
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  at::Tensor out = at::empty({B, K}, loc_.options());
  if (B * K == 0) return out;
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_normal_logprob_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
      scalar_t xt[kTile], mt[kTile];
      math_t vals[kTile];
      std::vector<acc_t> sums(i1 - i0, acc_t(0));
      tiler.for_each(i0, i1, [&](const Tile& t) {
        normal_values(t.n, tiler.data(xp, t, xt), tiler.data(mp, t, mt), tiler.sample(lp, t),
                      tiler.sample(sp, t), vals);
        tiler.add_rows(t, vals, i0, sums.data());
      });
      store_rows(sums, i0, o);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> masked_normal_logprob_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& mask_,
    const at::Tensor& loc_, const at::Tensor& scale_) {
  check_location_scale(x_, mask_, loc_, scale_);
  check_cpu_dtype(x_, "x");
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  check_row_grad(grad_, "grad", loc_, "loc", B, K);
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0) return {grad_loc, grad_scale};
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous(), grad = grad_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_normal_logprob_backward_cpu", [&] {
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>(),
                   *gp = grad.const_data_ptr<scalar_t>();
    scalar_t *glp = grad_loc.mutable_data_ptr<scalar_t>(),
             *gsp = grad_scale.mutable_data_ptr<scalar_t>();
    parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
      scalar_t xt[kTile], mt[kTile];
      math_t gt[kTile];
      tiler.for_each(i0, i1, [&](const Tile& t) {
        normal_grads(t.n, tiler.per_row(gp, t, gt), tiler.data(xp, t, xt),
                     tiler.data(mp, t, mt), tiler.sample(lp, t), tiler.sample(sp, t),
                     tiler.sample(glp, t), tiler.sample(gsp, t));
      });
    });
  });
  return {grad_loc, grad_scale};
}

void check_bernoulli_cpu(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& logits) {
  check_bernoulli(x, mask, logits);
  check_cpu_dtype(x, "x");
}

at::Tensor masked_bernoulli_logprob_cpu(const at::Tensor& x_, const at::Tensor& mask_,
                                        const at::Tensor& logits_) {
  check_bernoulli_cpu(x_, mask_, logits_);
  const int64_t B = logits_.size(0), K = logits_.size(1), D = logits_.size(2);
  at::Tensor out = at::empty({B, K}, logits_.options());
  if (B * K == 0) return out;
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, logits_.scalar_type()),
                   logits = logits_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "masked_bernoulli_logprob_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = logits.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
      scalar_t xt[kTile], mt[kTile];
      math_t vals[kTile];
      std::vector<acc_t> sums(i1 - i0, acc_t(0));
      tiler.for_each(i0, i1, [&](const Tile& t) {
        bernoulli_values(t.n, tiler.data(xp, t, xt), tiler.data(mp, t, mt), tiler.sample(lp, t),
                         vals);
        tiler.add_rows(t, vals, i0, sums.data());
      });
      store_rows(sums, i0, o);
    });
  });
  return out;
}

at::Tensor masked_bernoulli_logprob_backward_cpu(const at::Tensor& grad_, const at::Tensor& x_,
                                                 const at::Tensor& mask_,
                                                 const at::Tensor& logits_) {
  check_bernoulli_cpu(x_, mask_, logits_);
  const int64_t B = logits_.size(0), K = logits_.size(1), D = logits_.size(2);
  check_row_grad(grad_, "grad", logits_, "logits", B, K);
  at::Tensor grad_logits = at::empty({B, K, D}, logits_.options());
  if (grad_logits.numel() == 0) return grad_logits;
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, logits_.scalar_type()),
                   logits = logits_.contiguous(), grad = grad_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "masked_bernoulli_logprob_backward_cpu", [&] {
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = logits.const_data_ptr<scalar_t>(), *gp = grad.const_data_ptr<scalar_t>();
    scalar_t* o = grad_logits.mutable_data_ptr<scalar_t>();
    parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
      scalar_t xt[kTile], mt[kTile];
      math_t gt[kTile];
      tiler.for_each(i0, i1, [&](const Tile& t) {
        bernoulli_grads(t.n, tiler.per_row(gp, t, gt), tiler.data(xp, t, xt),
                        tiler.data(mp, t, mt), tiler.sample(lp, t), tiler.sample(o, t));
      });
    });
  });
  return grad_logits;
}

void check_studentt_cpu(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& loc,
                        const at::Tensor& scale, const at::Tensor& df) {
  check_studentt(x, mask, loc, scale, df);
  check_cpu_dtype(x, "x");
}

at::Tensor masked_studentt_logprob_cpu(const at::Tensor& x_, const at::Tensor& mask_,
                                       const at::Tensor& loc_, const at::Tensor& scale_,
                                       const at::Tensor& df_) {
  check_studentt_cpu(x_, mask_, loc_, scale_, df_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  at::Tensor out = at::empty({B, K}, loc_.options());
  if (B * K == 0) return out;
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous(), df = df_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_studentt_logprob_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    // c(df) in float64 for both dtypes (D values only).
    const at::Tensor log_norm = studentt_log_norm(df, at::kDouble);
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
      const auto dfe = tiler.expand_features(df.const_data_ptr<scalar_t>());
      const auto ce = tiler.expand_features(log_norm.const_data_ptr<double>());
      scalar_t xt[kTile], mt[kTile];
      math_t vals[kTile];
      std::vector<acc_t> sums(i1 - i0, acc_t(0));
      tiler.for_each(i0, i1, [&](const Tile& t) {
        studentt_values(t.n, tiler.data(xp, t, xt), tiler.data(mp, t, mt), tiler.sample(lp, t),
                        tiler.sample(sp, t), tiler.feature(dfe.data(), t),
                        tiler.feature(ce.data(), t), vals);
        tiler.add_rows(t, vals, i0, sums.data());
      });
      store_rows(sums, i0, o);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_studentt_logprob_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& mask_,
    const at::Tensor& loc_, const at::Tensor& scale_, const at::Tensor& df_) {
  check_studentt_cpu(x_, mask_, loc_, scale_, df_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  check_row_grad(grad_, "grad", loc_, "loc", B, K);
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0) return {grad_loc, grad_scale, at::zeros({D}, loc_.options())};
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous(), df = df_.contiguous(),
                   grad = grad_.contiguous();
  at::Tensor grad_df;
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "masked_studentt_logprob_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const at::Tensor dlog_norm = studentt_dlog_norm(df, at::kDouble);
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>(),
                   *gp = grad.const_data_ptr<scalar_t>();
    scalar_t *glp = grad_loc.mutable_data_ptr<scalar_t>(),
             *gsp = grad_scale.mutable_data_ptr<scalar_t>();
    FeatureSums<acc_t> sums(1, D);
    parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
      const auto dfe = tiler.expand_features(df.const_data_ptr<scalar_t>());
      const auto dce = tiler.expand_features(dlog_norm.const_data_ptr<double>());
      scalar_t xt[kTile], mt[kTile];
      math_t gt[kTile], gdf[kTile];
      acc_t* acc_df = sums.local(0);
      tiler.for_each(i0, i1, [&](const Tile& t) {
        studentt_grads(t.n, tiler.per_row(gp, t, gt), tiler.data(xp, t, xt),
                       tiler.data(mp, t, mt), tiler.sample(lp, t), tiler.sample(sp, t),
                       tiler.feature(dfe.data(), t), tiler.feature(dce.data(), t),
                       tiler.sample(glp, t), tiler.sample(gsp, t), gdf);
        tiler.fold_features(t, gdf, acc_df);
      });
    });
    grad_df = sums.total(0, loc.options());
  });
  return {grad_loc, grad_scale, grad_df};
}

at::Tensor selfmask_logprob_cpu(const at::Tensor& x_full_, const at::Tensor& mask_,
                                const at::Tensor& W_, const at::Tensor& b_) {
  check_selfmask(x_full_, mask_, W_, b_);
  check_cpu_dtype(x_full_, "x_full");
  const int64_t B = x_full_.size(0), K = x_full_.size(1), D = x_full_.size(2);
  at::Tensor out = at::empty({B, K}, x_full_.options());
  if (B * K == 0) return out;
  const at::Tensor xf = x_full_.contiguous(), mask = mask_values(mask_, x_full_.scalar_type()),
                   W = W_.contiguous(), bias = b_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(xf.scalar_type(), "selfmask_logprob_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = xf.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
      const auto we = tiler.expand_features(W.const_data_ptr<scalar_t>());
      const auto be = tiler.expand_features(bias.const_data_ptr<scalar_t>());
      scalar_t mt[kTile];
      math_t vals[kTile];
      std::vector<acc_t> sums(i1 - i0, acc_t(0));
      tiler.for_each(i0, i1, [&](const Tile& t) {
        selfmask_values(t.n, tiler.sample(xp, t), tiler.data(mp, t, mt),
                        tiler.feature(we.data(), t), tiler.feature(be.data(), t), vals);
        tiler.add_rows(t, vals, i0, sums.data());
      });
      store_rows(sums, i0, o);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> selfmask_logprob_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_full_, const at::Tensor& mask_,
    const at::Tensor& W_, const at::Tensor& b_) {
  check_selfmask(x_full_, mask_, W_, b_);
  check_cpu_dtype(x_full_, "x_full");
  const int64_t B = x_full_.size(0), K = x_full_.size(1), D = x_full_.size(2);
  check_row_grad(grad_, "grad", x_full_, "x_full", B, K);
  at::Tensor grad_x = at::empty({B, K, D}, x_full_.options());
  if (grad_x.numel() == 0)
    return {grad_x, at::zeros({D}, x_full_.options()), at::zeros({D}, x_full_.options())};
  const at::Tensor xf = x_full_.contiguous(), mask = mask_values(mask_, x_full_.scalar_type()),
                   W = W_.contiguous(), bias = b_.contiguous(), grad = grad_.contiguous();
  at::Tensor grad_W, grad_b;
  AT_DISPATCH_FLOATING_TYPES(xf.scalar_type(), "selfmask_logprob_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = xf.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *gp = grad.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    FeatureSums<acc_t> sums(2, D);
    parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
      const auto we = tiler.expand_features(W.const_data_ptr<scalar_t>());
      const auto be = tiler.expand_features(bias.const_data_ptr<scalar_t>());
      scalar_t mt[kTile];
      math_t gt[kTile], gw[kTile], gb[kTile];
      acc_t *acc_W = sums.local(0), *acc_b = sums.local(1);
      tiler.for_each(i0, i1, [&](const Tile& t) {
        selfmask_grads(t.n, tiler.per_row(gp, t, gt), tiler.sample(xp, t), tiler.data(mp, t, mt),
                       tiler.feature(we.data(), t), tiler.feature(be.data(), t),
                       tiler.sample(gxp, t), gw, gb);
        tiler.fold_features(t, gw, acc_W);
        tiler.fold_features(t, gb, acc_b);
      });
    });
    grad_W = sums.total(0, xf.options());
    grad_b = sums.total(1, xf.options());
  });
  return {grad_x, grad_W, grad_b};
}

void check_notmiwae_cpu(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& loc,
                        const at::Tensor& scale, const at::Tensor& eps, const at::Tensor& W,
                        const at::Tensor& b) {
  check_notmiwae(x, mask, loc, scale, eps, W, b);
  check_cpu_dtype(x, "x");
}

std::tuple<at::Tensor, at::Tensor> notmiwae_normal_terms_cpu(
    const at::Tensor& x_, const at::Tensor& mask_, const at::Tensor& loc_,
    const at::Tensor& scale_, const at::Tensor& eps_, const at::Tensor& W_,
    const at::Tensor& b_) {
  check_notmiwae_cpu(x_, mask_, loc_, scale_, eps_, W_, b_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  at::Tensor log_obs = at::empty({B, K}, loc_.options());
  at::Tensor log_miss = at::empty({B, K}, loc_.options());
  if (B * K == 0) return {log_obs, log_miss};
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous(), eps = eps_.contiguous(),
                   W = W_.contiguous(), bias = b_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "notmiwae_normal_terms_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>(),
                   *ep = eps.const_data_ptr<scalar_t>();
    scalar_t *oo = log_obs.mutable_data_ptr<scalar_t>(),
             *om = log_miss.mutable_data_ptr<scalar_t>();
    parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
      const auto we = tiler.expand_features(W.const_data_ptr<scalar_t>());
      const auto be = tiler.expand_features(bias.const_data_ptr<scalar_t>());
      scalar_t xt[kTile], mt[kTile];
      math_t v_obs[kTile], v_miss[kTile];
      std::vector<acc_t> s_obs(i1 - i0, acc_t(0)), s_miss(i1 - i0, acc_t(0));
      tiler.for_each(i0, i1, [&](const Tile& t) {
        const scalar_t *x_t = tiler.data(xp, t, xt), *m_t = tiler.data(mp, t, mt);
        normal_values(t.n, x_t, m_t, tiler.sample(lp, t), tiler.sample(sp, t), v_obs);
        notmiwae_missing_values(t.n, x_t, m_t, tiler.sample(lp, t), tiler.sample(sp, t),
                                tiler.sample(ep, t), tiler.feature(we.data(), t),
                                tiler.feature(be.data(), t), v_miss);
        tiler.add_rows(t, v_obs, i0, s_obs.data());
        tiler.add_rows(t, v_miss, i0, s_miss.data());
      });
      store_rows(s_obs, i0, oo);
      store_rows(s_miss, i0, om);
    });
  });
  return {log_obs, log_miss};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> notmiwae_normal_terms_backward_cpu(
    const at::Tensor& grad_obs_, const at::Tensor& grad_miss_, const at::Tensor& x_,
    const at::Tensor& mask_, const at::Tensor& loc_, const at::Tensor& scale_,
    const at::Tensor& eps_, const at::Tensor& W_, const at::Tensor& b_) {
  check_notmiwae_cpu(x_, mask_, loc_, scale_, eps_, W_, b_);
  const int64_t B = loc_.size(0), K = loc_.size(1), D = loc_.size(2);
  check_row_grad(grad_obs_, "grad_obs", loc_, "loc", B, K);
  check_row_grad(grad_miss_, "grad_miss", loc_, "loc", B, K);
  at::Tensor grad_loc = at::empty({B, K, D}, loc_.options());
  at::Tensor grad_scale = at::empty({B, K, D}, loc_.options());
  if (grad_loc.numel() == 0)
    return {grad_loc, grad_scale, at::zeros({D}, loc_.options()), at::zeros({D}, loc_.options())};
  const at::Tensor x = x_.contiguous(), mask = mask_values(mask_, loc_.scalar_type()),
                   loc = loc_.contiguous(), scale = scale_.contiguous(), eps = eps_.contiguous(),
                   W = W_.contiguous(), bias = b_.contiguous(), grad_obs = grad_obs_.contiguous(),
                   grad_miss = grad_miss_.contiguous();
  at::Tensor grad_W, grad_b;
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "notmiwae_normal_terms_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    using math_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *mp = mask.const_data_ptr<scalar_t>(),
                   *lp = loc.const_data_ptr<scalar_t>(), *sp = scale.const_data_ptr<scalar_t>(),
                   *ep = eps.const_data_ptr<scalar_t>(), *gop = grad_obs.const_data_ptr<scalar_t>(),
                   *gmp = grad_miss.const_data_ptr<scalar_t>();
    scalar_t *glp = grad_loc.mutable_data_ptr<scalar_t>(),
             *gsp = grad_scale.mutable_data_ptr<scalar_t>();
    FeatureSums<acc_t> sums(2, D);
    parallel_tiles<scalar_t>(B, K, D, [&](const auto& tiler, int64_t i0, int64_t i1) {
      const auto we = tiler.expand_features(W.const_data_ptr<scalar_t>());
      const auto be = tiler.expand_features(bias.const_data_ptr<scalar_t>());
      scalar_t xt[kTile], mt[kTile];
      math_t go[kTile], gm[kTile], gw[kTile], gb[kTile];
      acc_t *acc_W = sums.local(0), *acc_b = sums.local(1);
      tiler.for_each(i0, i1, [&](const Tile& t) {
        notmiwae_grads(t.n, tiler.per_row(gop, t, go), tiler.per_row(gmp, t, gm),
                       tiler.data(xp, t, xt), tiler.data(mp, t, mt), tiler.sample(lp, t),
                       tiler.sample(sp, t), tiler.sample(ep, t), tiler.feature(we.data(), t),
                       tiler.feature(be.data(), t), tiler.sample(glp, t), tiler.sample(gsp, t),
                       gw, gb);
        tiler.fold_features(t, gw, acc_W);
        tiler.fold_features(t, gb, acc_b);
      });
    });
    grad_W = sums.total(0, loc.options());
    grad_b = sums.total(1, loc.options());
  });
  return {grad_loc, grad_scale, grad_W, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CPU, m) {
  m.impl("masked_normal_logprob", &masked_normal_logprob_cpu);
  m.impl("masked_normal_logprob_backward", &masked_normal_logprob_backward_cpu);
  m.impl("masked_bernoulli_logprob", &masked_bernoulli_logprob_cpu);
  m.impl("masked_bernoulli_logprob_backward", &masked_bernoulli_logprob_backward_cpu);
  m.impl("masked_studentt_logprob", &masked_studentt_logprob_cpu);
  m.impl("masked_studentt_logprob_backward", &masked_studentt_logprob_backward_cpu);
  m.impl("selfmask_logprob", &selfmask_logprob_cpu);
  m.impl("selfmask_logprob_backward", &selfmask_logprob_backward_cpu);
  m.impl("notmiwae_normal_terms", &notmiwae_normal_terms_cpu);
  m.impl("notmiwae_normal_terms_backward", &notmiwae_normal_terms_backward_cpu);
}

}  // namespace notmiwae_fast
