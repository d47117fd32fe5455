"""Typed wrappers over the ``torch.ops.notmiwae_fast`` operators.

Each function here has the name and semantics of its twin in
:mod:`notmiwae_fast.reference` and calls the compiled kernel of the inputs' device when
there is one (see :func:`notmiwae_fast.backend`). Without one (reference backend, or a
device the library has no kernels for) it runs the reference implementation: the same
results, slower and with more memory; a device without kernels is reported once with a
warning.

This module also registers the fake (meta) kernels that ``torch.compile`` and
``torch.export`` need to trace the operators.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor

from . import _checks, _library, reference

__all__ = [
    "observed_data",
    "iw_logmeanexp",
    "iw_weights",
    "iw_impute",
    "masked_normal_logprob",
    "masked_bernoulli_logprob",
    "masked_studentt_logprob",
    "selfmask_logprob",
    "notmiwae_normal_terms",
    "mlp_tanh",
    "softplus_scale",
    "latent_terms",
    "gauss_bound",
    "gauss_bound_grads",
    "clipped_impute",
]

_warned_devices: set[str] = set()


def _use_kernels(t: Tensor) -> bool:
    """True when the compiled kernels serve tensors on ``t``'s device."""
    if _library.has_kernels(t.device.type):
        return True
    if _library.backend().name != "reference" and t.device.type not in _warned_devices:
        _warned_devices.add(t.device.type)
        warnings.warn(f"notmiwae_fast: the loaded library has no {t.device.type} kernels; "
                      "using the pure-PyTorch reference operators on that device",
                      stacklevel=3)
    return False


