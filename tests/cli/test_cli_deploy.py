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
    assert (
        main(
            [
                "fit",
                str(folder / "data.csv"),
                str(folder / "model.pt"),
                "--max-iter",
                "50",
                "--quiet",
            ]
        )
        == 0
    )
    return folder


def test_export_torchscript_matches_the_fitted_imputer(fitted, tmp_path):
    out = tmp_path / "imputer.pt"
    assert (
        main(
            ["export", str(fitted / "model.pt"), "--out", str(out), "--quiet", "--n-samples", "200"]
        )
        == 0
    )
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
    assert (
        main(
            [
                "export",
                str(fitted / "model.pt"),
                "--format",
                "onnx",
                "--out",
                str(out),
                "--quiet",
                "--n-samples",
                "20",
            ]
        )
        == 0
    )
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
    assert (
        main(
            [
                "export",
                str(fitted / "model.pt"),
                "--format",
                fmt,
                "--out",
                str(out),
                "--force",
                "--quiet",
                "--n-samples",
                "10",
            ]
        )
        == 2
    )
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
    assert (
        main(
            [
                "impute-image",
                str(tmp_path / "in.png"),
                str(tmp_path / "out.png"),
                "--quiet",
                "--n-samples",
                "5",
            ]
        )
        == 0
    )
    out = np.asarray(PIL.open(tmp_path / "out.png"))
    kept = rgb < 0.75 * 255
    assert out.shape == rgb.shape and np.array_equal(out[kept], rgb[kept])
    PIL.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")  # the bundled grey model
    assert (
        main(["impute-image", str(tmp_path / "grey.png"), str(tmp_path / "g.png"), "--quiet"]) == 0
    )
    grey_out = np.asarray(PIL.open(tmp_path / "g.png"))
    lost = rgb[..., 0] >= 0.75 * 255
    assert np.array_equal(grey_out[~lost], rgb[..., 0][~lost])
    assert (grey_out[lost] >= np.ceil(0.75 * 255)).all()
    model_file = tmp_path / "rgb.pt"
    images.save_image_model(images.load_image_model(), model_file)
    assert (
        main(
            [
                "impute-image",
                str(tmp_path / "grey.png"),
                str(tmp_path / "g2.png"),
                "--model",
                str(model_file),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "1 colour channel(s); the model was trained on 3" in err
    assert main(["impute-image", str(tmp_path / "in.png"), str(tmp_path / "in.png")]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert (
        main(
            [
                "impute-image",
                str(tmp_path / "in.png"),
                str(tmp_path / "o.png"),
                "--clip-level",
                "1.5",
            ]
        )
        == 2
    )
    assert "--clip-level must be in (0, 1]" in capsys.readouterr().err


def test_train_image_writes_a_loadable_model(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    monkeypatch.setattr(
        images,
        "bundled_photographs",
        lambda names=None: {"a": rng.random((40, 40, 3)).astype(np.float32)},
    )
    out = tmp_path / "m.pt"
    assert (
        main(
            [
                "train-image",
                str(out),
                "--steps",
                "3",
                "--per-image",
                "50",
                "--batch-size",
                "16",
                "--quiet",
            ]
        )
        == 0
    )
    model = images.load_image_model(str(out))
    assert isinstance(model, images.ClippedPixelModel) and model.channels == 3
    assert (
        main(
            [
                "train-image",
                str(tmp_path / "g.pt"),
                "--steps",
                "3",
                "--per-image",
                "50",
                "--channels",
                "1",
                "--complete",
                "--kind",
                "miwae",
                "--quiet",
            ]
        )
        == 0
    )
    grey = images.load_image_model(str(tmp_path / "g.pt"))
    assert grey.channels == 1 and grey.kind == "miwae"


def test_train_image_on_ones_own_photographs(tmp_path, capsys):
    PIL = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(3)
    (tmp_path / "photos").mkdir()
    for i in range(2):
        PIL.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(
            tmp_path / "photos" / f"p{i}.png"
        )
    out = tmp_path / "m.pt"
    assert (
        main(
            [
                "train-image",
                str(out),
                "--photos",
                str(tmp_path / "photos"),
                "--steps",
                "2",
                "--per-image",
                "20",
                "--complete",
            ]
        )
        == 0
    )
    assert "2 photographs (complete photographs" in capsys.readouterr().out
    assert main(["train-image", str(out), "--photos", str(tmp_path / "nope"), "--force"]) == 2
    assert "--photos:" in capsys.readouterr().err
    assert main(["train-image", str(tmp_path / "x.pt"), "--clip-levels", "0", "0.7"]) == 2
    assert "--clip-levels must be in (0, 1]" in capsys.readouterr().err


def test_bundled_image_model_loads():
    for channels in (3, 1):
        model = images.load_image_model(channels=channels)
        assert isinstance(model, images.ClippedPixelModel) and model.channels == channels
        assert model.kind == "notmiwae"


def _png16(path, array):
    """A 16-bit RGB PNG (Pillow cannot write one)."""
    import struct
    import zlib

    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[r].astype(">u2").tobytes() for r in range(h))

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_read_image_converts_or_refuses_other_modes(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    from notmiwae_fast._common.image_io import read_image

    rng = np.random.default_rng(0)
    rgb = (rng.random((16, 16, 3)) * 200).astype(np.uint8)
    PIL.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = read_image(tmp_path / "cmyk.jpg")  # not RGB + K as alpha
    expected = np.asarray(PIL.open(tmp_path / "cmyk.jpg").convert("RGB"))
    assert cmyk.shape == (16, 16, 3) and np.array_equal(cmyk, expected)
    PIL.fromarray(rgb).convert("LAB").save(tmp_path / "lab.tif")
    assert read_image(tmp_path / "lab.tif").shape == (16, 16, 3)
    PIL.fromarray(rng.random((16, 16)) > 0.5).save(tmp_path / "bw.png")  # 1-bit -> grey
    bw = read_image(tmp_path / "bw.png")
    assert bw.dtype == np.uint8 and bw.shape == (16, 16) and set(np.unique(bw)) == {0, 255}
    deep = (rng.random((8, 8, 3)) * 65535).astype(np.uint16)
    _png16(tmp_path / "rgb16.png", deep)  # Pillow would read it as 8-bit RGB
    with pytest.raises(
        ValueError,
        match=f"input image {tmp_path / 'rgb16.png'}: 16-bit RGB images are not supported",
    ):
        read_image(tmp_path / "rgb16.png")
    grey = np.array([[0, 1000], [65535, 7]], np.int32)
    PIL.fromarray(grey).save(tmp_path / "i32.tif")  # mode I, 32-bit integers
    assert read_image(tmp_path / "i32.tif").tolist() == grey.tolist()
    PIL.fromarray(grey * 3).save(tmp_path / "big.tif")  # no longer wraps modulo 65536
    with pytest.raises(
        ValueError,
        match=f"input image {tmp_path / 'big.tif'}: 32-bit "
        "integer values must lie in \\[0, 65535\\]",
    ):
        read_image(tmp_path / "big.tif")
    PIL.new("I;16", (4, 4), 40000).save(tmp_path / "g16.png")  # 16-bit grey is read
    g16 = read_image(tmp_path / "g16.png")
    assert g16.dtype == np.uint16 and (g16 == 40000).all()


def test_impute_image_jpeg_keeps_quality_exif_and_icc(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    from PIL import ImageCms

    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 180, 48)[None, :, None] + np.linspace(0, 40, 32)[:, None, None]
    rgb = (smooth + rng.random((32, 48, 3)) * 20).astype(np.uint8)
    rgb[4:8, 4:8] = 255
    img = PIL.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate to display
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img.save(tmp_path / "in.jpg", quality=95, subsampling=0, exif=exif.tobytes(), icc_profile=icc)
    src = np.asarray(PIL.open(tmp_path / "in.jpg")).astype(int)
    for name in ("out.jpg", "out.png"):
        assert (
            main(
                [
                    "impute-image",
                    str(tmp_path / "in.jpg"),
                    str(tmp_path / name),
                    "--quiet",
                    "--n-samples",
                    "2",
                ]
            )
            == 0
        )
        with PIL.open(tmp_path / name) as out:
            assert out.getexif().get(0x0112) == 6 and out.info.get("icc_profile") == icc
            values = np.asarray(out).astype(int)
    kept = src < 0.75 * 255
    jpeg = np.asarray(PIL.open(tmp_path / "out.jpg")).astype(int)
    change = np.abs(jpeg - src)[kept]  # quality 75, 4:2:0 changed most of them
    assert change.mean() < 1 and np.mean(change > 0) < 0.3, (change.mean(), change.max())
    assert np.array_equal(values[kept], src[kept])  # PNG: exact


def test_impute_image_help_names_what_is_read():
    from notmiwae_fast.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = " ".join(sub.choices["impute-image"].description.split())
    assert "8-bit grey or RGB, 16-bit grey" in text and "16-bit colour is refused" in text
    assert "8 or 16 bit, grey or RGB" not in text


def test_train_image_checks_its_sizes(tmp_path, capsys):
    base = ["train-image", str(tmp_path / "m.pt"), "--steps", "3", "--quiet"]
    for option in ("--steps", "--batch-size", "--n-samples", "--latent-dim", "--per-image"):
        with pytest.raises(SystemExit) as exit_:
            main(base + [option, "0"])
        assert exit_.value.code == 2
        assert f"argument {option}: must be an int >= 1" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
