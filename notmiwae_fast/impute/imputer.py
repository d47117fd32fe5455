"""scikit-learn imputers: :class:`NotMIWAEImputer` (data missing not at random) and
:class:`MIWAEImputer` (missing at random).

``fit(X)`` standardises every column (NaN ignored), trains the model for ``max_iter``
optimizer steps (Adam, mini-batches of ``batch_size`` rows drawn without replacement,
epoch after epoch) and ``transform(X)`` fills the NaN entries with the model's
conditional mean from ``n_impute_samples`` importance samples, back in the original
units. Observed entries come back unchanged, bit for bit. NumPy arrays and pandas
DataFrames are accepted; a DataFrame comes back as a DataFrame with its columns and
index, and its integer columns (NumPy ints and pandas' nullable Int64, ...) and boolean
columns keep their dtype: their imputations are rounded to the nearest integer (clipped
to the dtype's range) or thresholded at 0.5 (True when >= 0.5).

``fit`` warns (:class:`~notmiwae_fast.trainer.TrainingWarning`) and records a flag in
``history_["health"]`` when the result should not be trusted: the training loss
became NaN, or (judged from 50 steps on) ended far above its best or far above what
independent per-column distributions reach (``"diverged"``), ``out_dist="bern"`` sees observed values outside
[0, 1] (``"bern_data_outside_01"``), or a column has too few observed values to learn
from (``"few_observed"``: fewer than :data:`MIN_OBSERVED` values, or fewer than
:data:`MIN_OBSERVED_FRACTION` of the rows).

Under ``torchrun`` (a process group started from the environment, see
:mod:`notmiwae_fast.distributed`) ``fit`` trains data-parallel: every rank runs
``max_iter`` steps on its own ``batch_size`` rows (so the global batch is
``world_size × batch_size``), the rows are split between the ranks afresh each epoch
(a permutation shared by all ranks), DistributedDataParallel averages the gradients and
``loss_curve_`` holds the per-step loss averaged over ranks; the fitted model is the
same on every rank. ``transform`` stays local to the process;
:func:`notmiwae_fast.distributed.transform_sharded` splits it over the ranks. Each
block of 256 rows is imputed with torch seeded to ``seed + block index``, so the
imputations do not depend on how the rows are split.

Example::

    from notmiwae_fast.imputer import NotMIWAEImputer
    X_filled = NotMIWAEImputer(max_iter=20_000, random_state=0).fit_transform(X_with_nan)
"""

from __future__ import annotations

import copy
import numbers
import warnings
from typing import Optional

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .._common import io as _io, validate as _validate

from .. import utils
from ..nn.missing import MISSING_PROCESSES, BaseMissingProcess
from ..nn.models import MIWAE, NotMIWAE
from ..nn.networks import glorot_init_
from .._common.progress import progress
from ..train import Trainer, loss_diverged
from ..train.health import _record

__all__ = ["NotMIWAEImputer", "MIWAEImputer", "save_imputer", "load_imputer"]

# Rows per step of the imputation progress bar.
_IMPUTE_BLOCK = 1024
# Rows imputed under one seed (seed + index of the block of this many rows).
_SEED_BLOCK = 256
_POSITIVE_INT = Interval(numbers.Integral, 1, None, closed="left")
# The integer parameters (scikit-learn's Interval(Integral) takes True for 1: refused).
_INT_PARAMETERS = ("latent_dim", "hidden_dim", "n_samples", "n_impute_samples", "max_iter",
                   "batch_size")
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
# float32's largest value: what the models compute in.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _column_label(columns, j: int) -> str:
    """How errors name column j: its name for a DataFrame, else its index."""
    return f"column {columns[j]!r}" if columns is not None else f"column {j}"


