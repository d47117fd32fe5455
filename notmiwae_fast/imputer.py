"""scikit-learn imputers: :class:`NotMIWAEImputer` (data missing not at random) and
:class:`MIWAEImputer` (missing at random).

``fit(X)`` standardises every column (NaN ignored), trains the model for ``max_iter``
optimizer steps (Adam, mini-batches of ``batch_size`` rows drawn without replacement,
epoch after epoch) and ``transform(X)`` fills the NaN entries with the model's
conditional mean from ``n_impute_samples`` importance samples, back in the original
units. Observed entries come back unchanged, bit for bit. NumPy arrays and pandas
DataFrames are accepted; a DataFrame comes back as a DataFrame with its columns and
index.

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
from typing import Optional

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _io

from . import utils
from .missing import MISSING_PROCESSES, BaseMissingProcess
from .models import MIWAE, NotMIWAE
from .networks import glorot_init_
from ._progress import progress
from .trainer import Trainer

__all__ = ["NotMIWAEImputer", "MIWAEImputer", "save_imputer", "load_imputer"]

# Rows per step of the imputation progress bar.
_IMPUTE_BLOCK = 1024
# Rows imputed under one seed (seed + index of the block of this many rows).
_SEED_BLOCK = 256
_POSITIVE_INT = Interval(numbers.Integral, 1, None, closed="left")


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
        return arr

    def _device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

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
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            model = self._new_model(arr.shape[1], columns)
            if self.weight_init == "glorot":
                glorot_init_(model)
            model.set_standardization(mean, scale)
            losses = self._train(model, x_std, observed, device, seed)
        self.model_ = model
        self.mean_, self.scale_ = mean, scale
        self.loss_curve_ = losses
        self.n_iter_ = len(losses)
        self._seed_ = seed
        self._after_fit()
        return self

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
        columns = list(X.columns) if hasattr(X, "columns") else None
        arr = self._check_X(X, reset=True)
        empty = np.nonzero(np.isnan(arr).all(axis=0))[0]
        if empty.size:
            raise ValueError(f"argument 'X': {_column_label(columns, int(empty[0]))} is "
                             "entirely missing; drop it before fitting")
        return arr, columns

    def _after_fit(self) -> None:
        """Hook for fitted attributes of subclasses."""

    def _standardize(self, arr: np.ndarray, fit: bool = False):
        """(standardised [N, D], mean [D], scale [D]); identity for Bernoulli data and
        with ``standardize=False``."""
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
        index), float32 for float32 input, else float64."""
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
            from .distributed import context

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
        if hasattr(X, "columns") and hasattr(X, "index") and hasattr(X, "iloc"):
            import pandas as pd
            return pd.DataFrame(out, columns=X.columns, index=X.index)
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
                                 allowed=[_imputer_from_state])
    except _io.FormatError as err:
        raise ValueError(f"model file {path} does not hold a fitted imputer saved by "
                         f"this package ({err})") from None
    if not isinstance(imputer, _BaseIWImputer):
        raise ValueError(f"model file {path} does not hold a fitted imputer")
    return imputer
