"""benchmarks/reproduce_uci.py: the acceptance bound, the Markdown table, and resuming
(runs already in the JSON are skipped)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from notmiwae_fast.experiments import protocol

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "reproduce_uci.py"
DATA = ROOT.parent / "shared" / "data" / "uci"


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce_uci", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bound_and_table():
    mod = load_script()
    assert mod.meets_bound("notmiwae_selfmasking", 0.5, 1.26)  # better is fine
    assert not mod.meets_bound("notmiwae_selfmasking", 1.37, 1.26)
    assert mod.meets_bound("mice", 1.50, 1.41) and not mod.meets_bound("mice", 1.20, 1.41)
    table = mod.render_markdown(
        {
            "settings": {"iterations": 5},
            "runs": [
                {"dataset": "banknote", "method": "mean", "run": 0, "rmse": 1.70},
                {"dataset": "banknote", "method": "mean", "run": 1, "rmse": 1.76},
                {"dataset": "banknote", "method": "miwae", "run": 0, "rmse": 1.50},
            ],
        }
    )
    assert "| mean imputation | 1.73 ± 0.03 [2] / 1.73 ✓ |" in table
    assert "| MIWAE | 1.50 ± 0.00 [1] / 1.19 ✗ |" in table
    assert "iterations = 5" in table and "concrete" not in table
    assert set(mod.PAPER) == set(protocol.METHODS)


def test_merge_combines_parallel_runs_and_refuses_other_settings(tmp_path):
    mod = load_script()
    settings = {"iterations": 5, "impute_samples": 2, "threads": 1}
    run = lambda d, m, r, v: {"dataset": d, "method": m, "run": r, "rmse": v}  # noqa: E731
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps({"settings": settings, "runs": [run("banknote", "mean", 0, 1.7)]}))
    b.write_text(
        json.dumps(
            {
                "settings": settings,
                "runs": [run("banknote", "mean", 0, 9.9), run("banknote", "mean", 1, 1.76)],
            }
        )
    )
    out = tmp_path / "merged.json"
    assert mod.main(["--merge", str(a), str(b), "--results", str(out)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["run"], r["rmse"]) for r in runs] == [(0, 1.7), (1, 1.76)]  # first wins
    assert "1.73 ± 0.03 [2]" in out.with_suffix(".md").read_text()
    c.write_text(json.dumps({"settings": {**settings, "iterations": 6}, "runs": []}))
    assert mod.main(["--merge", str(a), str(c), "--results", str(tmp_path / "x.json")]) == 2


def test_protocol_matches_the_paper_for_mean_imputation():
    X = np.random.default_rng(0).normal(size=(2000, 6))
    X_true, X_missing, s = protocol.mnar_table1(X, seed=0)
    assert (s[:, 3:] == 1).all() and 0.4 < (s[:, :3] == 0).mean() < 0.6
    np.testing.assert_allclose(X_true.mean(0), 0, atol=1e-12)
    rmse, _ = protocol.run_method("mean", X, seed=0, iterations=1, impute_samples=1)
    assert 1.5 < rmse < 1.9  # sqrt(E[(x - E[x | x <= 0])^2 | x > 0]) for a Gaussian: ~1.7


@pytest.mark.skipif(not DATA.is_dir(), reason=f"no UCI data at {DATA}")
def test_appends_and_resumes(tmp_path):
    results = tmp_path / "r.json"
    base = [
        sys.executable,
        str(SCRIPT),
        "--datasets",
        "banknote",
        "--methods",
        "mean",
        "mice",
        "--iterations",
        "10",
        "--impute-samples",
        "10",
        "--threads",
        "1",
        "--results",
        str(results),
        "--quiet",
    ]
    first = subprocess.run(base + ["--runs", "1"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert len(json.loads(results.read_text())["runs"]) == 2
    second = subprocess.run(base + ["--runs", "2"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("run 1:") == 2 and "run 0:" not in second.stdout
    runs = json.loads(results.read_text())["runs"]
    assert sorted((r["method"], r["run"]) for r in runs) == [
        ("mean", 0),
        ("mean", 1),
        ("mice", 0),
        ("mice", 1),
    ]
    table = results.with_suffix(".md").read_text()
    assert "| mean imputation | 1.7" in table and "[2]" in table
    other = subprocess.run(
        base[:-1] + ["--runs", "1", "--iterations", "11"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert other.returncode == 2 and "settings" in other.stderr


def test_restore_lost_decimal_points():
    rng = np.random.default_rng(0)
    X = np.column_stack(
        [rng.uniform(0.9, 1.1, 200), rng.uniform(8, 15, 200), rng.normal(-5, 1, 200)]
    )
    broken = X.copy()
    broken[3, 0] *= 1e3  # 1.005 -> 1005
    broken[7, 0] *= 1e5  # 1.00369 -> 100369
    broken[5, 1] *= 1e13  # 10.0333 -> 1.00333e14
    broken[9, 2] *= 1e3  # a column with a negative median is left alone
    fixed = protocol.restore_lost_decimal_points(broken)
    np.testing.assert_allclose(fixed[:, :2], X[:, :2], rtol=1e-12)
    assert fixed[9, 2] == broken[9, 2]
    assert not np.shares_memory(fixed, broken)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"no UCI data at {DATA}")
def test_paper_data_matches_the_papers_deterministic_cells():
    """Mean imputation and MICE involve no training and no randomness: on the data as
    paper_data prepares them they give the paper's numbers (mean: red 1.83, yeast 1.69;
    on the files as they are 2.05 and 1.73; MICE: yeast 1.72, red 1.68)."""
    from notmiwae_fast.experiments import datasets

    red, _ = datasets.load_uci("winequality-red", data_dir=DATA)
    red_paper = protocol.paper_data("winequality-red", DATA)
    assert red_paper.shape == red.shape and (red_paper != red).sum() == 82
    assert abs(protocol.run_method("mean", red_paper, 0, 1, 1)[0] - 1.83) < 0.015
    assert abs(protocol.run_method("mean", red, 0, 1, 1)[0] - 2.05) < 0.01
    assert abs(protocol.run_method("mice", red_paper, 0, 1, 1)[0] - 1.68) < 0.005
    yeast, _ = datasets.load_uci("yeast", data_dir=DATA)
    yeast_paper = protocol.paper_data("yeast", DATA)
    assert yeast_paper.shape == (yeast.shape[0], 7)
    assert abs(protocol.run_method("mean", yeast_paper, 0, 1, 1)[0] - 1.69) < 0.005
    assert abs(protocol.run_method("mice", yeast_paper, 0, 1, 1)[0] - 1.72) < 0.005
    white, _ = datasets.load_uci("winequality-white", data_dir=DATA)
    np.testing.assert_array_equal(protocol.paper_data("winequality-white", DATA), white)
    concrete, _ = datasets.load_uci("concrete", data_dir=DATA)
    np.testing.assert_array_equal(protocol.paper_data("concrete", DATA)[:, :-1], concrete)


def test_mice_visits_columns_in_the_papers_order():
    """The paper's scikit-learn (0.21) visited the incomplete columns in descending order
    when asked for "ascending" (scikit-learn issue #15372); on breast, the only data set
    where the order matters, that gives the paper's 1.17 (0.95 in ascending order)."""
    from notmiwae_fast.experiments import datasets

    X, _ = datasets.load_breast_cancer()
    assert protocol.PAPER_IMPUTATION_ORDER == "descending"
    assert abs(protocol.run_method("mice", X, 0, 1, 1)[0] - 1.17) < 0.005


def test_table1_protocol_names_its_processes_so_the_default_does_not_change_it():
    for method in protocol.METHODS:
        if method.startswith("notmiwae"):
            imputer = protocol.make_imputer(method, 5, 5, 0, 4)
            assert imputer.missing_process in ("selfmasking", "selfmasking_known_signs", "linear")
