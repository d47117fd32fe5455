"""Imputing an image with a tile model: overlapping tiles blended with a smooth window,
streamed in bands of tile rows (``"fused"``) or all at once (``"reference"``)."""

from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import torch

from .._common.progress import progress_bar
from ..nn.models import ImportanceWeightedModel
from ._arrays import (
    _colour,
    _float_range_error,
    _from_float,
    _observed,
    _to_float,
    as_float_image,
    widen_range,
)

IMAGE_BACKENDS = ("fused", "reference")
# The fused path's bands span at most this many bytes of float32 values (or one row of
# tiles): a bound on its band buffers whatever the image's height.
_BAND_BYTES = 8 * 2**20


def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Top (or left) edges of the tiles along one side: every ``stride`` pixels, and one
    flush with the far edge; ``length`` >= ``tile``."""
    starts = list(range(0, max(1, length - tile + 1), stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _window(tile: int, overlap: int) -> np.ndarray:
    """Blending weights of a tile, [tile, tile]: 1 inside, a raised-cosine ramp over the
    overlap."""
    w = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        w[:overlap] = ramp
        w[-overlap:] = ramp[::-1]
    return np.outer(w, w)


def _pad_to_tile(
    values: np.ndarray, observed: np.ndarray, tile: int
) -> tuple[np.ndarray, np.ndarray]:
    """An image [H, W, C] smaller than a tile on a side, padded at the bottom / right to a
    tile (values reflected, lost values as 0; the mask repeated at the edge)."""
    ph, pw = max(0, tile - values.shape[0]), max(0, tile - values.shape[1])
    mode = "reflect" if min(values.shape[:2]) > 1 else "edge"
    work = np.pad(
        np.where(observed, values, 0.0).astype(np.float32), ((0, ph), (0, pw), (0, 0)), mode=mode
    )
    obs = np.pad(observed, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return work, obs


def _lossy_tiles(observed: np.ndarray, tops, lefts, tile: int) -> np.ndarray:
    """[len(tops), len(lefts)] bool: which tiles (corners relative to ``observed``,
    [r, W, C]) hold a lost value."""
    lost = ~observed.all(axis=2)
    windows = np.lib.stride_tricks.sliding_window_view(lost, (tile, tile))
    return windows[np.ix_(np.asarray(tops), np.asarray(lefts))].any(axis=(2, 3))


def _check_out(arr: np.ndarray, out: Optional[np.ndarray]) -> None:
    """Checks impute_image's ``out`` against the image ``arr``."""
    if out is None:
        return
    if not isinstance(out, np.ndarray) or out.shape != arr.shape or out.dtype != arr.dtype:
        got = (
            f"{type(out).__name__} {list(out.shape)} {out.dtype}"
            if isinstance(out, np.ndarray)
            else type(out).__name__
        )
        raise ValueError(
            f"argument 'out' must be a numpy array of the image's shape "
            f"{list(arr.shape)} and dtype {arr.dtype}; got {got}"
        )
    if not out.flags.writeable:
        raise ValueError("argument 'out' must be writable")
    if not _same_array(out, arr) and np.may_share_memory(out, arr):
        raise ValueError("argument 'out' must be the image itself (in place) or not overlap it")


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
    )


