"""The cases of the likelihood benchmarks, shared by bench_likelihood.py (pytest-benchmark)
and likelihood_report.py (the JSON + Markdown report).

A case is one operator at one shape, run forward + backward three ways:

* ``fused``: the operator of :mod:`notmiwae_fast.ops` (C++ / CUDA kernels);
* ``eager``: its twin in :mod:`notmiwae_fast.reference`, in eager PyTorch;
* ``compile``: that twin under ``torch.compile`` (default inductor backend).

Shapes (B, K, D): the paper's tabular case, B = 16 and 128 with K = 20, D = 11, and an
image case, B = 16, K = 20, D = 64·64·3 = 12288. Inputs are float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from notmiwae_fast import ops, reference

OPS = ["masked_normal_logprob", "masked_bernoulli_logprob", "masked_studentt_logprob",
       "selfmask_logprob", "notmiwae_normal_terms"]
SHAPES = {"tabular-B16": (16, 20, 11), "tabular-B128": (128, 20, 11),
          "image-B16": (16, 20, 12288)}
VARIANTS = ["fused", "eager", "compile"]


@dataclass
class Case:
    """Inputs of one operator: ``args`` in schema order; ``params`` the indices of the
    arguments that get gradients."""

    op: str
    args: list
    params: list


def make_case(op: str, B: int, K: int, D: int, device: str = "cpu",
              dtype: torch.dtype = torch.float32, seed: int = 0) -> Case:
    """Random inputs of ``op`` at [B, K, D] (30 % of the entries missing, NaN there)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    mask = (torch.rand(B, D, generator=g) > 0.3).to(device)
    x = torch.where(mask, randn(B, D), torch.full((), float("nan"), device=device, dtype=dtype))
    loc, scale = randn(B, K, D), 0.5 + torch.rand(B, K, D, generator=g).to(device, dtype)
    W, b = randn(D), randn(D)
    if op == "masked_normal_logprob":
        return Case(op, [x, mask, loc, scale], [2, 3])
    if op == "masked_bernoulli_logprob":
        xb = torch.where(mask, (randn(B, D) > 0).to(dtype), x)
        return Case(op, [xb, mask, 3 * randn(B, K, D)], [2])
    if op == "masked_studentt_logprob":
        df = 2.0 + 3 * torch.rand(D, generator=g).to(device, dtype)
        return Case(op, [x, mask, loc, scale, df], [2, 3, 4])
    if op == "selfmask_logprob":
        return Case(op, [randn(B, K, D), mask, W, b], [0, 2, 3])
    if op == "notmiwae_normal_terms":
        return Case(op, [x, mask, loc, scale, randn(B, K, D), W, b], [2, 3, 5, 6])
    raise ValueError(f"unknown op {op!r}")


def implementation(op: str, variant: str) -> Callable:
    """The forward function of ``op`` for ``variant`` (fused / eager / compile)."""
    if variant == "fused":
        return getattr(ops, op)
    if variant == "eager":
        return getattr(reference, op)
    if variant == "compile":
        return torch.compile(getattr(reference, op))
    raise ValueError(f"unknown variant {variant!r}")


def forward_backward(fn: Callable, case: Case) -> Callable[[], list]:
    """A closure running fn forward and backward on the case (gradients of the sum of
    the outputs with respect to the parameters); returns the outputs and gradients."""
    args = [a.detach().clone() for a in case.args]
    params = [args[i].requires_grad_(True) for i in case.params]

    def run():
        outs = fn(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        loss = sum(o.sum() for o in outs)
        grads = torch.autograd.grad(loss, params)
        return [o.detach() for o in outs] + list(grads)

    return run


def check_against_eager(op: str, run: Callable[[], list], case: Case) -> None:
    """Correctness before timing: the variant's outputs and gradients equal the eager
    reference's (float32 tolerances)."""
    expected = forward_backward(getattr(reference, op), case)()
    for got, want in zip(run(), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)