def _check_numeric(X):
    """X with the object columns of a DataFrame that hold numbers (None or NaN for
    missing) made numeric; ValueError naming the first non-numeric column of a DataFrame
    or object array."""
    if hasattr(X, "dtypes") and hasattr(X, "columns"):
        import pandas as pd
        from pandas.api.types import is_bool_dtype, is_numeric_dtype
        converted = {}
        for j, (name, dtype) in enumerate(zip(X.columns, X.dtypes)):
            if dtype == object:
                try:
                    converted[j] = pd.to_numeric(X.iloc[:, j], errors="raise")
                    continue
                except (ValueError, TypeError) as err:
                    raise ValueError(f"argument 'X': column {name!r} is not numeric "
                                     f"({err}); encode it as numbers or drop it") from None
            if not (is_numeric_dtype(dtype) or is_bool_dtype(dtype)):
                raise ValueError(f"argument 'X': column {name!r} is not numeric (dtype "
                                 f"{dtype}); encode it as numbers or drop it")
        if converted:
            X = X.copy()
            for j, column in converted.items():
                X.isetitem(j, column)
    elif isinstance(X, np.ndarray) and X.dtype.kind in "OUSV" and X.ndim == 2:
        for j in range(X.shape[1]):
            try:
                X[:, j].astype(np.float64)
            except (ValueError, TypeError) as err:  # keep the kind: TypeError for objects
                raise type(err)(f"argument 'X': column {j} is not numeric ({err})") from None
    return X


