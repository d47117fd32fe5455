"""not-MIWAE on real mixed tables (issue 21's evaluation): four tables shipped inside
installable packages (notmiwae_fast.experiments.mixed_tables; the packages are in
benchmarks/requirements-mixed.txt), three mechanisms (categorical self-masking MNAR,
numeric threshold self-masking MNAR, MCAR; notmiwae_fast.experiments.mixed_masks), five
methods:

* ``mean_mode``: the observed mean of a numeric column, the observed mode of a
  categorical one;
* ``mice``: chained equations as R's mice does for a mixed table: BayesianRidge for a
  numeric column, a multinomial LogisticRegression for a categorical one (mice's
  "polyreg"), in the loop described under ``missforest`` (10 rounds, features
  standardised); single imputation by the predicted mean / most probable category;
* ``mice_onehot``: scikit-learn's IterativeImputer with BayesianRidge (10 rounds) on the
  table with each categorical column one-hot encoded (a missing category: NaN in its
  whole group), each group decoded by argmax, counts rounded — kept because it is the
  usual recipe, but it is a weak baseline for categories: each one-hot column is
  predicted from its own group's other columns, which determine it exactly on the
  observed rows and hold imputed fractions on the missing ones (penguins' species under
  MCAR: accuracy 0.47 where the forests reach 0.98);
* ``missforest``: a classifier per categorical column loop (Stekhoven & Bühlmann's
  algorithm): start from mean / mode, then for each column with missing values (fewest
  first) a RandomForestRegressor (numeric) or RandomForestClassifier (categorical; 100
  trees, scikit-learn defaults otherwise) fitted on its observed rows with the other
  columns (categoricals one-hot) predicts its missing rows; at most 5 rounds, stopping
  when a round changes nothing. (IterativeImputer with regression forests on the one-hot
  columns was tried first and dropped: each one-hot column is then predicted from its
  own group's other columns, which determine it exactly on the observed rows and hold
  imputed fractions on the missing ones; on fair it picked rare occupations, accuracy
  0.05 against the mode's 0.45 under MCAR.)
* ``miwae``: MIWAEImputer, and ``notmiwae``: NotMIWAEImputer with its default missing
  process (self-masking, one logit per category), both on the DataFrame itself with
  the detected column types, ``--max-iter`` steps, ``--impute-samples`` importance
  samples.

Metrics over the masked entries: RMSE on the numeric columns, each column's error
divided by the complete column's std (one RMSE pooled over the numeric columns'
missing entries), accuracy and macro-F1 on the masked categorical column.

Each finished (table, mechanism, method, seed) is appended to the results JSON at once
(cells already there are skipped, so a run can be resumed); the Markdown table (mean ±
std over seeds) and the acceptance check are rewritten after each cell. torch runs on
one thread; os.getloadavg() is recorded per cell.

    python benchmarks/mixed_tables.py                # all cells
    python benchmarks/mixed_tables.py --quick        # a smoke run (short training)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notmiwae_fast._common.io import write_atomic  # noqa: E402
from notmiwae_fast.experiments import mixed_masks, mixed_tables  # noqa: E402

METHODS = ("mean_mode", "mice_onehot", "mice", "missforest", "miwae", "notmiwae")
RESULTS = ROOT / "benchmarks" / "results" / "mixed_tables.json"
QUICK = {"max_iter": 300, "impute_samples": 100, "n_trees": 20, "seeds": [0]}
# The acceptance's "noise": differences smaller than this (or than twice the std of
# the per-seed difference) count as ties.
NOISE = {"rmse": 0.02, "accuracy": 0.02}


# -- one-hot encoding for the scikit-learn baselines ------------------------------------
def one_hot(frame: pd.DataFrame) -> tuple[np.ndarray, list]:
    """[N, P] float array: numeric columns as floats, each categorical column one-hot
    (NaN in the whole group where missing); and the groups [(column, categories or None,
    column indices)]."""
    blocks, groups, start = [], [], 0
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.CategoricalDtype):
            categories = list(series.cat.categories)
            block = np.zeros((len(frame), len(categories)))
            codes = series.cat.codes.to_numpy()
            block[np.flatnonzero(codes >= 0), codes[codes >= 0]] = 1.0
            block[codes < 0] = np.nan
        else:
            categories = None
            block = series.astype("float64").to_numpy()[:, None]
        blocks.append(block)
        groups.append((name, categories, list(range(start, start + block.shape[1]))))
        start += block.shape[1]
    return np.hstack(blocks), groups


def from_one_hot(filled: np.ndarray, groups: list, frame: pd.DataFrame) -> pd.DataFrame:
    """frame with its missing entries from ``filled`` (argmax per categorical group,
    integer columns rounded), dtypes and categories kept."""
    out = frame.copy()
    for name, categories, idx in groups:
        missing = frame[name].isna().to_numpy()
        if not missing.any():
            continue
        if categories is not None:
            values = frame[name].astype(object).to_numpy().copy()
            values[missing] = [categories[k] for k in filled[missing][:, idx].argmax(1)]
        else:
            values = frame[name].astype("float64").to_numpy().copy()
            values[missing] = filled[missing, idx[0]]
            if pd.api.types.is_integer_dtype(frame[name].dtype):
                values = np.round(values)
        out[name] = pd.Series(values, index=frame.index).astype(frame[name].dtype)
    return out


# -- the methods -------------------------------------------------------------------------
def impute(method: str, X: pd.DataFrame, seed: int, settings: dict) -> tuple[pd.DataFrame, dict]:
    """X imputed by ``method``; and what to record of the fit (iterations)."""
    if method in ("miwae", "notmiwae"):
        from notmiwae_fast import MIWAEImputer, NotMIWAEImputer

        cls = NotMIWAEImputer if method == "notmiwae" else MIWAEImputer
        imputer = cls(
            max_iter=settings["max_iter"],
            n_impute_samples=settings["impute_samples"],
            random_state=seed,
        ).fit(X)
        info = {"iterations": int(imputer.n_iter_)}
        if method == "notmiwae":
            info["missing_process"] = imputer.missing_process_
        return imputer.transform(X), info
    arr, groups = one_hot(X)
    if method == "mean_mode":
        filled = np.where(np.isnan(arr), np.nanmean(arr, axis=0), arr)
        return from_one_hot(filled, groups, X), {}
    if method == "missforest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        def forests(categorical):
            model = RandomForestClassifier if categorical else RandomForestRegressor
            return model(n_estimators=settings["n_trees"], random_state=seed)

        return chained(X, forests, rounds=5)
    if method == "mice":
        from sklearn.linear_model import BayesianRidge, LogisticRegression

        def linear(categorical):
            return LogisticRegression(max_iter=1000) if categorical else BayesianRidge()

        return chained(X, linear, rounds=10)
    if method != "mice_onehot":
        raise ValueError(f"argument 'method' must be one of {METHODS}; got {method!r}")
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer
    from sklearn.linear_model import BayesianRidge

    imputer = IterativeImputer(
        estimator=BayesianRidge(), max_iter=10, skip_complete=True, random_state=seed
    )
    filled = imputer.fit_transform(arr)
    return from_one_hot(filled, groups, X), {"iterations": int(imputer.n_iter_)}


def chained(X: pd.DataFrame, model, rounds: int):
    """The chained-equations loop of ``mice`` and ``missforest`` (see the module
    docstring): ``model(categorical)`` makes a column's estimator. X imputed, and the
    rounds run."""
    missing = {c: X[c].isna().to_numpy() for c in X.columns}
    todo = sorted((c for c in X.columns if missing[c].any()), key=lambda c: missing[c].sum())
    filled, groups = one_hot(X)
    filled = from_one_hot(np.where(np.isnan(filled), np.nanmean(filled, 0), filled), groups, X)
    done = 0
    while done < rounds:
        done += 1
        changed = False
        for column in todo:
            rows = missing[column]
            features, _ = one_hot(filled.drop(columns=column))
            std = features.std(0)
            features = (features - features.mean(0)) / np.where(std > 0, std, 1.0)
            target = filled[column]
            categorical = isinstance(target.dtype, pd.CategoricalDtype)
            y = target.astype(object if categorical else "float64").to_numpy()
            estimator = model(categorical).fit(features[~rows], y[~rows])
            new = y.copy()
            new[rows] = estimator.predict(features[rows])
            changed |= bool((new[rows] != y[rows]).any())
            filled[column] = pd.Series(new, index=X.index).astype(X[column].dtype)
        if not changed:
            break
    return filled, {"iterations": done}


def score(truth: pd.DataFrame, filled: pd.DataFrame, mask: pd.DataFrame, numeric, categorical):
    """Standardised RMSE over the numeric columns' masked entries; accuracy and macro-F1
    over the categorical column's (None where nothing is masked)."""
    from sklearn.metrics import f1_score

    errors = []
    for name in numeric:
        rows = mask[name].to_numpy()
        true = truth[name].astype("float64").to_numpy()
        got = filled[name].astype("float64").to_numpy()
        errors.append((got[rows] - true[rows]) / true.std())
    errors = np.concatenate(errors) if errors else np.empty(0)
    rows = mask[categorical].to_numpy()
    true = truth[categorical].astype(str).to_numpy()[rows]
    got = filled[categorical].astype(str).to_numpy()[rows]
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))) if errors.size else None,
        "accuracy": float(np.mean(true == got)) if rows.any() else None,
        "macro_f1": float(f1_score(true, got, average="macro")) if rows.any() else None,
        "n_missing_numeric": int(errors.size),
        "n_missing_categorical": int(rows.sum()),
    }


