"""notmiwae_fast against notmiwae-pytorch 0.1.3, in one run, on the CPU.

* training step (forward, backward, Adam) of not-MIWAE (self-masking, Gaussian),
  hidden 128, latent D − 1, K = 20, D = 11, at batch 16 (the paper's) and 128;
* imputation of 1000 rows, D = 11, K = 1000 importance samples (rows/s), both through
  their ``utils.impute`` with the same batch size;
* peak extra memory of imputing 16 rows of D = 12288 (a 64×64×3 image) with K = 1000,
  each in a fresh process (ru_maxrss delta).

notmiwae-pytorch is needed only here (pip install --no-deps notmiwae-pytorch==0.1.3
tensorboard matplotlib); it is never a dependency of the package. Timings interleave
the two implementations in rounds so that drift on a shared machine hits both alike;
each figure is the median (and inter-quartile range) over the rounds.

    python benchmarks/model_vs_notmiwae_pytorch.py [--threads 2] [--rounds 15]

Writes benchmarks/results/model_vs_notmiwae_pytorch_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from _measure import child_env, peak_rss_mb

HERE = os.path.dirname(os.path.abspath(__file__))
D, HIDDEN, K_TRAIN = 11, 128, 20


def build(impl: str, d: int = D):
    torch.manual_seed(0)
    if impl == "notmiwae_fast":
        import notmiwae_fast as nf

        return nf.NotMIWAE(d, latent_dim=d - 1, hidden_dim=HIDDEN, n_samples=K_TRAIN,
                           missing_process="selfmasking")
    import notmiwae_pytorch as npt

    return npt.NotMIWAE(d, latent_dim=d - 1, hidden_dim=HIDDEN, n_samples=K_TRAIN,
                        missing_process="selfmasking")


def data(n: int, d: int = D, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    s = (x <= 0).float()
    s[:, d // 2:] = 1
    return x * s, s


def quartiles(values):
    q = statistics.quantiles(values, n=4)
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2]}


def training_step(impl: str, x, s):
    """One training step as each package's Trainer makes it: ours is Trainer.train_step
    (fused Adam, no clipping by default); notmiwae-pytorch's Trainer.train_epoch body
    (Adam, gradient clipping at norm 1)."""
    model = build(impl)
    if impl == "notmiwae_fast":
        import notmiwae_fast as nf

        trainer = nf.Trainer(model, lr=1e-3, progress=False)
        return lambda: trainer.train_step((x, s))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        model(x, s)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()

    return step


def time_training(batch: int, rounds: int, steps: int) -> dict:
    x, s = data(batch)
    setups = {impl: training_step(impl, x, s) for impl in ("notmiwae_fast", "notmiwae_pytorch")}
    for step in setups.values():
        for _ in range(10):
            step()
    per_step = {impl: [] for impl in setups}
    for _ in range(rounds):
        for impl, step in setups.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            per_step[impl].append((time.perf_counter() - start) / steps)
    return {impl: quartiles(v) for impl, v in per_step.items()}


def time_imputation(rows: int, k: int, rounds: int, batch_size: int = 64) -> dict:
    import notmiwae_fast.utils as fast_utils
    import notmiwae_pytorch.utils as their_utils

    x, s = data(rows)
    ours, theirs = build("notmiwae_fast"), build("notmiwae_pytorch")
    dataset = torch.utils.data.TensorDataset(x, s)
    calls = {
        "notmiwae_fast": lambda: fast_utils.impute(ours, x, s, n_samples=k,
                                                   batch_size=batch_size),
        "notmiwae_pytorch": lambda: their_utils.impute(theirs, dataset, n_samples=k,
                                                       batch_size=batch_size),
    }
    rows_per_s = {impl: [] for impl in calls}
    for _ in range(rounds):
        for impl, call in calls.items():
            start = time.perf_counter()
            call()
            rows_per_s[impl].append(rows / (time.perf_counter() - start))
    return {impl: quartiles(v) for impl, v in rows_per_s.items()}


def memory_child(impl: str, rows: int, d: int, k: int) -> float:
    model = build(impl, d)
    x, s = data(rows, d)
    model.impute(x[:2], s[:2], n_samples=2)  # warm-up: lazy initialisation
    before = peak_rss_mb()
    with torch.no_grad():
        out = model.impute(x, s, n_samples=k)
    after = peak_rss_mb()
    assert torch.isfinite(out).all()
    return after - before


def imputation_memory(rows: int, d: int, k: int, threads: int) -> dict:
    result = {}
    for impl in ("notmiwae_fast", "notmiwae_pytorch"):
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child",
                               impl, "--threads", str(threads), "--rows", str(rows),
                               "--d", str(d), "--k", str(k)],
                              capture_output=True, text=True, check=False, env=child_env())
        if proc.returncode != 0:
            raise RuntimeError(f"{impl} memory run failed:\n{proc.stderr}")
        result[impl] = float(proc.stdout.strip().splitlines()[-1])
    return result


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# notmiwae_fast vs notmiwae-pytorch 0.1.3 (CPU, one run)", "",
             f"{m['processor'] or m['machine']}, {m['cpus']} CPUs, {r['threads']} threads; "
             f"torch {r['torch']}; backend {r['backend']}; median [IQR] over "
             f"{r['rounds']} interleaved rounds.", "",
             "| measurement | notmiwae_fast | notmiwae-pytorch | ratio (target) |",
             "|---|---|---|---|"]

    def fmt(q, scale=1.0, unit=""):
        return (f"{q['median'] * scale:.3g}{unit} [{q['q1'] * scale:.3g}–"
                f"{q['q3'] * scale:.3g}]")

    for batch, t in r["training"].items():
        ratio = t["notmiwae_pytorch"]["median"] / t["notmiwae_fast"]["median"]
        target = "≥ 3×" if batch == "16" else "≥ 2×"
        lines.append(f"| training step, batch {batch} (ms) | "
                     f"{fmt(t['notmiwae_fast'], 1e3)} | {fmt(t['notmiwae_pytorch'], 1e3)} | "
                     f"{ratio:.2f}× faster ({target}) |")
    imp = r["imputation"]
    ratio = imp["notmiwae_fast"]["median"] / imp["notmiwae_pytorch"]["median"]
    lines.append(f"| imputation rows/s, 1000 rows, D = 11, K = 1000 | "
                 f"{fmt(imp['notmiwae_fast'])} | {fmt(imp['notmiwae_pytorch'])} | "
                 f"{ratio:.2f}× the rows/s (≥ 5×) |")
    mem = r["memory"]
    ratio = mem["notmiwae_pytorch"] / max(mem["notmiwae_fast"], 1.0)  # 1 MB: the resolution
    lines.append(f"| peak extra memory, 16 rows, D = 12288, K = 1000 (MB) | "
                 f"{mem['notmiwae_fast']:.0f} | {mem['notmiwae_pytorch']:.0f} | "
                 f"{ratio:.1f}× lower (≥ 5×) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--out", default=os.path.join(HERE, "results",
                                                      "model_vs_notmiwae_pytorch_cpu"))
    parser.add_argument("--memory-child", choices=["notmiwae_fast", "notmiwae_pytorch"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--d", type=int, default=12288, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(memory_child(args.memory_child, args.rows, args.d, args.k))
        return
    import notmiwae_fast

    result = {
        "machine": {"machine": platform.machine(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
        "torch": torch.__version__, "threads": args.threads, "rounds": args.rounds,
        "backend": str(notmiwae_fast.backend().name),
        "training": {str(b): time_training(b, args.rounds, args.steps) for b in (16, 128)},
        "imputation": time_imputation(1000, 1000, max(3, args.rounds // 3)),
        "memory": imputation_memory(16, 12288, 1000, args.threads),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