def _in_dtype_of(original, values: np.ndarray):
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
            code; :func:`notmiwae_fast.networks.glorot_init_`).

    Fitted attributes: ``model_`` (the trained torch model), ``mean_`` and ``scale_``
    ([D] standardisation), ``n_iter_``, ``loss_curve_`` ([n_iter_] training losses),
    ``history_`` (``{"health": [flags], "warnings": [messages]}``: what fit warned
    about, see the module docstring; both empty after a healthy fit),
    ``n_features_in_`` and ``feature_names_in_`` (DataFrames).
    """

    _model_class: type = MIWAE

    _parameter_constraints: dict = {
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
    }

    def __init__(self, *, latent_dim: Optional[int] = None, hidden_dim: int = 128,
                 n_samples: int = 20, out_dist: str = "gauss", ppca: bool = False,
                 n_impute_samples: int = 1000, max_iter: int = 10_000, batch_size: int = 16,
                 lr: float = 1e-3, random_state=None, device=None, verbose=False,
                 backend: str = "fused", standardize: bool = True,
                 weight_init: str = "torch"):
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
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _model_kwargs(self) -> dict:
        """Constructor arguments of the torch model beyond the common ones."""
        return {}

    def _check_X(self, X, reset: bool) -> np.ndarray:
        """[N, D] float array (float32 kept, anything else float64), NaN allowed, inf
        and non-numeric columns refused with the column named."""
        X = _check_numeric(X)
        columns = list(X.columns) if hasattr(X, "columns") else None
        arr = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32],
                            ensure_all_finite=False, copy=False)
        bad = np.isinf(arr)
        if bad.any():
            j = int(np.nonzero(bad.any(axis=0))[0][0])
            raise ValueError(f"argument 'X': {_column_label(columns, j)} holds inf "
                             f"({int(bad[:, j].sum())} entries); only NaN marks a missing "
                             "value")
        if not reset and hasattr(self, "mean_"):
            with np.errstate(all="ignore"):  # overflow is the error reported below
                x_std = (arr.astype(np.float64) - self.mean_) / self.scale_
            self._check_float32(x_std, columns, "the fitted model's scale")
        return arr

    @staticmethod
    def _check_float32(x_std: np.ndarray, columns: Optional[list], what: str) -> None:
        """ValueError naming the first column of x_std ([N, D], NaN = missing) whose
        values the model cannot compute with (beyond float32's range, once ``what``
        is applied)."""
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(x_std) <= _FLOAT32_MAX) & ~np.isnan(x_std)
        if bad.any():
            j = int(np.nonzero(bad.any(axis=0))[0][0])
            biggest = float(np.nanmax(np.abs(x_std[:, j])))
            raise ValueError(f"argument 'X': {_column_label(columns, j)} holds values too "
                             f"large for the model (up to {biggest:.3g} in {what}; the "
                             f"model computes in float32, up to {_FLOAT32_MAX:.3g}); "
                             "rescale the column")

    def _validate_params(self) -> None:
        """scikit-learn's checks of the parameters, plus: the integer parameters, lr and
        random_state refuse bools (True is an Integral to scikit-learn), lr must be
        finite. InvalidParameterError (a ValueError) naming the parameter."""
        cls = type(self).__name__
        for name in _INT_PARAMETERS + ("lr", "random_state"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)):
                kind = "a float > 0" if name == "lr" else (
                    "an int, a RandomState or None" if name == "random_state"
                    else "an int >= 1")
                raise InvalidParameterError(f"The {name!r} parameter of {cls} must be "
                                            f"{kind}, not a bool; got {value!r}")
        super()._validate_params()
        if not np.isfinite(self.lr):
            raise InvalidParameterError(f"The 'lr' parameter of {cls} must be a finite "
                                        f"float > 0; got {self.lr!r}")

    def _device(self) -> torch.device:
        """The device to compute on; ValueError naming 'device' when it is not a device
        or is a CUDA device this machine does not have."""
        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return _validate.device(self.device)

    # -- fit / transform -------------------------------------------------------------------
    def fit(self, X, y=None):
        """Trains the model on X ([N, D], NaN = missing); y is ignored. Returns self.

        Raises ValueError naming the column when a column is entirely missing, is not
        numeric or holds inf."""
        arr, columns = self._fit_input(X)
        observed = ~np.isnan(arr)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        device = self._device()
        x_std, mean, scale = self._standardize(arr.astype(np.float64), fit=True)
        history: dict = {"health": [], "warnings": []}
        self._check_data_health(arr, observed, columns, history)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            model = self._new_model(arr.shape[1], columns)
            if self.weight_init == "glorot":
                glorot_init_(model)
            model.set_standardization(mean, scale)
            losses = self._train(model, x_std, observed, device, seed)
        self._check_loss_health(losses, x_std, observed, history)
        self.model_ = model
        self.mean_, self.scale_ = mean, scale
        self.loss_curve_ = losses
        self.n_iter_ = len(losses)
        self.history_ = history
        self._seed_ = seed
        self._after_fit()
        return self

    def _check_data_health(self, arr: np.ndarray, observed: np.ndarray,
                           columns: Optional[list], history: dict) -> None:
        """Warns and flags ``history`` when out_dist='bern' sees observed values outside
        [0, 1] ("bern_data_outside_01") and when columns have too few observed values
        ("few_observed", see MIN_OBSERVED)."""
        name = type(self).__name__
        if self.out_dist == "bern":
            with np.errstate(invalid="ignore"):
                outside = observed & ((arr < 0) | (arr > 1))
            if outside.any():
                bad = [_column_label(columns, int(j)) for j in
                       np.nonzero(outside.any(axis=0))[0]]
                _record(history, "bern_data_outside_01",
                        f"{name}.fit: out_dist='bern' models values in [0, 1], but "
                        f"{int(outside.sum())} observed values lie outside it ("
                        f"{', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); rescale "
                        "the data to [0, 1] or use out_dist='gauss'", stacklevel=3)
        counts = observed.sum(axis=0)
        needed = max(MIN_OBSERVED, MIN_OBSERVED_FRACTION * arr.shape[0])
        sparse = np.nonzero(counts < needed)[0]
        if sparse.size:
            described = [f"{_column_label(columns, int(j))}: {int(counts[j])} of "
                         f"{arr.shape[0]}" for j in sparse]
            _record(history, "few_observed",
                    f"{name}.fit: too few observed values to learn from ("
                    f"{'; '.join(described[:5])}{'; ...' if len(described) > 5 else ''}; "
                    f"fewer than {MIN_OBSERVED} or {MIN_OBSERVED_FRACTION:.0%} of the "
                    "rows); their imputations may lie far outside the observed values",
                    stacklevel=3)

    def _check_loss_health(self, losses: np.ndarray, x_std: np.ndarray,
                           observed: np.ndarray, history: dict) -> None:
        """Warns and flags ``history`` ("diverged") when the loss curve diverged or
        ended far above its best (trainer.loss_diverged), or far above the loss of
        independent per-column distributions fitted to the training data: by more than
        100 × (|that loss| + D) per row. Both are judged from 50 steps on."""
        name = type(self).__name__
        reason = loss_diverged(losses, min_length=_MIN_STEPS_TO_JUDGE)
        if reason is None and len(losses) >= _MIN_STEPS_TO_JUDGE:
            baseline = self._baseline_loss(x_std, observed)
            w = max(1, min(100, len(losses) // 10))
            final = float(np.mean(losses[-w:]))
            if final > baseline + _BASELINE_FACTOR * (abs(baseline) + x_std.shape[1]):
                reason = (f"the training loss ended at {final:.4g}, far above {baseline:.4g}"
                          " that independent per-column distributions reach: training "
                          "failed (standardise the data or lower the learning rate)")
        if reason is not None:
            _record(history, "diverged", f"{name}.fit: {reason}; the imputations are not "
                    "to be trusted", stacklevel=3)

    def _baseline_loss(self, x_std: np.ndarray, observed: np.ndarray) -> float:
        """The loss per row (negative log-likelihood) of independent per-column
        distributions on the training data: a normal with each column's observed mean
        and variance (a Bernoulli with p = 1/2 for out_dist='bern'), plus log 2 per
        entry for a model of the mask (not-MIWAE)."""
        fraction = observed.mean(axis=0)
        if self.out_dist == "bern":
            per_column = np.full(x_std.shape[1], np.log(2.0))
        else:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # columns of one value
                var = np.nanvar(np.where(observed, x_std, np.nan), axis=0)
            var = np.maximum(np.nan_to_num(var, nan=1.0, posinf=1.0), 1e-6)
            per_column = 0.5 * np.log(2 * np.pi * np.e * var)
        total = float(np.sum(fraction * per_column))
        if self._model_class is NotMIWAE:
            total += x_std.shape[1] * np.log(2.0)
        return total

    def _new_model(self, n_features: int, columns: Optional[list]):
        """The untrained torch model for ``n_features`` columns (named ``columns``)."""
        return self._model_class(
            n_features, latent_dim=self.latent_dim, hidden_dim=self.hidden_dim,
            n_samples=self.n_samples, out_dist=self.out_dist, ppca=self.ppca,
            feature_names=[str(c) for c in columns] if columns is not None else None,
            backend=self.backend, **self._model_kwargs())

    def _fit_input(self, X) -> tuple[np.ndarray, Optional[list]]:
        """The checks of :meth:`fit` before any training: the parameters and X. Returns
        (X as a float array [N, D], the DataFrame's columns or None); raises ValueError
        naming the parameter or the column."""
        self._validate_params()
        self._device()
        columns = list(X.columns) if hasattr(X, "columns") else None
        arr = self._check_X(X, reset=True)
        empty = np.nonzero(np.isnan(arr).all(axis=0))[0]
        if empty.size:
            raise ValueError(f"argument 'X': {_column_label(columns, int(empty[0]))} is "
                             "entirely missing; drop it before fitting")
        x_std, mean, scale = self._standardize(arr.astype(np.float64), fit=True)
        bad = ~(np.isfinite(mean) & np.isfinite(scale))
        if bad.any():
            j = int(np.nonzero(bad)[0][0])
            biggest = float(np.nanmax(np.abs(arr[:, j])))
            raise ValueError(f"argument 'X': {_column_label(columns, j)} cannot be "
                             f"standardised: its mean or standard deviation overflows "
                             f"(values up to {biggest:.3g}); rescale the column")
        self._check_float32(x_std, columns, "the units the model is trained in")
        return arr, columns

    def _after_fit(self) -> None:
        """Hook for fitted attributes of subclasses."""

    def _standardize(self, arr: np.ndarray, fit: bool = False):
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

    def _train(self, model, x_std: np.ndarray, observed: np.ndarray,
               device: torch.device, seed: int) -> np.ndarray:
        """``max_iter`` Adam steps on mini-batches of x_std ([N, D], standardised, NaN
        allowed) with mask ``observed`` ([N, D] bool); returns the per-step losses
        ([max_iter], averaged over ranks in a distributed run)."""
        trainer = Trainer(model, lr=self.lr, device=device, progress=False)
        ctx, device = trainer.ctx, trainer.device
        x_t = torch.as_tensor(np.nan_to_num(x_std, nan=0.0), dtype=torch.float32,
                              device=device)
        s_t = torch.as_tensor(observed, dtype=torch.float32, device=device)
        n = x_t.shape[0]
        if ctx.distributed:
            # Each epoch: one permutation shared by all ranks (its own generator, seeded
            # alike everywhere), cut to a multiple of the world size, rank r taking every
            # world_size-th row from r: disjoint, equal shares.
            n_local = n // ctx.world_size
            if n_local < 1:
                raise ValueError(f"argument 'X' has {n} row(s); training on "
                                 f"{ctx.world_size} processes needs at least one row per "
                                 "process")
            shared = torch.Generator().manual_seed(seed)

            def new_order() -> torch.Tensor:
                perm = torch.randperm(n, generator=shared)[:n_local * ctx.world_size]
                return perm[ctx.rank::ctx.world_size].to(device)
        else:
            n_local = n

            def new_order() -> torch.Tensor:
                return torch.randperm(n, device=device)
        bs = min(self.batch_size, n_local)
        losses = torch.empty(self.max_iter, dtype=torch.float32, device=device)
        order = new_order()
        pos = 0
        steps = progress(range(self.max_iter), bool(self.verbose) and ctx.is_main,
                         desc="fitting", unit="step", mininterval=0.5)
        for step in steps:
            if pos + bs > n_local:
                order, pos = new_order(), 0
            idx = order[pos:pos + bs]
            pos += bs
            losses[step] = trainer.train_step((x_t[idx], s_t[idx]))["loss"]
            if hasattr(steps, "set_postfix") and step % 200 == 0:
                steps.set_postfix(loss=f"{losses[step].item():.3f}")
        if ctx.distributed:
            torch.distributed.all_reduce(losses)
            losses /= ctx.world_size
        model.eval()
        return losses.cpu().numpy()

    def transform(self, X):
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
            raise ValueError(f"argument 'first_row' must be a multiple of {_SEED_BLOCK}; "
                             f"got {first_row}")
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
                blocks = progress(range(0, len(x_t), _IMPUTE_BLOCK),
                                  bool(self.verbose) and context().is_main,
                                  desc="imputing", unit="block", mininterval=0.5)
                imputed = np.concatenate([
                    utils.impute(model, x_t[i:i + _IMPUTE_BLOCK], s_t[i:i + _IMPUTE_BLOCK],
                                 n_samples=self.n_impute_samples, batch_size=_SEED_BLOCK,
                                 device=device,
                                 seed=self._seed_ + (first_row + i) // _SEED_BLOCK)
                    for i in blocks])
            back = utils.destandardize(imputed.astype(np.float64), self.mean_, self.scale_)
            out[missing] = back[missing].astype(out.dtype)
        return out

    @staticmethod
    def _wrap_like(X, out: np.ndarray):
        """``out`` [N, D] in the type of X: a DataFrame with X's columns and index (its
        integer and boolean columns in their dtype, see transform) for a DataFrame."""
        if hasattr(X, "columns") and hasattr(X, "index") and hasattr(X, "iloc"):
            import pandas as pd
            from pandas.api.types import is_bool_dtype, is_integer_dtype
            frame = pd.DataFrame(out, columns=X.columns, index=X.index)
            for j, dtype in enumerate(X.dtypes):
                if is_bool_dtype(dtype) or is_integer_dtype(dtype):
                    frame.isetitem(j, _in_dtype_of(X.iloc[:, j], out[:, j]))
            return frame
        return out


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

    def __init__(self, *, missing_process="selfmasking", signs=None,
                 latent_dim: Optional[int] = None, hidden_dim: int = 128, n_samples: int = 20,
                 out_dist: str = "gauss", ppca: bool = False, n_impute_samples: int = 1000,
                 max_iter: int = 10_000, batch_size: int = 16, lr: float = 1e-3,
                 random_state=None, device=None, verbose=False, backend: str = "fused",
                 standardize: bool = True, weight_init: str = "torch"):
        super().__init__(latent_dim=latent_dim, hidden_dim=hidden_dim, n_samples=n_samples,
                         out_dist=out_dist, ppca=ppca, n_impute_samples=n_impute_samples,
                         max_iter=max_iter, batch_size=batch_size, lr=lr,
                         random_state=random_state, device=device, verbose=verbose,
                         backend=backend, standardize=standardize, weight_init=weight_init)
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

    def missing_probability(self, X) -> np.ndarray:
        """p(value missing | x) per entry under the learnt process.

        Args:
            X: [N, D] complete data in the original units (no NaN).
        Returns:
            [N, D] float64 array of probabilities.
        """
        check_is_fitted(self)
        arr = self._check_X(X, reset=False)
        if np.isnan(arr).any():
            raise ValueError("argument 'X' must be complete (no NaN) for "
                             "missing_probability; impute it first")
        x_std, _, _ = self._standardize(arr.astype(np.float64))
        model = self.model_
        x_t = torch.as_tensor(x_std, dtype=next(model.parameters()).dtype,
                              device=next(model.parameters()).device)
        with torch.no_grad():
            p = model.missing_model.missing_probability(x_t)
        return p.cpu().double().numpy()


# -- files -------------------------------------------------------------------------------
# A fitted imputer is saved as plain data: its parameters, fitted arrays (as tensors) and
# the model's state dict. The file's one pickled callable is _imputer_from_state, which
# rebuilds the imputer from that data: torch.load(weights_only=True) with it allowed
# (load_imputer) never runs code named by the file, and torch.load(weights_only=False)
# still gives the imputer.
IMPUTER_FORMAT = "notmiwae_fast.imputer/1"
# The constructor's name in files written before the package had subfolders: still
# allowed, as the same function.
_EARLIER_CONSTRUCTOR = "notmiwae_fast.imputer._imputer_from_state"
_IMPUTERS = {"MIWAEImputer": MIWAEImputer, "NotMIWAEImputer": NotMIWAEImputer}


def _plain_param(name: str, value):
    """A parameter as plain data (None, bool, int, float, str, list of floats); ValueError
    for what the plain format cannot hold."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.device):
        return str(value)
    if name == "signs":
        return [float(v) for v in np.asarray(value, dtype=np.float64).ravel()]
    raise ValueError(f"the imputer's parameter {name!r} is a {type(value).__name__}, which "
                     "a saved imputer cannot hold (only None, numbers, strings: e.g. an int "
                     "random_state and a missing_process name)")


