"""Argument checks of the operators on the Python side.

Used by the fake (meta) kernels, so that torch.compile / torch.export see the same
errors as eager mode, and by the reference fallback. They mirror
csrc/include/notmiwae_fast/checks.h: shape and device errors raise ValueError, dtype
errors TypeError, and every message names the argument and the expected shape.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


def floating(t: Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(
            f"notmiwae_fast: argument '{name}' must be a floating-point tensor; got dtype {t.dtype}"
        )


def ndim(t: Tensor, dim: int, name: str, shape: str) -> None:
    if t.dim() != dim:
        raise ValueError(
            f"notmiwae_fast: argument '{name}' must have shape {shape} ({dim} "
            f"dimensions); got shape {list(t.shape)}"
        )


def size(t: Tensor, d: int, expected: int, name: str, shape: str) -> None:
    if t.shape[d] != expected:
        raise ValueError(
            f"notmiwae_fast: argument '{name}' must have shape {shape} with size "
            f"{expected} in dimension {d}; got shape {list(t.shape)}"
        )


def same_device_dtype(t: Tensor, name: str, ref: Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(
            f"notmiwae_fast: argument '{name}' is on {t.device} but '{ref_name}' "
            f"is on {ref.device}; move them to one device"
        )
    if t.dtype != ref.dtype:
        raise TypeError(
            f"notmiwae_fast: argument '{name}' has dtype {t.dtype} but "
            f"'{ref_name}' has dtype {ref.dtype}; use one floating dtype"
        )


def log_weights(log_w: Tensor, name: str = "log_w") -> None:
    """log_w: [B, K] floating, K >= 1."""
    floating(log_w, name)
    ndim(log_w, 2, name, "[B, K]")
    if log_w.shape[1] < 1:
        raise ValueError(
            f"notmiwae_fast: argument '{name}' must have at least one importance "
            f"sample (K >= 1); got shape {list(log_w.shape)}"
        )


def iw_values(log_w: Tensor, values: Tensor) -> None:
    """values: [B, K, D] matching log_w [B, K]."""
    log_weights(log_w)
    floating(values, "values")
    ndim(values, 3, "values", "[B, K, D]")
    size(values, 0, log_w.shape[0], "values", "[B, K, D] (B from log_w)")
    size(values, 1, log_w.shape[1], "values", "[B, K, D] (K from log_w)")
    same_device_dtype(values, "values", log_w, "log_w")


# --------------------------------------------------------------------------------------
# The likelihood family: data x / mask [B, D], per-sample [B, K, D], per-feature [D].
# --------------------------------------------------------------------------------------
def mask_dtype(mask: Tensor) -> None:
    """mask: bool or floating (nonzero = observed)."""
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise TypeError(
            "notmiwae_fast: argument 'mask' must be bool or floating (1 = observed, "
            f"0 = missing); got dtype {mask.dtype}"
        )


def mask_like(mask: Tensor, x: Tensor, x_name: str) -> None:
    """mask: [B, D], the shape and device of x."""
    mask_dtype(mask)
    if mask.shape != x.shape:
        raise ValueError(
            f"notmiwae_fast: argument 'mask' must have shape [B, D] = "
            f"{list(x.shape)} (the shape of '{x_name}'); got shape "
            f"{list(mask.shape)}"
        )
    if mask.device != x.device:
        raise ValueError(
            f"notmiwae_fast: argument 'mask' is on {mask.device} but '{x_name}' is "
            f"on {x.device}; move them to one device"
        )


def data(x: Tensor, mask: Tensor) -> None:
    """x: [B, D] floating, and its mask."""
    floating(x, "x")
    ndim(x, 2, "x", "[B, D]")
    mask_like(mask, x, "x")


def per_sample(t: Tensor, name: str, x: Tensor) -> None:
    """t: [B, K, D] with B and D from x [B, D], same device and dtype as x."""
    floating(t, name)
    ndim(t, 3, name, "[B, K, D]")
    size(t, 0, x.shape[0], name, "[B, K, D] (B from x)")
    size(t, 2, x.shape[1], name, "[B, K, D] (D from x)")
    same_device_dtype(t, name, x, "x")


def like(t: Tensor, name: str, ref: Tensor, ref_name: str) -> None:
    """t: the shape, device and dtype of the per-sample tensor ref [B, K, D]."""
    floating(t, name)
    if t.shape != ref.shape:
        raise ValueError(
            f"notmiwae_fast: argument '{name}' must have shape [B, K, D] = "
            f"{list(ref.shape)} (the shape of '{ref_name}'); got shape "
            f"{list(t.shape)}"
        )
    same_device_dtype(t, name, ref, ref_name)


def per_feature(t: Tensor, name: str, D: int, ref: Tensor, ref_name: str) -> None:
    """t: [D], same device and dtype as ref."""
    floating(t, name)
    if t.dim() != 1 or t.shape[0] != D:
        raise ValueError(
            f"notmiwae_fast: argument '{name}' must have shape [D] = [{D}] (one "
            f"value per feature); got shape {list(t.shape)}"
        )
    same_device_dtype(t, name, ref, ref_name)


def location_scale(x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor) -> None:
    """masked_normal_logprob: x, mask [B, D]; loc, scale [B, K, D]."""
    data(x, mask)
    per_sample(loc, "loc", x)
    like(scale, "scale", loc, "loc")


def bernoulli(x: Tensor, mask: Tensor, logits: Tensor) -> None:
    """masked_bernoulli_logprob: x, mask [B, D]; logits [B, K, D]."""
    data(x, mask)
    per_sample(logits, "logits", x)


def poisson(x: Tensor, mask: Tensor, log_rate: Tensor) -> None:
    """masked_poisson_logprob: x, mask [B, D]; log_rate [B, K, D]."""
    data(x, mask)
    per_sample(log_rate, "log_rate", x)


def categorical(x: Tensor, mask: Tensor, logits: Tensor, offsets: Sequence[int]) -> None:
    """masked_categorical_logprob: x, mask [B, G]; logits [B, K, T]; offsets: G + 1
    strictly increasing column starts from 0 to T."""
    floating(x, "x")
    ndim(x, 2, "x", "[B, G]")
    mask_like(mask, x, "x")
    floating(logits, "logits")
    ndim(logits, 3, "logits", "[B, K, T]")
    size(logits, 0, x.shape[0], "logits", "[B, K, T] (B from x)")
    same_device_dtype(logits, "logits", x, "x")
    G = x.shape[1]
    if len(offsets) != G + 1:
        raise ValueError(
            f"notmiwae_fast: argument 'offsets' must hold G + 1 = {G + 1} column starts "
            f"(G from x); got {len(offsets)}"
        )
    if offsets[0] != 0 or offsets[G] != logits.shape[2]:
        raise ValueError(
            f"notmiwae_fast: argument 'offsets' must run from 0 to T = {logits.shape[2]} "
            f"(T from logits); got {list(offsets)}"
        )
    if any(offsets[g] >= offsets[g + 1] for g in range(G)):
        raise ValueError(
            "notmiwae_fast: argument 'offsets' must be strictly increasing (each column "
            f"has at least one category); got {list(offsets)}"
        )


def categorical_codes(x: Tensor, mask: Tensor, offsets: Sequence[int]) -> None:
    """The observed entries of x [B, G] are integer codes in [0, n_g), n_g =
    offsets[g + 1] − offsets[g]. Reads x: for tensors on the CPU only (the wrapper skips
    it on other devices, where the operator gives such an entry −inf)."""
    n = torch.tensor([offsets[g + 1] - offsets[g] for g in range(x.shape[1])], device=x.device)
    valid = (x >= 0) & (x < n) & (x == torch.floor(x))
    bad = (mask != 0) & ~valid
    if bool(bad.any()):
        b, g = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            "notmiwae_fast: argument 'x' must hold, where observed, integer category codes "
            f"in [0, n_g); got x[{b}, {g}] = {float(x[b, g])} for a column of "
            f"{int(n[g])} categories"
        )


def studentt(x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, df: Tensor) -> None:
    """masked_studentt_logprob: x, mask [B, D]; loc, scale [B, K, D]; df [D]."""
    location_scale(x, mask, loc, scale)
    per_feature(df, "df", x.shape[1], x, "x")


def selfmask(x_full: Tensor, mask: Tensor, W: Tensor, b: Tensor) -> None:
    """selfmask_logprob: x_full [B, K, D]; mask [B, D]; W, b [D]."""
    floating(x_full, "x_full")
    ndim(x_full, 3, "x_full", "[B, K, D]")
    ndim(mask, 2, "mask", "[B, D]")
    B, _, D = x_full.shape
    if mask.shape[0] != B or mask.shape[1] != D:
        raise ValueError(
            f"notmiwae_fast: argument 'mask' must have shape [B, D] = [{B}, {D}] "
            f"(B and D from 'x_full'); got shape {list(mask.shape)}"
        )
    mask_dtype(mask)
    if mask.device != x_full.device:
        raise ValueError(
            f"notmiwae_fast: argument 'mask' is on {mask.device} but 'x_full' is "
            f"on {x_full.device}; move them to one device"
        )
    per_feature(W, "W", D, x_full, "x_full")
    per_feature(b, "b", D, x_full, "x_full")


def notmiwae(
    x: Tensor, mask: Tensor, loc: Tensor, scale: Tensor, eps: Tensor, W: Tensor, b: Tensor
) -> None:
    """notmiwae_normal_terms: x, mask [B, D]; loc, scale, eps [B, K, D]; W, b [D]."""
    location_scale(x, mask, loc, scale)
    like(eps, "eps", loc, "loc")
    per_feature(W, "W", x.shape[1], x, "x")
    per_feature(b, "b", x.shape[1], x, "x")


def row_grad(grad: Tensor, name: str, ref: Tensor, ref_name: str) -> None:
    """grad: [B, K] = ref.shape[:2], same device and dtype as ref."""
    B, K = ref.shape[0], ref.shape[1]
    if grad.dim() != 2 or grad.shape[0] != B or grad.shape[1] != K:
        raise ValueError(
            f"notmiwae_fast: argument '{name}' must have shape [B, K] = [{B}, {K}]; "
            f"got shape {list(grad.shape)}"
        )
    same_device_dtype(grad, name, ref, ref_name)


def mlp_layers(
    x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], prefix: str = ""
) -> None:
    """x [N, in]; weights[i] [out_i, in_i] chained from ``in``; biases[i] [out_i].
    ``prefix`` names the lists as the caller's arguments (``"dec_"``: dec_weights)."""
    ws, bs = f"{prefix}weights", f"{prefix}biases"
    floating(x, "x")
    ndim(x, 2, "x", "[N, in_features]")
    if len(weights) == 0:
        raise ValueError(
            f"notmiwae_fast: argument '{ws}' must hold at least one layer; got an empty list"
        )
    if len(weights) != len(biases):
        raise ValueError(
            f"notmiwae_fast: arguments '{ws}' and '{bs}' must have one entry "
            f"per layer; got {len(weights)} and {len(biases)}"
        )
    width = x.shape[1]
    for i, (w, b) in enumerate(zip(weights, biases)):
        same_device_dtype(w, f"{ws}[{i}]", x, "x")
        same_device_dtype(b, f"{bs}[{i}]", x, "x")
        ndim(w, 2, f"{ws}[{i}]", "[out_features, in_features]")
        size(w, 1, width, f"{ws}[{i}]", "[out_features, in_features]")
        width = w.shape[0]
        ndim(b, 1, f"{bs}[{i}]", "[out_features]")
        size(b, 0, width, f"{bs}[{i}]", "[out_features]")


