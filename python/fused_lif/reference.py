"""The reference LIF scan: the seed notebook's `tf.while_loop` recurrence with
its `tf.custom_gradient` spike, generalised to the package's options.

This is the ground truth that the fused op is checked against; it never
touches the compiled library. Per time step t (notation of csrc/lif.h):

    u[t] = v[t-1] * (1 - 1/tau) + I[t]         leaky integration
    s[t] = [u[t] > threshold]                   spike; surrogate gradient
    v[t] = u[t] * (1 - s[t])                    reset="zero" (the seed's)
         = u[t] - s[t] * threshold              reset="subtract"
         = u[t]                                 reset="none"

Its gradient is TensorFlow's autodiff of exactly this loop.
"""

import math

import tensorflow as tf

from . import _params

__all__ = ["lif_scan", "recurrent_lif_scan", "surrogate_gradient"]


def surrogate_gradient(x, alpha, surrogate="fast_sigmoid"):
    """dS/dx of the surrogate spike at x = u - threshold."""
    if surrogate == "fast_sigmoid":
        return 1.0 / (1.0 + tf.abs(alpha * x)) ** 2  # the seed's
    if surrogate == "atan":
        return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)
    if surrogate == "sigmoid":
        sig = tf.sigmoid(alpha * x)
        return alpha * sig * (1.0 - sig)
    if surrogate == "triangle":
        return tf.maximum(0.0, 1.0 - tf.abs(alpha * x))
    raise ValueError(f"unknown surrogate {surrogate!r}")


def _spike_function(alpha, surrogate):
    @tf.custom_gradient
    def spike_function(v, threshold):
        # Forward: Heaviside step; backward: the surrogate's derivative.
        spikes = tf.cast(tf.greater(v, threshold), tf.float32)

        def grad(dy):
            dv = dy * surrogate_gradient(v - threshold, alpha, surrogate)
            # threshold is [] or [neurons]: sum dv over what it was broadcast on.
            dthreshold = -tf.reduce_sum(dv, axis=tf.range(tf.rank(dv) - tf.rank(threshold)))
            return dv, dthreshold

        return spikes, grad

    return spike_function


def lif_scan(currents, tau=20.0, threshold=1.0, alpha=10.0, surrogate="fast_sigmoid",
             reset="zero", detach_reset=False, *, initial_membrane=None, return_state=False,
             bias=None):
    """Runs LIF neurons over time with a `tf.while_loop` (the seed's recurrence).

    Args:
      currents: [batch, time, neurons] input currents (float32, float16 or
        bfloat16; the membrane is float32 whatever their type).
      tau: membrane time constant, a positive number or a [neurons] tensor.
      threshold: spike threshold, a number or a [neurons] tensor.
      alpha: surrogate steepness.
      surrogate: "fast_sigmoid" (the seed's), "atan", "sigmoid" or "triangle".
      reset: "zero" (the seed's), "subtract" or "none".
      detach_reset: if True, no gradient flows through the spike in the reset.
      initial_membrane: [batch, neurons] membrane before the first step
        (default zeros).
      return_state: also return the final membrane [batch, neurons] (float32).
      bias: optional [neurons] added to the currents (in their dtype).

    Returns:
      spikes [batch, time, neurons] in the dtype of `currents`, and the final
      membrane if `return_state`.
    """
    spikes, v, _ = _scan(currents, None, tau, threshold, alpha, surrogate, reset, detach_reset,
                         initial_membrane, None, bias)
    return (spikes, v) if return_state else spikes


