"""Image model files: a format tag, the model's configuration and its weights (no
pickled code: read with ``torch.load(weights_only=True)``), and the bundled models."""

from __future__ import annotations

import os
from typing import Optional, Union

import torch
from torch import nn

from .._common.io import cpu_state_dict, load_plain, on_loaded_device
from .clipped import ClippedPixelModel
from .tiles import image_model

__all__ = ["save_image_model", "load_image_model", "bundled_model_path"]

TILE_FORMAT = "notmiwae_fast.image_model/1"
CLIPPED_FORMAT = "notmiwae_fast.clipped_pixel_model/1"
_DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")


def bundled_model_path(channels: int = 3) -> str:
    """The bundled clipped-pixel model for grey (1) or RGB (3) images."""
    if channels not in (1, 3):
        raise ValueError(
            f"there is a bundled image model for 1 (grey) or 3 (RGB) colour "
            f"channels; got {channels}"
        )
    return os.path.join(
        _DATA, "clipped_pixels_grey.pt" if channels == 1 else "clipped_pixels_rgb.pt"
    )


def save_image_model(model: nn.Module, path: Union[str, os.PathLike]) -> None:
    """Saves an image model (a :class:`ClippedPixelModel` or a tile model of
    :func:`image_model`) as its configuration and weights, atomically."""
    from .._common.io import save_atomic

    if isinstance(model, ClippedPixelModel):
        state = {"format": CLIPPED_FORMAT, "config": model.config}
    elif isinstance(getattr(model, "image_config", None), dict):
        state = {"format": TILE_FORMAT, "config": model.image_config}
    else:
        raise ValueError(
            "argument 'model' must be an image model (ClippedPixelModel or "
            f"image_model); got {type(model).__name__}"
        )
    state["state_dict"] = cpu_state_dict(model)
    save_atomic(state, path)


def load_image_model(
    path: Optional[Union[str, os.PathLike]] = None,
    backend: str = "fused",
    map_location: Union[str, torch.device] = "cpu",
    channels: int = 3,
) -> nn.Module:
    """Loads a model written by :func:`save_image_model`.

    Without ``path``: the bundled clipped-pixel not-MIWAE model for ``channels`` = 3
    (RGB) or 1 (grey), trained on clipped photographs only (``benchmarks/image_clipping.py``
    rebuilds them). Files of tile models (:func:`image_model`) load too (``backend``
    applies to them). Loading never runs code from the file.
    """
    path = os.fspath(path) if path is not None else bundled_model_path(channels)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image model file {path} does not exist")
    # a configuration dict and a state_dict: plain data, read as every model file is
    state = load_plain(path, "image model file", map_location)
    fmt = state.get("format") if isinstance(state, dict) else None
    model: nn.Module
    try:
        if fmt == CLIPPED_FORMAT:
            model = ClippedPixelModel(**state["config"])
        elif fmt == TILE_FORMAT:
            model = image_model(backend=backend, **state["config"])
        else:
            raise ValueError("not an image model")
        model.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"image model file {path} does not hold an image model written by save_image_model"
        ) from None
    return on_loaded_device(model, state["state_dict"]).eval()
