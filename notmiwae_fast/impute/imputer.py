"""scikit-learn imputers: :class:`NotMIWAEImputer` (data missing not at random) and
:class:`MIWAEImputer` (missing at random).

``fit(X)`` standardises every column (NaN ignored), trains the model for ``max_iter``
optimizer steps of :class:`~notmiwae_fast.Trainer` (Adam, mini-batches of
``batch_size`` rows drawn without replacement, epoch after epoch) and ``transform(X)``
fills the NaN entries with the model's conditional mean from ``n_impute_samples``
importance samples, back in the original units. Observed entries come back unchanged,
bit for bit. NumPy arrays and pandas DataFrames are accepted; a DataFrame comes back as
a DataFrame with its columns and index, and its integer columns (NumPy ints and pandas'
nullable Int64, ...) and boolean columns keep their dtype: their imputations are
rounded to the nearest integer (clipped to the dtype's range) or thresholded at 0.5
(True when >= 0.5).

``fit`` warns (:class:`~notmiwae_fast.train.TrainingWarning`) and records a flag in
``history_["health"]`` when the result should not be trusted: the training loss
became NaN, or (judged from 50 steps on) ended far above its best or far above what
independent per-column distributions reach (``"diverged"``), ``out_dist="bern"`` sees
observed values outside [0, 1] (``"bern_data_outside_01"``), or a column has too few
observed values to learn from (``"few_observed"``: fewer than :data:`MIN_OBSERVED`
values, or fewer than :data:`MIN_OBSERVED_FRACTION` of the rows).

Under ``torchrun`` (a process group started from the environment, see
:mod:`notmiwae_fast.distributed`) ``fit`` trains data-parallel: every rank runs
``max_iter`` steps on its own ``batch_size`` rows (so the global batch is
``world_size × batch_size``), the rows are split between the ranks afresh each epoch
(the Trainer's DistributedSampler: equal shares of a permutation shared by all ranks,
seeded with the fit's seed + the epoch), DistributedDataParallel averages the gradients
and ``loss_curve_`` holds the per-step loss averaged over ranks; the fitted model is
the same on every rank. ``transform`` stays local to the process;
:func:`notmiwae_fast.distributed.transform_sharded` splits it over the ranks. Each
block of 256 rows is imputed with torch seeded to ``seed + block index``, so the
imputations do not depend on how the rows are split.

Saving and loading fitted imputers as plain data: :mod:`.files`
(:func:`save_imputer`, :func:`load_imputer`, also importable from here).

Example::

    from notmiwae_fast import NotMIWAEImputer
    X_filled = NotMIWAEImputer(max_iter=20_000, random_state=0).fit_transform(X_with_nan)
"""

from __future__ import annotations

import copy
import importlib
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from sklearn.utils._param_validation import InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..nn.missing import MISSING_PROCESSES, BaseMissingProcess
from ..nn.models import MIWAE, NotMIWAE
from . import _mixed
from ._base import Table, _BaseIWImputer
from ._health import MIN_OBSERVED, MIN_OBSERVED_FRACTION
from ._select import select_missing_process
from ._training import FitData

__all__ = ["NotMIWAEImputer", "MIWAEImputer", "MIN_OBSERVED", "MIN_OBSERVED_FRACTION"]

# What moved to .files, still importable from here (files saved by an earlier layout
# name the constructor by this module's path).
_IN_FILES = ("save_imputer", "load_imputer", "_imputer_from_state")


class MIWAEImputer(_BaseIWImputer):
    """MIWAE imputer (Mattei & Frellsen 2019): assumes values missing at random.

    Parameters: see :class:`_BaseIWImputer` (``latent_dim``, ``hidden_dim``,
    ``n_samples``, ``out_dist``, ``ppca``, ``n_impute_samples``, ``max_iter``,
    ``batch_size``, ``lr``, ``random_state``, ``device``, ``verbose``, ``backend``,
    ``standardize``, ``weight_init``).
    """

    _model_class = MIWAE


