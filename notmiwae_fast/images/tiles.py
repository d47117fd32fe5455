"""Convolutional tile models: MIWAE / not-MIWAE on
``patch × patch`` tiles of C channels, flattened channel-major to D = C·patch² values in
[0, 1], with a learnt per-pixel self-masking process; trained on patches.

    model = image_model("notmiwae", channels=3)
    train_on_patches(model, photo_patches(photos, 32, 20000), clip_level=0.75)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._common import validate as _validate
from .._common.progress import progress_bar
from ..nn.missing import BaseMissingProcess
from ..nn.models import MIWAE, NotMIWAE
from ..nn.networks import BernoulliFamily, GaussianFamily
from ._arrays import as_float_image, clip_mask

IMAGE_MIN_SCALE = 0.02  # decoder scale floor on [0, 1] pixels (about 5 grey levels)


class ConvEncoder(nn.Module):
    """[B, C·P·P] -> (μ, σ) [B, L]: two stride-2 convolutions, then a linear layer."""

    def __init__(self, channels: int, patch: int, latent_dim: int, width: int = 32):
        super().__init__()
        if patch % 4:
            raise ValueError(f"argument 'patch' must be a multiple of 4; got {patch}")
        self.shape = (channels, patch, patch)
        self.conv = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1),
            nn.ELU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.ELU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width * (patch // 4) ** 2, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_var = self.head(self.conv(x.reshape(-1, *self.shape))).chunk(2, dim=-1)
        return mu, torch.exp(0.5 * log_var.clamp(-10.0, 10.0))


class _ConvTrunk(nn.Module):
    """z [..., L] -> [..., out_channels · P · P]: linear layer, two transposed convs."""

    def __init__(self, latent_dim: int, out_channels: int, patch: int, width: int = 32):
        super().__init__()
        self.side, self.width = patch // 4, width
        self.fc = nn.Linear(latent_dim, 2 * width * self.side**2)
        self.deconv = nn.Sequential(
            nn.ELU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.ELU(),
            nn.ConvTranspose2d(width, out_channels, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, 2 * self.width, self.side, self.side)
        out = self.deconv(h)  # [N, out_channels, P, P]
        return out.reshape(*lead, out.shape[1], -1)


class ConvGaussianDecoder(GaussianFamily, nn.Module):
    """p(x | z) = N(loc, scale) per pixel value; scale = softplus(raw) + min_scale."""

    def __init__(
        self,
        latent_dim: int,
        channels: int,
        patch: int,
        width: int = 32,
        min_scale: float = IMAGE_MIN_SCALE,
    ):
        super().__init__()
        self.channels, self.min_scale = channels, float(min_scale)
        self.trunk = _ConvTrunk(latent_dim, 2 * channels, patch, width)

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        """z [..., L] -> {"loc", "scale"}, each [..., C·P·P] (channel-major)."""
        out = self.trunk(z)  # [..., 2C, P·P]
        loc, raw = out[..., : self.channels, :], out[..., self.channels :, :]
        return {"loc": loc.flatten(-2), "scale": F.softplus(raw).flatten(-2) + self.min_scale}


class ConvBernoulliDecoder(BernoulliFamily, nn.Module):
    """p(x | z) = Bernoulli(σ(logits)) per pixel value (see BernoulliFamily)."""

    def __init__(
        self,
        latent_dim: int,
        channels: int,
        patch: int,
        width: int = 32,
        min_scale: float = IMAGE_MIN_SCALE,
    ):
        super().__init__()
        self.trunk = _ConvTrunk(latent_dim, channels, patch, width)

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        """z [..., L] -> {"logits"} [..., C·P·P] (channel-major)."""
        return {"logits": self.trunk(z).flatten(-2)}


class PixelSelfMasking(BaseMissingProcess):
    """ℓ = −sign · softplus(W) · (x − b) per pixel value, with one (W, b) pair for all
    pixels (``per_channel=False``) or one per channel; sign +1: bright values go missing
    (clipping), −1: dark values go missing."""

    def __init__(
        self,
        channels: int,
        patch: int,
        per_channel: bool = False,
        sign: float = 1.0,
        threshold: float = 0.5,
        strength: float = 50.0,
    ):
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
        """(W, b), each [D] (D = C·P·P): the logits of p(s = 1 | x) are −W · (x − b)."""
        return self._per_value(self.sign * F.softplus(self.W)), self._per_value(self.b)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of p(s = 1 | x): [..., D] -> [..., D]."""
        slope, b = self.selfmask_params()
        return -slope * (x - b)

    def interpret(
        self, verbose: bool = False, mean: Optional[Tensor] = None, std: Optional[Tensor] = None
    ) -> dict:
        """The learnt process: {"process_type", "slope", "threshold"} (one value per
        channel, or one shared); ``mean``, ``std`` are unused (pixels are not
        standardised)."""
        slope = (self.sign * F.softplus(self.W)).detach().cpu()
        result = {
            "process_type": type(self).__name__,
            "slope": slope.tolist(),
            "threshold": self.b.detach().cpu().tolist(),
        }
        if verbose:
            print(f"missing above {result['threshold']} (slope {result['slope']})")
        return result


