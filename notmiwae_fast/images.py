"""Images: imputing clipped (over-exposed) pixels with MIWAE / not-MIWAE.

Pixels at or above a brightness level are lost (sensor clipping): a self-masking
missing process with a known direction. The models work on square patches of
``patch × patch`` pixels and C channels, flattened channel-major to D = C·patch² values
in [0, 1]; a convolutional encoder and decoder replace the MLPs, and the missing process
is per pixel value with parameters shared by all pixels (one pair, or one per channel).
:func:`impute_image` imputes an image of any size by overlapping tiles, blended with a
smooth window, streaming over the importance samples, in bounded memory.

    model = image_model("notmiwae", channels=3)
    train_on_patches(model, photo_patches(photos, 32, 20000), clip_level=0.75)
    restored = impute_image(model, clipped_photo, clip_level=0.75)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _validate
from .missing import BaseMissingProcess
from ._progress import progress_bar
from .models import MIWAE, NotMIWAE
from .networks import BernoulliFamily, GaussianFamily

__all__ = ["ConvEncoder", "ConvGaussianDecoder", "ConvBernoulliDecoder", "PixelSelfMasking",
           "image_model", "photo_patches", "clip_mask", "train_on_patches", "impute_image",
           "as_float_image", "bundled_photographs", "save_image_model", "load_image_model",
           "IMAGE_MIN_SCALE"]

IMAGE_MIN_SCALE = 0.02  # decoder scale floor on [0, 1] pixels (about 5 grey levels)


class ConvEncoder(nn.Module):
    """[B, C·P·P] -> (μ, σ) [B, L]: two stride-2 convolutions, then a linear layer."""

    def __init__(self, channels: int, patch: int, latent_dim: int, width: int = 32):
        super().__init__()
        if patch % 4:
            raise ValueError(f"argument 'patch' must be a multiple of 4; got {patch}")
        self.shape = (channels, patch, patch)
        self.conv = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ELU(), nn.Flatten())
        self.head = nn.Linear(2 * width * (patch // 4) ** 2, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_var = self.head(self.conv(x.reshape(-1, *self.shape))).chunk(2, dim=-1)
        return mu, torch.exp(0.5 * log_var.clamp(-10.0, 10.0))


class _ConvTrunk(nn.Module):
    """z [..., L] -> [..., out_channels · P · P]: linear layer, two transposed convs."""

    def __init__(self, latent_dim: int, out_channels: int, patch: int, width: int = 32):
        super().__init__()
        self.side, self.width = patch // 4, width
        self.fc = nn.Linear(latent_dim, 2 * width * self.side ** 2)
        self.deconv = nn.Sequential(
            nn.ELU(), nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ELU(),
            nn.ConvTranspose2d(width, out_channels, 4, stride=2, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, 2 * self.width, self.side,
                                                       self.side)
        out = self.deconv(h)  # [N, out_channels, P, P]
        return out.reshape(*lead, out.shape[1], -1)


class ConvGaussianDecoder(GaussianFamily, nn.Module):
    """p(x | z) = N(loc, scale) per pixel value; scale = softplus(raw) + min_scale."""

    def __init__(self, latent_dim: int, channels: int, patch: int, width: int = 32,
                 min_scale: float = IMAGE_MIN_SCALE):
        super().__init__()
        self.channels, self.min_scale = channels, float(min_scale)
        self.trunk = _ConvTrunk(latent_dim, 2 * channels, patch, width)

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        out = self.trunk(z)  # [..., 2C, P·P]
        loc, raw = out[..., :self.channels, :], out[..., self.channels:, :]
        return {"loc": loc.flatten(-2), "scale": F.softplus(raw).flatten(-2) + self.min_scale}


class ConvBernoulliDecoder(BernoulliFamily, nn.Module):
    """p(x | z) = Bernoulli(σ(logits)) per pixel value (see BernoulliFamily)."""

    def __init__(self, latent_dim: int, channels: int, patch: int, width: int = 32,
                 min_scale: float = IMAGE_MIN_SCALE):
        super().__init__()
        self.trunk = _ConvTrunk(latent_dim, channels, patch, width)

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"logits": self.trunk(z).flatten(-2)}


class PixelSelfMasking(BaseMissingProcess):
    """ℓ = −sign · softplus(W) · (x − b) per pixel value, with one (W, b) pair for all
    pixels (``per_channel=False``) or one per channel; sign +1: bright values go missing
    (clipping), −1: dark values go missing."""

    def __init__(self, channels: int, patch: int, per_channel: bool = False,
                 sign: float = 1.0, threshold: float = 0.5, strength: float = 50.0):
        super().__init__(channels * patch * patch)
        if sign not in (1, -1, 1.0, -1.0):
            raise ValueError(f"argument 'sign' must be +1 or -1; got {sign!r}")
        n = channels if per_channel else 1
        self.channels, self.pixels = channels, patch * patch
        self.W = nn.Parameter(torch.full((n,), math.log(math.expm1(strength))))
        self.b = nn.Parameter(torch.full((n,), float(threshold)))
        self.register_buffer("sign", torch.tensor(float(sign)))

    def _per_value(self, p: Tensor) -> Tensor:
        return p.expand(self.channels).repeat_interleave(self.pixels)

    def selfmask_params(self) -> tuple[Tensor, Tensor]:
        return self._per_value(self.sign * F.softplus(self.W)), self._per_value(self.b)

    def forward(self, x: Tensor) -> Tensor:
        slope, b = self.selfmask_params()
        return -slope * (x - b)

    def interpret(self, verbose: bool = False, mean=None, std=None) -> dict:
        slope = (self.sign * F.softplus(self.W)).detach().cpu()
        result = {"process_type": type(self).__name__, "slope": slope.tolist(),
                  "threshold": self.b.detach().cpu().tolist()}
        if verbose:
            print(f"missing above {result['threshold']} (slope {result['slope']})")
        return result


def image_model(kind: str = "notmiwae", channels: int = 3, patch: int = 32,
                latent_dim: int = 32, n_samples: int = 20, out_dist: str = "gauss",
                per_channel: bool = False, sign: float = 1.0, width: int = 32,
                min_scale: float = IMAGE_MIN_SCALE, backend: str = "fused"):
    """A MIWAE or NotMIWAE with convolutional networks for C × patch × patch patches.

    Args:
        kind: ``"notmiwae"`` (with :class:`PixelSelfMasking`) or ``"miwae"``.
        out_dist: ``"gauss"`` or ``"bern"``.
        per_channel: one missing-process pair per channel instead of one shared.
        sign: +1 when bright values go missing (clipping), −1 for dark ones.
    """
    decoders = {"gauss": ConvGaussianDecoder, "bern": ConvBernoulliDecoder}
    if out_dist not in decoders:
        raise ValueError(f"argument 'out_dist' must be one of 'gauss', 'bern' for images; "
                         f"got {out_dist!r}")
    D = channels * patch * patch
    nets = dict(encoder=ConvEncoder(channels, patch, latent_dim, width),
                decoder=decoders[out_dist](latent_dim, channels, patch, width, min_scale))
    common = dict(latent_dim=latent_dim, hidden_dim=1, n_samples=n_samples,
                  out_dist=out_dist, backend=backend, **nets)
    if kind == "miwae":
        model = MIWAE(D, **common)
    elif kind == "notmiwae":
        model = NotMIWAE(D, missing_process=PixelSelfMasking(channels, patch, per_channel,
                                                             sign), **common)
    else:
        raise ValueError(f"argument 'kind' must be 'notmiwae' or 'miwae'; got {kind!r}")
    model.image_shape = (channels, patch, patch)
    model.image_config = dict(kind=kind, channels=channels, patch=patch, latent_dim=latent_dim,
                              n_samples=n_samples, out_dist=out_dist,
                              per_channel=per_channel, sign=sign, width=width,
                              min_scale=min_scale)
    return model


def save_image_model(model, path) -> None:
    """Saves an image model as its configuration and weights (atomically)."""
    from ._io import save_atomic

    save_atomic({"format": "notmiwae_fast.image_model/1", "config": model.image_config,
                 "state_dict": model.state_dict()}, path)


def load_image_model(path=None, backend: str = "fused", map_location="cpu"):
    """Loads a model written by :func:`save_image_model`; without ``path``, the bundled
    not-MIWAE model for clipped RGB photographs (values >= 0.75 lost; trained by
    benchmarks/image_clipping.py on scikit-image's photographs)."""
    import os

    path = path or os.path.join(os.path.dirname(__file__), "data", "clipped_pixels_rgb.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image model file {path} does not exist")
    try:  # a configuration dict and a state_dict: no pickled code needed
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one message
        raise ValueError(f"image model file {path} cannot be read "
                         f"({type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != "notmiwae_fast.image_model/1":
        raise ValueError(f"image model file {path} does not hold an image model written "
                         "by save_image_model")
    model = image_model(backend=backend, **state["config"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
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
    return ValueError("argument 'image': float images must hold values in [0, 1]; "
                      f"got [{lo:.3g}, {hi:.3g}]")


def as_float_image(image) -> tuple[np.ndarray, dict]:
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


def bundled_photographs(names: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """Photographs that scikit-image ships (no download), as float32 [H, W, 3] in [0, 1]."""
    try:
        import skimage.data
    except ImportError as exc:
        raise ImportError("the bundled photographs need scikit-image "
                          "(pip install scikit-image)") from exc
    names = names or ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                      "immunohistochemistry", "retina", "cat"]
    return {n: as_float_image(getattr(skimage.data, n)())[0] for n in names}


def photo_patches(photos: Sequence[np.ndarray], patch: int, n: int,
                  seed: int = 0) -> np.ndarray:
    """n random patch × patch crops from photos -> [n, C·patch²] float32 in [0, 1],
    channel-major (the layout of the image models). The photos are [H, W] or [H, W, C]
    uint8, uint16 or float in [0, 1] (as :func:`impute_image` takes; an alpha channel is
    dropped), all with the same colour channels and at least patch × patch pixels."""
    patch, n = _validate.positive_int(patch, "patch"), _validate.positive_int(n, "n")
    if isinstance(photos, np.ndarray) and photos.ndim in (2, 3):
        raise ValueError("argument 'photos' must be a list of images; got one image")
    converted = []
    for i, photo in enumerate(photos):
        try:
            values = as_float_image(photo)[0]
        except ValueError as err:
            raise ValueError(f"argument 'photos': photo {i}: {err}") from None
        if min(values.shape[:2]) < patch:
            raise ValueError(f"argument 'patch' ({patch}) is larger than photo {i} of "
                             f"'photos' ({values.shape[0]} × {values.shape[1]} pixels)")
        if converted and values.shape[2] != converted[0].shape[2]:
            raise ValueError(f"argument 'photos': photo {i} has {values.shape[2]} colour "
                             f"channel(s), photo 0 has {converted[0].shape[2]}")
        converted.append(values)
    if not converted:
        raise ValueError("argument 'photos' must hold at least one image")
    photos = converted
    rng = np.random.default_rng(seed)
    out = np.empty((n, photos[0].shape[2] * patch * patch), dtype=np.float32)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - patch + 1)
        left = rng.integers(photo.shape[1] - patch + 1)
        out[i] = photo[top:top + patch, left:left + patch].transpose(2, 0, 1).reshape(-1)
    return out


def _below(values: np.ndarray, clip_level: float) -> np.ndarray:
    """Which values lie below the clip level, compared on the values as they are: floats
    in their own precision, uint8 / uint16 as value / 255 (65535) in float64."""
    values = np.asarray(values)
    if values.dtype in (np.uint8, np.uint16):
        return values / float(np.iinfo(values.dtype).max) < clip_level
    return values < clip_level


def clip_mask(x: np.ndarray, clip_level: float) -> np.ndarray:
    """1 where a value is observed (below the clip level), 0 where it is lost; floats in
    [0, 1] are compared in their own precision, uint8 / uint16 values scaled to [0, 1]."""
    return _below(x, clip_level).astype(np.float32)


def train_on_patches(model, patches: np.ndarray, clip_level: float = 0.75, steps: int = 2000,
                     batch_size: int = 32, lr: float = 1e-3, progress: bool = True) -> list:
    """Trains ``model`` on patches with the values ≥ clip_level removed; returns the
    losses. (A thin loop over :class:`notmiwae_fast.Trainer`'s step.)"""
    from .trainer import Trainer

    steps = _validate.positive_int(steps, "steps")
    batch_size = _validate.positive_int(batch_size, "batch_size")
    patches = np.asarray(patches)
    D = math.prod(getattr(model, "image_shape", (patches.shape[-1],)))
    if patches.ndim != 2 or len(patches) == 0 or patches.shape[1] != D:
        raise ValueError(f"argument 'patches' must be [n, {D}] (the model's C·patch²) with "
                         f"n >= 1; got shape {list(patches.shape)}")
    x = torch.as_tensor(patches, dtype=next(model.parameters()).dtype)
    s = torch.as_tensor(clip_mask(patches, clip_level))
    # Fewer patches than a batch: one smaller batch (drop_last would leave none).
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x * s, s),
                                         batch_size=batch_size, shuffle=True,
                                         drop_last=len(patches) > batch_size)
    trainer = Trainer(model, lr=lr, progress=False)
    losses: list[float] = []
    bar = progress_bar(steps, progress, "training")
    while len(losses) < steps:
        for batch in loader:
            losses.append(trainer.train_step(batch)["loss"].item())
            bar.update(1)
            if len(losses) >= steps:
                break
    bar.close()
    return losses


# --------------------------------------------------------------------------------------
# Imputing a whole image
# --------------------------------------------------------------------------------------
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


def _colour_channels(a: np.ndarray) -> int:
    """The colour channels of an [H, W] or [H, W, C] image: C without its alpha channel
    (the last one when C = 2 or 4)."""
    channels = 1 if a.ndim == 2 else a.shape[2]
    return channels - 1 if channels in (2, 4) else channels


def _colour(a: np.ndarray, channels: int) -> np.ndarray:
    """A view of the colour values of an [H, W] or [H, W, C(+alpha)] array, [H, W, C]."""
    return a[:, :, None] if a.ndim == 2 else a[:, :, :channels]


def _observed(values: np.ndarray, mask: Optional[np.ndarray],
              clip_level: Optional[float]) -> np.ndarray:
    """Observed entries of the colour values [r, W, C] as the input holds them (its own
    dtype): the mask's ([r, W] or [r, W, C]) or those below the clip level, and finite."""
    if mask is None:
        observed = _below(values, clip_level)
    else:
        observed = mask.astype(bool)
        observed = observed[:, :, None] if observed.ndim == 2 else observed
    return observed & np.isfinite(values)


def _pad_to_tile(values: np.ndarray, observed: np.ndarray,
                 tile: int) -> tuple[np.ndarray, np.ndarray]:
    """An image [H, W, C] smaller than a tile on a side, padded at the bottom / right to a
    tile (values reflected, lost values as 0; the mask repeated at the edge)."""
    ph, pw = max(0, tile - values.shape[0]), max(0, tile - values.shape[1])
    mode = "reflect" if min(values.shape[:2]) > 1 else "edge"
    work = np.pad(np.where(observed, values, 0.0).astype(np.float32),
                  ((0, ph), (0, pw), (0, 0)), mode=mode)
    obs = np.pad(observed, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return work, obs


def _lossy_tiles(observed: np.ndarray, tops, lefts, tile: int) -> np.ndarray:
    """[len(tops), len(lefts)] bool: which tiles (corners relative to ``observed``,
    [r, W, C]) hold a lost value."""
    lost = ~observed.all(axis=2)
    windows = np.lib.stride_tricks.sliding_window_view(lost, (tile, tile))
    return windows[np.ix_(np.asarray(tops), np.asarray(lefts))].any(axis=(2, 3))


def impute_image(model, image, mask=None, clip_level: Optional[float] = 0.75,
                 tile: Optional[int] = None, overlap: Optional[int] = None,
                 n_samples: int = 20,
                 batch_size: int = 64, chunk_size: Optional[int] = None,
                 progress: bool = True, backend: Optional[str] = None,
                 out: Optional[np.ndarray] = None):
    """Imputes the lost pixels of an image of any size, tile by tile.

    Tiles of the model's patch size overlap by ``overlap`` pixels (the last row and
    column of tiles lie flush with the far edges); each tile that has a lost value is
    imputed by ``model.impute`` and the tiles are blended with a raised-cosine window.
    Only lost values are written; observed values are left exactly as they are.

    Args:
        model: an image model (:func:`image_model`), trained.
        image: [H, W] or [H, W, C] uint8, uint16 or float in [0, 1]; an alpha channel
            (C = 2 or 4) is kept as it is. The colour channels must match the model's.
        mask: [H, W] or [H, W, C] (C without alpha), bool or only 0 and 1: 1 (True) =
            observed, 0 = lost; default: derived from ``clip_level``, a number in (0, 1]
            (values ≥ clip_level are lost, compared on the image's own values: floats in
            their precision, integers as value / 255 or / 65535). NaN or inf image
            values count as lost either way.
        tile: tile side (default and required: the model's patch size).
        overlap: pixels shared by neighbouring tiles (default: a quarter of the tile).
        n_samples: importance samples K per tile; streamed in chunks (``chunk_size``).
        batch_size: tiles imputed together (fused path).
        backend: ``"fused"`` streams the image in bands of tile rows (about one batch
            of tiles that lose a value, at most 8 MB of float32 per buffer or one row of
            tiles): only the band in hand is converted to float, blending sums are kept
            only for the rows still open, and finished rows go straight into the output.
            Extra memory: the output array (none with ``out=image``), the band buffers,
            one bool per tile, and the model's work on one batch of tiles (``model.impute``
            chunks of about 4M values per tensor). ``"reference"``: the simple twin — the whole
            image as one float tensor, all tiles cut at once (a gather), imputed by one
            ``model.impute`` call, blended back by the transposed scatter-add; its
            memory grows with the image (tens of bytes per value). Both give the same
            result up to the randomness of the importance samples. Default: the model's
            backend. (It picks the image path; ``model.impute`` runs on the model's own
            backend.)
        out: where to write the result: a writable array of the image's shape and dtype
            (an ``np.memmap``, or the image itself to impute in place); default: a new
            array.
    Returns:
        the image with the lost values imputed, in the input's dtype and layout
        (``out`` when given).
    """
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
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"argument 'image' must be [H, W] or [H, W, C]; got shape {arr.shape}")
    _check_dtype(arr)
    H, W = arr.shape[:2]
    if H == 0 or W == 0:
        raise ValueError(f"argument 'image' is empty: shape {arr.shape}")
    C = _colour_channels(arr)
    if C != c:
        raise ValueError(f"argument 'image' has {C} colour channel(s); the model was trained "
                         f"on {c} ({'grey' if c == 1 else 'RGB'} images)")
    if clip_level is not None and (
            isinstance(clip_level, bool) or not isinstance(clip_level, (int, float, np.integer,
                                                                        np.floating))
            or not 0 < clip_level <= 1):
        raise ValueError(f"argument 'clip_level' must be a number in (0, 1]; got "
                         f"{clip_level!r}")
    if mask is None:
        if clip_level is None:
            raise ValueError("give a 'mask' or a 'clip_level'")
    else:
        mask = np.asarray(mask)
        if mask.shape not in ((H, W), (H, W, C)):
            raise ValueError(f"argument 'mask' must have shape [{H}, {W}] or [{H}, {W}, {C}]; "
                             f"got {list(mask.shape)}")
        if mask.dtype != bool and not (np.issubdtype(mask.dtype, np.number)
                                       and ((mask == 0) | (mask == 1)).all()):
            raise ValueError("argument 'mask' must be bool or hold only 0 (lost) and 1 "
                             "(observed)")
    _check_out(arr, out)
    args = (model, arr, C, mask, clip_level, tile, overlap, n_samples, batch_size,
            chunk_size, progress, out)
    return (_impute_streaming if backend == "fused" else _impute_reference)(*args)


def _check_out(arr: np.ndarray, out: Optional[np.ndarray]) -> None:
    """Checks impute_image's ``out`` against the image ``arr``."""
    if out is None:
        return
    if not isinstance(out, np.ndarray) or out.shape != arr.shape or out.dtype != arr.dtype:
        got = (f"{type(out).__name__} {list(out.shape)} {out.dtype}"
               if isinstance(out, np.ndarray) else type(out).__name__)
        raise ValueError(f"argument 'out' must be a numpy array of the image's shape "
                         f"{list(arr.shape)} and dtype {arr.dtype}; got {got}")
    if not out.flags.writeable:
        raise ValueError("argument 'out' must be writable")
    if not _same_array(out, arr) and np.may_share_memory(out, arr):
        raise ValueError("argument 'out' must be the image itself (in place) or not "
                         "overlap it")


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides)