def _imputer_state(imputer: _BaseIWImputer) -> dict:
    """A fitted MIWAEImputer / NotMIWAEImputer as plain data (tensors on the CPU)."""
    check_is_fitted(imputer)
    name = type(imputer).__name__
    if _IMPUTERS.get(name) is not type(imputer):
        raise ValueError(f"save_imputer saves MIWAEImputer and NotMIWAEImputer; got {name}")
    params = {k: _plain_param(k, v) for k, v in imputer.get_params(deep=False).items()}
    names = getattr(imputer, "feature_names_in_", None)
    return {"format": IMPUTER_FORMAT, "class": name, "params": params,
            "model": {k: v.detach().cpu() for k, v in imputer.model_.state_dict().items()},
            "mean": torch.from_numpy(np.array(imputer.mean_)),
            "scale": torch.from_numpy(np.array(imputer.scale_)),
            "loss_curve": torch.from_numpy(np.array(imputer.loss_curve_)),
            "n_iter": int(imputer.n_iter_), "seed": int(imputer._seed_),
            "history": {key: [str(v) for v in value] for key, value in
                        getattr(imputer, "history_", {}).items()},
            "n_features_in": int(imputer.n_features_in_),
            "feature_names_in": None if names is None else [str(n) for n in names]}


class _SavedImputer:
    """What :func:`save_imputer` pickles: plain data that unpickles as
    ``_imputer_from_state(state)``."""

    def __init__(self, state: dict):
        self.state = state

    def __reduce__(self):
        return _imputer_from_state, (self.state,)