def mlp_hidden(
    grad: Tensor, x: Tensor, weights: Sequence[Tensor], hidden: Sequence[Tensor]
) -> None:
    """The arguments of mlp_tanh_backward: grad [N, out_n], one activation per hidden
    layer, hidden[i] [N, out_i]."""
    if len(hidden) + 1 != len(weights):
        raise ValueError(
            "notmiwae_fast: argument 'hidden' must hold one activation per hidden "
            f"layer ({max(len(weights) - 1, 0)}); got {len(hidden)}"
        )
    floating(grad, "grad")
    ndim(grad, 2, "grad", "[N, out_features]")
    same_device_dtype(grad, "grad", x, "x")
    size(grad, 0, x.shape[0], "grad", "[N, out_features]")
    size(grad, 1, weights[-1].shape[0], "grad", "[N, out_features]")
    for i, h in enumerate(hidden):
        same_device_dtype(h, f"hidden[{i}]", x, "x")
        if tuple(h.shape) != (x.shape[0], weights[i].shape[0]):
            raise ValueError(
                f"notmiwae_fast: argument 'hidden[{i}]' must have shape "
                f"{[x.shape[0], weights[i].shape[0]]}; got {list(h.shape)}"
            )


def latent(mu: Tensor, std: Tensor, eps: Tensor) -> None:
    """mu, std [B, L]; eps [B, K, L]."""
    floating(mu, "mu")
    ndim(mu, 2, "mu", "[B, L]")
    same_device_dtype(std, "std", mu, "mu")
    ndim(std, 2, "std", "[B, L]")
    size(std, 0, mu.shape[0], "std", "[B, L] (B from mu)")
    size(std, 1, mu.shape[1], "std", "[B, L] (L from mu)")
    same_device_dtype(eps, "eps", mu, "mu")
    ndim(eps, 3, "eps", "[B, K, L]")
    size(eps, 0, mu.shape[0], "eps", "[B, K, L] (B from mu)")
    size(eps, 2, mu.shape[1], "eps", "[B, K, L] (L from mu)")


