"""The op cases of the benchmark: the operators and shapes it times, random inputs at a
shape, each variant of an operator (fused, eager reference, torch.compile of the
reference) and one forward (+ backward) call of it."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

IW_OPS = ("iw_logmeanexp", "iw_weights", "iw_impute")
LIKELIHOOD_OPS = (
    "masked_normal_logprob",
    "masked_bernoulli_logprob",
    "masked_studentt_logprob",
    "selfmask_logprob",
    "notmiwae_normal_terms",
)
# mlp_tanh at [B, K, D]: the tabular decoder, [B·K, D − 1] -> 128 -> 128 -> [B·K, 2D].
MLP_OPS = ("mlp_tanh",)
ALL_OPS = IW_OPS + LIKELIHOOD_OPS + MLP_OPS
OP_SHAPES = {
    "tabular-B16": (16, 20, 11),
    "tabular-B128": (128, 20, 11),
    "image-B16": (16, 20, 12288),
}
TABULAR_D, HIDDEN, K_TRAIN = 11, 128, 20


def op_inputs(
    op: str, B: int, K: int, D: int, device: str, seed: int = 0
) -> tuple[list[torch.Tensor], list[int]]:
    """Random float32 inputs of ``op`` at [B, K, D] (30 % of the entries missing, NaN
    there) and the indices of the arguments that get gradients."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device)

    if op in MLP_OPS:
        sizes = [D - 1, HIDDEN, HIDDEN, 2 * D]
        weights = [randn(b, a) / a**0.5 for a, b in itertools.pairwise(sizes)]
        biases = [randn(b) for b in sizes[1:]]
        args = [randn(B * K, D - 1)] + weights + biases
        return args, list(range(len(args)))
    if op in IW_OPS:
        log_w = randn(B, K)
        return ([log_w], [0]) if op != "iw_impute" else ([log_w, randn(B, K, D)], [0, 1])
    mask = (torch.rand(B, D, generator=g) > 0.3).to(device)
    x = torch.where(mask, randn(B, D), torch.full((), float("nan"), device=device))
    loc, scale = randn(B, K, D), (0.5 + torch.rand(B, K, D, generator=g)).to(device)
    W, b = randn(D), randn(D)
    if op == "masked_normal_logprob":
        return [x, mask, loc, scale], [2, 3]
    if op == "masked_bernoulli_logprob":
        return [torch.where(mask, (randn(B, D) > 0).float(), x), mask, 3 * randn(B, K, D)], [2]
    if op == "masked_studentt_logprob":
        return [x, mask, loc, scale, (2.0 + 3 * torch.rand(D, generator=g)).to(device)], [2, 3, 4]
    if op == "selfmask_logprob":
        return [randn(B, K, D), mask, W, b], [0, 2, 3]
    if op == "notmiwae_normal_terms":
        return [x, mask, loc, scale, randn(B, K, D), W, b], [2, 3, 5, 6]
    raise ValueError(f"unknown op {op!r}")


def op_function(op: str, variant: str) -> Callable:
    """``op`` as ``variant`` runs it: this package's kernel (fused), the pure-PyTorch
    reference (eager) or that reference under torch.compile (compile)."""
    from .. import ops
    from ..ops import reference

    if variant not in ("fused", "eager", "compile"):
        raise ValueError(f"unknown variant {variant!r}")
    fn = getattr(ops if variant == "fused" else reference, op)
    if op in MLP_OPS:  # flat arguments (x, W_1..W_n, b_1..b_n), as op_inputs makes them
        layered = fn

        def fn(x, *params):
            n = len(params) // 2
            return layered(x, list(params[:n]), list(params[n:]))

    return torch.compile(fn, dynamic=False) if variant == "compile" else fn


def op_call(
    op: str, variant: str, B: int, K: int, D: int, device: str, backward: bool = True
) -> Callable:
    """One forward (+ backward of the sum of the outputs) of ``op``."""
    fn = op_function(op, variant)
    args, grad_idx = op_inputs(op, B, K, D, device)
    params = [args[i].requires_grad_(backward) for i in grad_idx]

    def run():
        outs = fn(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        if backward:
            torch.autograd.grad(sum(o.sum() for o in outs), params)
        return outs

    return run


def op_forward_bytes(op: str, B: int, K: int, D: int, device: str) -> int:
    """Bytes a forward of ``op`` must move: every input read once, every output written
    once."""
    args, _ = op_inputs(op, B, K, D, device)
    with torch.no_grad():
        outs = op_function(op, "fused")(*args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    return sum(t.numel() * t.element_size() for t in list(args) + list(outs))
