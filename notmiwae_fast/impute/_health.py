"""What the imputers' ``fit`` judges (see :mod:`.imputer`): the data before training
(:func:`_check_data`: Bernoulli data outside [0, 1], columns with too few observed
values) and the per-step loss curve after it (:func:`_check_loss`: diverged, or far
above the loss of independent per-column distributions, :func:`_baseline_loss`). Each
finding warns (TrainingWarning) and flags the fit's history."""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from ..train import loss_diverged
from ..train.health import _record
from ._input import _column_label

__all__ = ["MIN_OBSERVED", "MIN_OBSERVED_FRACTION"]

# A column with fewer observed values than this, or than this fraction of the rows, is
# too sparse to learn its distribution from: fit warns ("few_observed"). 5 values is
# what a mean and a spread can barely be estimated from; 2 % flags columns that are
# 98 % missing or more, whose imputations rest almost entirely on the other columns.
MIN_OBSERVED = 5
MIN_OBSERVED_FRACTION = 0.02
# Fewer training steps than this are too noisy to say the loss ended above its best
# (mini-batch losses vary by tens of percent from step to step).
_MIN_STEPS_TO_JUDGE = 50
# A fit whose loss ends above the loss of independent per-column distributions by more
# than this many times (|that loss| + D) has failed (a diverging fit ends 1e6 times
# above it); an unstandardised fit still on its way down after 50 steps stays below.
_BASELINE_FACTOR = 100


def _check_data(
    name: str,
    out_dist: str,
    arr: np.ndarray,
    observed: np.ndarray,
    columns: Optional[list],
    history: dict,
) -> None:
    """Warns (at the caller of ``name``'s fit) and flags ``history`` when out_dist='bern'
    sees observed values of arr ([N, D]) outside [0, 1] ("bern_data_outside_01") and
    when columns have too few observed values ("few_observed", see MIN_OBSERVED)."""
    if out_dist == "bern":
        with np.errstate(invalid="ignore"):
            outside = observed & ((arr < 0) | (arr > 1))
        if outside.any():
            bad = [_column_label(columns, int(j)) for j in np.nonzero(outside.any(axis=0))[0]]
            _record(
                history,
                "bern_data_outside_01",
                f"{name}.fit: out_dist='bern' models values in [0, 1], but "
                f"{int(outside.sum())} observed values lie outside it ("
                f"{', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); rescale "
                "the data to [0, 1] or use out_dist='gauss'",
                stacklevel=3,
            )
    counts = observed.sum(axis=0)
    needed = max(MIN_OBSERVED, MIN_OBSERVED_FRACTION * arr.shape[0])
    sparse = np.nonzero(counts < needed)[0]
    if sparse.size:
        described = [
            f"{_column_label(columns, int(j))}: {int(counts[j])} of {arr.shape[0]}" for j in sparse
        ]
        _record(
            history,
            "few_observed",
            f"{name}.fit: too few observed values to learn from ("
            f"{'; '.join(described[:5])}{'; ...' if len(described) > 5 else ''}; "
            f"fewer than {MIN_OBSERVED} or {MIN_OBSERVED_FRACTION:.0%} of the "
            "rows); their imputations may lie far outside the observed values",
            stacklevel=3,
        )


def _check_loss(
    name: str,
    losses: np.ndarray,
    x_std: np.ndarray,
    observed: np.ndarray,
    out_dist: str,
    mnar: bool,
    history: dict,
) -> None:
    """Warns (at the caller of ``name``'s fit) and flags ``history`` ("diverged") when
    the per-step losses ([T]) diverged or ended far above their best
    (:func:`loss_diverged`), or far above the loss of independent per-column
    distributions fitted to the training data (:func:`_baseline_loss`): by more than
    100 × (|that loss| + D) per row. Both are judged from 50 steps on."""
    reason = loss_diverged(losses, min_length=_MIN_STEPS_TO_JUDGE)
    if reason is None and len(losses) >= _MIN_STEPS_TO_JUDGE:
        baseline = _baseline_loss(x_std, observed, out_dist, mnar)
        w = max(1, min(100, len(losses) // 10))
        final = float(np.mean(losses[-w:]))
        if final > baseline + _BASELINE_FACTOR * (abs(baseline) + x_std.shape[1]):
            reason = (
                f"the training loss ended at {final:.4g}, far above {baseline:.4g}"
                " that independent per-column distributions reach: training "
                "failed (standardise the data or lower the learning rate)"
            )
    if reason is not None:
        _record(
            history,
            "diverged",
            f"{name}.fit: {reason}; the imputations are not to be trusted",
            stacklevel=3,
        )


def _baseline_loss(x_std: np.ndarray, observed: np.ndarray, out_dist: str, mnar: bool) -> float:
    """The loss per row (negative log-likelihood) of independent per-column
    distributions on the training data x_std ([N, D], mask ``observed``): a normal with
    each column's observed mean and variance (a Bernoulli with p = 1/2 for
    out_dist='bern'), plus log 2 per entry for a model of the mask (``mnar``:
    not-MIWAE)."""
    fraction = observed.mean(axis=0)
    if out_dist == "bern":
        per_column = np.full(x_std.shape[1], np.log(2.0))
    else:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # columns of one value
            var = np.nanvar(np.where(observed, x_std, np.nan), axis=0)
        var = np.maximum(np.nan_to_num(var, nan=1.0, posinf=1.0), 1e-6)
        per_column = 0.5 * np.log(2 * np.pi * np.e * var)
    total = float(np.sum(fraction * per_column))
    if mnar:
        total += x_std.shape[1] * np.log(2.0)
    return total
