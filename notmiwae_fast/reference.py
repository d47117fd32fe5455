"""The pure-PyTorch twin of every notmiwae_fast operator (../SPEC section 2).

These functions are the source of truth: the tests compare the C++ and CUDA kernels to
them, the package falls back to them when the compiled library is absent, and export
to ONNX traces them. They favour clarity over speed, use only differentiable PyTorch
operations (so autograd gives their gradients), and follow the same edge-case rules as
the kernels:

* a row of log-weights that are all ``-inf`` has no mass: ``iw_logmeanexp`` gives
  ``-inf``, ``iw_weights`` and ``iw_impute`` give zeros, and every gradient is zero,
  never NaN;
* entries under ``mask == 0`` contribute exactly 0 to the masked likelihoods, whatever
  ``x`` holds there (NaN and ±inf included), to the values and to the gradients;
* log-sigmoids are computed in softplus form, finite for logits up to ±1e4.

Shapes: ``x``, ``mask``: [B, D] (broadcast over K); per-sample tensors: [B, K, D];
per-feature parameters: [D]; log-weights: [B, K]. ``mask`` is bool or 0/1 float.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

__all__ = [
    "observed_data",
    "iw_logmeanexp",
    "iw_weights",
    "iw_impute",
    "masked_normal_logprob",
    "masked_bernoulli_logprob",
    "masked_studentt_logprob",
    "selfmask_logprob",
    "notmiwae_normal_terms",
    "mlp_tanh",
    "softplus_scale",
    "latent_terms",
    "gauss_bound",
    "gauss_bound_grads",
    "clipped_impute",
]



# --------------------------------------------------------------------------------------
# Importance weighting
# --------------------------------------------------------------------------------------
def _row_lse(log_w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row log-sum-exp over the last dim of ``log_w`` [B, K], safe for all -inf rows.

    Returns ``(lse, has_mass)``, both [B, 1]: ``lse`` is -inf where the row has no mass,
    and its gradient is finite (zero) there.
    """
    row_max = log_w.amax(dim=-1, keepdim=True).detach()
    shift = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    total = torch.exp(log_w - shift).sum(dim=-1, keepdim=True)
    has_mass = total > 0
    safe_total = torch.where(has_mass, total, torch.ones_like(total))
    lse = torch.where(has_mass, torch.log(safe_total) + shift,
                      torch.full_like(total, -math.inf))
    return lse, has_mass


def iw_logmeanexp(log_w: Tensor) -> Tensor:
    """log( (1/K) Σ_k exp(log_w[b, k]) ).

    Args:
        log_w: [B, K] log importance weights.
    Returns:
        [B]; ``-inf`` for a row of ``-inf`` only (with zero gradient).
    """
    lse, _ = _row_lse(log_w)
    return lse.squeeze(-1) - math.log(log_w.shape[-1])


def iw_weights(log_w: Tensor) -> Tensor:
    """Self-normalised importance weights: softmax of ``log_w`` [B, K] over K.

    Returns:
        [B, K]; rows of ``-inf`` only give zeros.
    """
    lse, has_mass = _row_lse(log_w)
    safe_lse = torch.where(has_mass, lse, torch.zeros_like(lse))
    return torch.where(has_mass, torch.exp(log_w - safe_lse), torch.zeros_like(log_w))


def iw_impute(log_w: Tensor, values: Tensor) -> Tensor:
    """Σ_k softmax(log_w)[b, k] · values[b, k, d].

    Args:
        log_w: [B, K] log importance weights.
        values: [B, K, D] per-sample values (e.g. the decoder means).
    Returns:
        [B, D]; rows of ``-inf`` log-weights only give zeros.
    """
    w = iw_weights(log_w)
    # Samples with zero weight contribute nothing, even where their values are inf/NaN.
    safe_values = torch.where(w.unsqueeze(-1) > 0, values, torch.zeros_like(values))
    return torch.einsum("bk,bkd->bd", w, safe_values)


