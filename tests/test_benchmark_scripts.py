"""Smoke runs of the CPU timing scripts under benchmarks/ that reach into the package's
internals (so a renamed method fails here, not in the next benchmark run): each writes
its JSON and Markdown with every measurement it promises. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import _measure beside them
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_breakdown_reports_every_part(tmp_path, monkeypatch):
    mod = load("step_breakdown", monkeypatch)
    out = tmp_path / "breakdown"
    assert mod.main(["--batches", "16", "--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    parts = result["training"]["16"]
    for name in (
        "step/plain_default_adam",
        "step/flat_prototype_default_adam",
        "kernel/gauss_bound_grads",
        "part/adam_direct_fused_kernel",
        "plain_default/forward",
        "plain_default/backward",
        "plain_default/adam_default",
        "plain_fused/adam_fused",
    ):
        assert parts[name]["median_ms"] > 0, name
    assert set(result["imputation"]) == {"impute_batch", "decoder", "products", "noise"}
    report = out.with_suffix(".md").read_text()
    assert "## Training step, batch 16" in report and "80 % of the bound" in report


def test_malloc_reuse_runs_each_variant_in_its_own_process(tmp_path, monkeypatch):
    mod = load("malloc_reuse", monkeypatch)
    out = tmp_path / "malloc"
    assert mod.main(["--batches", "16", "--processes", "1", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert set(result["runs"]) == {"default", "keep_freed"}
    assert all(run[0]["16"]["ms"] > 0 for run in result["runs"].values())
    assert all(run[0]["16"]["faults_per_call"] >= 0 for run in result["runs"].values())
    assert "| 16 | keep_freed |" in out.with_suffix(".md").read_text()


def test_fit_threads_times_every_variant_on_both_tables(tmp_path, monkeypatch):
    mod = load("fit_threads", monkeypatch)
    out = tmp_path / "fit_threads"
    assert mod.main(["--steps", "20", "--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert len(result["results"]) == 2 * len(mod.VARIANTS)
    assert all(r["median_ms"] > 0 for r in result["results"].values())
    assert "| mixed, 333 rows | 2 threads, small steps on the pool |" in (
        out.with_suffix(".md").read_text()
    )
