"""Default imputers under logistic MNAR, MAR and MCAR masks (issue 21, "defaults that
hold when the mechanism is not self-masking").

For each UCI table (label dropped; winequality-red with its lost decimal points
restored, see ``notmiwae_fast.experiments.protocol.restore_lost_decimal_points``), each
mechanism of :mod:`notmiwae_fast.experiments.masks` (30 % missing on the masked
columns) and each seed: standardise the complete table (mean, population std), draw
the mask, impute with every method, score the RMSE over the missing entries on that
standardised scale. The deep imputers run with their defaults (they standardise the
observed values themselves) but ``max_iter`` (``--max-iter``), ``random_state`` and
``device="cpu"``; one torch thread.

Writes ``benchmarks/results/mnar_defaults.json`` after every cell (a rerun skips the
cells already there) and ``mnar_defaults.md`` at the end.

    python benchmarks/mnar_defaults.py                # the full grid
    python benchmarks/mnar_defaults.py --quick        # banknote, 300 steps: a smoke run
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from notmiwae_fast import utils  # noqa: E402
from notmiwae_fast.experiments import datasets, masks  # noqa: E402
from notmiwae_fast.experiments.protocol import restore_lost_decimal_points  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 0.3


def _mean(seed: int, max_iter: int):
    from sklearn.impute import SimpleImputer

    return SimpleImputer(strategy="mean")


def _mice(seed: int, max_iter: int):
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer
    from sklearn.linear_model import BayesianRidge

    return IterativeImputer(estimator=BayesianRidge(), max_iter=10, random_state=seed)


def _missforest(seed: int, max_iter: int):
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    trees = ExtraTreesRegressor(n_estimators=50, n_jobs=1, random_state=seed)
    return IterativeImputer(estimator=trees, max_iter=5, random_state=seed)


def _deep(cls_name: str, **params) -> Callable:
    def build(seed: int, max_iter: int):
        import notmiwae_fast

        cls = getattr(notmiwae_fast, cls_name)
        return cls(max_iter=max_iter, random_state=seed, device="cpu", **params)

    return build


# name -> builder(seed, max_iter) of an object with fit_transform
METHODS: dict[str, Callable] = {
    "mean": _mean,
    "mice": _mice,
    "missforest": _missforest,
    "miwae": _deep("MIWAEImputer"),
    "notmiwae_selfmasking": _deep("NotMIWAEImputer", missing_process="selfmasking"),
    "notmiwae_linear": _deep("NotMIWAEImputer", missing_process="linear"),
    "notmiwae_default": _deep("NotMIWAEImputer"),
}


def load_table(name: str) -> np.ndarray:
    """The UCI table ``name`` without its label (winequality-red repaired)."""
    X, _ = datasets.load_uci(name)
    return restore_lost_decimal_points(X) if name == "winequality-red" else X


def run_cell(
    X: np.ndarray, mechanism: str, method: str, seed: int, max_iter: int
) -> dict[str, object]:
    """One cell: the RMSE of ``method`` on complete X under ``mechanism`` (seed), its
    seconds and, for the default not-MIWAE, the process selection."""
    X_true, _, _ = utils.standardize(np.asarray(X, dtype=np.float64))
    s = masks.make_mask(mechanism, X_true, RATE, seed)
    X_nan = np.where(s == 1, X_true, np.nan)
    imputer = METHODS[method](seed, max_iter)
    torch.set_num_threads(1)
    start = time.perf_counter()
    X_imp = imputer.fit_transform(X_nan)
    result: dict[str, object] = {
        "rmse": float(utils.missing_rmse(X_true, X_imp, s)),
        "seconds": time.perf_counter() - start,
        "missing_fraction": float(1 - s.mean()),
    }
    selection = getattr(imputer, "missing_process_selection_", None)
    if selection is not None:
        result["selection"] = selection
    return result


def run_grid(
    tables: dict[str, np.ndarray],
    mechanisms: list[str],
    methods: list[str],
    seeds: list[int],
    max_iter: int,
    out: Optional[Path],
    header: dict,
) -> dict:
    """Every cell (mechanism x table x method x seed); the results so far re-read from
    and written to ``out`` (JSON) after each cell. Returns the results dict."""
    results = json.loads(out.read_text()) if out is not None and out.exists() else {}
    results["header"] = header
    cells = results.setdefault("cells", {})
    for mechanism in mechanisms:
        for table, X in tables.items():
            for method in methods:
                for seed in seeds:
                    key = f"{table}/{mechanism}/{method}/{seed}"
                    if key in cells:
                        continue
                    cells[key] = run_cell(X, mechanism, method, seed, max_iter)
                    print(key, f"{cells[key]['rmse']:.3f}", f"{cells[key]['seconds']:.0f}s")
                    if out is not None:
                        out.write_text(json.dumps(results, indent=1))
    return results


def summarise(results: dict) -> tuple[dict, str]:
    """(summary: table -> mechanism -> method -> [mean, std, n]; averages over tables;
    the Markdown report)."""
    cells = results["cells"]
    grouped: dict = {}
    for key, cell in cells.items():
        table, mechanism, method, _ = key.split("/")
        grouped.setdefault(mechanism, {}).setdefault(table, {}).setdefault(method, [])
        grouped[mechanism][table][method].append(cell["rmse"])
    header = results["header"]
    lines = [
        "# Default imputers under logistic MNAR, MAR and MCAR masks",
        "",
        f"Generated by `benchmarks/mnar_defaults.py`. {header['note']}",
        "",
        f"Machine: {header['machine']}; load average at start {header['load_start']}, "
        f"at end {header.get('load_end')}; threads: {header['threads']}.",
        "",
    ]
    summary: dict = {}
    for mechanism, by_table in grouped.items():
        methods = [m for m in METHODS if any(m in v for v in by_table.values())]
        lines += [f"## {mechanism} (30 % missing)", ""]
        lines += ["| table | " + " | ".join(methods) + " | default chose |"]
        lines += ["|---" * (len(methods) + 2) + "|"]
        for table, by_method in by_table.items():
            row = []
            for method in methods:
                values = by_method.get(method, [])
                stat = (
                    [float(np.mean(values)), float(np.std(values)), len(values)] if values else None
                )
                summary.setdefault(mechanism, {}).setdefault(table, {})[method] = stat
                row.append("—" if stat is None else _cell(stat))
            chosen = sorted(
                {
                    cells[k]["selection"]["chosen"]
                    for k in cells
                    if k.startswith(f"{table}/{mechanism}/notmiwae_default/")
                    and "selection" in cells[k]
                }
            )
            lines.append(f"| {table} | " + " | ".join(row) + f" | {', '.join(chosen)} |")
        averages = {}
        for method in methods:
            means = [summary[mechanism][t][method] for t in by_table]
            if all(m is not None for m in means):
                averages[method] = float(np.mean([m[0] for m in means]))
        summary.setdefault("average", {})[mechanism] = averages
        lines.append(
            "| **average** | "
            + " | ".join(f"{averages[m]:.3f}" if m in averages else "—" for m in methods)
            + " | |"
        )
        if "mice" in averages and "notmiwae_default" in averages:
            lines += ["", _versus_mice(averages, summary[mechanism])]
        lines.append("")
    return summary, "\n".join(lines)


def _versus_mice(averages: dict, by_table: dict) -> str:
    """The default not-MIWAE against MICE: the gain of the average over tables, the
    tables it wins, and the gain without the table where MICE did worst (one table can
    carry an average)."""
    gain = 1 - averages["notmiwae_default"] / averages["mice"]
    pairs = {t: (m["notmiwae_default"][0], m["mice"][0]) for t, m in by_table.items()}
    wins = sum(d < m for d, m in pairs.values())
    worst = max(pairs, key=lambda t: pairs[t][1])
    rest = [pairs[t] for t in pairs if t != worst]
    gain_rest = 1 - np.mean([d for d, _ in rest]) / np.mean([m for _, m in rest])
    return (
        f"Default not-MIWAE vs MICE: average RMSE {gain:+.1%} lower; lower on {wins} of "
        f"{len(pairs)} tables; without {worst} (MICE's worst table) {gain_rest:+.1%}."
    )


def _stat(values: list) -> list:
    """[mean, std, n] of a cell's RMSEs over the seeds."""
    return [float(np.mean(values)), float(np.std(values)), len(values)]


