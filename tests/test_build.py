"""What the build produced: the libraries, and CUDA device code when built
with CUDA (checked with cuobjdump where it is installed, e.g. from the
nvidia-cuda-cuobjdump wheel)."""

import glob
import os
import shutil
import subprocess
import sys

import pytest

import fused_lif
from fused_lif import _build_info, kernels, ops


def test_op_library_loads_and_matches_running_tensorflow():
    import tensorflow as tf

    assert ops.is_available()
    assert _build_info.TF_VERSION == tf.__version__


def find_cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    pattern = os.path.join(sys.prefix, "lib", "python*", "site-packages", "nvidia", "*", "bin",
                           "cuobjdump")
    matches = glob.glob(pattern)
    return matches[0] if matches else None


@pytest.mark.skipif(not _build_info.WITH_CUDA, reason="CPU-only build")
@pytest.mark.parametrize("library", [ops.library_path(), kernels.__file__])
def test_cuda_build_carries_sm80_sm90_code_and_ptx(library):
    tool = find_cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not installed (pip install nvidia-cuda-cuobjdump)")
    elf = subprocess.run([tool, "--list-elf", library], capture_output=True, text=True).stdout
    ptx = subprocess.run([tool, "--list-ptx", library], capture_output=True, text=True).stdout
    assert "sm_80" in elf and "sm_90" in elf, elf
    assert "sm_90" in ptx, ptx


def test_cpu_only_build_reports_no_cuda():
    if _build_info.WITH_CUDA:
        pytest.skip("CUDA build")
    assert not kernels.cuda_available()
    assert fused_lif.is_available()
