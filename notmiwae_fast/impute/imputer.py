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
import warnings
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import utils
from .._common import validate as _validate
from .._common.progress import progress
from ..nn.missing import MISSING_PROCESSES, BaseMissingProcess
from ..nn.models import MIWAE, NotMIWAE
from ..nn.networks import glorot_init_
from ._health import MIN_OBSERVED, MIN_OBSERVED_FRACTION, _check_data, _check_loss
from ._input import (
    _PARAMETER_CONSTRAINTS,
    _check_finite,
    _check_float32,
    _check_numeric,
    _check_observed,
    _check_statistics,
    _refuse_bools,
    _wrap_like,
)
from ._training import _train_model

if TYPE_CHECKING:
    import pandas as pd

# What the imputers take and give: [N, D] tables (NaN = missing).
Table = Union[np.ndarray, "pd.DataFrame"]

__all__ = ["NotMIWAEImputer", "MIWAEImputer", "MIN_OBSERVED", "MIN_OBSERVED_FRACTION"]

# Rows per step of the imputation progress bar.
_IMPUTE_BLOCK = 1024
# Rows imputed under one seed (seed + index of the block of this many rows).
_SEED_BLOCK = 256
# What moved to .files, still importable from here (files saved by an earlier layout
# name the constructor by this module's path).
_IN_FILES = ("save_imputer", "load_imputer", "_imputer_from_state")


