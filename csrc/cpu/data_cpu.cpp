// CPU kernel of the data family: observed_data, the models' input check and zero-fill
// in one pass over x and its mask (see csrc/ops.cpp for the contract). Blocks of
// elements run in parallel; each block counts its bad entries, the counts are summed.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "notmiwae_fast/data.h"
#include "parallel.h"

namespace notmiwae_fast {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> observed_data_cpu(const at::Tensor& x_,
                                                                 const at::Tensor& s_) {
  check_observed_data(x_, s_);
  // uint16 / uint32 / uint64 are outside ATen's dispatch macros: compared as int64 (a
  // value beyond its range wraps to a negative one, still neither 0 nor 1).
  const bool wide_unsigned = s_.scalar_type() == at::kUInt16 || s_.scalar_type() == at::kUInt32 ||
                             s_.scalar_type() == at::kUInt64;
  const at::Tensor x = x_.contiguous(), s = wide_unsigned ? s_.to(at::kLong) : s_.contiguous();
  at::Tensor x0 = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor mask = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t n = x.numel();
  const int64_t blocks = std::max<int64_t>(1, (n + cpu::kGrainElements - 1) / cpu::kGrainElements);
  std::vector<int64_t> bad_s(blocks, 0), bad_x(blocks, 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "observed_data_cpu", [&] {
        using x_t = scalar_t;
        const x_t* xp = x.const_data_ptr<x_t>();
        x_t* x0p = x0.mutable_data_ptr<x_t>();
        x_t* mp = mask.mutable_data_ptr<x_t>();
        AT_DISPATCH_ALL_TYPES_AND3(
            at::kBool, at::kHalf, at::kBFloat16, s.scalar_type(), "observed_data_cpu", [&] {
              const scalar_t* sp = s.const_data_ptr<scalar_t>();
              at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
                for (int64_t blk = first; blk < last; ++blk) {
                  const int64_t begin = blk * cpu::kGrainElements;
                  const int64_t end = std::min(n, begin + cpu::kGrainElements);
                  int64_t not_01 = 0, not_finite = 0;
                  for (int64_t i = begin; i < end; ++i) {
                    const double v = static_cast<double>(sp[i]);  // NaN stays NaN: neither 0 nor 1
                    const bool observed = v != 0.0;
                    const double xv = static_cast<double>(xp[i]);
                    not_01 += !(v == 0.0 || v == 1.0);
                    not_finite += observed && !std::isfinite(xv);
                    x0p[i] = observed ? xp[i] : x_t(0);
                    mp[i] = observed ? x_t(1) : x_t(0);
                  }
                  bad_s[blk] = not_01;
                  bad_x[blk] = not_finite;
                }
              });
            });
      });
  at::Tensor counts = at::zeros({2}, x.options().dtype(at::kLong));
  int64_t* c = counts.mutable_data_ptr<int64_t>();
  for (int64_t blk = 0; blk < blocks; ++blk) {
    c[0] += bad_s[blk];
    c[1] += bad_x[blk];
  }
  return {x0, mask, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CPU, m) { m.impl("observed_data", &observed_data_cpu); }

}  // namespace notmiwae_fast
