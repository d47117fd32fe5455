"""The imputer's fit with one thread and with two, as users call it:
``NotMIWAEImputer(max_iter=...).fit(X)`` on a mixed table (the Python-level mixed
model) and on a numeric one (the one-operator step), both generated (no optional
package needed), in alternating rounds in one process.

Variants: 1 thread; 2 threads; 2 threads with the Trainer's small steps left on the
thread pool (``Trainer._small_step`` patched to False: the step as it ran before small
steps were put on the calling thread). OMP_WAIT_POLICY=PASSIVE is set before torch
loads, as in benchmarks/train_loop.py (threads sleep between parallel regions, as a
busy or shared machine makes them do).

    python benchmarks/fit_threads.py [--steps 1000] [--rounds 5]

Writes <out>.json and <out>.md (default benchmarks/results/cpu/fit_threads).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _measure import cpu_run_record, load_text, spread, spread_text, write_report  # noqa: E402

VARIANTS = ("1 thread", "2 threads", "2 threads, small steps on the pool")


def tables() -> dict:
    """{name: the table to fit}, 20 % of each column missing at random: a mixed table
    shaped like palmerpenguins (333 rows, four floats, categorical columns of 3, 3 and
    2 categories, the first two tied to the floats) and 1000 rows of D = 11 normal
    numbers."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    group = rng.integers(0, 3, 333)
    mixed = pd.DataFrame(rng.normal(size=(333, 4)) + group[:, None], columns=list("abcd"))
    mixed["species"] = pd.Categorical(np.array(["x", "y", "z"])[group])
    island = (group + rng.integers(0, 2, 333)) % 3
    mixed["island"] = pd.Categorical(np.array(["p", "q", "r"])[island])
    mixed["sex"] = pd.Categorical(np.array(["f", "m"])[rng.integers(0, 2, 333)])
    mixed = mixed.mask(rng.random(mixed.shape) < 0.2)
    values = rng.normal(size=(1000, 11))
    values[rng.random(values.shape) < 0.2] = np.nan
    return {"mixed, 333 rows": mixed, "numeric, D = 11": values}


def fit_seconds(X, variant: str, steps: int) -> float:
    """Seconds for one ``fit`` of ``steps`` steps under ``variant``."""
    import torch

    from notmiwae_fast import NotMIWAEImputer
    from notmiwae_fast.train import trainer

    torch.set_num_threads(1 if variant == "1 thread" else 2)
    original = trainer.Trainer._small_step
    if variant.endswith("on the pool"):
        trainer.Trainer._small_step = lambda self, batch: False  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        NotMIWAEImputer(max_iter=steps, random_state=0, missing_process="selfmasking").fit(X)
        return time.perf_counter() - start
    finally:
        trainer.Trainer._small_step = original  # type: ignore[method-assign]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "cpu", "fit_threads"))
    args = parser.parse_args(argv)
    data = tables()
    load_before = os.getloadavg()
    times: dict = {(t, v): [] for t in data for v in VARIANTS}
    for X in data.values():  # warm-up: the operators' first calls, the allocator
        fit_seconds(X, VARIANTS[1], 50)
    for _ in range(args.rounds):
        for name, X in data.items():
            for variant in VARIANTS:
                times[(name, variant)].append(fit_seconds(X, variant, args.steps) / args.steps)
    results = {
        f"{name} / {variant}": spread([1e3 * v for v in t]) for (name, variant), t in times.items()
    }
    result = {
        "machine": cpu_run_record(2, load_before, None),
        "steps": args.steps,
        "rounds": args.rounds,
        "results": results,
    }
    write_report(args.out, result, markdown(result, data))
    return 0


def markdown(result: dict, data: dict) -> str:
    m = result["machine"]
    lines = [
        "# The imputer's fit with one thread and with two",
        "",
        f"{m['cpu']}, {m['cores']} cores, OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}, torch "
        f"{m['torch']}; {load_text(m)}. `NotMIWAEImputer(max_iter={result['steps']}, "
        'missing_process="selfmasking").fit(X)`, batch 16, K = 20, hidden 128; '
        f"{result['rounds']} alternating rounds.",
        "",
        "| table | threads | median ms/step [min–max] | × 1 thread |",
        "|---|---|---|---|",
    ]
    r = result["results"]
    for name in data:
        base = r[f"{name} / {VARIANTS[0]}"]["median_ms"]
        for variant in VARIANTS:
            t = r[f"{name} / {variant}"]
            lines.append(f"| {name} | {variant} | {spread_text(t)} | {base / t['median_ms']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
