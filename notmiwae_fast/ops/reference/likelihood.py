"""The pure-PyTorch twins of the likelihood operators: masked likelihoods (Normal,
Bernoulli, Student-t, Poisson, categorical), the self-masking missing process and the
fused not-MIWAE terms, with the element-wise densities they are built of. Shapes: x, mask
[B, D] (mask bool or 0/1 float); per-sample tensors [B, K, D]; per-feature W, b, df [D];
results [B, K]. The categorical op has its own: x, mask [B, G], logits [B, K, T]."""

from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "normal_log_density",
    "studentt_log_normaliser",
    "studentt_log_density",
    "masked_studentt_logprob_normalised",
    "masked_normal_logprob",
    "masked_bernoulli_logprob",
    "masked_studentt_logprob",
    "masked_poisson_logprob",
    "masked_categorical_logprob",
    "selfmask_logprob",
    "notmiwae_normal_terms",
]


# --------------------------------------------------------------------------------------
# Masked likelihoods. Masked-out entries are replaced by a harmless value *before* any
# arithmetic so that neither the result nor the gradients see what was stored there.
# --------------------------------------------------------------------------------------
def _observed(x: Tensor, mask: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """([B, 1, D] x with zeros under the mask, [B, 1, D] bool mask)."""
    observed = (mask != 0).unsqueeze(1)
    x0 = torch.where(
        observed, x.unsqueeze(1).to(dtype), torch.zeros((), dtype=dtype, device=x.device)
    )
    return x0, observed


def _masked_sum(per_element: Tensor, observed: Tensor) -> Tensor:
    """Σ_d over observed entries of a [B, K, D] tensor -> [B, K]."""
    return torch.where(observed, per_element, torch.zeros_like(per_element)).sum(dim=-1)


def normal_log_density(x: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """Element-wise log N(x; loc, scale)."""
    z = (x - loc) / scale
    return -0.5 * z * z - torch.log(scale) - 0.5 * math.log(2.0 * math.pi)


def studentt_log_normaliser(df: Tensor) -> Tensor:
    """The df-only part of log StudentT: lgamma((df+1)/2) − lgamma(df/2) − ½ log(df π)."""
    return torch.lgamma(0.5 * (df + 1)) - torch.lgamma(0.5 * df) - 0.5 * torch.log(df * math.pi)


def studentt_log_density(
    x: Tensor, loc: Tensor, scale: Tensor, df: Tensor, log_normaliser: Tensor
) -> Tensor:
    """Element-wise log StudentT(x; df, loc, scale), given studentt_log_normaliser(df)."""
    z = (x - loc) / scale
    return log_normaliser - torch.log(scale) - 0.5 * (df + 1) * torch.log1p(z * z / df)


def masked_studentt_logprob_normalised(
    x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, df: Tensor, log_normaliser: Tensor
) -> Tensor:
    """masked_studentt_logprob with the df-only constant given (export: ONNX has no
    lgamma, and df is fixed once trained)."""
    x0, observed = _observed(x, mask, loc.dtype)
    x0 = torch.where(observed, x0, loc)
    return _masked_sum(studentt_log_density(x0, loc, scale, df, log_normaliser), observed)


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


def masked_studentt_logprob(
    x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, df: Tensor
) -> Tensor:
    """Σ_d mask · log StudentT(x[b, d]; df[d], loc[b, k, d], scale[b, k, d]).

    Args:
        x: [B, D]. mask: [B, D] bool or 0/1. loc, scale: [B, K, D]. df: [D] (> 0).
    Returns:
        [B, K]
    """
    return masked_studentt_logprob_normalised(x, mask, loc, scale, df, studentt_log_normaliser(df))


def masked_poisson_logprob(x: Tensor, mask: Tensor, log_rate: Tensor) -> Tensor:
    """Σ_d mask · (x · log λ − λ − lgamma(x + 1)), λ = exp(log_rate[b, k, d]).

    Args:
        x: [B, D] counts ≥ 0 (anything under mask = 0; a non-integer x gives the
            formula's continuous extension). mask: [B, D] bool or 0/1.
        log_rate: [B, K, D] log of the Poisson rate.
    Returns:
        [B, K]
    """
    x0, observed = _observed(x, mask, log_rate.dtype)
    per_element = x0 * log_rate - torch.exp(log_rate) - torch.lgamma(x0 + 1)
    return _masked_sum(per_element, observed)


def masked_categorical_logprob(
    x: Tensor, mask: Tensor, logits: Tensor, offsets: List[int]
) -> Tensor:
    """Σ_g mask[b, g] · log_softmax(logits[b, k, offsets[g]:offsets[g + 1]])[x[b, g]].

    An observed code that is not an integer in [0, n_g) (n_g = offsets[g + 1] −
    offsets[g]; NaN and ±inf included) has probability 0: its column contributes −inf
    and gives its logits no gradient. Masked columns contribute exactly 0.

    Args:
        x: [B, G] category codes 0 … n_g − 1, stored in logits' floating dtype
            (anything under mask = 0). mask: [B, G] bool or 0/1.
        logits: [B, K, T] the columns' logits side by side.
        offsets: G + 1 strictly increasing column starts, offsets[0] = 0, offsets[G] = T.
    Returns:
        [B, K]
    """
    B, K = logits.shape[0], logits.shape[1]
    observed = mask != 0
    total = torch.zeros(B, K, dtype=logits.dtype, device=logits.device)
    for g in range(len(offsets) - 1):
        n = offsets[g + 1] - offsets[g]
        code = x[:, g].to(logits.dtype)
        valid = observed[:, g] & (code >= 0) & (code < n) & (code == torch.floor(code))
        index = torch.where(valid, code, torch.zeros_like(code)).long()
        log_p = torch.log_softmax(logits[:, :, offsets[g] : offsets[g + 1]], dim=-1)
        picked = log_p.gather(-1, index.view(B, 1, 1).expand(B, K, 1)).squeeze(-1)
        term = torch.where(valid.unsqueeze(1), picked, torch.full_like(picked, -math.inf))
        total = total + torch.where(observed[:, g].unsqueeze(1), term, torch.zeros_like(term))
    return total


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


def notmiwae_normal_terms(
    x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, eps: Tensor, W: Tensor, b: Tensor
) -> tuple[Tensor, Tensor]:
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
