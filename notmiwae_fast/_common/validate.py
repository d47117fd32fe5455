"""Checking and normalising what users pass to the models.

Every error is a ValueError (TypeError for a non-tensor) naming the argument.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .. import ops


def as_array(value, name: str) -> np.ndarray:
    """Array-like (ndarray, DataFrame, nested lists) -> ndarray of numbers: bool, int and
    float kept as they are, anything else (objects holding numbers and None, numeric
    strings) converted to float64; a TypeError for what is not array-like and a
    ValueError for what does not hold numbers, both naming the argument."""
    if not (isinstance(value, (np.ndarray, list, tuple)) or hasattr(value, "__array__")):
        raise TypeError(
            f"argument '{name}' must be a tensor or an array; got {type(value).__name__}"
        )
    try:
        array = np.asarray(value)
        return array if array.dtype.kind in "biuf" else array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"argument '{name}' must hold numbers ({error})") from None


def as_tensor(value, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Tensor or array-like -> tensor of ``dtype`` on ``device``."""
    if isinstance(value, Tensor):
        t = value
    else:
        array = as_array(value, name).astype(np.float64, copy=False)
        # A read-only array (pandas hands them out) is copied: torch warns on sharing it.
        t = torch.as_tensor(array if array.flags.writeable else array.copy())
    return t.to(device=device, dtype=dtype)


def positive_int(value, name: str) -> int:
    """An int (Python or NumPy, not bool) >= 1, as a Python int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"argument '{name}' must be an int >= 1; got {value!r}")
    return int(value)


def n_samples(value, name: str = "n_samples") -> int:
    return positive_int(value, name)


def data_and_mask(
    x, s, input_dim: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Checks x [B, D] and its mask s [B, D]; returns (x with zeros at missing entries,
    s as 0/1 floats), both of ``dtype`` on ``device``.

    s may be bool, int or float, and must hold only 0 and 1. x may hold anything
    (NaN included) where s = 0, and must be finite where s = 1.
    """
    if s is None:
        raise ValueError("argument 's' (the mask: 1 = observed, 0 = missing) is required")
    x = as_tensor(x, "x", dtype, device)
    if isinstance(s, Tensor):
        s_t = s.to(device)
    else:
        s_np = np.asarray(s)
        if s_np.dtype.kind not in "biuf":
            raise ValueError(
                f"argument 's' must be a bool, int or float mask; got an array of {s_np.dtype}"
            )
        s_t = torch.as_tensor(s_np, device=device)
    if x.dim() != 2 or x.shape[1] != input_dim:
        raise ValueError(
            f"argument 'x' must have shape [B, input_dim] = [B, {input_dim}]; got {list(x.shape)}"
        )
    if tuple(s_t.shape) != tuple(x.shape):
        raise ValueError(
            f"argument 's' must have the shape of 'x' {list(x.shape)}; got {list(s_t.shape)}"
        )
    # One pass (ops.observed_data) and one device-to-host synchronisation for both checks
    # (a GPU round trip); the details of a failure are worked out only when there is one.
    x0, s_f, counts = ops.observed_data(x, s_t)
    not_01, not_finite = counts.tolist()
    if not_01:
        bad_s = (s_t != 0) & (s_t != 1)  # NaN and inf included
        if s_t.is_floating_point() and not torch.isfinite(s_t).all():
            raise ValueError(
                "argument 's' must hold only 0 (missing) and 1 (observed); it holds NaN or inf"
            )
        value = s_t[bad_s][0].item()
        raise ValueError(
            "argument 's' must hold only 0 (missing) and 1 (observed); "
            f"got {value!r} at {bad_s.sum().item()} entries"
        )
    if not_finite:
        bad_x = (s_t != 0) & ~torch.isfinite(x)
        row, col = (int(i) for i in bad_x.nonzero()[0])
        raise ValueError(
            f"argument 'x' has NaN or inf at {bad_x.sum().item()} observed "
            f"entries (s = 1), e.g. row {row}, column {col}; mark them missing "
            "(s = 0) or fix the data"
        )
    return x0, s_f


def _numeric_targets(y) -> np.ndarray:
    """y as a numeric array; a ValueError saying what to do for labels that are strings,
    categories, booleans with missing values or other objects (the models take class
    indices, not labels)."""
    if getattr(getattr(y, "dtype", None), "name", None) == "category":
        raise ValueError(
            "argument 'y' is a categorical column: the supervised models take class "
            "indices 0 … C − 1; pass y.cat.codes (and keep y.cat.categories to decode the "
            "predictions)"
        )
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        example = next((v for v in arr.reshape(-1) if not isinstance(v, (int, float))), None)
        example = example.item() if hasattr(example, "item") else example
        raise ValueError(
            f"argument 'y' must hold numbers (class indices 0 … C − 1 for classification); "
            f"got an array of {arr.dtype} (e.g. {example!r}): encode the labels first, e.g. "
            "with sklearn.preprocessing.LabelEncoder or pandas.factorize"
        )
    return arr


def targets(
    y, batch: int, task: str, y_dim: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Checks y for a supervised model: regression [B, y_dim] (or [B] when y_dim = 1)
    floats; classification [B] class indices (0/1 for binary with y_dim = 1)."""
    if y is None:
        raise ValueError("argument 'y' is required by supervised models")
    y_t = y if isinstance(y, Tensor) else torch.as_tensor(_numeric_targets(y))
    y_t = y_t.to(device)
    shape = list(y_t.shape)
    if y_t.dim() == 0 or y_t.shape[0] != batch:
        raise ValueError(
            f"argument 'y' must have {batch} rows (one per row of x); got shape {list(y_t.shape)}"
        )
    if task == "regression":
        y_t = y_t.to(dtype).reshape(batch, -1)
        if y_t.shape[1] != y_dim:
            raise ValueError(
                f"argument 'y' must have shape [B, y_dim] = [{batch}, {y_dim}]; got {shape}"
            )
        if not torch.isfinite(y_t).all():
            raise ValueError("argument 'y' must be finite")
        return y_t
    y_t = y_t.reshape(-1)
    if y_t.numel() != batch:
        raise ValueError(
            f"argument 'y' must hold one class index per row, shape [{batch}]; got {shape}"
        )
    n_classes = max(2, y_dim)
    if y_t.is_floating_point() and not torch.all(y_t == y_t.round()):
        raise ValueError("argument 'y' must hold integer class indices for classification")
    y_t = y_t.long()
    if y_t.numel() and (y_t.min() < 0 or y_t.max() >= n_classes):
        raise ValueError(
            f"argument 'y' must hold class indices in [0, {n_classes - 1}]; "
            f"got values in [{y_t.min().item()}, {y_t.max().item()}]"
        )
    return y_t


def choice(value, name: str, valid) -> str:
    if value not in valid:
        raise ValueError(
            f"argument '{name}' must be one of {', '.join(repr(v) for v in valid)}; got {value!r}"
        )
    return value


def optional_names(names: Optional[list], input_dim: int) -> Optional[list]:
    if names is not None and len(names) != input_dim:
        raise ValueError(
            f"argument 'feature_names' must have input_dim = {input_dim} names; got {len(names)}"
        )
    return list(names) if names is not None else None


def device(value, label: str = "argument 'device' =") -> torch.device:
    """``value`` as a torch.device; ValueError starting with ``label`` (the argument or
    option, as its caller names it) when it is not a device, or a CUDA device this
    machine does not have."""
    try:
        parsed = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{label} {value!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{label} {value}: no CUDA GPU is available here")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"{label} {value}: this machine has {count} CUDA GPU(s)")
    return parsed
