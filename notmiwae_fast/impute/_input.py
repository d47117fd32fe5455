"""The imputers' input and output: their parameters (:func:`_refuse_bools`), the
tables' checks with the column named (:func:`_check_numeric`, :func:`_check_finite`,
:func:`_check_observed`, :func:`_check_statistics`, :func:`_check_float32`), and the
result in the type it came in (:func:`_wrap_like`: a DataFrame's columns, index and
integer / boolean dtypes, :func:`_in_dtype_of`)."""

from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions

__all__: list[str] = []

_POSITIVE_INT = Interval(numbers.Integral, 1, None, closed="left")
# scikit-learn's checks of the imputers' parameters (see _BaseIWImputer).
_PARAMETER_CONSTRAINTS: dict = {
    "latent_dim": [_POSITIVE_INT, None],
    "hidden_dim": [_POSITIVE_INT],
    "n_samples": [_POSITIVE_INT],
    "out_dist": [StrOptions({"gauss", "bern", "student_t"})],
    "ppca": ["boolean"],
    "n_impute_samples": [_POSITIVE_INT],
    "max_iter": [_POSITIVE_INT],
    "batch_size": [_POSITIVE_INT],
    "lr": [Interval(numbers.Real, 0, None, closed="neither")],
    "random_state": ["random_state"],
    "device": [str, torch.device, None],
    "verbose": ["verbose"],
    "backend": [StrOptions({"fused", "reference"})],
    "standardize": ["boolean"],
    "weight_init": [StrOptions({"torch", "glorot"})],
    "column_types": [dict, None],
}
# The integer parameters (scikit-learn's Interval(Integral) takes True for 1: refused).
_INT_PARAMETERS = (
    "latent_dim",
    "hidden_dim",
    "n_samples",
    "n_impute_samples",
    "max_iter",
    "batch_size",
)

# float32's largest value: what the models compute in.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _refuse_bools(estimator: Any) -> None:
    """InvalidParameterError (a ValueError) naming the first of the estimator's integer
    parameters, lr and random_state that is a bool (scikit-learn takes True for 1)."""
    for name in _INT_PARAMETERS + ("lr", "random_state"):
        value = getattr(estimator, name)
        if isinstance(value, (bool, np.bool_)):
            kind = (
                "a float > 0"
                if name == "lr"
                else ("an int, a RandomState or None" if name == "random_state" else "an int >= 1")
            )
            raise InvalidParameterError(
                f"The {name!r} parameter of "
                f"{type(estimator).__name__} must be {kind}, not a "
                f"bool; got {value!r}"
            )


def _column_label(columns: Optional[list], j: int) -> str:
    """How errors name column j: its name for a DataFrame, else its index."""
    return f"column {columns[j]!r}" if columns is not None else f"column {j}"


def _check_numeric(X: Any) -> Any:
    """X with the object columns of a DataFrame that hold numbers (None or NaN for
    missing) made numeric; ValueError naming the first non-numeric column of a DataFrame
    or object array."""
    if hasattr(X, "dtypes") and hasattr(X, "columns"):
        return _numeric_frame(X)
    if isinstance(X, np.ndarray) and X.dtype.kind in "OUSV" and X.ndim == 2:
        for j in range(X.shape[1]):
            try:
                X[:, j].astype(np.float64)
            except (ValueError, TypeError) as err:  # keep the kind: TypeError for objects
                raise type(err)(f"argument 'X': column {j} is not numeric ({err})") from None
    return X


