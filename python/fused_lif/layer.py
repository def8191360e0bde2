"""`LIFLayer`: the seed notebook's Keras layer, with the fused op inside.

A drop-in replacement: the seed's constructor and weights ([w, b], in that
order), so a seed model or checkpoint switches by changing one import.
"""

import logging
import numbers
import threading
import warnings

import keras
import numpy as np
import tensorflow as tf

from . import _params, ops, reference
from .spikes import spike_density, spike_matmul

__all__ = ["LIFLayer", "MinValue", "IMPLEMENTATIONS", "SPIKE_INPUTS", "SPIKE_BREAK_EVEN_DENSITY",
           "SPIKE_MIN_UNITS"]

IMPLEMENTATIONS = ("auto", "fused", "reference")
SPIKE_INPUTS = (False, True, "auto")
# spike_input="auto" takes the sparse matmul at input densities up to this
# (the fraction of ones), the dense GEMM above it. Measured break-even of
# spike_matmul against tf.matmul at the medium layer [12800, 784] @ [784,
# 512] (python benchmarks/test_bench_spikes.py, 2 shared cores, two runs):
# 43-44% forward, 38-43% forward + weight gradient; at 30% sparse takes
# 0.66-0.81x dense. 0.3 leaves a margin (other CPUs, and the density pass
# "auto" adds), so that "auto" is not slower than dense near it.
SPIKE_BREAK_EVEN_DENSITY = 0.3
# ... and only in layers of at least this many units: building the row lists
# costs the same whatever the width, the dense GEMM grows with it. Measured
# at [12800, 784] @ [784, units], 10% density, forward + both gradients:
# sparse / dense 1.19 at 32 units, 0.83 at 64, 0.36 at 128 (and 1.2-2x at
# [12800, 512] @ [512, 10], the seed's output layer).
SPIKE_MIN_UNITS = 64
_log = logging.getLogger("fused_lif")
_warned_fallback = False
_warned_xla = False
_warned_dfa = False
_warned_xla_spikes = False
# Direct feedback alignment: while `fused_lif.DFAModel.train_step` runs its
# forward pass, `_dfa_step.spikes` is a list (per thread: tf.distribute runs
# replicas in threads); every LIFLayer then stops the gradient into its input,
# and each DFA hidden layer appends (layer, spikes) to it.
_dfa_step = threading.local()


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


def _refuse_replicas(replicas):
    """A stateful layer keeps one membrane of the global batch in a variable;
    under several replicas each sees only its share of the batch, and the
    variable's replicas would diverge. Refuse, and say what works instead."""
    if replicas > 1:
        raise ValueError(
            f"LIFLayer(stateful=True) does not run under a tf.distribute strategy with "
            f"{replicas} replicas: its membrane variable holds the whole batch, while each "
            "replica sees only its share. Carry the state explicitly instead: "
            "LIFLayer(..., return_state=True) returns (spikes, final_membrane), and "
            "layer(x, initial_state=final_membrane) continues from it, on every replica.")


