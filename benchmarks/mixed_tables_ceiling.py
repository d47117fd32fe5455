"""How much knowing the categorical self-masking mechanism is worth on each mixed table
(a diagnostic for benchmarks/mixed_tables.py; seconds, no deep model).

A multinomial logistic regression (features standardised, the other columns one-hot)
predicts the mechanism's categorical column from all the other columns of the complete
table, 5-fold cross-validated, so every row gets P(category | other columns) from a
model that did not see it. The masked entries of the categorical-MNAR mechanism are a
reweighting of the rows (a lost category masked with probability P_LOST, the others
P_OTHER), so the expected accuracy on them is a weighted mean over the rows; three
predictions are scored:

* ``mode``: the table's most frequent category;
* ``plain``: argmax P(category | other columns), what a classifier that ignores the
  mechanism predicts (trained here on the complete table, not on the MNAR-thinned
  observed rows as MICE and missForest are: it is kinder to them than the benchmark);
* ``told``: argmax P(category | other columns) × P(masked | category) with the true
  P_LOST / P_OTHER: the Bayes rule for a masked entry when the mechanism is known;
* ``learnt process`` (per seed): the same with the per-category probabilities of being
  missing that not-MIWAE learnt in the results JSON (``missing_process``), where there.

``told`` is roughly what a model can reach when it learns the mechanism exactly; how far
the learnt probabilities are from P_LOST / P_OTHER shows how well the data let it learn
(for a categorical column, per-category self-masking is identifiable only through the
column's links to the other columns). Writes ``<results>_ceiling.md`` beside the results
JSON.

    python benchmarks/mixed_tables_ceiling.py --results benchmarks/results/mixed_tables_10k.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notmiwae_fast.experiments import mixed_masks, mixed_tables  # noqa: E402


def probabilities(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated P(column's category | the other columns) [N, C] and the
    categories (as strings, sorted)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = frame[column].astype(str).to_numpy()
    X = pd.get_dummies(frame.drop(columns=column), dtype=float).astype(float).to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return cross_val_predict(model, X, y, cv=5, method="predict_proba"), np.unique(y)


def expected_accuracy(pred: np.ndarray, y: np.ndarray, weight: np.ndarray) -> float:
    """Accuracy over the rows weighted by their probability of being masked."""
    return float(np.sum(weight * (pred == y)) / weight.sum())


def table_row(name: str, runs: list) -> str:
    """The Markdown row of one table (the not-MIWAE cells of ``runs`` for the last two
    columns)."""
    table = mixed_tables.MIXED_TABLES[name]
    frame = table.load()
    y = frame[table.categorical].astype(str).to_numpy()
    lost = [str(v) for v in table.lost]
    weight = mixed_masks.categorical_mask_probability(y, lost)
    P, classes = probabilities(frame, table.categorical)
    mode = pd.Series(y).value_counts().index[0]
    told = mixed_masks.categorical_mask_probability(classes, lost)
    learnt, got = [], []
    for r in sorted(runs, key=lambda r: r["seed"]):
        if (r["table"], r["mechanism"], r["method"]) != (name, "categorical_mnar", "notmiwae"):
            continue
        p = r["missing_process"][table.categorical]["p_missing"]
        rate = np.array([p[c] for c in classes])
        learnt.append(f"{expected_accuracy(classes[(P * rate).argmax(1)], y, weight):.3f}")
        got.append(f"{r['accuracy']:.3f}")
    cells = [
        expected_accuracy(np.full(len(y), mode), y, weight),
        expected_accuracy(classes[P.argmax(1)], y, weight),
        expected_accuracy(classes[(P * told).argmax(1)], y, weight),
    ]
    values = " | ".join(f"{v:.3f}" for v in cells)
    return f"| {name} | {values} | {', '.join(learnt) or '–'} | {', '.join(got) or '–'} |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", default=list(mixed_tables.MIXED_TABLES))
    parser.add_argument("--results", type=Path, default=None, help="a mixed_tables JSON")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    runs = json.loads(args.results.read_text())["runs"] if args.results else []
    lines = [
        "# Knowing the categorical MNAR mechanism (benchmarks/mixed_tables_ceiling.py)",
        "",
        "Expected accuracy on the categorical-MNAR masked entries of a 5-fold "
        "cross-validated logistic regression on the complete table: the mode, its "
        "argmax (`plain`), its argmax reweighted by the true P(masked | category) "
        "(`told`) and by the one not-MIWAE learnt (per seed), beside not-MIWAE's "
        "accuracy. See the script's docstring.",
        "",
        "| table | mode | plain | told | learnt process, per seed | not-MIWAE, per seed |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.tables:
        lines.append(table_row(name, runs))
        print(lines[-1], flush=True)
    if args.results:
        out = args.results.with_name(args.results.stem + "_ceiling.md")
        out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
