"""pytest-benchmark of the likelihood operators: forward + backward, fused kernel vs the
reference in eager PyTorch vs the reference under torch.compile, at the tabular and
image shapes of likelihood_cases.py. One group per operator and shape.

    PYTHONPATH=. pytest benchmarks/bench_likelihood.py --benchmark-only
    PYTHONPATH=. pytest benchmarks/bench_likelihood.py --benchmark-disable   # run once, as tests

Threads are fixed (NOTMIWAE_BENCH_THREADS, default 2). Each variant is checked against
the eager reference before it is timed. The JSON + Markdown report with memory is
likelihood_report.py.

OMP_WAIT_POLICY defaults to PASSIVE here (set before torch loads OpenMP; export it
yourself if torch is imported earlier in the session): on a small shared machine,
OpenMP workers spinning after a parallel region steal the main thread's core and make
the many small eager ops an order of magnitude slower.
"""

from __future__ import annotations

import functools
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from likelihood_cases import (
    OPS,
    SHAPES,
    VARIANTS,
    check_against_eager,
    forward_backward,
    implementation,  # noqa: E402
    make_case,
)

torch.set_num_threads(int(os.environ.get("NOTMIWAE_BENCH_THREADS", "2")))
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@functools.lru_cache(maxsize=None)
def _compiled(op):  # one torch.compile per operator, shared by its shapes
    return implementation(op, "compile")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("op", OPS)
def test_forward_backward(benchmark, op, shape, variant, device):
    case = make_case(op, *SHAPES[shape], device=device)
    fn = _compiled(op) if variant == "compile" else implementation(op, variant)
    run = forward_backward(fn, case)
    check_against_eager(op, run, case)  # also warms up (and compiles)
    benchmark.group = f"{op} {shape} {device}"
    benchmark.extra_info.update(threads=torch.get_num_threads(), shape=SHAPES[shape])
    if device == "cuda":

        def timed():
            run()
            torch.cuda.synchronize()

        benchmark(timed)
    else:
        benchmark(run)