def _warn_dfa_without_dfa_model(name):
    global _warned_dfa
    if not _warned_dfa:
        _warned_dfa = True
        warnings.warn(
            f"LIFLayer {name!r} is configured for direct feedback alignment (use_dfa=True, "
            "output_units set) but is trained outside fused_lif.DFAModel: it trains by "
            "backprop. Build the model with fused_lif.DFAModel(inputs, outputs) to train it "
            "with DFA.", UserWarning, stacklevel=4)


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
      output_units, use_dfa, is_output_layer: direct feedback alignment
        (DFA). With `use_dfa=True`, `output_units=K` and
        `is_output_layer=False` the layer is a DFA hidden layer: it owns a
        fixed random `feedback` weight [K, units] and, in a
        `fused_lif.DFAModel`, learns from the output error projected through
        it (see `fused_lif.dfa`). With `output_units=None` (the seed's
        default) they change nothing: the layer trains by backprop.
      feedback_initializer: Keras initializer of `feedback` (DFA hidden
        layers only); default None: uniform in +-1/sqrt(output_units).
      tau: membrane time constant, finite and >= 1; decay per step is
        1 - 1/tau, in [0, 1).
      threshold: spike threshold.
      implementation: "auto", "fused" or "reference".
      alpha, surrogate, reset, detach_reset: see `fused_lif.lif_scan`.
      trainable_tau, trainable_threshold: learn one tau / threshold per neuron,
        initialised from `tau` / `threshold`. tau stays in its valid range
        (>= 1) during training by a `MinValue(1.0)` constraint.
      return_state: return (spikes, final_membrane [batch, units], float32).
      spike_input: how the input currents x @ w are computed. False (the
        default): a dense matmul, bit-identical to the seed. True: the input
        must be binary (0/1 spikes, e.g. rate-coded data or a LIFLayer's
        output): `fused_lif.spike_matmul` sums the rows of w that the spikes
        select and skips the zeros (CPU kernel); any other value raises
        InvalidArgumentError naming it. "auto": measures the input's density
        and binary-ness in the graph (one pass) and takes the sparse matmul
        for binary input at density <= SPIKE_BREAK_EVEN_DENSITY, the dense one
        otherwise (non-binary input goes to the dense matmul); layers of
        fewer than SPIKE_MIN_UNITS units, and any layer when TensorFlow sees
        a GPU (spike_matmul has CPU kernels only), always take the dense
        matmul. float32, float16 and bfloat16 (sums in float32). The sparse sums
        run in index order, so the currents equal the dense ones to float
        rounding, not bit for bit: a spike can flip where a current sits at
        the threshold to the last bit. Under XLA the dense matmul is used.
      stateful: carry the membrane across calls (needs a fixed batch size);
        `reset_states()` zeroes it. Not under a tf.distribute strategy with
        several replicas (refused when built or called there): carry the
        state explicitly with `return_state=True` and `initial_state=`.

    Weights: [w (features, units), b (units,)], then tau and threshold (units,)
    when trainable, then the stateful membrane.
    """

    def __init__(self, units, output_units=None, tau=20.0, threshold=1.0, use_dfa=True,
                 is_output_layer=False, implementation="auto", alpha=10.0,
                 surrogate="fast_sigmoid", reset="zero", detach_reset=False,
                 trainable_tau=False, trainable_threshold=False, return_state=False,
                 stateful=False, feedback_initializer=None, spike_input=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units <= 0:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
            )
        if not any(spike_input is v or (isinstance(v, str) and spike_input == v)
                   for v in SPIKE_INPUTS):
            raise ValueError(f"spike_input must be one of {SPIKE_INPUTS}, got {spike_input!r}")
        _params.check_options(alpha, surrogate, reset, detach_reset)
        _params.to_decay(tau, units)  # validates tau
        _params.to_threshold(threshold, units)  # validates threshold
        if output_units is not None and (isinstance(output_units, bool) or not isinstance(
                output_units, numbers.Integral) or output_units <= 0):
            raise ValueError(f"output_units must be a positive integer or None, got "
                             f"{output_units!r}")
        for name, flag in (("use_dfa", use_dfa), ("is_output_layer", is_output_layer)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.units = int(units)
        self.output_units = None if output_units is None else int(output_units)
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
        self.spike_input = spike_input
        self.feedback_initializer = (None if feedback_initializer is None
                                     else keras.initializers.get(feedback_initializer))
        self.feedback = None
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
                constraint=MinValue(_params.TAU_MIN), trainable=True, name="tau",
                autocast=False)
        if self.trainable_threshold:
            self.threshold_weight = self.add_weight(
                shape=(self.units,), initializer=keras.initializers.Constant(self.threshold),
                trainable=True, name="threshold", autocast=False)
        if self.stateful:
            _refuse_replicas(tf.distribute.get_strategy().num_replicas_in_sync)
            if input_shape[0] is None:
                raise ValueError(
                    "LIFLayer(stateful=True) needs a fixed batch size: give one, e.g. "
                    "keras.Input(shape=(time, features), batch_size=32)")
            self.membrane_state = self.add_weight(
                shape=(input_shape[0], self.units), initializer="zeros", trainable=False,
                name="membrane_state", dtype="float32", autocast=False)
        self._build_feedback()

    @property
    def is_dfa_hidden(self):
        """A DFA hidden layer: use_dfa, output_units set, not the output layer."""
        return bool(self.use_dfa) and self.output_units is not None and not self.is_output_layer

    def _build_feedback(self):
        if not self.is_dfa_hidden:
            return
        # Fixed random feedback B [output_units, units] (Nokland 2016, "Direct
        # feedback alignment provides learning in deep neural networks":
        # fixed random matrices). Uniform in +-1/sqrt(output_units), the
        # variance-preserving (LeCun) scale for the fan-in of the projection
        # e @ B, so that the projected error does not grow with the number of
        # outputs; with Adam the overall scale matters little.
        initializer = self.feedback_initializer or keras.initializers.VarianceScaling(
            scale=1.0 / 3.0, mode="fan_in", distribution="uniform")
        self.feedback = self.add_weight(shape=(self.output_units, self.units),
                                        initializer=initializer, trainable=False,
                                        name="feedback", autocast=False)

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

    def _input_currents(self, x, w):
        """x [rows, features] @ w, dense or sparse as spike_input says."""
        global _warned_xla_spikes
        if self.spike_input is False:
            return tf.matmul(x, w)
        if _in_xla_context():
            if not _warned_xla_spikes:
                _warned_xla_spikes = True
                _log.warning("LIFLayer(spike_input=...) under XLA: using the dense matmul "
                             "(spike_matmul has no XLA kernel).")
            return tf.matmul(x, w)
        if self.spike_input is True:
            return spike_matmul(x, w)
        if (self.units < SPIKE_MIN_UNITS or x.dtype not in (tf.float32, tf.float16, tf.bfloat16)
                or not ops.is_available() or tf.config.list_logical_devices("GPU")):
            return tf.matmul(x, w)  # no gain possible here: not even measured
        density, binary = spike_density(x)
        sparse = tf.logical_and(binary, density <= SPIKE_BREAK_EVEN_DENSITY)
        return tf.cond(sparse, lambda: spike_matmul(x, w), lambda: tf.matmul(x, w))

    def call(self, inputs, initial_state=None, training=None):
        x = tf.convert_to_tensor(inputs)
        dfa_spikes = getattr(_dfa_step, "spikes", None)
        if dfa_spikes is not None:
            x = tf.stop_gradient(x)  # DFA: no gradient flows into the layer below
        elif training is True and self.is_dfa_hidden:
            _warn_dfa_without_dfa_model(self.name)
        features = self.w.shape[0]
        shape = tf.shape(x)
        # One GEMM over all time steps: [batch * time, features] @ [features, units].
        currents = self._input_currents(tf.reshape(x, [-1, features]), tf.cast(self.w, x.dtype))
        currents = tf.reshape(currents, tf.stack([shape[0], shape[1], self.units]))
        currents.set_shape([x.shape[0], x.shape[1], self.units])
        if self.membrane_state is not None:
            replica = tf.distribute.get_replica_context()
            _refuse_replicas(replica.num_replicas_in_sync if replica is not None
                             else tf.distribute.get_strategy().num_replicas_in_sync)
            if initial_state is None:
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
        if dfa_spikes is not None and self.is_dfa_hidden:
            dfa_spikes.append((self, spikes))
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
            stateful=self.stateful, spike_input=self.spike_input,
            feedback_initializer=(None if self.feedback_initializer is None else
                                  keras.initializers.serialize(self.feedback_initializer)))
        return config