def _cell(stat: list) -> str:
    mean, std, n = stat
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {std:.3f}"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="banknote, 300 steps, 1 seed")
    parser.add_argument("--max-iter", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tables", nargs="+", default=list(datasets.UCI_DATASETS))
    parser.add_argument("--mechanisms", nargs="+", default=list(masks.MECHANISMS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", type=Path, default=RESULTS / "mnar_defaults.json")
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="only merge the cells of these runs into --out"
    )
    args = parser.parse_args(argv)
    if args.merge:
        return _write(_merged(args.merge), args.out)
    if args.quick:
        args.tables, args.max_iter, args.seeds = ["banknote"], 300, [0]
        args.out = Path("/tmp/mnar_defaults_quick.json")
    torch.set_num_threads(1)
    header = {
        "note": (
            f"{args.max_iter} training steps per deep imputer"
            + (" (the default is 10,000; reduced for time)" if args.max_iter < 10_000 else "")
            + f", seeds {args.seeds}, 30 % missing, MICE = IterativeImputer"
            "(BayesianRidge, max_iter=10), missForest = IterativeImputer(ExtraTrees, 50 "
            "trees, max_iter=5); RMSE on the missing entries, standardised scale."
        ),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_start": [round(v, 2) for v in os.getloadavg()],
        "threads": "torch 1, OMP/MKL/OpenBLAS 1",
        "max_iter": args.max_iter,
        "seeds": args.seeds,
    }
    tables = {name: load_table(name) for name in args.tables}
    out = args.out
    results = run_grid(
        tables, args.mechanisms, args.methods, args.seeds, args.max_iter, out, header
    )
    results["header"]["load_end"] = [round(v, 2) for v in os.getloadavg()]
    _write(results, out)


def _merged(paths: list[Path]) -> dict:
    """The cells of several runs' JSON files in one results dict (the first's header,
    the load averages of all)."""
    runs = [json.loads(p.read_text()) for p in paths]
    header = dict(runs[0]["header"])
    header["load_start"] = [r["header"]["load_start"] for r in runs]
    header["load_end"] = [r["header"].get("load_end") for r in runs]
    header["note"] += f" Merged from {len(runs)} runs side by side."
    return {"header": header, "cells": {k: v for r in runs for k, v in r["cells"].items()}}


def _write(results: dict, out: Path) -> None:
    summary, report = summarise(results)
    results["summary"] = summary
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
