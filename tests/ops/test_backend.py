"""How the package finds its operators: backend() reporting, the reference fallback and
the just-in-time build, each in a fresh process."""

from __future__ import annotations

import json
import os

import pytest
from helpers import run_python

import notmiwae_fast

PROBE = """
import json, warnings, torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import notmiwae_fast as m
    from notmiwae_fast import ops, reference
b = m.backend()
log_w = torch.randn(5, 40, dtype=torch.float64, requires_grad=True)
values = torch.randn(5, 40, 3, dtype=torch.float64)
out = ops.iw_impute(log_w, values)
out.sum().backward()
ref = reference.iw_impute(log_w.detach(), values)
# the composite operator too (its sources sit in their own folder)
g = torch.Generator().manual_seed(0)
rn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
layers = lambda sizes: ([rn(b_, a) for a, b_ in zip(sizes[:-1], sizes[1:])],
                        [rn(b_) for b_ in sizes[1:]])
args = (rn(4, 3), torch.ones(4, 3, dtype=torch.float64), rn(4, 5, 2), None,
        *layers([3, 6, 4]), *layers([2, 6, 6]), None, None, 1e-3)
bound_err = max(((a - r).abs().max() / r.abs().max().clamp_min(1)).item() for a, r in
                zip(ops.gauss_bound(*args), reference.gauss_bound(*args)))
print(json.dumps({"name": b.name, "library": b.library, "cpu": b.cpu_kernels,
                  "cuda": b.cuda_kernels, "text": str(b),
                  "max_err": (out.detach() - ref).abs().max().item(),
                  "bound_rel_err": bound_err,
                  "grad_finite": bool(torch.isfinite(log_w.grad).all()),
                  "warnings": [str(w.message) for w in caught]}))
"""


def probe(**env) -> dict:
    proc = run_python(PROBE, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_installed_library_is_used():
    if os.environ.get("NOTMIWAE_FAST_BACKEND", "auto") not in ("auto", "compiled"):
        pytest.skip("a backend is forced for this test run")
    b = notmiwae_fast.backend()
    assert b.name == "compiled", str(b)
    assert b.cpu_kernels and b.library.endswith(".so")
    assert notmiwae_fast.library_path() == b.library
    assert "compiled: CPU" in str(b)


def test_reference_fallback_says_so_and_is_correct():
    result = probe(NOTMIWAE_FAST_BACKEND="reference")
    assert result["name"] == "reference"
    assert result["library"] is None and not result["cpu"] and not result["cuda"]
    assert "reference" in result["text"]
    assert result["max_err"] == 0.0 and result["grad_finite"]


def test_unknown_backend_choice_is_an_error():
    proc = run_python("import notmiwae_fast", env={"NOTMIWAE_FAST_BACKEND": "fastest"})
    assert proc.returncode != 0
    assert "NOTMIWAE_FAST_BACKEND must be one of auto, compiled, jit, reference" in proc.stderr


@pytest.mark.slow
def test_just_in_time_build(tmp_path):
    """With the JIT backend the C++ sources are compiled with ninja at import time."""
    result = probe(NOTMIWAE_FAST_BACKEND="jit", NOTMIWAE_FAST_JIT_DIR=str(tmp_path))
    assert result["name"] == "jit"
    assert result["cpu"] and result["library"].startswith(str(tmp_path))
    assert result["max_err"] < 1e-12 and result["grad_finite"]
    assert result["bound_rel_err"] < 1e-12  # gauss_bound's kernels are built too