def _imputer_from_state(state) -> _BaseIWImputer:
    """The fitted imputer that :func:`_imputer_state` described; FormatError (a
    ValueError) when ``state`` is not such a description (wrong format, parameters,
    shapes)."""
    try:
        return _build_imputer(state)
    except _io.FormatError:
        raise
    except (ValueError, TypeError, RuntimeError) as err:  # from the constructors
        raise _io.FormatError(" ".join(str(err).split())[:300]) from None


def _build_imputer(state) -> _BaseIWImputer:
    """The body of :func:`_imputer_from_state`."""
    def bad(what: str) -> ValueError:
        return _io.FormatError(what)

    if not isinstance(state, dict) or state.get("format") != IMPUTER_FORMAT:
        raise bad(f"the format is not {IMPUTER_FORMAT!r}")
    cls = _IMPUTERS.get(state.get("class"))
    if cls is None:
        raise bad(f"unknown class {state.get('class')!r}")
    params = state.get("params")
    allowed = set(cls().get_params(deep=False))
    if not isinstance(params, dict) or not set(params) <= allowed:
        raise bad("the parameters are not those of " + cls.__name__)
    for key, value in params.items():
        if not (value is None or isinstance(value, (bool, int, float, str)) or (
                key == "signs" and isinstance(value, list)
                and all(isinstance(v, float) for v in value))):
            raise bad(f"parameter {key!r} is a {type(value).__name__}")
    imputer = cls(**params)
    imputer._validate_params()
    n_features, names = state.get("n_features_in"), state.get("feature_names_in")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise bad("'n_features_in' is not an int >= 1")
    if names is not None and (not isinstance(names, list) or len(names) != n_features
                              or not all(isinstance(n, str) for n in names)):
        raise bad(f"'feature_names_in' is not a list of {n_features} names")
    arrays = {}
    for key, length in (("mean", n_features), ("scale", n_features), ("loss_curve", None)):
        value = state.get(key)
        if not torch.is_tensor(value) or value.dim() != 1 or (
                length is not None and value.numel() != length):
            raise bad(f"{key!r} is not a tensor of {length or 'one or more'} values")
        arrays[key] = value.detach().cpu().numpy().copy()
    for key in ("n_iter", "seed"):
        if isinstance(state.get(key), bool) or not isinstance(state.get(key), int):
            raise bad(f"{key!r} is not an int")
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
        raise bad("'model' is not a state dict")
    with torch.random.fork_rng(devices=[]):  # the new model's initial weights: unused
        model = imputer._new_model(n_features, names)
    expected = model.state_dict()
    expected.update({k: weights[k] for k in ("data_mean", "data_std") if k in weights})
    if set(weights) != set(expected) or any(
            weights[k].shape != expected[k].shape for k in expected):
        raise bad("the model's state dict does not fit its parameters")
    model.load_state_dict(weights)
    imputer.model_ = model.to(next(iter(weights.values())).device).eval()  # map_location
    imputer.mean_, imputer.scale_ = arrays["mean"], arrays["scale"]
    imputer.loss_curve_ = arrays["loss_curve"]
    imputer.n_iter_, imputer._seed_ = state["n_iter"], state["seed"]
    history = state.get("history", {"health": [], "warnings": []})  # absent: older files
    if not isinstance(history, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(s, str) for s in v)
            for k, v in history.items()):
        raise bad("'history' is not a dict of lists of strings")
    imputer.history_ = {"health": [], "warnings": [], **history}
    imputer.n_features_in_ = n_features
    if names is not None:
        imputer.feature_names_in_ = np.asarray(names, dtype=object)
    imputer._after_fit()
    return imputer