class NotMIWAEImputer(_BaseIWImputer):
    """not-MIWAE imputer (Ipsen, Mattei & Frellsen 2021): values missing not at random,
    with a learnt model p(s | x) of which values go missing.

    Parameters: those of :class:`MIWAEImputer` plus
        missing_process: ``"auto"`` (default), ``"selfmasking"``,
            ``"selfmasking_known_signs"``, ``"linear"`` (the paper's agnostic process),
            ``"nonlinear"``, ``"mcar"`` (a constant rate per column) or a
            :class:`~notmiwae_fast.BaseMissingProcess` instance (copied at fit).
            ``"auto"`` chooses among ``"mcar"``, ``"selfmasking"`` and ``"linear"`` by
            their importance-weighted bound on held-out rows (20 % of them; each
            candidate trained on the others for a quarter of ``max_iter`` steps), then
            trains the winner on all rows for ``max_iter`` steps: about 1.75 times the
            cost of one process (rule and details: :mod:`._select`). Under self-masking
            a process that models it wins (``"selfmasking"``, or ``"linear"``, which
            contains it); when a column's missingness depends on other columns or on
            none, ``"linear"`` or ``"mcar"`` does, where ``"selfmasking"`` (the default
            before) imputed worse than MICE (benchmarks/results/mnar_defaults.md).
        signs: [D] of ±1 for ``"selfmasking_known_signs"`` (+1: high values go
            missing; None: all +1).

    Extra fitted attributes: ``missing_process_``, the learnt process as
    ``model_.interpret_missing_process()`` describes it (thresholds in the original
    units); ``missing_process_selection_`` with ``"auto"``: ``{"chosen": name,
    "held_out_bounds": {candidate: bound per held-out row}, "held_out_rows",
    "candidate_iter", "reason"}`` (None for a process given by name or instance).
    :meth:`missing_probability` gives p(missing | x).
    """

    _model_class = NotMIWAE

    _parameter_constraints: dict = {
        **_BaseIWImputer._parameter_constraints,
        "missing_process": [StrOptions({"auto", *MISSING_PROCESSES}), BaseMissingProcess],
        "signs": ["array-like", None],
    }

    # scikit-learn reads the parameters from this signature (it allows no **kwargs), so
    # it repeats the base's.
    def __init__(
        self,
        *,
        missing_process: Union[str, BaseMissingProcess] = "auto",
        signs: Optional[Sequence[float]] = None,
        latent_dim: Optional[int] = None,
        hidden_dim: int = 128,
        n_samples: int = 20,
        out_dist: str = "gauss",
        ppca: bool = False,
        n_impute_samples: int = 1000,
        max_iter: int = 10_000,
        batch_size: int = 16,
        lr: float = 1e-3,
        random_state: Union[None, int, np.random.RandomState] = None,
        device: Union[str, torch.device, None] = None,
        verbose: Union[bool, int] = False,
        backend: str = "fused",
        standardize: bool = True,
        weight_init: str = "torch",
        column_types: Optional[dict] = None,
    ) -> None:
        super().__init__(
            latent_dim=latent_dim,
            hidden_dim=hidden_dim,
            n_samples=n_samples,
            out_dist=out_dist,
            ppca=ppca,
            n_impute_samples=n_impute_samples,
            max_iter=max_iter,
            batch_size=batch_size,
            lr=lr,
            random_state=random_state,
            device=device,
            verbose=verbose,
            backend=backend,
            standardize=standardize,
            weight_init=weight_init,
            column_types=column_types,
        )
        self.missing_process = missing_process
        self.signs = signs

    def _before_training(self, data: FitData) -> None:
        self.missing_process_selection_ = None
        if self.missing_process == "auto":
            if self.signs is not None:
                raise InvalidParameterError(
                    "The 'signs' parameter of NotMIWAEImputer is for missing_process="
                    "'selfmasking_known_signs'; got it with missing_process='auto'"
                )
            self.missing_process_selection_ = select_missing_process(self, data)

    def _model_kwargs(self) -> dict:
        process = self.missing_process
        if process == "auto":
            process = self.missing_process_selection_["chosen"]
        if isinstance(process, BaseMissingProcess):
            process = copy.deepcopy(process)
        signs = None if self.signs is None else np.asarray(self.signs, dtype=np.float64)
        return {"missing_process": process, "signs": signs}

    def _after_fit(self) -> None:
        if getattr(self, "codec_", None) is not None:
            self.missing_process_ = _mixed.interpret(self)
        else:
            self.missing_process_ = self.model_.interpret_missing_process()

    def missing_probability(self, X: Table) -> np.ndarray:
        """p(value missing | x) per entry under the learnt process.

        Args:
            X: [N, D] complete data in the original units (no NaN); for an imputer
                fitted on a mixed DataFrame, a DataFrame with its columns (a categorical
                entry's probability is that of its category going missing).
        Returns:
            [N, D] float64 array of probabilities.
        """
        if getattr(self, "codec_", None) is not None:
            return _mixed.missing_probability(self, X)
        check_is_fitted(self)
        arr = self._check_X(X, reset=False)
        if np.isnan(arr).any():
            raise ValueError(
                "argument 'X' must be complete (no NaN) for missing_probability; impute it first"
            )
        x_std, _, _ = self._standardize(arr.astype(np.float64))
        model = self.model_
        x_t = torch.as_tensor(
            x_std, dtype=next(model.parameters()).dtype, device=next(model.parameters()).device
        )
        with torch.no_grad():
            p = model.missing_model.missing_probability(x_t)
        return p.cpu().double().numpy()


def __getattr__(name: str) -> Any:
    """The saving and loading functions, from :mod:`.files` (imported on first use:
    .files imports this module)."""
    if name in _IN_FILES:
        return getattr(importlib.import_module(".files", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
