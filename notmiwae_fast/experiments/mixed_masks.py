"""Missingness masks for the mixed-table evaluation (:mod:`.mixed_tables`).

A mask is a boolean DataFrame shaped like the table, True where the value is removed;
:func:`apply_mask` removes them (NaN, or pd.NA in nullable columns). Every draw uses its
own NumPy generator seeded with ``(seed, column position)``: the same seed gives the same
mask, and a column's draw does not depend on which other columns are masked.

Mechanisms (:func:`mechanism_mask` builds the three of the evaluation):

* ``"categorical_mnar"``: categorical self-masking MNAR (:func:`categorical_self_masking`)
  on one categorical column — the ``lost`` categories go missing with probability
  ``p_lost`` (0.6), the others with ``p_other`` (0.05) — and the numeric columns MCAR at
  ``numeric_rate`` (0.2), so that numeric RMSE is measured in the same cell.
* ``"numeric_mnar"``: threshold self-masking MNAR (:func:`threshold_self_masking`) on
  the numeric columns — a value above the column's ``quantile`` (0.75) goes missing with
  probability ``p_high`` (0.8), one below it with ``p_low`` (0.05) — and the categorical
  column MCAR at ``numeric_rate``.
* ``"mcar"``: the control: every column the categorical MNAR mask touches, MCAR at the
  rate that mask has there in expectation (the same overall rate, no dependence on the
  values).

Other columns are never masked.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "MECHANISMS",
    "apply_mask",
    "categorical_mask_probability",
    "categorical_self_masking",
    "empty_mask",
    "mcar",
    "mechanism_mask",
    "threshold_self_masking",
]

MECHANISMS = ("categorical_mnar", "numeric_mnar", "mcar")
# Categorical self-masking: the lost categories' and the others' probability of loss.
P_LOST, P_OTHER = 0.6, 0.05


def _rng(frame: pd.DataFrame, column: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, list(frame.columns).index(column)])


def empty_mask(frame: pd.DataFrame) -> pd.DataFrame:
    """A mask removing nothing."""
    return pd.DataFrame(False, index=frame.index, columns=frame.columns)


def categorical_mask_probability(
    values: Sequence, lost: Sequence, p_lost: float = P_LOST, p_other: float = P_OTHER
) -> np.ndarray:
    """The probability that :func:`categorical_self_masking` removes each of ``values``:
    ``p_lost`` for a value in ``lost``, ``p_other`` for any other."""
    return np.where(pd.Series(values, dtype=object).isin(list(lost)).to_numpy(), p_lost, p_other)


def categorical_self_masking(
    frame: pd.DataFrame,
    column: str,
    lost: Sequence,
    p_lost: float = P_LOST,
    p_other: float = P_OTHER,
    seed: int = 0,
) -> pd.DataFrame:
    """``column``'s values in ``lost`` removed with probability ``p_lost``, its other
    values with ``p_other``; the other columns untouched."""
    values = frame[column].astype(object)
    unknown = set(lost) - set(values.unique())
    if unknown:
        raise ValueError(f"column {column!r} has no category {sorted(map(str, unknown))}")
    p = categorical_mask_probability(values, lost, p_lost, p_other)
    mask = empty_mask(frame)
    mask[column] = _rng(frame, column, seed).random(len(frame)) < p
    return mask


def threshold_self_masking(
    frame: pd.DataFrame,
    columns: Sequence[str],
    quantile: float = 0.75,
    p_high: float = 0.8,
    p_low: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Each of ``columns``: values above its ``quantile`` removed with probability
    ``p_high``, the others with ``p_low``."""
    mask = empty_mask(frame)
    for column in columns:
        x = frame[column].astype("float64").to_numpy()
        p = np.where(x > np.quantile(x, quantile), p_high, p_low)
        mask[column] = _rng(frame, column, seed).random(len(frame)) < p
    return mask


def mcar(frame: pd.DataFrame, rates: dict, seed: int = 0) -> pd.DataFrame:
    """Each column named in ``rates`` removed completely at random at its rate."""
    mask = empty_mask(frame)
    for column, rate in rates.items():
        mask[column] = _rng(frame, column, seed).random(len(frame)) < rate
    return mask


def apply_mask(frame: pd.DataFrame, mask: pd.DataFrame) -> pd.DataFrame:
    """The frame with the masked entries missing (dtypes and categories kept)."""
    out = frame.copy()
    for column in frame.columns:
        if mask[column].any():
            out[column] = frame[column].mask(mask[column].to_numpy())
    return out


def mechanism_mask(
    frame: pd.DataFrame,
    mechanism: str,
    categorical: str,
    lost: Sequence,
    numeric: Sequence[str],
    seed: int = 0,
    numeric_rate: float = 0.2,
) -> pd.DataFrame:
    """The mask of one of :data:`MECHANISMS` (see the module docstring) for a table
    with the categorical column ``categorical`` (``lost``: its categories lost most
    often under categorical MNAR) and the numeric columns ``numeric``."""
    if mechanism == "categorical_mnar":
        cat = categorical_self_masking(frame, categorical, lost, seed=seed)
        return cat | mcar(frame, dict.fromkeys(numeric, numeric_rate), seed=seed)
    if mechanism == "numeric_mnar":
        num = threshold_self_masking(frame, numeric, seed=seed)
        return num | mcar(frame, {categorical: numeric_rate}, seed=seed)
    if mechanism == "mcar":
        share = frame[categorical].astype(object).isin(list(lost)).mean()
        rate = P_LOST * share + P_OTHER * (1 - share)
        return mcar(frame, {categorical: rate, **dict.fromkeys(numeric, numeric_rate)}, seed=seed)
    raise ValueError(f"argument 'mechanism' must be one of {MECHANISMS}; got {mechanism!r}")
