"""Shared helpers of the test-suite, imported as ``from helpers import ...`` (conftest.py
puts the tests folder on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import notmiwae_fast

HAS_CUDA = torch.cuda.is_available()

# Relative / absolute tolerances of kernel against reference, per dtype (SPEC: float64
# to 1e-12 relative for the importance-weighting ops, float32 to 1e-5).
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
}

cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, cuda_only]),
]


def fixed_noise(monkeypatch) -> None:
    """torch.randn made deterministic (a function of the shape), so that CUDA-graph
    replays and uncaptured runs draw the same noise (a graph's random numbers come from
    other Philox offsets than an uncaptured run's)."""

    def randn(*shape, dtype=None, device=None, **_):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        n = 1
        for d in shape:
            n *= d
        return torch.sin(torch.arange(n, dtype=dtype, device=device) * 0.7).reshape(shape)

    monkeypatch.setattr(torch, "randn", randn)


def run_python(
    code: str, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh Python interpreter; returns the finished process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def library_loaded() -> bool:
    return notmiwae_fast.backend().library is not None


BAD_INPUT_ROUTES = ["torch.ops", "notmiwae_fast.ops", "reference-fallback", "fake"]


def assert_bad_input(name: str, inputs: tuple, exc, message: str, via: str, python_check):
    """The operator ``name`` rejects ``inputs`` with ``exc`` matching ``message`` along
    the route ``via``: the raw op, the typed wrapper, the Python check the wrapper runs
    before a reference fallback (``python_check``), or the fake kernel under fake mode.
    CPU dtype errors (kernels take float32 / float64 only) do not apply to the last two."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from notmiwae_fast import ops

    if via in ("reference-fallback", "fake") and "float32 or float64" in message:
        pytest.skip("the reference and the fake kernels take any floating dtype")
    if via == "fake":
        with FakeTensorMode() as mode:
            fake_inputs = tuple(
                [mode.from_tensor(e) for e in t]
                if isinstance(t, list)
                else mode.from_tensor(t)
                if isinstance(t, torch.Tensor)
                else t
                for t in inputs
            )
            with pytest.raises(exc, match=message):
                getattr(torch.ops.notmiwae_fast, name)(*fake_inputs)
        return
    fn = {
        "torch.ops": getattr(torch.ops.notmiwae_fast, name),
        "notmiwae_fast.ops": getattr(ops, name),
        "reference-fallback": python_check,
    }[via]
    with pytest.raises(exc, match=message):
        fn(*inputs)


# ------------------------------------------------------------------------------------
# The likelihood operators' tests (tests/ops/test_likelihood.py, test_categorical.py)
# ------------------------------------------------------------------------------------
class Inputs:
    """The arguments of one op: ``args`` in schema order (tensors, and non-tensor ones
    such as int lists, passed as they are) and ``grad_idx``, the indices of the arguments
    that receive gradients (the parameters)."""

    def __init__(self, args, grad_idx):
        self.args = list(args)
        self.grad_idx = list(grad_idx)

    def to(self, **kw):
        def moved(a):
            if not isinstance(a, torch.Tensor):
                return a
            return a.to(**kw) if a.is_floating_point() else a.to(device=kw.get("device"))

        return Inputs([moved(a) for a in self.args], self.grad_idx)


def forward_backward(fn, inp: Inputs):
    """fn(*args) as a tuple of outputs, and the gradients of a fixed random projection
    of them with respect to the parameters."""
    args = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in inp.args]
    for i in inp.grad_idx:
        args[i].requires_grad_(True)
    outs = fn(*args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    gen = torch.Generator().manual_seed(1)
    loss = sum(
        (o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)).sum() for o in outs
    )
    grads = torch.autograd.grad(
        loss, [args[i] for i in inp.grad_idx], allow_unused=True, materialize_grads=True
    )
    return [o.detach() for o in outs], [g.detach() for g in grads]


def assert_all_close(actual, expected, **tol):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e.to(dtype=a.dtype, device=a.device), **tol)


def same_bits(device: str) -> dict:
    """Tolerances for "the same computation on the same values": bit-identical on the CPU;
    on CUDA the per-feature gradients [D] are summed over rows with atomicAdd, whose
    order (and so the last bit) varies from run to run, as in PyTorch's own index_add."""
    return dict(rtol=0, atol=0) if device == "cpu" else dict(rtol=1e-13, atol=1e-15)


# -- mixed-type tables -----------------------------------------------------------------------
# A short fit of the imputers on a mixed table (seconds).
MIXED_FAST = dict(max_iter=150, hidden_dim=16, n_impute_samples=20, batch_size=32, random_state=0)


def mixed_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    return pd.DataFrame(
        {
            "x": z + 0.3 * rng.normal(size=n),
            "level": pd.Categorical(
                np.where(z > 0.5, "high", np.where(z < -0.5, "low", "mid")),
                categories=["low", "mid", "high", "unused"],
            ),
            "colour": pd.Series(np.where(z > 0, "red", "blue"), dtype="string"),
            "label": np.where(z > 0, "yes", "no").astype(object),
            "visits": pd.array(rng.poisson(np.exp(0.5 * z)), dtype="Int64"),
            "flag": pd.array(z > 0, dtype="boolean"),
            "age": rng.integers(-20, 90, size=n),
        }
    )


def with_holes(df: pd.DataFrame, rate: float = 0.2, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = df.copy()
    for c in out.columns:
        if c == "age":  # a NumPy int column cannot hold a missing value
            continue
        out.loc[rng.random(len(out)) < rate, c] = None
    return out
