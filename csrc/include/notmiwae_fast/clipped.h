// The clipped-pixel imputation (clipped_impute): the argument checks and the work of one
// pixel, shared by the CPU loop and the CUDA kernel.
//
// Per pixel n, for each of K shared draws eps[k] (a streaming pass: nothing grows with K):
//   z = mu[n] + std[n] ⊙ eps[k]
//   hidden = relu(context[n] + w_latent · z)              [H]
//   (loc, raw) = w_out · hidden + b_out;  scale = softplus(raw) + min_scale   [C] each
//   log w_k = Σ_c (lost ? [censored] log Φ((loc − clip)/scale)
//                       : log p(x) of N(loc, scale²) censored at 0 and 1: the mass
//                         P(y ≤ 0) or P(y ≥ 1) at x = 0 or 1, the density inside)
//             + log N(z; 0, I) − log N(z; mu, std)
//   value_k = censored ? E[min(y, 1) | y ≥ clip] : clamp(loc, 0, 1)   (lost channels)
// out[n, c] = Σ_k softmax(log w)_k value_k[c] where lost, x[n, c] elsewhere; a pixel
// whose weights are all zero gets the clip level.
#pragma once

#include <ATen/core/Tensor.h>

#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/math.h"

namespace notmiwae_fast {

// Sizes the per-pixel scratch arrays hold (registers / stack on both backends).
constexpr int64_t kClippedMaxChannels = 4;
constexpr int64_t kClippedMaxLatent = 8;
constexpr int64_t kClippedMaxHidden = 128;
// Draws handled together (the per-channel formulas run across them).
constexpr int kClippedSampleBlock = 16;

// x [N, C] floating, lost [N, C] bool, context [N, H], mu / std [N, L], eps [K, L],
// w_latent [H, L], w_out [2C, H], b_out [2C]; one device and dtype (lost: bool).
inline void check_clipped_impute(const at::Tensor& x, const at::Tensor& lost,
                                 const at::Tensor& context, const at::Tensor& mu,
                                 const at::Tensor& std, const at::Tensor& eps,
                                 const at::Tensor& w_latent, const at::Tensor& w_out,
                                 const at::Tensor& b_out, double clip, double min_scale) {
  check_floating(x, "x");
  check_dim(x, 2, "x", "[N, C]");
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK_VALUE(C >= 1 && C <= kClippedMaxChannels, "notmiwae_fast: argument 'x' must "
                    "have 1 to ", kClippedMaxChannels, " channels; got ", C);
  TORCH_CHECK_TYPE(lost.scalar_type() == at::kBool, "notmiwae_fast: argument 'lost' must be "
                   "a bool tensor; got ", lost.scalar_type());
  TORCH_CHECK_VALUE(lost.device() == x.device(), "notmiwae_fast: argument 'lost' is on ",
                    lost.device(), " but 'x' is on ", x.device());
  TORCH_CHECK_VALUE(lost.sizes() == x.sizes(), "notmiwae_fast: argument 'lost' must have "
                    "x's shape ", x.sizes(), "; got ", lost.sizes());
  check_same_device_dtype(context, "context", x, "x");
  check_dim(context, 2, "context", "[N, H]");
  check_size(context, 0, N, "context", "[N, H] (N from x)");
  const int64_t H = context.size(1);
  TORCH_CHECK_VALUE(H >= 1 && H <= kClippedMaxHidden, "notmiwae_fast: argument 'context' "
                    "must have 1 to ", kClippedMaxHidden, " columns; got ", H);
  check_same_device_dtype(mu, "mu", x, "x");
  check_dim(mu, 2, "mu", "[N, L]");
  check_size(mu, 0, N, "mu", "[N, L] (N from x)");
  const int64_t L = mu.size(1);
  TORCH_CHECK_VALUE(L >= 1 && L <= kClippedMaxLatent, "notmiwae_fast: argument 'mu' must "
                    "have 1 to ", kClippedMaxLatent, " columns; got ", L);
  check_same_device_dtype(std, "std", x, "x");
  TORCH_CHECK_VALUE(std.sizes() == mu.sizes(), "notmiwae_fast: argument 'std' must have "
                    "mu's shape ", mu.sizes(), "; got ", std.sizes());
  check_same_device_dtype(eps, "eps", x, "x");
  check_dim(eps, 2, "eps", "[K, L]");
  check_size(eps, 1, L, "eps", "[K, L] (L from mu)");
  TORCH_CHECK_VALUE(eps.size(0) >= 1, "notmiwae_fast: argument 'eps' must hold K >= 1 draws");
  check_same_device_dtype(w_latent, "w_latent", x, "x");
  check_dim(w_latent, 2, "w_latent", "[H, L]");
  check_size(w_latent, 0, H, "w_latent", "[H, L] (H from context)");
  check_size(w_latent, 1, L, "w_latent", "[H, L] (L from mu)");
  check_same_device_dtype(w_out, "w_out", x, "x");
  check_dim(w_out, 2, "w_out", "[2C, H]");
  check_size(w_out, 0, 2 * C, "w_out", "[2C, H] (C from x)");
  check_size(w_out, 1, H, "w_out", "[2C, H] (H from context)");
  check_same_device_dtype(b_out, "b_out", x, "x");
  check_dim(b_out, 1, "b_out", "[2C]");
  check_size(b_out, 0, 2 * C, "b_out", "[2C] (C from x)");
  TORCH_CHECK_VALUE(clip > 0 && clip <= 1, "notmiwae_fast: argument 'clip' must be in (0, 1]; "
                    "got ", clip);
  TORCH_CHECK_VALUE(min_scale > 0, "notmiwae_fast: argument 'min_scale' must be positive; "
                    "got ", min_scale);
}

namespace math {

// Σ_j w[j] · h[j] over H terms, in eight independent partial sums (a loop the compiler
// can vectorise without reassociating one running sum).
template <typename T, typename scalar_t>
NOTMIWAE_HOST_DEVICE T dot8(const scalar_t* w, const T* h, int64_t H) {
  T part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= H; j += 8) {
    for (int i = 0; i < 8; ++i) part[i] += static_cast<T>(w[j + i]) * h[j + i];
  }
  T sum = 0;
  for (; j < H; ++j) sum += static_cast<T>(w[j]) * h[j];
  return sum + ((part[0] + part[1]) + (part[2] + part[3])) +
         ((part[4] + part[5]) + (part[6] + part[7]));
}

// One pixel of clipped_impute (see the top of this file), in the accumulation type T;
// scalar_t is the storage type of the tensors, F the elementary functions (math.h's
// policy). Per pixel, the decoder's first layer is split as base + Σ_l slope_l · eps_l
// (base = context + W·mu, slope_l = W[:, l]·std_l), so each draw costs L contiguous
// multiply-adds per hidden unit. The draws go in blocks of kClippedSampleBlock: the
// decoder's outputs of a block first, then each channel's likelihood terms across the
// block (branch-free loops of one formula: the CPU vectorises them), then the block's
// weights into a running log-sum-exp. kPadded: the per-channel loops run over all B lanes
// of every block (the unused ones get weight zero), a trip count the CPU compiler knows,
// so they vectorise with no scalar remainder; the GPU runs only the draws there are.
template <typename F, bool kPadded, typename T, typename scalar_t>
NOTMIWAE_HOST_DEVICE void clipped_impute_pixel(int64_t C, int64_t L, int64_t H, int64_t K,
                                          const scalar_t* x, const bool* lost,
                                          const scalar_t* context, const scalar_t* mu,
                                          const scalar_t* sd, const scalar_t* eps,
                                          const scalar_t* w_latent, const scalar_t* w_out,
                                          const scalar_t* b_out, T clip, T min_scale,
                                          bool censored, scalar_t* out) {
  constexpr int B = kClippedSampleBlock;
  T base[kClippedMaxHidden], slope[kClippedMaxLatent * kClippedMaxHidden];
  T hidden[kClippedMaxHidden], acc[kClippedMaxChannels];
  T loc[kClippedMaxChannels][B], scale[kClippedMaxChannels][B], value[kClippedMaxChannels][B];
  T log_w[B];
  T log_std_sum = 0;
  for (int64_t j = 0; j < H; ++j) base[j] = static_cast<T>(context[j]);
  for (int64_t l = 0; l < L; ++l) {
    const T m = static_cast<T>(mu[l]), s = static_cast<T>(sd[l]);
    log_std_sum += log(s);
    for (int64_t j = 0; j < H; ++j) {
      const T w = static_cast<T>(w_latent[j * L + l]);
      base[j] += w * m;
      slope[l * H + j] = w * s;
    }
  }
  for (int64_t c = 0; c < C; ++c) acc[c] = 0;
  T max_log_w = neg_inf<T>(), sum_w = 0;
  for (int64_t k0 = 0; k0 < K; k0 += B) {
    const int nb = static_cast<int>(K - k0 < B ? K - k0 : B);
    const int lanes = kPadded ? B : nb;
    for (int b = nb; b < lanes; ++b) {  // unused lanes: finite values, zero weight
      for (int64_t c = 0; c < C; ++c) loc[c][b] = scale[c][b] = T(0);
      log_w[b] = neg_inf<T>();
    }
    // the decoder's outputs of the block's draws
    for (int b = 0; b < nb; ++b) {
      const scalar_t* e_k = eps + (k0 + b) * L;
      T lw = log_std_sum;  // log N(z; 0, I) − log N(z; mu, std): the 2π terms cancel
      for (int64_t j = 0; j < H; ++j) hidden[j] = base[j];
      for (int64_t l = 0; l < L; ++l) {
        const T e = static_cast<T>(e_k[l]);
        const T z = static_cast<T>(mu[l]) + static_cast<T>(sd[l]) * e;
        lw += T(0.5) * (e * e - z * z);
        const T* sl = slope + l * H;
        for (int64_t j = 0; j < H; ++j) hidden[j] += sl[j] * e;
      }
      for (int64_t j = 0; j < H; ++j) hidden[j] = hidden[j] > T(0) ? hidden[j] : T(0);
      for (int64_t c = 0; c < C; ++c) {
        loc[c][b] = static_cast<T>(b_out[c]) + dot8(w_out + c * H, hidden, H);
        scale[c][b] = static_cast<T>(b_out[C + c]) + dot8(w_out + (C + c) * H, hidden, H);
      }
      log_w[b] = lw;
    }
    // each channel's terms across the block: one formula per loop (the branches are on
    // the pixel's own values, outside the loops)
    for (int64_t c = 0; c < C; ++c) {
      T* lc = loc[c];
      T* sc = scale[c];
      T* vc = value[c];
      for (int b = 0; b < lanes; ++b) sc[b] = softplus_scale<F>(sc[b], min_scale);
      if (lost[c] && censored) {
        for (int b = 0; b < lanes; ++b) {
          const ClippedTerm<T> term = clipped_term<F>(lc[b], sc[b], clip);
          log_w[b] += term.log_p;
          vc[b] = term.mean;
        }
      } else if (lost[c]) {  // MIWAE: the lost values left out of the weights
        for (int b = 0; b < lanes; ++b) vc[b] = lc[b] < T(0) ? T(0) : (lc[b] > T(1) ? T(1) : lc[b]);
      } else if (static_cast<T>(x[c]) <= T(0) || static_cast<T>(x[c]) >= T(1)) {
        // observed at an edge of the censored normal: the mass P(y ≤ 0) or P(y ≥ 1),
        // log Φ(t) with t = −loc/s or (loc − 1)/s
        const bool bottom = static_cast<T>(x[c]) <= T(0);
        const T sign = bottom ? T(-1) : T(1), shift = bottom ? T(0) : T(1);
        for (int b = 0; b < lanes; ++b) log_w[b] += log_ndtr<F>((sign * lc[b] - shift) / sc[b]);
      } else {  // observed inside (0, 1): the density
        const T xc = static_cast<T>(x[c]);
        for (int b = 0; b < lanes; ++b) log_w[b] += normal_log_density<F>(xc, lc[b], sc[b]);
      }
    }
    // the block's weights into the running sums (a zero weight or NaN adds nothing)
    T block_max = neg_inf<T>();
    for (int b = 0; b < lanes; ++b) block_max = log_w[b] > block_max ? log_w[b] : block_max;
    if (!(block_max > neg_inf<T>())) continue;
    if (block_max > max_log_w) {
      const T shrink = max_log_w > neg_inf<T>() ? F::Exp(max_log_w - block_max) : T(0);
      sum_w *= shrink;
      for (int64_t c = 0; c < C; ++c) acc[c] *= shrink;
      max_log_w = block_max;
    }
    for (int b = 0; b < lanes; ++b) {
      const T w = log_w[b] > neg_inf<T>() ? F::Exp(log_w[b] - max_log_w) : T(0);
      log_w[b] = w;
      sum_w += w;
    }
    for (int64_t c = 0; c < C; ++c) {
      if (!lost[c]) continue;
      T a = 0;
      for (int b = 0; b < lanes; ++b) a += log_w[b] * value[c][b];
      acc[c] += a;
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    const T imputed = sum_w > T(0) ? acc[c] / sum_w : clip;
    out[c] = lost[c] ? static_cast<scalar_t>(imputed) : x[c];
  }
}

}  // namespace math
}  // namespace notmiwae_fast
