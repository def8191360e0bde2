"""The compiled op library (loaded once, lazily) and the choice of backend.

Every module that runs a compiled op (`ops`, `spikes`, `recurrent`) gets the
library from `load_library()`; every layer picks its scan with
`resolve_implementation()`, and runs the reference under XLA
(`in_xla_context()`).

The library is loaded when `fused_lif` is imported (`__init__` calls
`is_available()`), so that the ops are registered before a SavedModel or a
.keras file that uses them is loaded. A library that cannot load is not an
error at import: `load_library()` raises `FusedOpUnavailableError`, saying
why, when the fused op is used.
"""

import ctypes
import os
import threading
import warnings

import tensorflow as tf

__all__ = ["IMPLEMENTATIONS", "FusedOpUnavailableError", "load_library", "is_available",
           "check_gpus", "library_path", "resolve_implementation", "in_xla_context"]

# A layer's `implementation=`: the fused op, the tf.while_loop reference, or
# the fused op where it can run and the reference elsewhere.
IMPLEMENTATIONS = ("auto", "fused", "reference")

_LIBRARY_FILE = "_lif_ops.so"
_lock = threading.Lock()
_library = None
_load_error = None
_gpu_problem = None  # not asked yet; "" if every GPU can run the kernels, else why not
_warned_fallback = False


class FusedOpUnavailableError(RuntimeError):
    """The compiled op library is missing, cannot be loaded, or has no kernels
    that a GPU TensorFlow uses can run."""


def library_path():
    """Where the op library is loaded from ($FUSED_LIF_OP_LIBRARY overrides)."""
    return os.environ.get("FUSED_LIF_OP_LIBRARY") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), _LIBRARY_FILE
    )


def _explain(path, error):
    try:
        from ._build_info import TF_VERSION as built_for
    except ImportError:
        built_for = None
    lines = [f"fused-lif: cannot load the fused LIF op library {path}: {error}"]
    if not os.path.exists(path):
        lines.append("The library is missing: the package was built without it, or not built.")
    if built_for and built_for != tf.__version__:
        lines.append(
            f"It was built for TensorFlow {built_for}, but TensorFlow {tf.__version__} is "
            "running: custom ops must be built against the TensorFlow that loads them."
        )
    running_minor = ".".join(tf.__version__.split(".")[:2])
    lines.append(
        "Rebuild it against the installed TensorFlow: "
        "pip install --no-build-isolation --force-reinstall --no-deps . "
        f"(from a fused-lif checkout), or install a fused-lif wheel built for TensorFlow "
        f"{running_minor} (tools/build_wheel.sh builds one); or use implementation='reference'."
    )
    return "\n".join(lines)


def load_library():
    """Loads the op library (once) and returns its generated op module.

    Raises FusedOpUnavailableError, saying what is wrong, when it cannot load.
    """
    global _library, _load_error
    with _lock:
        if _library is None and _load_error is None:
            path = library_path()
            try:
                if not os.path.exists(path):
                    raise FileNotFoundError("no such file")
                _library = tf.load_op_library(path)
            except Exception as e:  # noqa: BLE001 - any load failure is reported
                _load_error = (path, e)
        if _load_error is not None:
            raise FusedOpUnavailableError(_explain(*_load_error))
        return _library


def check_gpus():
    """Raises FusedOpUnavailableError if a GPU that TensorFlow uses cannot run
    the library's CUDA kernels: no code for its architecture (the message
    names its compute capability, the architectures built and the rebuild
    command), or a driver too old for the CUDA runtime built in. Asks the
    library once per process; nothing to ask for a CPU-only build or TensorFlow.
    """
    global _gpu_problem
    load_library()
    with _lock:
        if _gpu_problem is None:
            _gpu_problem = _ask_library_about_gpus()
    if _gpu_problem:
        raise FusedOpUnavailableError(_gpu_problem)


def _ask_library_about_gpus():
    from ._build_info import WITH_CUDA
    if not WITH_CUDA:
        return ""  # no GPU kernels registered: TensorFlow runs the op on the CPU
    # TensorFlow first sets up its GPUs (their CUDA contexts, which the
    # library's runtime then shares), then the library checks each.
    if not tf.config.list_logical_devices("GPU"):
        return ""
    check = ctypes.CDLL(library_path()).fused_lif_cuda_check_device
    check.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    for gpu in tf.config.get_visible_devices("GPU"):
        message = ctypes.create_string_buffer(2048)
        if check(int(gpu.name.rsplit(":", 1)[1]), message, len(message)):
            return message.value.decode()
    return ""


def is_available():
    """Whether the fused op library loads in this process."""
    try:
        load_library()
        return True
    except FusedOpUnavailableError:
        return False


def check_implementation(implementation):
    """Raises ValueError unless `implementation` is one of IMPLEMENTATIONS."""
    if not isinstance(implementation, str) or implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")


def resolve_implementation(implementation):
    """"fused" or "reference": what a layer with this `implementation=` runs.

    "fused" raises FusedOpUnavailableError (saying why) when the op cannot
    run here; "auto" then falls back to "reference", with one warning per
    process.
    """
    global _warned_fallback
    check_implementation(implementation)
    if implementation == "reference":
        return "reference"
    if implementation == "fused":
        check_gpus()
        return "fused"
    try:
        check_gpus()
        return "fused"
    except FusedOpUnavailableError as e:
        if not _warned_fallback:
            _warned_fallback = True
            warnings.warn(
                f"{e}\nimplementation='auto' falls back to the (slower) tf.while_loop "
                "reference.", RuntimeWarning, stacklevel=3)
        return "reference"


def in_xla_context():
    """True while tracing for XLA (tf.function(jit_compile=True))."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # private API moved: assume no XLA
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
