"""Argument checking and parameter preparation shared by the fused op and the
reference, so that both accept (and reject) exactly the same inputs.

Pure Python + TensorFlow: never touches the compiled library.
"""

import math
import numbers

import numpy as np
import tensorflow as tf

SURROGATES = ("fast_sigmoid", "atan", "sigmoid", "triangle")
RESETS = ("zero", "subtract", "none")
DTYPES = (tf.float32, tf.float16, tf.bfloat16)
# The smallest membrane time constant: decay = 1 - 1/tau is then in [0, 1).
TAU_MIN = 1.0


def check_options(alpha, surrogate, reset, detach_reset):
    """Validates the neuron options that are not tensors."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a number, got {alpha!r}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha (surrogate steepness) must be finite and >= 0, got {alpha}")
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
    if not isinstance(detach_reset, (bool, np.bool_)):
        raise TypeError(f"detach_reset must be a bool, got {detach_reset!r}")


def check_currents(currents, name="currents"):
    """Converts to a tensor; checks dtype and rank."""
    currents = tf.convert_to_tensor(currents)
    if currents.dtype not in DTYPES:
        raise TypeError(
            f"{name} must be float32, float16 or bfloat16, got {currents.dtype.name}"
            + (" (cast it with tf.cast(x, tf.float32))" if currents.dtype == tf.float64 else "")
        )
    if currents.shape.rank is not None and currents.shape.rank != 3:
        raise ValueError(
            f"{name} must have rank 3 [batch, time, neurons], got shape {currents.shape}"
        )
    return currents


def is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _concrete(x):
    """The value of a tensor when it is known now (eager), else None."""
    if tf.executing_eagerly() or isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    return tf.get_static_value(x)


def _check_param_shape(name, value, neurons):
    rank = value.shape.rank
    if rank is None:
        return
    if rank > 1 or (rank == 1 and value.shape[0] is not None and neurons is not None
                    and value.shape[0] != neurons):
        raise ValueError(
            f"{name} must be a number or a vector of one value per neuron [{neurons}], "
            f"got shape {value.shape}"
        )


def to_decay(tau, neurons):
    """decay = 1 - 1/tau, as the seed computes it; tau must be finite and >= 1
    (decay in [0, 1): the membrane leaks, it never grows or oscillates).

    A Python number gives a Python float (computed in double, then rounded to
    float32 by TensorFlow where it meets the membrane, as in the seed); a
    tensor or array gives a float32 tensor (computed in float32), differentiable
    w.r.t. tau. A tensor whose value is unknown until run time (in a graph)
    gets NaN where tau is out of range, which both scans reject when they run.
    """
    if is_number(tau):
        if not (math.isfinite(tau) and tau >= TAU_MIN):
            raise ValueError(f"tau must be finite and >= {TAU_MIN:g}, got {tau}")
        return 1.0 - 1.0 / tau
    tau = tf.convert_to_tensor(tau)
    if not tau.dtype.is_floating:
        raise TypeError(f"tau must be a number or a float tensor, got {tau.dtype.name}")
    tau = tf.cast(tau, tf.float32)
    _check_param_shape("tau", tau, neurons)
    known = _concrete(tau)
    if known is not None:
        if not np.all(np.isfinite(known) & (known >= TAU_MIN)):
            raise ValueError(f"tau must be finite and >= {TAU_MIN:g}, got {known}")
        return 1.0 - 1.0 / tau
    valid = tf.logical_and(tau >= TAU_MIN, tau < math.inf)
    return tf.where(valid, 1.0 - 1.0 / tau, math.nan)


def to_threshold(value, neurons):
    """The threshold as a Python float or a float32 tensor ([] or [neurons])."""
    if is_number(value):
        if math.isnan(value):
            raise ValueError("threshold must not be NaN")
        return float(value)
    tensor = tf.convert_to_tensor(value)
    if not tensor.dtype.is_floating:
        raise TypeError(f"threshold must be a number or a float tensor, got {tensor.dtype.name}")
    tensor = tf.cast(tensor, tf.float32)
    _check_param_shape("threshold", tensor, neurons)
    known = _concrete(tensor)
    if known is not None and np.any(np.isnan(known)):
        raise ValueError(f"threshold must not be NaN, got {known}")
    return tensor


def to_bias(value, currents):
    """The bias in the dtype of the currents, [] or [neurons]; None if absent."""
    if value is None:
        return None
    tensor = tf.cast(tf.convert_to_tensor(value), currents.dtype)
    _check_param_shape("bias", tensor, currents.shape[-1])
    return tensor


def to_initial_membrane(initial, currents):
    """The initial membrane [batch, neurons] as float32 (zeros if None)."""
    shape = tf.shape(currents)
    if initial is None:
        return tf.zeros(tf.stack([shape[0], shape[2]]), tf.float32)
    initial = tf.convert_to_tensor(initial)
    if not initial.dtype.is_floating:
        raise TypeError(f"initial_membrane must be a float tensor, got {initial.dtype.name}")
    initial = tf.cast(initial, tf.float32)
    expected = tf.TensorShape([currents.shape[0], currents.shape[2]])
    if not initial.shape.is_compatible_with(expected):
        raise ValueError(
            f"initial_membrane must have shape [batch, neurons] = {expected}, got {initial.shape}"
        )
    return initial


def checked_at_run_time(decay, threshold):
    """For a scan without a kernel that checks its inputs (the reference): in
    a graph, where values are unknown until run time, assert what `to_decay`
    and `to_threshold` check eagerly (tau out of range arrives as NaN decay)."""
    if tf.executing_eagerly():
        return decay, threshold
    checks = []
    if isinstance(decay, tf.Tensor) and tf.get_static_value(decay) is None:
        checks.append(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(decay)), [
            f"tau must be finite and >= {TAU_MIN:g}; got decay = 1 - 1/tau =", decay]))
    if isinstance(threshold, tf.Tensor) and tf.get_static_value(threshold) is None:
        checks.append(tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(tf.math.is_nan(threshold))),
            ["threshold must not be NaN, got", threshold]))
    if not checks:
        return decay, threshold
    with tf.control_dependencies(checks):
        return tf.identity(decay), tf.identity(threshold)


def to_recurrent_kernel(kernel, currents):
    """The recurrent kernel [neurons, neurons] as float32 (rows presynaptic)."""
    kernel = tf.convert_to_tensor(kernel)
    if not kernel.dtype.is_floating:
        raise TypeError(f"recurrent_kernel must be a float tensor, got {kernel.dtype.name}")
    kernel = tf.cast(kernel, tf.float32)
    neurons = currents.shape[-1]
    if not kernel.shape.is_compatible_with([neurons, neurons]):
        raise ValueError(f"recurrent_kernel must have shape [neurons, neurons] = "
                         f"[{neurons}, {neurons}], got {kernel.shape}")
    return kernel


def to_initial_spikes(initial, currents):
    """The spikes s[-1] [batch, neurons] as float32 (zeros if None); values
    known now must be 0 or 1 (a graph's are checked by the scans when they
    run)."""
    shape = tf.shape(currents)
    if initial is None:
        return tf.zeros(tf.stack([shape[0], shape[2]]), tf.float32)
    initial = tf.convert_to_tensor(initial)
    if not (initial.dtype.is_floating or initial.dtype.is_integer or initial.dtype == tf.bool):
        raise TypeError(f"initial_spikes must be a float, integer or bool tensor, got "
                        f"{initial.dtype.name}")
    initial = tf.cast(initial, tf.float32)
    expected = tf.TensorShape([currents.shape[0], currents.shape[2]])
    if not initial.shape.is_compatible_with(expected):
        raise ValueError(
            f"initial_spikes must have shape [batch, neurons] = {expected}, got {initial.shape}")
    known = _concrete(initial)
    if known is not None:
        bad = np.argwhere((known != 0) & (known != 1))
        if bad.size:
            row, col = bad[0]
            raise ValueError(f"initial_spikes must be 0 or 1, got {known[row, col]} at "
                             f"[{row}, {col}]")
    return initial
