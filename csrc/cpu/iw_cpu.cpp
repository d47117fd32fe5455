// CPU kernels of the importance-weighting family: iw_logmeanexp, iw_weights, iw_impute
// and their backward passes. The math is in notmiwae_fast/math.h (shared with CUDA).
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/math.h"
#include "parallel.h"

namespace notmiwae_fast {
namespace {

using math::LseState;

using cpu::rows_per_task;

// The (running max, running sum) summary of one row, by the online update.
template <typename acc_t, typename scalar_t>
LseState<acc_t> row_state(const scalar_t* a, int64_t K) {
  LseState<acc_t> s = math::lse_empty<acc_t>();
  for (int64_t k = 0; k < K; ++k) s = math::lse_push(s, static_cast<acc_t>(a[k]));
  return s;
}

// log Σ_k exp(a[k]) of one row.
template <typename acc_t, typename scalar_t>
acc_t row_lse(const scalar_t* a, int64_t K) {
  return math::lse_value(row_state<acc_t>(a, K));
}

// The softmax normaliser of one row.
template <typename acc_t, typename scalar_t>
math::SoftmaxNorm<acc_t> row_norm(const scalar_t* a, int64_t K) {
  return math::softmax_norm(row_state<acc_t>(a, K));
}

// The softmax normaliser of every row of log_w [B, K], into norm [B].
template <typename acc_t, typename scalar_t>
void rows_norm(const scalar_t* a, int64_t B, int64_t K, math::SoftmaxNorm<acc_t>* norm) {
  at::parallel_for(0, B, rows_per_task(K), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) norm[b] = row_norm<acc_t>(a + b * K, K);
  });
}

at::Tensor iw_logmeanexp_cpu(const at::Tensor& log_w_) {
  check_log_weights(log_w_);
  check_cpu_dtype(log_w_, "log_w");
  const at::Tensor log_w = log_w_.contiguous();
  const int64_t B = log_w.size(0), K = log_w.size(1);
  at::Tensor out = at::empty({B}, log_w.options());
  AT_DISPATCH_FLOATING_TYPES(log_w.scalar_type(), "iw_logmeanexp_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    const scalar_t* a = log_w.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const acc_t log_k = std::log(static_cast<acc_t>(K));
    at::parallel_for(0, B, rows_per_task(K), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        o[b] = static_cast<scalar_t>(row_lse<acc_t>(a + b * K, K) - log_k);
    });
  });
  return out;
}

// d/d log_w[b,k] of logmeanexp = grad[b] · softmax(log_w[b])_k (the row log-sum-exp
// is recomputed: K scalars, cheaper than keeping it).
at::Tensor iw_logmeanexp_backward_cpu(const at::Tensor& grad_, const at::Tensor& log_w_) {
  check_iw_logmeanexp_grad(grad_, log_w_);
  check_cpu_dtype(log_w_, "log_w");
  const int64_t B = log_w_.size(0), K = log_w_.size(1);
  const at::Tensor log_w = log_w_.contiguous(), grad = grad_.contiguous();
  at::Tensor out = at::empty({B, K}, log_w.options());
  AT_DISPATCH_FLOATING_TYPES(log_w.scalar_type(), "iw_logmeanexp_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    const scalar_t* a = log_w.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, rows_per_task(K), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const auto norm = row_norm<acc_t>(a + b * K, K);
        const acc_t gb = g[b];
        for (int64_t k = 0; k < K; ++k)
          o[b * K + k] = static_cast<scalar_t>(
              gb * math::softmax_weight(static_cast<acc_t>(a[b * K + k]), norm));
      }
    });
  });
  return out;
}

at::Tensor iw_weights_cpu(const at::Tensor& log_w_) {
  check_log_weights(log_w_);
  check_cpu_dtype(log_w_, "log_w");
  const at::Tensor log_w = log_w_.contiguous();
  const int64_t B = log_w.size(0), K = log_w.size(1);
  at::Tensor out = at::empty({B, K}, log_w.options());
  AT_DISPATCH_FLOATING_TYPES(log_w.scalar_type(), "iw_weights_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    const scalar_t* a = log_w.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, rows_per_task(K), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* row = a + b * K;
        const auto norm = row_norm<acc_t>(row, K);
        for (int64_t k = 0; k < K; ++k)
          o[b * K + k] =
              static_cast<scalar_t>(math::softmax_weight(static_cast<acc_t>(row[k]), norm));
      }
    });
  });
  return out;
}

