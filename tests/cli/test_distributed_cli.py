"""The command line under torchrun (2 CPU processes, gloo): ``fit`` writes one model,
``impute`` gives the rows of a single-process run in the same order, a folder of images
gives the images of a single-process run, and a rank that fails makes the job fail with
one clear line and no output. Plus the single-process sides of the same code (fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from notmiwae_fast import distributed
from notmiwae_fast.cli import main
from notmiwae_fast.distributed import group
from notmiwae_fast.impute.imputer import NotMIWAEImputer

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--max-iter", "30", "--hidden-dim", "8", "--impute-samples", "16", "--quiet"]

# Run by torchrun instead of the CLI module: on rank 1, an injected failure in the
# imputation ("impute") or in the 4th training step ("train"), then the CLI as usual.
INJECT = """
import os, sys
where = sys.argv.pop(1)
if os.environ["RANK"] == "1":
    from notmiwae_fast.impute import imputer
    from notmiwae_fast.train import trainer
    if where == "impute":
        def broken(self, arr, first_row):
            raise RuntimeError("injected failure")
        imputer._BaseIWImputer._impute_rows = broken
    else:
        real = trainer.Trainer.train_step
        def step(self, batch):
            if self.global_step == 3:
                raise FloatingPointError("injected non-finite loss")
            return real(self, batch)
        trainer.Trainer.train_step = step
from notmiwae_fast.cli import run
run()
"""


def torchrun(*args, cwd: Path, script: str | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2`` of the CLI (or of ``script``), one
    thread per process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTMIWAE_FAST_DEBUG", None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
    ] + ([script] if script else ["-m", "notmiwae_fast.cli"])
    return subprocess.run(
        command + [str(a) for a in args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("notmiwae-fast ")]


def leftovers(folder: Path) -> list[str]:
    """Temporary or shard files an atomic writer would leave behind."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".shard-" in p.name]


@pytest.fixture
def table(tmp_path) -> Path:
    """600 rows (three blocks of 256 rows: rank 0 imputes two, rank 1 one), MNAR gaps."""
    g = np.random.default_rng(0)
    x = 5 + g.normal(size=(600, 1)) @ np.ones((1, 4)) + 0.3 * g.normal(size=(600, 4))
    x[:, 0] = np.where(x[:, 0] > 5, np.nan, x[:, 0])
    x[:, 1] = np.where(x[:, 1] > 5.5, np.nan, x[:, 1])
    path = tmp_path / "data.csv"
    pd.DataFrame(x, columns=list("abcd")).to_csv(path, index=False)
    return path


def write_images(folder: Path) -> list[str]:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(3)
    names = ["b.png", "a.png", "c.jpg"]
    for i, name in enumerate(names):
        Image.fromarray((rng.random((18 + i, 21, 3)) * 255).astype(np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "sub" / "e.png")
    return sorted(names)


def read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img)