def save_imputer(imputer: _BaseIWImputer, path) -> None:
    """Saves a fitted MIWAEImputer or NotMIWAEImputer to ``path`` (atomically) as plain
    data that :func:`load_imputer` reads without unpickling objects (what
    ``notmiwae-fast fit`` writes). Its parameters must be plain values (an int or None
    ``random_state``, a missing-process name): ValueError otherwise."""
    _io.save_atomic(_SavedImputer(_imputer_state(imputer)), path)


def load_imputer(path, map_location="cpu") -> _BaseIWImputer:
    """The imputer that :func:`save_imputer` (or ``notmiwae-fast fit``) wrote to
    ``path``, its model on ``map_location``. The file is read with
    ``torch.load(weights_only=True)``: it can hold nothing but tensors and plain data, so
    loading it never runs code. ValueError naming the file when it is unreadable, holds
    pickled objects (e.g. an imputer pickled by an older version) or no imputer."""
    from pathlib import Path
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        imputer = _io.load_plain(path, "model file", map_location,
                                 allowed=[_imputer_from_state,
                                          (_imputer_from_state, _EARLIER_CONSTRUCTOR)])
    except _io.FormatError as err:
        raise ValueError(f"model file {path} does not hold a fitted imputer saved by "
                         f"this package ({err})") from None
    if not isinstance(imputer, _BaseIWImputer):
        raise ValueError(f"model file {path} does not hold a fitted imputer")
    return imputer
