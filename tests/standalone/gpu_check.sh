#!/usr/bin/env bash
# GPU check without TensorFlow: builds fused_lif.kernels (the pybind11
# bindings) with CUDA for this machine's GPU, then checks on it:
#  - a failed launch is reported (kernel name, CUDA's words), a valid one is not;
#  - the build has a kernel image for the GPU (the architecture check);
#  - spikes, pre-reset and final membrane bit-identical to the numpy oracle,
#    and every gradient bit-identical to the CPU kernels' (and within 1e-5 of
#    the oracle), for every option, per-neuron and scalar parameters;
#  - the same for the recurrent LIF kernels (recurrent_oracle.py's exact 1/8
#    grid), a layer too wide for shared memory included;
#  - bandwidth of the kernels next to a device-to-device copy.
# Needs: an NVIDIA GPU, nvcc, CMake (>= 3.24 for "native"), Python with numpy
# and pybind11. About a minute to build, seconds to run.
#   bash tests/standalone/gpu_check.sh      (CUDA_ARCHS=native by default; e.g. CUDA_ARCHS=90)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$root/build/gpu-check}
python=${PYTHON:-python3}
mkdir -p "$(dirname "$build")"
cmake -S "$root" -B "$build" -DFUSED_LIF_TF_OP=OFF -DFUSED_LIF_CUDA=ON \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-native}" \
  -DPython_EXECUTABLE="$(command -v "$python")" >"$build.cmake.log" 2>&1 || { cat "$build.cmake.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >"$build.build.log" 2>&1 || { cat "$build.build.log"; exit 1; }
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>/dev/null || true
PYTHONPATH="$build:$root/tests" "$python" "$here/check_kernels.py" --device cuda "$@"
