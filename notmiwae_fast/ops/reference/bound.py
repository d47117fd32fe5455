"""The pure-PyTorch twins of the bound operators: the whole importance-weighted bound of
a Gaussian-decoder model, and its gradients in the same call."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .iw import iw_logmeanexp
from .latent import latent_terms
from .likelihood import masked_normal_logprob, notmiwae_normal_terms
from .mlp import mlp_tanh, softplus_scale

__all__ = ["gauss_bound", "gauss_bound_grads", "LOG_VAR_BOUND"]

# The encoders' log σ² is clamped to [−10, 10]: here, kLogVarBound in
# csrc/composite/bound_composite.cpp, and as literals in networks.Encoder and the image
# encoders (TorchScript, which exports them, takes no float globals).
LOG_VAR_BOUND = 10.0

# (bound [B], log_w, log p(x°|z), log p(s|x̂), log p(z), log q(z|x), the last five [B, K])
BoundResults = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


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
) -> BoundResults:
    """The importance-weighted bound of a Gaussian-decoder MIWAE (W = b = None) or
    self-masking not-MIWAE, from the networks' weights and the noise.

    encoder MLP(x) = [μ, log σ²] (log σ² clamped to ±10), z = μ + σ·eps_z; decoder
    MLP(z) = [loc, raw], scale = softplus(raw) + min_scale; log w = log p(x°|z)
    (+ log p(s|x̂), x̂ from eps_x) + log p(z) − log q(z|x).

    Args:
        x: [B, D] zero-filled data. mask: [B, D] (1 = observed), x's dtype.
        eps_z: [B, K, L]. eps_x: [B, K, D] or None (needed with W, b).
        enc_weights / enc_biases: the encoder's layers (last one 2L outputs);
        dec_weights / dec_biases: the decoder's (last one 2D outputs). W, b: [D] or None.
    Returns:
        (bound [B], log_w [B, K], log p(x°|z), log p(s|x̂) (zeros without W), log p(z),
        log q(z|x)), the last four [B, K].
    """
    B, K, L = eps_z.shape
    D = x.shape[1]
    h = mlp_tanh(x, enc_weights, enc_biases)
    mu, log_var = h[:, :L], h[:, L:]
    std = torch.exp(0.5 * log_var.clamp(-LOG_VAR_BOUND, LOG_VAR_BOUND))
    z, log_pz, log_qz = latent_terms(mu, std, eps_z)
    params = mlp_tanh(z.reshape(B * K, L), dec_weights, dec_biases).reshape(B, K, 2 * D)
    loc, scale = params[..., :D], softplus_scale(params[..., D:], min_scale)
    if W is None:
        log_px = masked_normal_logprob(x, mask, loc, scale)
        log_ps = torch.zeros_like(log_px)
        log_w = log_px + log_pz - log_qz
    else:
        if eps_x is None or b is None:
            raise ValueError(
                "notmiwae_fast: arguments 'eps_x' and 'b' are required with 'W' (self-masking)"
            )
        log_px, log_ps = notmiwae_normal_terms(x, mask, loc, scale, eps_x, W, b)
        log_w = log_px + log_ps + log_pz - log_qz
    return iw_logmeanexp(log_w), log_w, log_px, log_ps, log_pz, log_qz


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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
    """:func:`gauss_bound`'s six results and the gradients of the loss −mean(bound) with
    respect to enc_weights, enc_biases, dec_weights, dec_biases (each list in order), then
    W and b when given (torch.autograd.grad through :func:`gauss_bound`). Returns
    (bound, log_w, log p(x°|z), log p(s|x̂), log p(z), log q(z|x), [gradients]), all
    detached."""
    params = [*enc_weights, *enc_biases, *dec_weights, *dec_biases]
    if W is not None:
        if b is None:
            raise ValueError(
                "notmiwae_fast: arguments 'W' and 'b' must be given together "
                "(self-masking) or both left out (MIWAE)"
            )
        params += [W, b]
    with torch.enable_grad():
        leaves = [p.detach().requires_grad_() for p in params]
        n_e, n_d = len(enc_weights), len(dec_weights)
        ew, eb = leaves[:n_e], leaves[n_e : 2 * n_e]
        dw, db = leaves[2 * n_e : 2 * n_e + n_d], leaves[2 * n_e + n_d : 2 * n_e + 2 * n_d]
        W_leaf, b_leaf = (leaves[-2], leaves[-1]) if W is not None else (None, None)
        out = gauss_bound(x, mask, eps_z, eps_x, ew, eb, dw, db, W_leaf, b_leaf, min_scale)
        found = torch.autograd.grad(-out[0].mean(), leaves, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, found)]
    bound, log_w, log_px, log_ps, log_pz, log_qz = (o.detach() for o in out)
    return bound, log_w, log_px, log_ps, log_pz, log_qz, grads
