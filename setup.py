"""Build of the notmiwae_fast operator library (notmiwae_fast/_C*.so).

Install with the torch that will run it:

    pip install --no-build-isolation -e .

A CUDAExtension (CPU + CUDA kernels) is built when torch has CUDA and nvcc is found,
with or without a GPU on the machine; otherwise a CppExtension (CPU kernels only).
Environment knobs:
    FORCE_CUDA=1             build the CUDA kernels (fails loudly if that is impossible)
    FORCE_ONLY_CPU=1         build the CPU kernels only
    CUDA_HOME                the CUDA toolkit folder (default: found from nvcc)
    TORCH_CUDA_ARCH_LIST     GPU architectures (default "8.0;9.0+PTX": A100, H100 and
                             newer GPUs through PTX)
    MAX_JOBS                 parallel compile jobs (default: number of CPUs)
    NOTMIWAE_FAST_DEBUG_INFO=1  compile the C++ with debug information (default: none,
                             half the compile time)
The objects are compiled with ninja into build/ninja-<platform>-<python>-<environment>-
<torch>-<cpu|cuda>/ (the environment: a hash of sys.prefix), kept between builds
whichever way the build is started (pip install -e ., pip install ., python -m build):
a rebuild in the same environment with unchanged sources, flags and torch compiles
nothing and only links the library again (ninja follows the headers each object
includes).
The library has no Python bindings of its own: it registers the operators with
TORCH_LIBRARY and is loaded with torch.ops.load_library, so C++ programs and
TorchScript can load it with libtorch alone.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import re
import sys
import sysconfig

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _load_build_helpers():
    """notmiwae_fast/ops/_build.py, loaded by path: the package itself needs torch and the
    library this script builds."""
    spec = importlib.util.spec_from_file_location(
        "_notmiwae_fast_build", os.path.join(HERE, "notmiwae_fast", "ops", "_build.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def want_cuda(torch_has_cuda: bool, cuda_home: str | None) -> bool:
    if os.environ.get("FORCE_ONLY_CPU", "0") == "1":
        return False
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if not torch_has_cuda or cuda_home is None:
            raise RuntimeError(
                "FORCE_CUDA=1 but the CUDA kernels cannot be built: "
                f"torch has CUDA: {torch_has_cuda}; CUDA toolkit found: {cuda_home}. "
                "Install a CUDA build of torch and set CUDA_HOME to the toolkit folder."
            )
        return True
    return torch_has_cuda and cuda_home is not None


# torch.utils.cpp_extension reads CUDA_HOME when it is imported: settle it first.
_build = _load_build_helpers()
_cuda_home = _build.find_cuda_home()
if _cuda_home:
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

USE_CUDA = want_cuda(torch.version.cuda is not None, _cuda_home)


def build_temp() -> str:
    """The folder the objects are compiled into, kept between builds: one per platform,
    Python environment, torch and kernel set, so building for one does not recompile the
    objects of another (ninja recompiles an object whose command line changed, and the
    command line holds the environment's include folder)."""
    environment = hashlib.sha256(os.path.realpath(sys.prefix).encode()).hexdigest()[:8]
    tag = "-".join(
        (
            sysconfig.get_platform(),
            sys.implementation.cache_tag,
            "env" + environment,
            "torch" + torch.__version__,
            "cuda" if USE_CUDA else "cpu",
        )
    )
    return os.path.join(HERE, "build", "ninja-" + re.sub(r"[^A-Za-z0-9._-]", "_", tag))


class BuildKeepingObjects(BuildExtension):
    """torch's BuildExtension with the objects in build_temp() whatever the command set:
    setuptools gives an editable install (pip install -e .) a new temporary folder each
    time, which made every re-run of .ci/setup recompile everything."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.build_temp = build_temp()


def extension():
    use_cuda = USE_CUDA
    csrc = "csrc"
    sources = _build.sources(csrc, cuda=use_cuda)
    include_dirs = [os.path.join(HERE, csrc, "include")]
    # The headers: setuptools relinks when one is newer than the library, and puts them
    # in the sdist (MANIFEST.in grafts csrc/ as well).
    depends = sorted(
        glob.glob(os.path.join(csrc, "**", "*.h"), recursive=True)
        + glob.glob(os.path.join(csrc, "**", "*.cuh"), recursive=True)
    )
    # -fopenmp: at::parallel_for is an inline template whose `omp parallel` compiles to
    # a serial loop without it (torch's parallel backend here is OpenMP; the extension
    # then links the libgomp torch has already loaded).
    # -g0 (after Python's -g): no debug information unless NOTMIWAE_FAST_DEBUG_INFO=1 —
    # it doubles the compile time of these template-heavy files and users run release
    # builds; set the variable to debug the kernels with gdb.
    debug_info = os.environ.get("NOTMIWAE_FAST_DEBUG_INFO") == "1"
    extra = {"cxx": ["-O3", "-fopenmp"] + ([] if debug_info else ["-g0"])}
    link = ["-fopenmp"]
    if not use_cuda:
        print(
            f"notmiwae_fast: building the CPU kernels only (torch {torch.__version__}, "
            f"torch CUDA: {torch.version.cuda}, CUDA toolkit: {_cuda_home})"
        )
        return CppExtension(
            "notmiwae_fast._C",
            sources,
            include_dirs=include_dirs,
            depends=depends,
            extra_compile_args=extra,
            extra_link_args=link,
            py_limited_api=True,
        )
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
    extra["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
    print(
        f"notmiwae_fast: building CPU + CUDA kernels (torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, CUDA_HOME={_cuda_home}, "
        f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']})"
    )
    return CUDAExtension(
        "notmiwae_fast._C",
        sources,
        include_dirs=include_dirs,
        depends=depends,
        extra_compile_args=extra,
        extra_link_args=link,
        py_limited_api=True,
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildKeepingObjects},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
