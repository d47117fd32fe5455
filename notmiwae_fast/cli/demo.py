"""``demo``: the paper's MNAR protocol on the breast cancer data (mean, MIWAE and
not-MIWAE imputation; a plot of the learnt missing process)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ._common import _check_output, _say, _with_threads, _write_atomic

DEMO_ITERATIONS = 8000
DEMO_IMPUTE_SAMPLES = 1000


@_with_threads(lambda args: args.threads)
def cmd_demo(args: argparse.Namespace) -> int:
    """notmiwae-fast demo: trains MIWAE and not-MIWAE on the breast cancer data with
    the paper's missing process, prints the RMSE of each imputation and plots the
    learnt missing process."""
    from ..experiments import protocol
    from ..experiments.datasets import load_breast_cancer
    from ..experiments.plots import plot_missing_process

    out_dir = Path(args.out)
    plot_path, summary_path = out_dir / "missing_process.png", out_dir / "demo_results.json"
    for path in (summary_path, plot_path):
        _check_output(path, [], args.force)
    X, names = load_breast_cancer()
    X_true, X_missing, s = protocol.mnar_table1(X, args.seed)
    D = X.shape[1]
    _say(
        args,
        f"breast cancer (scikit-learn): {X.shape[0]} rows x {D} features, "
        f"standardised; the first {D // 2} features miss their values above the "
        f"mean ({int((s == 0).sum())} missing entries, "
        f"{100 * (s == 0).mean():.1f}%)",
    )
    _say(
        args,
        f"training MIWAE and not-MIWAE (self-masking) for {args.max_iter} "
        f"iterations each, imputing with {args.impute_samples} importance samples",
    )
    results, fitted = _fit_and_score(args, X_true, X_missing, s)
    width = max(map(len, results))
    print(f"{'method':<{width}}  RMSE (missing entries, standardised)")
    for label, r in results.items():
        print(f"{label:<{width}}  {r['rmse']:.3f}   ({r['seconds']:.1f} s)")
    columns = list(range(D // 2))
    plot = plot_missing_process(
        fitted["notmiwae_selfmasking"],
        X_true,
        columns,
        thresholds=X_true[:, columns].mean(axis=0),
        names=names,
        path=plot_path,
    )
    summary = {
        "data": "sklearn breast cancer",
        "iterations": args.max_iter,
        "impute_samples": args.impute_samples,
        "seed": args.seed,
        "results": results,
        "plot": str(plot),
    }
    _write_atomic(summary_path, lambda f: json.dump(summary, f, indent=2))
    print(f"plot of the learnt missing process: {plot}")
    return 0


def _fit_and_score(
    args: argparse.Namespace, X_true: np.ndarray, X_missing: np.ndarray, s: np.ndarray
) -> tuple[dict, dict]:
    """Fits the mean fill, MIWAE and not-MIWAE on X_missing; their RMSE on the missing
    entries and time by label, and the fitted imputers by method."""
    from .. import utils
    from ..experiments import protocol

    D = X_true.shape[1]
    results = {}
    fitted = {}
    for method in ("mean", "miwae", "notmiwae_selfmasking"):
        start = time.perf_counter()
        imputer = protocol.make_imputer(
            method, args.max_iter, args.impute_samples, args.seed, D, verbose=not args.quiet
        )
        X_imputed = imputer.fit_transform(X_missing)
        results[protocol.METHODS[method][0]] = {
            "rmse": utils.missing_rmse(X_true, X_imputed, s),
            "seconds": time.perf_counter() - start,
        }
        fitted[method] = imputer
    return results, fitted
