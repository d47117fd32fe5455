"""benchmarks/mnar_defaults.py on a tiny table: every cell written, resumed, reported."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mnar_defaults.py"


def load_script():
    spec = importlib.util.spec_from_file_location("mnar_defaults", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_harness_on_a_tiny_table(tmp_path):
    mod = load_script()
    g = np.random.default_rng(0)
    tables = {"tiny": g.normal(size=(60, 1)) + g.normal(size=(60, 4))}
    out = tmp_path / "r.json"
    header = {"note": "test", "machine": "m", "load_start": [0.0], "threads": "1"}
    methods = ["mean", "mice", "notmiwae_default"]
    mechanisms = ["mnar_logistic", "mcar"]
    results = mod.run_grid(tables, mechanisms, methods, [0], 4, out, header)
    cells = json.loads(out.read_text())["cells"]
    assert len(cells) == 6 and set(cells) == set(results["cells"])
    assert all(0 < c["rmse"] < 5 for c in cells.values())
    assert "selection" in cells["tiny/mcar/notmiwae_default/0"]
    # resumed: nothing recomputed
    before = out.read_text()
    mod.run_grid(tables, mechanisms, methods, [0], 4, out, header)
    assert json.loads(out.read_text())["cells"] == json.loads(before)["cells"]
    mod._write(json.loads(out.read_text()), out)
    report = out.with_suffix(".md").read_text()
    assert "## mnar_logistic" in report and "## mcar" in report
    assert report.count("| tiny |") == 2 and "**average**" in report
