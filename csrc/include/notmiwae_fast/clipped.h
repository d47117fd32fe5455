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

#include <string>

#include "notmiwae_fast/checks.h"
#include "notmiwae_fast/math.h"

namespace notmiwae_fast {

// Sizes the per-pixel scratch arrays hold (registers / stack on both backends).
constexpr int64_t kClippedMaxChannels = 4;
constexpr int64_t kClippedMaxLatent = 8;
constexpr int64_t kClippedMaxHidden = 128;
// Draws handled together (the per-channel formulas run across them).
constexpr int kClippedSampleBlock = 16;

// t: one row per pixel of x [N, C] ([N, cols] of x's device and dtype, `shape` naming it)
// with 1 to max_cols columns; returns cols.
inline int64_t check_pixel_rows(const at::Tensor& t, const char* name, const at::Tensor& x,
                                const char* shape, int64_t max_cols) {
  check_same_device_dtype(t, name, x, "x");
  check_dim(t, 2, name, shape);
  check_size(t, 0, x.size(0), name, (std::string(shape) + " (N from x)").c_str());
  const int64_t cols = t.size(1);
  TORCH_CHECK_VALUE(cols >= 1 && cols <= max_cols, "notmiwae_fast: argument '", name,
                    "' must have 1 to ", max_cols, " columns; got ", cols);
  return cols;
}

// x [N, C] floating, lost [N, C] bool, context [N, H], mu / std [N, L], eps [K, L],
// w_latent [H, L], w_out [2C, H], b_out [2C]; one device and dtype (lost: bool).
inline void check_clipped_impute(const at::Tensor& x, const at::Tensor& lost,
                                 const at::Tensor& context, const at::Tensor& mu,
                                 const at::Tensor& std, const at::Tensor& eps,
                                 const at::Tensor& w_latent, const at::Tensor& w_out,
                                 const at::Tensor& b_out, double clip, double min_scale) {
  check_floating(x, "x");
  check_dim(x, 2, "x", "[N, C]");
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(C >= 1 && C <= kClippedMaxChannels,
                    "notmiwae_fast: argument 'x' must "
                    "have 1 to ",
                    kClippedMaxChannels, " channels; got ", C);
  TORCH_CHECK_TYPE(lost.scalar_type() == at::kBool,
                   "notmiwae_fast: argument 'lost' must be "
                   "a bool tensor; got ",
                   lost.scalar_type());
  TORCH_CHECK_VALUE(lost.device() == x.device(), "notmiwae_fast: argument 'lost' is on ",
                    lost.device(), " but 'x' is on ", x.device());
  check_shape(lost, "lost", x, "x's shape");
  const int64_t H = check_pixel_rows(context, "context", x, "[N, H]", kClippedMaxHidden);
  const int64_t L = check_pixel_rows(mu, "mu", x, "[N, L]", kClippedMaxLatent);
  check_same_device_dtype(std, "std", x, "x");
  check_shape(std, "std", mu, "mu's shape");
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
  TORCH_CHECK_VALUE(clip > 0 && clip <= 1,
                    "notmiwae_fast: argument 'clip' must be in (0, 1]; "
                    "got ",
                    clip);
  TORCH_CHECK_VALUE(min_scale > 0,
                    "notmiwae_fast: argument 'min_scale' must be positive; "
                    "got ",
                    min_scale);
}

// The inputs of clipped_impute as the per-pixel work reads them (contiguous; the
// pixel n's rows start at n·C, n·H and n·L).
template <typename scalar_t>
struct ClippedInputs {
  int64_t C, L, H, K;
  const scalar_t *x, *context, *mu, *sd, *eps, *w_latent, *w_out, *b_out;
  const bool* lost;
  double clip, min_scale;
  bool censored;
};

// clipped_impute's tensors, checked and contiguous.
struct ClippedTensors {
  at::Tensor x, lost, context, mu, std, eps, w_latent, w_out, b_out;
  double clip, min_scale;
  bool censored;

