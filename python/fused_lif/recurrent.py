"""The fused recurrent LIF: the recurrent weights inside the one kernel (the
compiled FusedLif>RecurrentLifForward / RecurrentLifBackward ops; loops in
csrc/lif_recurrent_cpu.h and lif_recurrent_cuda_threads.h, the math in
csrc/lif.h), its registered gradient, and `recurrent_lif_scan`.

Per batch row, with R = recurrent_kernel [neurons, neurons] (rows
presynaptic, Keras' SimpleRNN convention) and s[-1] = initial_spikes:

    I[t] = (currents[t] + bias) + s[t-1] @ R      the recurrent term as a sum
                                                  of R's rows, in float32
    u[t] = v[t-1] * (1 - 1/tau) + I[t],  s[t] = [u[t] > threshold],
    v[t] = reset(u[t], s[t])                      as fused_lif.lif_scan

The backward is exact BPTT, the recurrent path through each spike's
surrogate included; dL/dR = Σ_t s[t-1]ᵀ dL/dI[t] is computed after the op
(spike_matmul's weight gradient on the CPU, a dense matmul on a GPU).
"""

import tensorflow as tf

from . import _params
from ._library import check_gpus, load_library
from .ops import _no_gradient

__all__ = ["recurrent_lif_scan"]


def recurrent_lif_scan(currents, recurrent_kernel, tau=20.0, threshold=1.0, alpha=10.0,
                       surrogate="fast_sigmoid", reset="zero", detach_reset=False, *,
                       initial_membrane=None, initial_spikes=None, return_state=False,
                       bias=None):
    """Runs recurrent LIF neurons over time in one fused kernel (forward and backward).

    Args:
      currents: [batch, time, neurons] input currents, x[t] @ w computed
        outside (float32, float16 or bfloat16; membranes are float32).
      recurrent_kernel: [neurons, neurons] recurrent weights, rows
        presynaptic (cast to float32).
      tau, threshold, alpha, surrogate, reset, detach_reset, bias: as
        `fused_lif.lif_scan`.
      initial_membrane: [batch, neurons] v[-1] (default zeros).
      initial_spikes: [batch, neurons] s[-1], every value 0 or 1 (default
        zeros); a value other than 0 or 1 raises InvalidArgumentError naming
        it and its [row, col].
      return_state: also return the final membrane v[T-1] and the final
        spikes s[T-1] ([batch, neurons] float32 each; for an empty sequence,
        initial_membrane and initial_spikes): the state that continues the
        sequence exactly when passed back as initial_membrane and
        initial_spikes.

    Returns:
      spikes [batch, time, neurons] in the dtype of `currents`, or with
      `return_state` (spikes, final_membrane, final_spikes).

    Differentiable w.r.t. currents, recurrent_kernel, bias, tau and threshold
    (when tensors), initial_membrane and initial_spikes.
    """
    _params.check_options(alpha, surrogate, reset, detach_reset)
    currents = _params.check_currents(currents)
    neurons = currents.shape[-1]
    recurrent_kernel = _params.to_recurrent_kernel(recurrent_kernel, currents)
    # Python numbers are constants: the backward skips their gradients.
    param_grads = not (_params.is_number(tau) and _params.is_number(threshold))
    decay = tf.convert_to_tensor(_params.to_decay(tau, neurons), tf.float32)
    threshold = tf.convert_to_tensor(_params.to_threshold(threshold, neurons), tf.float32)
    bias = _params.to_bias(bias, currents)
    if bias is None:
        bias = tf.zeros([], currents.dtype)
    initial = _params.to_initial_membrane(initial_membrane, currents)
    initial_spikes = _params.to_initial_spikes(initial_spikes, currents)
    check_gpus()
    spikes, _, final_membrane = load_library().fused_lif_recurrent_lif_forward(
        currents, bias, recurrent_kernel, decay, threshold, initial, initial_spikes,
        alpha=float(alpha), surrogate=surrogate, reset=reset, detach_reset=bool(detach_reset),
        param_grads=param_grads,
    )
    if not return_state:
        return spikes
    steps = spikes.shape[1]
    if steps is None:
        final_spikes = tf.cond(tf.shape(spikes)[1] > 0,
                               lambda: tf.cast(spikes[:, -1], tf.float32),
                               lambda: initial_spikes)
    else:
        final_spikes = tf.cast(spikes[:, -1], tf.float32) if steps > 0 else initial_spikes
    return spikes, final_membrane, final_spikes


