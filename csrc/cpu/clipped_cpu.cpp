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

struct ClippedArgs {
  int64_t C, L, H, K;
  double clip, min_scale;
  bool censored;
};

// Pixels [begin, end) of clipped_impute (compiled for AVX-512, AVX2 + FMA and the
// baseline, the per-pixel routine inlined into each; the best is picked at load time).
template <typename scalar_t>
NOTMIWAE_VECTOR_CLONES NOTMIWAE_FLATTEN void clipped_impute_rows(int64_t begin, int64_t end, const ClippedArgs& a,
                                           const scalar_t* x, const bool* lost,
                                           const scalar_t* ctx, const scalar_t* mu,
                                           const scalar_t* sd, const scalar_t* eps,
                                           const scalar_t* w_latent, const scalar_t* w_out,
                                           const scalar_t* b_out, scalar_t* out) {
  using T = scalar_t;  // float32 accumulates in float32: K terms of similar size
  for (int64_t n = begin; n < end; ++n) {
    math::clipped_impute_pixel<cpu::VecMath, true, T, scalar_t>(
        a.C, a.L, a.H, a.K, x + n * a.C, lost + n * a.C, ctx + n * a.H, mu + n * a.L,
        sd + n * a.L, eps, w_latent, w_out, b_out, static_cast<T>(a.clip),
        static_cast<T>(a.min_scale), a.censored, out + n * a.C);
  }
}

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
  const ClippedArgs args{x.size(1), mu.size(1), ctx.size(1), eps.size(0), clip, min_scale,
                         censored};
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "clipped_impute_cpu", [&] {
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
    at::parallel_for(0, x.size(0), 64, [&](int64_t begin, int64_t end) {
      clipped_impute_rows<scalar_t>(begin, end, args, xp, lp, cp, mp, sp, ep, wlp, wop, bop,
                                    op);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CPU, m) { m.impl("clipped_impute", &clipped_impute_cpu); }

}  // namespace notmiwae_fast
