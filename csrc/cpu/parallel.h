// How the CPU kernels split work over threads (at::parallel_for grain sizes).
#pragma once

#include <algorithm>
#include <cstdint>

namespace notmiwae_fast {
namespace cpu {

// Elements one parallel task should touch (ATen's grain size for element-wise loops).
constexpr int64_t kGrainElements = 32768;

// Rows per parallel task so that each task touches about kGrainElements elements.
inline int64_t rows_per_task(int64_t row_len) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, row_len));
}

}  // namespace cpu
}  // namespace notmiwae_fast
