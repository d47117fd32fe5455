// CPU kernel of the clipped family: clipped_impute. The per-pixel work is
// math::clipped_impute_pixel of notmiwae_fast/clipped.h (shared with CUDA); pixels run
// in parallel, each streaming over the K draws in float64 for float64 inputs and
// float32 for float32 ones.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "notmiwae_fast/clipped.h"

namespace notmiwae_fast {
namespace {

at::Tensor clipped_impute_cpu(const at::Tensor& x_, const at::Tensor& lost_,
                              const at::Tensor& context_, const at::Tensor& mu_,
                              const at::Tensor& std_, const at::Tensor& eps_,
                              const at::Tensor& w_latent_, const at::Tensor& w_out_,
                              const at::Tensor& b_out_, double clip, double min_scale,
                              bool censored) {
  check_clipped_impute(x_, lost_, context_, mu_, std_, eps_, w_latent_, w_out_, b_out_, clip,
                       min_scale);
  check_cpu_dtype(x_, "x");
  const at::Tensor x = x_.contiguous(), lost = lost_.contiguous(), ctx = context_.contiguous();
  const at::Tensor mu = mu_.contiguous(), sd = std_.contiguous(), eps = eps_.contiguous();
  const at::Tensor wl = w_latent_.contiguous(), wo = w_out_.contiguous(), bo = b_out_.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = ctx.size(1), L = mu.size(1), K = eps.size(0);
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "clipped_impute_cpu", [&] {
    using T = scalar_t;  // float32 accumulates in float32: K terms of similar size
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const bool* lp = lost.const_data_ptr<bool>();
    const scalar_t* cp = ctx.const_data_ptr<scalar_t>();
    const scalar_t* mp = mu.const_data_ptr<scalar_t>();
    const scalar_t* sp = sd.const_data_ptr<scalar_t>();
    const scalar_t* ep = eps.const_data_ptr<scalar_t>();
    const scalar_t* wlp = wl.const_data_ptr<scalar_t>();
    const scalar_t* wop = wo.const_data_ptr<scalar_t>();
    const scalar_t* bop = bo.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        math::clipped_impute_pixel<T, scalar_t>(
            C, L, H, K, xp + n * C, lp + n * C, cp + n * H, mp + n * L, sp + n * L, ep, wlp,
            wop, bop, static_cast<T>(clip), static_cast<T>(min_scale), censored, op + n * C);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CPU, m) { m.impl("clipped_impute", &clipped_impute_cpu); }

}  // namespace notmiwae_fast
