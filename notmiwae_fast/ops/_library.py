"""Finding and loading the operator library, and saying which backend is active.

Order of preference (``NOTMIWAE_FAST_BACKEND`` = ``auto``, the default):

1. ``compiled``: the library built by ``pip install`` (``notmiwae_fast/_C*.so``);
2. ``jit``: built just in time with ninja from ``csrc/`` (a source checkout whose
   extension was not built), cached under ``~/.cache/notmiwae_fast``;
3. ``reference``: the pure-PyTorch operators of :mod:`notmiwae_fast.reference`, with a
   warning. Same results, slower, more memory.

Setting ``NOTMIWAE_FAST_BACKEND`` to ``compiled``, ``jit`` or ``reference`` forces that
choice; a forced ``compiled`` or ``jit`` that cannot be had raises ImportError instead of
falling back.
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass

import torch

NAMESPACE = "notmiwae_fast"
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # notmiwae_fast/
_CSRC_DIR = os.path.join(os.path.dirname(_PKG_DIR), "csrc")
_CHOICES = ("auto", "compiled", "jit", "reference")


@dataclass(frozen=True)
class Backend:
    """Which implementation of the operators this process uses.

    Attributes:
        name: ``"compiled"`` (the installed library), ``"jit"`` (built at import) or
            ``"reference"`` (pure PyTorch, no library loaded).
        library: path of the loaded shared library, or None.
        cpu_kernels: whether C++ CPU kernels are registered.
        cuda_kernels: whether CUDA kernels are registered.
        reason: why a fallback happened (empty when none did).
    """

    name: str
    library: str | None
    cpu_kernels: bool
    cuda_kernels: bool
    reason: str = ""

    def __str__(self) -> str:
        kernels = [k for k, on in (("CPU", self.cpu_kernels), ("CUDA", self.cuda_kernels)) if on]
        what = " + ".join(kernels) + " kernels" if kernels else "pure-PyTorch reference ops"
        where = f" from {self.library}" if self.library else ""
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.name}: {what}{where}{why}"


def _has_kernel(dispatch_key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(
        f"{NAMESPACE}::iw_logmeanexp", dispatch_key
    )


def _compiled_library() -> str | None:
    found = sorted(
        glob.glob(os.path.join(_PKG_DIR, "_C*.so")) + glob.glob(os.path.join(_PKG_DIR, "_C*.pyd"))
    )
    return found[0] if found else None


def _jit_build() -> str:
    """Builds the library from csrc/ with ninja and loads it; returns its path."""
    if not os.path.isdir(_CSRC_DIR):
        raise ImportError(f"no C++ sources at {_CSRC_DIR} to build just in time")
    from torch.utils import cpp_extension

    from ._build import sources

    cuda = torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None
    files = sources(_CSRC_DIR, cuda)
    build_dir = os.environ.get("NOTMIWAE_FAST_JIT_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "notmiwae_fast", f"jit-torch-{torch.__version__}"
    )
    os.makedirs(build_dir, exist_ok=True)
    cpp_extension.load(
        name="notmiwae_fast_jit",
        sources=files,
        extra_include_paths=[os.path.join(_CSRC_DIR, "include")],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3"],
        build_directory=build_dir,
        is_python_module=False,
        verbose=False,
    )
    built = max(glob.glob(os.path.join(build_dir, "notmiwae_fast_jit*.so")), key=os.path.getmtime)
    return built


def _load() -> Backend:
    choice = os.environ.get("NOTMIWAE_FAST_BACKEND", "auto").strip().lower()
    if choice not in _CHOICES:
        raise ImportError(
            f"NOTMIWAE_FAST_BACKEND must be one of {', '.join(_CHOICES)}; got {choice!r}"
        )
    reasons = []
    if choice in ("auto", "compiled"):
        path = _compiled_library()
        if path is not None:
            torch.ops.load_library(path)
            return Backend("compiled", path, _has_kernel("CPU"), _has_kernel("CUDA"))
        reasons.append(f"no compiled library in {_PKG_DIR}")
        if choice == "compiled":
            raise ImportError(
                "notmiwae_fast: NOTMIWAE_FAST_BACKEND=compiled but "
                + reasons[-1]
                + "; install with "
                "'pip install --no-build-isolation -e .'"
            )
    if choice in ("auto", "jit"):
        try:
            if choice == "auto":
                warnings.warn(
                    "notmiwae_fast: the compiled library is missing; building it "
                    "just in time with ninja (once, then cached)",
                    stacklevel=3,
                )
            path = _jit_build()
            return Backend("jit", path, _has_kernel("CPU"), _has_kernel("CUDA"))
        except Exception as exc:  # a failed JIT build must not break the import in auto mode
            if choice == "jit":
                raise ImportError(f"notmiwae_fast: the just-in-time build failed: {exc}") from exc
            reasons.append(f"just-in-time build failed: {type(exc).__name__}: {exc}")
    reason = "; ".join(reasons) if reasons else "NOTMIWAE_FAST_BACKEND=reference"
    if choice == "auto":
        warnings.warn(
            "notmiwae_fast: using the pure-PyTorch reference operators (slower, "
            f"more memory): {reason}",
            stacklevel=3,
        )
    return Backend("reference", None, False, False, reason)


_BACKEND = _load()


def backend() -> Backend:
    """Which implementation of the operators is active: compiled, jit or reference.

    Example::

        >>> import notmiwae_fast
        >>> print(notmiwae_fast.backend())  # doctest: +SKIP
        compiled: CPU + CUDA kernels from .../notmiwae_fast/_C.abi3.so
    """
    return _BACKEND


def library_path() -> str | None:
    """Path of the loaded operator library (for ``torch.ops.load_library`` in another
    process, e.g. to run a TorchScript module); None with the reference backend."""
    return _BACKEND.library


def has_kernels(device_type: str) -> bool:
    """Whether compiled kernels for ``device_type`` ("cpu", "cuda", ...) are registered."""
    if device_type == "cpu":
        return _BACKEND.cpu_kernels
    if device_type == "cuda":
        return _BACKEND.cuda_kernels
    return False
