"""pytest-benchmark: the importance-weighting ops, fused kernel vs the reference in eager
PyTorch vs the reference under torch.compile, forward + backward.

    python -m pytest benchmarks/bench_iw.py --benchmark-only --benchmark-group-by=param:shape
    python -m pytest benchmarks/bench_iw.py --benchmark-disable   # a correctness smoke run
"""

from __future__ import annotations

import pytest
import torch

from notmiwae_fast import reference

torch.set_num_threads(2)

SHAPES = {"tabular": (128, 20, 11), "impute-K10k": (16, 10_000, 11), "image": (16, 20, 12_288)}
OPS = ["iw_logmeanexp", "iw_weights", "iw_impute"]
_compiled = {}


def implementation(name: str, variant: str):
    if variant == "fused":
        return getattr(torch.ops.notmiwae_fast, name)
    if variant == "eager":
        return getattr(reference, name)
    if name not in _compiled:
        _compiled[name] = torch.compile(getattr(reference, name), dynamic=False)
    return _compiled[name]


@pytest.mark.parametrize("variant", ["fused", "eager", "compile"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", OPS)
def test_forward_backward(benchmark, name, shape, variant):
    B, K, D = SHAPES[shape]
    gen = torch.Generator().manual_seed(0)
    log_w = (3 * torch.randn(B, K, generator=gen)).requires_grad_(True)
    values = torch.randn(B, K, D, generator=gen).requires_grad_(True)
    inputs = (log_w, values) if name == "iw_impute" else (log_w,)
    fn = implementation(name, variant)

    def step():
        out = fn(*inputs)
        return torch.autograd.grad(out.sum(), inputs)

    expected = torch.autograd.grad(getattr(reference, name)(*inputs).sum(), inputs)
    for got, want in zip(step(), expected):  # correct before timed
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    benchmark.group = f"{name}-{shape}"
    benchmark(step)