# -- under torchrun --------------------------------------------------------------------
@pytest.mark.slow
def test_fit_and_impute_under_torchrun(table, tmp_path):
    model = tmp_path / "model.pt"
    proc = torchrun("fit", table, model, *FAST[:-1], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("fitted NotMIWAEImputer") == 1  # rank 0 alone prints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "model.pt"]
    imputer = torch.load(model, weights_only=False)
    assert imputer.n_iter_ == 30 and np.isfinite(imputer.loss_curve_).all()

    proc = torchrun("impute", table, "out2.csv", "--model", model, "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        main(["impute", str(table), str(tmp_path / "out1.csv"), "--model", str(model), "--quiet"])
        == 0
    )
    given, one, two = (pd.read_csv(tmp_path / n) for n in ("data.csv", "out1.csv", "out2.csv"))
    assert list(two.columns) == list("abcd") and len(two) == 600
    observed = given.notna().to_numpy()
    assert np.array_equal(two.to_numpy()[observed], given.to_numpy()[observed])
    assert not two.isna().any().any()
    np.testing.assert_allclose(two.to_numpy(), one.to_numpy(), rtol=1e-6, atol=1e-9)
    assert not leftovers(tmp_path)


@pytest.mark.slow
def test_a_failing_rank_fails_the_job_and_writes_nothing(table, tmp_path):
    script = tmp_path / "inject.py"
    script.write_text(INJECT)
    model = tmp_path / "model.pt"
    assert main(["fit", str(table), str(model), *FAST]) == 0

    # A failure the ranks agree on: every rank stops, rank 0 prints one line.
    proc = torchrun(
        "impute",
        "impute",
        table,
        "out.csv",
        "--model",
        model,
        "--quiet",
        cwd=tmp_path,
        script=str(script),
    )
    assert proc.returncode != 0
    assert error_lines(proc) == [
        "notmiwae-fast impute: error: imputation failed on rank 1: RuntimeError: injected failure"
    ], proc.stderr
    assert not (tmp_path / "out.csv").exists() and not leftovers(tmp_path)

    # A rank dying in the middle of data-parallel training: the job ends, no model file.
    proc = torchrun("train", "fit", table, "model2.pt", *FAST, cwd=tmp_path, script=str(script))
    assert proc.returncode != 0
    assert "notmiwae-fast fit: error: rank 1: injected non-finite loss" in error_lines(proc)
    assert not (tmp_path / "model2.pt").exists() and not leftovers(tmp_path)


@pytest.mark.slow
def test_image_folder_under_torchrun_equals_one_process(tmp_path):
    names = write_images(tmp_path / "in")
    proc = torchrun("impute-image", "in", "out2", "--n-samples", "3", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        main(
            [
                "impute-image",
                str(tmp_path / "in"),
                str(tmp_path / "out1"),
                "--n-samples",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    for folder in ("out1", "out2"):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == names + [
            distributed.MANIFEST_NAME
        ]
    manifest = json.loads((tmp_path / "out2" / distributed.MANIFEST_NAME).read_text())
    assert manifest["images"] == names and manifest["processes"] == 2 and manifest["complete"]
    for name in names:
        given, one, two = (read(tmp_path / f / name) for f in ("in", "out1", "out2"))
        np.testing.assert_array_equal(two, one)
        if name.endswith(".png"):
            kept = given < 0.75 * 255
            assert np.array_equal(two[kept], given[kept]) and not np.array_equal(two, given)


# -- the same code in one process (fast) --------------------------------------------------
def test_imputations_do_not_depend_on_how_the_rows_are_split():
    g = np.random.default_rng(1)
    x = g.normal(size=(600, 3))
    x[g.random(x.shape) < 0.2] = np.nan
    imp = NotMIWAEImputer(max_iter=5, hidden_dim=8, n_impute_samples=8, random_state=0).fit(x)
    whole = imp.transform(x)
    arr = imp._check_X(x, reset=False)
    parts = np.concatenate(
        [
            imp._impute_rows(arr[:256], first_row=0),
            imp._impute_rows(arr[256:512], first_row=256),
            imp._impute_rows(arr[512:], first_row=512),
        ]
    )
    np.testing.assert_array_equal(parts, whole)
    assert np.array_equal(distributed.transform_sharded(imp, x), whole)
    # the same rows imputed as if they were the second block: other noise
    assert not np.array_equal(imp._impute_rows(arr[:256], first_row=256), whole[:256])
    with pytest.raises(ValueError, match="argument 'first_row' must be a multiple of 256"):
        imp._impute_rows(arr[:10], first_row=10)
    # 4 processes on 600 rows: the last one's share is empty and starts at row 600 (not a
    # multiple of 256); it must give nothing rather than fail the run.
    start, stop = distributed.shard_bounds(600, 4, 3, 256)
    assert (start, stop) == (600, 600)
    assert imp._impute_rows(arr[start:stop], first_row=start).shape == (0, 3)


def test_collectively_without_a_group_and_rank_failure_messages():
    with pytest.raises(KeyError, match="plain"):
        with distributed.collectively("a step"):
            raise KeyError("plain")
    both = distributed.RankFailure("imputation", [(0, "ValueError: x"), (1, "ValueError: x")], 2)
    assert str(both) == "ValueError: x (on all 2 processes)"
    one = distributed.RankFailure("imputation", [(1, "boom")], 4, note="nothing written")
    assert str(one) == "imputation failed on rank 1: boom; nothing written"
    mixed = distributed.RankFailure("step", [(0, "a"), (2, "b"), (3, "a")], 4)
    assert str(mixed) == "step failed on ranks 0, 3: a; rank 2: b"


def test_image_folder_in_one_process(tmp_path):
    from notmiwae_fast import images

    model = images.load_image_model()
    names = write_images(tmp_path / "in")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / distributed.MANIFEST_NAME).write_text("stale")
    manifest = distributed.impute_image_folder(
        model, tmp_path / "in", tmp_path / "out", n_samples=3, seed=5
    )
    assert manifest["images"] == names and manifest["processes"] == 1
    # image i of the sorted list: seed + i, the same as impute_image on its own
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5 + 1)
        alone = images.impute_image(
            model, read(tmp_path / "in" / "b.png"), n_samples=3, progress=False
        )
    np.testing.assert_array_equal(read(tmp_path / "out" / "b.png"), alone)

    with pytest.raises(ValueError, match=r"argument 'out_dir': 3 output image\(s\) exist"):
        distributed.impute_image_folder(model, tmp_path / "in", tmp_path / "out")
    with pytest.raises(ValueError, match="argument 'out_dir' must differ from 'in_dir'"):
        distributed.impute_image_folder(model, tmp_path / "in", tmp_path / "in")
    with pytest.raises(ValueError, match="argument 'in_dir': .* is not a folder"):
        distributed.impute_image_folder(model, tmp_path / "nope", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"argument 'in_dir': no images \(.png"):
        distributed.impute_image_folder(model, tmp_path / "empty", tmp_path / "o")

    # A file that fails: named, the others written, no manifest (a stale one removed).
    (tmp_path / "in" / "a.png").write_bytes(b"not a png")
    with pytest.raises(
        distributed.RankFailure,
        match=r"failed: 1 of 3 image\(s\) failed: a.png: ValueError: input "
        r"image .* cannot be read .*; no manifest written in",
    ):
        distributed.impute_image_folder(
            model, tmp_path / "in", tmp_path / "out", overwrite=True, n_samples=3
        )
    assert not (tmp_path / "out" / distributed.MANIFEST_NAME).exists()
    assert not leftovers(tmp_path / "out")


def test_image_folder_keeps_exif_and_icc(tmp_path):
    """As a single image does (cli impute-image): orientation and colour profile."""
    PIL = pytest.importorskip("PIL.Image")
    from PIL import ImageCms

    from notmiwae_fast import images

    rgb = (np.linspace(0, 250, 24 * 20 * 3) % 256).astype(np.uint8).reshape(20, 24, 3)
    img = PIL.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (tmp_path / "in").mkdir()
    img.save(tmp_path / "in" / "a.jpg", quality=95, exif=exif.tobytes(), icc_profile=icc)
    distributed.impute_image_folder(
        images.load_image_model(), tmp_path / "in", tmp_path / "out", n_samples=2
    )
    with PIL.open(tmp_path / "out" / "a.jpg") as out:
        assert out.getexif().get(0x0112) == 6 and out.info.get("icc_profile") == icc


def test_impute_image_folder_command_errors(tmp_path, capsys):
    write_images(tmp_path / "in")
    (tmp_path / "file.png").write_bytes(b"x")
    assert main(["impute-image", str(tmp_path / "in"), str(tmp_path / "file.png")]) == 2
    assert "is a file; the input" in capsys.readouterr().err
    assert main(["impute-image", str(tmp_path / "in"), str(tmp_path / "in")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is the input folder; input images are never" in err


@pytest.mark.parametrize("fails", [False, True])
def test_the_command_line_waits_for_every_rank_before_closing_the_group(
    table, tmp_path, monkeypatch, fails
):
    """After a command that succeeded every rank meets in a barrier before the group is
    closed (it is what lets gloo's threads release the last collective's tensors before
    interpreter exit, which otherwise aborts now and then); after a failure a peer may
    be gone, so nothing waits. The group itself is faked: the calls are recorded."""
    from notmiwae_fast import cli

    calls = []
    monkeypatch.setattr(cli, "_start_distributed", lambda args: True)
    monkeypatch.setattr(
        distributed, "shutdown", lambda wait_for_all=True: calls.append(wait_for_all)
    )
    argv = [
        "fit",
        str(table if not fails else tmp_path / "absent.csv"),
        str(tmp_path / "m.pt"),
        *FAST,
    ]
    assert main(argv) == (2 if fails else 0)
    assert calls == [not fails]


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_the_command_leaves_a_torchrun_process_without_finalisation(monkeypatch, world_size):
    """run() exits with main()'s status: through SystemExit in one process, through
    os._exit (output flushed, no interpreter finalisation, where gloo's leftover threads
    can abort the process) under torchrun."""
    from notmiwae_fast import cli

    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setattr(cli, "main", lambda: 3)
    left = []

    def fake_exit(status):
        left.append(status)
        raise SystemExit("os._exit")

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    with pytest.raises(SystemExit) as leaving:
        cli.run()
    if world_size == "1":
        assert leaving.value.code == 3 and left == []
    else:
        assert leaving.value.code == "os._exit" and left == [3]


@pytest.mark.parametrize("wait_for_all", [True, False])
def test_shutdown_pauses_before_closing_the_group(monkeypatch, wait_for_all):
    """shutdown(): barrier (when asked), then a pause of SETTLE_S with the GIL released
    (gloo's worker threads drop the last collectives' tensors while the interpreter
    runs), then destroy_process_group. The group is faked: the calls are recorded."""
    calls = []
    fake = group.dist
    monkeypatch.setattr(fake, "is_available", lambda: True)
    monkeypatch.setattr(fake, "is_initialized", lambda: True)
    monkeypatch.setattr(fake, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(fake, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(group.time, "sleep", lambda s: calls.append(("sleep", s)))
    group.shutdown(wait_for_all=wait_for_all)
    assert calls == ["barrier"] * wait_for_all + [("sleep", group.SETTLE_S), "destroy"]
    assert group.SETTLE_S >= 0.05
