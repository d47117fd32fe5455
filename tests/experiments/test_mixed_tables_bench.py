"""benchmarks/mixed_tables.py on a tiny synthetic mixed frame (seconds): every method
returns the frame's columns and dtypes complete, the metrics, the one-hot round trip, the
acceptance verdicts and the Markdown table."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mixed_tables.py"
TINY = {"max_iter": 20, "impute_samples": 10, "n_trees": 5}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("mixed_tables_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny(n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    kind = rng.choice(["p", "q", "r"], n)
    x = np.where(kind == "p", -2.0, np.where(kind == "q", 0.0, 2.0)) + rng.normal(size=n) * 0.3
    return pd.DataFrame(
        {
            "kind": pd.Categorical(kind),
            "x": x,
            "y": 2 * x + rng.normal(size=n),
            "flag": pd.Categorical(rng.choice(["yes", "no"], n)),
            "k": pd.array(rng.poisson(1.5, n), dtype="Int64"),
        }
    )


TABLE = SimpleNamespace(categorical="kind", lost=("r",))


@pytest.mark.parametrize("method", ["mean_mode", "mice_onehot", "mice", "missforest", "miwae",
                                    "notmiwae"])  # fmt: skip
def test_every_method_fills_every_cell(bench, method):
    record = bench.run_cell(tiny(), TABLE, "categorical_mnar", method, 0, TINY)
    assert record["n_missing_categorical"] > 0 and record["n_missing_numeric"] > 0
    assert 0 <= record["accuracy"] <= 1 and 0 <= record["macro_f1"] <= 1
    assert math.isfinite(record["rmse"]) and len(record["loadavg"]) == 3
    if method in ("miwae", "notmiwae"):
        assert record["iterations"] == TINY["max_iter"]
    if method == "notmiwae":
        assert set(record["missing_process"]["kind"]["p_missing"]) == {"p", "q", "r"}


def test_one_hot_round_trip_and_scores(bench):
    df = tiny(30)
    arr, groups = bench.one_hot(df)
    assert arr.shape == (30, 3 + 1 + 1 + 2 + 1)
    back = bench.from_one_hot(arr, groups, df)
    pd.testing.assert_frame_equal(back, df)
    mask = pd.DataFrame(False, index=df.index, columns=df.columns)
    mask.loc[:9, ["kind", "x"]] = True
    s = bench.score(df, df, mask, ["x", "y"], "kind")
    assert s["rmse"] == 0 and s["accuracy"] == 1 and s["macro_f1"] == 1
    assert s["n_missing_numeric"] == 10 and s["n_missing_categorical"] == 10
    worse = df.copy()
    worse["x"] = worse["x"] + df["x"].to_numpy().std()  # the population std
    assert bench.score(df, worse, mask, ["x"], "kind")["rmse"] == pytest.approx(1.0)


def runs(method, mechanism, rmse, acc):
    return [
        {"table": "t", "mechanism": mechanism, "method": method, "seed": s, "rmse": r,
         "accuracy": a, "macro_f1": a, "seconds": 1.0}
        for s, (r, a) in enumerate(zip(rmse, acc))
    ]  # fmt: skip


def test_acceptance_and_markdown(bench):
    records = (
        runs("notmiwae", "categorical_mnar", [0.50, 0.52], [0.90, 0.92])
        + runs("mice", "categorical_mnar", [0.51, 0.52], [0.80, 0.81])
        + runs("missforest", "categorical_mnar", [0.40, 0.41], [0.80, 0.81])
        + runs("notmiwae", "mcar", [0.50, 0.51], [0.90, 0.90])
        + runs("miwae", "mcar", [0.50, 0.50], [0.91, 0.90])
    )
    lines = bench.acceptance(bench.summarise(records), ["t"])
    verdicts = [line.split(" | ")[3] for line in lines]
    assert "vs mice |" in lines[0] and verdicts[0] == "met"
    # Beside the verdict: seeds won and the paired t of the gain (0.105 / (0.0071 / √2)).
    assert lines[0].endswith("| better on 2/2, t = +21.0 | better on 1/2, t = +1.0 |")
    assert "RMSE worse" in lines[1] and verdicts[1] == "NOT met"
    assert "| better on 0/2, t = " in lines[1]
    assert verdicts[2] == "not run"  # no mice_onehot runs
    assert "MCAR" in lines[3] and verdicts[3] == "met"
    md = bench.render_markdown({"settings": TINY, "runs": records})
    assert "| t | categorical_mnar | notmiwae | 2 | 0.510 ± 0.014 | 0.910 ± 0.014 |" in md


def test_ceiling_row():
    pytest.importorskip("statsmodels")
    spec = importlib.util.spec_from_file_location(
        "mixed_tables_ceiling", SCRIPT.with_name("mixed_tables_ceiling.py")
    )
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    y = np.array(["a", "b", "b", "c"])
    weight = np.array([0.6, 0.05, 0.05, 0.6])
    assert ceiling.expected_accuracy(np.array(["a", "b", "c", "c"]), y, weight) == pytest.approx(
        1.25 / 1.3
    )
    flat = {"PID": {"p_missing": {str(k): 0.1 for k in range(7)}}}
    record = {"table": "anes96", "mechanism": "categorical_mnar", "method": "notmiwae",
              "seed": 0, "accuracy": 0.1, "missing_process": flat}  # fmt: skip
    row = ceiling.table_row("anes96", [record]).strip("| ").split(" | ")
    mode, plain, told, learnt, got = row[1:]
    assert float(mode) < float(plain) < float(told)
    assert learnt == plain and got == "0.100"  # a flat learnt process changes nothing


def test_fit_noise_fits_fixed_masks_with_each_model_seed(bench, tmp_path, monkeypatch):
    """mixed_tables_fit_noise.py: the same masks (the mask seed) for every model seed, one
    record per model seed, a rerun skipping what is there, the spread in the Markdown."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location(
        "mixed_tables_fit_noise", SCRIPT.with_name("mixed_tables_fit_noise.py")
    )
    noise = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noise)
    table = SimpleNamespace(load=tiny, categorical="kind", lost=("r",), package="numpy")
    monkeypatch.setitem(noise.mixed_tables.MIXED_TABLES, "tiny", table)
    out = tmp_path / "noise.json"
    argv = ["--tables", "tiny", "--mask-seeds", "3", "--model-seeds", "0", "1",
            "--max-iter", "20", "--impute-samples", "10", "--results", str(out)]  # fmt: skip
    noise.main(argv)
    runs_ = json.loads(out.read_text())["runs"]
    assert [(r["seed"], r["model_seed"]) for r in runs_] == [(3, 0), (3, 1)]
    assert runs_[0]["n_missing_numeric"] == runs_[1]["n_missing_numeric"]  # the same masks
    assert runs_[0]["n_missing_categorical"] == runs_[1]["n_missing_categorical"]
    noise.main(argv)  # nothing left to run
    assert len(json.loads(out.read_text())["runs"]) == 2
    md = out.with_suffix(".md").read_text()
    assert "| tiny | categorical_mnar | notmiwae | 3 | 0, 1 |" in md
