"""What a build of the operator library needs: the C++ / CUDA source files and the CUDA
toolkit (used by setup.py, the just-in-time build in _library.py and
examples/cpp_impute/build.sh; stdlib only, so setup.py can load it before torch is
imported).

    python notmiwae_fast/ops/_build.py      # prints the toolkit folder, or nothing
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

# csrc/'s folders of C++ sources (operator schemas, CPU kernels, autograd, composites);
# the CUDA kernels are in csrc/cuda.
CPP_FOLDERS = ("", "cpu", "autograd", "composite")


def sources(csrc: str, cuda: bool) -> list[str]:
    """The library's source files under ``csrc`` (sorted): the C++ ones, and the CUDA
    ones when ``cuda``."""
    found = [f for folder in CPP_FOLDERS for f in glob.glob(os.path.join(csrc, folder, "*.cpp"))]
    if cuda:
        found += glob.glob(os.path.join(csrc, "cuda", "*.cu"))
    return sorted(found)


def is_toolkit(folder: str | None) -> bool:
    """Whether ``folder`` (None or empty: no) holds a CUDA toolkit (its cuda_runtime.h)."""
    if not folder:
        return False
    return os.path.isfile(os.path.join(folder, "include", "cuda_runtime.h"))


def find_cuda_home() -> str | None:
    """The CUDA toolkit folder: $CUDA_HOME / $CUDA_PATH, else where nvcc says it lives.

    The nvcc on PATH may be a wrapper script, so following links is not enough: nvcc's
    own dry run prints its toolkit folder (``TOP=...``).
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if is_toolkit(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        try:
            dry = subprocess.run(
                [nvcc, "--dryrun", "-c", "x.cu"], capture_output=True, text=True, timeout=60
            )
            match = re.search(r"TOP=(\S+)", dry.stdout + dry.stderr)
            if match and is_toolkit(os.path.normpath(match.group(1))):
                return os.path.normpath(match.group(1))
        except (OSError, subprocess.SubprocessError):
            pass
        guess = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if is_toolkit(guess):
            return guess
    return "/usr/local/cuda" if is_toolkit("/usr/local/cuda") else None


if __name__ == "__main__":
    print(find_cuda_home() or "")
