// CPU kernels of the latent family: latent_terms and latent_terms_backward. The
// per-element math is latent_term / latent_term_grad of notmiwae_fast/math.h (shared
// with CUDA). Rows (b, k) run in parallel in the forward, rows b in the backward (whose
// sums over k are per b); sums accumulate in at::acc_type (float64 for float32).
#include "vectorize.h"

#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/latent.h"
#include "notmiwae_fast/math.h"
#include "parallel.h"
#include "vec_math.h"

namespace notmiwae_fast {
namespace {

using F = cpu::VecMath;

std::tuple<at::Tensor, at::Tensor, at::Tensor> latent_terms_cpu(const at::Tensor& mu_,
                                                                const at::Tensor& std_,
                                                                const at::Tensor& eps_) {
  check_latent(mu_, std_, eps_);
  check_cpu_dtype(mu_, "mu");
  const at::Tensor mu = mu_.contiguous(), sd = std_.contiguous(), eps = eps_.contiguous();
  const int64_t B = eps.size(0), K = eps.size(1), L = eps.size(2);
  at::Tensor z = at::empty({B, K, L}, eps.options());
  at::Tensor log_p = at::empty({B, K}, eps.options()), log_q = at::empty({B, K}, eps.options());
  AT_DISPATCH_FLOATING_TYPES(mu.scalar_type(), "latent_terms_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
    const scalar_t* m = mu.const_data_ptr<scalar_t>();
    const scalar_t* s = sd.const_data_ptr<scalar_t>();
    const scalar_t* e = eps.const_data_ptr<scalar_t>();
    scalar_t* zp = z.mutable_data_ptr<scalar_t>();
    scalar_t* lp = log_p.mutable_data_ptr<scalar_t>();
    scalar_t* lq = log_q.mutable_data_ptr<scalar_t>();
    const acc_t constant = static_cast<acc_t>(L) * static_cast<acc_t>(math::kHalfLog2Pi);
    at::parallel_for(0, B * K, cpu::rows_per_task(L), [&](int64_t begin, int64_t end) {
      int64_t b_of_log_std = -1;
      acc_t sum_log_std = 0;  // Σ_l log std[b, l], for the current b
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / K;
        if (b != b_of_log_std) {
          sum_log_std = 0;
          for (int64_t l = 0; l < L; ++l) sum_log_std += F::Log(s[b * L + l]);
          b_of_log_std = b;
        }
        acc_t sum_p = 0, sum_q = 0;
        for (int64_t l = 0; l < L; ++l) {
          const auto t = math::latent_term(m[b * L + l], s[b * L + l], e[i * L + l]);
          zp[i * L + l] = t.z;
          sum_p += t.log_p;
          sum_q += t.log_q_without_log_std;
        }
        lp[i] = static_cast<scalar_t>(sum_p - constant);
        lq[i] = static_cast<scalar_t>(sum_q - sum_log_std - constant);
      }
    });
  });
  return {z, log_p, log_q};
}

std::tuple<at::Tensor, at::Tensor> latent_terms_backward_cpu(
    const std::optional<at::Tensor>& grad_z_, const std::optional<at::Tensor>& grad_log_p_,
    const std::optional<at::Tensor>& grad_log_q_, const at::Tensor& mu_, const at::Tensor& std_,
    const at::Tensor& eps_) {
  check_latent(mu_, std_, eps_);
  check_cpu_dtype(mu_, "mu");
  const int64_t B = eps_.size(0), K = eps_.size(1), L = eps_.size(2);
  const LatentOutputGrads grads = latent_output_grads(grad_z_, grad_log_p_, grad_log_q_, eps_);
  const at::Tensor &gz = grads.z, &gp = grads.log_p, &gq = grads.log_q;
  const at::Tensor mu = mu_.contiguous(), sd = std_.contiguous(), eps = eps_.contiguous();
  at::Tensor grad_mu = at::empty({B, L}, mu.options()), grad_std = at::empty({B, L}, mu.options());
  AT_DISPATCH_FLOATING_TYPES(mu.scalar_type(), "latent_terms_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
    const scalar_t* m = mu.const_data_ptr<scalar_t>();
    const scalar_t* s = sd.const_data_ptr<scalar_t>();
    const scalar_t* e = eps.const_data_ptr<scalar_t>();
    const scalar_t* gzp = gz.defined() ? gz.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* gpp = gp.defined() ? gp.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* gqp = gq.defined() ? gq.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gm = grad_mu.mutable_data_ptr<scalar_t>();
    scalar_t* gs = grad_std.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, cpu::rows_per_task(K * L), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t l = 0; l < L; ++l) {
          const acc_t mu_bl = m[b * L + l], std_bl = s[b * L + l];
          acc_t sum_mu = 0, sum_std = 0;
          for (int64_t k = 0; k < K; ++k) {
            const int64_t i = b * K + k;
            const acc_t eps_i = e[i * L + l];
            const acc_t z = mu_bl + std_bl * eps_i;
            const auto g = math::latent_term_grad<acc_t>(
                gzp ? static_cast<acc_t>(gzp[i * L + l]) : acc_t(0),
                gpp ? static_cast<acc_t>(gpp[i]) : acc_t(0),
                gqp ? static_cast<acc_t>(gqp[i]) : acc_t(0), z, std_bl, eps_i);
            sum_mu += g.mu;
            sum_std += g.std;
          }
          gm[b * L + l] = static_cast<scalar_t>(sum_mu);
          gs[b * L + l] = static_cast<scalar_t>(sum_std);
        }
      }
    });
  });
  return {grad_mu, grad_std};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CPU, m) {
  m.impl("latent_terms", &latent_terms_cpu);
  m.impl("latent_terms_backward", &latent_terms_backward_cpu);
}

}  // namespace notmiwae_fast