# --------------------------------------------------------------------------------------
# Masked likelihoods. Masked-out entries are replaced by a harmless value *before* any
# arithmetic so that neither the result nor the gradients see what was stored there.
# --------------------------------------------------------------------------------------
def _observed(x: Tensor, mask: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """([B, 1, D] x with zeros under the mask, [B, 1, D] bool mask)."""
    observed = (mask != 0).unsqueeze(1)
    x0 = torch.where(observed, x.unsqueeze(1).to(dtype), torch.zeros((), dtype=dtype,
                                                                      device=x.device))
    return x0, observed


def _masked_sum(per_element: Tensor, observed: Tensor) -> Tensor:
    """Σ_d over observed entries of a [B, K, D] tensor -> [B, K]."""
    return torch.where(observed, per_element, torch.zeros_like(per_element)).sum(dim=-1)


def normal_log_density(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """Element-wise log N(x; loc, scale)."""
    z = (x - loc) / scale
    return -0.5 * z * z - torch.log(scale) - 0.5 * math.log(2.0 * math.pi)


def masked_normal_logprob(x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """Σ_d mask[b, d] · log N(x[b, d]; loc[b, k, d], scale[b, k, d]).

    Args:
        x: [B, D] data (anything under mask = 0). mask: [B, D] bool or 0/1.
        loc, scale: [B, K, D] decoder parameters (scale > 0).
    Returns:
        [B, K]
    """
    x0, observed = _observed(x, mask, loc.dtype)
    x0 = torch.where(observed, x0, loc)  # unobserved: a point of finite density
    return _masked_sum(normal_log_density(x0, loc, scale), observed)


def masked_bernoulli_logprob(x: Tensor, mask: Tensor, logits: Tensor) -> Tensor:
    """Σ_d mask · (x · log σ(l) + (1 − x) · log σ(−l)).

    Args:
        x: [B, D] in [0, 1] (anything under mask = 0). mask: [B, D] bool or 0/1.
        logits: [B, K, D].
    Returns:
        [B, K]
    """
    x0, observed = _observed(x, mask, logits.dtype)
    per_element = x0 * F.logsigmoid(logits) + (1 - x0) * F.logsigmoid(-logits)
    return _masked_sum(per_element, observed)


def studentt_log_normaliser(df: Tensor) -> Tensor:
    """The df-only part of log StudentT: lgamma((df+1)/2) − lgamma(df/2) − ½ log(df π)."""
    return torch.lgamma(0.5 * (df + 1)) - torch.lgamma(0.5 * df) - 0.5 * torch.log(df * math.pi)


def studentt_log_density(x: Tensor, loc: Tensor, scale: Tensor, df: Tensor,
                         log_normaliser: Tensor) -> Tensor:
    """Element-wise log StudentT(x; df, loc, scale), given studentt_log_normaliser(df)."""
    z = (x - loc) / scale
    return log_normaliser - torch.log(scale) - 0.5 * (df + 1) * torch.log1p(z * z / df)


def masked_studentt_logprob_normalised(x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor,
                                       df: Tensor, log_normaliser: Tensor) -> Tensor:
    """masked_studentt_logprob with the df-only constant given (export: ONNX has no
    lgamma, and df is fixed once trained)."""
    x0, observed = _observed(x, mask, loc.dtype)
    x0 = torch.where(observed, x0, loc)
    return _masked_sum(studentt_log_density(x0, loc, scale, df, log_normaliser), observed)


def masked_studentt_logprob(x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor,
                            df: Tensor) -> Tensor:
    """Σ_d mask · log StudentT(x[b, d]; df[d], loc[b, k, d], scale[b, k, d]).

    Args:
        x: [B, D]. mask: [B, D] bool or 0/1. loc, scale: [B, K, D]. df: [D] (> 0).
    Returns:
        [B, K]
    """
    return masked_studentt_logprob_normalised(x, mask, loc, scale, df,
                                              studentt_log_normaliser(df))


# --------------------------------------------------------------------------------------
# The self-masking missing process and the fused not-MIWAE terms
# --------------------------------------------------------------------------------------
def selfmask_logprob(x_full: Tensor, mask: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """Σ_d log Bernoulli(mask[b, d]; σ(−W[d] · (x_full[b, k, d] − b[d]))).

    Every feature contributes (observed ones with s = 1, missing ones with s = 0).

    Args:
        x_full: [B, K, D] complete samples (observed entries and imputed ones).
        mask: [B, D] bool or 0/1. W, b: [D].
    Returns:
        [B, K]
    """
    logits = -W * (x_full - b)
    s = mask.to(x_full.dtype).unsqueeze(1)
    return (s * F.logsigmoid(logits) + (1 - s) * F.logsigmoid(-logits)).sum(dim=-1)


def notmiwae_normal_terms(x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, eps: Tensor,
                          W: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """The two data terms of the not-MIWAE bound with a Normal decoder.

    x̂ = mask · x + (1 − mask) · (loc + scale · eps) (reparameterised sample at the
    missing entries), then ``(masked_normal_logprob(x, mask, loc, scale),
    selfmask_logprob(x̂, mask, W, b))``.

    Args:
        x: [B, D]. mask: [B, D] bool or 0/1. loc, scale, eps: [B, K, D]. W, b: [D].
    Returns:
        (log p(x° | z) [B, K], log p(s | x̂) [B, K])
    """
    x0, observed = _observed(x, mask, loc.dtype)
    x_hat = torch.where(observed, x0, loc + scale * eps)
    return masked_normal_logprob(x, mask, loc, scale), selfmask_logprob(x_hat, mask, W, b)


# --------------------------------------------------------------------------------------
# Multi-layer perceptrons
# --------------------------------------------------------------------------------------
def mlp_tanh(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """y = L_n(tanh(L_{n−1}(… tanh(L_1(x))))), L_i(h) = h W_iᵀ + b_i (the paper's networks).

    Args:
        x: [N, in]. weights: n tensors, weights[i] [out_i, in_i] (nn.Linear's layout).
        biases: n tensors, biases[i] [out_i].
    Returns:
        [N, out_n]
    """
    h = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = F.linear(h, w, b)
        if i + 1 < len(weights):
            h = torch.tanh(h)
    return h


def softplus_scale(raw: Tensor, min_scale: float) -> Tensor:
    """The decoders' positive scale, softplus(raw) + min_scale, element-wise (any shape)."""
    return F.softplus(raw) + min_scale


# --------------------------------------------------------------------------------------
# The latent samples
# --------------------------------------------------------------------------------------
def latent_terms(mu: Tensor, std: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """z = mu + std · eps and its log-densities under the prior and the encoder.

    Args:
        mu, std: [B, L] the encoder's q(z | x) = N(mu, diag std²). eps: [B, K, L] standard
            normal noise.
    Returns:
        (z [B, K, L], log p(z) [B, K] = Σ_l log N(z; 0, 1), log q(z | x) [B, K] =
        Σ_l log N(z; mu, std)). Gradients flow to mu and std, not to eps.
    """
    eps = eps.detach()
    z = mu.unsqueeze(1) + std.unsqueeze(1) * eps
    constant = 0.5 * mu.shape[-1] * math.log(2 * math.pi)
    log_p = -0.5 * (z * z).sum(-1) - constant
    log_q = (-0.5 * (eps * eps) - torch.log(std).unsqueeze(1)).sum(-1) - constant
    return z, log_p, log_q


# --------------------------------------------------------------------------------------
# The whole bound of a Gaussian-decoder model
# --------------------------------------------------------------------------------------
# The encoders' log σ² is clamped to [−10, 10]: here, kLogVarBound in
# csrc/composite/bound_composite.cpp, and as literals in networks.Encoder and the image
# encoders (TorchScript, which exports them, takes no float globals).
LOG_VAR_BOUND = 10.0


def gauss_bound(x: Tensor, mask: Tensor, eps_z: Tensor, eps_x, enc_weights: list[Tensor],
                enc_biases: list[Tensor], dec_weights: list[Tensor], dec_biases: list[Tensor],
                W, b, min_scale: float) -> tuple[Tensor, ...]:
    """The importance-weighted bound of a Gaussian-decoder MIWAE (W = b = None) or
    self-masking not-MIWAE, from the networks' weights and the noise.

    encoder MLP(x) = [μ, log σ²] (log σ² clamped to ±10), z = μ + σ·eps_z; decoder
    MLP(z) = [loc, raw], scale = softplus(raw) + min_scale; log w = log p(x°|z)
    (+ log p(s|x̂), x̂ from eps_x) + log p(z) − log q(z|x).

    Args:
        x: [B, D] zero-filled data. mask: [B, D] (1 = observed), x's dtype.
        eps_z: [B, K, L]. eps_x: [B, K, D] or None (needed with W, b).
        enc_weights / enc_biases: the encoder's layers (last one 2L outputs);
        dec_weights / dec_biases: the decoder's (last one 2D outputs). W, b: [D] or None.
    Returns:
        (bound [B], log_w [B, K], log p(x°|z), log p(s|x̂) (zeros without W), log p(z),
        log q(z|x)), the last four [B, K].
    """
    B, K, L = eps_z.shape
    D = x.shape[1]
    h = mlp_tanh(x, enc_weights, enc_biases)
    mu, log_var = h[:, :L], h[:, L:]
    std = torch.exp(0.5 * log_var.clamp(-LOG_VAR_BOUND, LOG_VAR_BOUND))
    z, log_pz, log_qz = latent_terms(mu, std, eps_z)
    params = mlp_tanh(z.reshape(B * K, L), dec_weights, dec_biases).reshape(B, K, 2 * D)
    loc, scale = params[..., :D], softplus_scale(params[..., D:], min_scale)
    if W is None:
        log_px = masked_normal_logprob(x, mask, loc, scale)
        log_ps = torch.zeros_like(log_px)
        log_w = log_px + log_pz - log_qz
    else:
        log_px, log_ps = notmiwae_normal_terms(x, mask, loc, scale, eps_x, W, b)
        log_w = log_px + log_ps + log_pz - log_qz
    return iw_logmeanexp(log_w), log_w, log_px, log_ps, log_pz, log_qz


def gauss_bound_grads(x: Tensor, mask: Tensor, eps_z: Tensor, eps_x, enc_weights: list[Tensor],
                      enc_biases: list[Tensor], dec_weights: list[Tensor],
                      dec_biases: list[Tensor], W, b, min_scale: float) -> tuple:
    """:func:`gauss_bound`'s six results and the gradients of the loss −mean(bound) with
    respect to enc_weights, enc_biases, dec_weights, dec_biases (each list in order), then
    W and b when given (torch.autograd.grad through :func:`gauss_bound`). Returns
    (bound, log_w, log p(x°|z), log p(s|x̂), log p(z), log q(z|x), [gradients]), all
    detached."""
    params = [*enc_weights, *enc_biases, *dec_weights, *dec_biases]
    if W is not None:
        params += [W, b]
    with torch.enable_grad():
        leaves = [p.detach().requires_grad_() for p in params]
        n_e, n_d = len(enc_weights), len(dec_weights)
        ew, eb = leaves[:n_e], leaves[n_e:2 * n_e]
        dw, db = leaves[2 * n_e:2 * n_e + n_d], leaves[2 * n_e + n_d:2 * n_e + 2 * n_d]
        Wb = leaves[2 * n_e + 2 * n_d:] or [None, None]
        out = gauss_bound(x, mask, eps_z, eps_x, ew, eb, dw, db, Wb[0], Wb[1], min_scale)
        grads = torch.autograd.grad(-out[0].mean(), leaves, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
    return tuple(o.detach() for o in out) + (grads,)


def observed_data(x: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The models' input: x [*] floating and its mask s (bool, integer or floating,
    nonzero = observed) of x's shape. Returns (x with 0 where s = 0, s as 0/1 of x's
    dtype, counts int64 [2]: the entries of s other than 0 and 1 (NaN included) and the
    observed entries of x that are NaN or ±inf)."""
    observed = s != 0
    not_01 = (observed & (s != 1)).sum()
    not_finite = (observed & ~torch.isfinite(x)).sum()
    return (torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device)),
            observed.to(x.dtype), torch.stack([not_01, not_finite]))


# --------------------------------------------------------------------------------------
# Clipped pixels: the censored normal y ~ N(loc, scale²), x = clip(y, 0, 1)
# --------------------------------------------------------------------------------------
def censored_normal_log_prob(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """Element-wise log-likelihood of observed values x in [0, 1]: the normal density,
    or the mass at the edges (x ≤ 0: P(y ≤ 0); x ≥ 1: P(y ≥ 1))."""
    t = (x - loc) / scale
    density = -0.5 * t * t - torch.log(scale) - _HALF_LOG_2PI
    density = torch.where(x <= 0, torch.special.log_ndtr(-loc / scale), density)
    return torch.where(x >= 1, torch.special.log_ndtr((loc - 1) / scale), density)


def mills_ratio(a: Tensor) -> Tensor:
    """φ(a) / Φ(−a), element-wise, for any a: √(2/π) / erfcx(a/√2) for a ≥ 0 (the
    exp(−a²/2) factors cancel analytically), φ(a) / Φ(−a) directly below."""
    root_half = math.sqrt(0.5)
    upper = math.sqrt(2 / math.pi) / torch.special.erfcx(a.clamp_min(0.0) * root_half)
    lower = torch.exp(-0.5 * a * a - _HALF_LOG_2PI) / torch.special.ndtr(-a)
    return torch.where(a >= 0, upper, lower)


def clipped_mean(loc: Tensor, scale: Tensor, clip) -> Tensor:
    """E[min(y, 1) | y ≥ clip] for y ~ N(loc, scale²), element-wise, in [clip, 1].

    With a = (clip − loc)/s and b = (1 − loc)/s: loc + s·λ(a) (the mean above clip, λ
    the inverse Mills ratio) less s·(e^{−(b−a)(b+a)/2}·λ(a) − b·Φ(−b)/Φ(−a)) (the part
    above 1), no tail probability left to underflow."""
    a, b = (clip - loc) / scale, (1.0 - loc) / scale
    lam = mills_ratio(a)
    upper = a >= 0  # then b ≥ 0: erfcx ratios times e^{−(b²−a²)/2} ≤ 1
    decay = torch.exp(-0.5 * (b - a) * (b + a).clamp_min(0.0))
    root_half = math.sqrt(0.5)
    above_upper = (torch.special.erfcx(b.clamp_min(0.0) * root_half)
                   / torch.special.erfcx(a.clamp_min(0.0) * root_half)) * decay
    tail_a = torch.special.ndtr(-a)  # ≥ 1/2 where a < 0
    density_b = torch.where(upper, decay * lam,
                            torch.exp(-0.5 * b * b - _HALF_LOG_2PI) / tail_a)
    above = torch.where(upper, above_upper, torch.special.ndtr(-b) / tail_a)
    mean = loc + scale * lam - scale * (density_b - b * above)
    clip = torch.as_tensor(clip, dtype=mean.dtype, device=mean.device)
    return torch.minimum(torch.maximum(mean, clip), torch.ones_like(mean))


def clipped_log_weights(x: Tensor, lost: Tensor, loc: Tensor, scale: Tensor, z: Tensor,
                        eps: Tensor, std: Tensor, clip, censored: bool,
                        censor: Optional[Tensor] = None) -> Tensor:
    """The clipped-pixel model's importance log-weights [K, N]: log p(x°, s | z) + log p(z)
    − log q(z), the censored-normal terms summed over the C channels.

    Args:
        x, lost: [N, C]; loc, scale: [K, N, C] the decoder's; z: [K, N, L] the draws,
            eps: their standard normal noise ([K, N, L] or [K, 1, L]), std: [N, L] q's.
        clip: the clip level (a number or [N, 1]).
        censored: a lost value adds log P(y ≥ clip) (not-MIWAE), or nothing (MIWAE).
        censor: [N, C] the values whose term is log P(y ≥ clip) (default ``lost``; all
            False: complete data, every value's own likelihood).
    """
    censor = lost if censor is None else censor
    log_obs = censored_normal_log_prob(x, loc, scale)
    if censored:
        log_lost = torch.special.log_ndtr((loc - clip) / scale)
    else:
        log_lost = torch.zeros_like(loc)
    log_px = torch.where(censor, log_lost, log_obs).sum(-1)
    log_pz = -0.5 * (z * z).sum(-1)
    log_qz = (-0.5 * eps * eps).sum(-1) - torch.log(std).sum(-1)
    return log_px + log_pz - log_qz


def clipped_impute(x: Tensor, lost: Tensor, context: Tensor, mu: Tensor, std: Tensor,
                   eps: Tensor, w_latent: Tensor, w_out: Tensor, b_out: Tensor, clip: float,
                   min_scale: float, censored: bool) -> Tensor:
    """The clipped-pixel model's imputation of N pixels of C channels.

    Args:
        x, lost: [N, C] values in [0, 1] and which are lost (bool).
        context: [N, H] the decoder's context part (W_h h + b).
        mu, std: [N, L] the encoder's q(z). eps: [K, L] draws shared by the pixels.
        w_latent: [H, L]; w_out: [2C, H]; b_out: [2C] (the decoder's other weights).
        clip: the clip level; min_scale: the decoder's scale floor.
        censored: the clipping process in the weights and imputations (not-MIWAE), or
            not (MIWAE: lost values ignored, imputed by the decoder's mean in [0, 1]).
    Returns:
        [N, C]: x with its lost values replaced by Σ_k w_k value_k (see
        csrc/include/notmiwae_fast/clipped.h); a pixel whose weights all vanish gets clip.
    """
    eps = eps[:, None, :]  # [K, 1, L], shared by the pixels
    z = mu + std * eps  # [K, N, L]
    hidden = torch.relu(context + z @ w_latent.T)  # [K, N, H]
    loc, raw = (hidden @ w_out.T + b_out).chunk(2, -1)  # [K, N, C] each
    scale = softplus_scale(raw, min_scale)
    log_w = clipped_log_weights(x, lost, loc, scale, z, eps, std, clip, censored)
    values = clipped_mean(loc, scale, clip) if censored else loc.clamp(0.0, 1.0)
    w = torch.softmax(log_w, 0).unsqueeze(-1)  # [K, N, 1]
    imputed = torch.nansum(w * values, 0)
    imputed = torch.where(torch.isnan(w).any(0), torch.full_like(imputed, clip), imputed)
    return torch.where(lost, imputed, x)