def gauss_bound(
    x: Tensor,
    mask: Tensor,
    eps_z: Tensor,
    eps_x: Optional[Tensor],
    enc_weights: Sequence[Tensor],
    enc_biases: Sequence[Tensor],
    dec_weights: Sequence[Tensor],
    dec_biases: Sequence[Tensor],
    W: Optional[Tensor],
    b: Optional[Tensor],
) -> None:
    """The arguments of gauss_bound (see reference.gauss_bound)."""
    floating(x, "x")
    ndim(x, 2, "x", "[B, D]")
    same_device_dtype(mask, "mask", x, "x")
    if mask.shape != x.shape:
        raise ValueError(
            f"notmiwae_fast: argument 'mask' must have the shape of 'x' "
            f"{list(x.shape)}; got {list(mask.shape)}"
        )
    same_device_dtype(eps_z, "eps_z", x, "x")
    ndim(eps_z, 3, "eps_z", "[B, K, L]")
    size(eps_z, 0, x.shape[0], "eps_z", "[B, K, L]")
    if eps_z.shape[1] < 1:
        raise ValueError(
            "notmiwae_fast: argument 'eps_z' must have K >= 1 samples; got "
            f"shape {list(eps_z.shape)}"
        )
    L, D = eps_z.shape[2], x.shape[1]
    mlp_layers(x, enc_weights, enc_biases, prefix="enc_")
    if enc_weights[-1].shape[0] != 2 * L:
        raise ValueError(
            f"notmiwae_fast: the encoder's last layer must have 2 L = {2 * L} "
            "outputs (mean and log-variance); got weight shape "
            f"{list(enc_weights[-1].shape)}"
        )
    mlp_layers(eps_z.reshape(-1, L), dec_weights, dec_biases, prefix="dec_")
    if dec_weights[-1].shape[0] != 2 * D:
        raise ValueError(
            f"notmiwae_fast: the decoder's last layer must have 2 D = {2 * D} "
            "outputs (loc and raw scale); got weight shape "
            f"{list(dec_weights[-1].shape)}"
        )
    _gauss_bound_missing(x, eps_z, eps_x, W, b)


