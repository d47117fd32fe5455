"""The models' bound in one operator: :func:`notmiwae_fast.ops.gauss_bound` computes the
whole importance-weighted bound of a model with the standard MLP encoder and Gaussian
decoder (MIWAE, or not-MIWAE with a self-masking process), and
:func:`~notmiwae_fast.ops.gauss_bound_grads` its gradients in the same call (a training
step without an autograd graph). Here: when that applies, and its arguments and
results in the models' terms.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ._types import Decoder
from .networks import MLP, Encoder, GaussianDecoder

# The arguments of ops.gauss_bound and ops.gauss_bound_grads: x, mask, eps_z, eps_x,
# enc_weights, enc_biases, dec_weights, dec_biases, W, b, min_scale.
Arguments = tuple[
    Tensor,
    Tensor,
    Tensor,
    Optional[Tensor],
    list[Tensor],
    list[Tensor],
    list[Tensor],
    list[Tensor],
    Optional[Tensor],
    Optional[Tensor],
    float,
]


def standard_networks(encoder: nn.Module, decoder: Decoder) -> Optional[tuple[MLP, MLP, float]]:
    """(encoder MLP, decoder MLP, the decoder's min_scale) when the networks are exactly
    :class:`Encoder` and a non-PPCA :class:`GaussianDecoder` on :class:`MLP` s, the
    networks gauss_bound is made of; None otherwise (subclasses included)."""
    if type(encoder) is not Encoder or type(encoder.net) is not MLP:
        return None
    if type(decoder) is not GaussianDecoder or decoder.ppca or type(decoder.net) is not MLP:
        return None
    return encoder.net, decoder.net, decoder.min_scale


def arguments(
    x0: Tensor,
    s: Tensor,
    k: int,
    latent_dim: int,
    nets: tuple[MLP, MLP, float],
    selfmask: Optional[tuple[Tensor, Tensor]],
) -> Arguments:
    """gauss_bound's arguments for K = k samples of the rows x0 [B, D] (mask s): the same
    noise, drawn in the same order, as the models' step-by-step path (so every path
    gives the same numbers for the same seed)."""
    encoder_net, decoder_net, min_scale = nets
    B, D = x0.shape
    eps_z = torch.randn(B, k, latent_dim, dtype=x0.dtype, device=x0.device)
    eps_x = torch.randn(B, k, D, dtype=x0.dtype, device=x0.device) if selfmask is not None else None
    enc_w, enc_b = encoder_net.layer_parameters()
    dec_w, dec_b = decoder_net.layer_parameters()
    W, b = selfmask if selfmask is not None else (None, None)
    return (x0, s, eps_z, eps_x, enc_w, enc_b, dec_w, dec_b, W, b, min_scale)


def parameters(args: Arguments) -> list[Tensor]:
    """The tensors gauss_bound_grads gives the gradients of, in its order: the encoder's
    and the decoder's weights and biases, then W and b when given."""
    _, _, _, _, enc_w, enc_b, dec_w, dec_b, W, b, _ = args
    selfmask = [W, b] if W is not None and b is not None else []
    return [*enc_w, *enc_b, *dec_w, *dec_b, *selfmask]


def terms(
    results: Sequence[Tensor], selfmask: Optional[tuple[Tensor, Tensor]]
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """gauss_bound's six results as (the models' terms, log_w [B, K], bound [B]); without
    a self-masking process there is no log p(s | x̂) term."""
    bound, log_w, log_px, log_ps, log_pz, log_qz = results
    out = {"log_p_x_given_z": log_px, "log_p_z": log_pz, "log_q_z_given_x": log_qz}
    if selfmask is not None:
        out["log_p_s_given_x"] = log_ps
    return out, log_w, bound
