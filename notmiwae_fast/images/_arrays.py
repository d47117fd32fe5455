"""Image arrays: dtypes, colour channels, float conversion and the observed mask."""

from __future__ import annotations

from typing import Optional

import numpy as np


def _check_dtype(arr: np.ndarray) -> None:
    if not (arr.dtype in (np.uint8, np.uint16) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"argument 'image' must be uint8, uint16 or float; got {arr.dtype}")


def _to_float(values: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float values -> a float32 copy in [0, 1] (same shape)."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255.0
    if values.dtype == np.uint16:
        return values.astype(np.float32) / 65535.0
    return values.astype(np.float32)


def _from_float(values: np.ndarray, dtype) -> np.ndarray:
    """The inverse of :func:`_to_float`: float values in [0, 1] -> ``dtype`` (integers
    rounded to the nearest level)."""
    if dtype == np.uint8:
        return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.clip(np.rint(values * 65535.0), 0, 65535).astype(np.uint16)
    return values.astype(dtype)


def _float_range_error(lo: float, hi: float) -> ValueError:
    return ValueError(
        f"argument 'image': float images must hold values in [0, 1]; got [{lo:.3g}, {hi:.3g}]"
    )


def as_float_image(image: np.ndarray) -> tuple[np.ndarray, dict]:
    """An image as float32 [H, W, C] in [0, 1], and what is needed to give it back.

    Accepts [H, W] (grey) or [H, W, C] arrays of uint8, uint16 or floats in [0, 1]. An
    alpha channel (C = 2 or 4) is set aside (``info["alpha"]``, [H, W] in the input's
    dtype)."""
    arr = np.asarray(image)
    info = {"dtype": arr.dtype, "ndim": arr.ndim, "alpha": None}
    if arr.ndim not in (2, 3):
        raise ValueError(f"argument 'image' must be [H, W] or [H, W, C]; got shape {arr.shape}")
    _check_dtype(arr)
    channels = _colour_channels(arr)
    if channels != (1 if arr.ndim == 2 else arr.shape[2]):
        info["alpha"] = arr[..., -1].copy()
    colour = _colour(arr, channels)
    if np.issubdtype(arr.dtype, np.floating):  # the colour values (not alpha) in [0, 1],
        finite = colour[np.isfinite(colour)]  # as given (before rounding to float32)
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise _float_range_error(finite.min(), finite.max())
    return _to_float(colour), info


def _below(values: np.ndarray, clip_level: float) -> np.ndarray:
    """Which values lie below the clip level, compared on the values as they are: floats
    in their own precision, uint8 / uint16 as value / 255 (65535) in float64."""
    values = np.asarray(values)
    if values.dtype in (np.uint8, np.uint16):
        # value / max < clip_level is monotonic in value: compare with the first integer
        # it fails for (the same float64 comparison, made once, not per value)
        top = np.iinfo(values.dtype).max
        levels = np.arange(top + 1) / float(top) < clip_level
        return (
            values < int(np.argmin(levels))
            if not levels.all()
            else np.ones(values.shape, dtype=bool)
        )
    return values < clip_level


def clip_mask(x: np.ndarray, clip_level: float) -> np.ndarray:
    """float32, x's shape: 1 where a value is observed (below the clip level), 0 where it
    is lost; floats in [0, 1] are compared in their own precision, uint8 / uint16 values
    scaled to [0, 1]."""
    return _below(x, clip_level).astype(np.float32)


def _colour_channels(a: np.ndarray) -> int:
    """The colour channels of an [H, W] or [H, W, C] image: C without its alpha channel
    (the last one when C = 2 or 4)."""
    channels = 1 if a.ndim == 2 else a.shape[2]
    return channels - 1 if channels in (2, 4) else channels


def _colour(a: np.ndarray, channels: int) -> np.ndarray:
    """A view of the colour values of an [H, W] or [H, W, C(+alpha)] array, [H, W, C]."""
    return a[:, :, None] if a.ndim == 2 else a[:, :, :channels]


def _observed(
    values: np.ndarray, mask: Optional[np.ndarray], clip_level: Optional[float]
) -> np.ndarray:
    """Observed entries of the colour values [r, W, C] as the input holds them (its own
    dtype): the mask's ([r, W] or [r, W, C]) or those below the clip level, and finite."""
    if mask is None:
        observed = _below(values, clip_level)
    else:
        observed = mask.astype(bool)
        observed = observed[:, :, None] if observed.ndim == 2 else observed
    return observed & np.isfinite(values)


def count_lost(colour: np.ndarray, clip_level: float, rows: int = 256) -> int:
    """How many colour values ([H, W, C]) are lost: at or above the clip level, or not
    finite; counted in bands of rows (no image-sized temporary)."""
    total = 0
    for r0 in range(0, colour.shape[0], rows):
        band = colour[r0 : r0 + rows]
        total += int(band.size - np.count_nonzero(_below(band, clip_level) & np.isfinite(band)))
    return total


def widen_range(values: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """(lo, hi) widened to the finite values of ``values`` (any shape; as given, before
    any rounding to float32): the float images' range check, band by band."""
    finite = values[np.isfinite(values)]
    if finite.size:
        lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return lo, hi


def to_grey(colour: np.ndarray) -> np.ndarray:
    """Float RGB [H, W, 3] -> its luminance (ITU-R 601 weights) [H, W, 1], float32; how
    the grey models see colour photographs."""
    return (colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
