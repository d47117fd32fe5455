"""Missingness masks for benchmarks beyond the paper's self-masking protocol, after
hyperimpute's ``simulate_nan`` (MCAR, MAR logistic, MNAR logistic).

Every function takes complete data X [N, D] (standardised, say), a target rate and a
NumPy Generator, and returns a mask s [N, D] of float64 with 1 = observed, 0 = missing.
The logistic masks draw a random direction per masked column, scale it so that the
logit's spread is one over the rows, and solve the column's intercept by bisection so
that its expected missing rate over the rows is ``rate``; the mask is then drawn
entry by entry.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MECHANISMS", "mcar_mask", "mar_logistic_mask", "mnar_logistic_mask", "make_mask"]

# Bisection steps of the intercepts (the interval halves each step).
_BISECTION_STEPS = 60


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def solve_intercept(logits: np.ndarray, rate: float) -> float:
    """The intercept c with mean(sigmoid(logits + c)) = rate (bisection; logits [N])."""
    low, high = -50.0 - float(logits.max()), 50.0 - float(logits.min())
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (low + high)
        if _sigmoid(logits + mid).mean() > rate:
            high = mid
        else:
            low = mid
    return 0.5 * (low + high)


def _check(X: np.ndarray, rate: float) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1 or np.isnan(X).any():
        raise ValueError("argument 'X' must be complete 2-D data [N, D] with N, D >= 1")
    if not 0.0 < rate < 1.0:
        raise ValueError(f"argument 'rate' must be in (0, 1); got {rate!r}")
    return X


def _logistic_missing(
    X: np.ndarray, inputs: np.ndarray, targets: np.ndarray, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """s [N, D]: each column of ``targets`` missing with probability sigmoid(X[:, inputs]
    w + c), w a random normal direction scaled to a unit-spread logit, c solved for
    ``rate``; the other columns observed."""
    s = np.ones_like(X)
    Z = X[:, inputs]
    for j in targets:
        w = rng.normal(size=len(inputs))
        logits = Z @ w
        spread = logits.std()
        logits = logits / spread if spread > 0 else logits
        p_missing = _sigmoid(logits + solve_intercept(logits, rate))
        s[:, j] = rng.random(len(X)) >= p_missing
    return s


def mcar_mask(X: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Missing completely at random: every entry missing with probability ``rate``."""
    X = _check(X, rate)
    return (rng.random(X.shape) >= rate).astype(np.float64)


def mar_logistic_mask(
    X: np.ndarray, rate: float, rng: np.random.Generator, observed_fraction: float = 0.3
) -> np.ndarray:
    """Missing at random: a random ``observed_fraction`` of the columns (at least one)
    stays fully observed; each other column is missing with a logistic probability of a
    random direction through the observed columns, at rate ``rate`` (hyperimpute's
    ``MAR``)."""
    X = _check(X, rate)
    d = X.shape[1]
    n_observed = max(1, int(observed_fraction * d))
    if n_observed >= d:
        raise ValueError("argument 'X' needs at least 2 columns for a MAR mask")
    order = rng.permutation(d)
    return _logistic_missing(X, order[:n_observed], order[n_observed:], rate, rng)


def mnar_logistic_mask(X: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Missing not at random: every column missing with a logistic probability of a
    random direction through all columns, itself included, at rate ``rate``
    (hyperimpute's ``MNAR`` logistic with its inputs not excluded)."""
    X = _check(X, rate)
    columns = np.arange(X.shape[1])
    return _logistic_missing(X, columns, columns, rate, rng)


MECHANISMS = {
    "mnar_logistic": mnar_logistic_mask,
    "mar_logistic": mar_logistic_mask,
    "mcar": mcar_mask,
}


def make_mask(mechanism: str, X: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """The mask of ``mechanism`` (a key of :data:`MECHANISMS`) for X with a Generator
    seeded with ``seed``."""
    if mechanism not in MECHANISMS:
        raise ValueError(
            f"argument 'mechanism' must be one of {', '.join(MECHANISMS)}; got {mechanism!r}"
        )
    return MECHANISMS[mechanism](X, rate, np.random.default_rng(seed))
