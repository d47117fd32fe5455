"""Reliability and security of the files the package reads and writes: loading a model or
checkpoint never runs code, outputs that are not regular files are never replaced,
unwritable outputs are found before training, a failed final write keeps the model, and
a damaged checkpoint is refused whole, naming the file."""

from __future__ import annotations

import errno
import os
import re
import stat

import numpy as np
import pandas as pd
import pytest
import torch

import notmiwae_fast as nf
from notmiwae_fast import export, utils
from notmiwae_fast._common import io as _io
from notmiwae_fast.cli import CLIError, _check_output, main
from notmiwae_fast.impute.files import load_imputer, save_imputer

D = 4


class RunsCode:
    """Unpickling it runs a shell command (what a hostile model file would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def one_line(text: str) -> str:
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("safety")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, D)) @ rng.normal(size=(D, D))
    x[rng.random(x.shape) < 0.2] = np.nan
    pd.DataFrame(x, columns=list("abcd")).to_csv(folder / "data.csv", index=False)
    assert (
        main(
            [
                "fit",
                str(folder / "data.csv"),
                str(folder / "model.pt"),
                "--max-iter",
                "30",
                "--hidden-dim",
                "8",
                "--impute-samples",
                "8",
                "--quiet",
            ]
        )
        == 0
    )
    return folder


def small_trainer(hidden_dim=16, **kwargs):
    utils.set_seed(0)
    return nf.Trainer(nf.NotMIWAE(D, hidden_dim=hidden_dim, n_samples=5), progress=False, **kwargs)


def batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48, D, generator=g)
    s = (torch.rand(48, D, generator=g) > 0.25).float()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x * s, s), batch_size=16)


def snapshot(trainer):
    return (
        {k: v.clone() for k, v in trainer.model.state_dict().items()},
        {
            k: {n: t.clone() for n, t in v.items()}
            for k, v in trainer.optimizer.state_dict()["state"].items()
        },
    )


def assert_unchanged(trainer, before):
    model, optimizer = before
    after_model, after_optimizer = snapshot(trainer)
    assert model.keys() == after_model.keys()
    assert all(torch.equal(model[k], after_model[k]) for k in model)
    assert optimizer.keys() == after_optimizer.keys()
    assert trainer.epoch == 0 and trainer.global_step == 0


# -- 1. loading never runs code ---------------------------------------------------------------
def test_a_model_file_that_runs_code_is_refused_by_impute_and_export(fitted, tmp_path, capsys):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save(RunsCode(marker), evil)
    for argv in (
        ["impute", str(fitted / "data.csv"), str(tmp_path / "out.csv"), "--model", str(evil)],
        ["export", str(evil), "--out", str(tmp_path / "out.pt")],
    ):
        assert main(argv + ["--quiet"]) == 2
        err = one_line(capsys.readouterr().err)
        assert f"model file {evil} is refused" in err and "posix.system" in err
        assert not marker.exists()
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.pt").exists()
    with pytest.raises(ValueError, match=f"model file {re.escape(str(evil))} is refused"):
        load_imputer(evil)
    with pytest.raises(ValueError, match=f"model file {re.escape(str(evil))} is refused"):
        export.load_model(evil)
    assert not marker.exists()


def test_a_checkpoint_that_runs_code_is_refused_by_resume_from(tmp_path):
    marker = tmp_path / "code_ran"
    trainer = small_trainer()
    trainer.save_checkpoint(tmp_path / "good.pt")
    state = torch.load(tmp_path / "good.pt", weights_only=False)
    whole, hidden = tmp_path / "evil.pt", tmp_path / "hidden.pt"
    torch.save(RunsCode(marker), whole)
    torch.save({**state, "history": {"train_loss": [RunsCode(marker)]}}, hidden)
    fresh = small_trainer()
    before = snapshot(fresh)
    for path in (whole, hidden):
        with pytest.raises(ValueError, match=f"checkpoint {re.escape(str(path))} is refused"):
            fresh.train(batches(), n_epochs=1, resume_from=path)
        with pytest.raises(ValueError, match="pickled Python objects"):
            fresh.load_checkpoint(path)
        assert not marker.exists()
    assert_unchanged(fresh, before)


def test_an_imputer_pickled_whole_gets_one_line(fitted, tmp_path, capsys):
    """A file of the old format (the imputer object pickled) is refused, not loaded."""
    imputer = load_imputer(fitted / "model.pt")
    old = tmp_path / "old.pt"
    torch.save(imputer, old)
    assert (
        main(
            [
                "impute",
                str(fitted / "data.csv"),
                str(tmp_path / "o.csv"),
                "--model",
                str(old),
                "--quiet",
            ]
        )
        == 2
    )
    err = one_line(capsys.readouterr().err)
    assert f"model file {old} is refused" in err and "pickled Python objects" in err


def test_files_this_package_writes_hold_plain_data_only(fitted, tmp_path):
    """fit's model file names one callable, the package's own constructor of plain data;
    checkpoints and save_model files need none."""
    assert torch.serialization.get_unsafe_globals_in_checkpoint(fitted / "model.pt") == [
        "notmiwae_fast.impute.files._imputer_from_state"
    ]
    trainer = small_trainer(checkpoint_dir=tmp_path)
    trainer.train(batches(), n_epochs=1)
    assert isinstance(torch.load(tmp_path / "last.pt", weights_only=True), dict)
    export.save_model(trainer.model, tmp_path / "model.pt")
    assert torch.load(tmp_path / "model.pt", weights_only=True)["class"] == "NotMIWAE"


def test_saved_imputer_round_trip(fitted, tmp_path):
    """load_imputer gives the imputer fit saved: same parameters and imputations; so does
    torch.load(weights_only=False), as before; the global RNG is left alone."""
    df = pd.read_csv(fitted / "data.csv")
    rng_before = torch.get_rng_state()
    imputer = load_imputer(fitted / "model.pt")
    assert torch.equal(rng_before, torch.get_rng_state())
    same = torch.load(fitted / "model.pt", weights_only=False)
    assert type(same) is type(imputer) and same.get_params() == imputer.get_params()
    np.testing.assert_array_equal(same.transform(df), imputer.transform(df))
    save_imputer(imputer, tmp_path / "again.pt")
    np.testing.assert_array_equal(
        load_imputer(tmp_path / "again.pt").transform(df), imputer.transform(df)
    )
    assert imputer.missing_process_ == same.missing_process_


def test_a_loaded_model_goes_where_its_weights_were_loaded():
    """load_state_dict copies into the module's own tensors, which stay where it was
    built: the loaders move the module to the device of the loaded weights."""
    net = torch.nn.Linear(2, 3)
    weights = {k: v.to("meta") for k, v in net.state_dict().items()}
    assert _io.on_loaded_device(net, weights).weight.device.type == "meta"
    assert _io.on_loaded_device(torch.nn.Linear(2, 3), {}).weight.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_a_model_on_the_gpu_is_saved_for_the_cpu_and_loads_where_asked(tmp_path):
    """Files written from CUDA models hold CPU tensors (they load without a GPU);
    map_location="cuda" gives a model on the GPU (not a CPU model with its weights
    copied in)."""
    from notmiwae_fast import images

    utils.set_seed(0)
    model = nf.NotMIWAE(D, hidden_dim=8).cuda()
    export.save_model(model, tmp_path / "model.pt")
    image = images.load_image_model().cuda()
    images.save_image_model(image, tmp_path / "image.pt")
    for name in ("model.pt", "image.pt"):
        state = torch.load(tmp_path / name, map_location=None, weights_only=True)
        assert all(v.device.type == "cpu" for v in state["state_dict"].values())
    loaded = export.load_model(tmp_path / "model.pt", map_location="cuda")
    assert all(p.is_cuda for p in loaded.parameters())
    loaded_image = images.load_image_model(tmp_path / "image.pt", map_location="cuda")
    assert all(p.is_cuda for p in loaded_image.parameters())


@pytest.mark.parametrize("kind", ["miwae", "selfmasking", "nonlinear"])
def test_save_model_feeds_export(tmp_path, kind):
    utils.set_seed(0)
    model = (
        nf.MIWAE(D, hidden_dim=8)
        if kind == "miwae"
        else nf.NotMIWAE(D, hidden_dim=8, missing_process=kind, missing_hidden_dim=3)
    )
    model.set_standardization(torch.arange(D) * 1.0, torch.ones(D) * 2)
    model.n_train_steps += 1
    export.save_model(model, tmp_path / "model.pt")
    loaded = export.load_model(tmp_path / "model.pt")
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values())
    )
    assert (
        main(
            [
                "export",
                str(tmp_path / "model.pt"),
                "--out",
                str(tmp_path / "m.ts"),
                "--n-samples",
                "4",
                "--quiet",
            ]
        )
        == 0
    )


def test_loaded_files_must_be_what_they_claim(fitted, tmp_path, capsys):
    """A plain file that is no imputer (or a state of the wrong shape) is one line."""
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    assert (
        main(
            [
                "impute",
                str(fitted / "data.csv"),
                str(tmp_path / "o.csv"),
                "--model",
                str(plain),
                "--quiet",
            ]
        )
        == 2
    )
    assert f"model file {plain} does not hold a fitted imputer" in one_line(capsys.readouterr().err)
    model = nf.MIWAE(D, hidden_dim=8)
    export.save_model(model, plain)
    state = torch.load(plain, weights_only=True)
    state["config"]["hidden_dim"] = 9
    torch.save(state, plain)
    assert main(["export", str(plain), "--out", str(tmp_path / "x.pt"), "--quiet"]) == 2
    assert "state dict does not fit" in one_line(capsys.readouterr().err)


# -- 2. --force never replaces what is not a regular file ---------------------------------------
def test_force_never_replaces_a_fifo_or_a_folder(fitted, tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    data, model = str(fitted / "data.csv"), str(fitted / "model.pt")
    for target, kind in ((fifo, "a FIFO"), (folder, "a folder")):
        for argv in (
            ["fit", data, str(target), "--max-iter", "2"],
            ["impute", data, str(target), "--model", model],
            ["export", model, "--out", str(target)],
        ):
            assert main(argv + ["--force", "--quiet"]) == 2
            err = one_line(capsys.readouterr().err)
            assert f"output {target} exists and is {kind}" in err, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and folder.is_dir()
    assert sorted(os.listdir(tmp_path)) == ["fifo", "folder"]  # no temporary file left


def test_device_files_are_refused_without_writing_them(tmp_path):
    """/dev/null is only looked at (stat), never opened or replaced."""
    with pytest.raises(CLIError, match="output /dev/null exists and is a character device"):
        _check_output("/dev/null", [], force=True)
    with pytest.raises(ValueError, match="/dev/null exists and is a character device"):
        _io.check_replaceable("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_atomic_writers_refuse_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=f"output {re.escape(str(fifo))} exists and is a FIFO"):
        _io.save_atomic({"a": 1}, fifo)
    with pytest.raises(ValueError, match="is a FIFO"):
        small_trainer().save_checkpoint(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == ["fifo"]


# -- 3. outputs checked before the work; a failed final write keeps the model --------------------
def test_fit_checks_its_output_before_training(fitted, tmp_path, capsys, monkeypatch):
    def never(self, X, y=None):
        raise AssertionError("trained before checking the output")

    monkeypatch.setattr(nf.NotMIWAEImputer, "fit", never)
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    for out, fragment in (
        (afile / "m.pt", "cannot be written"),
        (afile / "sub" / "m.pt", f"{afile} is not a folder"),
    ):
        assert main(["fit", str(fitted / "data.csv"), str(out), "--quiet"]) == 2
        err = one_line(capsys.readouterr().err)
        assert f"output {out}" in err and fragment in err, err


def test_unwritable_folder_is_found_before_training(fitted, tmp_path, capsys, monkeypatch):
    """A folder that takes no new file (here: creating one fails as on a read-only file
    system; root ignores permission bits) is reported before training."""

    def never(self, X, y=None):
        raise AssertionError("trained before checking the output")

    monkeypatch.setattr(nf.NotMIWAEImputer, "fit", never)
    real = _io.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and os.fspath(dir) == str(tmp_path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(_io.tempfile, "mkstemp", read_only)
    out = tmp_path / "m.pt"
    assert main(["fit", str(fitted / "data.csv"), str(out), "--quiet"]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"output {out} cannot be written" in err and os.strerror(errno.EROFS) in err


def test_fit_creates_missing_folders(fitted, tmp_path):
    out = tmp_path / "new" / "deeper" / "m.pt"
    assert (
        main(
            [
                "fit",
                str(fitted / "data.csv"),
                str(out),
                "--max-iter",
                "2",
                "--hidden-dim",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    assert isinstance(load_imputer(out), nf.NotMIWAEImputer)


def test_failed_final_write_rescues_the_model(fitted, tmp_path, capsys, monkeypatch):
    """The write fails after training (the disk fills up): the model goes to the current
    folder instead, and the one-line error says where."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    out = tmp_path / "m.pt"
    assert (
        main(
            [
                "fit",
                str(fitted / "data.csv"),
                str(out),
                "--max-iter",
                "3",
                "--hidden-dim",
                "4",
                "--quiet",
            ]
        )
        == 2
    )
    err = one_line(capsys.readouterr().err)
    assert f"cannot write the model file {out}" in err and os.strerror(errno.ENOSPC) in err
    rescued = re.search(r"saved to (\S+) instead", err).group(1)
    assert os.path.dirname(rescued) == str(workdir) and not out.exists()
    imputer = load_imputer(rescued)
    assert imputer.n_iter_ == 3
    monkeypatch.undo()
    assert (
        main(
            [
                "impute",
                str(fitted / "data.csv"),
                str(tmp_path / "o.csv"),
                "--model",
                rescued,
                "--quiet",
            ]
        )
        == 0
    )


