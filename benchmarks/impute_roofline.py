"""How fast conditional-mean imputation can be on this CPU in float32: the bound set by
the decoder's matrix products, beside notmiwae-pytorch and notmiwae_fast measured in
the same run.

Imputing one row with K importance samples runs the decoder (L -> 128 -> 128 -> 2D,
tanh) on K latent samples: 2 K (L·128 + 128·128 + 128·2D) flops of matrix products,
41 MFLOP per row for the paper's tabular model (D = 11, L = 10) at K = 1000, whatever
else an implementation does. This script times those three products with MKL / oneDNN
(ATen's ``mm``, each in the faster of its two layouts) on row blocks that stay in cache
(the best case), and turns the time
into the most rows per second any float32 implementation could reach here; then it
measures both packages' ``utils.impute`` (1000 rows, K = 1000, batches of 64) for the
ratio the model-layer issue asks for (5x).

    python benchmarks/impute_roofline.py                 # 1 thread, 5 repeats
    python benchmarks/impute_roofline.py --threads 2 --out /tmp/roofline

Writes <out>.json and <out>.md (default benchmarks/results/cpu/impute_roofline).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _measure import write_report  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def product_bound(
    rows: int, k: int, d: int, latent: int, hidden: int, block: int, repeats: int
) -> dict:
    """Seconds of the decoder's three float32 matrix products for rows × k samples, on
    blocks of ``block`` samples: per product the faster of X·W and (Wᵀ·Xᵀ) (the narrow
    output layer runs faster transposed), median over repeats of 20 blocks, scaled."""
    import torch

    g = torch.Generator().manual_seed(0)
    shapes = [(latent, hidden), (hidden, hidden), (hidden, 2 * d)]
    per_block = 0.0
    for a, b in shapes:
        x, w = torch.randn(block, a, generator=g), torch.randn(a, b, generator=g)
        direct, transposed = torch.empty(block, b), torch.empty(b, block)
        wt, xt = w.t().contiguous(), x.t().contiguous()

        def run(fn):
            def many():
                for _ in range(20):
                    fn()

            return statistics.median(timed(many, repeats)) / 20

        per_block += min(
            run(lambda x=x, w=w, out=direct: torch.mm(x, w, out=out)),
            run(lambda a=wt, b=xt, out=transposed: torch.mm(a, b, out=out)),
        )
    samples = rows * k
    flops = 2 * samples * sum(a * b for a, b in shapes)
    seconds = per_block * samples / block
    return {
        "block": block,
        "flops": flops,
        "seconds": seconds,
        "gflops": flops / seconds / 1e9,
        "rows_per_s": rows / seconds,
    }


FMA_LOOP = r"""
#include <torch/extension.h>
#include <chrono>
// One core's float32 multiply-add peak: 12 independent chains of FMAs on registers, each
// as wide as the widest vector -march=native has (16 lanes with AVX-512, else 8): the 12
// accumulators and two operands fit the 16 AVX2 registers, so nothing spills (16-lane
// chains split in two on AVX2 needed 26 and ran at a tenth of the peak).
#ifdef __AVX512F__
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
int64_t fma_lanes() { return kLanes; }
double fma_seconds(int64_t iterations) {
  typedef float vec __attribute__((vector_size(kLanes * 4)));
  vec acc[12], a, b;
  for (int i = 0; i < kLanes; ++i) { a[i] = 0.999999f; b[i] = 1e-7f; }
  for (int j = 0; j < 12; ++j) for (int i = 0; i < kLanes; ++i) acc[j][i] = j + i;
  auto start = std::chrono::steady_clock::now();
  for (int64_t n = 0; n < iterations; ++n) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = acc[j] * a + b;
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  float sum = 0;
  for (int j = 0; j < 12; ++j) sum += acc[j][0];
  return sum == 12345.f ? -1 : seconds;  // keeps the chains alive
}
"""


def fma_peak(repeats: int) -> float:
    """GFLOP/s of one core's float32 multiply-adds (a register-only loop built on the
    spot with -O2 -march=native -ffp-contract=fast)."""
    from torch.utils.cpp_extension import load_inline

    module = load_inline(
        "nmf_fma_peak",
        FMA_LOOP,
        functions=["fma_seconds", "fma_lanes"],
        extra_cflags=["-O2", "-march=native", "-ffp-contract=fast"],
    )
    iterations = 50_000_000
    seconds = min(module.fma_seconds(iterations) for _ in range(repeats))
    return iterations * 12 * module.fma_lanes() * 2 / seconds / 1e9


def normal_seconds(count: int, repeats: int) -> float:
    """Seconds torch takes to draw ``count`` standard normal float32 numbers (in blocks
    of 64 rows' worth, as imputation draws them)."""
    import torch

    block = 1 << 20
    buffer = torch.empty(block)
    per_block = statistics.median(timed(lambda: buffer.normal_(), repeats * 4))
    return per_block * count / block


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "cpu", "impute_roofline"))
    args = parser.parse_args(argv)

    import torch

    import notmiwae_fast
    from notmiwae_fast import bench as bm

    torch.set_num_threads(args.threads)
    d, latent, hidden = bm.TABULAR_D, bm.TABULAR_D - 1, bm.HIDDEN
    bounds = [
        product_bound(args.rows, args.k, d, latent, hidden, block, args.repeats)
        for block in (1024, 4096, 16384)
    ]
    best = max(bounds, key=lambda b: b["rows_per_s"])
    peak = fma_peak(args.repeats)
    peak_bound = {
        "gflops": peak,
        "seconds": best["flops"] / peak / 1e9,
        "rows_per_s": args.rows * peak * 1e9 / best["flops"],
    }
    normals = args.rows * args.k * (latent + d)
    rng = {"numbers": normals, "seconds": normal_seconds(normals, args.repeats)}
    measured = {}
    impls = ["fused", "notmiwae_pytorch"] if bm.have_notmiwae_pytorch() else ["fused"]
    with torch.no_grad():
        for impl in impls:
            call = bm.impute_call(impl, args.rows, d, args.k, "cpu")
            times = timed(call, args.repeats)
            measured[impl] = {
                "median_s": statistics.median(times),
                "min_s": min(times),
                "max_s": max(times),
                "rows_per_s": args.rows / statistics.median(times),
            }
    result = {
        "machine": {
            "cpu": bm.cpu_model(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "notmiwae_fast": notmiwae_fast.__version__,
        },
        "rows": args.rows,
        "k": args.k,
        "d": d,
        "latent": latent,
        "hidden": hidden,
        "product_bounds": bounds,
        "bound": best,
        "fma_peak_bound": peak_bound,
        "random_numbers": rng,
        "measured": measured,
    }
    lines = [
        "# Imputation on the CPU: the float32 matrix-product bound",
        "",
        f"{result['machine']['cpu']}, {os.cpu_count()} cores, {args.threads} thread(s), "
        f"torch {torch.__version__}. {args.rows} rows, D = {d}, K = {args.k}: the decoder "
        f"({latent} → {hidden} → {hidden} → {2 * d}) runs on {args.rows * args.k:,} latent "
        f"samples, {best['flops'] / 1e9:.1f} GFLOP of matrix products.",
        "",
        "| matrix products on blocks of | GFLOP/s | seconds | rows/s at most |",
        "|---|---|---|---|",
    ]
    for b in bounds:
        lines.append(
            f"| {b['block']:,} samples | {b['gflops']:.1f} | {b['seconds']:.3f} | "
            f"{b['rows_per_s']:,.0f} |"
        )
    lines.append(
        f"| (one core's FMA peak, {peak:.1f} GFLOP/s) | {peak:.1f} | "
        f"{peak_bound['seconds']:.3f} | {peak_bound['rows_per_s']:,.0f} |"
    )
    lines += [
        "",
        f"Drawing the {normals:,} standard normal numbers (z and the missing x̂) "
        f"with torch takes {rng['seconds']:.3f} s on its own.",
    ]
    lines += ["", "| implementation | median s [min–max] | rows/s |", "|---|---|---|"]
    for impl, m in measured.items():
        lines.append(
            f"| {impl} | {m['median_s']:.3f} [{m['min_s']:.3f}–{m['max_s']:.3f}] | "
            f"{m['rows_per_s']:,.0f} |"
        )
    if "notmiwae_pytorch" in measured:
        theirs = measured["notmiwae_pytorch"]["rows_per_s"]
        lines += [
            "",
            f"Target 5× notmiwae-pytorch: {5 * theirs:,.0f} rows/s. The matrix products "
            f"alone allow at most {best['rows_per_s']:,.0f} rows/s here "
            f"({best['rows_per_s'] / theirs:.2f}× notmiwae-pytorch), before any "
            "activation, likelihood or random number; notmiwae_fast reaches "
            f"{measured['fused']['rows_per_s']:,.0f} rows/s "
            f"({measured['fused']['rows_per_s'] / theirs:.2f}×, "
            f"{measured['fused']['rows_per_s'] / best['rows_per_s']:.0%} of the bound). "
            f"Even at the core's FMA peak the products alone would take "
            f"{peak_bound['seconds']:.3f} s ({peak_bound['rows_per_s'] / theirs:.2f}× "
            f"notmiwae-pytorch), and with the random numbers "
            f"{peak_bound['seconds'] + rng['seconds']:.3f} s "
            f"({args.rows / (peak_bound['seconds'] + rng['seconds']) / theirs:.2f}×).",
        ]
    write_report(args.out, result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
