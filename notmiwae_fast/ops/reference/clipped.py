"""The pure-PyTorch twin of clipped_impute, the clipped-pixel model's imputation, and the
pieces it is built of: the censored normal y ~ N(loc, scale²) seen as x = clip(y, 0, 1)."""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from .mlp import softplus_scale

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


__all__ = [
    "censored_normal_log_prob",
    "mills_ratio",
    "clipped_mean",
    "clipped_log_weights",
    "clipped_impute",
]


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


def clipped_mean(loc: Tensor, scale: Tensor, clip: Union[float, Tensor]) -> Tensor:
    """E[min(y, 1) | y ≥ clip] for y ~ N(loc, scale²), element-wise, in [clip, 1].

    With a = (clip − loc)/s and b = (1 − loc)/s: loc + s·λ(a) (the mean above clip, λ
    the inverse Mills ratio) less s·(e^{−(b−a)(b+a)/2}·λ(a) − b·Φ(−b)/Φ(−a)) (the part
    above 1), no tail probability left to underflow."""
    a, b = (clip - loc) / scale, (1.0 - loc) / scale
    lam = mills_ratio(a)
    upper = a >= 0  # then b ≥ 0: erfcx ratios times e^{−(b²−a²)/2} ≤ 1
    decay = torch.exp(-0.5 * (b - a) * (b + a).clamp_min(0.0))
    root_half = math.sqrt(0.5)
    above_upper = (
        torch.special.erfcx(b.clamp_min(0.0) * root_half)
        / torch.special.erfcx(a.clamp_min(0.0) * root_half)
    ) * decay
    tail_a = torch.special.ndtr(-a)  # ≥ 1/2 where a < 0
    density_b = torch.where(upper, decay * lam, torch.exp(-0.5 * b * b - _HALF_LOG_2PI) / tail_a)
    above = torch.where(upper, above_upper, torch.special.ndtr(-b) / tail_a)
    mean = loc + scale * lam - scale * (density_b - b * above)
    clip = torch.as_tensor(clip, dtype=mean.dtype, device=mean.device)
    return torch.minimum(torch.maximum(mean, clip), torch.ones_like(mean))


def clipped_log_weights(
    x: Tensor,
    lost: Tensor,
    loc: Tensor,
    scale: Tensor,
    z: Tensor,
    eps: Tensor,
    std: Tensor,
    clip: Union[float, Tensor],
    censored: bool,
    censor: Optional[Tensor] = None,
) -> Tensor:
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


def clipped_impute(
    x: Tensor,
    lost: Tensor,
    context: Tensor,
    mu: Tensor,
    std: Tensor,
    eps: Tensor,
    w_latent: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    clip: float,
    min_scale: float,
    censored: bool,
) -> Tensor:
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
