"""The compiled op library and the choice of backend (`fused_lif._library`):
loaded once; a missing, unloadable or GPU-incompatible library said clearly;
"auto" falling back to the reference with one warning, "fused" raising; the
XLA context in which layers run the reference."""

import os
import warnings

import pytest
import tensorflow as tf

import fused_lif
from fused_lif import _library, ops

from conftest import make_currents, run_python

needs_library = pytest.mark.skipif(not fused_lif.is_available(),
                                   reason="the fused op library does not load")


def has_gpu():
    return bool(tf.config.list_logical_devices("GPU"))


# ---------------------------------------------------------------- loading --

@needs_library
def test_library_is_loaded_once():
    assert _library.load_library() is _library.load_library()
    assert ops.load_library() is _library.load_library()  # ops re-exports the one loader


def test_library_path_is_next_to_the_package_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv("FUSED_LIF_OP_LIBRARY", raising=False)
    path = _library.library_path()
    assert path == os.path.join(os.path.dirname(os.path.abspath(_library.__file__)),
                                "_lif_ops.so")
    assert os.path.exists(path) == fused_lif.is_available()
    monkeypatch.setenv("FUSED_LIF_OP_LIBRARY", "/elsewhere/_lif_ops.so")
    assert _library.library_path() == "/elsewhere/_lif_ops.so"


def test_missing_library_auto_falls_back_with_one_warning(tmp_path):
    out = run_python("""
        import warnings, numpy as np
        import fused_lif
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                layer = fused_lif.LIFLayer(4)
                y = layer(np.ones((2, 5, 3), np.float32))
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1, messages
        assert "falls back" in messages[0] and "missing" in messages[0], messages[0]
        assert y.shape == (2, 5, 4)
        try:
            fused_lif.LIFLayer(4, implementation="fused")(np.ones((2, 5, 3), np.float32))
        except fused_lif.FusedOpUnavailableError as e:
            assert "Rebuild" in str(e), str(e)
            print("raised ok")
    """, env={"FUSED_LIF_OP_LIBRARY": str(tmp_path / "missing.so")})
    assert "raised ok" in out


def test_unloadable_library_names_tensorflow_version(tmp_path):
    bad = tmp_path / "_lif_ops.so"
    bad.write_bytes(b"not a shared object")
    out = run_python("""
        import fused_lif
        import fused_lif._build_info as info
        info.TF_VERSION = "0.0.1"  # pretend it was built for another TensorFlow
        try:
            fused_lif.lif_scan([[[1.0]]])
        except fused_lif.FusedOpUnavailableError as e:
            msg = str(e)
            assert "built for TensorFlow 0.0.1" in msg, msg
            assert "pip install --no-build-isolation" in msg, msg
            print("version ok")
    """, env={"FUSED_LIF_OP_LIBRARY": str(bad)})
    assert "version ok" in out


# -------------------------------------------------------- choosing a scan --

@needs_library
def test_resolve_implementation_names_the_scan_that_runs(monkeypatch):
    """Where the library runs: each implementation= resolves to the scan it
    names ("auto" to the fused op), without a warning."""
    monkeypatch.setattr(_library, "_warned_fallback", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _library.resolve_implementation("reference") == "reference"
        assert _library.resolve_implementation("fused") == "fused"
        assert _library.resolve_implementation("auto") == "fused"
    assert _library.IMPLEMENTATIONS == fused_lif.IMPLEMENTATIONS == ("auto", "fused", "reference")


@pytest.mark.parametrize("implementation", ["cuda", "", "Fused", None, 1])
def test_resolve_implementation_refuses_unknown_names(implementation):
    with pytest.raises(ValueError, match=r"implementation must be one of \('auto', 'fused', "
                                         r"'reference'\), got"):
        _library.resolve_implementation(implementation)


def test_unusable_gpu_falls_back_with_one_warning_or_raises(monkeypatch):
    """A GPU that the kernels cannot run on (no image for its architecture):
    "auto" falls back to the reference with one warning that says why and how
    to rebuild; "fused" raises FusedOpUnavailableError with the same words.
    (Simulated: the library's answer about the GPUs is set.)"""
    from fused_lif import _build_info

    if not _build_info.WITH_CUDA:
        pytest.skip("CPU-only build: no GPU kernels to check")
    why = ("fused-lif: the CUDA kernels cannot run on GPU 0 (compute capability 7.0): no kernel "
           "image is available for execution on the device (cudaErrorNoKernelImageForDevice). "
           "This build has CUDA code for architectures 80-real. Rebuild for this GPU: ... "
           "-Ccmake.define.CMAKE_CUDA_ARCHITECTURES=70-real .")
    monkeypatch.setattr(_library, "_gpu_problem", why)
    monkeypatch.setattr(_library, "_warned_fallback", False)
    with pytest.warns(RuntimeWarning) as caught:
        assert _library.resolve_implementation("auto") == "reference"
        assert _library.resolve_implementation("auto") == "reference"
    assert len(caught) == 1 and why in str(caught[0].message), [str(w.message) for w in caught]
    assert "falls back" in str(caught[0].message)
    with pytest.raises(fused_lif.FusedOpUnavailableError, match="CMAKE_CUDA_ARCHITECTURES=70-real"):
        _library.resolve_implementation("fused")
    with pytest.raises(fused_lif.FusedOpUnavailableError, match="compute capability 7.0"):
        fused_lif.lif_scan(make_currents((1, 2, 3)))


def test_gpu_check_asks_the_library_about_each_visible_gpu(monkeypatch):
    """The path from check_gpus to the library's device check, on a machine
    without a GPU: TensorFlow is made to report GPU 0, the library finds none
    it can run on and says why, naming the architectures built."""
    from fused_lif import _build_info

    if not _build_info.WITH_CUDA or has_gpu():
        pytest.skip("needs a CUDA build on a machine without a GPU")
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda device_type=None: (
        [tf.config.LogicalDevice("/device:GPU:0", "GPU")] if device_type == "GPU" else []))
    monkeypatch.setattr(tf.config, "get_visible_devices", lambda device_type=None: (
        [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")] if device_type == "GPU" else []))
    monkeypatch.setattr(_library, "_gpu_problem", None)
    with pytest.raises(fused_lif.FusedOpUnavailableError,
                       match=r"cannot run on GPU 0 \(compute capability") as raised:
        _library.check_gpus()
    assert _build_info.CUDA_ARCHITECTURES in str(raised.value)


def test_in_xla_context_only_while_tracing_for_xla():
    seen = {}

    @tf.function(jit_compile=True)
    def xla(x):
        seen["xla"] = _library.in_xla_context()
        return x + 1.0

    @tf.function
    def graph(x):
        seen["graph"] = _library.in_xla_context()
        return x + 1.0

    x = tf.constant(1.0)
    xla(x)
    graph(x)
    assert seen == {"xla": True, "graph": False}
    assert _library.in_xla_context() is False  # eager
