"""The command line's deployment and image commands: export, impute-image, train-image."""

from __future__ import annotations

import errno
import os

import numpy as np
import pandas as pd
import pytest
import torch

from notmiwae_fast import images
from notmiwae_fast.cli import main


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)) @ rng.normal(size=(4, 4))
    x[rng.random(x.shape) < 0.2] = np.nan
    pd.DataFrame(x, columns=list("abcd")).to_csv(folder / "data.csv", index=False)
    assert main(["fit", str(folder / "data.csv"), str(folder / "model.pt"), "--max-iter", "50",
                 "--quiet"]) == 0
    return folder


def test_export_torchscript_matches_the_fitted_imputer(fitted, tmp_path):
    out = tmp_path / "imputer.pt"
    assert main(["export", str(fitted / "model.pt"), "--out", str(out), "--quiet",
                 "--n-samples", "200"]) == 0
    imputer = torch.load(fitted / "model.pt", weights_only=False)
    df = pd.read_csv(fitted / "data.csv")
    scripted = torch.jit.load(str(out))
    x = torch.tensor(df.values, dtype=torch.float32)
    result = scripted(x, (~x.isnan()).float())
    observed = ~x.isnan()
    assert torch.equal(result[observed], x[observed]) and torch.isfinite(result).all()
    # imputations in original units, close to the imputer's own (different noise)
    expected = torch.tensor(imputer.transform(df).values, dtype=torch.float32)
    assert (result - expected)[~observed].abs().mean() < 0.5 * x[observed].std()


def test_export_onnx_and_refusals(fitted, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    out = tmp_path / "imputer.onnx"
    assert main(["export", str(fitted / "model.pt"), "--format", "onnx", "--out", str(out),
                 "--quiet", "--n-samples", "20"]) == 0
    assert out.is_file() and not (tmp_path / "imputer.onnx.data").exists()
    assert main(["export", str(fitted / "model.pt"), "--out", str(out), "--quiet"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_failed_export_keeps_the_existing_file(fitted, tmp_path, capsys, monkeypatch, fmt):
    """A write that fails (here the disk fills up) is one line with status 2, and the file
    already there survives: the export goes to a temporary file, then is renamed."""
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / "imputer.out"
    out.write_bytes(b"the previous export")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", disk_full)
    assert main(["export", str(fitted / "model.pt"), "--format", fmt, "--out", str(out),
                 "--force", "--quiet", "--n-samples", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert os.strerror(errno.ENOSPC) in err and str(out) in err
    assert out.read_bytes() == b"the previous export"
    assert os.listdir(tmp_path) == ["imputer.out"]  # no temporary file left


def test_export_of_a_file_that_is_no_model_names_it(fitted, tmp_path, capsys):
    data = fitted / "data.csv"
    assert main(["export", str(data), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"model file {data} cannot be read" in err
    assert not (tmp_path / "x.pt").exists()


def test_impute_image_checks_the_output_format_first(tmp_path, capsys, monkeypatch):
    """An output Pillow cannot write (unknown suffix; alpha as JPEG) is refused before
    the imputation, naming the output."""
    PIL = pytest.importorskip("PIL.Image")
    rgba = (np.random.default_rng(1).random((20, 20, 4)) * 255).astype(np.uint8)
    PIL.fromarray(rgba).save(tmp_path / "in.png")

    def never(*args, **kwargs):
        raise AssertionError("imputed before checking the output")
    monkeypatch.setattr(images, "impute_image", never)
    for name, fragment in [("out.xyz", ".xyz"), ("out.jpg", "JPEG")]:
        out = tmp_path / name
        assert main(["impute-image", str(tmp_path / "in.png"), str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"output {out}" in err and fragment in err, err
        assert not out.exists()


def test_impute_image_round_trip_and_errors(tmp_path, capsys):
    PIL = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    rgb = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    PIL.fromarray(rgb).save(tmp_path / "in.png")
    assert main(["impute-image", str(tmp_path / "in.png"), str(tmp_path / "out.png"),
                 "--quiet", "--n-samples", "5"]) == 0
    out = np.asarray(PIL.open(tmp_path / "out.png"))
    kept = rgb < 0.75 * 255
    assert out.shape == rgb.shape and np.array_equal(out[kept], rgb[kept])
    PIL.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    assert main(["impute-image", str(tmp_path / "grey.png"), str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "1 colour channel(s); the model was trained on 3" in err
    assert main(["impute-image", str(tmp_path / "in.png"), str(tmp_path / "in.png")]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert main(["impute-image", str(tmp_path / "in.png"), str(tmp_path / "o.png"),
                 "--clip-level", "1.5"]) == 2
    assert "--clip-level must be in (0, 1]" in capsys.readouterr().err


def test_train_image_writes_a_loadable_model(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    monkeypatch.setattr(images, "bundled_photographs",
                        lambda names=None: {"a": rng.random((40, 40, 3)).astype(np.float32)})
    out = tmp_path / "m.pt"
    assert main(["train-image", str(out), "--steps", "3", "--patches", "50", "--patch", "8",
                 "--width", "4", "--latent-dim", "3", "--batch-size", "8", "--quiet"]) == 0
    model = images.load_image_model(str(out))
    assert model.image_shape == (3, 8, 8) and int(model.n_train_steps) == 3


def test_bundled_image_model_loads():
    model = images.load_image_model()
    assert model.image_shape == (3, 16, 16) and model.out_dist == "bern"
    assert int(model.n_train_steps) > 0
