"""The ``notmiwae-fast`` command line: help, demo (short), fit / impute round trip,
bench, and one-line errors with a non-zero exit status that never overwrite an input.

Most tests call ``main(argv)`` in this process (starting Python with torch for each
would take most of the time budget); a few run ``python -m notmiwae_fast.cli`` in a
subprocess to check the real entry point, exit status and stderr."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from notmiwae_fast.cli import main, read_csv_exact

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--max-iter", "20", "--hidden-dim", "8", "--impute-samples", "16", "--quiet"]


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch):
    """cli(*args) -> Result of main(args) in this process (SystemExit caught)."""
    monkeypatch.delenv("NOTMIWAE_FAST_DEBUG", raising=False)

    def run(*args):
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def subprocess_cli(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTMIWAE_FAST_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "notmiwae_fast.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def csv_with_gaps(tmp_path):
    g = np.random.default_rng(0)
    z = g.normal(size=(120, 1))
    x = 5 + z @ np.ones((1, 4)) + 0.3 * g.normal(size=(120, 4))
    x[:, 0] = np.where(x[:, 0] > 5, np.nan, x[:, 0])
    x[:, 1] = np.where(x[:, 1] > 5, np.nan, x[:, 1])
    path = tmp_path / "data.csv"
    pd.DataFrame(x, columns=["a", "b", "c", "d"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("command", [[], ["demo"], ["fit"], ["impute"], ["bench"]])
def test_help_on_every_command(cli, command):
    proc = cli(*command, "--help")
    assert proc.returncode == 0
    assert "usage: notmiwae-fast" in proc.stdout
    if command:
        assert "--quiet" in proc.stdout


def test_no_command_is_an_error(cli):
    proc = cli()
    assert proc.returncode != 0 and "COMMAND" in proc.stderr


def test_python_dash_m_entry_point(tmp_path):
    """The real process: --help works, an error is one line on stderr with status 2."""
    proc = subprocess_cli("--help")
    assert proc.returncode == 0
    assert all(c in proc.stdout for c in ("demo", "fit", "impute", "bench"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    proc = subprocess_cli("impute", empty, tmp_path / "out.csv")
    assert_one_line_error(proc, "is empty")
    assert empty.read_text() == "" and not (tmp_path / "out.csv").exists()


def test_fit_then_impute_round_trip(cli, csv_with_gaps, tmp_path):
    before = digest(csv_with_gaps)
    model = tmp_path / "model.pt"
    proc = cli("fit", csv_with_gaps, model, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert model.is_file()
    out = tmp_path / "filled.csv"
    proc = cli("impute", csv_with_gaps, out, "--model", model, "--quiet")
    assert proc.returncode == 0, proc.stderr
    given, filled = (read_csv_exact(p) for p in (csv_with_gaps, out))
    assert list(filled.columns) == ["a", "b", "c", "d"]
    assert not filled.isna().any().any()
    observed = given.notna().to_numpy()
    np.testing.assert_array_equal(filled.to_numpy()[observed], given.to_numpy()[observed])
    assert digest(csv_with_gaps) == before
    # an existing output is refused without --force, accepted with it
    proc = cli("impute", csv_with_gaps, out, "--model", model, "--quiet")
    assert_one_line_error(proc, "exists", "--force")
    assert cli("impute", csv_with_gaps, out, "--model", model, "--quiet", "--force").returncode == 0


def test_impute_fitting_on_the_spot_and_never_over_the_input(cli, csv_with_gaps, tmp_path):
    before = digest(csv_with_gaps)
    proc = cli("impute", csv_with_gaps, csv_with_gaps, *FAST, "--force")
    assert_one_line_error(proc, "input file", "never overwritten")
    assert digest(csv_with_gaps) == before
    out = tmp_path / "out.csv"
    proc = cli("impute", csv_with_gaps, out, "--method", "miwae", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert not pd.read_csv(out).isna().any().any()


def test_header_mismatch_with_the_model_is_named(cli, csv_with_gaps, tmp_path):
    model = tmp_path / "model.pt"
    assert cli("fit", csv_with_gaps, model, *FAST).returncode == 0
    other = tmp_path / "other.csv"
    pd.read_csv(csv_with_gaps).rename(columns={"c": "zz"}).to_csv(other, index=False)
    proc = cli("impute", other, tmp_path / "o.csv", "--model", model)
    assert_one_line_error(proc, "does not match", "'zz'", "'c'")


def test_impute_quiet_silences_a_model_fitted_verbose(cli, csv_with_gaps, tmp_path):
    """--quiet wins over the verbose=True pickled with a model fitted without it."""
    model = tmp_path / "model.pt"
    assert cli("fit", csv_with_gaps, model, *FAST[:-1]).returncode == 0  # not --quiet
    proc = cli("impute", csv_with_gaps, tmp_path / "o.csv", "--model", model, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_abbreviated_impute_samples_applies_to_a_model(cli, csv_with_gaps, tmp_path):
    """--impute-s (argparse's abbreviation) sets the model's samples like the full name."""
    model = tmp_path / "model.pt"
    assert cli("fit", csv_with_gaps, model, *FAST).returncode == 0  # 16 samples
    outs = {}
    for name, option in [
        ("full", ["--impute-samples", "2"]),
        ("short", ["--impute-s", "2"]),
        ("none", []),
    ]:
        outs[name] = tmp_path / f"{name}.csv"
        proc = cli("impute", csv_with_gaps, outs[name], "--model", model, "--quiet", *option)
        assert proc.returncode == 0, proc.stderr
    assert digest(outs["short"]) == digest(outs["full"])
    assert digest(outs["short"]) != digest(outs["none"])


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("", "is empty"),
        ("a,b,c\n", "no data rows"),
        ("a,b\n" + "".join(f"{i},t{i}\n" for i in range(101)), "'b' has 101 categories"),
        ("a,b\n1,\n2,\n3,\n", "column 'b' is entirely missing"),
        ("a\tb\n1\t2\n", "looks separated by tabs"),
        ("a;b\n1;2\n", "looks separated by semicolons"),
    ],
)
def test_bad_csv_files_give_one_line(cli, tmp_path, content, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    proc = cli("fit", path, tmp_path / "m.pt", *FAST)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "m.pt").exists()


def test_missing_files_give_one_line(cli, tmp_path, csv_with_gaps):
    assert_one_line_error(cli("fit", tmp_path / "nope.csv", tmp_path / "m.pt"), "does not exist")
    assert_one_line_error(
        cli("impute", csv_with_gaps, tmp_path / "o.csv", "--model", tmp_path / "nope.pt"),
        "model file",
        "does not exist",
    )
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    assert_one_line_error(
        cli("impute", csv_with_gaps, tmp_path / "o.csv", "--model", junk), "cannot be read"
    )


def test_bad_numbers_in_options_give_one_line(cli, csv_with_gaps, tmp_path):
    assert_one_line_error(
        cli("fit", csv_with_gaps, tmp_path / "m.pt", "--max-iter", "0"), "--max-iter"
    )


def test_demo_short_run_prints_the_table_and_saves_the_plot(cli, tmp_path):
    """Existing outputs are refused (before any training) unless --force replaces them."""
    folder = tmp_path / "demo"
    folder.mkdir()
    notes, png = folder / "demo_results.json", folder / "missing_process.png"
    notes.write_text("my notes")
    png.write_bytes(b"my plot")
    short = ["demo", "--max-iter", "30", "--impute-samples", "20", "--out", folder, "--quiet"]
    proc = cli(*short)
    assert_one_line_error(proc, str(notes), "--force")
    assert proc.stdout == "" and notes.read_text() == "my notes"
    notes.unlink()
    assert_one_line_error(cli(*short), str(png), "--force")
    assert png.read_bytes() == b"my plot" and not notes.exists()
    notes.write_text("my notes")
    proc = cli(*short, "--force")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(folder)) == ["demo_results.json", "missing_process.png"]
    for label in ("mean imputation", "MIWAE", "not-MIWAE self-masking"):
        assert label in proc.stdout
    png = tmp_path / "demo" / "missing_process.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
    assert summary["iterations"] == 30
    assert summary["results"]["mean imputation"]["rmse"] == pytest.approx(1.82, abs=0.05)


@pytest.mark.slow
def test_demo_with_defaults_beats_mean_imputation(tmp_path):
    proc = subprocess_cli("demo", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "notmiwae-demo" / "demo_results.json").read_text())
    r = {k: v["rmse"] for k, v in summary["results"].items()}
    assert r["not-MIWAE self-masking"] < r["MIWAE"] < r["mean imputation"]


def test_fit_then_impute_a_csv_with_text_columns(cli, tmp_path):
    """Text columns are categorical, whole numbers counts: the filled CSV has the same
    columns, text imputed with one of the column's values, counts as whole numbers."""
    rng = np.random.default_rng(0)
    n = 120
    z = rng.normal(size=n)
    lines = ["x,colour,visits"]
    for i in range(n):
        x = "" if i % 7 == 0 else f"{z[i]:.3f}"
        colour = "" if i % 5 == 0 else ("red" if z[i] > 0 else "blue")
        visits = "" if i % 6 == 0 else str(int(rng.poisson(1 + (z[i] > 0))))
        lines.append(f"{x},{colour},{visits}")
    data = tmp_path / "mixed.csv"
    data.write_text("\n".join(lines) + "\n")
    model, out = tmp_path / "model.pt", tmp_path / "filled.csv"
    assert cli("fit", data, model, *FAST).returncode == 0
    proc = cli("impute", data, out, "--model", model, "--quiet")
    assert proc.returncode == 0, proc.stderr
    given, filled = read_csv_exact(data), read_csv_exact(out)
    assert list(filled.columns) == ["x", "colour", "visits"]
    assert not filled.isna().any().any()
    assert set(filled["colour"]) <= {"red", "blue"}
    observed = given["colour"].notna()
    assert (filled["colour"][observed] == given["colour"][observed]).all()
    assert (filled["visits"] == filled["visits"].round()).all() and (filled["visits"] >= 0).all()


def test_a_command_runs_with_its_thread_count_and_puts_it_back_after_an_error():
    import torch

    from notmiwae_fast.cli._common import _with_threads

    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    seen = []

    @_with_threads(lambda args: target)
    def command(args):
        seen.append(torch.get_num_threads())
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        command(None)
    assert seen == [target]
    assert torch.get_num_threads() == before
