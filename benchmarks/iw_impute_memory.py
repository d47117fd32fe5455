"""Peak extra memory and time of iw_impute: the streaming kernel against the reference.

The [B, K, D] values are an input of the op, so what counts is the memory the op
allocates beyond its inputs. Each variant runs in a fresh process: the inputs are
created and touched, the process's peak resident set (ru_maxrss) is read, the op runs
once, and the peak is read again. The difference is the op's peak extra memory
(whatever it allocated and freed in between included).

    python benchmarks/iw_impute_memory.py                      # B=64, K=100000, D=64
    python benchmarks/iw_impute_memory.py --B 16 --K 20000 --D 16 --out /tmp/mem

Writes <out>.json and <out>.md (default benchmarks/results/iw_impute_memory_cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from _measure import child_env, peak_rss_mb, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("fused", "reference")


def child(variant: str, B: int, K: int, D: int, threads: int) -> dict:
    import torch

    import notmiwae_fast
    from notmiwae_fast import ops
    from notmiwae_fast.ops import reference

    torch.set_num_threads(threads)
    fn = ops.iw_impute if variant == "fused" else reference.iw_impute
    gen = torch.Generator().manual_seed(0)
    log_w = 3 * torch.randn(B, K, generator=gen)
    values = torch.randn(B, K, D, generator=gen)
    with torch.no_grad():
        fn(log_w[:1, :8], values[:1, :8])  # warm-up: lazy initialisation is not the op's
        before = peak_rss_mb()
        start = time.perf_counter()
        out = fn(log_w, values)
        seconds = time.perf_counter() - start
        after = peak_rss_mb()
    assert out.shape == (B, D) and bool(torch.isfinite(out).all())
    return {
        "variant": variant,
        "backend": notmiwae_fast.backend().name,
        "input_mb": (log_w.nbytes + values.nbytes) / 2**20,
        "output_mb": out.nbytes / 2**20,
        "peak_extra_mb": after - before,
        "seconds": seconds,
    }


def run(B: int, K: int, D: int, threads: int, variants=VARIANTS) -> dict:
    import torch

    rows = []
    for variant in variants:
        proc = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                variant,
                "--B",
                str(B),
                "--K",
                str(K),
                "--D",
                str(D),
                "--threads",
                str(threads),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=child_env(),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"variant {variant} failed:\n{proc.stderr}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "benchmark": "iw_impute peak extra memory (CPU, float32, forward)",
        "shape": {"B": B, "K": K, "D": D},
        "threads": threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "method": "ru_maxrss delta in a fresh process, MALLOC_MMAP_THRESHOLD_=65536",
        "rows": rows,
    }


def markdown(result: dict) -> str:
    s = result["shape"]
    lines = [
        f"# {result['benchmark']}",
        "",
        f"B = {s['B']}, K = {s['K']}, D = {s['D']}; torch {result['torch']}, "
        f"{result['threads']} threads, {result['cpus']} CPUs ({result['machine']}); "
        f"{result['method']}.",
        "",
        "| variant | backend | inputs (MB) | output (MB) | peak extra (MB) | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['variant']} | {r['backend']} | {r['input_mb']:.1f} | "
            f"{r['output_mb']:.3f} | {r['peak_extra_mb']:.1f} | {r['seconds']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=64)
    parser.add_argument("--K", type=int, default=100_000)
    parser.add_argument("--D", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "iw_impute_memory_cpu"))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.B, args.K, args.D, args.threads)))
        return
    result = run(args.B, args.K, args.D, args.threads, args.variants.split(","))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_report(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
