"""What the benchmark scripts share: peak-memory measurement and writing a report.

A variant runs in a fresh process (``child_env()``) and reports the growth of its peak
resident set (``peak_rss_mb()`` before and after). With MALLOC_MMAP_THRESHOLD_=65536
glibc maps every buffer of 64 KiB or more separately and unmaps it on free, so the
resident set follows the live tensors instead of reusing heap freed earlier (which would
hide allocations); smaller buffers are below the resolution of this method.
"""

from __future__ import annotations

import json
import os
import resource
import statistics


def child_env() -> dict:
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def reset_peak_rss() -> bool:
    """Resets the peak resident set to the current one (see
    notmiwae_fast.bench.reset_peak_rss), so that a following ``peak_rss_mb()`` delta
    is not hidden by a larger transient peak earlier in the process."""
    from notmiwae_fast.bench import reset_peak_rss as reset

    return reset()


def spread(ms: list) -> dict:
    """Timings in ms as a report keeps them: median, min, max and the timings."""
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "ms": ms}


def spread_text(t: dict) -> str:
    """A :func:`spread` as a report prints it: "median [min–max]" in ms."""
    return f"{t['median_ms']:.3f} [{t['min_ms']:.3f}–{t['max_ms']:.3f}]"


def write_report(out: str, result: dict, markdown: str) -> None:
    """Writes ``<out>.json`` (``result``) and ``<out>.md`` (``markdown``), each atomically
    (a stopped run never leaves half a file), and prints the Markdown."""
    from notmiwae_fast._common.io import write_atomic

    write_atomic(out + ".json", lambda f: json.dump(result, f, indent=2), text=True)
    text = markdown if markdown.endswith("\n") else markdown + "\n"
    write_atomic(out + ".md", lambda f: f.write(text), text=True)
    print(text, end="")


def cpu_run_record(threads: int, load_before: tuple, notmiwae_pytorch: object) -> dict:
    """The machine part of a CPU timing report: CPU model, cores, the fixed thread
    count, load average before (``load_before``) and now, versions, OMP_WAIT_POLICY."""
    import torch

    import notmiwae_fast
    from notmiwae_fast import bench

    return {
        "cpu": bench.cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "torch": torch.__version__,
        "notmiwae_fast": notmiwae_fast.__version__,
        "notmiwae_pytorch": notmiwae_pytorch,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


def load_text(machine: dict) -> str:
    """The load averages of a :func:`cpu_run_record` as a report says them."""

    def three(values) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    return (
        f"load average (1, 5, 15 min) before {three(machine['load_average_before'])}, "
        f"after {three(machine['load_average_after'])}"
    )
