// CPU kernel of the clipped family: clipped_impute. The per-pixel work is
// math::clipped_impute_pixel of notmiwae_fast/clipped.h (shared with CUDA), with the
// vectorisable elementary functions of vec_math.h; pixels run in parallel, each
// streaming over the K draws in float64 for float64 inputs and float32 for float32 ones.
#include "vectorize.h"  // first: the options every inline formula is compiled with

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "notmiwae_fast/clipped.h"
#include "vec_math.h"

namespace notmiwae_fast {
namespace {

// Pixels [begin, end) of clipped_impute (compiled for AVX-512, AVX2 + FMA and the
// baseline, the per-pixel routine inlined into each; the best is picked at load time).
// float32 accumulates in float32: K terms of similar size.
template <typename scalar_t>
NOTMIWAE_VECTOR_CLONES NOTMIWAE_FLATTEN void clipped_impute_rows(int64_t begin, int64_t end,
                                                                 const ClippedInputs<scalar_t>& in,
                                                                 scalar_t* out) {
  for (int64_t n = begin; n < end; ++n)
    math::clipped_impute_pixel<cpu::VecMath, true, scalar_t>(in, n, out + n * in.C);
}

at::Tensor clipped_impute_cpu(const at::Tensor& x, const at::Tensor& lost,
                              const at::Tensor& context, const at::Tensor& mu,
                              const at::Tensor& std, const at::Tensor& eps,
                              const at::Tensor& w_latent, const at::Tensor& w_out,
                              const at::Tensor& b_out, double clip, double min_scale,
                              bool censored) {
  const ClippedTensors t = clipped_tensors(x, lost, context, mu, std, eps, w_latent, w_out, b_out,
                                           clip, min_scale, censored);
  check_cpu_dtype(x, "x");
  at::Tensor out = at::empty_like(t.x);
  AT_DISPATCH_FLOATING_TYPES(t.x.scalar_type(), "clipped_impute_cpu", [&] {
    const ClippedInputs<scalar_t> in = t.inputs<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, t.x.size(0), 64, [&](int64_t begin, int64_t end) {
      clipped_impute_rows<scalar_t>(begin, end, in, o);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CPU, m) { m.impl("clipped_impute", &clipped_impute_cpu); }

}  // namespace notmiwae_fast