def _gauss_bound_missing(
    x: Tensor, eps_z: Tensor, eps_x: Optional[Tensor], W: Optional[Tensor], b: Optional[Tensor]
) -> None:
    """gauss_bound's self-masking arguments: W, b [D] together or neither, eps_x [B, K, D]
    with them."""
    D = x.shape[1]
    if (W is None) != (b is None):
        raise ValueError(
            "notmiwae_fast: arguments 'W' and 'b' must be given together "
            "(self-masking) or both left out (MIWAE)"
        )
    if W is not None and eps_x is None:
        raise ValueError(
            "notmiwae_fast: argument 'eps_x' is required with a self-masking process (W, b)"
        )
    if eps_x is not None:
        same_device_dtype(eps_x, "eps_x", x, "x")
        if tuple(eps_x.shape) != (x.shape[0], eps_z.shape[1], D):
            raise ValueError(
                "notmiwae_fast: argument 'eps_x' must have shape [B, K, D] = "
                f"[{x.shape[0]}, {eps_z.shape[1]}, {D}]; got {list(eps_x.shape)}"
            )
    if W is not None and b is not None:  # (given together, checked above)
        per_feature(W, "W", D, x, "x")
        per_feature(b, "b", D, x, "x")


def observed_data(x: Tensor, s: Tensor) -> None:
    """x: floating; s: its mask, x's shape and device, bool, integer or real floating."""
    floating(x, "x")
    if s.device != x.device:
        raise ValueError(
            f"notmiwae_fast: argument 's' is on {s.device} but 'x' is on "
            f"{x.device}; move them to one device"
        )
    if s.is_complex():
        raise TypeError(
            "notmiwae_fast: argument 's' must be a bool, integer or real floating "
            f"mask; got dtype {s.dtype}"
        )
    if s.shape != x.shape:
        raise ValueError(
            f"notmiwae_fast: argument 's' must have the shape of 'x' "
            f"{list(x.shape)}; got {list(s.shape)}"
        )
