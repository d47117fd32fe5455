"""Timing: the median and inter-quartile range of interleaved runs of a case's variants,
and the device's copy bandwidth (the yardstick of the ops' GPU bandwidth)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def summary(values: list[float]) -> dict:
    """Median, quartiles and count of a list of measurements."""
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0], "n": 1}
    q = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "n": len(values)}


def time_interleaved(
    calls: dict[str, Callable], repeats: int, device: str, min_time: float = 2e-3
) -> dict[str, dict]:
    """Seconds per call of each callable: warm-up, then ``repeats`` rounds that run every
    variant in turn; a call faster than ``min_time`` is repeated within a round and its
    time averaged (timer resolution)."""
    inner = {}
    for name, fn in calls.items():
        fn()
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        once = time.perf_counter() - start
        inner[name] = max(1, min(1000, int(min_time / max(once, 1e-9))))
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) / inner[name])
    return {name: summary(v) for name, v in times.items()}


def copy_bandwidth_gbs(device: str) -> float | None:
    """Device-to-device copy bandwidth (bytes read + written per second), GB/s."""
    if device != "cuda":
        return None
    a = torch.empty(2**28, dtype=torch.float32, device=device)  # 1 GiB
    b = torch.empty_like(a)
    t = time_interleaved({"copy": lambda: b.copy_(a)}, 10, device)["copy"]["median"]
    return 2 * a.numel() * 4 / t / 1e9
