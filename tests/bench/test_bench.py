"""The benchmark harness (``notmiwae-fast bench``, notmiwae_fast/bench/): the
--quick smoke run and its output schema (not its speed), the acceptance logic, the
statistics, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from notmiwae_fast import bench

PNG = b"\x89PNG\r\n\x1a\n"


def run_cli(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    env.pop("NOTMIWAE_FAST_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "notmiwae_fast.cli", "bench", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def assert_timing(t: dict):
    assert t["median"] > 0 and t["q1"] <= t["median"] <= t["q3"] and t["n"] >= 1


@pytest.mark.slow
def test_quick_run_writes_json_markdown_and_plots(tmp_path):
    out = tmp_path / "report"
    proc = run_cli("--quick", "--threads", "2", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "bench.json").read_text())
    machine = report["machine"]
    for key in ("cpu", "cores", "threads", "torch", "notmiwae_fast", "git_commit", "backend"):
        assert key in machine, key
    assert machine["threads"] == 2 and machine["device"] == "cpu"
    assert report["quick"] is True and set(report["results"]) == set(bench.SUITES)

    ops = report["results"]["ops"]["cases"]
    assert {c["op"] for c in ops} == set(bench.ALL_OPS)
    for case in ops:
        assert set(case["time_s"]) == {"fused", "eager"}
        for t in case["time_s"].values():
            assert_timing(t)
        assert case["elements_per_s"]["fused"] == pytest.approx(
            case["B"] * case["K"] * case["D"] / case["time_s"]["fused"]["median"]
        )

    train = report["results"]["train"]["cases"]
    assert [c["case"] for c in train] == ["tabular-B16", "tabular-B128", "image-16x16x3-B16"]
    for case in train:
        assert {"fused", "reference"} <= set(case["time_s"])
        for t in case["time_s"].values():
            assert_timing(t)

    imp = report["results"]["impute"]
    assert imp["cases"][0]["K"] == 1000 and imp["cases"][0]["rows_per_s"]["fused"] > 0
    assert imp["memory"]["peak_mb"]["fused"] is not None
    assert imp["image"]["megapixels_per_s"]["fused"] > 0

    sweep = report["results"]["sweep"]
    assert len(sweep["points"]) == 2 * 3 * 3  # 2 ops × 3 axes × 3 values
    assert [m["K"] for m in sweep["impute_memory"]] == [100, 1000, 10000]
    assert sweep["iw_impute_memory"]["peak_mb"]["fused"] is not None

    for check in report["acceptance"]:
        assert set(check) == {"check", "value", "target", "met"}
    md = (out / "bench.md").read_text()
    for heading in ("## Ops", "## Training step", "## Imputation", "## Scaling sweeps"):
        assert heading in md
    assert sorted(os.path.basename(p) for p in report["plots"]) == [
        "memory_vs_k.png",
        "scaling.png",
    ]
    for p in report["plots"]:
        assert open(p, "rb").read(8) == PNG

    # An existing report is kept unless --force: a one-line error, status 2.
    again = run_cli("--quick", "--suite", "ops", "--out", out, "--quiet")
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "--force" in again.stderr


def test_summary_statistics():
    s = bench.summary([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s == {"median": 3.0, "q1": 2.0, "q3": 4.0, "n": 5}
    assert bench.summary([7.0])["median"] == 7.0


def test_time_interleaved_runs_every_variant():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    t = bench.time_interleaved({"a": make("a"), "b": make("b")}, repeats=3, device="cpu")
    assert set(t) == {"a", "b"} and all(v["n"] == 3 for v in t.values())
    assert calls["a"] >= 3 + 2 and calls["b"] >= 3 + 2  # warm-up and timing calls


def _t(median):
    return {"median": median, "q1": median, "q3": median, "n": 1}


def test_acceptance_ratios_and_verdicts():
    results = {
        "ops": {
            "cases": [
                {
                    "op": "notmiwae_normal_terms",
                    "shape": "image-B16",
                    "time_s": {"fused": _t(1.0), "eager": _t(4.0), "compile": _t(0.5)},
                    "peak_mb": {"fused": 10.0, "eager": 20.0},
                },
                {
                    "op": "notmiwae_normal_terms",
                    "shape": "tabular-B128",
                    "time_s": {"fused": _t(1.0), "eager": _t(1.5)},
                },
            ]
        },
        "train": {
            "cases": [
                {
                    "case": "tabular-B16",
                    "batch": 16,
                    "time_s": {"fused": _t(1.0), "notmiwae_pytorch": _t(3.5)},
                }
            ]
        },
        "impute": {
            "cases": [
                {"K": 1000, "rows": 1000, "rows_per_s": {"fused": 100.0, "notmiwae_pytorch": 50.0}}
            ],
            "memory": {"D": 12288, "peak_mb": {"fused": 0.0, "notmiwae_pytorch": 800.0}},
        },
        "sweep": {"iw_impute_memory": {"K": 100000, "peak_mb": {"fused": 0.0}}},
    }
    got = {c["check"]: (round(c["value"], 6), c["met"]) for c in bench.acceptance(results)}
    values = list(got.values())
    assert values == [
        (4.0, True),  # image-B16 speed-up vs eager ≥ 3
        (0.5, False),  # memory fraction ≤ 1/3
        (0.5, False),  # vs torch.compile
        (1.5, False),  # tabular-B128 speed-up ≥ 2
        (3.5, True),  # training step vs notmiwae-pytorch ≥ 3
        (2.0, False),  # imputation rows/s ≥ 5
        (800.0, True),  # memory ratio (fused floored at 1 MB) ≥ 5
        (0.0, True),
    ]  # iw_impute extra memory < 100 MB


def test_bad_input():
    with pytest.raises(ValueError, match="argument 'suite'"):
        bench.run(["nope"])
    with pytest.raises(ValueError, match="argument 'device'"):
        bench.run(["ops"], device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_one_line_error(tmp_path):
    proc = run_cli("--device", "cuda", "--out", tmp_path / "r", "--quiet", timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