_NOT_DIFFERENTIABLE = (
    "fused-lif: a gradient reached the pre-reset membrane u[t] output of "
    "FusedLif>RecurrentLifForward, which is not differentiable (the fused backward saves u[t]; "
    "it does not take a gradient for it). Put losses on the spikes or on the final state "
    "(recurrent_lif_scan(..., return_state=True)).")


def _on_gpu(op):
    """Whether the op ran (eager) or is placed (graph) on a GPU; when its
    placement is not decided yet, whether TensorFlow has a GPU (where it
    places the op by default)."""
    device = getattr(op, "device", "") or getattr(op.outputs[0], "device", "") or ""
    if device:
        return "GPU" in device.upper()
    return bool(tf.config.list_logical_devices("GPU"))


def _grad_recurrent_kernel(op, initial_spikes, spikes, grad_currents, recurrent_kernel):
    """dL/dR = Σ_{b,t} s[t-1]ᵀ dL/dI[t], s[-1] = initial_spikes: the spikes
    shifted by one step, [batch·time, neurons], against dL/dI (in float32)."""
    steps = tf.shape(spikes)[1]
    neurons = tf.shape(spikes)[2]
    shifted = tf.concat([initial_spikes[:, None], tf.cast(spikes, tf.float32)], axis=1)[:, :steps]
    shifted = tf.reshape(shifted, [-1, neurons])
    grad = tf.reshape(tf.cast(grad_currents, tf.float32), [-1, neurons])
    if _on_gpu(op):  # spike_matmul has CPU kernels only
        return tf.matmul(shifted, grad, transpose_a=True)
    library = load_library()
    # The row lists of the shifted spikes (a product with a [neurons, 0]
    # matrix computes nothing else), then the binary-row weight gradient.
    _, row_ptr, cols = library.fused_lif_spike_matmul(shifted, tf.zeros([neurons, 0]))
    return library.fused_lif_spike_matmul_weight_grad(grad, row_ptr, cols, recurrent_kernel)


@tf.RegisterGradient("FusedLif>RecurrentLifForward")
def _recurrent_lif_forward_grad(op, grad_spikes, grad_pre_reset_membrane, grad_final_membrane):
    """Backward through time in one kernel (FusedLif>RecurrentLifBackward),
    then dL/dR (`_grad_recurrent_kernel`). The pre-reset membrane output is
    not differentiable: a loss on it is refused, never answered with zeros."""
    checks = _no_gradient(grad_pre_reset_membrane, _NOT_DIFFERENTIABLE)
    currents, bias, recurrent_kernel, decay, threshold, initial, initial_spikes = op.inputs
    spikes, pre_reset_membrane, final_membrane = op.outputs
    if grad_spikes is None:
        grad_spikes = tf.zeros_like(spikes)
    if grad_final_membrane is None:
        grad_final_membrane = tf.zeros_like(final_membrane)
    attrs = {name: op.get_attr(name)
             for name in ("alpha", "surrogate", "reset", "detach_reset", "param_grads")}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    grads = load_library().fused_lif_recurrent_lif_backward(
        grad_spikes, grad_final_membrane, pre_reset_membrane, initial, recurrent_kernel, bias,
        decay, threshold, **attrs
    )
    skip = getattr(op, "skip_input_indices", None) or ()
    grad_kernel = None if 2 in skip else _grad_recurrent_kernel(
        op, initial_spikes, spikes, grads.grad_currents, recurrent_kernel)
    result = (grads.grad_currents, grads.grad_bias, grad_kernel, grads.grad_decay,
              grads.grad_threshold, grads.grad_initial_membrane, grads.grad_initial_spikes)
    if checks:
        with tf.control_dependencies(checks):
            result = tuple(None if g is None else tf.identity(g) for g in result)
    return result
