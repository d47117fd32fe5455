"""Argument checks of the operators on the Python side.

Used by the fake (meta) kernels, so that torch.compile / torch.export see the same
errors as eager mode, and by the reference fallback. They mirror
csrc/include/notmiwae_fast/checks.h: shape and device errors raise ValueError, dtype
errors TypeError, and every message names the argument and the expected shape.
"""

from __future__ import annotations

from torch import Tensor


def floating(t: Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"notmiwae_fast: argument '{name}' must be a floating-point tensor; "
                        f"got dtype {t.dtype}")


def ndim(t: Tensor, dim: int, name: str, shape: str) -> None:
    if t.dim() != dim:
        raise ValueError(f"notmiwae_fast: argument '{name}' must have shape {shape} ({dim} "
                         f"dimensions); got shape {list(t.shape)}")


def size(t: Tensor, d: int, expected: int, name: str, shape: str) -> None:
    if t.shape[d] != expected:
        raise ValueError(f"notmiwae_fast: argument '{name}' must have shape {shape} with size "
                         f"{expected} in dimension {d}; got shape {list(t.shape)}")


def same_device_dtype(t: Tensor, name: str, ref: Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"notmiwae_fast: argument '{name}' is on {t.device} but '{ref_name}' "
                         f"is on {ref.device}; move them to one device")
    if t.dtype != ref.dtype:
        raise TypeError(f"notmiwae_fast: argument '{name}' has dtype {t.dtype} but "
                        f"'{ref_name}' has dtype {ref.dtype}; use one floating dtype")


def log_weights(log_w: Tensor, name: str = "log_w") -> None:
    """log_w: [B, K] floating, K >= 1."""
    floating(log_w, name)
    ndim(log_w, 2, name, "[B, K]")
    if log_w.shape[1] < 1:
        raise ValueError(f"notmiwae_fast: argument '{name}' must have at least one importance "
                         f"sample (K >= 1); got shape {list(log_w.shape)}")


def iw_values(log_w: Tensor, values: Tensor) -> None:
    """values: [B, K, D] matching log_w [B, K]."""
    log_weights(log_w)
    floating(values, "values")
    ndim(values, 3, "values", "[B, K, D]")
    size(values, 0, log_w.shape[0], "values", "[B, K, D] (B from log_w)")
    size(values, 1, log_w.shape[1], "values", "[B, K, D] (K from log_w)")
    same_device_dtype(values, "values", log_w, "log_w")
