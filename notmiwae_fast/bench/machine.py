"""The machine a report was measured on: CPU model, cores and threads, GPU, versions
of Python, torch and this package, and its git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from .model_cases import have_notmiwae_pytorch
from .timing import copy_bandwidth_gbs


def git_commit() -> str | None:
    """The commit checked out where this package lies, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=False,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str, threads: int) -> dict:
    """The ``machine`` section of bench.json."""
    from .. import __version__, backend

    info = {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "notmiwae_fast": __version__,
        "backend": str(backend()),
        "git_commit": git_commit(),
        "device": device,
        "notmiwae_pytorch": have_notmiwae_pytorch(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gb=round(props.total_memory / 1e9, 1),
            cuda=torch.version.cuda,
            copy_bandwidth_gbs=copy_bandwidth_gbs(device),
        )
    return info
