"""Saved imputers: :func:`save_imputer` writes a fitted imputer as plain data (its
parameters, fitted arrays as tensors and the model's state dict) and :func:`load_imputer`
reads it back with ``torch.load(weights_only=True)``.

The file's one pickled callable is :func:`_imputer_from_state`, which rebuilds the
imputer from that data: loading with it allowed never runs code named by the file, and
``torch.load(weights_only=False)`` still gives the imputer."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .._common import io as _io
from ..nn.mixed import upgrade_state_dict
from ._columns import Column, TableCodec
from ._select import checked_selection
from .imputer import MIWAEImputer, NotMIWAEImputer, _BaseIWImputer

__all__ = ["save_imputer", "load_imputer", "IMPUTER_FORMAT"]

IMPUTER_FORMAT = "notmiwae_fast.imputer/1"
# The constructor's name in files written before the package had subfolders: still
# allowed, as the same function.
_EARLIER_CONSTRUCTOR = "notmiwae_fast.imputer._imputer_from_state"
_IMPUTERS = {"MIWAEImputer": MIWAEImputer, "NotMIWAEImputer": NotMIWAEImputer}


def _plain_param(name: str, value: Any) -> Any:
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
    if name == "column_types" and isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    raise ValueError(
        f"the imputer's parameter {name!r} is a {type(value).__name__}, which "
        "a saved imputer cannot hold (only None, numbers, strings: e.g. an int "
        "random_state and a missing_process name)"
    )


def _imputer_state(imputer: _BaseIWImputer) -> dict:
    """A fitted MIWAEImputer / NotMIWAEImputer as plain data (tensors on the CPU)."""
    check_is_fitted(imputer)
    name = type(imputer).__name__
    if _IMPUTERS.get(name) is not type(imputer):
        raise ValueError(f"save_imputer saves MIWAEImputer and NotMIWAEImputer; got {name}")
    params = {k: _plain_param(k, v) for k, v in imputer.get_params(deep=False).items()}
    names = getattr(imputer, "feature_names_in_", None)
    codec = getattr(imputer, "codec_", None)
    return {
        "format": IMPUTER_FORMAT,
        "class": name,
        "params": params,
        "model": _io.cpu_state_dict(imputer.model_),
        "mean": torch.from_numpy(np.array(imputer.mean_)),
        "scale": torch.from_numpy(np.array(imputer.scale_)),
        "loss_curve": torch.from_numpy(np.array(imputer.loss_curve_)),
        "n_iter": int(imputer.n_iter_),
        "seed": int(imputer._seed_),
        "history": {
            key: [str(v) for v in value] for key, value in getattr(imputer, "history_", {}).items()
        },
        "n_features_in": int(imputer.n_features_in_),
        "feature_names_in": None if names is None else [str(n) for n in names],
        "columns": None if codec is None else [c.to_plain() for c in codec.columns],
        "missing_process_selection": getattr(imputer, "missing_process_selection_", None),
    }


class _SavedImputer:
    """What :func:`save_imputer` pickles: plain data that unpickles as
    ``_imputer_from_state(state)``."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def __reduce__(self) -> tuple[Callable[[Any], _BaseIWImputer], tuple[dict]]:
        return _imputer_from_state, (self.state,)


def _imputer_from_state(state: Any) -> _BaseIWImputer:
    """The fitted imputer that :func:`_imputer_state` described; FormatError (a
    ValueError) when ``state`` is not such a description (wrong format, parameters,
    shapes)."""
    try:
        return _build_imputer(state)
    except _io.FormatError:
        raise
    except (ValueError, TypeError, RuntimeError) as err:  # from the constructors
        raise _io.FormatError(" ".join(str(err).split())[:300]) from None


# What load_imputer lets torch.load(weights_only=True) call: the constructor, under its
# name and under the names files of earlier layouts give it.
_ALLOWED_CONSTRUCTORS = [_imputer_from_state, (_imputer_from_state, _EARLIER_CONSTRUCTOR)]


def _build_imputer(state: Any) -> _BaseIWImputer:
    """The body of :func:`_imputer_from_state`: each part of ``state`` checked, then
    set on a new imputer of its class."""
    imputer = _new_imputer(state)
    n_features, names = _checked_features(state)
    arrays = _checked_arrays(state, n_features)
    imputer.codec_ = _checked_codec(state, n_features)
    if isinstance(imputer, NotMIWAEImputer):  # with "auto": the process of the model
        selection = state.get("missing_process_selection")
        imputer.missing_process_selection_ = selection and checked_selection(selection)
    imputer.model_ = _loaded_model(imputer, state.get("model"), n_features, names)
    history = _checked_history(state)
    imputer.mean_, imputer.scale_ = arrays["mean"], arrays["scale"]
    imputer.loss_curve_ = arrays["loss_curve"]
    imputer.n_iter_, imputer._seed_ = state["n_iter"], state["seed"]
    imputer.history_ = {"health": [], "warnings": [], **history}
    imputer.n_features_in_ = n_features
    if names is not None:
        imputer.feature_names_in_ = np.asarray(names, dtype=object)
    imputer._after_fit()
    return imputer


