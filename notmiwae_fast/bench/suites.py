"""The suites (ops, train, impute, sweep), each measuring its cases against their
alternatives in this one process, and :func:`run`, which runs the suites asked for and
writes the report."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .cases import ALL_OPS, IW_OPS, MLP_OPS, OP_SHAPES, TABULAR_D, op_call, op_forward_bytes
from .machine import machine_info
from .memory import peak_mb
from .model_cases import (
    AUTOCAST,
    autocast_imputation_error,
    have_notmiwae_pytorch,
    image_call,
    impute_call,
    train_step_call,
)
from .report import acceptance, markdown, plots
from .timing import time_interleaved

SUITES = ("ops", "train", "impute", "sweep")


def suite_ops(
    device: str, repeats: int, threads: int, quick: bool, log: Callable[[str], None]
) -> dict:
    """Every op, forward + backward, fused against eager (and torch.compile) at the op
    shapes: time, elements/s, peak memory; on CUDA the forward's bandwidth too."""
    shapes = {"tabular-B128": OP_SHAPES["tabular-B128"]}
    if not quick:
        shapes = dict(OP_SHAPES)
    variants = ["fused", "eager"] + ([] if quick else ["compile"])
    rows = []
    for op in ALL_OPS:
        for shape_name, (B, K, D) in shapes.items():
            if op in IW_OPS and shape_name == "image-B16" and op != "iw_impute":
                continue
            if op in MLP_OPS and shape_name == "image-B16":
                continue
            calls = {}
            for v in variants:
                if v == "compile" and device == "cuda" and shape_name != "image-B16":
                    continue  # each torch.compile costs seconds: on the GPU, the large shape only
                try:
                    calls[v] = op_call(op, v, B, K, D, device)
                    calls[v]()
                except Exception as err:  # noqa: BLE001  (torch.compile may be unavailable here)
                    log(f"  {op} {shape_name} {v}: unavailable ({type(err).__name__}: {err})")
                    calls.pop(v, None)
            t = time_interleaved(calls, repeats, device)
            row = {
                "op": op,
                "shape": shape_name,
                "B": B,
                "K": K,
                "D": D,
                "time_s": t,
                "elements_per_s": {v: B * K * D / t[v]["median"] for v in t},
            }
            if not quick or device == "cuda":
                row["peak_mb"] = {
                    v: peak_mb(
                        {"kind": "op", "op": op, "shape": [B, K, D], "variant": v}, device, threads
                    )
                    for v in ("fused", "eager")
                }
            if device == "cuda":
                fwd = time_interleaved(
                    {"fused": op_call(op, "fused", B, K, D, device, backward=False)},
                    repeats,
                    device,
                )
                row["forward_s"] = fwd["fused"]
                row["forward_bytes"] = op_forward_bytes(op, B, K, D, device)
            rows.append(row)
            log(
                f"  {op:<26} {shape_name:<13} "
                + "  ".join(f"{v} {1e3 * t[v]['median']:.3f} ms" for v in t)
            )
    return {"cases": rows}


def suite_train(device: str, repeats: int, quick: bool, log: Callable[[str], None]) -> dict:
    """Training steps (tabular B = 16 and 128, 16×16 RGB tiles) of every implementation."""
    impls = ["fused", "reference"] + (["notmiwae_pytorch"] if have_notmiwae_pytorch() else [])
    cases = []
    for name, batch, image in [("tabular-B16", 16, False), ("tabular-B128", 128, False)] + [
        ("image-16x16x3-B16", 16, True)
    ]:
        names = [i for i in impls if not (image and i == "notmiwae_pytorch")]
        calls = {i: train_step_call(i, batch, device, image) for i in names}
        for fn in calls.values():
            for _ in range(3 if quick else 10):
                fn()
        # Rounds of >= 0.1 s of consecutive steps: training runs steps back to back, so
        # a round measures that steady state, not one step on caches the other
        # implementations just evicted.
        t = time_interleaved(calls, repeats, device, min_time=0.1)
        cases.append(
            {
                "case": name,
                "batch": batch,
                "time_s": t,
                "steps_per_s": {i: 1 / t[i]["median"] for i in t},
                "rows_per_s": {i: batch / t[i]["median"] for i in t},
            }
        )
        log(f"  train {name:<18} " + "  ".join(f"{i} {1e3 * t[i]['median']:.2f} ms" for i in t))
    return {"cases": cases}


