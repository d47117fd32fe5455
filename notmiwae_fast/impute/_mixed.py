"""The imputers on a DataFrame of mixed column types (real, binary, categorical, count
columns; see :mod:`._columns`): fit trains a :class:`~notmiwae_fast.nn.mixed.MixedNotMIWAE`
(not-MIWAE with the mixed self-masking process for NotMIWAEImputer, MIWAE for
MIWAEImputer) with the same Trainer loop as the numeric path, and transform returns the
table with the same columns, dtypes and categories."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import utils
from .._common.seeding import forked_rng
from ..nn.mixed import MixedNotMIWAE
from ..nn.models import NotMIWAE
from ._columns import TableCodec
from ._input import _check_float32, _check_observed, _check_statistics
from ._training import _train_model
from ._transform import SEED_BLOCK

if TYPE_CHECKING:
    import pandas as pd

__all__: list[str] = []

# The missing processes the mixed models offer, by the imputers' names ("auto" does not
# choose between them on a mixed table yet: self-masking; "mcar": no process, MIWAE).
_PROCESSES = {"selfmasking": "selfmasking", "auto": "selfmasking", "mcar": None}


def _process(est: Any) -> Any:
    if est._model_class is not NotMIWAE:
        return None
    name = est.missing_process
    if not isinstance(name, str) or name not in _PROCESSES:
        raise ValueError(
            f"argument 'missing_process' must be one of {sorted(_PROCESSES)} for a table with "
            f"categorical, binary or count columns; got {name!r}"
        )
    return _PROCESSES[name]


def _standardized(arr: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """arr with its real columns in the model's units (mean 0 and scale 1 elsewhere)."""
    return (arr - mean) / scale


def checked_input(
    est: Any, X: "pd.DataFrame"
) -> tuple[TableCodec, np.ndarray, np.ndarray, np.ndarray]:
    """The checks of fit on a mixed DataFrame before any training: the parameters, the
    column types and values, the real columns' statistics. Returns (the codec, X encoded
    [N, D] with NaN missing, the per-column mean and scale [D]: the real columns'
    standardisation, 0 and 1 elsewhere); ValueError naming the parameter or the column."""
    est._validate_params()
    est._device()
    _process(est)
    validate_data(est, X, reset=True, skip_check_array=True)
    codec = TableCodec.detect(X, est.column_types)
    arr = codec.encode(X)
    _check_observed(arr, codec.names)
    real = codec.layout.columns("real")
    mean, scale = np.zeros(arr.shape[1]), np.ones(arr.shape[1])
    if real and est.standardize:
        # Values near float64's limit overflow here: reported by column just below.
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            _, mean[real], scale[real] = utils.standardize(arr[:, real])
            x_std = _standardized(arr, mean, scale)
        _check_statistics(arr, mean, scale, codec.names)
        _check_float32(x_std, codec.names, "the units the model is trained in")
    return codec, arr, mean, scale


def fit(est: Any, X: "pd.DataFrame") -> Any:
    """NotMIWAEImputer / MIWAEImputer.fit on a mixed DataFrame."""
    codec, arr, mean, scale = checked_input(est, X)
    device = est._device()
    observed = ~np.isnan(arr)
    seed = int(check_random_state(est.random_state).randint(np.iinfo(np.int32).max))
    with forked_rng(device, seed):
        model = new_model(est, codec)
        model.set_standardization(mean, scale)
        losses = _train_model(
            model,
            _standardized(arr, mean, scale),
            observed,
            device,
            lr=est.lr,
            batch_size=est.batch_size,
            max_iter=est.max_iter,
            verbose=bool(est.verbose),
        )
    est.model_, est.codec_ = model, codec
    est.mean_, est.scale_ = mean, scale
    est.loss_curve_, est.n_iter_ = losses, len(losses)
    est.history_ = {"health": [], "warnings": []}
    est._seed_ = seed
    if est._model_class is NotMIWAE:  # "auto" chooses no process on a mixed table (yet)
        est.missing_process_selection_ = None
    est._after_fit()
    return est


