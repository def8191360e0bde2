"""`LIFLayer`: the seed notebook's Keras layer, with the fused op inside.

A drop-in replacement: the seed's constructor and weights ([w, b], in that
order), so a seed model or checkpoint switches by changing one import.
"""

import logging
import numbers
import warnings

import keras
import numpy as np
import tensorflow as tf

from . import _params, ops, reference

__all__ = ["LIFLayer", "MinValue", "IMPLEMENTATIONS"]

IMPLEMENTATIONS = ("auto", "fused", "reference")
_log = logging.getLogger("fused_lif")
_warned_fallback = False
_warned_xla = False


def _in_xla_context():
    """True while tracing for XLA (tf.function(jit_compile=True))."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # private API moved: assume no XLA
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def resolve_implementation(implementation):
    """The module (fused_lif.ops or fused_lif.reference) that runs the scan."""
    global _warned_fallback
    if implementation == "reference":
        return reference
    if implementation == "fused":
        ops.check_gpus()  # loads the library; raises FusedOpUnavailableError, saying why
        return ops
    if implementation == "auto":
        try:
            ops.check_gpus()
            return ops
        except ops.FusedOpUnavailableError as e:
            if not _warned_fallback:
                _warned_fallback = True
                warnings.warn(
                    f"{e}\nLIFLayer(implementation='auto') falls back to the (slower) "
                    "tf.while_loop reference.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return reference
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")


def _plain(value):
    """A Python number as is; a per-neuron array or tensor as a list of floats."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value
    return [float(v) for v in np.asarray(value, np.float32).reshape(-1)]


def _as_param(value):
    return value if isinstance(value, numbers.Real) else tf.constant(value, tf.float32)


@keras.saving.register_keras_serializable(package="fused_lif")
class MinValue(keras.constraints.Constraint):
    """Clips a weight to >= min_value after each update (keeps tau valid)."""

    def __init__(self, min_value=1.0):
        self.min_value = float(min_value)

    def __call__(self, w):
        return keras.ops.maximum(w, keras.ops.cast(self.min_value, w.dtype))

    def get_config(self):
        return {"min_value": self.min_value}