def recurrent_lif_scan(currents, recurrent_kernel, tau=20.0, threshold=1.0, alpha=10.0,
                       surrogate="fast_sigmoid", reset="zero", detach_reset=False, *,
                       initial_membrane=None, initial_spikes=None, return_state=False,
                       bias=None):
    """Recurrent LIF neurons with a `tf.while_loop`: `lif_scan` whose input
    current at t also holds the spikes of t-1 through `recurrent_kernel`
    [neurons, neurons] (rows presynaptic, Keras' SimpleRNN convention):

        I[t] = (currents[t] + bias) + s[t-1] @ recurrent_kernel,  s[-1] = initial_spikes

    the first sum in the currents' dtype, the recurrent product and the total
    in float32. initial_spikes: [batch, neurons], 0 or 1 (default zeros).
    Returns spikes, and with `return_state` also the final membrane and the
    final spikes s[T-1] ([batch, neurons], float32; initial_spikes if T = 0):
    the state a later call continues from. Gradients: TensorFlow's autodiff
    of this loop (BPTT through the recurrent path and the reset).
    """
    if recurrent_kernel is None:
        raise ValueError("recurrent_lif_scan needs a recurrent_kernel [neurons, neurons]")
    spikes, v, s_last = _scan(currents, recurrent_kernel, tau, threshold, alpha, surrogate,
                              reset, detach_reset, initial_membrane, initial_spikes, bias)
    return (spikes, v, s_last) if return_state else spikes


def _scan(currents, recurrent_kernel, tau, threshold, alpha, surrogate, reset, detach_reset,
          initial_membrane, initial_spikes, bias):
    """(spikes, final membrane, final spikes) of both scans; without a
    recurrent kernel the loop is exactly the seed's."""
    _params.check_options(alpha, surrogate, reset, detach_reset)
    currents = _params.check_currents(currents)
    neurons = currents.shape[-1]
    decay = _params.to_decay(tau, neurons)
    threshold = _params.to_threshold(threshold, neurons)
    threshold = tf.convert_to_tensor(threshold, tf.float32)
    decay, threshold = _params.checked_at_run_time(decay, threshold)
    bias = _params.to_bias(bias, currents)
    v = _params.to_initial_membrane(initial_membrane, currents)
    recurrent = recurrent_kernel is not None
    s_last = None
    if recurrent:
        recurrent_kernel = _params.to_recurrent_kernel(recurrent_kernel, currents)
        s_last = _params.to_initial_spikes(initial_spikes, currents)
    dtype = currents.dtype
    spike_function = _spike_function(alpha, surrogate)

    # A static number of steps keeps the TensorArray's size fixed, which XLA
    # needs; the seed's dynamic size works everywhere else.
    time_steps = currents.shape[1]
    if time_steps == 0:  # no steps: empty spikes, still connected for gradients
        return tf.identity(currents), v, s_last
    if time_steps is None:
        time_steps = tf.shape(currents)[1]
    spikes_array = tf.TensorArray(dtype=tf.float32, size=time_steps, dynamic_size=False,
                                  element_shape=tf.TensorShape([currents.shape[0], neurons]))

    def time_step(t, v, s_prev, spikes_array):
        i_in = currents[:, t, :]
        if bias is not None:
            i_in = i_in + bias  # in the currents' dtype, as the layer's matmul + b
        i_in = tf.cast(i_in, tf.float32)
        if recurrent:
            i_in = i_in + tf.matmul(s_prev, recurrent_kernel)  # s[t-1] @ W_rec
        u = v * decay + i_in  # leaky integration
        spike = spike_function(u, threshold)
        reset_spike = tf.stop_gradient(spike) if detach_reset else spike
        if reset == "zero":
            v = u * (1.0 - reset_spike)
        elif reset == "subtract":
            v = u - reset_spike * threshold
        else:
            v = u
        return [t + 1, v, spike if recurrent else s_prev, spikes_array.write(t, spike)]

    _, v, s_last, spikes_array = tf.while_loop(
        cond=lambda t, *_: t < time_steps,
        body=time_step,
        loop_vars=[tf.constant(0), v, s_last if recurrent else tf.zeros([]), spikes_array],
        maximum_iterations=time_steps,  # bounds the gradient's accumulators (XLA)
    )
    if isinstance(time_steps, int):
        spikes = tf.transpose(spikes_array.stack(), [1, 0, 2])
    else:  # unknown length: an empty TensorArray cannot stack an unknown shape
        spikes = tf.cond(time_steps > 0,
                         lambda: tf.transpose(spikes_array.stack(), [1, 0, 2]),
                         lambda: tf.zeros_like(currents, tf.float32))
    return tf.cast(spikes, dtype), v, s_last if recurrent else None
