"""pytest-benchmark of every operator, forward + backward: the fused kernel against its
reference in eager PyTorch and under torch.compile, at the tabular and image shapes of
the harness (notmiwae_fast.bench.OP_SHAPES). One group per operator and shape; each
variant is checked against the eager reference before it is timed.

    python -m pytest benchmarks/bench_ops.py --benchmark-only
    python -m pytest benchmarks/bench_ops.py --benchmark-disable   # run once, as tests

The one-report version (JSON, Markdown, plots, memory) is ``notmiwae-fast bench``.
Threads: NOTMIWAE_BENCH_THREADS (default 2). OMP_WAIT_POLICY defaults to PASSIVE (set
before torch loads OpenMP): spinning OpenMP workers slow the small eager ops of the
baselines by up to an order of magnitude on a small shared machine.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from notmiwae_fast import bench as harness  # noqa: E402

torch.set_num_threads(int(os.environ.get("NOTMIWAE_BENCH_THREADS", "2")))
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@functools.lru_cache(maxsize=None)
def _compiled(op):  # one torch.compile per operator, shared by its shapes
    return harness.op_function(op, "compile")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["fused", "eager", "compile"])
@pytest.mark.parametrize("shape", list(harness.OP_SHAPES))
@pytest.mark.parametrize("op", harness.ALL_OPS)
def test_forward_backward(benchmark, op, shape, variant, device):
    B, K, D = harness.OP_SHAPES[shape]
    args, grad_idx = harness.op_inputs(op, B, K, D, device)
    params = [args[i].requires_grad_(True) for i in grad_idx]
    fn = _compiled(op) if variant == "compile" else harness.op_function(op, variant)

    def grads(f):
        outs = f(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return torch.autograd.grad(sum(o.sum() for o in outs), params)

    for got, want in zip(grads(fn), grads(harness.op_function(op, "eager"))):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)  # correct before timed
    benchmark.group = f"{op} {shape} {device}"
    benchmark.extra_info.update(threads=torch.get_num_threads(), shape=[B, K, D])

    def timed():
        grads(fn)
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark(timed)
