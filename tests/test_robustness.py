"""Reliability of the tabular path (issue 20, points 5-8 and 12): values that overflow
the statistics, CSV layouts pandas would silently repair, training that fails without a
word, parameters and options named in their own terms, and integer / boolean columns
that keep their dtype."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import notmiwae_fast as nf
from notmiwae_fast import utils
from notmiwae_fast.cli import CLIError, _read_csv, main
from notmiwae_fast.impute._input import _in_dtype_of
from notmiwae_fast.impute.files import load_imputer, save_imputer
from notmiwae_fast.impute.imputer import MIWAEImputer, NotMIWAEImputer
from notmiwae_fast.train import TrainingWarning, loss_diverged

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(
    hidden_dim=8,
    n_samples=4,
    n_impute_samples=8,
    max_iter=3,
    batch_size=8,
    random_state=0,
    device="cpu",
)
FAST = ["--max-iter", "20", "--hidden-dim", "8", "--impute-samples", "16", "--quiet"]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")


def table(n=200, d=4, seed=0, missing=0.2):
    """Correlated data with NaN at random entries (each column keeps most values)."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, d)) @ g.normal(size=(d, d)) + 3.0
    x[g.random(x.shape) < missing] = np.nan
    return x


def run_cli(capsys, *args):
    """(exit status, stdout, stderr) of main(args) in this process."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *fragments) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def no_warnings_of(kind, record) -> None:
    assert not [w for w in record if issubclass(w.category, kind)], [str(w.message) for w in record]


# -- 5. values near the float64 limit ----------------------------------------------------
@pytest.mark.parametrize("frame", [False, True], ids=["array", "dataframe"])
def test_overflowing_statistics_name_the_column(frame):
    x = table()
    x[:, 2] = np.linspace(-1.5e300, 1.7e300, len(x))
    X = pd.DataFrame(x, columns=["a", "b", "huge", "d"]) if frame else x
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="overflows") as error:
            NotMIWAEImputer(**TINY).fit(X)
    assert ("column 'huge'" if frame else "column 2") in str(error.value)
    no_warnings_of(RuntimeWarning, record)


def test_values_beyond_float32_without_standardising_name_the_column():
    x = table()
    x[:, 1] *= 1e300
    with pytest.raises(ValueError, match=r"column 1 holds values too large.*float32"):
        NotMIWAEImputer(**TINY, standardize=False).fit(x)


def test_transform_names_the_column_too_large_for_the_fitted_model():
    x = table()
    imputer = NotMIWAEImputer(**TINY).fit(x)
    x[0, 3] = 1e300
    with pytest.raises(ValueError, match=r"column 3 holds values too large"):
        imputer.transform(x)


def test_cli_overflow_is_one_line_naming_the_column(tmp_path, capsys):
    x = table(n=40)
    x[:, 0] = np.linspace(1e300, 1.7e300, len(x))
    pd.DataFrame(x, columns=["big", "b", "c", "d"]).to_csv(tmp_path / "d.csv", index=False)
    code, _, err = run_cli(capsys, "fit", tmp_path / "d.csv", tmp_path / "m.pt", *FAST)
    assert code == 2
    one_line_error(err, "column 'big'", "d.csv")
    assert not (tmp_path / "m.pt").exists()


def test_cli_overflow_prints_nothing_but_the_error(tmp_path):
    """The real entry point: no numpy RuntimeWarning reaches stderr."""
    (tmp_path / "d.csv").write_text("a,b\n1e300,1\n-1e300,2\n1.5e300,3\n,4\n2,\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("NOTMIWAE_FAST_DEBUG", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "notmiwae_fast.cli",
            "impute",
            str(tmp_path / "d.csv"),
            str(tmp_path / "o.csv"),
            *FAST,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    one_line_error(proc.stderr, "column 'a'", "overflows")


# -- 6. CSV layouts pandas would repair silently -----------------------------------------
@pytest.mark.parametrize(
    "text, fragments",
    [
        ("a,a,b\n1,2,3\n4,5,6\n", ["line 1", "'a' twice"]),
        ("a,,b\n1,2,3\n4,5,6\n", ["column 2", "no name"]),
        (",,\n1,2,3\n4,5,6\n", ["line 1", "no column names"]),
        ("a, ,b\n1,2,3\n", ["column 2", "no name"]),
        ("a,b,c\n1,2,3\n4,5\n7,8,9\n", ["line 3", "2 field(s)", "header 3"]),
        ("a,b,c\n1,2,3\n4,5,6,7\n", ["line 3", "4 field(s)"]),
        ('a,b\n1,2\n""\n3,4\n', ["line 3", "1 field(s)"]),
    ],
    ids=[
        "duplicate",
        "empty-name",
        "all-empty",
        "blank-name",
        "short-row",
        "long-row",
        "quoted-empty-row",
    ],
)
def test_csv_layout_errors_name_the_line(tmp_path, capsys, text, fragments):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(CLIError) as error:
        _read_csv(str(path))
    for fragment in fragments:
        assert fragment in str(error.value), error.value
    code, _, err = run_cli(capsys, "fit", path, tmp_path / "m.pt", *FAST)
    assert code == 2
    one_line_error(err, *fragments)


def test_csv_blank_lines_and_quotes_still_read(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('"a","b c"\n1,2\n\n3,\n  \n,6\n')
    df = _read_csv(str(path))
    assert list(df.columns) == ["a", "b c"] and df.shape == (3, 2)
    assert df.isna().sum().sum() == 2


def test_csv_not_utf8_is_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,b\n1,\xff\n")
    with pytest.raises(CLIError, match="not UTF-8"):
        _read_csv(str(path))


# -- 7. training health ------------------------------------------------------------------
def fit_recording(imputer, X):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        imputer.fit(X)
    return [w for w in record if issubclass(w.category, TrainingWarning)]


def test_healthy_fit_has_no_flags():
    imputer = NotMIWAEImputer(**{**TINY, "max_iter": 200})
    assert fit_recording(imputer, table()) == []
    assert imputer.history_ == {"health": [], "warnings": []}


def test_diverging_learning_rate_is_flagged():
    imputer = NotMIWAEImputer(**{**TINY, "max_iter": 300, "lr": 10.0})
    caught = fit_recording(imputer, table())
    assert "diverged" in imputer.history_["health"]
    assert (
        len(caught) == 1
        and "diverged" in str(caught[0].message)
        or "failed" in str(caught[0].message)
    )


def test_unstandardised_huge_column_is_flagged():
    x = table()
    x[:, 0] *= 1e6
    imputer = NotMIWAEImputer(**{**TINY, "max_iter": 300, "standardize": False})
    caught = fit_recording(imputer, x)
    assert imputer.history_["health"] == ["diverged"]
    assert "independent per-column" in str(caught[0].message)


def test_bernoulli_data_outside_0_1_is_flagged():
    imputer = MIWAEImputer(**{**TINY, "out_dist": "bern"})
    caught = fit_recording(imputer, pd.DataFrame(table(), columns=list("abcd")))
    assert "bern_data_outside_01" in imputer.history_["health"]
    assert any(
        "out_dist='bern'" in str(w.message) and "column 'a'" in str(w.message) for w in caught
    )
    x01 = np.clip(table() / 10, 0, 1)
    quiet = MIWAEImputer(**{**TINY, "out_dist": "bern"})
    fit_recording(quiet, x01)
    assert "bern_data_outside_01" not in quiet.history_["health"]


@pytest.mark.parametrize("observed", [1, 3])
def test_column_with_few_observed_values_is_flagged(observed):
    x = table(n=300)
    x[observed:, 1] = np.nan
    x[:observed, 1] = 1.0 + np.arange(observed)
    imputer = NotMIWAEImputer(**TINY)
    caught = fit_recording(imputer, x)
    assert imputer.history_["health"] == ["few_observed"]
    assert f"column 1: {observed} of 300" in str(caught[0].message)


def test_ninety_nine_percent_missing_is_flagged():
    x = table(n=1000, missing=0.0)
    x[np.random.default_rng(1).random(1000) < 0.99, 2] = np.nan
    imputer = NotMIWAEImputer(**TINY)
    fit_recording(imputer, x)
    assert "few_observed" in imputer.history_["health"]


def test_history_survives_save_and_load(tmp_path):
    imputer = NotMIWAEImputer(**{**TINY, "max_iter": 300, "lr": 10.0})
    fit_recording(imputer, table())
    save_imputer(imputer, tmp_path / "m.pt")
    assert load_imputer(tmp_path / "m.pt").history_ == imputer.history_


def test_loss_diverged_criterion():
    assert loss_diverged([5.0, 4.0, 3.0, 3.1]) is None
    assert loss_diverged([-30.0, -28.0, -29.0]) is None
    assert "far above its best" in loss_diverged([5.0, 2.0, 9.0], window=1)
    assert "NaN" in loss_diverged([1.0, float("nan")])
    assert loss_diverged([1.0]) is None


def small_loader(x, s, batch_size=16):
    data = torch.utils.data.TensorDataset(
        torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(s, dtype=torch.float32)
    )
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)


def test_trainer_flags_bernoulli_data_outside_0_1():
    utils.set_seed(0)
    x = np.nan_to_num(table(n=64))
    s = np.ones_like(x)
    trainer = nf.Trainer(nf.MIWAE(4, hidden_dim=8, n_samples=4, out_dist="bern"), progress=False)
    with pytest.warns(TrainingWarning, match="outside \\[0, 1\\]"):
        history = trainer.train(small_loader(x, s), n_epochs=1)
    assert "bern_data_outside_01" in history["health"]
    fine = nf.Trainer(nf.MIWAE(4, hidden_dim=8, n_samples=4, out_dist="bern"), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        history = fine.train(small_loader(np.clip(x / 10, 0, 1), s), n_epochs=1)
    assert "health" not in history


def test_trainer_flags_a_loss_that_ends_far_above_its_best():
    utils.set_seed(0)
    trainer = nf.Trainer(nf.MIWAE(4, hidden_dim=8, n_samples=4), progress=False)
    trainer.history = {"train_loss": [5.0, 4.0]}
    trainer.history["train_loss"].append(40.0)
    with pytest.warns(TrainingWarning, match="far above its best"):
        trainer._check_health()
    assert trainer.history["health"] == ["diverged"]
    assert len(trainer.history["warnings"]) == 1


def test_cli_prints_a_diverged_fit_as_one_warning_line(tmp_path, capsys):
    pd.DataFrame(table(n=120), columns=list("abcd")).to_csv(tmp_path / "d.csv", index=False)
    code, _, err = run_cli(
        capsys,
        "fit",
        tmp_path / "d.csv",
        tmp_path / "m.pt",
        "--max-iter",
        "300",
        "--hidden-dim",
        "8",
        "--lr",
        "10",
        "--impute-samples",
        "8",
        "--quiet",
    )
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("notmiwae-fast fit: warning: "), err
    assert "not to be trusted" in lines[0]


# -- 8. parameters and options named in their own terms ---------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "max_iter",
        "hidden_dim",
        "latent_dim",
        "n_samples",
        "n_impute_samples",
        "batch_size",
        "lr",
        "random_state",
    ],
)
def test_bool_for_a_number_parameter_is_named(name):
    with pytest.raises(ValueError, match=f"'{name}'.*not a bool"):
        NotMIWAEImputer(**{**TINY, name: True}).fit(table())


@pytest.mark.parametrize("lr", [float("inf"), float("nan")])
def test_non_finite_lr_is_named(lr):
    with pytest.raises(ValueError, match="'lr'"):
        NotMIWAEImputer(**{**TINY, "lr": lr}).fit(table())


def test_unknown_device_is_named():
    with pytest.raises(ValueError, match="argument 'device'"):
        NotMIWAEImputer(**{**TINY, "device": "no-such-device"}).fit(table())


@NO_GPU
def test_cuda_without_a_gpu_is_named():
    with pytest.raises(ValueError, match="argument 'device'.*no CUDA GPU"):
        NotMIWAEImputer(**{**TINY, "device": "cuda"}).fit(table())


@pytest.mark.parametrize("asked", ["cuda", "cuda:0", None])
def test_under_torchrun_each_process_imputes_on_its_own_gpu(monkeypatch, asked):
    """In a distributed run a CUDA device is the process's cuda:LOCAL_RANK, as the
    Trainer places it ('cuda' alone would be cuda:0 for every process); the CPU stays
    the CPU. (A GPU and the process group are faked: only the choice is tested.)"""
    import torch

    from notmiwae_fast import distributed
    from notmiwae_fast._common import validate

    monkeypatch.setattr(distributed, "context", lambda: distributed.Context(3, 4, 1))
    monkeypatch.setattr(validate, "device", lambda value, *a: torch.device(value))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert NotMIWAEImputer(device=asked)._device() == torch.device("cuda", 1)
    assert NotMIWAEImputer(device="cpu")._device() == torch.device("cpu")


@NO_GPU
def test_an_imputer_fitted_for_a_gpu_says_how_to_use_the_cpu():
    """An imputer whose device is 'cuda' (fitted on a GPU machine, loaded here): the
    error says how to compute on this machine, and that works."""
    imputer = NotMIWAEImputer(**TINY).fit(table())
    imputer.set_params(device="cuda")
    with pytest.raises(ValueError, match=r"no CUDA GPU.*set_params\(device='cpu'\)"):
        imputer.transform(table())
    assert np.isfinite(imputer.set_params(device="cpu").transform(table())).all()


@pytest.fixture(scope="module")
def fitted_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robust")
    pd.DataFrame(table(n=80), columns=list("abcd")).to_csv(folder / "d.csv", index=False)
    assert main(["fit", str(folder / "d.csv"), str(folder / "m.pt"), *FAST]) == 0
    return folder


@NO_GPU
def test_impute_with_a_model_on_a_missing_gpu_names_device(fitted_model, tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "impute",
        fitted_model / "d.csv",
        tmp_path / "o.csv",
        "--model",
        fitted_model / "m.pt",
        "--device",
        "cuda",
        "--quiet",
    )
    assert code == 2
    one_line_error(err, "--device cuda", "no CUDA GPU")
    assert not (tmp_path / "o.csv").exists()


def test_impute_with_a_model_honours_device_cpu(fitted_model, tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "impute",
        fitted_model / "d.csv",
        tmp_path / "o.csv",
        "--model",
        fitted_model / "m.pt",
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 0, err


@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--seed", "-1", "--seed must be in [0, 4294967295]"),
        ("--seed", str(2**32), "--seed must be in"),
        ("--lr", "0", "--lr must be"),
        ("--lr", "nan", "--lr must be"),
        ("--latent-dim", "0", "--latent-dim must be >= 1"),
        ("--device", "nonsense", "--device 'nonsense' is not a device"),
    ],
)
@pytest.mark.parametrize("command", ["fit", "impute"])
def test_cli_errors_name_the_option(
    fitted_model, tmp_path, capsys, command, option, value, fragment
):
    out = tmp_path / ("m.pt" if command == "fit" else "o.csv")
    code, _, err = run_cli(capsys, command, fitted_model / "d.csv", out, *FAST, option, value)
    assert code == 2
    line = one_line_error(err, fragment)
    assert "random_state" not in line and "'lr'" not in line


def test_cli_rewords_imputer_parameter_errors_as_options(fitted_model, tmp_path, capsys):
    """An error the imputer raises about one of its parameters names the option."""
    from unittest import mock

    from notmiwae_fast import cli

    with mock.patch.object(cli, "_positive", lambda args: None):
        code, _, err = run_cli(
            capsys, "fit", fitted_model / "d.csv", tmp_path / "m.pt", *FAST, "--seed", "-1"
        )
    assert code == 2
    line = one_line_error(err, "--seed")
    assert "random_state" not in line


# -- 12. integer and boolean columns -------------------------------------------------------
def mixed_frame(n=200):
    x = table(n=n, missing=0.0)
    g = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "f": x[:, 0],
            "i": pd.array(np.round(x[:, 1] * 3).astype(np.int64), dtype="Int64"),
            "b": pd.array(x[:, 2] > 3, dtype="boolean"),
            "n": np.round(x[:, 3]).astype(np.int32),  # NumPy int: never missing
        }
    )
    for name in ("f", "i", "b"):
        frame.loc[g.random(n) < 0.25, name] = None
    return frame


def test_integer_and_boolean_columns_keep_their_dtype():
    frame = mixed_frame()
    out = NotMIWAEImputer(**{**TINY, "max_iter": 50}).fit_transform(frame)
    assert out.dtypes.to_dict() == frame.dtypes.to_dict()
    assert out.isna().sum().sum() == 0
    assert (out["i"].to_numpy(dtype=float) == np.round(out["i"].to_numpy(dtype=float))).all()
    observed = frame["i"].notna()
    assert (out["i"][observed] == frame["i"][observed]).all()
    assert (out["b"][frame["b"].notna()] == frame["b"][frame["b"].notna()]).all()
    assert (out["n"] == frame["n"]).all()
    assert out.index.equals(frame.index)


def test_integer_fill_rounds_and_clips_to_the_dtype():
    column = pd.Series(pd.array([1, None, None, None, None], dtype="Int8"))
    filled = _in_dtype_of(column, np.array([0.0, 2.4, -1e9, 1e9, 2.5]))
    assert str(filled.dtype) == "Int8" and filled.tolist() == [1, 2, -128, 127, 2]
    big = pd.Series(pd.array([None, 1], dtype="Int64"))
    assert _in_dtype_of(big, np.array([1e30, 0.0])).tolist() == [2**63 - 1024, 1]
    flags = pd.Series(pd.array([None, None, True], dtype="boolean"))
    assert _in_dtype_of(flags, np.array([0.5, 0.49, 0.0])).tolist() == [True, False, True]


def test_cli_writes_integer_columns_as_integers(tmp_path, capsys):
    frame = mixed_frame(n=120)[["f", "i", "n"]]
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert ",," in (tmp_path / "d.csv").read_text() or "\n," in (tmp_path / "d.csv").read_text()
    code, _, err = run_cli(capsys, "impute", tmp_path / "d.csv", tmp_path / "o.csv", *FAST)
    assert code == 0, err
    rows = (tmp_path / "o.csv").read_text().splitlines()
    assert rows[0] == "f,i,n"
    for row in rows[1:]:
        _, i, n = row.split(",")
        assert i.lstrip("-").isdigit() and n.lstrip("-").isdigit(), row
