"""examples/cpp_impute: built with CMake against the libtorch of the torch wheel, it
loads the TorchScript imputer (and the operator library), imputes a CSV with empty
cells, and matches Python to 1e-5."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import notmiwae_fast as nf
from notmiwae_fast import export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake"),
]


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    build = tmp_path_factory.mktemp("cpp") / "build"
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "examples", "cpp_impute", "build.sh"), str(build)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return str(build / "cpp_impute")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = nf.NotMIWAE(4, hidden_dim=16, n_samples=8)
    x = torch.randn(64, 4)
    s = (torch.rand(64, 4) > 0.3).float()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x * s, s), batch_size=16)
    nf.Trainer(m, progress=False).train(loader, n_epochs=2)
    return m


def write_csv(path, x):
    with open(path, "w") as f:
        f.write("a,b,c,d\n")
        for row in x.tolist():
            f.write(",".join("" if np.isnan(v) else repr(v) for v in row) + "\n")


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "pure"])
def test_cpp_program_matches_python(binary, model, fused, tmp_path):
    scripted = export.to_torchscript(model, tmp_path / "imputer.pt", n_samples=50, fused=fused)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 4, generator=g)
    x[torch.rand(20, 4, generator=g) < 0.3] = float("nan")
    write_csv(tmp_path / "in.csv", x)
    library = nf.library_path() if fused else "-"
    proc = subprocess.run(
        [
            binary,
            library,
            str(tmp_path / "imputer.pt"),
            str(tmp_path / "in.csv"),
            str(tmp_path / "out.csv"),
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = np.loadtxt(tmp_path / "out.csv", delimiter=",", skiprows=1)
    torch.manual_seed(7)
    expected = scripted(x, (~x.isnan()).float()).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    observed = ~np.isnan(x.numpy())
    np.testing.assert_allclose(out[observed], x.numpy()[observed], rtol=1e-7)
    assert not np.isnan(out).any()


def test_cpp_program_errors_are_one_line(binary, model, tmp_path):
    export.to_torchscript(model, tmp_path / "imputer.pt", n_samples=5)
    (tmp_path / "bad.csv").write_text("a,b,c,d\n1,2,x,4\n")
    proc = subprocess.run(
        [
            binary,
            nf.library_path(),
            str(tmp_path / "imputer.pt"),
            str(tmp_path / "bad.csv"),
            str(tmp_path / "out.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "cpp_impute: " + str(tmp_path / "bad.csv") + ": not a number: 'x'"
    (tmp_path / "wide.csv").write_text("a,b,c\n1,2,3\n")
    proc = subprocess.run(
        [
            binary,
            nf.library_path(),
            str(tmp_path / "imputer.pt"),
            str(tmp_path / "wide.csv"),
            str(tmp_path / "out.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "argument 'x' must have shape [B, 4]" in proc.stderr
    same = subprocess.run(
        [
            binary,
            "-",
            str(tmp_path / "imputer.pt"),
            str(tmp_path / "bad.csv"),
            str(tmp_path / "bad.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert same.returncode == 1 and "must not be IN.csv" in same.stderr
    assert (tmp_path / "bad.csv").read_text() == "a,b,c,d\n1,2,x,4\n"