def suite_impute(
    device: str, repeats: int, threads: int, quick: bool, log: Callable[[str], None]
) -> dict:
    """Imputation rows/s (K = 1000, 10000), its error under autocast, its peak memory,
    and impute_image megapixels/s."""
    impls = ["fused", AUTOCAST, "reference"] + (
        ["notmiwae_pytorch"] if have_notmiwae_pytorch() else []
    )
    rows = 200 if quick else 1000
    cases = []
    for k in [1000] if quick else [1000, 10000]:
        n = rows if k == 1000 or device == "cuda" else rows // 10  # rows/s: fewer suffice
        calls = {i: impute_call(i, n, TABULAR_D, k, device) for i in impls}
        t = time_interleaved(calls, max(3, repeats // 4), device)
        cases.append(
            {
                "case": f"tabular-K{k}",
                "rows": n,
                "D": TABULAR_D,
                "K": k,
                "time_s": t,
                "rows_per_s": {i: n / t[i]["median"] for i in t},
            }
        )
        log(f"  impute K={k:<6} " + "  ".join(f"{i} {n / t[i]['median']:.0f} rows/s" for i in t))
    autocast_error = autocast_imputation_error(rows, TABULAR_D, 1000, device)
    log(
        "  impute under autocast: |difference| from float32 max "
        f"{autocast_error['max_abs_diff']:.4f}, mean {autocast_error['mean_abs_diff']:.5f}"
    )
    mem_d, mem_rows = (1024, 16) if quick else (12288, 16)
    memory = {
        i: peak_mb(
            {"kind": "impute", "impl": i, "rows": mem_rows, "d": mem_d, "k": 1000}, device, threads
        )
        for i in impls
        if i != AUTOCAST
    }
    log(f"  impute memory D={mem_d} K=1000: " + "  ".join(f"{i} {m} MB" for i, m in memory.items()))
    side = 128 if quick else 512
    calls = {i: image_call(i, side, device) for i in ("fused", "reference")}
    t = time_interleaved(calls, max(3, repeats // 4), device)
    image = {
        "side": side,
        "time_s": t,
        "megapixels_per_s": {i: side * side / 1e6 / t[i]["median"] for i in t},
    }
    log(
        f"  impute_image {side}²: "
        + "  ".join(f"{i} {image['megapixels_per_s'][i]:.3f} MP/s" for i in t)
    )
    return {
        "cases": cases,
        "memory": {"rows": mem_rows, "D": mem_d, "K": 1000, "peak_mb": memory},
        "image": image,
        "autocast_error": autocast_error,
    }


def suite_sweep(
    device: str, repeats: int, threads: int, quick: bool, log: Callable[[str], None]
) -> dict:
    """Scaling of the fused notmiwae_normal_terms (forward + backward) and iw_impute over
    B, K and D, one at a time from a base shape; imputation memory against K."""
    base = {"B": 64, "K": 32, "D": 64}
    grid = [16, 64, 256] if quick else [16, 64, 256, 1024, 4096]
    points = []
    for op in ("notmiwae_normal_terms", "iw_impute"):
        for axis in ("B", "K", "D"):
            for value in grid:
                shape = dict(base, **{axis: value})
                t = time_interleaved(
                    {"fused": op_call(op, "fused", shape["B"], shape["K"], shape["D"], device)},
                    max(3, repeats // 2),
                    device,
                )["fused"]
                points.append(
                    {
                        "op": op,
                        "axis": axis,
                        **shape,
                        "BKD": shape["B"] * shape["K"] * shape["D"],
                        "time_s": t,
                    }
                )
    memory = _sweep_impute_memory(device, threads, quick, log)
    op_memory = _iw_impute_op_memory(device, threads, quick, log)
    return {"base": base, "points": points, "impute_memory": memory, "iw_impute_memory": op_memory}


def _sweep_impute_memory(
    device: str, threads: int, quick: bool, log: Callable[[str], None]
) -> list[dict]:
    """The imputation's peak memory against K (64 rows, D = 64)."""
    ks = [100, 1000, 10000] if quick else [100, 1000, 10000, 100000]
    memory = []
    for k in ks:
        memory.append(
            {
                "K": k,
                "rows": 64,
                "D": 64,
                "peak_mb": {
                    i: peak_mb(
                        {"kind": "impute", "impl": i, "rows": 64, "d": 64, "k": k}, device, threads
                    )
                    for i in (("fused",) if k > 10000 else ("fused", "reference"))
                },
            }
        )
        log(f"  sweep memory K={k}: {memory[-1]['peak_mb']}")
    return memory


def _iw_impute_op_memory(
    device: str, threads: int, quick: bool, log: Callable[[str], None]
) -> dict:
    # The kernel issue's memory target: iw_impute's own allocations beyond its inputs
    # (the [B, K, D] values are an input) at B = 64, K = 100,000, D = 64.
    k_op = 10000 if quick else 100000
    op_memory = {
        "B": 64,
        "K": k_op,
        "D": 64,
        "peak_mb": {
            v: peak_mb(
                {
                    "kind": "op",
                    "op": "iw_impute",
                    "shape": [64, k_op, 64],
                    "variant": v,
                    "backward": False,
                },
                device,
                threads,
            )
            for v in ("fused", "eager")
        },
    }
    log(f"  iw_impute forward B=64 K={k_op} D=64 peak extra memory: {op_memory['peak_mb']}")
    return op_memory


def run(
    suites: Sequence[str] = ("all",),
    device: str = "cpu",
    out_dir: str | os.PathLike = "bench-results",
    quick: bool = False,
    threads: int | None = None,
    repeats: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs the suites, writes bench.json, bench.md and the plots into ``out_dir``;
    returns the report (a dict, as in bench.json)."""
    from .._common.io import write_atomic

    suites = SUITES if "all" in suites else tuple(suites)
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(
            f"argument 'suite' must be among {', '.join(SUITES + ('all',))}; got {unknown[0]!r}"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("argument 'device' is 'cuda' but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"argument 'device' must be 'cpu' or 'cuda'; got {device!r}")
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    repeats = repeats or (5 if quick else 15)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {
        "machine": machine_info(device, threads),
        "quick": quick,
        "repeats": repeats,
        "suites": list(suites),
        "results": {},
    }
    for name in suites:
        log(f"== {name}")
        t0 = time.perf_counter()
        if name == "ops":
            report["results"]["ops"] = suite_ops(device, repeats, threads, quick, log)
        elif name == "train":
            report["results"]["train"] = suite_train(device, repeats, quick, log)
        elif name == "impute":
            report["results"]["impute"] = suite_impute(device, repeats, threads, quick, log)
        else:
            report["results"]["sweep"] = suite_sweep(device, repeats, threads, quick, log)
        report["results"][name]["seconds"] = time.perf_counter() - t0
        report["acceptance"] = acceptance(report["results"])
        report["seconds"] = time.perf_counter() - start
        # Written after every suite: a run stopped half-way keeps what it measured.
        write_atomic(out_dir / "bench.json", lambda f: json.dump(report, f, indent=2), text=True)
        write_atomic(out_dir / "bench.md", lambda f: f.write(markdown(report)), text=True)
    report["plots"] = plots(report, out_dir)
    write_atomic(out_dir / "bench.json", lambda f: json.dump(report, f, indent=2), text=True)
    return report
