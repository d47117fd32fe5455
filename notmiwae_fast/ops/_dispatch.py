"""Which implementation serves a call: the compiled kernel of the inputs' device, or the
pure-PyTorch reference (no library, or a device it has no kernels for; reported once per
device with a warning). Also the shape helpers of the fake kernels."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor

from . import _library

# What each family's register_fakes receives: fake(name) registers the decorated function
# as the fake (meta) kernel of the operator notmiwae_fast::name.
RegisterFake = Callable[[str], Callable[[Callable[..., Any]], Callable[..., Any]]]

_warned_devices: set[str] = set()


def use_kernels(t: Tensor) -> bool:
    """True when the compiled kernels serve tensors on ``t``'s device."""
    if _library.has_kernels(t.device.type):
        return True
    if _library.backend().name != "reference" and t.device.type not in _warned_devices:
        _warned_devices.add(t.device.type)
        warnings.warn(
            f"notmiwae_fast: the loaded library has no {t.device.type} kernels; "
            "using the pure-PyTorch reference operators on that device",
            stacklevel=3,
        )
    return False


def like(t: Tensor) -> Tensor:
    """An empty contiguous tensor of ``t``'s shape, dtype and device (fake kernels)."""
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def rows_of(t: Tensor) -> Tensor:
    """An empty [B, K] result of a per-sample tensor ``t`` [B, K, D] (fake kernels)."""
    return t.new_empty(t.shape[:2])
