"""Export of the mixed-table model: its single imputation as one module of tensor
operations (the operators' pure-PyTorch twins), traced for TorchScript and ONNX."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..nn.mixed import MixedNotMIWAE
from ..ops import reference

__all__ = ["MixedExportableImputer"]


class _TraceOps:
    """The operators as the exported model computes them: the pure-PyTorch twins, and
    the Poisson log-likelihood without its lgamma(x + 1) term (ONNX has no lgamma; the
    term is the same for every sample of a row, so the importance weights and the
    imputations do not change)."""

    masked_normal_logprob = staticmethod(reference.masked_normal_logprob)
    masked_bernoulli_logprob = staticmethod(reference.masked_bernoulli_logprob)
    masked_categorical_logprob = staticmethod(reference.masked_categorical_logprob)

    @staticmethod
    def masked_poisson_logprob(x: Tensor, mask: Tensor, log_rate: Tensor) -> Tensor:
        x, mask = x.unsqueeze(1), mask.unsqueeze(1).to(log_rate.dtype)
        return (mask * (x * log_rate - torch.exp(log_rate))).sum(-1)


class _TraceableMixed(MixedNotMIWAE):
    """A MixedNotMIWAE on :class:`_TraceOps` (what the exported module runs)."""

    @property
    def ops(self) -> type:
        return _TraceOps


class MixedExportableImputer(nn.Module):
    """(x [B, D], mask [B, D]) -> x with its missing entries imputed, in the table's
    units: real columns as values, binary ones 0 / 1, counts whole, categorical columns
    as category codes (the imputer's ``codec_`` maps them back to categories).

    The rules of :meth:`MixedNotMIWAE.impute` with K = ``n_samples`` importance samples;
    the noise is drawn inside (no deterministic variant)."""

    def __init__(self, model: MixedNotMIWAE, n_samples: int = 1000):
        super().__init__()
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)
        self.model.__class__ = _TraceableMixed
        self.n_samples = int(n_samples)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        model = self.model
        observed = mask != 0
        x_std = (x - model.data_mean) / model.data_std
        x0 = torch.where(observed, x_std, torch.zeros_like(x_std))
        p = model._terms(x0, observed.to(x.dtype), self.n_samples)
        filled = model._weighted_fill(p, torch.softmax(p["log_w"], 1))
        return torch.where(observed, x, filled * model.data_std + model.data_mean)
