"""Milliseconds per training step and per imputation call with CUDA graphs on and off.

Training: the benchmark's tabular not-MIWAE (self-masking, D = 11, hidden 128, K = 20)
takes optimizer steps on batches of 16 rows through ``Trainer(cuda_graphs=...)``; each
round times ``--steps`` steps (each ends in the step's own host sync, the loss check).
Imputation: the conditional mean of 64 rows over K = 10,000 samples in chunks of 500
(20 chunks), streamed (``model._stream``) or with the full chunks replayed from a graph
(``nn._chunk_graphs.captured_mean``). Graphs on and off alternate round by round; the
median and the inter-quartile range over rounds are reported.

    python benchmarks/cuda_graphs.py [--device cuda] [--rounds 15] [--out PREFIX]

Writes PREFIX.json and PREFIX.md (default benchmarks/results/cuda_graphs_<device>).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import traceback

import torch
from _measure import write_report

from notmiwae_fast.bench.cases import TABULAR_D
from notmiwae_fast.bench.model_cases import tabular_data, tabular_model
from notmiwae_fast.nn import _chunk_graphs
from notmiwae_fast.nn.base import evaluation
from notmiwae_fast.train import Trainer

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, ROWS, K, CHUNK = 16, 64, 10_000, 500


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_runner(device: torch.device, graphs: bool, steps: int):
    """A function timing ``steps`` training steps (ms per step), and whether the steps
    replay a CUDA graph."""
    model = tabular_model("fused", device=str(device))
    trainer = Trainer(model, lr=1e-3, device=device, progress=False, cuda_graphs=graphs)
    x, s = tabular_data(BATCH, TABULAR_D, str(device))
    for _ in range(10):  # the Adam state, the warm-up steps and the capture
        trainer.train_step((x, s))

    def run() -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step((x, s))
        sync(device)
        return (time.perf_counter() - start) * 1e3 / steps

    captured = trainer._graphs is not None and any(
        g.captured.is_graph for g in trainer._graphs.graphs.values()
    )
    return run, captured


def impute_runner(device: torch.device, graphs: bool, calls: int):
    """A function timing ``calls`` conditional means (ms per call), and whether the
    chunks replay a CUDA graph."""
    model = tabular_model("fused", device=str(device))
    x, s = tabular_data(ROWS, TABULAR_D, str(device))

    def mean():
        with evaluation(model):
            if graphs:
                return _chunk_graphs.captured_mean(model, x, s, K, CHUNK)
            return model._stream(x, s, K, CHUNK, lambda t: t["means"])[0]

    mean()  # a shape's first call streams (and marks the shape as seen)
    mean()  # its second captures

    def run() -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            mean()
        sync(device)
        return (time.perf_counter() - start) * 1e3 / calls

    kept = _chunk_graphs._graphs.get(model)
    graphs = kept.graphs.values() if kept is not None else []
    return run, any(g.captured is not None and g.captured.is_graph for g in graphs)


def summary(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "iqr_ms": [q[0], q[2]], "rounds": times}


def measure(make, device: torch.device, rounds: int, count: int) -> dict:
    """Graphs off and on, alternating round by round."""
    made = {flag: make(device, flag, count) for flag in (False, True)}
    runners = {flag: run for flag, (run, _) in made.items()}
    captured = made[True][1]
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for flag, run in runners.items():
            times[flag].append(run())
    return {"off": summary(times[False]), "on": summary(times[True]), "captured": captured}


def markdown(result: dict) -> str:
    lines = [
        f"# CUDA graphs on {result['device_name']} (torch {result['torch']})",
        "",
        "| case | graphs off: median ms (IQR) | graphs on: median ms (IQR) | speed-up |",
        "|---|---|---|---|",
    ]
    for name, case in result["cases"].items():
        if "error" in case:
            lines.append(f"| {name} | failed: {case['error']} | | |")
            continue
        off, on = case["off"], case["on"]
        cells = [
            f"{c['median_ms']:.3f} ({c['iqr_ms'][0]:.3f}-{c['iqr_ms'][1]:.3f})" for c in (off, on)
        ]
        speedup = f"{off['median_ms'] / on['median_ms']:.2f}x"
        if not case["captured"]:
            speedup += " (nothing captured: both uncaptured)"
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {speedup} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=200, help="training steps per round")
    parser.add_argument("--calls", type=int, default=5, help="imputation calls per round")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    out = args.out or os.path.join(HERE, "results", f"cuda_graphs_{device.type}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"device_name": name, "torch": torch.__version__, "cases": {}}
    cases = {
        f"training step, batch {BATCH}": (train_runner, args.steps),
        f"impute {ROWS} rows, K={K} in chunks of {CHUNK}": (impute_runner, args.calls),
    }
    failed = False
    for case, (make, count) in cases.items():
        try:
            result["cases"][case] = measure(make, device, args.rounds, count)
        except Exception as err:  # noqa: BLE001  (reported, the other case still runs)
            traceback.print_exc()
            result["cases"][case] = {"error": f"{type(err).__name__}: {err}"}
            failed = True
        write_report(out, result, markdown(result))  # after each case: kept if cut short
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
