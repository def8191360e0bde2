"""The fused LIF op: its registered gradient, and `lif_scan`, the fused
counterpart of `fused_lif.reference.lif_scan`. The library itself is loaded
by `fused_lif._library` (re-exported here: `load_library`, `is_available`,
`check_gpus`, `library_path`, `FusedOpUnavailableError`).
"""

import numpy as np
import tensorflow as tf

from . import _params
from ._library import (FusedOpUnavailableError, check_gpus, is_available, library_path,
                       load_library)

__all__ = ["lif_scan", "load_library", "is_available", "check_gpus", "library_path",
           "FusedOpUnavailableError"]


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
