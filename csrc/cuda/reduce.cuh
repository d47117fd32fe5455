// Warp and block reductions for the CUDA kernels: plain sums and online log-sum-exp
// states (math::LseState, merged with math::lse_merge).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "notmiwae_fast/math.h"

namespace notmiwae_fast {
namespace cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
    v += __shfl_down_sync(kFullMask, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ math::LseState<T> warp_lse(math::LseState<T> s) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    const math::LseState<T> other{__shfl_down_sync(kFullMask, s.max, offset),
                                  __shfl_down_sync(kFullMask, s.sum, offset)};
    s = math::lse_merge(s, other);
  }
  return s;
}

// Block-wide sum over a 1-D block (blockDim.x a multiple of 32); every thread gets it.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T partial[kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int n_warps = blockDim.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = warp_sum(lane < n_warps ? partial[lane] : T(0));
    if (lane == 0) partial[0] = v;
  }
  __syncthreads();
  v = partial[0];
  __syncthreads();  // the buffer may be reused by the caller's next reduction
  return v;
}

// Block-wide log-sum-exp merge over a 1-D block; every thread gets the result.
template <typename T>
__device__ math::LseState<T> block_lse(math::LseState<T> s) {
  __shared__ T part_max[kWarpSize];
  __shared__ T part_sum[kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int n_warps = blockDim.x / kWarpSize;
  s = warp_lse(s);
  if (lane == 0) {
    part_max[warp] = s.max;
    part_sum[warp] = s.sum;
  }
  __syncthreads();
  if (warp == 0) {
    s = lane < n_warps ? math::LseState<T>{part_max[lane], part_sum[lane]} : math::lse_empty<T>();
    s = warp_lse(s);
    if (lane == 0) {
      part_max[0] = s.max;
      part_sum[0] = s.sum;
    }
  }
  __syncthreads();
  s = math::LseState<T>{part_max[0], part_sum[0]};
  __syncthreads();
  return s;
}

// Threads per block for a per-row reduction over n elements: a multiple of 32, <= 256.
inline int row_block_size(int64_t n) {
  int threads = kWarpSize;
  while (threads < 256 && threads < n) threads *= 2;
  return threads;
}

// Blocks for a grid-stride loop over n elements with `threads` per block.
inline unsigned grid_size(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 1 << 20)));
}

}  // namespace cuda
}  // namespace notmiwae_fast
