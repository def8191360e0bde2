"""The fused LIF op: the compiled library, its registered gradient, and
`lif_scan`, the fused counterpart of `fused_lif.reference.lif_scan`.

The library is loaded once, when `fused_lif` is imported (`__init__` calls
`is_available()`), so that the ops are registered before a SavedModel or a
.keras file that uses them is loaded. A library that cannot load is not an
error at import: `load_library()` raises `FusedOpUnavailableError`, saying
why, when the fused op is used.
"""

import ctypes
import os
import threading

import numpy as np
import tensorflow as tf

from . import _params

__all__ = ["lif_scan", "load_library", "is_available", "check_gpus", "FusedOpUnavailableError"]

_LIBRARY_FILE = "_lif_ops.so"
_lock = threading.Lock()
_library = None
_load_error = None
_gpu_problem = None  # not asked yet; "" if every GPU can run the kernels, else why not


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


@tf.RegisterGradient("FusedLif>LifForward")
def _lif_forward_grad(op, grad_spikes, grad_pre_reset_membrane, grad_final_membrane):
    """Backward through time in one kernel (FusedLif>LifBackward).

    The saved pre-reset membrane u[t] is all the state it needs. That output
    is not differentiable: a loss on it is refused (`_no_gradient`), never
    answered with silent zeros.
    """
    checks = _no_gradient(grad_pre_reset_membrane)
    currents, bias, decay, threshold, initial = op.inputs
    spikes, pre_reset_membrane, final_membrane = op.outputs
    if grad_spikes is None:
        grad_spikes = tf.zeros_like(spikes)
    if grad_final_membrane is None:
        grad_final_membrane = tf.zeros_like(final_membrane)
    attrs = {name: op.get_attr(name)
             for name in ("alpha", "surrogate", "reset", "detach_reset", "param_grads")}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    grads = load_library().fused_lif_lif_backward(
        grad_spikes, grad_final_membrane, pre_reset_membrane, initial, bias, decay, threshold,
        **attrs
    )
    grads = (grads.grad_currents, grads.grad_bias, grads.grad_decay, grads.grad_threshold,
             grads.grad_initial_membrane)
    if checks:
        with tf.control_dependencies(checks):
            grads = tuple(tf.identity(g) for g in grads)
    return grads


_NOT_DIFFERENTIABLE = (
    "fused-lif: a gradient reached the pre-reset membrane u[t] output of FusedLif>LifForward, "
    "which is not differentiable (the fused backward saves u[t]; it does not take a gradient "
    "for it). Put losses on the spikes or on the final membrane (lif_scan(..., "
    "return_state=True)), or use fused_lif.reference.lif_scan in a loop of your own.")


def _no_gradient(grad, message=_NOT_DIFFERENTIABLE):
    """Refuses a non-zero gradient for the pre-reset membrane output (raising
    `message`: the op's own words). TensorFlow
    passes zeros (or None) when nothing depends on it: in a graph a constant,
    or a ZerosLike where shapes are unknown, recognised here at no cost per
    step; in eager mode a tensor, checked by value (one pass; eager runs are
    not the fast path). Anything else is checked when the step runs. Returns
    the run-time checks to attach to the gradients."""
    if grad is None:
        return []
    if tf.executing_eagerly():
        if bool(tf.reduce_any(tf.not_equal(grad, 0.0))):
            raise ValueError(message)
        return []
    if grad.op.type == "ZerosLike" or (
            grad.op.type == "Fill" and tf.get_static_value(grad.op.inputs[1]) == 0):
        return []
    value = tf.get_static_value(grad)
    if value is not None:
        if np.any(value != 0):
            raise ValueError(message)
        return []
    return [tf.debugging.Assert(tf.logical_not(tf.reduce_any(tf.not_equal(grad, 0.0))),
                                [message])]


def lif_scan(currents, tau=20.0, threshold=1.0, alpha=10.0, surrogate="fast_sigmoid",
             reset="zero", detach_reset=False, *, initial_membrane=None, return_state=False,
             bias=None):
    """Runs LIF neurons over time in one fused kernel (forward and backward).

    Same arguments and results as `fused_lif.reference.lif_scan`, with spikes
    bit-identical to it and its autodiff gradient (w.r.t. currents, tau,
    threshold, bias and initial_membrane) to float rounding.
    """
    _params.check_options(alpha, surrogate, reset, detach_reset)
    currents = _params.check_currents(currents)
    neurons = currents.shape[-1]
    # Python numbers are constants: the backward skips their gradients.
    param_grads = not (_params.is_number(tau) and _params.is_number(threshold))
    decay = tf.convert_to_tensor(_params.to_decay(tau, neurons), tf.float32)
    threshold = tf.convert_to_tensor(_params.to_threshold(threshold, neurons), tf.float32)
    bias = _params.to_bias(bias, currents)
    if bias is None:
        bias = tf.zeros([], currents.dtype)
    initial = _params.to_initial_membrane(initial_membrane, currents)
    check_gpus()
    spikes, _, final_membrane = load_library().fused_lif_lif_forward(
        currents, bias, decay, threshold, initial, alpha=float(alpha), surrogate=surrogate,
        reset=reset, detach_reset=bool(detach_reset), param_grads=param_grads,
    )
    return (spikes, final_membrane) if return_state else spikes
