"""Shared helpers of the test-suite, imported as ``from helpers import ...`` (conftest.py
puts the tests folder on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys

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