def _output(arr: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    """The array impute_image writes into (``out`` checked by _check_out, or a new one),
    holding the image's values; called once the input has been validated."""
    if out is None:
        return arr.copy()
    if not _same_array(out, arr):
        np.copyto(out, arr)
    return out


def _impute_streaming(model, arr, C, mask, clip_level, tile, overlap, n_samples, batch_size,
                      chunk_size, progress, out):
    """impute_image, fused path: bands of tile rows, blending sums only for open rows."""
    H, W = arr.shape[:2]
    stride = tile - overlap
    if H < tile or W < tile:
        # Smaller than a tile on a side: padded to one tile there; the padded arrays are
        # at most max(H, tile) × max(W, tile), i.e. O(tile · side).
        values, _ = as_float_image(arr)
        observed = _observed(_colour(arr, C), mask, clip_level)
        work, work_obs = _pad_to_tile(values, observed, tile)
        floats = False  # range checked by as_float_image

        def read(r0: int, r1: int):
            return work[r0:r1], work_obs[r0:r1]
        HP, WP = work.shape[:2]
    else:
        floats = bool(np.issubdtype(arr.dtype, np.floating))

        def read(r0: int, r1: int):
            raw = _colour(arr[r0:r1], C)
            return _to_float(raw), _observed(raw, None if mask is None else mask[r0:r1],
                                             clip_level)
        HP, WP = H, W
    tops = np.asarray(_tile_starts(HP, tile, stride))
    lefts = np.asarray(_tile_starts(WP, tile, stride))
    cap = max(tile, _BAND_BYTES // (4 * WP * C))  # image rows a band may span

    def bands(sizes, limit):
        """Bands of consecutive tile rows [a, b), closed once the sizes of their tile rows
        add up to ``limit`` or they would span more than ``cap`` image rows; yields
        (a, b, r0, r1, done): the band covers image rows r0:r1 and finishes rows r0:done
        (no later tile reaches them)."""
        a = 0
        while a < len(tops):
            b, size = a + 1, sizes[a]
            while b < len(tops) and size < limit and tops[b] + tile - tops[a] <= cap:
                size, b = size + sizes[b], b + 1
            yield a, b, tops[a], tops[b - 1] + tile, tops[b] if b < len(tops) else HP
            a = b

    # Pass 1, before anything is written: which tiles lose a value, the float range.
    lossy = np.zeros((len(tops), len(lefts)), dtype=bool)
    lo, hi = math.inf, -math.inf
    for a, b, r0, r1, _ in bands(np.zeros(len(tops), dtype=int), 1):
        values, observed = read(r0, r1)
        lossy[a:b] = _lossy_tiles(observed, tops[a:b] - r0, lefts, tile)
        if floats:  # the values as given (before rounding to float32)
            raw = _colour(arr[r0:r1], C)
            finite = raw[np.isfinite(raw)]
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if lo < 0 or hi > 1:
        raise _float_range_error(lo, hi)
    # Pass 2: impute band by band.
    out = _output(arr, out)
    colour = _colour(out, C)
    window = _window(tile, overlap)[:, :, None]
    device = next(model.parameters()).device
    windows_of = np.lib.stride_tricks.sliding_window_view
    bar = progress_bar(int(lossy.sum()), progress, "imputing tiles")
    carry_total = carry_weight = None  # sums of the rows left open by the previous band
    # Bands of about one batch of tiles that lose a value (fewer calls on sparse losses).
    for a, b, r0, r1, done in bands(lossy.sum(axis=1), batch_size):
        if not lossy[a:b].any():
            # nothing is lost in rows r0:r1, so the sums still open there cannot matter
            carry_total = carry_weight = None
            continue
        total = np.zeros((r1 - r0, WP, C), dtype=np.float32)  # Σ window · tile values
        weight = np.zeros((r1 - r0, WP, 1), dtype=np.float32)  # Σ window
        if carry_total is not None:
            total[:len(carry_total)] = carry_total
            weight[:len(carry_weight)] = carry_weight
        values, observed = read(r0, r1)
        x_tiles = windows_of(values, (tile, tile), axis=(0, 1))  # [r-T+1, WP-T+1, C, T, T]
        s_tiles = windows_of(observed, (tile, tile), axis=(0, 1))
        rows, cols = np.nonzero(lossy[a:b])
        corners = np.stack([tops[a:b][rows] - r0, lefts[cols]], axis=1)
        for start in range(0, len(corners), batch_size):
            group = corners[start:start + batch_size]
            xs = x_tiles[group[:, 0], group[:, 1]].reshape(len(group), -1)  # channel-major
            ss = s_tiles[group[:, 0], group[:, 1]].reshape(len(group), -1)
            imputed = model.impute(torch.as_tensor(xs, device=device),
                                   torch.as_tensor(ss, device=device), n_samples=n_samples,
                                   chunk_size=chunk_size).cpu().numpy()
            imputed = imputed.reshape(len(group), C, tile, tile).transpose(0, 2, 3, 1)
            for (t, l), v in zip(group, imputed):
                total[t:t + tile, l:l + tile] += v * window
                weight[t:t + tile, l:l + tile] += window
            bar.update(len(group))
        end = done - r0
        _write_lost(colour, r0, total[:end], weight[:end], observed[:end])
        carry_total, carry_weight = total[end:], weight[end:]
    bar.close()
    return out


def _write_lost(colour: np.ndarray, r0: int, total: np.ndarray, weight: np.ndarray,
                observed: np.ndarray) -> None:
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
    np.copyto(colour[r0:r0 + n], _from_float(blended, colour.dtype), where=lost)


def _impute_reference(model, arr, C, mask, clip_level, tile, overlap, n_samples, batch_size,
                      chunk_size, progress, out):
    """impute_image, reference path: the whole image at once (``batch_size`` unused)."""
    values, _ = as_float_image(arr)  # [H, W, C] float32
    out = _output(arr, out)
    H, W = values.shape[:2]
    observed = _observed(_colour(arr, C), mask, clip_level)
    work, obs = (_pad_to_tile(values, observed, tile) if H < tile or W < tile
                 else (values, observed))
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
            0, idx.reshape(-1), weighted.reshape(-1, C))
        weight = torch.zeros(HP * WP, device=device).index_add_(
            0, idx.reshape(-1), window.repeat(n))
        blended = (total / weight.clamp_min(1e-12)[:, None]).clamp_(0.0, 1.0)
        blended = blended.reshape(HP, WP, C)[:H, :W].cpu().numpy()
        np.copyto(_colour(out, C), _from_float(blended, out.dtype), where=~observed)
    bar.update(n)
    bar.close()
    return out
