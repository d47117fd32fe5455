"""The pure-PyTorch twins of the network operators: a tanh MLP and the decoders' positive
scale softplus(raw) + min_scale."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mlp_tanh", "softplus_scale"]


def mlp_tanh(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """y = L_n(tanh(L_{n−1}(… tanh(L_1(x))))), L_i(h) = h W_iᵀ + b_i (the paper's networks).

    Args:
        x: [N, in]. weights: n tensors, weights[i] of shape [out_i, in_i] (nn.Linear's layout).
        biases: n tensors, biases[i] of shape [out_i].
    Returns:
        [N, out_n]
    """
    h = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = F.linear(h, w, b)
        if i + 1 < len(weights):
            h = torch.tanh(h)
    return h


def softplus_scale(raw: Tensor, min_scale: float) -> Tensor:
    """The decoders' positive scale, softplus(raw) + min_scale, element-wise (any shape)."""
    return F.softplus(raw) + min_scale