# -- 4. damaged checkpoints -----------------------------------------------------------------
def damaged_checkpoints(tmp_path) -> dict:
    trainer = small_trainer(checkpoint_dir=tmp_path)
    trainer.train(batches(), n_epochs=1)
    good = (tmp_path / "last.pt").read_bytes()
    state = torch.load(tmp_path / "last.pt", weights_only=False)  # our own file
    paths = {}

    def write(name, content) -> None:
        paths[name] = tmp_path / f"{name}.pt"
        if isinstance(content, bytes):
            paths[name].write_bytes(content)
        else:
            torch.save(content, paths[name])

    write("truncated", good[: len(good) // 2])
    write("random_bytes", np.random.default_rng(0).bytes(2000))
    write("empty", b"")
    write("no_optimizer", {k: v for k, v in state.items() if k != "optimizer"})
    other = small_trainer(hidden_dim=8)
    other.train(batches(), n_epochs=1)
    write("other_model_shape", other.state_dict())
    write("other_optimizer", {**state, "optimizer": other.optimizer.state_dict()})
    write("bad_rng", {**state, "rng": [{**state["rng"][0], "torch": torch.zeros(3)}]})
    write("bad_epoch", {**state, "epoch": "two"})
    write("not_a_dict", [1, 2, 3])
    return paths


# What the error says for each damage of damaged_checkpoints.
FRAGMENTS = {
    "truncated": "cannot be read: it is not a complete file written by torch.save",
    "random_bytes": "cannot be read: it is not a complete file written by torch.save",
    "empty": "cannot be read: it is empty",
    "no_optimizer": "is not a complete Trainer checkpoint: no 'optimizer'",
    "other_model_shape": "does not fit the model: 'encoder.net.0.weight' has shape [8, 4]",
    "other_optimizer": "does not fit the optimizer",
    "bad_rng": "its random states cannot be restored",
    "bad_epoch": "'epoch' is a str",
    "not_a_dict": "is not a Trainer checkpoint",
}


@pytest.mark.parametrize("damage", list(FRAGMENTS))
def test_damaged_checkpoint_is_refused_whole(tmp_path, damage):
    fragment = FRAGMENTS[damage]
    path = damaged_checkpoints(tmp_path)[damage]
    trainer = small_trainer()
    before = snapshot(trainer)
    rng = torch.get_rng_state()
    with pytest.raises(ValueError) as info:
        trainer.train(batches(), n_epochs=2, resume_from=path)
    message = str(info.value)
    assert f"checkpoint {path} " in message and fragment in message, message
    assert "\n" not in message
    assert_unchanged(trainer, before)
    assert torch.equal(rng, torch.get_rng_state())


def test_stale_temporary_files_are_removed_on_save_and_resume(tmp_path):
    stale = tmp_path / ".last.pt.k3x_9a2q.tmp"
    unrelated = [tmp_path / ".best.pt.k3x_9a2q.tmp", tmp_path / ".last.pt.notes.txt"]
    for path in [stale, *unrelated]:
        path.write_bytes(b"half a checkpoint")
    trainer = small_trainer(checkpoint_dir=tmp_path)
    trainer.train(batches(), n_epochs=1, save_best=False)
    assert not stale.exists() and all(p.exists() for p in unrelated)
    stale.write_bytes(b"half a checkpoint")
    small_trainer().load_checkpoint(tmp_path / "last.pt")
    assert not stale.exists() and all(p.exists() for p in unrelated)


def test_checkpoint_with_numpy_random_state_still_resumes(tmp_path):
    """A checkpoint written before the random states were plain data (NumPy's state as an
    array) loads: NumPy arrays are allowed, nothing else."""
    trainer = small_trainer(checkpoint_dir=tmp_path)
    trainer.train(batches(), n_epochs=1)
    state = torch.load(tmp_path / "last.pt", weights_only=False)  # our own file
    np_state = np.random.get_state()
    state["rng"][0]["numpy"] = np_state
    torch.save(state, tmp_path / "old.pt")
    resumed = small_trainer()
    resumed.load_checkpoint(tmp_path / "old.pt")
    assert resumed.epoch == 1
    restored = np.random.get_state()
    assert restored[0] == np_state[0] and np.array_equal(restored[1], np_state[1])
    assert restored[2:] == np_state[2:]