  template <typename scalar_t>
  ClippedInputs<scalar_t> inputs() const {
    return {x.size(1),
            mu.size(1),
            context.size(1),
            eps.size(0),
            x.const_data_ptr<scalar_t>(),
            context.const_data_ptr<scalar_t>(),
            mu.const_data_ptr<scalar_t>(),
            std.const_data_ptr<scalar_t>(),
            eps.const_data_ptr<scalar_t>(),
            w_latent.const_data_ptr<scalar_t>(),
            w_out.const_data_ptr<scalar_t>(),
            b_out.const_data_ptr<scalar_t>(),
            lost.const_data_ptr<bool>(),
            clip,
            min_scale,
            censored};
  }
};

inline ClippedTensors clipped_tensors(const at::Tensor& x, const at::Tensor& lost,
                                      const at::Tensor& context, const at::Tensor& mu,
                                      const at::Tensor& std, const at::Tensor& eps,
                                      const at::Tensor& w_latent, const at::Tensor& w_out,
                                      const at::Tensor& b_out, double clip, double min_scale,
                                      bool censored) {
  check_clipped_impute(x, lost, context, mu, std, eps, w_latent, w_out, b_out, clip, min_scale);
  return {x.contiguous(),
          lost.contiguous(),
          context.contiguous(),
          mu.contiguous(),
          std.contiguous(),
          eps.contiguous(),
          w_latent.contiguous(),
          w_out.contiguous(),
          b_out.contiguous(),
          clip,
          min_scale,
          censored};
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

constexpr int kBlock = kClippedSampleBlock;

// The first layer's per-pixel slopes slope_l = W[:, l] · std_l, kept when kKeep: the
// CPU's draws then read L contiguous rows (its loops vectorise). A CUDA thread keeps none
// (an L·H array per thread sits in local memory, which the driver reserves for every
// resident thread) and reads W[:, l] · (std_l · eps_l) from the weights, which all its
// threads share.
template <typename T, bool kKeep>
struct FirstLayerSlopes {
  T v[kClippedMaxLatent * kClippedMaxHidden];
};
template <typename T>
struct FirstLayerSlopes<T, false> {};

// The decoder's first layer for pixel n, split as base + Σ_l slope_l · eps_l (base =
// context + W·mu, slope_l = W[:, l]·std_l), so each draw costs L multiply-adds per hidden
// unit. Returns Σ_l log std_l.
template <typename T, bool kKeep, typename scalar_t>
NOTMIWAE_HOST_DEVICE T clipped_first_layer(const ClippedInputs<scalar_t>& in, int64_t n,
                                           T (&base)[kClippedMaxHidden],
                                           FirstLayerSlopes<T, kKeep>& slope) {
  const int64_t L = in.L, H = in.H;
  const scalar_t *context = in.context + n * H, *mu = in.mu + n * L, *sd = in.sd + n * L;
  T log_std_sum = 0;
  for (int64_t j = 0; j < H; ++j) base[j] = static_cast<T>(context[j]);
  for (int64_t l = 0; l < L; ++l) {
    const T m = static_cast<T>(mu[l]), s = static_cast<T>(sd[l]);
    log_std_sum += log(s);
    for (int64_t j = 0; j < H; ++j) {
      const T w = static_cast<T>(in.w_latent[j * L + l]);
      base[j] += w * m;
      if constexpr (kKeep) slope.v[l * H + j] = w * s;
    }
  }
  return log_std_sum;
}

// The decoder's outputs loc[c][b], scale[c][b] (raw) and the latent part of log_w[b] of the
// draws k0 + b, b < nb, of pixel n; the lanes nb .. lanes get finite values and zero weight.
template <typename T, bool kKeep, typename scalar_t>
NOTMIWAE_HOST_DEVICE void clipped_decode_block(
    const ClippedInputs<scalar_t>& in, int64_t n, int64_t k0, int nb, int lanes, T log_std_sum,
    const T (&base)[kClippedMaxHidden], const FirstLayerSlopes<T, kKeep>& slope,
    T (&hidden)[kClippedMaxHidden], T (&loc)[kClippedMaxChannels][kBlock],
    T (&scale)[kClippedMaxChannels][kBlock], T (&log_w)[kBlock]) {
  const int64_t C = in.C, L = in.L, H = in.H;
  const scalar_t *mu = in.mu + n * L, *sd = in.sd + n * L;
  for (int b = nb; b < lanes; ++b) {
    for (int64_t c = 0; c < C; ++c) loc[c][b] = scale[c][b] = T(0);
    log_w[b] = neg_inf<T>();
  }
  for (int b = 0; b < nb; ++b) {
    const scalar_t* e_k = in.eps + (k0 + b) * L;
    T lw = log_std_sum;  // log N(z; 0, I) − log N(z; mu, std): the 2π terms cancel
    for (int64_t j = 0; j < H; ++j) hidden[j] = base[j];
    for (int64_t l = 0; l < L; ++l) {
      const T e = static_cast<T>(e_k[l]);
      const T z = static_cast<T>(mu[l]) + static_cast<T>(sd[l]) * e;
      lw += T(0.5) * (e * e - z * z);
      if constexpr (kKeep) {
        const T* sl = slope.v + l * H;
        for (int64_t j = 0; j < H; ++j) hidden[j] += sl[j] * e;
      } else {
        const T se = static_cast<T>(sd[l]) * e;
        for (int64_t j = 0; j < H; ++j) hidden[j] += static_cast<T>(in.w_latent[j * L + l]) * se;
      }
    }
    for (int64_t j = 0; j < H; ++j) hidden[j] = hidden[j] > T(0) ? hidden[j] : T(0);
    for (int64_t c = 0; c < C; ++c) {
      loc[c][b] = static_cast<T>(in.b_out[c]) + dot8(in.w_out + c * H, hidden, H);
      scale[c][b] = static_cast<T>(in.b_out[C + c]) + dot8(in.w_out + (C + c) * H, hidden, H);
    }
    log_w[b] = lw;
  }
}

// One channel's terms across a block of draws, one formula per loop (the branches are on
// the pixel's own values, outside the loops): the scale from its raw value, the channel's
// term of log_w and, when lost, its imputed value.
template <typename F, typename T>
NOTMIWAE_HOST_DEVICE void clipped_channel_terms(int lanes, bool lost, bool censored, T x, T clip,
                                                T min_scale, const T (&loc)[kBlock],
                                                T (&scale)[kBlock], T (&value)[kBlock],
                                                T (&log_w)[kBlock]) {
  for (int b = 0; b < lanes; ++b) scale[b] = softplus_scale<F>(scale[b], min_scale);
  if (lost && censored) {
    for (int b = 0; b < lanes; ++b) {
      const ClippedTerm<T> term = clipped_term<F>(loc[b], scale[b], clip);
      log_w[b] += term.log_p;
      value[b] = term.mean;
    }
  } else if (lost) {  // MIWAE: the lost values left out of the weights
    for (int b = 0; b < lanes; ++b)
      value[b] = loc[b] < T(0) ? T(0) : (loc[b] > T(1) ? T(1) : loc[b]);
  } else if (x <= T(0) || x >= T(1)) {
    // observed at an edge of the censored normal: the mass P(y ≤ 0) or P(y ≥ 1),
    // log Φ(t) with t = −loc/s or (loc − 1)/s
    const bool bottom = x <= T(0);
    const T sign = bottom ? T(-1) : T(1), shift = bottom ? T(0) : T(1);
    for (int b = 0; b < lanes; ++b) log_w[b] += log_ndtr<F>((sign * loc[b] - shift) / scale[b]);
  } else {  // observed inside (0, 1): the density
    for (int b = 0; b < lanes; ++b) log_w[b] += normal_log_density<F>(x, loc[b], scale[b]);
  }
}

// A running softmax-weighted sum over the draws: max_log_w, sum_w = Σ exp(log w − max) and
// acc[c] = Σ exp(log w − max) · value[c] of the lost channels.
template <typename T>
struct ClippedSums {
  T max_log_w, sum_w;
  T acc[kClippedMaxChannels];
};

// Adds a block's draws to the sums (a zero weight or NaN adds nothing); log_w becomes
// the block's weights.
template <typename F, typename T>
NOTMIWAE_HOST_DEVICE void clipped_add_block(int lanes, int64_t C, const bool* lost,
                                            T (&log_w)[kBlock],
                                            const T (&value)[kClippedMaxChannels][kBlock],
                                            ClippedSums<T>& s) {
  T block_max = neg_inf<T>();
  for (int b = 0; b < lanes; ++b) block_max = log_w[b] > block_max ? log_w[b] : block_max;
  if (!(block_max > neg_inf<T>())) return;
  if (block_max > s.max_log_w) {
    const T shrink = s.max_log_w > neg_inf<T>() ? F::Exp(s.max_log_w - block_max) : T(0);
    s.sum_w *= shrink;
    for (int64_t c = 0; c < C; ++c) s.acc[c] *= shrink;
    s.max_log_w = block_max;
  }
  for (int b = 0; b < lanes; ++b) {
    const T w = log_w[b] > neg_inf<T>() ? F::Exp(log_w[b] - s.max_log_w) : T(0);
    log_w[b] = w;
    s.sum_w += w;
  }
  for (int64_t c = 0; c < C; ++c) {
    if (!lost[c]) continue;
    T a = 0;
    for (int b = 0; b < lanes; ++b) a += log_w[b] * value[c][b];
    s.acc[c] += a;
  }
}

// Pixel n of clipped_impute (see the top of this file) into out [C], in the accumulation
// type T; scalar_t is the storage type of the tensors, F the elementary functions
// (math.h's policy). The draws go in blocks of kClippedSampleBlock: the decoder's outputs
// of a block first, then each channel's likelihood terms across the block (branch-free
// loops of one formula: the CPU vectorises them), then the block's weights into the
// running sums. kPadded: the per-channel loops run over all lanes of every block (the
// unused ones get weight zero), a trip count the CPU compiler knows, so they vectorise
// with no scalar remainder, and the first layer's slopes are kept (FirstLayerSlopes);
// the GPU (kPadded false) runs only the draws there are and keeps no slopes.
template <typename F, bool kPadded, typename T, typename scalar_t>
NOTMIWAE_HOST_DEVICE void clipped_impute_pixel(const ClippedInputs<scalar_t>& in, int64_t n,
                                               scalar_t* out) {
  const int64_t C = in.C;
  const scalar_t* x = in.x + n * C;
  const bool* lost = in.lost + n * C;
  const T clip = static_cast<T>(in.clip), min_scale = static_cast<T>(in.min_scale);
  T base[kClippedMaxHidden], hidden[kClippedMaxHidden];
  FirstLayerSlopes<T, kPadded> slope;  // kept on the CPU only (see FirstLayerSlopes)
  T loc[kClippedMaxChannels][kBlock], scale[kClippedMaxChannels][kBlock];
  T value[kClippedMaxChannels][kBlock], log_w[kBlock];
  const T log_std_sum = clipped_first_layer(in, n, base, slope);
  ClippedSums<T> sums{neg_inf<T>(), T(0), {}};
  for (int64_t k0 = 0; k0 < in.K; k0 += kBlock) {
    const int nb = static_cast<int>(in.K - k0 < kBlock ? in.K - k0 : kBlock);
    const int lanes = kPadded ? kBlock : nb;
    clipped_decode_block(in, n, k0, nb, lanes, log_std_sum, base, slope, hidden, loc, scale, log_w);
    for (int64_t c = 0; c < C; ++c)
      clipped_channel_terms<F>(lanes, lost[c], in.censored, static_cast<T>(x[c]), clip, min_scale,
                               loc[c], scale[c], value[c], log_w);
    clipped_add_block<F>(lanes, C, lost, log_w, value, sums);
  }
  for (int64_t c = 0; c < C; ++c) {
    const T imputed = sums.sum_w > T(0) ? sums.acc[c] / sums.sum_w : clip;
    out[c] = lost[c] ? static_cast<scalar_t>(imputed) : x[c];
  }
}

}  // namespace math
}  // namespace notmiwae_fast
