"""Peak memory of one run of a case, given by its spec (a small dict that a child
process can rebuild): on CUDA ``torch.cuda.max_memory_allocated`` in this process, on the
CPU the peak resident-set growth of a fresh child process (``python -m
notmiwae_fast.bench --child SPEC``, see :func:`_child_main`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable

import torch

from .cases import op_call
from .model_cases import image_call, impute_call, train_step_call


def build_case(spec: dict, device: str) -> Callable:
    """The callable that runs the case ``spec`` once (kind op, train, impute or image)."""
    kind = spec["kind"]
    if kind == "op":
        return op_call(
            spec["op"], spec["variant"], *spec["shape"], device, spec.get("backward", True)
        )
    if kind == "train":
        return train_step_call(spec["impl"], spec["batch"], device, spec.get("image", False))
    if kind == "impute":
        return impute_call(spec["impl"], spec["rows"], spec["d"], spec["k"], device)
    if kind == "image":
        return image_call(spec["impl"], spec["side"], device, spec.get("k", 20))
    raise ValueError(f"unknown case kind {kind!r}")


def cuda_peak_mb(fn: Callable) -> float:
    """Peak CUDA memory allocated by one call of fn above what was allocated before."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def child_peak_mb(spec: dict, threads: int) -> float | None:
    """Peak resident-set growth (MB) of a fresh process running the case ``spec`` once
    (see :func:`_child_main`); None when the child failed (reason on stderr)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, "-m", "notmiwae_fast.bench", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(f"memory child {spec} failed:\n{proc.stderr[-2000:]}\n")
        return None
    return float(proc.stdout.strip().splitlines()[-1])


def peak_mb(spec: dict, device: str, threads: int) -> float | None:
    """Peak extra memory of running ``spec`` once: in-process on CUDA, child on CPU."""
    if device == "cuda":
        fn = build_case(spec, device)
        fn()  # lazy initialisation (cuBLAS workspaces, compiled kernels) is not the case's
        return cuda_peak_mb(fn)
    return child_peak_mb(spec, threads)


def rss_mb(field: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process in MB, from /proc/self/status;
    the peak from getrusage where there is no /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
    """Resets the peak resident set to the current one (Linux: 5 > /proc/self/clear_refs),
    so that a larger transient peak earlier in the process (imports, set-up) cannot hide
    the measured call's memory; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _child_main(spec_json: str) -> None:
    """Runs one case once in this (fresh) process; prints its peak RSS growth in MB."""
    spec = json.loads(spec_json)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    fn = build_case(spec, "cpu")
    if spec["kind"] == "op":  # first call outside: dispatcher / autograd set-up
        op_call(spec["op"], spec["variant"], 2, 2, 3, "cpu")()
    reset_peak_rss()
    before = rss_mb("VmRSS")
    with torch.no_grad() if spec["kind"] in ("impute", "image") else contextlib.nullcontext():
        fn()
    print(max(0.0, rss_mb("VmHWM") - before))
