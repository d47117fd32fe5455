"""ExportableImputer: a trained model's imputation as one module that TorchScript
and ONNX can trace (see the package docstring)."""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import Tensor, nn

from ..nn.missing import (
    ConstantMissingProcess,
    LinearMissingProcess,
    NonlinearMissingProcess,
    SelfMaskingKnownSignsProcess,
    SelfMaskingProcess,
)
from ..nn.models import MIWAE, ImportanceWeightedModel, NotMIWAE
from ..nn.networks import use_fused_networks
from ..ops import reference

__all__ = ["ExportableImputer"]

# The processes export knows to compile (a user's own is tried with TorchScript first).
_BUILT_IN = (
    ConstantMissingProcess,
    SelfMaskingProcess,
    SelfMaskingKnownSignsProcess,
    LinearMissingProcess,
    NonlinearMissingProcess,
)


class _NoMissingProcess(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class ExportableImputer(nn.Module):
    """The imputation function of a trained model as a scriptable / exportable module.

    forward(x [B, D], mask [B, D] (1 = observed), eps_z=None, eps_x=None) -> [B, D], in the
    data's original units when the model records a standardisation
    (``model.set_standardization``). Rows of the wrong width raise an error from the
    module itself.
    """

    __constants__ = [
        "n_samples",
        "input_dim",
        "latent_dim",
        "family",
        "has_missing",
        "selfmask",
        "fused",
    ]

    def __init__(self, model: ImportanceWeightedModel, n_samples: int = 1000, fused: bool = True):
        super().__init__()
        if not isinstance(model, (MIWAE, NotMIWAE)) or model.supervised:
            raise TypeError(
                f"export supports MIWAE and NotMIWAE models; got {type(model).__name__}"
            )
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"argument 'n_samples' must be an int >= 1; got {n_samples!r}")
        self.n_samples = n_samples
        self.input_dim, self.latent_dim = model.input_dim, model.latent_dim
        self.family = model.out_dist
        self.fused = bool(fused)
        self.encoder = copy.deepcopy(model.encoder)
        self.decoder = copy.deepcopy(model.decoder)
        self.has_missing = model.has_missing_process
        process = model.missing_model if self.has_missing else _NoMissingProcess()
        self.selfmask = isinstance(process, (SelfMaskingProcess, SelfMaskingKnownSignsProcess))
        self.missing = copy.deepcopy(process)
        if self.family == "student_t":
            df = model.decoder(
                torch.zeros(1, 1, model.latent_dim, dtype=model._dtype, device=model._device)
            )["df"]
            self.register_buffer("df", df.detach().clone())
        else:
            self.register_buffer("df", torch.zeros(0))
        self.register_buffer("df_log_normaliser", reference.studentt_log_normaliser(self.df))
        # The data's standardisation (model.set_standardization, as the imputers set it):
        # the exported imputer takes and returns original units.
        dtype, device = model._dtype, model._device
        mean = (
            model.data_mean
            if model.data_mean is not None
            else torch.zeros(model.input_dim, dtype=dtype, device=device)
        )
        std = (
            model.data_std
            if model.data_std is not None
            else torch.ones(model.input_dim, dtype=dtype, device=device)
        )
        self.register_buffer("data_mean", mean.detach().clone())
        self.register_buffer("data_std", std.detach().clone())
        # The MLPs run layer by layer here (TorchScript compiles that branch only; ONNX
        # has no mlp_tanh).
        use_fused_networks(self, False)
        self.requires_grad_(False)  # an inference artefact
        self.eval()

    def _check(self, x: Tensor, mask: Tensor):
        if x.dim() != 2 or x.size(1) != self.input_dim:
            raise ValueError(
                "notmiwae_fast imputer: argument 'x' must have shape [B, "
                + str(self.input_dim)
                + "]; got a tensor with "
                + str(x.dim())
                + " dimensions and "
                + str(x.size(-1))
                + " columns"
            )
        if mask.shape != x.shape:
            raise ValueError("notmiwae_fast imputer: argument 'mask' must have the shape of 'x'")

    def _masked_logprob(
        self, x0: Tensor, s: Tensor, loc: Tensor, scale: Tensor, logits: Tensor
    ) -> Tensor:
        if self.family == "gauss":
            if self.fused:
                return torch.ops.notmiwae_fast.masked_normal_logprob(x0, s, loc, scale)
            return reference.masked_normal_logprob(x0, s, loc, scale)
        if self.family == "student_t":
            if self.fused:
                return torch.ops.notmiwae_fast.masked_studentt_logprob(x0, s, loc, scale, self.df)
            return reference.masked_studentt_logprob_normalised(
                x0, s, loc, scale, self.df, self.df_log_normaliser
            )
        if self.fused:
            return torch.ops.notmiwae_fast.masked_bernoulli_logprob(x0, s, logits)
        return reference.masked_bernoulli_logprob(x0, s, logits)

    def _missing_terms(
        self,
        x0: Tensor,
        s: Tensor,
        observed: Tensor,
        loc: Tensor,
        scale: Tensor,
        logits: Tensor,
        eps_x: Optional[Tensor],
    ) -> Tensor:
        """log p(x°|z) + log p(s|x̂) [B, K] of a not-MIWAE, x̂ drawn with eps_x [B, K, D]
        (drawn here when None) as the model draws it."""
        if eps_x is None:
            eps_x = torch.randn_like(loc)
            if self.family == "student_t":
                half_df = 0.5 * self.df.expand_as(loc)
                eps_x = eps_x * torch.rsqrt(torch._standard_gamma(half_df) / half_df)
        if self.family == "gauss" and self.selfmask and self.fused:
            w, b = self.missing.selfmask_params()
            log_px, log_ps = torch.ops.notmiwae_fast.notmiwae_normal_terms(
                x0, s, loc, scale, eps_x, w, b
            )
            return log_px + log_ps
        log_px = self._masked_logprob(x0, s, loc, scale, logits)
        x_k = loc if self.family == "bern" else loc + scale * eps_x
        x_hat = torch.where(observed.unsqueeze(1), x0.unsqueeze(1), x_k)
        ones = torch.ones_like(s)
        miss_logits = self.missing(x_hat)
        if self.fused:
            return log_px + torch.ops.notmiwae_fast.masked_bernoulli_logprob(s, ones, miss_logits)
        return log_px + reference.masked_bernoulli_logprob(s, ones, miss_logits)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        eps_z: Optional[Tensor] = None,
        eps_x: Optional[Tensor] = None,
    ) -> Tensor:
        self._check(x, mask)
        observed = mask != 0
        s = observed.to(x.dtype)
        x_original = x
        x = (x - self.data_mean) / self.data_std
        x0 = torch.where(observed, x, torch.zeros_like(x))
        mu, std = self.encoder(x0)
        if eps_z is None:
            eps_z = torch.randn(
                x.size(0), self.n_samples, self.latent_dim, dtype=x.dtype, device=x.device
            )
        z = mu.unsqueeze(1) + std.unsqueeze(1) * eps_z
        log_w = -0.5 * (z * z).sum(-1) - (-0.5 * (eps_z * eps_z) - torch.log(std).unsqueeze(1)).sum(
            -1
        )
        p = self.decoder(z)
        if self.family == "bern":
            logits = p["logits"]
            loc = torch.sigmoid(logits)
            scale = loc
        else:
            loc, scale = p["loc"], p["scale"]
            logits = loc
        if self.has_missing:
            log_w = log_w + self._missing_terms(x0, s, observed, loc, scale, logits, eps_x)
        else:
            log_w = log_w + self._masked_logprob(x0, s, loc, scale, logits)
        if self.fused:
            imputed = torch.ops.notmiwae_fast.iw_impute(log_w, loc)
        else:
            imputed = reference.iw_impute(log_w, loc)
        return torch.where(observed, x_original, imputed * self.data_std + self.data_mean)
