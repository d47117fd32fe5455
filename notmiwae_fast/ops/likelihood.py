"""Masked likelihoods (Normal, Bernoulli, Student-t, Poisson, categorical), the
self-masking missing process and the fused not-MIWAE terms. Shapes: x, mask [B, D] (mask
bool or 0/1 float); per-sample tensors [B, K, D]; per-feature W, b, df [D]; results
[B, K]. The categorical op: x, mask [B, G]; logits [B, K, T]; offsets G + 1 ints."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from . import _checks, reference
from ._dispatch import RegisterFake, like, rows_of, use_kernels

__all__ = [
    "masked_normal_logprob",
    "masked_bernoulli_logprob",
    "masked_studentt_logprob",
    "masked_poisson_logprob",
    "masked_categorical_logprob",
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


def masked_poisson_logprob(x: Tensor, mask: Tensor, log_rate: Tensor) -> Tensor:
    """Σ_d mask · (x · log λ − λ − lgamma(x + 1)), λ = exp(log_rate[b, k, d]).

    Gradients flow to log_rate: grad · mask · (x − λ).

    Args:
        x: [B, D] counts ≥ 0 (floating; a non-integer x gives the formula's continuous
            extension). mask: [B, D] bool or 0/1 float. log_rate: [B, K, D].
    Returns:
        [B, K]
    """
    if use_kernels(log_rate):
        return torch.ops.notmiwae_fast.masked_poisson_logprob(x, mask, log_rate)
    _checks.poisson(x, mask, log_rate)
    return reference.masked_poisson_logprob(x, mask, log_rate)


def masked_categorical_logprob(
    x: Tensor, mask: Tensor, logits: Tensor, offsets: Sequence[int]
) -> Tensor:
    """Σ_g mask[b, g] · log_softmax(logits[b, k, offsets[g]:offsets[g + 1]])[x[b, g]],
    with each column's maximum logit subtracted (finite for logits up to ±1e4).

    Column g of a mixed-type table is categorical with n_g = offsets[g + 1] − offsets[g]
    categories, whose logits sit side by side in ``logits``. Gradients flow to logits:
    grad · mask · (onehot(x) − softmax(column)). Masked columns contribute exactly 0
    whatever x holds there. Observed codes that are not integers in [0, n_g): for CPU
    tensors this wrapper raises ValueError naming 'x'; on other devices (no host
    synchronisation) and in the raw operator such a column contributes −inf and gives
    its logits no gradient.

    Args:
        x: [B, G] category codes 0 … n_g − 1, in logits' floating dtype.
        mask: [B, G] bool or 0/1 float.
        logits: [B, K, T], T = offsets[G].
        offsets: G + 1 strictly increasing column starts, offsets[0] = 0.
    Returns:
        [B, K]
    """
    offsets = [int(o) for o in offsets]
    kernels = use_kernels(logits)
    read_codes = x.device.type == "cpu" and not torch.compiler.is_compiling()
    if read_codes or not kernels:
        _checks.categorical(x, mask, logits, offsets)
    if read_codes:
        _checks.categorical_codes(x, mask, offsets)
    if kernels:
        return torch.ops.notmiwae_fast.masked_categorical_logprob(x, mask, logits, offsets)
    return reference.masked_categorical_logprob(x, mask, logits, offsets)


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

    @fake("masked_poisson_logprob")
    def _(x, mask, log_rate):
        _checks.poisson(x, mask, log_rate)
        return rows_of(log_rate)

    @fake("masked_poisson_logprob_backward")
    def _(grad, x, mask, log_rate):
        _checks.poisson(x, mask, log_rate)
        _checks.row_grad(grad, "grad", log_rate, "log_rate")
        return like(log_rate)

    @fake("masked_categorical_logprob")
    def _(x, mask, logits, offsets):
        _checks.categorical(x, mask, logits, offsets)
        return rows_of(logits)

    @fake("masked_categorical_logprob_backward")
    def _(grad, x, mask, logits, offsets):
        _checks.categorical(x, mask, logits, offsets)
        _checks.row_grad(grad, "grad", logits, "logits")
        return like(logits)

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