// Softmax backward: grad_in = w ⊙ (g − Σ_k g_k w_k).
at::Tensor iw_weights_backward_cpu(const at::Tensor& grad_, const at::Tensor& weights_) {
  check_iw_weights_grad(grad_, weights_);
  check_cpu_dtype(weights_, "weights");
  const at::Tensor w = weights_.contiguous(), grad = grad_.contiguous();
  const int64_t B = w.size(0), K = w.size(1);
  at::Tensor out = at::empty({B, K}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "iw_weights_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    const scalar_t* wp = w.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, rows_per_task(K), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        acc_t dot = 0;
        for (int64_t k = 0; k < K; ++k)
          dot += static_cast<acc_t>(g[b * K + k]) * static_cast<acc_t>(wp[b * K + k]);
        for (int64_t k = 0; k < K; ++k)
          o[b * K + k] = static_cast<scalar_t>(static_cast<acc_t>(wp[b * K + k]) *
                                               (static_cast<acc_t>(g[b * K + k]) - dot));
      }
    });
  });
  return out;
}

// Columns of D handled by one task of iw_impute: splits wide rows (images) across
// threads even when B is small.
constexpr int64_t kImputeColumnTile = 1024;
// Importance samples per chunk of the online softmax.
constexpr int64_t kImputeChunk = 256;

// out[b, d] = Σ_k softmax(log_w[b])_k · values[b, k, d], in one pass over K by chunks
// with an online softmax: a running maximum m, a running sum s = Σ exp(a_k − m) and an
// accumulator acc[d] = Σ exp(a_k − m) v[k, d], both rescaled when a chunk raises m;
// out = acc / s. Working memory is one accumulator row per task, whatever K.
at::Tensor iw_impute_cpu(const at::Tensor& log_w_, const at::Tensor& values_) {
  check_iw_values(log_w_, values_);
  check_cpu_dtype(log_w_, "log_w");
  const at::Tensor log_w = log_w_.contiguous(), values = values_.contiguous();
  const int64_t B = values.size(0), K = values.size(1), D = values.size(2);
  at::Tensor out = at::empty({B, D}, values.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "iw_impute_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    const scalar_t* a = log_w.const_data_ptr<scalar_t>();
    const scalar_t* v = values.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const int64_t tiles = (D + kImputeColumnTile - 1) / kImputeColumnTile;
    const int64_t grain = rows_per_task(K * std::min(D, kImputeColumnTile));
    at::parallel_for(0, B * tiles, grain, [&](int64_t t0, int64_t t1) {
      std::vector<acc_t> acc(std::min(D, kImputeColumnTile));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t b = t / tiles;
        const int64_t d0 = (t % tiles) * kImputeColumnTile;
        const int64_t n = std::min(D - d0, kImputeColumnTile);
        const scalar_t* ab = a + b * K;
        std::fill(acc.begin(), acc.begin() + n, acc_t(0));
        LseState<acc_t> state = math::lse_empty<acc_t>();
        for (int64_t k0 = 0; k0 < K; k0 += kImputeChunk) {
          const int64_t k1 = std::min(K, k0 + kImputeChunk);
          acc_t chunk_max = math::neg_inf<acc_t>();
          for (int64_t k = k0; k < k1; ++k)
            chunk_max = std::max(chunk_max, static_cast<acc_t>(ab[k]));
          if (chunk_max > state.max) {
            const acc_t f = math::lse_rescale(state.max, chunk_max);
            // f = 0: the earlier samples lost all their weight; their sum is dropped, not
            // scaled (an inf or NaN among their values would turn 0 · inf into NaN).
            for (int64_t j = 0; j < n; ++j) acc[j] = f == acc_t(0) ? acc_t(0) : acc[j] * f;
            state = LseState<acc_t>{chunk_max, state.sum * f};
          }
          for (int64_t k = k0; k < k1; ++k) {
            const acc_t p = math::softmax_weight(static_cast<acc_t>(ab[k]), state.max);
            if (p == acc_t(0)) continue;  // no mass: skip the sample (and any inf/NaN in it)
            state.sum += p;
            const scalar_t* vk = v + (b * K + k) * D + d0;
            for (int64_t j = 0; j < n; ++j) acc[j] += p * static_cast<acc_t>(vk[j]);
          }
        }
        // A row without mass (every log-weight −inf, or a NaN among them: its sum is NaN)
        // imputes 0, as its weights are 0 (iw_weights).
        const bool mass = state.sum > acc_t(0);
        const acc_t inv = mass ? acc_t(1) / state.sum : acc_t(0);
        for (int64_t j = 0; j < n; ++j)
          o[b * D + d0 + j] = static_cast<scalar_t>(mass ? acc[j] * inv : acc_t(0));
      }
    });
  });
  return out;
}

