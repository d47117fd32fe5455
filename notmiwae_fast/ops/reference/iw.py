"""The pure-PyTorch twins of the importance-weighting operators: the bound's
log-mean-exp, the self-normalised weights and the weighted imputation."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["iw_logmeanexp", "iw_weights", "iw_impute"]


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
    lse = torch.where(has_mass, torch.log(safe_total) + shift, torch.full_like(total, -math.inf))
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
