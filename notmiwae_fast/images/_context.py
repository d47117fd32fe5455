"""What a clipped-pixel model knows of a pixel besides its own values: its neighbourhood
(without the pixel itself) at several scales, the image's statistics, and the clip level.

The features of pixel (i, j), for an image whose lost values are replaced by the clip
level c (the values a clipped photograph shows):

* for each radius r of ``radii``: the mean of each channel over the (2r+1)² window
  around the pixel, the pixel itself left out (C values), and the fraction of each
  channel lost there (C values); windows are cut at the image's edges;
* for each channel: the fraction of the image's values lost, and the mean and standard
  deviation of its observed values (3C values);
* the clip level c.

So F = 2·C·len(radii) + 3·C + 1 (37 for RGB with four radii). Window sums come from an
integral image of the band of rows in hand, read only at the pixels asked for.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

RADII = (1, 3, 9, 27)


def n_features(channels: int, radii: Sequence[int] = RADII) -> int:
    """F, the length of a pixel's feature vector."""
    return 2 * channels * len(radii) + 3 * channels + 1


def image_statistics(values: np.ndarray, lost: np.ndarray) -> np.ndarray:
    """[3C] float64 sums for :func:`finish_statistics`: per channel the count of lost
    values, the sum and the sum of squares of the observed ones, of a block of rows
    (values [r, W, C] float, lost [r, W, C] bool). Sums of blocks add up."""
    lost_t = torch.from_numpy(np.ascontiguousarray(lost))
    obs = torch.from_numpy(np.ascontiguousarray(values)).masked_fill(lost_t, 0)
    sums = [
        lost_t.sum(dim=(0, 1), dtype=torch.float64),
        obs.sum(dim=(0, 1), dtype=torch.float64),
        obs.square_().sum(dim=(0, 1), dtype=torch.float64),
    ]  # accumulated in float64
    return torch.cat(sums).numpy()


def finish_statistics(sums: np.ndarray, n_pixels: int, clip_level: float) -> np.ndarray:
    """The image's 3C statistics (fraction lost, mean and std of the observed values,
    per channel) from the summed :func:`image_statistics` of all its rows."""
    C = len(sums) // 3
    n_lost, total, squares = sums[:C], sums[C : 2 * C], sums[2 * C :]
    n_obs = n_pixels - n_lost
    mean = np.where(n_obs > 0, total / np.maximum(n_obs, 1), clip_level)
    var = np.where(n_obs > 0, squares / np.maximum(n_obs, 1) - mean**2, 0.0)
    return np.concatenate([n_lost / max(n_pixels, 1), mean, np.sqrt(np.maximum(var, 0.0))])


def band_integral(values: np.ndarray, lost: np.ndarray, clip_level: float, radius: int) -> Tensor:
    """The integral image of a band of rows, padded by ``radius`` + 1 zeros on each side:
    [r + 2R + 1, W + 2R + 1, 2C + 1] float64 tensor, channels: the values with lost ones
    set to the clip level (C), the lost flags (C), 1 (counts the pixels inside the image).
    Computed with torch (multi-threaded).

    Args:
        values: [r, W, C] float values of the band's rows in [0, 1].
        lost: [r, W, C] bool, True where a value is lost.
    """
    R = radius
    r, W, C = values.shape
    lost_t = torch.from_numpy(np.ascontiguousarray(lost))
    a = torch.zeros(r + 2 * R + 1, W + 2 * R + 1, 2 * C + 1, dtype=torch.float64)
    inner = a[R + 1 : R + 1 + r, R + 1 : R + 1 + W]
    inner[..., :C] = torch.from_numpy(np.ascontiguousarray(values)).masked_fill(lost_t, clip_level)
    inner[..., C : 2 * C] = lost_t
    inner[..., 2 * C] = 1.0
    torch.cumsum(a, 0, out=a)
    torch.cumsum(a, 1, out=a)  # a[i, j] = sum of the zero-padded band above-left of i, j
    return a


def features_at(
    integral: Tensor,
    rows: np.ndarray,
    cols: np.ndarray,
    stats: np.ndarray,
    clip_level: float,
    radii: Sequence[int] = RADII,
) -> Tensor:
    """Features [N, F] float32 (a tensor) of the pixels (rows[n], cols[n]) of a band, from
    its :func:`band_integral` (made with ``max(radii)``) and the image's statistics."""
    R = max(radii)
    width, depth = integral.shape[1], integral.shape[2]
    C = (depth - 1) // 2
    flat = integral.view(-1, depth)
    # the flat index of integral[row + R, col + R]: a window's corners are offsets of it
    base = (
        (torch.as_tensor(rows, dtype=torch.int64) + R) * width
        + torch.as_tensor(cols, dtype=torch.int64)
        + R
    )

    def corner(dr: int, dc: int) -> Tensor:
        return flat.index_select(0, base + (dr * width + dc))

    centre = corner(1, 1) - corner(0, 1) - corner(1, 0) + corner(0, 0)
    out = torch.empty(len(base), n_features(C, radii), dtype=torch.float32)
    for i, rad in enumerate(radii):
        window = (
            corner(rad + 1, rad + 1)
            - corner(-rad, rad + 1)
            - corner(rad + 1, -rad)
            + corner(-rad, -rad)
            - centre
        )
        count = window[:, 2 * C :].clamp_min(1.0)
        out[:, 2 * C * i : 2 * C * (i + 1)] = window[:, : 2 * C] / count
    out[:, 2 * C * len(radii) : -1] = torch.from_numpy(np.asarray(stats, dtype=np.float64))
    out[:, -1] = clip_level
    return out


def pixel_features(
    values: np.ndarray,
    lost: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    stats: np.ndarray,
    clip_level: float,
    radii: Sequence[int] = RADII,
) -> np.ndarray:
    """Features [N, F] float32 of the pixels (rows[n], cols[n]) of a band of an image.

    Args:
        values: [r, W, C] float values of the band's rows in [0, 1] (lost ones are
            replaced by the clip level here); the band holds every row within
            ``max(radii)`` of the pixels asked for that the image has.
        lost: [r, W, C] bool, True where a value is lost.
        rows, cols: [N] int pixel coordinates inside the band.
        stats: [3C] the whole image's statistics (:func:`finish_statistics`).
        clip_level: the clip level c.
    """
    integral = band_integral(values, lost, clip_level, max(radii))
    return features_at(integral, rows, cols, stats, clip_level, radii).numpy()
