"""What the build produced: the libraries, and, when built with CUDA, device
code for the architectures recorded in _build_info (checked with cuobjdump
where it is installed, e.g. from the nvidia-cuda-cuobjdump wheel) and a CUDA
runtime of their own in both libraries."""

import ctypes
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

import fused_lif
from fused_lif import _build_info, kernels, ops

LIBRARIES = [ops.library_path(), kernels.__file__]
ARCHITECTURES = [a for a in _build_info.CUDA_ARCHITECTURES.split(",") if a]
cuda_build = pytest.mark.skipif(not _build_info.WITH_CUDA, reason="CPU-only build")


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


def _missing_tool(reason):
    """Skips for a user without the tool; fails where the check must run
    (FUSED_LIF_REQUIRE_BUILD_TOOLS=1, which CI sets for its device-code step)."""
    if os.environ.get("FUSED_LIF_REQUIRE_BUILD_TOOLS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@cuda_build
@pytest.mark.parametrize("library", LIBRARIES, ids=["op library", "kernels"])
def test_cuda_build_carries_code_for_each_architecture_built(library):
    tool = find_cuobjdump()
    if tool is None:
        _missing_tool("cuobjdump not installed (pip install nvidia-cuda-cuobjdump)")
    elf = subprocess.run([tool, "--list-elf", library], capture_output=True, text=True).stdout
    ptx = subprocess.run([tool, "--list-ptx", library], capture_output=True, text=True).stdout
    assert ARCHITECTURES, _build_info.CUDA_ARCHITECTURES
    for arch in ARCHITECTURES:
        number, _, kind = arch.partition("-")
        if kind in ("", "real"):
            assert f"sm_{number}" in elf, (arch, elf)
        if kind in ("", "virtual"):
            assert f"sm_{number}" in ptx, (arch, ptx)


def dynamic_symbols(tool, library, which):
    out = subprocess.run([tool, "-D", which, library], capture_output=True, text=True, check=True)
    return [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]


@cuda_build
@pytest.mark.parametrize("library", LIBRARIES, ids=["op library", "kernels"])
def test_cuda_runtime_is_built_in_and_hidden(library):
    """Each library carries the static CUDA runtime: no cuda*/__cuda* symbol is
    left for another library (TensorFlow's CUDA 12 runtime, say) to resolve,
    none is exported, and libcudart is not needed."""
    nm, readelf = shutil.which("nm"), shutil.which("readelf")
    if nm is None or readelf is None:
        _missing_tool("nm/readelf (binutils) not installed")
    cuda = re.compile(r"^_*cuda", re.IGNORECASE)
    undefined = [s for s in dynamic_symbols(nm, library, "--undefined-only") if cuda.match(s)]
    exported = [s for s in dynamic_symbols(nm, library, "--defined-only") if cuda.match(s)]
    assert undefined == [], f"{library} leaves CUDA runtime symbols undefined: {undefined}"
    assert exported == [], f"{library} exports CUDA runtime symbols: {exported}"
    dynamic = subprocess.run([readelf, "-d", library], capture_output=True, text=True,
                             check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)
    assert needed, dynamic  # the pattern still reads readelf's output
    assert not [n for n in needed if "cudart" in n], needed


@cuda_build
def test_gpu_check_names_compute_capability_architectures_and_rebuild():
    """The library's device check (what `implementation="auto"` asks before it
    picks the fused op): usable on a GPU with a matching image; otherwise a
    message naming the device, the architectures built and what to do."""
    check = ctypes.CDLL(ops.library_path()).fused_lif_cuda_check_device
    check.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    message = ctypes.create_string_buffer(2048)
    unusable = check(0, message, len(message))
    text = message.value.decode()
    if kernels.cuda_available():
        assert unusable == 0, text
        assert kernels.cuda_check_device(0) is None
        return
    assert unusable == 1
    assert "cannot run on GPU 0 (compute capability" in text, text
    assert _build_info.CUDA_ARCHITECTURES in text, text
    assert "implementation='reference'" in text, text
    assert text == kernels.cuda_check_device(0)  # one source of the words


def test_cpu_only_build_reports_no_cuda():
    if _build_info.WITH_CUDA:
        pytest.skip("CUDA build")
    assert not kernels.cuda_available()
    assert kernels.cuda_architectures() == ""
    assert fused_lif.is_available()
