"""``n_init``: train the imputer's model from several random starts and keep the best.

A fit's result depends on its random start (initial weights, batch order, noise):
on the mixed tables, one set of masks imputed by models differing only in their seed
gave categorical accuracies from 0.66 to 0.85 (benchmarks/results/
mixed_tables_fit_noise.md). With ``n_init > 1`` the imputer trains ``n_init`` models,
seeded with :func:`restart_seeds`, and keeps the one whose importance-weighted bound on
the training rows (:data:`~._training.BOUND_SAMPLES` samples per row, the same draws for
every model) is highest: the model that explains the observed values and the mask
best, as scikit-learn's ``GaussianMixture(n_init=...)`` keeps its best likelihood. The
first start uses the fit's own seed, so ``n_init=1`` is the single fit it always was;
each further start costs one more fit.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..distributed.group import context
from ._training import FitData, mean_bound

__all__: list[str] = []

Trained = tuple[torch.nn.Module, np.ndarray]


def restart_seeds(seed: int, n_init: int) -> list[int]:
    """``n_init`` seeds: ``seed`` first, then seeds drawn from a generator seeded with it."""
    more = np.random.RandomState(seed).randint(np.iinfo(np.int32).max, size=n_init - 1)
    return [int(seed), *(int(s) for s in more)]


def best_of_restarts(
    n_init: int, data: FitData, train: Callable[[FitData], Trained], verbose: bool = False
) -> tuple[torch.nn.Module, np.ndarray, list[float]]:
    """``train(data)`` for each of the ``n_init`` seeds of :func:`restart_seeds` (``data``
    with its seed replaced). Returns the (model, losses) of the start with the highest
    bound on ``data``'s rows, and every start's bound (nats per row, in seed order;
    empty when ``n_init`` is 1: nothing to compare, no bound computed). A NaN bound (a
    diverged start) loses; of equal bounds the first wins."""
    if n_init == 1:
        return (*train(data), [])
    best: tuple[float, Trained] = (-np.inf, (None, None))  # type: ignore[assignment]
    bounds = []
    for i, seed in enumerate(restart_seeds(data.seed, n_init)):
        trained = train(data._replace(seed=seed))
        # The same importance samples for every start: seeded with the fit's seed.
        bound = mean_bound(trained[0], data.x_std, data.observed, data.device, data.seed)
        bounds.append(bound)
        if verbose and context().is_main:
            print(f"n_init: start {i + 1} of {n_init} (seed {seed}): bound per row {bound:.4f}")
        if i == 0 or np.nan_to_num(bound, nan=-np.inf) > best[0]:
            best = (np.nan_to_num(bound, nan=-np.inf), trained)
    return best[1][0], best[1][1], bounds
