"""The pure-PyTorch twin of observed_data: the models' input check and zero-fill."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["observed_data"]


def observed_data(x: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The models' input: x [*] floating and its mask s (bool, integer or floating,
    nonzero = observed) of x's shape. Returns (x with 0 where s = 0, s as 0/1 of x's
    dtype, counts int64 [2]: the entries of s other than 0 and 1 (NaN included) and the
    observed entries of x that are NaN or ±inf)."""
    observed = s != 0
    not_01 = (observed & (s != 1)).sum()
    not_finite = (observed & ~torch.isfinite(x)).sum()
    return (
        torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device)),
        observed.to(x.dtype),
        torch.stack([not_01, not_finite]),
    )
