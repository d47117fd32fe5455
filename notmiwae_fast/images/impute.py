"""Imputing the lost values of a whole image with an image model, in bounded memory."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from .._common import validate as _validate
from .._common.progress import progress_bar
from ._arrays import _check_dtype, _colour, _colour_channels, _float_range_error, _from_float, _observed, _to_float, widen_range
from ._context import band_integral, features_at, finish_statistics, image_statistics
from ._tiling import IMAGE_BACKENDS, _check_out, _impute_reference, _impute_streaming, _output
from .clipped import ClippedPixelModel

__all__ = ["impute_image"]

# Rows of an image converted to float at once by the clipped-pixel path (about 24 MB of
# float32 values per band at most, at least 16 rows), and pixels given to the model at once.
_BAND_BYTES = 24 * 2**20
_PIXEL_CHUNK = 32768


def impute_image(model: nn.Module, image: np.ndarray, mask: Optional[np.ndarray] = None,
                 clip_level: Optional[float] = 0.75, tile: Optional[int] = None,
                 overlap: Optional[int] = None, n_samples: Optional[int] = None,
                 batch_size: int = 64, chunk_size: Optional[int] = None,
                 progress: bool = True, backend: Optional[str] = None,
                 out: Optional[np.ndarray] = None) -> np.ndarray:
    """Imputes the lost values of an image of any size.

    With a :class:`ClippedPixelModel` (the bundled models), each pixel with a lost value
    is imputed from its own observed values and its neighbourhood; the image is read in
    bands of rows, so the extra memory is bounded whatever its size. Every imputed value
    lies in [clip_level, 1]: a lost value is known to be at or above the clip level.
    With a tile model (:func:`image_model`), overlapping tiles are imputed and blended.
    Only lost values are written; observed values are left exactly as they are.

    Args:
        model: an image model, trained (:func:`load_image_model`, :func:`train_clipped`,
            :func:`image_model`).
        image: [H, W] or [H, W, C] uint8, uint16 or float in [0, 1]; an alpha channel
            (C = 2 or 4) is kept as it is. The colour channels must match the model's.
        mask: [H, W] or [H, W, C] (C without alpha), bool or only 0 and 1: 1 (True) =
            observed, 0 = lost; default: derived from ``clip_level``. NaN or inf image
            values count as lost either way.
        clip_level: a number in (0, 1]: values ≥ clip_level are lost (compared on the
            image's own values: floats in their precision, integers as value / 255 or
            / 65535). The clipped-pixel model needs it even with a mask (the lost values
            are taken to be at or above it).
        tile, overlap, batch_size, chunk_size: tile models only (tile side = the model's
            patch; overlap default a quarter of it; tiles per batch; ``model.impute``'s
            chunk).
        n_samples: importance samples K (default 10 for the clipped-pixel model, 20 for
            tile models).
        backend: tile models: ``"fused"`` (streamed bands) or ``"reference"`` (the whole
            image at once); default the model's. The clipped-pixel model has one path.
        out: where to write the result: a writable array of the image's shape and dtype
            (an ``np.memmap``, or the image itself to impute in place); default: a new
            array.
    Returns:
        the image with the lost values imputed, in the input's dtype and layout
        (``out`` when given).
    """
    if isinstance(model, ClippedPixelModel):
        return _impute_pixelwise(model, image, mask, clip_level,
                                 10 if n_samples is None else n_samples, progress, out)
    n_samples = 20 if n_samples is None else n_samples
    if not isinstance(getattr(model, "image_shape", None), tuple):
        raise ValueError("argument 'model' must be an image model (image_model, "
                         f"load_image_model); got {type(model).__name__}")
    c, patch, _ = model.image_shape
    tile = patch if tile is None else tile
    if tile != patch:
        raise ValueError(f"argument 'tile' must be the model's patch size {patch}; got {tile}")
    overlap = tile // 4 if overlap is None else overlap
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) \
            or not 0 <= overlap <= tile // 2:
        raise ValueError(f"argument 'overlap' must be an int in [0, {tile // 2}]; "
                         f"got {overlap!r}")
    n_samples = _validate.n_samples(n_samples)
    batch_size = _validate.positive_int(batch_size, "batch_size")
    backend = _validate.choice(getattr(model, "backend", "fused") if backend is None
                               else backend, "backend", IMAGE_BACKENDS)
    arr, C = _check_image(c, image, mask, clip_level)
    if mask is None and clip_level is None:
        raise ValueError("give a 'mask' or a 'clip_level'")
    mask = None if mask is None else np.asarray(mask)
    _check_out(arr, out)
    args = (model, arr, C, mask, clip_level, tile, overlap, n_samples, batch_size,
            chunk_size, progress, out)
    return (_impute_streaming if backend == "fused" else _impute_reference)(*args)


def _check_image(model_channels: int, image, mask, clip_level) -> tuple[np.ndarray, int]:
    """Validates image, mask and clip level; returns (the image as an array, C)."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"argument 'image' must be [H, W] or [H, W, C]; got shape {arr.shape}")
    _check_dtype(arr)
    H, W = arr.shape[:2]
    if H == 0 or W == 0:
        raise ValueError(f"argument 'image' is empty: shape {arr.shape}")
    C = _colour_channels(arr)
    if C != model_channels:
        raise ValueError(f"argument 'image' has {C} colour channel(s); the model was trained "
                         f"on {model_channels} ({'grey' if model_channels == 1 else 'RGB'} "
                         "images)")
    if clip_level is not None and (
            isinstance(clip_level, bool) or not isinstance(clip_level, (int, float, np.integer,
                                                                        np.floating))
            or not 0 < clip_level <= 1):
        raise ValueError(f"argument 'clip_level' must be a number in (0, 1]; got "
                         f"{clip_level!r}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape not in ((H, W), (H, W, C)):
            raise ValueError(f"argument 'mask' must have shape [{H}, {W}] or [{H}, {W}, {C}]; "
                             f"got {list(mask.shape)}")
        if mask.dtype != bool and not (np.issubdtype(mask.dtype, np.number)
                                       and ((mask == 0) | (mask == 1)).all()):
            raise ValueError("argument 'mask' must be bool or hold only 0 (lost) and 1 "
                             "(observed)")
    return arr, C


def _impute_pixelwise(model: ClippedPixelModel, image, mask, clip_level, n_samples: int,
                      progress: bool, out: Optional[np.ndarray]) -> np.ndarray:
    """impute_image with a clipped-pixel model: two passes over bands of rows."""
    if clip_level is None:
        raise ValueError("argument 'clip_level' is needed by the clipped-pixel model (the "
                         "lost values are at or above it)")
    arr, C = _check_image(model.channels, image, mask, clip_level)
    n_samples = _validate.n_samples(n_samples)
    _check_out(arr, out)
    clip_level = float(clip_level)
    H, W = arr.shape[:2]
    mask = None if mask is None else np.asarray(mask)
    R = max(model.radii)
    rows_per_band = max(16, _BAND_BYTES // (4 * W * C))
    floats = bool(np.issubdtype(arr.dtype, np.floating))

    def read(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        raw = _colour(arr[r0:r1], C)
        lost = ~_observed(raw, None if mask is None else mask[r0:r1], clip_level)
        values = _to_float(raw)
        values[lost] = clip_level  # NaN / inf and lost values: what the photograph shows
        return values, lost

    # Pass 1, before anything is written: the float range, the image's statistics and
    # which rows hold a lost value.
    sums = np.zeros(3 * C)
    lossy_rows = np.zeros(H, dtype=bool)
    lo, hi = math.inf, -math.inf
    for r0 in range(0, H, rows_per_band):
        r1 = min(H, r0 + rows_per_band)
        values, lost = read(r0, r1)
        sums += image_statistics(values, lost)
        lossy_rows[r0:r1] = lost.any(axis=(1, 2))
        if floats:
            lo, hi = widen_range(_colour(arr[r0:r1], C), lo, hi)
    if lo < 0 or hi > 1:
        raise _float_range_error(lo, hi)
    stats = finish_statistics(sums, H * W, clip_level)
    result = _output(arr, out)
    colour = _colour(result, C)
    # The smallest stored value at or above the clip level (integers: a whole level).
    if floats:
        floor = clip_level
    else:
        top = float(np.iinfo(arr.dtype).max)
        floor = math.ceil(clip_level * top - 1e-9) / top
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    # One set of K draws for the whole image: chunks imputed with different draws would
    # differ by the estimator's small bias, visible as seams in smooth areas.
    eps = torch.randn(n_samples, model.latent_dim, dtype=dtype, device=device)
    bar = progress_bar(int(lossy_rows.sum()), progress, "imputing rows")
    # Pass 2: bands with a lost value, read with R rows of context above and below.
    for r0 in range(0, H, rows_per_band):
        r1 = min(H, r0 + rows_per_band)
        if not lossy_rows[r0:r1].any():
            continue
        c0, c1 = max(0, r0 - R), min(H, r1 + R)
        values, lost = read(c0, c1)
        rows, cols = np.nonzero(lost[r0 - c0:r1 - c0].any(axis=2))
        rows = rows + (r0 - c0)
        integral = band_integral(values, lost, clip_level, R)
        for start in range(0, len(rows), _PIXEL_CHUNK):
            rr, cc = rows[start:start + _PIXEL_CHUNK], cols[start:start + _PIXEL_CHUNK]
            h = features_at(integral, rr, cc, stats, clip_level, model.radii)
            x = torch.as_tensor(values[rr, cc], dtype=dtype, device=device)
            s = torch.as_tensor(lost[rr, cc], device=device)
            imputed = model.impute_pixels(x, s, h.to(dtype=dtype, device=device),
                                          clip_level, n_samples, eps).cpu().numpy()
            imputed = _from_float(np.clip(imputed.astype(np.float64), floor, 1.0),
                                  colour.dtype)
            if floats:  # the clip level as the image's own dtype holds it
                imputed = np.maximum(imputed, colour.dtype.type(clip_level))
            target = colour[rr + c0, cc]
            np.copyto(target, imputed, where=lost[rr, cc])
            colour[rr + c0, cc] = target
        bar.update(int(lossy_rows[r0:r1].sum()))
    bar.close()
    return result
