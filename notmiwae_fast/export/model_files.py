"""Model files: a trained MIWAE / NotMIWAE saved as plain data (its configuration
and tensors) and rebuilt without running code from the file."""

from __future__ import annotations

import os

import torch

from .._common import io as _io
from ..nn.missing import (
    MISSING_PROCESSES,
)
from ..nn.models import MIWAE, ImportanceWeightedModel, NotMIWAE
from ..nn.networks import _DECODERS, DEFAULT_MIN_SCALE, Encoder

__all__ = ["MODEL_FORMAT", "save_model", "model_from_state", "load_model"]

MODEL_FORMAT = "notmiwae_fast.model/1"
_MODELS = {"MIWAE": MIWAE, "NotMIWAE": NotMIWAE}


def _model_config(model: ImportanceWeightedModel) -> dict:
    """The constructor arguments that rebuild ``model`` (before its state dict is
    loaded); ValueError for a model this format cannot describe."""
    name = type(model).__name__
    if _MODELS.get(name) is not type(model):
        raise ValueError(f"save_model saves MIWAE and NotMIWAE models; got {name}")
    if type(model.encoder) is not Encoder or type(model.decoder) is not _DECODERS[model.out_dist]:
        raise ValueError(
            "save_model saves models with the standard networks; this one has "
            f"a {type(model.encoder).__name__} / {type(model.decoder).__name__} "
            "(image models: notmiwae_fast.images.save_image_model)"
        )
    config = dict(
        input_dim=model.input_dim,
        latent_dim=model.latent_dim,
        hidden_dim=model.hidden_dim,
        n_samples=model.n_samples,
        out_dist=model.out_dist,
        ppca=model.ppca,
        min_scale=float(getattr(model.decoder, "min_scale", DEFAULT_MIN_SCALE)),
        feature_names=None
        if model.feature_names is None
        else [str(n) for n in model.feature_names],
        backend=model.backend,
    )
    if name == "NotMIWAE":
        process = model.missing_model
        kind = model.missing_process
        if MISSING_PROCESSES.get(kind) is not type(process):
            raise ValueError(
                "save_model saves NotMIWAE models with a built-in missing "
                f"process; this one has a {type(process).__name__}"
            )
        config["missing_process"] = kind
        if kind == "nonlinear":
            config["missing_hidden_dim"] = int(process.mlp[0].out_features)
    return config


def save_model(model: ImportanceWeightedModel, path) -> None:
    """Saves a MIWAE or NotMIWAE (standard networks, a built-in missing process) to
    ``path`` atomically as its configuration and state dict, a file that
    :func:`load_model` and ``notmiwae-fast export`` read without unpickling objects."""
    state = {
        "format": MODEL_FORMAT,
        "class": type(model).__name__,
        "config": _model_config(model),
        "state_dict": _io.cpu_state_dict(model),
    }
    _io.save_atomic(state, path)


def model_from_state(state) -> ImportanceWeightedModel:
    """The model that :func:`save_model` described in ``state`` (what torch.load gives
    for its file), in eval mode; FormatError (a ValueError) saying what does not fit."""
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise _io.FormatError(f"the format is not {MODEL_FORMAT!r}")
    cls = _MODELS.get(state.get("class"))
    config, weights = state.get("config"), state.get("state_dict")
    if cls is None:
        raise _io.FormatError(f"unknown model class {state.get('class')!r}")
    plain = (type(None), bool, int, float, str)
    if not isinstance(config, dict) or not all(
        isinstance(k, str)
        and (
            isinstance(v, plain)
            or (
                k == "feature_names"
                and (isinstance(v, list) and all(isinstance(n, str) for n in v))
            )
        )
        for k, v in config.items()
    ):
        raise _io.FormatError("'config' is not a dict of plain values")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()
    ):
        raise _io.FormatError("'state_dict' is not a state dict")
    try:
        with torch.random.fork_rng(devices=[]):  # initial weights, replaced below
            model = cls(**config)
    except (TypeError, ValueError) as err:
        raise _io.FormatError(
            f"'config' does not build a {cls.__name__} ({' '.join(str(err).split())[:200]})"
        ) from None
    expected = model.state_dict()
    expected.update({k: weights[k] for k in ("data_mean", "data_std") if k in weights})
    if set(weights) != set(expected) or any(
        weights[k].shape != expected[k].shape for k in expected
    ):
        raise _io.FormatError("the state dict does not fit the configuration")
    model.load_state_dict(weights)
    return _io.on_loaded_device(model, weights).eval()


def load_model(path, map_location="cpu") -> ImportanceWeightedModel:
    """The model :func:`save_model` wrote to ``path``, on ``map_location``, in eval
    mode; ValueError naming the file when it cannot be read, holds pickled objects or
    no such model (FileNotFoundError when it does not exist)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    state = _io.load_plain(path, "model file", map_location)
    try:
        return model_from_state(state)
    except _io.FormatError as err:
        raise ValueError(
            f"model file {path} does not hold a model saved by save_model ({err})"
        ) from None
