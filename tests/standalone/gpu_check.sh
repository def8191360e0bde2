#!/usr/bin/env bash
# GPU check without TensorFlow: builds fused_lif.kernels (the pybind11
# bindings) with CUDA, checks the CUDA kernels against the numpy oracle and
# reports their bandwidth next to a device-to-device copy.
# Needs: an NVIDIA GPU, nvcc, CMake, Python with numpy and pybind11.
#   bash tests/standalone/gpu_check.sh            (CUDA_ARCHS=90 by default: H100/H200)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$root/build/gpu-check}
python=${PYTHON:-python3}
cmake -S "$root" -B "$build" -DFUSED_LIF_TF_OP=OFF -DFUSED_LIF_CUDA=ON \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" \
  -DPython_EXECUTABLE="$(command -v "$python")" >"$build.cmake.log" 2>&1 || { cat "$build.cmake.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >"$build.build.log" 2>&1 || { cat "$build.build.log"; exit 1; }
PYTHONPATH="$build:$root/tests" "$python" "$here/check_kernels.py" --device cuda "$@"