def image_model(
    kind: str = "notmiwae",
    channels: int = 3,
    patch: int = 32,
    latent_dim: int = 32,
    n_samples: int = 20,
    out_dist: str = "gauss",
    per_channel: bool = False,
    sign: float = 1.0,
    width: int = 32,
    min_scale: float = IMAGE_MIN_SCALE,
    backend: str = "fused",
) -> MIWAE | NotMIWAE:
    """A MIWAE or NotMIWAE with convolutional networks for C × patch × patch patches,
    flattened channel-major (x, s: [B, C·patch²]); ``model.image_shape`` is (C, patch,
    patch).

    Args:
        kind: ``"notmiwae"`` (with :class:`PixelSelfMasking`) or ``"miwae"``.
        out_dist: ``"gauss"`` or ``"bern"``.
        per_channel: one missing-process pair per channel instead of one shared.
        sign: +1 when bright values go missing (clipping), −1 for dark ones.
    """
    decoders = {"gauss": ConvGaussianDecoder, "bern": ConvBernoulliDecoder}
    if out_dist not in decoders:
        raise ValueError(
            f"argument 'out_dist' must be one of 'gauss', 'bern' for images; got {out_dist!r}"
        )
    D = channels * patch * patch
    nets = dict(
        encoder=ConvEncoder(channels, patch, latent_dim, width),
        decoder=decoders[out_dist](latent_dim, channels, patch, width, min_scale),
    )
    common = dict(
        latent_dim=latent_dim,
        hidden_dim=1,
        n_samples=n_samples,
        out_dist=out_dist,
        backend=backend,
        **nets,
    )
    if kind == "miwae":
        model = MIWAE(D, **common)
    elif kind == "notmiwae":
        model = NotMIWAE(
            D, missing_process=PixelSelfMasking(channels, patch, per_channel, sign), **common
        )
    else:
        raise ValueError(f"argument 'kind' must be 'notmiwae' or 'miwae'; got {kind!r}")
    model.image_shape = (channels, patch, patch)
    model.image_config = dict(
        kind=kind,
        channels=channels,
        patch=patch,
        latent_dim=latent_dim,
        n_samples=n_samples,
        out_dist=out_dist,
        per_channel=per_channel,
        sign=sign,
        width=width,
        min_scale=min_scale,
    )
    return model


def photo_patches(photos: Sequence[np.ndarray], patch: int, n: int, seed: int = 0) -> np.ndarray:
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
            raise ValueError(
                f"argument 'patch' ({patch}) is larger than photo {i} of "
                f"'photos' ({values.shape[0]} × {values.shape[1]} pixels)"
            )
        if converted and values.shape[2] != converted[0].shape[2]:
            raise ValueError(
                f"argument 'photos': photo {i} has {values.shape[2]} colour "
                f"channel(s), photo 0 has {converted[0].shape[2]}"
            )
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
        out[i] = photo[top : top + patch, left : left + patch].transpose(2, 0, 1).reshape(-1)
    return out


def train_on_patches(
    model: MIWAE | NotMIWAE,
    patches: np.ndarray,
    clip_level: float = 0.75,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 1e-3,
    progress: bool = True,
) -> list[float]:
    """Trains a tile model (:func:`image_model`) on ``patches`` [n, C·patch²] (from
    :func:`photo_patches`) with the values ≥ clip_level removed, ``steps`` batches of
    ``batch_size`` patches (reshuffled each pass); returns the ``steps`` losses. Each
    step is :meth:`Trainer.train_step <notmiwae_fast.train.trainer.Trainer.train_step>`."""
    from ..train.trainer import Trainer

    steps = _validate.positive_int(steps, "steps")
    batch_size = _validate.positive_int(batch_size, "batch_size")
    patches = np.asarray(patches)
    D = math.prod(getattr(model, "image_shape", (patches.shape[-1],)))
    if patches.ndim != 2 or len(patches) == 0 or patches.shape[1] != D:
        raise ValueError(
            f"argument 'patches' must be [n, {D}] (the model's C·patch²) with "
            f"n >= 1; got shape {list(patches.shape)}"
        )
    x = torch.as_tensor(patches, dtype=next(model.parameters()).dtype)
    s = torch.as_tensor(clip_mask(patches, clip_level))
    # Fewer patches than a batch: one smaller batch (drop_last would leave none).
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x * s, s),
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(patches) > batch_size,
    )
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