def _new_imputer(state: Any) -> _BaseIWImputer:
    """An unfitted imputer of the state's class and (checked) parameters."""
    if not isinstance(state, dict) or state.get("format") != IMPUTER_FORMAT:
        raise _io.FormatError(f"the format is not {IMPUTER_FORMAT!r}")
    cls = _IMPUTERS.get(state.get("class"))
    if cls is None:
        raise _io.FormatError(f"unknown class {state.get('class')!r}")
    params = state.get("params")
    allowed = set(cls().get_params(deep=False))
    if not isinstance(params, dict) or not set(params) <= allowed:
        raise _io.FormatError("the parameters are not those of " + cls.__name__)
    for key, value in params.items():
        if not (
            value is None
            or isinstance(value, (bool, int, float, str))
            or (
                key == "signs"
                and isinstance(value, list)
                and all(isinstance(v, float) for v in value)
            )
            or (
                key == "column_types"
                and isinstance(value, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
            )
        ):
            raise _io.FormatError(f"parameter {key!r} is a {type(value).__name__}")
    imputer = cls(**params)
    imputer._validate_params()
    return imputer


def _checked_features(state: dict) -> tuple[int, Optional[list]]:
    """(n_features_in, feature_names_in or None) of ``state``, checked."""
    n_features, names = state.get("n_features_in"), state.get("feature_names_in")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise _io.FormatError("'n_features_in' is not an int >= 1")
    if names is not None and (
        not isinstance(names, list)
        or len(names) != n_features
        or not all(isinstance(n, str) for n in names)
    ):
        raise _io.FormatError(f"'feature_names_in' is not a list of {n_features} names")
    return n_features, names


def _checked_arrays(state: dict, n_features: int) -> dict[str, np.ndarray]:
    """mean [D], scale [D] and loss_curve [T] of ``state`` as NumPy arrays, checked
    with n_iter and seed."""
    arrays = {}
    for key, length in (("mean", n_features), ("scale", n_features), ("loss_curve", None)):
        value = state.get(key)
        if (
            not torch.is_tensor(value)
            or value.dim() != 1
            or (length is not None and value.numel() != length)
        ):
            raise _io.FormatError(f"{key!r} is not a tensor of {length or 'one or more'} values")
        arrays[key] = value.detach().cpu().numpy().copy()
    for key in ("n_iter", "seed"):
        if isinstance(state.get(key), bool) or not isinstance(state.get(key), int):
            raise _io.FormatError(f"{key!r} is not an int")
    return arrays


def _checked_codec(state: dict, n_features: int) -> Optional[TableCodec]:
    """The column types of a mixed-table imputer (None for a numeric one), checked."""
    columns = state.get("columns")
    if columns is None:
        return None
    if not isinstance(columns, list) or len(columns) != n_features:
        raise _io.FormatError(f"'columns' is not a list of {n_features} column descriptions")
    try:
        return TableCodec([Column.from_plain(c) for c in columns])
    except (ValueError, TypeError) as err:
        raise _io.FormatError(str(err)) from None


def _checked_history(state: dict) -> dict[str, list[str]]:
    """The fit's history of ``state`` (absent in older files: empty), checked."""
    history = state.get("history", {"health": [], "warnings": []})
    if not isinstance(history, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(s, str) for s in v)
        for k, v in history.items()
    ):
        raise _io.FormatError("'history' is not a dict of lists of strings")
    return history


def _loaded_model(
    imputer: _BaseIWImputer, weights: Any, n_features: int, names: Optional[list]
) -> torch.nn.Module:
    """The imputer's model with the state dict ``weights`` loaded, in eval mode on the
    weights' device (the map_location they were loaded to)."""
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()
    ):
        raise _io.FormatError("'model' is not a state dict")
    with torch.random.fork_rng(devices=[]):  # the new model's initial weights: unused
        model = imputer._new_model(n_features, names)
    weights = upgrade_state_dict(model, weights)  # a mixed model saved in an older form
    # The standardisation buffers may be set or not (None in a fresh model).
    expected = {
        **model.state_dict(),
        **{k: weights[k] for k in ("data_mean", "data_std") if k in weights},
    }
    if {k: v.shape for k, v in weights.items()} != {k: v.shape for k, v in expected.items()}:
        raise _io.FormatError("the model's state dict does not fit its parameters")
    model.load_state_dict(weights)
    return _io.on_loaded_device(model, weights).eval()


def save_imputer(imputer: _BaseIWImputer, path: Union[str, Path]) -> None:
    """Saves a fitted MIWAEImputer or NotMIWAEImputer to ``path`` (atomically) as plain
    data that :func:`load_imputer` reads without unpickling objects (what
    ``notmiwae-fast fit`` writes). Its parameters must be plain values (an int or None
    ``random_state``, a missing-process name): ValueError otherwise."""
    _io.save_atomic(_SavedImputer(_imputer_state(imputer)), path)


def load_imputer(
    path: Union[str, Path], map_location: Union[str, torch.device, None] = "cpu"
) -> _BaseIWImputer:
    """The imputer that :func:`save_imputer` (or ``notmiwae-fast fit``) wrote to
    ``path``, its model on ``map_location``. The file is read with
    ``torch.load(weights_only=True)``: it can hold nothing but tensors and plain data, so
    loading it never runs code. ValueError naming the file when it is unreadable, holds
    pickled objects (e.g. an imputer pickled by an older version) or no imputer."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        imputer = _io.load_plain(path, "model file", map_location, allowed=_ALLOWED_CONSTRUCTORS)
    except _io.FormatError as err:
        raise ValueError(
            f"model file {path} does not hold a fitted imputer saved by this package ({err})"
        ) from None
    if not isinstance(imputer, _BaseIWImputer):
        raise ValueError(f"model file {path} does not hold a fitted imputer")
    return imputer
