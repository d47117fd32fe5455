"""Importance weighting: the bound's log-mean-exp, the self-normalised weights and
the weighted imputation, streaming over K."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks, reference
from ._dispatch import RegisterFake, like, use_kernels

__all__ = ["iw_logmeanexp", "iw_weights", "iw_impute"]


def iw_logmeanexp(log_w: Tensor) -> Tensor:
    """log( (1/K) Σ_k exp(log_w[b, k]) ), the importance-weighted bound of each row.

    Args:
        log_w: [B, K] log importance weights (K >= 1).
    Returns:
        [B]. A row of ``-inf`` only gives ``-inf`` and zero gradients.
    """
    if use_kernels(log_w):
        return torch.ops.notmiwae_fast.iw_logmeanexp(log_w)
    _checks.log_weights(log_w)
    return reference.iw_logmeanexp(log_w)


def iw_weights(log_w: Tensor) -> Tensor:
    """Self-normalised importance weights, softmax over K.

    Args:
        log_w: [B, K] log importance weights (K >= 1).
    Returns:
        [B, K], rows summing to 1 (rows of ``-inf`` only give zeros).
    """
    if use_kernels(log_w):
        return torch.ops.notmiwae_fast.iw_weights(log_w)
    _checks.log_weights(log_w)
    return reference.iw_weights(log_w)


def iw_impute(log_w: Tensor, values: Tensor) -> Tensor:
    """Importance-weighted mean Σ_k softmax(log_w)[b, k] · values[b, k, d].

    The kernels stream over K (online log-sum-exp, then one pass over ``values``): the
    memory they allocate is the [B, D] result, whatever K.

    Args:
        log_w: [B, K] log importance weights.
        values: [B, K, D] per-sample values (e.g. decoder means).
    Returns:
        [B, D]. Rows of ``-inf`` log-weights only give zeros.
    """
    if use_kernels(values):
        return torch.ops.notmiwae_fast.iw_impute(log_w, values)
    _checks.iw_values(log_w, values)
    return reference.iw_impute(log_w, values)


def register_fakes(fake: RegisterFake) -> None:
    """Registers the fake (meta) kernels of this family's operators: output shapes
    and dtypes, for torch.compile / torch.export / opcheck."""

    @fake("iw_logmeanexp")
    def _(log_w):
        _checks.log_weights(log_w)
        return log_w.new_empty(log_w.shape[:1])

    @fake("iw_logmeanexp_backward")
    def _(grad, log_w):
        _checks.log_weights(log_w)
        _checks.same_device_dtype(grad, "grad", log_w, "log_w")
        return like(log_w)

    @fake("iw_weights")
    def _(log_w):
        _checks.log_weights(log_w)
        return like(log_w)

    @fake("iw_weights_backward")
    def _(grad, weights):
        _checks.log_weights(weights, "weights")
        _checks.same_device_dtype(grad, "grad", weights, "weights")
        return like(weights)

    @fake("iw_impute")
    def _(log_w, values):
        _checks.iw_values(log_w, values)
        return values.new_empty((values.shape[0], values.shape[2]))

    @fake("iw_impute_backward")
    def _(grad, log_w, values, result):
        _checks.iw_values(log_w, values)
        return like(log_w), like(values)
