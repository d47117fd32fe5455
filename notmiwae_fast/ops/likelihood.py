"""Masked likelihoods (Normal, Bernoulli, Student-t), the self-masking missing
process and the fused not-MIWAE terms. Shapes: x, mask [B, D] (mask bool or 0/1
float); per-sample tensors [B, K, D]; per-feature W, b, df [D]; results [B, K]."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _checks, reference
from ._dispatch import RegisterFake, like, rows_of, use_kernels

__all__ = [
    "masked_normal_logprob",
    "masked_bernoulli_logprob",
    "masked_studentt_logprob",
    "selfmask_logprob",
    "notmiwae_normal_terms",
]


# --------------------------------------------------------------------------------------
# Likelihoods and the missing process. Shapes: x, mask [B, D] (mask bool or 0/1 float;
# the kernels count any nonzero value as observed and do not check for other values);
# per-sample tensors [B, K, D]; per-feature W, b, df [D]. Entries
# under mask = 0 contribute exactly 0 to the values and the gradients, whatever x holds
# there (NaN and ±inf included). Gradients flow to the parameters (loc, scale, logits,
# df, x_full, W, b), not to the data x, the mask or the noise eps: the kernels return
# None for those.
# --------------------------------------------------------------------------------------
def masked_normal_logprob(x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """Σ_d mask[b, d] · log N(x[b, d]; loc[b, k, d], scale[b, k, d]).

    Args:
        x: [B, D] data. mask: [B, D] bool or 0/1 float.
        loc, scale: [B, K, D] decoder parameters (scale > 0).
    Returns:
        [B, K]
    """
    if use_kernels(loc):
        return torch.ops.notmiwae_fast.masked_normal_logprob(x, mask, loc, scale)
    _checks.location_scale(x, mask, loc, scale)
    return reference.masked_normal_logprob(x, mask, loc, scale)


def masked_bernoulli_logprob(x: Tensor, mask: Tensor, logits: Tensor) -> Tensor:
    """Σ_d mask · (x · log σ(l) + (1 − x) · log σ(−l)), in softplus form (finite for
    logits up to ±1e4).

    Args:
        x: [B, D] in [0, 1]. mask: [B, D] bool or 0/1 float. logits: [B, K, D].
    Returns:
        [B, K]
    """
    if use_kernels(logits):
        return torch.ops.notmiwae_fast.masked_bernoulli_logprob(x, mask, logits)
    _checks.bernoulli(x, mask, logits)
    return reference.masked_bernoulli_logprob(x, mask, logits)


def masked_studentt_logprob(
    x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, df: Tensor
) -> Tensor:
    """Σ_d mask · log StudentT(x[b, d]; df[d], loc[b, k, d], scale[b, k, d]).

    Args:
        x: [B, D]. mask: [B, D] bool or 0/1 float. loc, scale: [B, K, D].
        df: [D] degrees of freedom per feature (> 0).
    Returns:
        [B, K]
    """
    if use_kernels(loc):
        return torch.ops.notmiwae_fast.masked_studentt_logprob(x, mask, loc, scale, df)
    _checks.studentt(x, mask, loc, scale, df)
    return reference.masked_studentt_logprob(x, mask, loc, scale, df)


def selfmask_logprob(x_full: Tensor, mask: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """Σ_d log Bernoulli(mask[b, d]; σ(−W[d] · (x_full[b, k, d] − b[d]))), every feature.

    Args:
        x_full: [B, K, D] complete samples. mask: [B, D] bool or 0/1 float. W, b: [D].
    Returns:
        [B, K]
    """
    if use_kernels(x_full):
        return torch.ops.notmiwae_fast.selfmask_logprob(x_full, mask, W, b)
    _checks.selfmask(x_full, mask, W, b)
    return reference.selfmask_logprob(x_full, mask, W, b)


def notmiwae_normal_terms(
    x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, eps: Tensor, W: Tensor, b: Tensor
) -> tuple[Tensor, Tensor]:
    """The not-MIWAE data terms with a Normal decoder and self-masking, in one pass.

    With x̂ = mask · x + (1 − mask) · (loc + scale · eps), returns
    ``(masked_normal_logprob(x, mask, loc, scale), selfmask_logprob(x̂, mask, W, b))``.
    The kernels never write x̂ to memory and save nothing of size [B, K, D] for
    backward besides the inputs; gradients flow to loc, scale (also through x̂), W and
    b; eps gets none.

    Args:
        x: [B, D]. mask: [B, D] bool or 0/1 float. loc, scale, eps: [B, K, D]. W, b: [D].
    Returns:
        (log p(x° | z) [B, K], log p(s | x̂) [B, K])
    """
    if use_kernels(loc):
        return torch.ops.notmiwae_fast.notmiwae_normal_terms(x, mask, loc, scale, eps, W, b)
    _checks.notmiwae(x, mask, loc, scale, eps, W, b)
    return reference.notmiwae_normal_terms(x, mask, loc, scale, eps, W, b)


def register_fakes(fake: RegisterFake) -> None:
    """Registers the fake (meta) kernels of this family's operators: output shapes
    and dtypes, for torch.compile / torch.export / opcheck."""

    @fake("masked_normal_logprob")
    def _(x, mask, loc, scale):
        _checks.location_scale(x, mask, loc, scale)
        return rows_of(loc)

    @fake("masked_normal_logprob_backward")
    def _(grad, x, mask, loc, scale):
        _checks.location_scale(x, mask, loc, scale)
        _checks.row_grad(grad, "grad", loc, "loc")
        return like(loc), like(scale)

    @fake("masked_bernoulli_logprob")
    def _(x, mask, logits):
        _checks.bernoulli(x, mask, logits)
        return rows_of(logits)

    @fake("masked_bernoulli_logprob_backward")
    def _(grad, x, mask, logits):
        _checks.bernoulli(x, mask, logits)
        _checks.row_grad(grad, "grad", logits, "logits")
        return like(logits)

    @fake("masked_studentt_logprob")
    def _(x, mask, loc, scale, df):
        _checks.studentt(x, mask, loc, scale, df)
        return rows_of(loc)

    @fake("masked_studentt_logprob_backward")
    def _(grad, x, mask, loc, scale, df):
        _checks.studentt(x, mask, loc, scale, df)
        _checks.row_grad(grad, "grad", loc, "loc")
        return like(loc), like(scale), like(df)

    @fake("selfmask_logprob")
    def _(x_full, mask, W, b):
        _checks.selfmask(x_full, mask, W, b)
        return rows_of(x_full)

    @fake("selfmask_logprob_backward")
    def _(grad, x_full, mask, W, b):
        _checks.selfmask(x_full, mask, W, b)
        _checks.row_grad(grad, "grad", x_full, "x_full")
        return like(x_full), like(W), like(b)

    @fake("notmiwae_normal_terms")
    def _(x, mask, loc, scale, eps, W, b):
        _checks.notmiwae(x, mask, loc, scale, eps, W, b)
        return rows_of(loc), rows_of(loc)

    @fake("notmiwae_normal_terms_backward")
    def _(grad_obs, grad_miss, x, mask, loc, scale, eps, W, b):
        _checks.notmiwae(x, mask, loc, scale, eps, W, b)
        _checks.row_grad(grad_obs, "grad_obs", loc, "loc")
        _checks.row_grad(grad_miss, "grad_miss", loc, "loc")
        return like(loc), like(scale), like(W), like(b)
