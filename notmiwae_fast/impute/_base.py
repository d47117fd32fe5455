"""The shared body of the scikit-learn imputers (see :mod:`.imputer`): parameters,
input checks, fit and transform."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import utils
from .._common import validate as _validate
from .._common.seeding import forked_rng
from ..nn.models import MIWAE, NotMIWAE
from ..nn.networks import glorot_init_
from . import _columns, _mixed
from ._health import _check_data, _check_loss
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
from ._training import FitData, _train_model
from ._transform import impute_rows

if TYPE_CHECKING:
    import pandas as pd

# What the imputers take and give: [N, D] tables (NaN = missing).
Table = Union[np.ndarray, "pd.DataFrame"]


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
        column_types: Optional[dict] = None,
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
        self.column_types = column_types

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
        or is a CUDA device this machine does not have. Under torchrun a CUDA device is
        the process's own GPU, cuda:LOCAL_RANK, as the Trainer places it (a bare 'cuda'
        would put every process on the current GPU, cuda:0)."""
        from ..distributed import context

        if self.device is None:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            try:
                device = _validate.device(self.device)
            except ValueError as err:  # e.g. fitted on a GPU, loaded where there is none
                raise ValueError(
                    f"{err}; set_params(device='cpu') (or device=None: a GPU if there is "
                    "one) computes elsewhere"
                ) from None
        ctx = context()
        if device.type == "cuda" and ctx.distributed:
            return torch.device("cuda", ctx.local_rank)
        return device

    # -- fit / transform -------------------------------------------------------------------
    def fit(self, X: Table, y: Any = None) -> "_BaseIWImputer":
        """Trains the model on X ([N, D], NaN = missing); y is ignored. Returns self.

        Raises ValueError naming the column when a column is entirely missing, is not
        numeric or holds inf."""
        if _columns.is_mixed(X, self.column_types):
            return _mixed.fit(self, X)
        self.codec_ = None
        arr, columns = self._fit_input(X)
        observed = ~np.isnan(arr)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        device = self._device()
        x_std, mean, scale = self._standardize(arr.astype(np.float64), fit=True)
        history: dict = {"health": [], "warnings": []}
        name = type(self).__name__
        _check_data(name, self.out_dist, arr, observed, columns, history)
        data = FitData(x_std, observed, (mean, scale), columns, device, seed)
        self._before_training(data)
        model, losses = self._trained_model(data, self.max_iter)
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

    def _before_training(self, data: FitData) -> None:
        """Hook run by :meth:`fit` before the model is trained on ``data``, e.g. to
        choose the model."""

    def _trained_model(self, data: FitData, max_iter: int) -> tuple[torch.nn.Module, np.ndarray]:
        """A new model trained for ``max_iter`` steps on ``data``, torch seeded with
        ``data.seed`` (the global RNG left as it was). Returns (model, losses)."""
        x_std, observed, stats, columns, device, seed = data
        with forked_rng(device, seed):
            model = self._new_model(x_std.shape[1], columns)
            if self.weight_init == "glorot":
                glorot_init_(model)
            model.set_standardization(*stats)
            losses = _train_model(
                model,
                x_std,
                observed,
                device,
                lr=self.lr,
                batch_size=self.batch_size,
                max_iter=max_iter,
                verbose=bool(self.verbose),
            )
        return model, losses

    def _new_model(self, n_features: int, columns: Optional[list]) -> torch.nn.Module:
        """The untrained torch model for ``n_features`` columns (named ``columns``)."""
        if getattr(self, "codec_", None) is not None:
            return _mixed.new_model(self, self.codec_)
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

    def check_fit_input(self, X: Table) -> None:
        """The checks :meth:`fit` makes before training (the parameters and X), without
        training: ValueError naming the parameter or the column."""
        if _columns.is_mixed(X, self.column_types):
            _mixed.checked_input(self, X)
        else:
            self._fit_input(X)

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
        if getattr(self, "codec_", None) is not None:
            return _mixed.transform(self, X)
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
        return impute_rows(
            self.model_,
            arr,
            standardized=self._standardize(arr.astype(np.float64))[0],
            mean=self.mean_,
            scale=self.scale_,
            device=self._device(),
            n_samples=self.n_impute_samples,
            seed=self._seed_,
            first_row=first_row,
            verbose=bool(self.verbose),
        )

    _wrap_like = staticmethod(_wrap_like)
