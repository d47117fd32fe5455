"""The whole importance-weighted bound of a Gaussian-decoder model, and its
gradients in the same call."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _checks, reference
from ._dispatch import RegisterFake, like, rows_of, use_kernels

__all__ = ["gauss_bound", "gauss_bound_grads"]


def gauss_bound(
    x: Tensor,
    mask: Tensor,
    eps_z: Tensor,
    eps_x: Optional[Tensor],
    enc_weights: list[Tensor],
    enc_biases: list[Tensor],
    dec_weights: list[Tensor],
    dec_biases: list[Tensor],
    W: Optional[Tensor],
    b: Optional[Tensor],
    min_scale: float,
) -> tuple[Tensor, ...]:
    """The whole importance-weighted bound of a Gaussian-decoder MIWAE (``W = b = None``)
    or self-masking not-MIWAE in one operator: encoder, latent samples, decoder, scale,
    likelihoods and log-mean-exp, composed in C++ of the other operators (no Python or
    autograd node between them; the backward is their backward operators chained).

    Args:
        x: [B, D] zero-filled data. mask: [B, D], 1 = observed, x's dtype.
        eps_z: [B, K, L] and eps_x: [B, K, D] (None for MIWAE) standard-normal noise.
        enc_weights, enc_biases: the encoder MLP's layers (nn.Linear layout; last layer
            2L outputs: mean, then log-variance, clamped to ±10).
        dec_weights, dec_biases: the decoder MLP's layers (last layer 2D outputs: loc,
            then the raw scale, scale = softplus(raw) + min_scale).
        W, b: [D] self-masking parameters (logits −W (x̂ − b)), or None.
    Returns:
        (bound [B], log_w [B, K], log p(x°|z), log p(s|x̂) (zeros for MIWAE), log p(z),
        log q(z|x)), the last four [B, K]. Gradients flow to the weights, biases, W and b.
    """
    return _call(
        "gauss_bound",
        x,
        mask,
        eps_z,
        eps_x,
        enc_weights,
        enc_biases,
        dec_weights,
        dec_biases,
        W,
        b,
        min_scale,
    )


def gauss_bound_grads(
    x: Tensor,
    mask: Tensor,
    eps_z: Tensor,
    eps_x: Optional[Tensor],
    enc_weights: list[Tensor],
    enc_biases: list[Tensor],
    dec_weights: list[Tensor],
    dec_biases: list[Tensor],
    W: Optional[Tensor],
    b: Optional[Tensor],
    min_scale: float,
) -> tuple:
    """:func:`gauss_bound` and, in the same call, the gradients of the models' loss
    −mean(bound) with respect to the parameters, without building an autograd graph (a
    training step's forward and backward; :class:`~notmiwae_fast.Trainer` uses it).

    Arguments as :func:`gauss_bound`. Returns its six results (plain tensors) and the
    list of gradients of enc_weights, enc_biases, dec_weights, dec_biases (each list in
    order), then of W and b when they are given, each of its parameter's shape.
    """
    return _call(
        "gauss_bound_grads",
        x,
        mask,
        eps_z,
        eps_x,
        enc_weights,
        enc_biases,
        dec_weights,
        dec_biases,
        W,
        b,
        min_scale,
    )


def _call(
    name: str,
    x: Tensor,
    mask: Tensor,
    eps_z: Tensor,
    eps_x: Optional[Tensor],
    enc_weights: list[Tensor],
    enc_biases: list[Tensor],
    dec_weights: list[Tensor],
    dec_biases: list[Tensor],
    W: Optional[Tensor],
    b: Optional[Tensor],
    min_scale: float,
) -> tuple:
    """The operator ``name`` where the kernels serve ``x``, else its checked reference twin
    (both operators take the same arguments and have the same checks)."""
    layers = (list(enc_weights), list(enc_biases), list(dec_weights), list(dec_biases))
    if use_kernels(x):
        op = getattr(torch.ops.notmiwae_fast, name)
        return op(x, mask, eps_z, eps_x, *layers, W, b, float(min_scale))
    _checks.gauss_bound(x, mask, eps_z, eps_x, *layers, W, b)
    return getattr(reference, name)(x, mask, eps_z, eps_x, *layers, W, b, min_scale)


def register_fakes(fake: RegisterFake) -> None:
    """Registers the fake (meta) kernels of this family's operators: output shapes
    and dtypes, for torch.compile / torch.export / opcheck."""

    @fake("gauss_bound")
    def bound(
        x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights, dec_biases, W, b, min_scale
    ):
        _checks.gauss_bound(
            x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights, dec_biases, W, b
        )
        return (x.new_empty(x.shape[:1]),) + tuple(rows_of(eps_z) for _ in range(5))

    @fake("gauss_bound_grads")
    def _(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights, dec_biases, W, b, min_scale):
        results = bound(
            x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights, dec_biases, W, b, min_scale
        )
        params = [*enc_weights, *enc_biases, *dec_weights, *dec_biases]
        params += [W, b] if W is not None else []
        return results + ([like(p) for p in params],)
