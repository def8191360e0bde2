#!/usr/bin/env bash
# Builds fused_lif.kernels (the framework-free bindings of the CPU kernels)
# with AddressSanitizer + UndefinedBehaviorSanitizer and runs the kernel
# checks under them: the CPU loops, and the CUDA kernels' per-thread code run
# over every index of their launches ("emulated"), for the LIF and the
# recurrent LIF kernels (check_kernels.py). Any out-of-bounds access or UB
# aborts with a report.
#   bash tests/standalone/sanitize.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$root/build/sanitize}
python=${PYTHON:-python3}
cmake -S "$root" -B "$build" -DFUSED_LIF_TF_OP=OFF -DFUSED_LIF_CUDA=OFF -DFUSED_LIF_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=Debug -DPython_EXECUTABLE="$(command -v "$python")" >"$build.cmake.log" 2>&1 \
  || { cat "$build.cmake.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >"$build.build.log" 2>&1 || { cat "$build.build.log"; exit 1; }
# Python itself is not instrumented: preload the runtimes, ignore its leaks.
preload="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
for device in cpu emulated; do
  LD_PRELOAD="$preload" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    PYTHONPATH="$build:$root/tests" "$python" "$here/check_kernels.py" --device "$device"
done
# The spike_matmul kernels (header-only; in the TensorFlow op library only).
g++ -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
  -fno-omit-frame-pointer -ffp-contract=off -fno-trapping-math -I "$root/csrc" \
  "$here/check_spike_matmul.cc" -o "$build/check_spike_matmul"
ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$build/check_spike_matmul"
echo "sanitize: ASan + UBSan clean"
