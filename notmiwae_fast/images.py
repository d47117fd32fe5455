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
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != "notmiwae_fast.image_model/1":
        raise ValueError(f"{path} is not an image model written by save_image_model")
    model = image_model(backend=backend, **state["config"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
def as_float_image(image) -> tuple[np.ndarray, dict]:
    """An image as float32 [H, W, C] in [0, 1], and what is needed to give it back.

    Accepts [H, W] (grey) or [H, W, C] arrays of uint8, uint16 or floats in [0, 1]. An
    alpha channel (C = 2 or 4) is set aside and given back unchanged."""
    arr = np.asarray(image)
    info = {"dtype": arr.dtype, "ndim": arr.ndim, "alpha": None}
    if arr.ndim not in (2, 3):
        raise ValueError(f"argument 'image' must be [H, W] or [H, W, C]; got shape {arr.shape}")
    if arr.dtype == np.uint8:
        scaled = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        scaled = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        scaled = arr.astype(np.float32)
        finite = scaled[np.isfinite(scaled)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise ValueError("argument 'image': float images must hold values in [0, 1]; "
                             f"got [{finite.min():.3g}, {finite.max():.3g}]")
    else:
        raise ValueError(f"argument 'image' must be uint8, uint16 or float; got {arr.dtype}")
    if scaled.ndim == 2:
        scaled = scaled[:, :, None]
    if scaled.shape[2] in (2, 4):
        info["alpha"] = arr[..., -1].copy()
        scaled = scaled[..., :-1]
    return scaled, info


def _restore(image: np.ndarray, info: dict) -> np.ndarray:
    """The inverse of as_float_image's conversion."""
    out = image
    if info["dtype"] == np.uint8:
        out = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    elif info["dtype"] == np.uint16:
        out = np.clip(np.rint(out * 65535.0), 0, 65535).astype(np.uint16)
    else:
        out = out.astype(info["dtype"])
    if info["alpha"] is not None:
        out = np.concatenate([out, info["alpha"][..., None].astype(out.dtype)], axis=2)
    elif info["ndim"] == 2:
        out = out[:, :, 0]
    return out


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
    """n random patch × patch crops from float [H, W, C] photos -> [n, C·patch²] float32,
    channel-major (the layout of the image models)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, photos[0].shape[2] * patch * patch), dtype=np.float32)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - patch + 1)
        left = rng.integers(photo.shape[1] - patch + 1)
        out[i] = photo[top:top + patch, left:left + patch].transpose(2, 0, 1).reshape(-1)
    return out


def clip_mask(x: np.ndarray, clip_level: float) -> np.ndarray:
    """1 where a value is observed (below the clip level), 0 where it is lost."""
    return (x < clip_level).astype(np.float32)


def train_on_patches(model, patches: np.ndarray, clip_level: float = 0.75, steps: int = 2000,
                     batch_size: int = 32, lr: float = 1e-3, progress: bool = True) -> list:
    """Trains ``model`` on patches with the values ≥ clip_level removed; returns the
    losses. (A thin loop over :class:`notmiwae_fast.Trainer`'s step.)"""
    from .trainer import Trainer

    x = torch.as_tensor(patches)
    s = torch.as_tensor(clip_mask(patches, clip_level))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x * s, s),
                                         batch_size=batch_size, shuffle=True, drop_last=True)
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
def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, max(1, length - tile + 1), stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _window(tile: int, overlap: int) -> np.ndarray:
    """Blending weights of a tile: 1 inside, a raised-cosine ramp over the overlap."""
    w = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        w[:overlap] = ramp
        w[-overlap:] = ramp[::-1]
    return np.outer(w, w)


def impute_image(model, image, mask=None, clip_level: Optional[float] = 0.75,
                 tile: Optional[int] = None, overlap: Optional[int] = None,
                 n_samples: int = 20,
                 batch_size: int = 64, chunk_size: Optional[int] = None,
                 progress: bool = True):
    """Imputes the lost pixels of an image of any size, tile by tile.

    Args:
        model: an image model (:func:`image_model`), trained.
        image: [H, W] or [H, W, C] uint8, uint16 or float in [0, 1]; an alpha channel is
            kept as it is. Channels must match the model's.
        mask: [H, W] or [H, W, C], 1 (True) = observed, 0 = lost; default: derived from
            ``clip_level`` (values ≥ clip_level are lost).
        tile: tile side (default and required: the model's patch size).
        overlap: pixels shared by neighbouring tiles, blended with a raised cosine
            (default: a quarter of the tile).
        n_samples: importance samples per tile; streamed in chunks (``chunk_size``).
        batch_size: tiles imputed together.
    Returns:
        the image with the lost values imputed, in the input's dtype and layout;
        observed values unchanged. Memory: the image, two float32 accumulators of its
        size, and one batch of tiles.
    """
    c, patch, _ = model.image_shape
    tile = patch if tile is None else tile
    if tile != patch:
        raise ValueError(f"argument 'tile' must be the model's patch size {patch}; got {tile}")
    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"argument 'overlap' must be in [0, {tile // 2}]; got {overlap}")
    img, info = as_float_image(image)
    H, W, C = img.shape
    if C != c:
        raise ValueError(f"argument 'image' has {C} colour channel(s); the model was trained "
                         f"on {c} ({'grey' if c == 1 else 'RGB'} images)")
    if mask is None:
        if clip_level is None:
            raise ValueError("give a 'mask' or a 'clip_level'")
        observed = img < clip_level
    else:
        observed = np.asarray(mask).astype(bool)
        if observed.shape == (H, W):
            observed = np.repeat(observed[:, :, None], C, axis=2)
        if observed.shape != (H, W, C):
            raise ValueError(f"argument 'mask' must have shape [{H}, {W}] or [{H}, {W}, {C}]; "
                             f"got {list(np.asarray(mask).shape)}")
    observed &= np.isfinite(img)
    # An image smaller than a tile is padded (reflect) to one tile and cropped back.
    ph, pw = max(0, tile - H), max(0, tile - W)
    if ph or pw:
        mode = "reflect" if min(H, W) > 1 else "edge"
        work = np.pad(np.where(observed, img, 0.0), ((0, ph), (0, pw), (0, 0)), mode=mode)
        obs = np.pad(observed, ((0, ph), (0, pw), (0, 0)), mode="edge")
    else:  # no copies: values at lost entries (even NaN) are masked by the model
        work, obs = img, observed
    HP, WP = work.shape[:2]
    stride = tile - overlap
    corners = [(t, l) for t in _tile_starts(HP, tile, stride) for l in _tile_starts(WP, tile, stride)]
    window = _window(tile, overlap)[:, :, None]
    total = np.zeros((HP, WP, C), dtype=np.float32)  # Σ window · imputed tile values
    weight = np.zeros((HP, WP, 1), dtype=np.float32)  # Σ window
    device = next(model.parameters()).device

    def tile_of(a: np.ndarray, t: int, l: int) -> np.ndarray:
        return a[t:t + tile, l:l + tile].transpose(2, 0, 1).reshape(-1)

    def accumulate(t: int, l: int, values: np.ndarray) -> None:
        total[t:t + tile, l:l + tile] += values.reshape(C, tile, tile).transpose(1, 2, 0) * window
        weight[t:t + tile, l:l + tile] += window

    # Only lost entries take blended values: tiles with nothing lost are skipped.
    lossy = [(t, l) for t, l in corners if not obs[t:t + tile, l:l + tile].all()]
    bar = progress_bar(len(lossy), progress, "imputing tiles")
    for start in range(0, len(lossy), batch_size):
        group = lossy[start:start + batch_size]
        xs = np.stack([tile_of(work, t, l) for t, l in group])
        ss = np.stack([tile_of(obs, t, l) for t, l in group]).astype(np.float32)
        out = model.impute(torch.as_tensor(xs, device=device), torch.as_tensor(ss, device=device),
                           n_samples=n_samples, chunk_size=chunk_size).cpu().numpy()
        for (t, l), row in zip(group, out):
            accumulate(t, l, row)
        bar.update(len(group))
    bar.close()
    np.divide(total, np.maximum(weight, 1e-12), out=total)
    np.clip(total, 0.0, 1.0, out=total)
    np.copyto(img, total[:H, :W], where=~observed)  # img is this function's own copy
    return _restore(img, info)
