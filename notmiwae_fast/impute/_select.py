"""``NotMIWAEImputer(missing_process="auto")``: the missing process chosen from the data.

The rule (:func:`select_missing_process`): hold out :data:`HELD_OUT_FRACTION` of the
rows (a permutation seeded with the fit's seed), train one not-MIWAE per candidate of
:data:`CANDIDATES` on the other rows for ``max(1, round(CANDIDATE_FRACTION *
max_iter))`` steps, and keep the candidate whose importance-weighted bound on the
held-out rows (:data:`~._training.BOUND_SAMPLES` importance samples, averaged over the
rows) is highest. Every candidate's bound is a lower bound on the same quantity, log p(x°, s)
(the observed values and the mask), so they compare: ``"mcar"`` scores the mask with
a constant rate per column (the MIWAE model plus log p(s)), ``"selfmasking"`` lets each
column's missingness depend on its own value, ``"linear"`` on every column. The imputer
then trains the winner from scratch on all rows for ``max_iter`` steps: a fit costs
about ``1 + len(CANDIDATES) * CANDIDATE_FRACTION`` (1.75) fits of one process.

Tables that cannot be split usefully (fewer than :data:`MIN_ROWS` rows) and tables
without a missing value skip the candidates and take ``"mcar"`` (nothing in the data
says which process holds; the constant one assumes least about it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone

from ..nn.missing import MISSING_PROCESSES
from ._training import FitData, mean_bound

if TYPE_CHECKING:
    from ._base import _BaseIWImputer

__all__: list[str] = []

CANDIDATES = ("mcar", "selfmasking", "linear")
HELD_OUT_FRACTION = 0.2
CANDIDATE_FRACTION = 0.25
MIN_ROWS = 20


def select_missing_process(imputer: "_BaseIWImputer", data: FitData) -> dict[str, Any]:
    """The process for ``imputer`` (a NotMIWAEImputer with ``missing_process="auto"``)
    trained on ``data``.

    Returns the record kept as ``missing_process_selection_``: ``chosen`` (a name of
    :data:`~notmiwae_fast.nn.missing.MISSING_PROCESSES`), ``held_out_bounds`` (candidate
    -> bound per held-out row, nats; empty when skipped), ``held_out_rows``,
    ``candidate_iter`` (training steps of each candidate; 0 when skipped) and ``reason``."""
    x_std, observed, seed = data.x_std, data.observed, data.seed
    n = x_std.shape[0]
    record: dict[str, Any] = {"held_out_bounds": {}, "held_out_rows": 0, "candidate_iter": 0}
    if observed.all():
        return {**record, "chosen": "mcar", "reason": "no missing value: nothing to select"}
    if n < MIN_ROWS:
        return {**record, "chosen": "mcar", "reason": f"fewer than {MIN_ROWS} rows"}
    order = np.random.default_rng(seed).permutation(n)
    n_held = max(1, int(round(HELD_OUT_FRACTION * n)))
    held, train = order[:n_held], order[n_held:]
    steps = max(1, int(round(CANDIDATE_FRACTION * imputer.max_iter)))
    bounds = {}
    for name in CANDIDATES:
        candidate = clone(imputer).set_params(missing_process=name)
        model, _ = candidate._trained_model(data.rows(train), steps)
        bounds[name] = mean_bound(model, x_std[held], observed[held], data.device, seed)
    # The first of equals (the simplest); a NaN bound (a diverged candidate) loses.
    chosen = max(CANDIDATES, key=lambda name: np.nan_to_num(bounds[name], nan=-np.inf))
    if imputer.verbose:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in bounds.items())
        print(f"missing_process='auto': held-out bound per row {shown}; chose {chosen!r}")
    return {
        "chosen": chosen,
        "held_out_bounds": bounds,
        "held_out_rows": int(n_held),
        "candidate_iter": steps,
        "reason": "highest held-out bound",
    }


def checked_selection(value: Any) -> dict[str, Any]:
    """A saved ``missing_process_selection_`` (plain data), checked: ValueError when it is
    not a dict naming a built-in process with bounds as numbers."""
    bounds = value.get("held_out_bounds") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or value.get("chosen") not in MISSING_PROCESSES
        or not isinstance(bounds, dict)
        or not all(isinstance(k, str) and isinstance(v, float) for k, v in bounds.items())
        or not all(isinstance(value.get(k), int) for k in ("held_out_rows", "candidate_iter"))
        or not isinstance(value.get("reason"), str)
    ):
        raise ValueError("'missing_process_selection' is not a saved process selection")
    return dict(value)
