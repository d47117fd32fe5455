#!/usr/bin/env bash
# Builds cpp_impute against the libtorch inside the installed torch wheel.
#   bash examples/cpp_impute/build.sh [BUILD_DIR]      (PYTHON selects the interpreter)
# A CUDA build of torch makes CMake look for the CUDA toolkit and nvrtc: they are
# pointed at the toolkit nvcc belongs to and at the nvrtc of the nvidia wheels.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python}"
BUILD="${1:-$HERE/build}"

args=(-DCMAKE_BUILD_TYPE=Release
      -DCMAKE_PREFIX_PATH="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')")
if [ -n "$("$PY" -c 'import torch; print(torch.version.cuda or "")')" ]; then
  cuda_home="$("$PY" "$ROOT/notmiwae_fast/ops/_build.py")"
  [ -n "$cuda_home" ] && args+=(-DCUDAToolkit_ROOT="$cuda_home" -DCUDA_TOOLKIT_ROOT_DIR="$cuda_home")
  nvrtc="$("$PY" -c 'import glob, os, torch; sp = os.path.dirname(os.path.dirname(torch.__file__)); print((sorted(glob.glob(os.path.join(sp, "nvidia", "*", "lib", "libnvrtc.so*"))) + [""])[0])')"
  [ -n "$nvrtc" ] && args+=(-DCUDA_nvrtc_LIBRARY="$nvrtc")
fi
cmake -S "$HERE" -B "$BUILD" "${args[@]}" > "$BUILD.configure.log" 2>&1 || { tail -30 "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j "${MAX_JOBS:-2}"
echo "built $BUILD/cpp_impute"
