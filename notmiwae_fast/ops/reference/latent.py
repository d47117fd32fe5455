"""The pure-PyTorch twin of latent_terms: the reparameterised latent samples and their
log-densities."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["latent_terms"]


def latent_terms(mu: Tensor, std: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """z = mu + std · eps and its log-densities under the prior and the encoder.

    Args:
        mu, std: [B, L] the encoder's q(z | x) = N(mu, diag std²). eps: [B, K, L] standard
            normal noise.
    Returns:
        (z [B, K, L], log p(z) [B, K] = Σ_l log N(z; 0, 1), log q(z | x) [B, K] =
        Σ_l log N(z; mu, std)). Gradients flow to mu and std, not to eps.
    """
    eps = eps.detach()
    z = mu.unsqueeze(1) + std.unsqueeze(1) * eps
    constant = 0.5 * mu.shape[-1] * math.log(2 * math.pi)
    log_p = -0.5 * (z * z).sum(-1) - constant
    log_q = (-0.5 * (eps * eps) - torch.log(std).unsqueeze(1)).sum(-1) - constant
    return z, log_p, log_q