def _numeric_frame(X: Any) -> Any:
    """:func:`_check_numeric` for a DataFrame (a copy when object columns changed)."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    converted = {}
    for j, (name, dtype) in enumerate(zip(X.columns, X.dtypes)):
        if dtype == object:  # noqa: E721 - a pandas dtype, equal to object for object columns
            try:
                converted[j] = pd.to_numeric(X.iloc[:, j], errors="raise")
                continue
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f"argument 'X': column {name!r} is not numeric "
                    f"({err}); encode it as numbers or drop it"
                ) from None
        if not (is_numeric_dtype(dtype) or is_bool_dtype(dtype)):
            raise ValueError(
                f"argument 'X': column {name!r} is not numeric (dtype "
                f"{dtype}); encode it as numbers or drop it"
            )
    if converted:
        X = X.copy()
        for j, column in converted.items():
            X.isetitem(j, column)
    return X


def _check_finite(arr: np.ndarray, columns: Optional[list]) -> None:
    """ValueError naming the first column of arr ([N, D]) that holds inf."""
    bad = np.isinf(arr)
    if bad.any():
        j = int(np.nonzero(bad.any(axis=0))[0][0])
        raise ValueError(
            f"argument 'X': {_column_label(columns, j)} holds inf "
            f"({int(bad[:, j].sum())} entries); only NaN marks a missing "
            "value"
        )


def _check_observed(arr: np.ndarray, columns: Optional[list]) -> None:
    """ValueError naming the first column of arr ([N, D]) that is entirely missing."""
    empty = np.nonzero(np.isnan(arr).all(axis=0))[0]
    if empty.size:
        raise ValueError(
            f"argument 'X': {_column_label(columns, int(empty[0]))} is "
            "entirely missing; drop it before fitting"
        )


def _check_statistics(
    arr: np.ndarray, mean: np.ndarray, scale: np.ndarray, columns: Optional[list]
) -> None:
    """ValueError naming the first column of arr ([N, D]) whose standardisation
    statistics (mean, scale: [D]) overflowed."""
    bad = ~(np.isfinite(mean) & np.isfinite(scale))
    if bad.any():
        j = int(np.nonzero(bad)[0][0])
        biggest = float(np.nanmax(np.abs(arr[:, j])))
        raise ValueError(
            f"argument 'X': {_column_label(columns, j)} cannot be "
            f"standardised: its mean or standard deviation overflows "
            f"(values up to {biggest:.3g}); rescale the column"
        )


def _check_float32(x_std: np.ndarray, columns: Optional[list], what: str) -> None:
    """ValueError naming the first column of x_std ([N, D], NaN = missing) whose
    values the model cannot compute with (beyond float32's range, once ``what``
    is applied)."""
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(x_std) <= _FLOAT32_MAX) & ~np.isnan(x_std)
    if bad.any():
        j = int(np.nonzero(bad.any(axis=0))[0][0])
        biggest = float(np.nanmax(np.abs(x_std[:, j])))
        raise ValueError(
            f"argument 'X': {_column_label(columns, j)} holds values too "
            f"large for the model (up to {biggest:.3g} in {what}; the "
            f"model computes in float32, up to {_FLOAT32_MAX:.3g}); "
            "rescale the column"
        )


def _in_dtype_of(original: Any, values: np.ndarray) -> Any:
    """The column ``original`` (a pandas Series of an integer or boolean dtype, NumPy or
    nullable) with its missing entries filled from ``values`` ([N] floats): rounded to
    the nearest integer and clipped to the dtype's range, or True where >= 0.5 for a
    boolean; its observed entries and dtype kept as they are."""
    from pandas.api.types import is_bool_dtype

    missing = original.isna().to_numpy()
    if not missing.any():
        return original.copy()
    dtype = original.dtype
    if is_bool_dtype(dtype):
        filled = values[missing] >= 0.5
    else:
        info = np.iinfo(getattr(dtype, "numpy_dtype", dtype))
        low, high = float(info.min), float(info.max)
        if int(high) > info.max:  # 2**63 - 1 rounds up to 2**63 as a float
            high = float(np.nextafter(high, -np.inf))
        filled = np.clip(np.round(values[missing]), low, high).astype(info.dtype)
    result = original.copy()
    result.iloc[np.nonzero(missing)[0]] = filled
    return result


def _wrap_like(X: Any, out: np.ndarray) -> Any:
    """``out`` [N, D] in the type of X: a DataFrame with X's columns and index (its
    integer and boolean columns in their dtype, rounded or thresholded by
    :func:`_in_dtype_of`) for a DataFrame, else ``out`` itself."""
    if hasattr(X, "columns") and hasattr(X, "index") and hasattr(X, "iloc"):
        import pandas as pd
        from pandas.api.types import is_bool_dtype, is_integer_dtype

        frame = pd.DataFrame(out, columns=X.columns, index=X.index)
        for j, dtype in enumerate(X.dtypes):
            if is_bool_dtype(dtype) or is_integer_dtype(dtype):
                frame.isetitem(j, _in_dtype_of(X.iloc[:, j], out[:, j]))
        return frame
    return out
