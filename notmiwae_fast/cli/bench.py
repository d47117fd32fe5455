"""``bench``: the benchmark report (:mod:`notmiwae_fast.bench`) of the fused kernels
against the reference, torch.compile and notmiwae-pytorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CLIError, _check_device, _check_output


def cmd_bench(args: argparse.Namespace) -> int:
    """notmiwae-fast bench: runs the suites and writes bench.json, bench.md and the plots
    into --out."""
    from .. import bench

    _check_device(args.device)
    out = Path(args.out)
    if (out / "bench.json").exists() and not args.force:
        raise CLIError(f"{out / 'bench.json'} exists; pass --force to overwrite it")
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is not a folder")
    for name in ("bench.json", "bench.md"):  # before the long runs
        _check_output(str(out / name), [], force=True)
    report = bench.run(
        args.suite,
        device=args.device,
        out_dir=out,
        quick=args.quick,
        threads=args.threads,
        repeats=args.repeats,
        log=(lambda text: None) if args.quiet else print,
    )
    if not args.quiet:
        print(bench.markdown(report))
    print(
        f"wrote {out / 'bench.json'}, {out / 'bench.md'}"
        + "".join(f", {p}" for p in report["plots"])
        + f" in {report['seconds']:.0f} s"
    )
    return 0