@keras.saving.register_keras_serializable(package="fused_lif")
class LIFLayer(keras.layers.Layer):
    """Leaky integrate-and-fire neurons with surrogate-gradient training.

    Input [batch, time, features] -> spikes [batch, time, units]. The input
    currents of all time steps come from one matmul (x @ w, bias added in the
    kernel); the LIF time loop and its backward run in one fused kernel
    (`implementation="fused"`), or in the seed's tf.while_loop
    (`"reference"`); `"auto"` uses the fused op and falls back to the reference,
    with one warning, when the op library cannot load or its kernels cannot
    run on the GPU. Under XLA (`tf.function(jit_compile=True)`) the layer runs
    the reference, which XLA compiles; `model.compile(jit_compile=True)` warns
    and runs without XLA, as with Keras' fused LSTM.

    Args (the seed's first):
      units: number of neurons.
      output_units, use_dfa, is_output_layer: accepted and stored for
        compatibility with the seed notebook; direct feedback alignment (DFA)
        training is not implemented yet: the layer trains by backprop.
      tau: membrane time constant (> 0); decay per step is 1 - 1/tau.
      threshold: spike threshold.
      implementation: "auto", "fused" or "reference".
      alpha, surrogate, reset, detach_reset: see `fused_lif.lif_scan`.
      trainable_tau, trainable_threshold: learn one tau / threshold per neuron,
        initialised from `tau` / `threshold`. tau is kept >= 1 during training
        by a `MinValue(1.0)` constraint (decay stays in [0, 1)).
      return_state: return (spikes, final_membrane [batch, units], float32).
      stateful: carry the membrane across calls (needs a fixed batch size);
        `reset_states()` zeroes it.

    Weights: [w (features, units), b (units,)], then tau and threshold (units,)
    when trainable, then the stateful membrane.
    """

    def __init__(self, units, output_units=None, tau=20.0, threshold=1.0, use_dfa=True,
                 is_output_layer=False, implementation="auto", alpha=10.0,
                 surrogate="fast_sigmoid", reset="zero", detach_reset=False,
                 trainable_tau=False, trainable_threshold=False, return_state=False,
                 stateful=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units <= 0:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
            )
        _params.check_options(alpha, surrogate, reset, detach_reset)
        _params.decay(tau, units)  # validates tau
        _params.threshold(threshold, units)  # validates threshold
        self.units = int(units)
        self.output_units = output_units
        # Numbers stay numbers (the seed's exact decay); per-neuron values are
        # kept as lists of floats, so that get_config round-trips.
        self.tau = _plain(tau)
        self.threshold = _plain(threshold)
        self.use_dfa = use_dfa
        self.is_output_layer = is_output_layer
        self.implementation = implementation
        self.alpha = alpha
        self.surrogate = surrogate
        self.reset = reset
        self.detach_reset = detach_reset
        self.trainable_tau = trainable_tau
        self.trainable_threshold = trainable_threshold
        self.return_state = return_state
        self.stateful = stateful
        # No XLA kernel for the fused op: compile(jit_compile=True) warns and
        # runs without XLA (Keras' own check, as for the cuDNN LSTM).
        self.supports_jit = implementation == "reference"
        self.membrane_state = None

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                "LIFLayer expects inputs of shape [batch, time, features], got shape "
                f"{tuple(input_shape)}"
            )
        if input_shape[-1] is None:
            raise ValueError("LIFLayer needs a known number of input features (last axis)")
        self.w = self.add_weight(shape=(input_shape[-1], self.units),
                                 initializer="glorot_uniform", trainable=True, name="weights")
        self.b = self.add_weight(shape=(self.units,), initializer="zeros", trainable=True,
                                 name="bias")
        self.tau_weight = self.threshold_weight = None
        if self.trainable_tau:
            self.tau_weight = self.add_weight(
                shape=(self.units,), initializer=keras.initializers.Constant(self.tau),
                constraint=MinValue(1.0), trainable=True, name="tau", autocast=False)
        if self.trainable_threshold:
            self.threshold_weight = self.add_weight(
                shape=(self.units,), initializer=keras.initializers.Constant(self.threshold),
                trainable=True, name="threshold", autocast=False)
        if self.stateful:
            if input_shape[0] is None:
                raise ValueError(
                    "LIFLayer(stateful=True) needs a fixed batch size: give one, e.g. "
                    "keras.Input(shape=(time, features), batch_size=32)")
            self.membrane_state = self.add_weight(
                shape=(input_shape[0], self.units), initializer="zeros", trainable=False,
                name="membrane_state", dtype="float32", autocast=False)

    def reset_states(self):
        """Zeroes the membrane carried across calls (stateful=True)."""
        if self.membrane_state is not None:
            self.membrane_state.assign(keras.ops.zeros_like(self.membrane_state))

    reset_state = reset_states

    def _scan_module(self):
        global _warned_xla
        if _in_xla_context():
            if self.implementation != "reference" and not _warned_xla:
                _warned_xla = True
                _log.warning("LIFLayer under XLA: running the XLA-compilable reference scan "
                             "(the fused op has no XLA kernel).")
            return reference
        return resolve_implementation(self.implementation)

    def call(self, inputs, initial_state=None, training=None):
        x = tf.convert_to_tensor(inputs)
        features = self.w.shape[0]
        shape = tf.shape(x)
        # One GEMM over all time steps: [batch * time, features] @ [features, units].
        currents = tf.matmul(tf.reshape(x, [-1, features]), tf.cast(self.w, x.dtype))
        currents = tf.reshape(currents, tf.stack([shape[0], shape[1], self.units]))
        currents.set_shape([x.shape[0], x.shape[1], self.units])
        if initial_state is None and self.membrane_state is not None:
            initial_state = tf.convert_to_tensor(self.membrane_state)
        tau = (_as_param(self.tau) if self.tau_weight is None
               else tf.convert_to_tensor(self.tau_weight))
        threshold = (_as_param(self.threshold) if self.threshold_weight is None
                     else tf.convert_to_tensor(self.threshold_weight))
        spikes, final_membrane = self._scan_module().lif_scan(
            currents, tau=tau, threshold=threshold, alpha=self.alpha, surrogate=self.surrogate,
            reset=self.reset, detach_reset=self.detach_reset, initial_membrane=initial_state,
            return_state=True, bias=tf.cast(self.b, x.dtype))
        if self.membrane_state is not None:
            self.membrane_state.assign(final_membrane)
        return (spikes, final_membrane) if self.return_state else spikes

    def compute_output_spec(self, inputs, initial_state=None, training=None):
        # The final membrane is float32 whatever the compute dtype.
        shape = self.compute_output_shape(inputs.shape)
        if self.return_state:
            return (keras.KerasTensor(shape[0], dtype=self.compute_dtype),
                    keras.KerasTensor(shape[1], dtype="float32"))
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        spikes = (input_shape[0], input_shape[1], self.units)
        return (spikes, (input_shape[0], self.units)) if self.return_state else spikes

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, output_units=self.output_units, tau=self.tau,
            threshold=self.threshold, use_dfa=self.use_dfa, is_output_layer=self.is_output_layer,
            implementation=self.implementation, alpha=self.alpha, surrogate=self.surrogate,
            reset=self.reset, detach_reset=self.detach_reset, trainable_tau=self.trainable_tau,
            trainable_threshold=self.trainable_threshold, return_state=self.return_state,
            stateful=self.stateful)
        return config
