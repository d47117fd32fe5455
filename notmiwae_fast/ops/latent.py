"""The reparameterised latent samples and their log-densities."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks, reference
from ._dispatch import RegisterFake, like, rows_of, use_kernels

__all__ = ["latent_terms"]


def latent_terms(mu: Tensor, std: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The reparameterised latent samples and their log-densities, in one pass.

    Args:
        mu, std: [B, L], the encoder's q(z | x) = N(mu, diag std²) (std > 0).
        eps: [B, K, L] standard normal noise.
    Returns:
        (z = mu + std · eps [B, K, L], log p(z) [B, K], log q(z | x) [B, K]), the
        log-densities summed over L (prior N(0, I)). Gradients flow to mu and std.
    """
    if use_kernels(mu):
        return torch.ops.notmiwae_fast.latent_terms(mu, std, eps)
    _checks.latent(mu, std, eps)
    return reference.latent_terms(mu, std, eps)


def register_fakes(fake: RegisterFake) -> None:
    """Registers the fake (meta) kernels of this family's operators: output shapes
    and dtypes, for torch.compile / torch.export / opcheck."""

    @fake("latent_terms")
    def _(mu, std, eps):
        _checks.latent(mu, std, eps)
        return like(eps), rows_of(eps), rows_of(eps)

    @fake("latent_terms_backward")
    def _(grad_z, grad_log_p, grad_log_q, mu, std, eps):
        _checks.latent(mu, std, eps)
        return like(mu), like(std)