def run_cell(frame, table, mechanism, method, seed, settings, model_seed=None) -> dict:
    """One (table, mechanism, method, seed): mask, impute, score. ``table`` is a
    :class:`~notmiwae_fast.experiments.mixed_tables.MixedTable`-like object (its
    ``categorical`` column and ``lost`` categories). The method is seeded with
    ``model_seed`` when given (the fit's noise on fixed masks), else with ``seed``."""
    numeric = [c for c in frame.columns if frame[c].dtype == np.float64]
    mask = mixed_masks.mechanism_mask(
        frame, mechanism, table.categorical, table.lost, numeric, seed=seed
    )
    X = mixed_masks.apply_mask(frame, mask)
    load = os.getloadavg()
    start = time.perf_counter()
    filled, info = impute(method, X, seed if model_seed is None else model_seed, settings)
    seconds = time.perf_counter() - start
    for name in frame.columns:
        if filled[name].dtype != frame[name].dtype or filled[name].isna().any():
            raise AssertionError(f"{method} returned column {name!r} changed or incomplete")
    return {
        "mechanism": mechanism,
        "method": method,
        "seed": seed,
        **score(frame, filled, mask, numeric, table.categorical),
        "seconds": round(seconds, 2),
        "loadavg": [round(v, 2) for v in load],
        **info,
    }