def new_model(est: Any, codec: TableCodec) -> MixedNotMIWAE:
    """The untrained model of the imputer ``est`` for the table ``codec`` describes."""
    return MixedNotMIWAE(
        codec.layout,
        latent_dim=est.latent_dim,
        hidden_dim=est.hidden_dim,
        n_samples=est.n_samples,
        missing_process=_process(est),
    )


def interpret(est: Any) -> dict:
    """The fitted mixed not-MIWAE's missing process, per column (see
    :meth:`~notmiwae_fast.nn.mixed.MixedSelfMaskingProcess.interpret`)."""
    codec = est.codec_
    if est.model_.missing_model is None:
        return {}
    return est.model_.interpret_missing_process(
        [str(n) for n in codec.names], [c.categories for c in codec.columns]
    )


def missing_probability(est: Any, X: "pd.DataFrame") -> np.ndarray:
    """NotMIWAEImputer.missing_probability on a mixed table: p(value missing | x) [N, D]
    float64 per entry of the complete DataFrame X, columns in the fitted table's order:
    σ(W x − a) for a real, binary or count column (in the units the model is trained
    in; counts as log(1 + count)), σ(−ℓ_c) for a categorical column of category c."""
    check_is_fitted(est)
    if not hasattr(X, "columns"):
        raise ValueError("argument 'X' must be a DataFrame: the imputer was fitted on one")
    arr = est.codec_.encode(X)
    missing = np.isnan(arr).any(axis=0)
    if missing.any():
        names = [str(n) for n, m in zip(est.codec_.names, missing) if m]
        raise ValueError(
            "argument 'X' must be complete for missing_probability (impute it first); "
            f"column(s) {names} have missing values"
        )
    model = est.model_
    if model.missing_model is None:
        raise AttributeError(
            "missing_probability needs a learnt missing process; this imputer was fitted "
            f"on a mixed table with missing_process={est.missing_process!r}, which learns none"
        )
    parameter = next(model.parameters())
    with np.errstate(all="ignore"):
        x_std = _standardized(arr, est.mean_, est.scale_)
    x = torch.as_tensor(x_std, dtype=parameter.dtype, device=parameter.device)
    with torch.no_grad():
        return model.missing_probability(x).cpu().double().numpy()


def impute_codes(
    est: Any, X: "pd.DataFrame", n_draws: Optional[int] = None, first_row: int = 0
) -> np.ndarray:
    """X encoded and imputed, [N, D] (or [M, N, D] with ``n_draws``), in the table's
    units with category codes. X's rows are rows first_row, first_row + 1, ... of a
    table (a multiple of 256): the block of 256 rows holding row i is imputed under
    seed + i // 256, so a table split at such multiples gives the values of a whole."""
    check_is_fitted(est)
    arr = est.codec_.encode(X)
    observed = ~np.isnan(arr)
    with np.errstate(all="ignore"):  # overflow is the error reported below
        x_std = _standardized(arr, est.mean_, est.scale_)
    _check_float32(x_std, est.codec_.names, "the fitted model's scale")
    x = np.nan_to_num(x_std)
    device = est._device()
    model = est.model_.to(device)
    blocks = []
    with forked_rng(device):
        for start in range(0, len(arr), SEED_BLOCK):
            torch.manual_seed(est._seed_ + (first_row + start) // SEED_BLOCK)
            rows = slice(start, start + SEED_BLOCK)
            x_t = torch.as_tensor(x[rows], dtype=torch.float32, device=device)
            s_t = torch.as_tensor(observed[rows], dtype=torch.float32, device=device)
            blocks.append(model.impute(x_t, s_t, est.n_impute_samples, n_draws).cpu().double())
    if not blocks:
        return arr
    filled = torch.cat(blocks, dim=-2).numpy() * est.scale_ + est.mean_
    return np.where(observed, arr, filled)


def transform(est: Any, X: "pd.DataFrame") -> "pd.DataFrame":
    """NotMIWAEImputer / MIWAEImputer.transform on a mixed DataFrame."""
    if not hasattr(X, "columns"):
        raise ValueError("argument 'X' must be a DataFrame: the imputer was fitted on one")
    return est.codec_.decode(impute_codes(est, X), X)
