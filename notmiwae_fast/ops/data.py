"""The models' input check and zero-fill (observed_data)."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks, reference
from ._dispatch import RegisterFake, like, use_kernels

__all__ = ["observed_data"]


def observed_data(x: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The models' input check and zero-fill in one pass.

    Args:
        x: [*] floating data (anything where s = 0). s: its mask, x's shape, bool,
            integer or floating (nonzero = observed).
    Returns:
        (x0: x with 0 where s = 0, mask: s as 0/1 of x's dtype, counts: int64 [2], the
        entries of s other than 0 and 1 (NaN included) and the observed entries of x
        that are NaN or ±inf); the caller raises when a count is not 0.
    """
    if use_kernels(x):
        return torch.ops.notmiwae_fast.observed_data(x, s)
    _checks.observed_data(x, s)
    return reference.observed_data(x, s)


def register_fakes(fake: RegisterFake) -> None:
    """Registers the fake (meta) kernels of this family's operators: output shapes
    and dtypes, for torch.compile / torch.export / opcheck."""

    @fake("observed_data")
    def _(x, s):
        _checks.observed_data(x, s)
        return like(x), like(x), x.new_empty(2, dtype=torch.long)
