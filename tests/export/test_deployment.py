"""The operator library outside the Python package: a TorchScript function calling
torch.ops.notmiwae_fast.* is scripted, saved, and then loaded and run (forward and
backward) in a fresh Python process that loads only torch and the shared library."""

from __future__ import annotations

import json

import torch
from helpers import run_python

import notmiwae_fast


@torch.jit.script
def scripted_bound(log_w: torch.Tensor) -> torch.Tensor:
    return torch.ops.notmiwae_fast.iw_logmeanexp(log_w).sum()


def test_torchscript_runs_and_backprops_in_a_process_without_the_package(tmp_path):
    path = tmp_path / "bound.pt"
    scripted_bound.save(str(path))
    log_w = torch.randn(4, 6, dtype=torch.float64)
    torch.save(log_w, tmp_path / "log_w.pt")

    code = f"""
import json, sys, torch
torch.ops.load_library({notmiwae_fast.library_path()!r})
fn = torch.jit.load({str(path)!r})
log_w = torch.load({str(tmp_path / "log_w.pt")!r}).requires_grad_(True)
value = fn(log_w)
value.backward()
print(json.dumps({{"value": value.item(), "grad": log_w.grad.tolist(),
                   "package_imported": "notmiwae_fast" in sys.modules}}))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["package_imported"] is False
    expected = torch.logsumexp(log_w, 1) - torch.log(torch.tensor(6.0, dtype=torch.float64))
    assert abs(result["value"] - expected.sum().item()) < 1e-12
    # d/dlog_w of Σ_b logmeanexp = softmax over K: C++ autograd works there too.
    torch.testing.assert_close(
        torch.tensor(result["grad"], dtype=torch.float64),
        torch.softmax(log_w, 1),
        rtol=1e-12,
        atol=1e-14,
    )