class _BaseIWImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """The shared body of the two imputers (not used directly).

    Parameters (all stored as given; checked at ``fit``):
        latent_dim: L (None: D − 1, the paper's choice).
        hidden_dim: width of the two hidden tanh layers of encoder and decoder.
        n_samples: K, importance samples per row during training (paper: 20).
        out_dist: ``"gauss"``, ``"student_t"`` or ``"bern"`` (Bernoulli data in [0, 1]
            are not standardised).
        ppca: PPCA-like decoder (loc linear in z, one shared scale).
        n_impute_samples: importance samples per row when imputing (paper: 10,000).
        max_iter: training iterations = optimizer steps (paper: 100,000).
        batch_size: rows per mini-batch (paper: 16).
        lr: Adam learning rate (paper: 1e-3).
        random_state: None, an int or a RandomState: seeds weights, batches and
            importance samples (the global torch RNG is left as it was).
        device: ``"cpu"``, ``"cuda"``, ... (None: CUDA when available, else CPU).
        verbose: progress bar and a final loss line while fitting / imputing.
        backend: ``"fused"`` (the kernels) or ``"reference"`` (pure PyTorch).
        standardize: standardise every column with the mean and std of its observed
            values before training (and map imputations back). False: train on X as
            given — for data already standardised with better statistics (under MNAR the
            observed values of a column are a biased sample: with its high values lost,
            their mean is low and their spread small), as in the paper's protocol.
        weight_init: ``"torch"`` (PyTorch's default for the linear layers) or
            ``"glorot"`` (Glorot-uniform weights and zero biases, as the paper's Keras
            code; :func:`notmiwae_fast.nn.networks.glorot_init_`).

    Fitted attributes: ``model_`` (the trained torch model), ``mean_`` and ``scale_``
    ([D] standardisation), ``n_iter_``, ``loss_curve_`` ([n_iter_] training losses),
    ``history_`` (``{"health": [flags], "warnings": [messages]}``: what fit warned
    about, see the module docstring; both empty after a healthy fit),
    ``n_features_in_`` and ``feature_names_in_`` (DataFrames).
    """

    _model_class: type = MIWAE

    _parameter_constraints: dict = _PARAMETER_CONSTRAINTS

    def __init__(
        self,
        *,
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
    ) -> None:
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.n_samples = n_samples
        self.out_dist = out_dist
        self.ppca = ppca
        self.n_impute_samples = n_impute_samples
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.backend = backend
        self.standardize = standardize
        self.weight_init = weight_init

    # -- scikit-learn plumbing -----------------------------------------------------------
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _model_kwargs(self) -> dict:
        """Constructor arguments of the torch model beyond the common ones."""
        return {}

    def _check_X(self, X: Table, reset: bool) -> np.ndarray:
        """[N, D] float array (float32 kept, anything else float64), NaN allowed, inf
        and non-numeric columns refused with the column named."""
        X = _check_numeric(X)
        columns = list(X.columns) if hasattr(X, "columns") else None
        arr = validate_data(
            self,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            ensure_all_finite=False,
            copy=False,
        )
        _check_finite(arr, columns)
        if not reset and hasattr(self, "mean_"):
            with np.errstate(all="ignore"):  # overflow is the error reported below
                x_std = (arr.astype(np.float64) - self.mean_) / self.scale_
            _check_float32(x_std, columns, "the fitted model's scale")
        return arr

    def _validate_params(self) -> None:
        """scikit-learn's checks of the parameters, plus: the integer parameters, lr and
        random_state refuse bools (True is an Integral to scikit-learn), lr must be
        finite. InvalidParameterError (a ValueError) naming the parameter."""
        _refuse_bools(self)
        super()._validate_params()
        if not np.isfinite(self.lr):
            raise InvalidParameterError(
                f"The 'lr' parameter of {type(self).__name__} must "
                f"be a finite float > 0; got {self.lr!r}"
            )

    def _device(self) -> torch.device:
        """The device to compute on; ValueError naming 'device' when it is not a device
        or is a CUDA device this machine does not have."""
        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return _validate.device(self.device)

    # -- fit / transform -------------------------------------------------------------------
    def fit(self, X: Table, y: Any = None) -> "_BaseIWImputer":
        """Trains the model on X ([N, D], NaN = missing); y is ignored. Returns self.

        Raises ValueError naming the column when a column is entirely missing, is not
        numeric or holds inf."""
        arr, columns = self._fit_input(X)
        observed = ~np.isnan(arr)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        device = self._device()
        x_std, mean, scale = self._standardize(arr.astype(np.float64), fit=True)
        history: dict = {"health": [], "warnings": []}
        name = type(self).__name__
        _check_data(name, self.out_dist, arr, observed, columns, history)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            model = self._new_model(arr.shape[1], columns)
            if self.weight_init == "glorot":
                glorot_init_(model)
            model.set_standardization(mean, scale)
            losses = _train_model(
                model,
                x_std,
                observed,
                device,
                lr=self.lr,
                batch_size=self.batch_size,
                max_iter=self.max_iter,
                verbose=bool(self.verbose),
            )
        _check_loss(
            name, losses, x_std, observed, self.out_dist, self._model_class is NotMIWAE, history
        )
        self.model_ = model
        self.mean_, self.scale_ = mean, scale
        self.loss_curve_ = losses
        self.n_iter_ = len(losses)
        self.history_ = history
        self._seed_ = seed
        self._after_fit()
        return self

    def _new_model(self, n_features: int, columns: Optional[list]) -> torch.nn.Module:
        """The untrained torch model for ``n_features`` columns (named ``columns``)."""
        return self._model_class(
            n_features,
            latent_dim=self.latent_dim,
            hidden_dim=self.hidden_dim,
            n_samples=self.n_samples,
            out_dist=self.out_dist,
            ppca=self.ppca,
            feature_names=[str(c) for c in columns] if columns is not None else None,
            backend=self.backend,
            **self._model_kwargs(),
        )

    def _fit_input(self, X: Table) -> tuple[np.ndarray, Optional[list]]:
        """The checks of :meth:`fit` before any training: the parameters and X. Returns
        (X as a float array [N, D], the DataFrame's columns or None); raises ValueError
        naming the parameter or the column."""
        self._validate_params()
        self._device()
        columns = list(X.columns) if hasattr(X, "columns") else None
        arr = self._check_X(X, reset=True)
        _check_observed(arr, columns)
        x_std, mean, scale = self._standardize(arr.astype(np.float64), fit=True)
        _check_statistics(arr, mean, scale, columns)
        _check_float32(x_std, columns, "the units the model is trained in")
        return arr, columns

    def _after_fit(self) -> None:
        """Hook for fitted attributes of subclasses."""

    def _standardize(
        self, arr: np.ndarray, fit: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(standardised [N, D], mean [D], scale [D]); identity for Bernoulli data and
        with ``standardize=False``."""
        # Values near float64's limit overflow in the statistics: _fit_input and
        # _check_X report that by column, so numpy's RuntimeWarnings are silenced here.
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if fit:
                if self.out_dist == "bern" or not self.standardize:
                    return arr, np.zeros(arr.shape[1]), np.ones(arr.shape[1])
                return utils.standardize(arr)
            return utils.standardize(arr, self.mean_, self.scale_)

    def transform(self, X: Table) -> Table:
        """Fills the NaN entries of X ([N, D]); observed entries unchanged.

        Returns the type given (NumPy array or DataFrame with the same columns and
        index), float32 for float32 input, else float64; a DataFrame's integer columns
        (NumPy ints, pandas' nullable Int64, ...) come back in their dtype with their
        imputations rounded (clipped to the dtype's range), its boolean columns in
        theirs with imputations thresholded at 0.5 (True when >= 0.5)."""
        check_is_fitted(self)
        arr = self._check_X(X, reset=False)
        return self._wrap_like(X, self._impute_rows(arr, first_row=0))

    def _impute_rows(self, arr: np.ndarray, first_row: int) -> np.ndarray:
        """arr ([n, D], checked, NaN = missing) with its NaN entries filled, taken as rows
        first_row, first_row + 1, ... of a larger table: the block of 256 rows holding
        row i is imputed with torch seeded to ``_seed_ + i // 256``, so a table split at
        multiples of 256 rows gives the same values as a whole (``first_row`` must be such
        a multiple; an empty arr may start anywhere: the last ranks' shares of a small
        table under torchrun start at its end)."""
        if first_row % _SEED_BLOCK and len(arr):
            raise ValueError(
                f"argument 'first_row' must be a multiple of {_SEED_BLOCK}; got {first_row}"
            )
        missing = np.isnan(arr)
        out = arr.copy()
        if missing.any():
            from ..distributed import context

            device = self._device()
            x_std, _, _ = self._standardize(arr.astype(np.float64))
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                model = self.model_.to(device)
                x_t = torch.as_tensor(np.nan_to_num(x_std), dtype=torch.float32)
                s_t = torch.as_tensor(~missing, dtype=torch.float32)
                blocks = progress(
                    range(0, len(x_t), _IMPUTE_BLOCK),
                    bool(self.verbose) and context().is_main,
                    desc="imputing",
                    unit="block",
                    mininterval=0.5,
                )
                imputed = np.concatenate(
                    [
                        utils.impute(
                            model,
                            x_t[i : i + _IMPUTE_BLOCK],
                            s_t[i : i + _IMPUTE_BLOCK],
                            n_samples=self.n_impute_samples,
                            batch_size=_SEED_BLOCK,
                            device=device,
                            seed=self._seed_ + (first_row + i) // _SEED_BLOCK,
                        )
                        for i in blocks
                    ]
                )
            back = utils.destandardize(imputed.astype(np.float64), self.mean_, self.scale_)
            out[missing] = back[missing].astype(out.dtype)
        return out

    _wrap_like = staticmethod(_wrap_like)


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
        missing_process: ``"selfmasking"`` (default), ``"selfmasking_known_signs"``,
            ``"linear"`` (the paper's agnostic process), ``"nonlinear"`` or a
            :class:`~notmiwae_fast.BaseMissingProcess` instance (copied at fit).
        signs: [D] of ±1 for ``"selfmasking_known_signs"`` (+1: high values go
            missing; None: all +1).

    Extra fitted attribute: ``missing_process_``, the learnt process as
    ``model_.interpret_missing_process()`` describes it (thresholds in the original
    units). :meth:`missing_probability` gives p(missing | x).
    """

    _model_class = NotMIWAE

    _parameter_constraints: dict = {
        **_BaseIWImputer._parameter_constraints,
        "missing_process": [StrOptions(set(MISSING_PROCESSES)), BaseMissingProcess],
        "signs": ["array-like", None],
    }

    def __init__(
        self,
        *,
        missing_process: Union[str, BaseMissingProcess] = "selfmasking",
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
        )
        self.missing_process = missing_process
        self.signs = signs

    def _model_kwargs(self) -> dict:
        process = self.missing_process
        if isinstance(process, BaseMissingProcess):
            process = copy.deepcopy(process)
        signs = None if self.signs is None else np.asarray(self.signs, dtype=np.float64)
        return {"missing_process": process, "signs": signs}

    def _after_fit(self) -> None:
        self.missing_process_ = self.model_.interpret_missing_process()

    def missing_probability(self, X: Table) -> np.ndarray:
        """p(value missing | x) per entry under the learnt process.

        Args:
            X: [N, D] complete data in the original units (no NaN).
        Returns:
            [N, D] float64 array of probabilities.
        """
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
