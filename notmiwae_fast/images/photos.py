"""Colour photographs that installed packages ship (no download), and which of them the
bundled models were trained on and which are held out for evaluation."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from ._arrays import as_float_image

__all__ = ["bundled_photographs", "TRAINING_PHOTOGRAPHS", "HELD_OUT_PHOTOGRAPHS"]

# The bundled models learn from these (the two stereo motorcycle views are one scene).
TRAINING_PHOTOGRAPHS = (
    "chelsea",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)
# Never used for training or model selection: the evaluation's photographs.
HELD_OUT_PHOTOGRAPHS = ("astronaut", "coffee", "rocket", "china", "flower", "grace_hopper")


def _load(name: str) -> np.ndarray:
    """One photograph as the package ships it (uint8 [H, W, 3])."""
    if name == "grace_hopper":  # matplotlib's sample data
        try:
            import matplotlib
            from PIL import Image
        except ImportError as exc:
            raise ImportError("the photograph 'grace_hopper' needs matplotlib and Pillow") from exc
        path = os.path.join(
            os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg"
        )
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    if name in ("china", "flower"):  # scikit-learn's sample images
        try:
            from sklearn.datasets import load_sample_image
        except ImportError as exc:
            raise ImportError(f"the photograph {name!r} needs scikit-learn") from exc
        return load_sample_image(name + ".jpg")
    try:
        import skimage.data
    except ImportError as exc:
        raise ImportError(
            "the bundled photographs need scikit-image (pip install scikit-image)"
        ) from exc
    if name in ("motorcycle_left", "motorcycle_right"):
        return skimage.data.stereo_motorcycle()[0 if name.endswith("left") else 1]
    if not hasattr(skimage.data, name):
        raise ValueError(f"unknown photograph {name!r}")
    return getattr(skimage.data, name)()


def bundled_photographs(names: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """Photographs as float32 [H, W, 3] in [0, 1], by name: scikit-image's (``astronaut``,
    ``coffee``, ``chelsea``, ``rocket``, ``motorcycle_left`` / ``_right``, ...),
    scikit-learn's ``china`` and ``flower``, matplotlib's ``grace_hopper``. Default: the
    training photographs of the bundled models."""
    names = TRAINING_PHOTOGRAPHS if names is None else names
    return {n: as_float_image(_load(n))[0] for n in names}