// Gradients of iw_impute, with w = softmax(log_w[b]) and r = result[b]:
//   d values[b,k,d] = w_k · g[b,d]
//   d log_w[b,k]    = w_k · Σ_d g[b,d] · (values[b,k,d] − r[d])
std::tuple<at::Tensor, at::Tensor> iw_impute_backward_cpu(const at::Tensor& grad_,
                                                          const at::Tensor& log_w_,
                                                          const at::Tensor& values_,
                                                          const at::Tensor& result_) {
  check_iw_impute_grad(grad_, log_w_, values_, result_);
  check_cpu_dtype(log_w_, "log_w");
  const int64_t B = values_.size(0), K = values_.size(1), D = values_.size(2);
  const at::Tensor log_w = log_w_.contiguous(), values = values_.contiguous(),
                   grad = grad_.contiguous(), result = result_.contiguous();
  at::Tensor grad_log_w = at::empty({B, K}, values.options());
  at::Tensor grad_values = at::empty({B, K, D}, values.options());
  if (B * K == 0) return {grad_log_w, grad_values};
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "iw_impute_backward_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, false>;
    const scalar_t* a = log_w.const_data_ptr<scalar_t>();
    const scalar_t* v = values.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* r = result.const_data_ptr<scalar_t>();
    scalar_t* glw = grad_log_w.mutable_data_ptr<scalar_t>();
    scalar_t* gv = grad_values.mutable_data_ptr<scalar_t>();
    std::vector<math::SoftmaxNorm<acc_t>> norm(B);
    rows_norm<acc_t>(a, B, K, norm.data());
    at::parallel_for(0, B * K, rows_per_task(D), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {  // i = b * K + k
        const int64_t b = i / K;
        const acc_t w = math::softmax_weight(static_cast<acc_t>(a[i]), norm[b]);
        const scalar_t* vi = v + i * D;
        const scalar_t* gb = g + b * D;
        const scalar_t* rb = r + b * D;
        scalar_t* gvi = gv + i * D;
        for (int64_t d = 0; d < D; ++d)
          gvi[d] = static_cast<scalar_t>(w * static_cast<acc_t>(gb[d]));
        // Σ_d g (v − r) over eight independent lanes, so that it vectorises; skipped when
        // the sample has no weight (its values may be anything, inf and NaN included).
        acc_t dot = 0;
        if (w != acc_t(0)) {
          acc_t lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          int64_t d = 0;
          for (; d + 8 <= D; d += 8)
            for (int l = 0; l < 8; ++l)
              lanes[l] += static_cast<acc_t>(gb[d + l]) *
                          (static_cast<acc_t>(vi[d + l]) - static_cast<acc_t>(rb[d + l]));
          for (; d < D; ++d)
            dot +=
                static_cast<acc_t>(gb[d]) * (static_cast<acc_t>(vi[d]) - static_cast<acc_t>(rb[d]));
          for (int l = 0; l < 8; ++l) dot += lanes[l];
        }
        glw[i] = static_cast<scalar_t>(w * dot);
      }
    });
  });
  return {grad_log_w, grad_values};
}

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, CPU, m) {
  m.impl("iw_logmeanexp", &iw_logmeanexp_cpu);
  m.impl("iw_logmeanexp_backward", &iw_logmeanexp_backward_cpu);
  m.impl("iw_weights", &iw_weights_cpu);
  m.impl("iw_weights_backward", &iw_weights_backward_cpu);
  m.impl("iw_impute", &iw_impute_cpu);
  m.impl("iw_impute_backward", &iw_impute_backward_cpu);
}

}  // namespace notmiwae_fast