def observed_data(x: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The models' input check and zero-fill in one pass.

    Args:
        x: [*] floating data (anything where s = 0). s: its mask, x's shape, bool,
            integer or floating (nonzero = observed).
    Returns:
        (x0: x with 0 where s = 0, mask: s as 0/1 of x's dtype, counts: int64 [2], the
        entries of s other than 0 and 1 (NaN included) and the observed entries of x
        that are NaN or ±inf); the caller raises when a count is not 0.
    """
    if _use_kernels(x):
        return torch.ops.notmiwae_fast.observed_data(x, s)
    _checks.observed_data(x, s)
    return reference.observed_data(x, s)


def iw_logmeanexp(log_w: Tensor) -> Tensor:
    """log( (1/K) Σ_k exp(log_w[b, k]) ), the importance-weighted bound of each row.

    Args:
        log_w: [B, K] log importance weights (K >= 1).
    Returns:
        [B]. A row of ``-inf`` only gives ``-inf`` and zero gradients.
    """
    if _use_kernels(log_w):
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
    if _use_kernels(log_w):
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
    if _use_kernels(values):
        return torch.ops.notmiwae_fast.iw_impute(log_w, values)
    _checks.iw_values(log_w, values)
    return reference.iw_impute(log_w, values)


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
    if _use_kernels(loc):
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
    if _use_kernels(logits):
        return torch.ops.notmiwae_fast.masked_bernoulli_logprob(x, mask, logits)
    _checks.bernoulli(x, mask, logits)
    return reference.masked_bernoulli_logprob(x, mask, logits)


def masked_studentt_logprob(x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor,
                            df: Tensor) -> Tensor:
    """Σ_d mask · log StudentT(x[b, d]; df[d], loc[b, k, d], scale[b, k, d]).

    Args:
        x: [B, D]. mask: [B, D] bool or 0/1 float. loc, scale: [B, K, D].
        df: [D] degrees of freedom per feature (> 0).
    Returns:
        [B, K]
    """
    if _use_kernels(loc):
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
    if _use_kernels(x_full):
        return torch.ops.notmiwae_fast.selfmask_logprob(x_full, mask, W, b)
    _checks.selfmask(x_full, mask, W, b)
    return reference.selfmask_logprob(x_full, mask, W, b)


def notmiwae_normal_terms(x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, eps: Tensor,
                          W: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
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
    if _use_kernels(loc):
        return torch.ops.notmiwae_fast.notmiwae_normal_terms(x, mask, loc, scale, eps, W, b)
    _checks.notmiwae(x, mask, loc, scale, eps, W, b)
    return reference.notmiwae_normal_terms(x, mask, loc, scale, eps, W, b)


def mlp_tanh(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """A multi-layer perceptron with tanh between its layers, in one operator.

    y = L_n(tanh(L_{n−1}(… tanh(L_1(x))))), L_i(h) = h W_iᵀ + b_i. The kernels run ATen's
    matrix products with the activation applied in place (a vectorised tanh on CPU) and
    a hand-written backward: no autograd graph per layer. Gradients flow to x, the
    weights and the biases.

    Args:
        x: [N, in]. weights: n tensors, weights[i] [out_i, in_i] (nn.Linear's layout),
            in_0 = in and in_i = out_{i−1}. biases: n tensors, biases[i] [out_i].
    Returns:
        [N, out_n]
    """
    weights, biases = list(weights), list(biases)
    if _use_kernels(x):
        return torch.ops.notmiwae_fast.mlp_tanh(x, weights, biases)
    _checks.mlp_layers(x, weights, biases)
    return reference.mlp_tanh(x, weights, biases)


def softplus_scale(raw: Tensor, min_scale: float) -> Tensor:
    """softplus(raw) + min_scale, element-wise (any shape): the decoders' positive scale.

    One vectorised pass (ATen's softplus runs a log1p several times slower on the CPU);
    the gradient is σ(raw).
    """
    if _use_kernels(raw):
        return torch.ops.notmiwae_fast.softplus_scale(raw, float(min_scale))
    _checks.floating(raw, "raw")
    return reference.softplus_scale(raw, min_scale)


def latent_terms(mu: Tensor, std: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The reparameterised latent samples and their log-densities, in one pass.

    Args:
        mu, std: [B, L], the encoder's q(z | x) = N(mu, diag std²) (std > 0).
        eps: [B, K, L] standard normal noise.
    Returns:
        (z = mu + std · eps [B, K, L], log p(z) [B, K], log q(z | x) [B, K]), the
        log-densities summed over L (prior N(0, I)). Gradients flow to mu and std.
    """
    if _use_kernels(mu):
        return torch.ops.notmiwae_fast.latent_terms(mu, std, eps)
    _checks.latent(mu, std, eps)
    return reference.latent_terms(mu, std, eps)


def gauss_bound(x: Tensor, mask: Tensor, eps_z: Tensor, eps_x: Optional[Tensor],
                enc_weights: list[Tensor], enc_biases: list[Tensor], dec_weights: list[Tensor],
                dec_biases: list[Tensor], W: Optional[Tensor], b: Optional[Tensor],
                min_scale: float) -> tuple[Tensor, ...]:
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
    enc_weights, enc_biases = list(enc_weights), list(enc_biases)
    dec_weights, dec_biases = list(dec_weights), list(dec_biases)
    if _use_kernels(x):
        return torch.ops.notmiwae_fast.gauss_bound(x, mask, eps_z, eps_x, enc_weights,
                                                    enc_biases, dec_weights, dec_biases, W, b,
                                                    float(min_scale))
    _checks.gauss_bound(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights,
                        dec_biases, W, b)
    return reference.gauss_bound(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights,
                                 dec_biases, W, b, min_scale)


def gauss_bound_grads(x: Tensor, mask: Tensor, eps_z: Tensor, eps_x: Optional[Tensor],
                      enc_weights: list[Tensor], enc_biases: list[Tensor],
                      dec_weights: list[Tensor], dec_biases: list[Tensor], W: Optional[Tensor],
                      b: Optional[Tensor], min_scale: float) -> tuple:
    """:func:`gauss_bound` and, in the same call, the gradients of the models' loss
    −mean(bound) with respect to the parameters, without building an autograd graph (a
    training step's forward and backward; :class:`~notmiwae_fast.Trainer` uses it).

    Arguments as :func:`gauss_bound`. Returns its six results (plain tensors) and the
    list of gradients of enc_weights, enc_biases, dec_weights, dec_biases (each list in
    order), then of W and b when they are given, each of its parameter's shape.
    """
    enc_weights, enc_biases = list(enc_weights), list(enc_biases)
    dec_weights, dec_biases = list(dec_weights), list(dec_biases)
    if _use_kernels(x):
        return torch.ops.notmiwae_fast.gauss_bound_grads(
            x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights, dec_biases, W, b,
            float(min_scale))
    _checks.gauss_bound(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights,
                        dec_biases, W, b)
    return reference.gauss_bound_grads(x, mask, eps_z, eps_x, enc_weights, enc_biases,
                                       dec_weights, dec_biases, W, b, min_scale)


# --------------------------------------------------------------------------------------
# Fake kernels: output shapes and dtypes, for torch.compile / torch.export / opcheck.
# --------------------------------------------------------------------------------------
def clipped_impute(x: Tensor, lost: Tensor, context: Tensor, mu: Tensor, std: Tensor,
                   eps: Tensor, w_latent: Tensor, w_out: Tensor, b_out: Tensor, clip: float,
                   min_scale: float, censored: bool = True) -> Tensor:
    """The clipped-pixel model's imputation in one streaming pass over the K draws.

    Shapes: x, lost [N, C] (lost bool); context [N, H]; mu, std [N, L]; eps [K, L];
    w_latent [H, L]; w_out [2C, H]; b_out [2C]. Returns [N, C]. Inference only (no
    gradient). See :func:`notmiwae_fast.reference.clipped_impute`.
    """
    if _use_kernels(x):
        return torch.ops.notmiwae_fast.clipped_impute(x, lost, context, mu, std, eps, w_latent,
                                                      w_out, b_out, float(clip),
                                                      float(min_scale), bool(censored))
    return reference.clipped_impute(x, lost, context, mu, std, eps, w_latent, w_out, b_out,
                                    clip, min_scale, censored)


def _register_fakes() -> None:
    def fake(name):
        return torch.library.register_fake(f"{_library.NAMESPACE}::{name}")

    @fake("observed_data")
    def _(x, s):
        _checks.observed_data(x, s)
        return like(x), like(x), x.new_empty(2, dtype=torch.long)

    @fake("iw_logmeanexp")
    def _(log_w):
        _checks.log_weights(log_w)
        return log_w.new_empty(log_w.shape[:1])

    @fake("iw_logmeanexp_backward")
    def _(grad, log_w):
        _checks.log_weights(log_w)
        _checks.same_device_dtype(grad, "grad", log_w, "log_w")
        return torch.empty_like(log_w, memory_format=torch.contiguous_format)

    @fake("iw_weights")
    def _(log_w):
        _checks.log_weights(log_w)
        return torch.empty_like(log_w, memory_format=torch.contiguous_format)

    @fake("iw_weights_backward")
    def _(grad, weights):
        _checks.log_weights(weights, "weights")
        _checks.same_device_dtype(grad, "grad", weights, "weights")
        return torch.empty_like(weights, memory_format=torch.contiguous_format)

    @fake("iw_impute")
    def _(log_w, values):
        _checks.iw_values(log_w, values)
        return values.new_empty((values.shape[0], values.shape[2]))

    @fake("iw_impute_backward")
    def _(grad, log_w, values, result):
        _checks.iw_values(log_w, values)
        return (torch.empty_like(log_w, memory_format=torch.contiguous_format),
                torch.empty_like(values, memory_format=torch.contiguous_format))

    def rows_of(t):  # a [B, K] result of a per-sample tensor t [B, K, D]
        return t.new_empty(t.shape[:2])

    def like(t):
        return torch.empty_like(t, memory_format=torch.contiguous_format)

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

    @fake("mlp_tanh")
    def _(x, weights, biases):
        _checks.mlp_layers(x, weights, biases)
        return x.new_empty((x.shape[0], weights[-1].shape[0]))

    @fake("mlp_tanh_forward")
    def _(x, weights, biases):
        _checks.mlp_layers(x, weights, biases)
        return (x.new_empty((x.shape[0], weights[-1].shape[0])),
                [x.new_empty((x.shape[0], w.shape[0])) for w in weights[:-1]])

    @fake("mlp_tanh_backward")
    def _(grad, x, weights, hidden):
        _checks.mlp_hidden(grad, x, weights, hidden)
        return (x.new_empty(x.shape), [w.new_empty(w.shape) for w in weights],
                [w.new_empty(w.shape[:1]) for w in weights])


    @fake("clipped_impute")
    def _(x, lost, context, mu, std, eps, w_latent, w_out, b_out, clip, min_scale, censored):
        if x.dim() != 2 or lost.shape != x.shape or lost.dtype != torch.bool:
            raise ValueError("notmiwae_fast: arguments 'x' and 'lost' must be [N, C], "
                             "'lost' bool")
        return torch.empty_like(x)

    @fake("softplus_scale")
    def _(raw, min_scale):
        _checks.floating(raw, "raw")
        return torch.empty_like(raw, memory_format=torch.contiguous_format)

    @fake("softplus_scale_backward")
    def _(grad, raw):
        _checks.same_device_dtype(grad, "grad", raw, "raw")
        return torch.empty_like(raw, memory_format=torch.contiguous_format)


    @fake("latent_terms")
    def _(mu, std, eps):
        _checks.latent(mu, std, eps)
        return like(eps), rows_of(eps), rows_of(eps)

    @fake("latent_terms_backward")
    def _(grad_z, grad_log_p, grad_log_q, mu, std, eps):
        _checks.latent(mu, std, eps)
        return like(mu), like(std)

    @fake("gauss_bound")
    def bound(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights, dec_biases, W, b,
              min_scale):
        _checks.gauss_bound(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights,
                            dec_biases, W, b)
        return (x.new_empty(x.shape[:1]),) + tuple(rows_of(eps_z) for _ in range(5))

    @fake("gauss_bound_grads")
    def _(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights, dec_biases, W, b,
          min_scale):
        results = bound(x, mask, eps_z, eps_x, enc_weights, enc_biases, dec_weights,
                        dec_biases, W, b, min_scale)
        params = [*enc_weights, *enc_biases, *dec_weights, *dec_biases]
        params += [W, b] if W is not None else []
        return results + ([like(p) for p in params],)


if _library.backend().library is not None:
    _missing = [name for name in __all__ if not hasattr(torch.ops.notmiwae_fast, name)]
    if _missing:
        raise ImportError(f"notmiwae_fast: the library {_library.backend().library} is older "
                          f"than this Python package (it lacks {', '.join(_missing)}); rebuild "
                          "it: pip install --no-build-isolation -e .")
    _register_fakes()