# -- the report ---------------------------------------------------------------------------
def summarise(runs: list) -> dict:
    """{(table, mechanism, method): {metric: (mean, std, n)}} and per-seed values."""
    cells: dict = {}
    for r in runs:
        cells.setdefault((r["table"], r["mechanism"], r["method"]), []).append(r)
    out = {}
    for key, rs in cells.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        out[key] = {
            m: [r[m] for r in rs if r.get(m) is not None]
            for m in ("rmse", "accuracy", "macro_f1", "seconds")
        }
        out[key]["seeds"] = [r["seed"] for r in rs]
    return out


def _fmt(values: list) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _compare(cells, key_a, key_b, metric, higher_better) -> tuple[str, float, str]:
    """'better' / 'tie' / 'worse' for a against b on metric (paired over the seeds both
    have), the mean difference a − b, and what the seeds say beside the rule: on how many
    a is better, and the paired t statistic (mean difference over its standard error;
    the rule compares the mean with twice one seed's spread, not the mean's)."""
    a, b = cells.get(key_a), cells.get(key_b)
    if not a or not b:
        return "missing", float("nan"), ""
    seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
    va = np.array([a[metric][a["seeds"].index(s)] for s in seeds])
    vb = np.array([b[metric][b["seeds"].index(s)] for s in seeds])
    diff = va - vb
    spread = diff.std(ddof=1) if len(diff) > 1 else 0.0
    noise = max(NOISE[metric], 2 * spread)
    gain = diff.mean() if higher_better else -diff.mean()
    verdict = "better" if gain > noise else ("worse" if gain < -noise else "tie")
    wins = int(np.sum(diff > 0) if higher_better else np.sum(diff < 0))
    t = gain / (spread / np.sqrt(len(diff))) if spread > 0 else float("nan")
    return verdict, float(diff.mean()), f"better on {wins}/{len(diff)}, t = {t:+.1f}"


def _verdict(ok: bool, *checks: tuple) -> str:
    return "not run" if any(c[0] == "missing" for c in checks) else ("met" if ok else "NOT met")


def acceptance(cells: dict, tables: list) -> list[str]:
    """The issue's acceptance, one line per check ("not run" where a method is missing)."""
    lines = []
    for t in tables:
        for base in ("mice", "missforest", "mice_onehot"):
            a = _compare(cells, (t, "categorical_mnar", "notmiwae"), (t, "categorical_mnar", base),
                         "accuracy", True)  # fmt: skip
            r = _compare(cells, (t, "categorical_mnar", "notmiwae"), (t, "categorical_mnar", base),
                         "rmse", False)  # fmt: skip
            ok = a[0] == "better" and r[0] in ("better", "tie")
            lines.append(
                f"| {t} | categorical MNAR vs {base} | accuracy {a[0]} ({a[1]:+.3f}); "
                f"RMSE {r[0]} ({r[1]:+.3f}) | {_verdict(ok, a, r)} | {a[2]} | {r[2]} |"
            )
        a = _compare(cells, (t, "mcar", "notmiwae"), (t, "mcar", "miwae"), "accuracy", True)
        r = _compare(cells, (t, "mcar", "notmiwae"), (t, "mcar", "miwae"), "rmse", False)
        ok = a[0] in ("better", "tie") and r[0] in ("better", "tie")
        lines.append(
            f"| {t} | MCAR vs miwae | accuracy {a[0]} ({a[1]:+.3f}); RMSE {r[0]} "
            f"({r[1]:+.3f}) | {_verdict(ok, a, r)} | {a[2]} | {r[2]} |"
        )
    return lines


