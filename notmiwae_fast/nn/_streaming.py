"""Importance-weighted means over many samples, by chunks: what imputation and the
supervised models' prediction run, so that their memory does not grow with the number
of importance samples.

Chunks are merged with the online softmax rule: with L_c = log Σ_{k in c} w_k, the
running mean m and mass L become m ← (e^L m + e^{L_c} m_c) / (e^L + e^{L_c}). Multiple
imputation keeps M sampling-importance-resampling draws by weighted reservoir sampling
over the chunks.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from .._common import validate as _validate
from ._types import Operators

# Elements of one [B, chunk, D] tensor during imputation (about 16 MB in float32).
IMPUTE_CHUNK_ELEMENTS = 1 << 22

Terms = dict[str, Tensor]


def chunk_size(row_elements: int, n_samples: int, requested: Optional[int]) -> int:
    """Samples per chunk: ``requested`` (at most n_samples), else as many as keep one
    [B, chunk, D] tensor (``row_elements`` = B · D) near IMPUTE_CHUNK_ELEMENTS."""
    if requested is not None:
        return min(_validate.positive_int(requested, "chunk_size"), n_samples)
    return max(1, min(n_samples, IMPUTE_CHUNK_ELEMENTS // max(1, row_elements)))


def weighted_mean(
    terms_of: Callable[[int], Terms],
    ops: Operators,
    like: Tensor,
    n_samples: int,
    chunk: int,
    value_fn: Callable[[Terms], Tensor],
    n_draws: Optional[int] = None,
) -> tuple[Tensor, Optional[Tensor]]:
    """Σ_k α_k value_fn(terms)_k over ``n_samples`` samples, ``chunk`` at a time.

    Args:
        terms_of: k -> the terms of k fresh samples of each row (``log_w`` [B, k], and
            ``draws`` [B, k, D] with ``n_draws``).
        ops: the operators (the model's backend).
        like: a [B, ...] tensor of the rows' dtype and device.
        value_fn: terms -> the per-sample values [B, k, V].
        n_draws: M, to also keep M resampled draws of ``terms["draws"]``.
    Returns:
        (mean [B, V], draws [M, B, D] or None); α = softmax of the log-weights.
    """
    mass = torch.full((like.shape[0],), -math.inf, dtype=like.dtype, device=like.device)
    mean: Optional[Tensor] = None
    picked: Optional[Tensor] = None
    for done in range(0, n_samples, chunk):
        k = min(chunk, n_samples - done)
        terms = terms_of(k)
        log_w = terms["log_w"]
        total, mean, take = merge_chunk(ops, log_w, value_fn(terms), k, mass, mean)
        if n_draws is not None:
            picked = _resample(picked, terms["draws"], ops.iw_weights(log_w), take, n_draws)
        mass = total
    if mean is None:
        raise ValueError(f"argument 'n_samples' must be an int >= 1; got {n_samples!r}")
    return mean, picked


def merge_chunk(
    ops: Operators, log_w: Tensor, values: Tensor, k: int, mass: Tensor, mean: Optional[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """One chunk of k samples (log-weights [B, k], values [B, k, V]) merged into the
    running mass [B] and mean [B, V] (None before the first chunk) by the online softmax
    rule; returns (the new mass, the new mean, the chunk's share of the new mass)."""
    chunk_mass = ops.iw_logmeanexp(log_w) + math.log(k)
    chunk_mean = ops.iw_impute(log_w, values)
    total = torch.logaddexp(mass, chunk_mass)
    keep = _share(mass, total)
    take = _share(chunk_mass, total)
    if mean is None:
        return total, chunk_mean * take.unsqueeze(1), take
    return total, mean * keep.unsqueeze(1) + chunk_mean * take.unsqueeze(1), take


def _share(part: Tensor, total: Tensor) -> Tensor:
    """exp(part − total), 0 where the total has no mass (never NaN)."""
    safe_total = torch.where(torch.isfinite(total), total, torch.zeros_like(total))
    return torch.where(torch.isfinite(total), torch.exp(part - safe_total), torch.zeros_like(total))


def _resample(
    picked: Optional[Tensor], draws: Tensor, w: Tensor, take: Tensor, n_draws: int
) -> Tensor:
    """Weighted reservoir step: each of the M current picks is replaced, with probability
    ``take`` (this chunk's share of the mass so far), by a draw from this chunk chosen
    with probability w_k (the chunk's normalised weights).
    picked: [M, B, D]; draws: [B, k, D]; w: [B, k]."""
    B, k, D = draws.shape
    has_mass = w.sum(1) > 0
    probs = torch.where(has_mass.unsqueeze(1), w, torch.full_like(w, 1.0 / k))
    idx = torch.multinomial(probs, n_draws, replacement=True)  # [B, M]
    chosen = draws.gather(1, idx.unsqueeze(-1).expand(B, n_draws, D))  # [B, M, D]
    chosen = chosen.permute(1, 0, 2)
    if picked is None:
        return chosen
    replace = torch.rand(n_draws, B, 1, device=draws.device) < take.view(1, B, 1)
    return torch.where(replace, chosen, picked)
