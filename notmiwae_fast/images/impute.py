"""Imputing the lost values of a whole image with an image model, in bounded memory."""

from __future__ import annotations

import math
from typing import Iterator, Optional, cast

import numpy as np
import torch
from torch import Tensor, nn

from .._common import validate as _validate
from .._common.progress import progress_bar
from ..nn.models import ImportanceWeightedModel
from ._arrays import (
    _check_dtype,
    _colour,
    _colour_channels,
    _float_range_error,
    _from_float,
    _observed,
    _to_float,
    widen_range,
)
from ._context import band_integral, features_at, finish_statistics, image_statistics
from ._tiling import IMAGE_BACKENDS, _check_out, _impute_reference, _impute_streaming, _output
from .clipped import ClippedPixelModel

__all__ = ["impute_image"]

# Rows of an image converted to float at once by the clipped-pixel path (about 24 MB of
# float32 values per band at most, at least 16 rows), and pixels given to the model at once.
_BAND_BYTES = 24 * 2**20
_PIXEL_CHUNK = 32768


def impute_image(
    model: nn.Module,
    image: np.ndarray,
    mask: Optional[np.ndarray] = None,
    clip_level: Optional[float] = 0.75,
    tile: Optional[int] = None,
    overlap: Optional[int] = None,
    n_samples: Optional[int] = None,
    batch_size: int = 64,
    chunk_size: Optional[int] = None,
    progress: bool = True,
    backend: Optional[str] = None,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
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
        return _impute_pixelwise(
            model, image, mask, clip_level, 10 if n_samples is None else n_samples, progress, out
        )
    return _impute_tiled(
        model,
        image,
        mask,
        clip_level,
        tile,
        overlap,
        20 if n_samples is None else n_samples,
        batch_size,
        chunk_size,
        progress,
        backend,
        out,
    )


def _impute_tiled(
    model: nn.Module,
    image,
    mask,
    clip_level: Optional[float],
    tile: Optional[int],
    overlap: Optional[int],
    n_samples: int,
    batch_size: int,
    chunk_size: Optional[int],
    progress: bool,
    backend: Optional[str],
    out: Optional[np.ndarray],
) -> np.ndarray:
    """impute_image with a tile model: its arguments checked, then the fused (streamed)
    or reference (whole image) path."""
    channels, side, margin = _tile_geometry(model, tile, overlap)
    n_samples = _validate.n_samples(n_samples)
    batch_size = _validate.positive_int(batch_size, "batch_size")
    backend = _validate.choice(
        getattr(model, "backend", "fused") if backend is None else backend,
        "backend",
        IMAGE_BACKENDS,
    )
    arr, C = _check_image(channels, image, mask, clip_level)
    if mask is None and clip_level is None:
        raise ValueError("give a 'mask' or a 'clip_level'")
    mask = None if mask is None else np.asarray(mask)
    _check_out(arr, out)
    tiled = cast(ImportanceWeightedModel, model)  # a tile model: it has an image_shape
    args = (
        tiled,
        arr,
        C,
        mask,
        clip_level,
        side,
        margin,
        n_samples,
        batch_size,
        chunk_size,
        progress,
        out,
    )
    return (_impute_streaming if backend == "fused" else _impute_reference)(*args)


def _tile_geometry(
    model: nn.Module, tile: Optional[int], overlap: Optional[int]
) -> tuple[int, int, int]:
    """A tile model's colour channels C and the checked (tile, overlap): the tile is the
    model's patch, the overlap (default a quarter of it) at most half of it."""
    shape = getattr(model, "image_shape", None)
    if not isinstance(shape, tuple):
        raise ValueError(
            "argument 'model' must be an image model (image_model, "
            f"load_image_model); got {type(model).__name__}"
        )
    channels, patch = shape[0], shape[1]
    side = patch if tile is None else tile
    if side != patch:
        raise ValueError(f"argument 'tile' must be the model's patch size {patch}; got {side}")
    margin = side // 4 if overlap is None else overlap
    if (
        isinstance(margin, bool)
        or not isinstance(margin, (int, np.integer))
        or not 0 <= margin <= side // 2
    ):
        raise ValueError(f"argument 'overlap' must be an int in [0, {side // 2}]; got {margin!r}")
    return channels, side, int(margin)


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
        raise ValueError(
            f"argument 'image' has {C} colour channel(s); the model was trained "
            f"on {model_channels} ({'grey' if model_channels == 1 else 'RGB'} "
            "images)"
        )
    if clip_level is not None and (
        isinstance(clip_level, bool)
        or not isinstance(clip_level, (int, float, np.integer, np.floating))
        or not 0 < clip_level <= 1
    ):
        raise ValueError(f"argument 'clip_level' must be a number in (0, 1]; got {clip_level!r}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape not in ((H, W), (H, W, C)):
            raise ValueError(
                f"argument 'mask' must have shape [{H}, {W}] or [{H}, {W}, {C}]; "
                f"got {list(mask.shape)}"
            )
        if mask.dtype != bool and not (
            np.issubdtype(mask.dtype, np.number) and ((mask == 0) | (mask == 1)).all()
        ):
            raise ValueError("argument 'mask' must be bool or hold only 0 (lost) and 1 (observed)")
    return arr, C


def _impute_pixelwise(
    model: ClippedPixelModel,
    image,
    mask,
    clip_level: Optional[float],
    n_samples: int,
    progress: bool,
    out: Optional[np.ndarray],
) -> np.ndarray:
    """impute_image with a clipped-pixel model: two passes over bands of rows, the first
    (before anything is written) for the image's statistics, the second imputing the
    bands that hold a lost value."""
    if clip_level is None:
        raise ValueError(
            "argument 'clip_level' is needed by the clipped-pixel model (the "
            "lost values are at or above it)"
        )
    arr, C = _check_image(model.channels, image, mask, clip_level)
    n_samples = _validate.n_samples(n_samples)
    _check_out(arr, out)
    bands = _RowBands(arr, C, None if mask is None else np.asarray(mask), float(clip_level))
    stats, lossy_rows = bands.survey()
    result = _output(arr, out)
    colour = _colour(result, C)
    parameter = next(model.parameters())
    # One set of K draws for the whole image: chunks imputed with different draws would
    # differ by the estimator's small bias, visible as seams in smooth areas.
    eps = torch.randn(n_samples, model.latent_dim, dtype=parameter.dtype, device=parameter.device)
    bar = progress_bar(int(lossy_rows.sum()), progress, "imputing rows")
    for r0, r1 in bands.spans():
        if lossy_rows[r0:r1].any():
            _impute_band(model, bands, colour, r0, r1, stats, n_samples, eps)
            bar.update(int(lossy_rows[r0:r1].sum()))
    bar.close()
    return result


class _RowBands:
    """An image read in bands of rows (at most about ``_BAND_BYTES`` of float32 values,
    at least 16 rows) for the clipped-pixel model.

    Args:
        arr: the image, [H, W] or [H, W, C(+alpha)], uint8, uint16 or float.
        channels: C, its colour channels.
        mask: [H, W] or [H, W, C], 1 = observed, or None (lost = at or above the clip
            level).
        clip_level: the clip level c.
    """

    def __init__(
        self, arr: np.ndarray, channels: int, mask: Optional[np.ndarray], clip_level: float
    ):
        self.arr, self.channels, self.mask, self.clip_level = arr, channels, mask, clip_level
        self.height, width = arr.shape[:2]
        self.rows = max(16, _BAND_BYTES // (4 * width * channels))
        self.floats = bool(np.issubdtype(arr.dtype, np.floating))

    def spans(self) -> Iterator[tuple[int, int]]:
        """The bands, as rows r0:r1."""
        for r0 in range(0, self.height, self.rows):
            yield r0, min(self.height, r0 + self.rows)

    def read(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows r0:r1 as (values, lost), each [r, W, C]: float32 values in [0, 1] with the
        lost ones set to the clip level, and which are lost."""
        raw = _colour(self.arr[r0:r1], self.channels)
        lost = ~_observed(raw, None if self.mask is None else self.mask[r0:r1], self.clip_level)
        values = _to_float(raw)
        values[lost] = self.clip_level  # NaN / inf and lost values: what the photograph shows
        return values, lost

    def survey(self) -> tuple[np.ndarray, np.ndarray]:
        """The first pass: the image's statistics [3C] (:func:`finish_statistics`) and
        which of its rows hold a lost value ([H] bool); ValueError when a float image
        holds values outside [0, 1]."""
        H, C = self.height, self.channels
        sums = np.zeros(3 * C)
        lossy_rows = np.zeros(H, dtype=bool)
        lo, hi = math.inf, -math.inf
        for r0, r1 in self.spans():
            values, lost = self.read(r0, r1)
            sums += image_statistics(values, lost)
            lossy_rows[r0:r1] = lost.any(axis=(1, 2))
            if self.floats:
                lo, hi = widen_range(_colour(self.arr[r0:r1], C), lo, hi)
        if lo < 0 or hi > 1:
            raise _float_range_error(lo, hi)
        return finish_statistics(sums, H * self.arr.shape[1], self.clip_level), lossy_rows


def _impute_band(
    model: ClippedPixelModel,
    bands: _RowBands,
    colour: np.ndarray,
    r0: int,
    r1: int,
    stats: np.ndarray,
    n_samples: int,
    eps: Tensor,
) -> None:
    """Imputes the lost values of rows r0:r1 into ``colour`` ([H, W, C] view of the
    output), ``_PIXEL_CHUNK`` pixels at a time; the rows are read with max(radii) rows
    of context above and below."""
    R, clip_level = max(model.radii), bands.clip_level
    c0, c1 = max(0, r0 - R), min(bands.height, r1 + R)
    values, lost = bands.read(c0, c1)
    rows, cols = np.nonzero(lost[r0 - c0 : r1 - c0].any(axis=2))
    rows = rows + (r0 - c0)
    integral = band_integral(values, lost, clip_level, R)
    parameter = next(model.parameters())
    dtype, device = parameter.dtype, parameter.device
    for start in range(0, len(rows), _PIXEL_CHUNK):
        rr, cc = rows[start : start + _PIXEL_CHUNK], cols[start : start + _PIXEL_CHUNK]
        h = features_at(integral, rr, cc, stats, clip_level, model.radii)
        x = torch.as_tensor(values[rr, cc], dtype=dtype, device=device)
        s = torch.as_tensor(lost[rr, cc], device=device)
        imputed = (
            model.impute_pixels(x, s, h.to(dtype=dtype, device=device), clip_level, n_samples, eps)
            .cpu()
            .numpy()
        )
        _store(colour, rr + c0, cc, imputed, lost[rr, cc], clip_level)


def _store(
    colour: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    imputed: np.ndarray,
    lost: np.ndarray,
    clip_level: float,
) -> None:
    """Writes the imputed values [N, C] (float) of the lost entries ``lost`` [N, C] of the
    pixels (rows[n], cols[n]) into ``colour`` ([H, W, C], the output's dtype), none below
    the clip level as that dtype holds it; the observed entries are left as they are."""
    floats = bool(np.issubdtype(colour.dtype, np.floating))
    imputed = _from_float(
        np.clip(imputed.astype(np.float64), _lowest_lost(colour.dtype, clip_level), 1.0),
        colour.dtype,
    )
    if floats:  # the clip level as the image's own dtype holds it
        imputed = np.maximum(imputed, colour.dtype.type(clip_level))
    target = colour[rows, cols]
    np.copyto(target, imputed, where=lost)
    colour[rows, cols] = target


def _lowest_lost(dtype: np.dtype, clip_level: float) -> float:
    """The smallest value of ``dtype`` at or above the clip level, in [0, 1] (for integers
    a whole level: ceil(c · max) / max)."""
    if np.issubdtype(dtype, np.floating):
        return clip_level
    top = float(np.iinfo(dtype).max)
    return math.ceil(clip_level * top - 1e-9) / top
