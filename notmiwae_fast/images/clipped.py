"""The clipped-pixel model: not-MIWAE per pixel, with the clipping process known.

A photograph loses every value at or above the clip level c (sensor clipping): a
self-masking missing process whose direction and threshold are known, p(s = 0 | x) =
1[x ≥ c]. :class:`ClippedPixelModel` is a not-MIWAE over one pixel's C values x,
conditioned on features h of the pixel's neighbourhood (without the pixel) and of the
image (:mod:`._context`):

* prior z ~ N(0, I_L); encoder q(z | x̃, s, h) (x̃: x with lost values set to c);
* decoder: y | z, h ~ N(loc, scale²) per channel, x = clip(y, 0, 1): the Gaussian is
  censored at both ends, so a value of exactly 0 or 1 (common in photographs, which
  saturate) has probability mass;
* the missing process integrated in closed form: a lost value contributes
  log P(y ≥ c | z, h) to the importance weights, an observed one its density — the
  not-MIWAE bound with p(s | x) = 1[x < c], with no sampling of the lost values.

Imputation: E[x_lost | x_obs, s, h] ≈ Σ_k w_k E[min(y, 1) | y ≥ c, z_k, h], with
self-normalised weights w_k from K samples z_k ~ q; each term lies in [c, 1], so every
imputed value does. ``kind="miwae"`` drops the lost values' terms (the data treated as
missing at random) and imputes Σ_k w_k loc_k, as MIWAE would.

Shapes: x, lost [N, C]; h [N, F]; z [K, N, L]; per-sample loc, scale [K, N, C].
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from .._common import validate as _validate
from .._common.progress import progress_bar
from ..ops import reference
from ._context import RADII, finish_statistics, image_statistics, n_features, pixel_features

__all__ = ["ClippedPixelModel", "train_clipped", "training_pixels", "KINDS"]

KINDS = ("notmiwae", "miwae")


class ClippedPixelModel(nn.Module):
    """not-MIWAE (or MIWAE) for the clipped values of one pixel, given its context.

    Args:
        channels: C, 1 (grey) or 3 (RGB).
        kind: ``"notmiwae"`` (the clipping process in the model) or ``"miwae"``.
        latent_dim: L.
        hidden: width of the encoder's two tanh layers.
        decoder_hidden: width of the decoder's ReLU layer.
        min_scale: floor of the decoder's scale (values in [0, 1]).
        radii: neighbourhood radii of the context features.
    """

    def __init__(
        self,
        channels: int = 3,
        kind: str = "notmiwae",
        latent_dim: int = 2,
        hidden: int = 32,
        decoder_hidden: int = 64,
        min_scale: float = 0.01,
        radii: Sequence[int] = RADII,
    ):
        super().__init__()
        self.channels = _validate.positive_int(channels, "channels")
        self.kind = _validate.choice(kind, "kind", KINDS)
        self.latent_dim = _validate.positive_int(latent_dim, "latent_dim")
        self.radii = tuple(int(r) for r in radii)
        if not self.radii or min(self.radii) < 1:
            raise ValueError(f"argument 'radii' must be positive ints; got {radii!r}")
        self.min_scale = float(min_scale)
        C, L, Fd = self.channels, self.latent_dim, n_features(self.channels, self.radii)
        self.n_features = Fd
        self.encoder = nn.Sequential(
            nn.Linear(2 * C + Fd, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 2 * L),
        )
        # decoder: relu(W_h h + W_z z + b) -> (loc, raw scale); W_h h is computed once
        # per pixel, W_z z per sample.
        self.decoder_context = nn.Linear(Fd, decoder_hidden)
        self.decoder_latent = nn.Linear(L, decoder_hidden, bias=False)
        self.decoder_out = nn.Linear(decoder_hidden, 2 * C)
        self.config = dict(
            channels=C,
            kind=kind,
            latent_dim=L,
            hidden=hidden,
            decoder_hidden=decoder_hidden,
            min_scale=self.min_scale,
            radii=list(self.radii),
        )

    def _posterior(
        self, x: Tensor, lost: Tensor, h: Tensor, clip, fused: bool = False
    ) -> tuple[Tensor, Tensor]:
        """q(z | x̃, s, h): (mean, std), each [N, L]; ``clip`` a number or [N, 1].
        ``fused``: the encoder through the fused ``mlp_tanh`` (imputation), else its
        nn.Linear layers (training)."""
        C = self.channels
        inputs = torch.empty(len(x), 2 * C + h.shape[1], dtype=x.dtype, device=x.device)
        inputs[:, :C] = torch.where(lost, clip, x)  # x̃: what the clipped photograph shows
        inputs[:, C : 2 * C] = lost
        inputs[:, 2 * C :] = h
        if fused:
            layers = [m for m in self.encoder if isinstance(m, nn.Linear)]
            out = ops.mlp_tanh(inputs, [m.weight for m in layers], [m.bias for m in layers])
        else:
            out = self.encoder(inputs)
        mu, log_var = out.chunk(2, -1)
        return mu, torch.exp(0.5 * log_var.clamp(-10.0, 10.0))

    def _decode(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """(loc, scale) [K, N, C] of y given z [K, N, L] and W_h h + b [N, H]."""
        out = self.decoder_out(torch.relu(context + self.decoder_latent(z)))
        loc, raw = out.chunk(2, -1)
        return loc, F.softplus(raw) + self.min_scale

    def log_weights(
        self,
        x: Tensor,
        lost: Tensor,
        h: Tensor,
        clip: Tensor,
        eps: Tensor,
        censor: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Importance log-weights [K, N] and the decoder's (loc, scale) [K, N, C].

        Args:
            x, lost: [N, C] values in [0, 1] and which are lost (≥ clip).
            h: [N, F] context features; clip: [N, 1] clip levels.
            eps: [K, N, L] (or [K, 1, L], shared by the pixels) standard normal draws.
            censor: [N, C] the values whose likelihood term is P(y ≥ clip) (default:
                ``lost``; all False trains on complete data, whose lost values are known).
        """
        mu, std = self._posterior(x, lost, h, clip)
        z = mu + std * eps
        loc, scale = self._decode(z, self.decoder_context(h))
        log_w = reference.clipped_log_weights(
            x, lost, loc, scale, z, eps, std, clip, self.kind == "notmiwae", censor
        )
        return log_w, loc, scale

    def loss(
        self,
        x: Tensor,
        lost: Tensor,
        h: Tensor,
        clip: Tensor,
        n_samples: int = 8,
        censor: Optional[Tensor] = None,
    ) -> Tensor:
        """Minus the importance-weighted bound with K = ``n_samples`` draws, averaged over
        the N pixels: a scalar. Arguments as :meth:`log_weights` (x, lost [N, C]; h [N, F];
        clip [N, 1]; censor [N, C] or None)."""
        eps = torch.randn(n_samples, *x.shape[:-1], self.latent_dim, dtype=x.dtype, device=x.device)
        log_w, _, _ = self.log_weights(x, lost, h, clip, eps, censor)
        return -(torch.logsumexp(log_w, 0) - math.log(n_samples)).mean()

    @torch.no_grad()
    def impute_pixels(
        self,
        x: Tensor,
        lost: Tensor,
        h: Tensor,
        clip: float,
        n_samples: int = 10,
        eps: Optional[Tensor] = None,
    ) -> Tensor:
        """[N, C]: x with its lost values imputed (observed ones as they are), from K =
        ``n_samples`` draws shared by the N pixels (the fused ``clipped_impute``), or the
        draws ``eps`` [K, L] given (an image passes the same draws to all its chunks, so
        the imputation has no seams between them)."""
        mu, std = self._posterior(x, lost, h, float(clip), fused=True)
        if eps is None:
            eps = torch.randn(n_samples, self.latent_dim, dtype=x.dtype, device=x.device)
        return ops.clipped_impute(
            x,
            lost,
            self.decoder_context(h),
            mu,
            std,
            eps,
            self.decoder_latent.weight,
            self.decoder_out.weight,
            self.decoder_out.bias,
            float(clip),
            self.min_scale,
            self.kind == "notmiwae",
        )


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------
def training_pixels(
    photos: Sequence[np.ndarray],
    clip_levels: Sequence[float],
    gains: Sequence[float] = (1.0,),
    per_image: int = 40_000,
    radii: Sequence[int] = RADII,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixels of clipped photographs to train on: (x, lost, h) tensors [N, C] float32,
    [N, C] bool, [N, F] float32 (h's last feature is the pixel's clip level), N =
    ``per_image`` · photographs · gains · clip levels.

    Each photograph (float [H, W, C] in [0, 1]) is brightened by each gain (values
    above 1 saturate at 1, as an over-exposed photograph does), then clipped at each
    clip level; ``per_image`` pixels are drawn from each version: 80 % among pixels
    with a lost value within 9 pixels (chosen on the neighbourhood alone, so the
    conditional p(x | h) is not biased), 20 % anywhere.
    """
    rng = np.random.default_rng(seed)
    xs, losts, hs = [], [], []
    for photo in photos:
        for gain in gains:
            img = np.minimum(photo * gain, 1.0).astype(np.float32)
            H, W, C = img.shape
            for c in clip_levels:
                lost = img >= c
                stats = finish_statistics(image_statistics(img, lost), H * W, c)
                near = _near_lost(lost.any(axis=2), 9).ravel()
                candidates = np.flatnonzero(near)
                n_near = int(0.8 * per_image) if candidates.size else 0
                pick = np.concatenate(
                    [
                        rng.choice(candidates, n_near) if n_near else np.zeros(0, dtype=np.int64),
                        rng.integers(H * W, size=per_image - n_near),
                    ]
                )
                rows, cols = np.divmod(pick, W)
                xs.append(img[rows, cols])
                losts.append(lost[rows, cols])
                hs.append(pixel_features(img, lost, rows, cols, stats, c, radii))
    return (
        torch.as_tensor(np.concatenate(xs)),
        torch.as_tensor(np.concatenate(losts)),
        torch.as_tensor(np.concatenate(hs)),
    )


def _near_lost(any_lost: np.ndarray, radius: int) -> np.ndarray:
    """[H, W] bool: a lost pixel within ``radius`` (box), the pixel itself left out."""
    a = np.pad(any_lost.astype(np.int32), radius + 1)
    s = a.cumsum(0).cumsum(1)
    k = 2 * radius + 1
    H, W = any_lost.shape
    box = s[k : k + H, k : k + W] - s[:H, k : k + W] - s[k : k + H, :W] + s[:H, :W]
    return box - any_lost > 0


def train_clipped(
    model: ClippedPixelModel,
    pixels: tuple[Tensor, Tensor, Tensor],
    steps: int = 3000,
    batch_size: int = 1024,
    n_samples: int = 8,
    lr: float = 1e-3,
    complete: bool = False,
    progress: bool = True,
    generator: Optional[torch.Generator] = None,
) -> list[float]:
    """Trains ``model`` on pixels from :func:`training_pixels` (x [N, C], lost [N, C],
    h [N, F]; the clip levels are h's last column) with Adam, ``steps`` batches of
    ``batch_size`` pixels drawn with replacement (from ``generator``); returns the
    ``steps`` losses. The model is left in eval mode.

    ``complete=False`` (the not-MIWAE setting) learns from the clipped data alone: a
    lost value's term is P(y ≥ c). ``complete=True`` learns from photographs whose lost
    values are known (their true values are the targets; the context stays clipped).
    """
    steps = _validate.positive_int(steps, "steps")
    batch_size = _validate.positive_int(batch_size, "batch_size")
    x, lost, h = pixels
    if len(x) == 0:
        raise ValueError("argument 'pixels' holds no pixel")
    # The pixels (CPU tensors from training_pixels) go where the model is, once.
    device = next(model.parameters()).device
    x, lost, h = x.to(device), lost.to(device), h.to(device)
    clip = h[:, -1:]
    # Its own steps with torch.optim.Adam rather than Trainer.train_step: the Trainer's
    # fused Adam rounds differently, and the bundled models (benchmarks/image_clipping.py
    # --bundle) are reproduced for a seed with this optimizer only.
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    bar = progress_bar(steps, progress, "training")
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (batch_size,), generator=generator)
        censor = torch.zeros_like(lost[idx]) if complete else None
        loss = model.loss(x[idx], lost[idx], h[idx], clip[idx], n_samples, censor)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.update(1)
    bar.close()
    model.eval()
    return losses
