// observed_data on any device (the CPU has its own one-pass kernel, data_cpu.cpp):
// composed of ATen operations, a handful of element-wise passes over [B, D].
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "notmiwae_fast/data.h"

namespace notmiwae_fast {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> observed_data_composite(const at::Tensor& x,
                                                                       const at::Tensor& s) {
  check_observed_data(x, s);
  const at::Tensor observed = s.ne(0);  // NaN included
  const at::Tensor not_01 = at::logical_and(observed, s.ne(1)).sum();
  const at::Tensor not_finite = at::logical_and(observed, at::isfinite(x).logical_not()).sum();
  return {at::where(observed, x, at::zeros({}, x.options())).contiguous(),
          observed.to(x.scalar_type()).contiguous(), at::stack({not_01, not_finite})};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CompositeExplicitAutograd, m) {
  m.impl("observed_data", &observed_data_composite);
}

}  // namespace notmiwae_fast
