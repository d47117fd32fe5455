// How the CPU kernels of the likelihood family (likelihood_cpu.cpp) cut their work.
//
// Work is cut into tiles of at most kTile elements of the flattened [B·K, D] problem:
// several whole rows when D is small (tabular data), a segment of one row when D is
// large (images). An element loop runs over one tile; its operands are contiguous arrays
// of the tile's length: per-sample tensors are used in place, x / mask rows, per-feature
// parameters and per-row gradients are expanded into small thread-local buffers when a
// tile spans several rows. Tiles run in parallel over the B·K rows (at::parallel_for);
// per-feature gradients are summed over them in per-thread [D] sums (FeatureSums).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "parallel.h"

namespace notmiwae_fast {
namespace cpu {

// Elements per tile: the expanded operands and the per-element values of a tile live in
// stack buffers of this size, in L1.
constexpr int64_t kTile = 256;

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

// A tile: rows [r0, r0 + rows) whole (rows > 1, d0 = 0, n = rows·D) or a segment
// [d0, d0 + n) of row r0 (rows = 1); width = n / rows elements per row.
struct Tile {
  int64_t r0, rows, d0, n, width;
};

// Walks a task's rows in tiles and lays out the broadcast operands ([B, D] rows, [D]
// features) as arrays matching the tile's elements.
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
        for (int64_t d0 = 0; d0 < D_; d0 += kTile) {
          const int64_t n = std::min(kTile, D_ - d0);
          fn(Tile{i, 1, d0, n, n});
        }
    } else {
      for (int64_t r0 = i0; r0 < i1; r0 += rows_per_tile_) {
        const int64_t rows = std::min(rows_per_tile_, i1 - r0);
        fn(Tile{r0, rows, 0, rows * D_, D_});
      }
    }
  }

  // A [B, K, D] tensor's elements of the tile (in place).
  template <typename T>
  T* sample(T* p, const Tile& t) const {
    return p + t.r0 * D_ + t.d0;
  }

  // A [B, D] tensor's rows b = r / K under the tile's rows (copied into buf when the
  // tile spans several rows).
  const scalar_t* data(const scalar_t* p, const Tile& t, scalar_t* buf) const {
    if (t.rows == 1) return p + (t.r0 / K_) * D_ + t.d0;
    for (int64_t r = 0; r < t.rows; ++r) std::copy_n(p + ((t.r0 + r) / K_) * D_, D_, buf + r * D_);
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

 private:
  int64_t K_, D_, rows_per_tile_;
};

// Runs fn(tiler, i0, i1) over the B·K rows in parallel (tasks of about kGrainElements).
template <typename scalar_t, typename Fn>
void parallel_tiles(int64_t B, int64_t K, int64_t D, const Fn& fn) {
  const Tiler<scalar_t, at::opmath_type<scalar_t>> tiler(K, D);
  at::parallel_for(0, B * K, rows_per_task(D), [&](int64_t i0, int64_t i1) { fn(tiler, i0, i1); });
}

}  // namespace cpu
}  // namespace notmiwae_fast
