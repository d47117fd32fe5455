"""The networks' building blocks: a tanh MLP in one operator and the decoders'
positive scale softplus(raw) + min_scale."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks, reference
from ._dispatch import RegisterFake, like, use_kernels

__all__ = ["mlp_tanh", "softplus_scale"]


def mlp_tanh(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """A multi-layer perceptron with tanh between its layers, in one operator.

    y = L_n(tanh(L_{n−1}(… tanh(L_1(x))))), L_i(h) = h W_iᵀ + b_i. The kernels run ATen's
    matrix products with the activation applied in place (a vectorised tanh on CPU) and
    a hand-written backward: no autograd graph per layer. Gradients flow to x, the
    weights and the biases.

    Args:
        x: [N, in]. weights: n tensors, weights[i] of shape [out_i, in_i] (nn.Linear's layout),
            in_0 = in and in_i = out_{i−1}. biases: n tensors, biases[i] of shape [out_i].
    Returns:
        [N, out_n]
    """
    weights, biases = list(weights), list(biases)
    if use_kernels(x):
        return torch.ops.notmiwae_fast.mlp_tanh(x, weights, biases)
    _checks.mlp_layers(x, weights, biases)
    return reference.mlp_tanh(x, weights, biases)


def softplus_scale(raw: Tensor, min_scale: float) -> Tensor:
    """softplus(raw) + min_scale, element-wise (any shape): the decoders' positive scale.

    One vectorised pass (ATen's softplus runs a log1p several times slower on the CPU);
    the gradient is σ(raw).
    """
    if use_kernels(raw):
        return torch.ops.notmiwae_fast.softplus_scale(raw, float(min_scale))
    _checks.floating(raw, "raw")
    return reference.softplus_scale(raw, min_scale)


def register_fakes(fake: RegisterFake) -> None:
    """Registers the fake (meta) kernels of this family's operators: output shapes
    and dtypes, for torch.compile / torch.export / opcheck."""

    @fake("mlp_tanh")
    def _(x, weights, biases):
        _checks.mlp_layers(x, weights, biases)
        return x.new_empty((x.shape[0], weights[-1].shape[0]))

    @fake("mlp_tanh_forward")
    def _(x, weights, biases):
        _checks.mlp_layers(x, weights, biases)
        return (
            x.new_empty((x.shape[0], weights[-1].shape[0])),
            [x.new_empty((x.shape[0], w.shape[0])) for w in weights[:-1]],
        )

    @fake("mlp_tanh_backward")
    def _(grad, x, weights, hidden):
        _checks.mlp_hidden(grad, x, weights, hidden)
        return (
            x.new_empty(x.shape),
            [w.new_empty(w.shape) for w in weights],
            [w.new_empty(w.shape[:1]) for w in weights],
        )

    @fake("softplus_scale")
    def _(raw, min_scale):
        _checks.floating(raw, "raw")
        return like(raw)

    @fake("softplus_scale_backward")
    def _(grad, raw):
        _checks.same_device_dtype(grad, "grad", raw, "raw")
        return like(raw)
