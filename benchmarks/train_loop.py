"""The training step as users write it, against notmiwae-pytorch 0.1.3 in the same run.

Three variants of one step of NotMIWAE (self-masking, Gaussian, D = 11, hidden 128,
latent 10, K = 20) on the benchmark's MNAR data:

* ``plain``: the loop most PyTorch users write (and notmiwae-pytorch's README shows),
  ``loss = model(x, s)["loss"]; opt.zero_grad(); loss.backward(); opt.step()`` with
  ``torch.optim.Adam(model.parameters(), lr=1e-3)`` — for both packages;
* ``plain_fused_adam``: the same loop with ``torch.optim.Adam(..., fused=True)``;
* ``trainer``: notmiwae_fast's ``Trainer.train_step`` (for notmiwae-pytorch: its
  Trainer's step body, Adam plus clipping at norm 1).

Rounds alternate the variants in one process, so load on a shared machine reaches all
of them alike; each round times ``--steps`` steps after a warm-up. Reported: median ms
per step over rounds, [min–max], and each notmiwae_fast variant's speed-up over
notmiwae-pytorch's plain loop, as a ratio of medians. The thread count is fixed
(``--threads``) and OMP_WAIT_POLICY=PASSIVE is set before torch loads.

    python benchmarks/train_loop.py                       # 1 thread, batches 16 and 128
    python benchmarks/train_loop.py --threads 2 --out /tmp/train_loop_2t

Writes <out>.json and <out>.md (default benchmarks/results/cpu/train_loop_<threads>t).
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

VARIANTS = ("plain", "plain_fused_adam", "trainer")


def step_of(impl: str, variant: str, batch: int):
    """One training step of ``impl`` ("fused" or "notmiwae_pytorch") as ``variant``."""
    import torch

    from notmiwae_fast.bench import model_cases as cases

    if variant == "trainer":
        return cases.train_step_call(impl, batch, "cpu")
    model = cases.tabular_model(impl)
    x, s = cases.tabular_data(batch, cases.TABULAR_D)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=variant == "plain_fused_adam")

    def step():
        loss = model(x, s)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def measure(steps: dict, rounds: int, n: int) -> dict:
    """ms per step of each callable: ``rounds`` alternating rounds of ``n`` steps."""
    times: dict = {name: [] for name in steps}
    for step in steps.values():
        for _ in range(max(5, n // 10)):
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(n):
                step()
            times[name].append((time.perf_counter() - start) / n * 1e3)
    return {name: spread(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=0, help="steps per round (default: ~0.3 s)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    out = args.out or os.path.join(HERE, "results", "cpu", f"train_loop_{args.threads}t")

    import torch

    from notmiwae_fast import bench

    theirs = bench.have_notmiwae_pytorch()
    if theirs is None:
        print(
            "notmiwae-pytorch is not installed: pip install notmiwae-pytorch==0.1.3 "
            "tensorboard matplotlib",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = {}
    for batch in args.batches:
        steps = {
            f"notmiwae_pytorch/{v}": step_of("notmiwae_pytorch", v, batch)
            for v in ("plain", "trainer")
        }
        steps.update({f"notmiwae_fast/{v}": step_of("fused", v, batch) for v in VARIANTS})
        n = args.steps or max(10, int(300 / batch))
        results[batch] = measure(steps, args.rounds, n)
    result = {
        "machine": cpu_run_record(args.threads, load_before, theirs),
        "rounds": args.rounds,
        "results": {str(b): r for b, r in results.items()},
    }
    write_report(out, result, markdown(result, results))
    return 0


def markdown(result: dict, results: dict) -> str:
    m = result["machine"]
    lines = [
        "# Training step as users write it: notmiwae_fast against notmiwae-pytorch",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} thread(s), "
        f"OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}, torch {m['torch']}, notmiwae-pytorch "
        f"{m['notmiwae_pytorch']}; {load_text(m)}. NotMIWAE "
        "(self-masking, Gaussian), D = 11, hidden 128, K = 20; "
        f"{result['rounds']} alternating rounds.",
        "",
        "| batch | package / loop | median ms/step [min–max] | × notmiwae-pytorch plain |",
        "|---|---|---|---|",
    ]
    for batch, r in results.items():
        base = r["notmiwae_pytorch/plain"]["median_ms"]
        for name, t in r.items():
            lines.append(f"| {batch} | {name} | {spread_text(t)} | {base / t['median_ms']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