def render_markdown(results: dict) -> str:
    s = results["settings"]
    cells = summarise(results["runs"])
    tables = list(dict.fromkeys(k[0] for k in cells))
    lines = [
        "# not-MIWAE on real mixed tables (benchmarks/mixed_tables.py)",
        "",
        f"Settings: {json.dumps(s)}. Mean ± std over seeds (paired: the same masks for "
        "every method). RMSE: numeric columns' masked entries, each standardised by the "
        "complete column's std; accuracy / macro-F1: the masked categorical column's "
        "masked entries.",
        "",
        "| table | mechanism | method | seeds | RMSE | accuracy | macro-F1 | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (t, mech, method), c in sorted(
        cells.items(),
        key=lambda kv: (tables.index(kv[0][0]), mixed_masks.MECHANISMS.index(kv[0][1]),
                        METHODS.index(kv[0][2])),
    ):  # fmt: skip
        lines.append(
            f"| {t} | {mech} | {method} | {len(c['seeds'])} | {_fmt(c['rmse'])} | "
            f"{_fmt(c['accuracy'])} | {_fmt(c['macro_f1'])} | {_fmt(c['seconds'])} |"
        )
    lines += [
        "",
        "## Acceptance (issue 21)",
        "",
        f"Tie: |mean paired difference| ≤ max({NOISE}, 2 × its std over seeds). Beside "
        "the rule, not part of the verdict: on how many seeds not-MIWAE did better, and "
        "the paired t statistic of its gain (the mean difference over its standard "
        "error; |t| > 2.4 is a two-sided p below 0.05 with 8 seeds).",
        "",
        "| table | check | outcome | verdict | accuracy: seeds | RMSE: seeds |",
        "|---|---|---|---|---|---|",
        *acceptance(cells, tables),
        "",
    ]
    return "\n".join(lines)


def resume(path: Path, settings: dict) -> dict:
    """The results at ``path`` to add to (a new, empty set when there are none);
    SystemExit when they were run with other settings."""
    if not path.exists():
        return {"settings": settings, "runs": []}
    results = json.loads(path.read_text())
    if results["settings"] != settings:
        raise SystemExit(f"{path} holds runs with settings {results['settings']}")
    return results


def save(results: dict, path: Path, render=None) -> None:
    """results as JSON at ``path`` and its Markdown (``render``, default
    :func:`render_markdown`) beside it, each written atomically."""
    write_atomic(path, lambda f: json.dump(results, f, indent=1), text=True)
    md = (render or render_markdown)(results)
    write_atomic(path.with_suffix(".md"), lambda f: f.write(md), text=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=list(mixed_tables.MIXED_TABLES))
    parser.add_argument("--mechanisms", nargs="+", default=list(mixed_masks.MECHANISMS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--max-iter", type=int, default=4000)
    parser.add_argument("--impute-samples", type=int, default=1000)
    parser.add_argument("--n-trees", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    settings = {"max_iter": args.max_iter, "impute_samples": args.impute_samples,
                "n_trees": args.n_trees}  # fmt: skip
    seeds = args.seeds
    if args.quick:
        settings = {k: v for k, v in QUICK.items() if k != "seeds"}
        seeds = QUICK["seeds"]
    path = args.results or (RESULTS.with_name("mixed_tables_quick.json") if args.quick else RESULTS)
    results = resume(path, settings)
    done = {(r["table"], r["mechanism"], r["method"], r["seed"]) for r in results["runs"]}
    for seed in seeds:
        for name in args.tables:
            table = mixed_tables.MIXED_TABLES[name]
            frame = table.load()
            for mechanism in args.mechanisms:
                for method in args.methods:
                    if (name, mechanism, method, seed) in done:
                        continue
                    record = run_cell(frame, table, mechanism, method, seed, settings)
                    results["runs"].append({"table": name, **record})
                    save(results, path)
                    print(
                        f"{name} {mechanism} {method} seed {seed}: rmse {record['rmse']} "
                        f"acc {record['accuracy']} ({record['seconds']} s)",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