def _output(arr: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    """The array impute_image writes into (``out`` checked by _check_out, or a new one),
    holding the image's values; called once the input has been validated."""
    if out is None:
        return arr.copy()
    if not _same_array(out, arr):
        np.copyto(out, arr)
    return out


def _impute_streaming(
    model: ImportanceWeightedModel,
    arr: np.ndarray,
    C: int,
    mask: Optional[np.ndarray],
    clip_level: Optional[float],
    tile: int,
    overlap: int,
    n_samples: int,
    batch_size: int,
    chunk_size: Optional[int],
    progress: bool,
    out: Optional[np.ndarray],
) -> np.ndarray:
    """impute_image, fused path: bands of tile rows, blending sums only for open rows."""
    grid = _TileBands(arr, C, mask, clip_level, tile, tile - overlap)
    lossy = grid.survey()
    out = _output(arr, out)
    colour = _colour(out, C)
    window = _window(tile, overlap)[:, :, None]
    bar = progress_bar(int(lossy.sum()), progress, "imputing tiles")
    carry: Optional[tuple[np.ndarray, np.ndarray]] = None  # sums of rows left open
    # Bands of about one batch of tiles that lose a value (fewer calls on sparse losses).
    for a, b, r0, r1, done in grid.bands(lossy.sum(axis=1), batch_size):
        if not lossy[a:b].any():
            # nothing is lost in rows r0:r1, so the sums still open there cannot matter
            carry = None
            continue
        total = np.zeros((r1 - r0, grid.width, C), dtype=np.float32)  # Σ window · tiles
        weight = np.zeros((r1 - r0, grid.width, 1), dtype=np.float32)  # Σ window
        if carry is not None:
            total[: len(carry[0])] = carry[0]
            weight[: len(carry[1])] = carry[1]
        values, observed = grid.read(r0, r1)
        rows, cols = np.nonzero(lossy[a:b])
        corners = np.stack([grid.tops[a:b][rows] - r0, grid.lefts[cols]], axis=1)
        _blend_tiles(
            model,
            values,
            observed,
            corners,
            window,
            total,
            weight,
            n_samples,
            batch_size,
            chunk_size,
            bar,
        )
        end = done - r0
        _write_lost(colour, r0, total[:end], weight[:end], observed[:end])
        carry = total[end:], weight[end:]
    bar.close()
    return out


class _TileBands:
    """An image as the fused path reads it: in bands of whole tile rows, as float32
    values and the observed mask. An image smaller than a tile on a side is padded to a
    tile there (:func:`_pad_to_tile`; at most max(H, tile) × max(W, tile) values).

    Args:
        arr: the image, [H, W] or [H, W, C(+alpha)].
        channels: C.
        mask: [H, W] or [H, W, C] (1 = observed) or None (the clip level decides).
        clip_level: values at or above it are lost (when there is no mask).
        tile, stride: the tile side and the distance between tiles.
    """

    def __init__(
        self,
        arr: np.ndarray,
        channels: int,
        mask: Optional[np.ndarray],
        clip_level: Optional[float],
        tile: int,
        stride: int,
    ):
        self.arr, self.channels, self.mask, self.clip_level = arr, channels, mask, clip_level
        self.tile = tile
        H, W = arr.shape[:2]
        self.padded: Optional[tuple[np.ndarray, np.ndarray]] = None
        if H < tile or W < tile:
            values, _ = as_float_image(arr)  # its range checked here
            observed = _observed(_colour(arr, channels), mask, clip_level)
            self.padded = _pad_to_tile(values, observed, tile)
            H, W = self.padded[0].shape[:2]
        self.height, self.width = H, W  # padded
        self.floats = self.padded is None and bool(np.issubdtype(arr.dtype, np.floating))
        self.tops = np.asarray(_tile_starts(H, tile, stride))
        self.lefts = np.asarray(_tile_starts(W, tile, stride))
        self.cap = max(tile, _BAND_BYTES // (4 * W * channels))  # image rows a band may span

    def read(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows r0:r1 as (values float32 [r, W, C] in [0, 1], observed bool [r, W, C])."""
        if self.padded is not None:
            return self.padded[0][r0:r1], self.padded[1][r0:r1]
        raw = _colour(self.arr[r0:r1], self.channels)
        return _to_float(raw), _observed(
            raw, None if self.mask is None else self.mask[r0:r1], self.clip_level
        )

    def bands(self, sizes: np.ndarray, limit: int) -> Iterator[tuple[int, int, int, int, int]]:
        """Bands of consecutive tile rows [a, b), closed once the sizes of their tile rows
        add up to ``limit`` or they would span more than ``cap`` image rows; yields
        (a, b, r0, r1, done): the band covers image rows r0:r1 and finishes rows r0:done
        (no later tile reaches them)."""
        tops, tile = self.tops, self.tile
        a = 0
        while a < len(tops):
            b, size = a + 1, sizes[a]
            while b < len(tops) and size < limit and tops[b] + tile - tops[a] <= self.cap:
                size, b = size + sizes[b], b + 1
            yield a, b, tops[a], tops[b - 1] + tile, tops[b] if b < len(tops) else self.height
            a = b

    def survey(self) -> np.ndarray:
        """The first pass, before anything is written: which tiles lose a value,
        [len(tops), len(lefts)] bool; ValueError when a float image holds values
        outside [0, 1]."""
        lossy = np.zeros((len(self.tops), len(self.lefts)), dtype=bool)
        lo, hi = math.inf, -math.inf
        for a, b, r0, r1, _ in self.bands(np.zeros(len(self.tops), dtype=int), 1):
            _, observed = self.read(r0, r1)
            lossy[a:b] = _lossy_tiles(observed, self.tops[a:b] - r0, self.lefts, self.tile)
            if self.floats:
                lo, hi = widen_range(_colour(self.arr[r0:r1], self.channels), lo, hi)
        if lo < 0 or hi > 1:
            raise _float_range_error(lo, hi)
        return lossy


def _blend_tiles(
    model: ImportanceWeightedModel,
    values: np.ndarray,
    observed: np.ndarray,
    corners: np.ndarray,
    window: np.ndarray,
    total: np.ndarray,
    weight: np.ndarray,
    n_samples: int,
    batch_size: int,
    chunk_size: Optional[int],
    bar,
) -> None:
    """Imputes the tiles of a band whose top-left corners are ``corners`` ([n, 2], in the
    band's rows), ``batch_size`` at a time, and adds each, times ``window`` [T, T, 1],
    to ``total`` [r, W, C] and the window to ``weight`` [r, W, 1].

    Args:
        values, observed: the band, [r, W, C] float32 and bool.
    """
    tile, C = window.shape[0], values.shape[2]
    device = next(model.parameters()).device
    windows_of = np.lib.stride_tricks.sliding_window_view
    x_tiles = windows_of(values, (tile, tile), axis=(0, 1))  # [r-T+1, W-T+1, C, T, T]
    s_tiles = windows_of(observed, (tile, tile), axis=(0, 1))
    for start in range(0, len(corners), batch_size):
        group = corners[start : start + batch_size]
        xs = x_tiles[group[:, 0], group[:, 1]].reshape(len(group), -1)  # channel-major
        ss = s_tiles[group[:, 0], group[:, 1]].reshape(len(group), -1)
        imputed = (
            model.impute(
                torch.as_tensor(xs, device=device),
                torch.as_tensor(ss, device=device),
                n_samples=n_samples,
                chunk_size=chunk_size,
            )
            .cpu()
            .numpy()
        )
        imputed = imputed.reshape(len(group), C, tile, tile).transpose(0, 2, 3, 1)
        for (top, left), tile_values in zip(group, imputed, strict=True):
            total[top : top + tile, left : left + tile] += tile_values * window
            weight[top : top + tile, left : left + tile] += window
        bar.update(len(group))


def _write_lost(
    colour: np.ndarray, r0: int, total: np.ndarray, weight: np.ndarray, observed: np.ndarray
) -> None:
    """Writes the blended values (total / weight, [r, ≥W, C]) of the lost entries of rows
    r0:r0+r into ``colour`` ([H, W, C] view of the output); padding rows and columns
    beyond H, W are dropped."""
    H, W = colour.shape[:2]
    n = min(len(total), H - r0)
    if n <= 0:
        return
    lost = ~observed[:n, :W]
    if not lost.any():
        return
    blended = total[:n, :W] / np.maximum(weight[:n, :W], 1e-12)
    np.clip(blended, 0.0, 1.0, out=blended)
    np.copyto(colour[r0 : r0 + n], _from_float(blended, colour.dtype), where=lost)


def _impute_reference(
    model, arr, C, mask, clip_level, tile, overlap, n_samples, batch_size, chunk_size, progress, out
):
    """impute_image, reference path: the whole image at once (``batch_size`` unused)."""
    values, _ = as_float_image(arr)  # [H, W, C] float32
    out = _output(arr, out)
    H, W = values.shape[:2]
    observed = _observed(_colour(arr, C), mask, clip_level)
    work, obs = _pad_to_tile(values, observed, tile) if H < tile or W < tile else (values, observed)
    HP, WP = work.shape[:2]
    device = next(model.parameters()).device
    T2 = tile * tile
    offsets = torch.arange(tile)
    rows = torch.tensor(_tile_starts(HP, tile, tile - overlap))[:, None] + offsets  # [nr, T]
    cols = torch.tensor(_tile_starts(WP, tile, tile - overlap))[:, None] + offsets  # [nc, T]
    # idx [N, T²]: flat pixel index (row · WP + col) of every value of every tile
    idx = (rows[:, None, :, None] * WP + cols[None, :, None, :]).reshape(-1, T2).to(device)
    x = torch.as_tensor(work, device=device).reshape(HP * WP, C)
    s = torch.as_tensor(obs, device=device).reshape(HP * WP, C)
    x_tiles = x[idx].transpose(1, 2).reshape(len(idx), C * T2)  # [N, C·T²] channel-major
    s_tiles = s[idx].transpose(1, 2).reshape(len(idx), C * T2)
    lossy = ~s_tiles.all(dim=1)
    idx, x_tiles, s_tiles = idx[lossy], x_tiles[lossy], s_tiles[lossy]
    n = len(idx)
    bar = progress_bar(n, progress, "imputing tiles")
    if n:
        imputed = model.impute(x_tiles, s_tiles, n_samples=n_samples, chunk_size=chunk_size)
        window = torch.as_tensor(_window(tile, overlap), device=device).reshape(T2)
        weighted = imputed.reshape(n, C, T2).transpose(1, 2) * window[:, None]  # [n, T², C]
        total = torch.zeros(HP * WP, C, device=device).index_add_(
            0, idx.reshape(-1), weighted.reshape(-1, C)
        )
        weight = torch.zeros(HP * WP, device=device).index_add_(
            0, idx.reshape(-1), window.repeat(n)
        )
        blended = (total / weight.clamp_min(1e-12)[:, None]).clamp_(0.0, 1.0)
        blended = blended.reshape(HP, WP, C)[:H, :W].cpu().numpy()
        np.copyto(_colour(out, C), _from_float(blended, out.dtype), where=~observed)
    bar.update(n)
    bar.close()
    return out
