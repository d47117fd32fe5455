"""Clipped pixels: the clipped-pixel model's imputation in one streaming pass."""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference
from ._dispatch import RegisterFake, use_kernels

__all__ = ["clipped_impute"]


def clipped_impute(
    x: Tensor,
    lost: Tensor,
    context: Tensor,
    mu: Tensor,
    std: Tensor,
    eps: Tensor,
    w_latent: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    clip: float,
    min_scale: float,
    censored: bool = True,
) -> Tensor:
    """The clipped-pixel model's imputation in one streaming pass over the K draws.

    Shapes: x, lost [N, C] (lost bool); context [N, H]; mu, std [N, L]; eps [K, L];
    w_latent [H, L]; w_out [2C, H]; b_out [2C]. Returns [N, C]. Inference only (no
    gradient). See :func:`notmiwae_fast.reference.clipped_impute`.
    """
    if use_kernels(x):
        return torch.ops.notmiwae_fast.clipped_impute(
            x,
            lost,
            context,
            mu,
            std,
            eps,
            w_latent,
            w_out,
            b_out,
            float(clip),
            float(min_scale),
            bool(censored),
        )
    return reference.clipped_impute(
        x, lost, context, mu, std, eps, w_latent, w_out, b_out, clip, min_scale, censored
    )


def register_fakes(fake: RegisterFake) -> None:
    """Registers the fake (meta) kernels of this family's operators: output shapes
    and dtypes, for torch.compile / torch.export / opcheck."""

    @fake("clipped_impute")
    def _(x, lost, context, mu, std, eps, w_latent, w_out, b_out, clip, min_scale, censored):
        if x.dim() != 2 or lost.shape != x.shape or lost.dtype != torch.bool:
            raise ValueError("notmiwae_fast: arguments 'x' and 'lost' must be [N, C], 'lost' bool")
        return torch.empty_like(x)
