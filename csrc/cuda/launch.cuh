// What the CUDA kernel files share for launching: the dtype dispatch (float32, float64,
// float16, bfloat16) and the grid of a one-thread-per-element (grid-stride) kernel.
#pragma once

#include <ATen/Dispatch.h>

#include <algorithm>
#include <cstdint>

#define NOTMIWAE_DISPATCH_CUDA(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

namespace notmiwae_fast {
namespace cuda {

constexpr int kElementThreads = 256;

// Blocks of kElementThreads for n elements (at least 1, at most 2^20: the kernels
// stride over the rest).
inline unsigned element_blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>(
      std::max<int64_t>((n + kElementThreads - 1) / kElementThreads, 1), 1 << 20));
}

}  // namespace cuda
}  // namespace notmiwae_fast
