"""Utilities: imputation in batches, RMSE on the missing entries, standardisation, seeds,
and the paper's MNAR protocol.

Names and signatures follow notmiwae-pytorch 0.1.3 where they exist there, and accept
the calls its README shows (``impute(model, x, mask)``), which raise TypeError there.
"""

from __future__ import annotations

import contextlib
import numbers
import random
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._common import validate as _validate
from ._common.seeding import forked_rng

__all__ = [
    "impute",
    "imputation_rmse",
    "missing_rmse",
    "standardize",
    "destandardize",
    "set_seed",
    "introduce_mnar",
]

ArrayLike = Union[np.ndarray, Tensor]


def set_seed(seed: int = 42) -> None:
    """Seeds Python, NumPy and PyTorch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _data(value, name: str):
    """A tensor as it is; an array-like as an ndarray of numbers (_validate.as_array).
    Must be 2-D."""
    if not isinstance(value, Tensor):
        value = _validate.as_array(value, name)
    if len(value.shape) != 2:
        raise ValueError(f"argument '{name}' must be 2-D [N, D]; got shape {list(value.shape)}")
    return value


def impute(
    model,
    x,
    s=None,
    n_samples: int = 1000,
    batch_size: int = 256,
    n_draws: Optional[int] = None,
    device=None,
    verbose: bool = False,
    seed: Optional[int] = None,
) -> np.ndarray:
    """Imputes a whole data set with a trained model, ``batch_size`` rows at a time.

    Args:
        model: a trained MIWAE / NotMIWAE (or supervised) model.
        x: [N, D] data (anything at missing entries): a tensor, an ndarray, a DataFrame
            or nested lists; or a dataset whose items are (x_row, s_row, ...) such as a
            TensorDataset (then leave ``s`` out).
        s: [N, D] mask, 1 = observed, 0 = missing.
        n_samples: importance samples per row.
        n_draws: multiple imputation: M draws, result [M, N, D].
        seed: when given, batch i is imputed with torch seeded to seed + i (and the
            global random state is left untouched): the result does not depend on how
            the rows are split across calls or processes.
    Returns:
        the imputed data as a NumPy array ([N, D] or [M, N, D], N = 0 included);
        observed entries unchanged, bit for bit. Its dtype: x's for a floating-point
        tensor (else the model's), x's for a floating-point array (else float64).
    """
    if s is None:
        if not hasattr(x, "tensors"):
            raise ValueError(
                "argument 's' (the mask) is required unless 'x' is a dataset "
                "of (x, s, ...) such as a TensorDataset"
            )
        x, s = x.tensors[0], x.tensors[1]
    x = _data(x, "x")
    s = s if isinstance(s, Tensor) else np.asarray(s)
    if tuple(s.shape) != tuple(x.shape):
        raise ValueError(
            f"argument 's' must have the shape of 'x' {list(x.shape)}; got {list(s.shape)}"
        )
    batch_size = _validate.positive_int(batch_size, "batch_size")
    if device is not None:
        model = model.to(device)
    out = []
    n = int(x.shape[0])
    # One call even for N = 0, so that an empty result has the shape and dtype of others.
    model_device = next(model.parameters()).device
    for index, start in enumerate(range(0, max(n, 1), batch_size)):
        rows = slice(start, start + batch_size)
        seeded = (
            forked_rng(model_device, seed + index) if seed is not None else contextlib.nullcontext()
        )
        with seeded:
            part = model.impute(x[rows], s[rows], n_samples=n_samples, n_draws=n_draws)
        out.append(part.detach().cpu().numpy())
        if verbose:
            print(f"imputed {min(n, start + batch_size)}/{n} rows")
    imputed = np.concatenate(out, axis=1 if n_draws is not None else 0)
    # The model computes in its own dtype: put back x's exact values where observed.
    if isinstance(x, Tensor):
        dtype = imputed.dtype
    else:
        dtype = x.dtype if x.dtype.kind == "f" else np.float64
    return np.where(_numpy(s) == 1, _numpy(x).astype(dtype), imputed.astype(dtype))


def missing_rmse(x_true: ArrayLike, x_imputed: ArrayLike, s: ArrayLike) -> float:
    """RMSE over the missing entries (s = 0) only; 0.0 when nothing is missing. ``s``
    must hold only 0 and 1 (bool, int or float)."""
    x_true, x_imputed = (
        np.asarray(x_true, dtype=np.float64),
        np.asarray(x_imputed, dtype=np.float64),
    )
    s = np.asarray(s)
    bad = ~np.isin(s, (0, 1))
    if bad.any():
        raise ValueError(
            "argument 's' (the mask) must hold only 0 (missing) and 1 "
            f"(observed); got {s[bad][0]!r} at {int(bad.sum())} entries"
        )
    missing = s == 0
    if x_true.shape != x_imputed.shape or x_true.shape != missing.shape:
        raise ValueError(
            f"arguments 'x_true' {x_true.shape}, 'x_imputed' {x_imputed.shape} "
            f"and 's' {missing.shape} must have one shape"
        )
    if not missing.any():
        return 0.0
    return float(np.sqrt(np.mean((x_true[missing] - x_imputed[missing]) ** 2)))


def imputation_rmse(
    model,
    x_original: ArrayLike,
    x_filled: ArrayLike,
    mask: ArrayLike,
    n_samples: int = 1000,
    batch_size: int = 100,
    device=None,
    verbose: bool = False,
) -> tuple[float, np.ndarray]:
    """Imputes ``x_filled`` and returns (RMSE on the missing entries, imputed data)."""
    x_imputed = impute(
        model,
        x_filled,
        mask,
        n_samples=n_samples,
        batch_size=batch_size,
        device=device,
        verbose=verbose,
    )
    return missing_rmse(_numpy(x_original), x_imputed, _numpy(mask)), x_imputed


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _float_dtype(X: Tensor) -> torch.dtype:
    """X's dtype when floating point, else torch's default (float32): what
    standardised values of X are returned in."""
    return X.dtype if X.is_floating_point() else torch.get_default_dtype()


def standardize(X: ArrayLike, mean: Optional[ArrayLike] = None, std: Optional[ArrayLike] = None):
    """Per-column standardisation ignoring NaN: (X − mean) / std (population std,
    ddof = 0; constant columns get std 1). Returns (X_std, mean, std), NumPy (float64)
    or torch as given (X's dtype when floating point, else the default dtype; X's
    device)."""
    is_tensor = isinstance(X, Tensor)
    arr = _numpy(X).astype(np.float64)
    mean = np.nanmean(arr, axis=0) if mean is None else _numpy(mean).astype(np.float64)
    if std is None:
        std = np.nanstd(arr, axis=0)
        std = np.where(std > 0, std, 1.0)
    else:
        std = _numpy(std).astype(np.float64)
    out = (arr - mean) / std
    if is_tensor:
        kw = dict(dtype=_float_dtype(X), device=X.device)
        return torch.as_tensor(out, **kw), torch.as_tensor(mean, **kw), torch.as_tensor(std, **kw)
    return out, mean, std


def destandardize(X: ArrayLike, mean: ArrayLike, std: ArrayLike):
    """The inverse of :func:`standardize`: X · std + mean (types as there)."""
    if isinstance(X, Tensor):
        kw = dict(dtype=_float_dtype(X), device=X.device)
        return X.to(**kw) * torch.as_tensor(std, **kw) + torch.as_tensor(mean, **kw)
    return np.asarray(X) * np.asarray(std) + np.asarray(mean)


def introduce_mnar(
    X: ArrayLike,
    columns: Optional[Sequence[int]] = None,
    threshold: Union[str, float] = "mean",
    quantile: float = 0.5,
    direction: str = "high",
):
    """The paper's self-masking MNAR protocol (not-MIWAE, Table 1).

    In each chosen column (default: the first floor(D/2)), an entry goes missing when it
    is strictly above the column's mean (``threshold="mean"``), above its ``quantile``
    (``threshold="quantile"``) or above a given real number; ``direction="low"`` removes
    the values below instead.

    The protocol starts from complete data. NaN already in X count as missing: they stay
    NaN with s = 0, and the column's mean or quantile is that of its other values.

    Returns:
        (X_missing with NaN at the missing entries, s with 1 = observed, 0 = missing),
        NumPy arrays.
    """
    arr = _numpy(X).astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"argument 'X' must be 2-D [N, D]; got shape {arr.shape}")
    D = arr.shape[1]
    columns = list(range(D // 2)) if columns is None else list(columns)
    for c in columns:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise ValueError(f"argument 'columns' must hold column indices; got {c!r}")
        if not 0 <= c < D:
            raise ValueError(f"argument 'columns' holds {c}, outside [0, {D - 1}]")
    _validate.choice(direction, "direction", ("high", "low"))
    number = isinstance(threshold, numbers.Real) and not isinstance(threshold, bool)
    if not number and not (isinstance(threshold, str) and threshold in ("mean", "quantile")):
        raise ValueError(
            f"argument 'threshold' must be 'mean', 'quantile' or a real number; got {threshold!r}"
        )
    if not number and threshold == "quantile" and not 0 <= quantile <= 1:
        raise ValueError(f"argument 'quantile' must be in [0, 1]; got {quantile!r}")
    s = np.where(np.isnan(arr), 0.0, 1.0)
    for c in columns:
        col = arr[:, c]
        if np.isnan(col).all():
            continue
        if number:
            t = float(threshold)
        elif threshold == "mean":
            t = np.nanmean(col)
        else:
            t = np.nanquantile(col, quantile)
        removed = col > t if direction == "high" else col < t
        s[removed, c] = 0.0
    return np.where(s == 1, arr, np.nan), s
