"""The LIF neuron core, and `LIF`: LIF neurons as a layer of their own.

`NeuronLayer` is the base of every layer with LIF neurons. It holds, once:
the neuron options and their checks, tau and threshold (numbers, per-channel
arrays, or trainable weights), the stateful membrane, the choice of backend
(fused op or tf.while_loop reference; the reference under XLA) and the scan
call. `LIF` is that core alone, on input currents of any shape
[batch, time, *features]; `fused_lif.LIFLayer` is a dense projection feeding
it (as Keras' SimpleRNN wraps its cell).

Parameters follow the convention of convolutional networks: tau and
threshold are one number, or one value per channel (the last axis), used at
every position of the other feature axes. For `LIF` on [batch, time, H, W, C]
the kernel sees neurons n = (h·W + w)·C + c, the features flattened as they
lie in memory; a per-channel parameter is tiled over the H·W positions
(`tf.tile`, whose gradient sums over them), a vector of `neurons` floats,
small beside the currents (batch · time · neurons). A LIFLayer has one
position: its per-neuron parameters are per-channel ones.
"""

import logging
import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from . import _params, ops, recurrent, reference
from ._library import check_implementation, in_xla_context, resolve_implementation

__all__ = ["LIF", "NeuronLayer", "MinValue"]

_log = logging.getLogger("fused_lif")
_warned_xla = False


def _plain(value):
    """A Python number as is; a per-channel array or tensor as a list of floats
    (so that get_config round-trips)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value
    return [float(v) for v in np.asarray(value, np.float32).reshape(-1)]


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")


@keras.saving.register_keras_serializable(package="fused_lif")
class MinValue(keras.constraints.Constraint):
    """Clips a weight to >= min_value after each update (keeps tau valid)."""

    def __init__(self, min_value=1.0):
        self.min_value = float(min_value)

    def __call__(self, w):
        return keras.ops.maximum(w, keras.ops.cast(self.min_value, w.dtype))

    def get_config(self):
        return {"min_value": self.min_value}


def refuse_replicas(replicas, layer_class="LIFLayer"):
    """A stateful layer keeps one membrane of the global batch in a variable;
    under several replicas each sees only its share of the batch, and the
    variable's replicas would diverge. Refuse, and say what works instead."""
    if replicas > 1:
        raise ValueError(
            f"{layer_class}(stateful=True) does not run under a tf.distribute strategy with "
            f"{replicas} replicas: its membrane variable holds the whole batch, while each "
            f"replica sees only its share. Carry the state explicitly instead: "
            f"{layer_class}(..., return_state=True) returns (spikes, final_membrane), and "
            "layer(x, initial_state=final_membrane) continues from it, on every replica.")


class NeuronLayer(keras.layers.Layer):
    """Base of the layers with LIF neurons; see the module docstring.

    Args:
      tau: membrane time constant, finite and >= 1 (decay per step
        1 - 1/tau, in [0, 1)): a number, or one value per channel.
      threshold: spike threshold: a number, or one value per channel.
      alpha, surrogate, reset, detach_reset: see `fused_lif.lif_scan`.
      trainable_tau, trainable_threshold: learn one tau / threshold per
        channel, initialised from `tau` / `threshold`. tau stays >= 1 during
        training (a `MinValue(1.0)` constraint).
      stateful: carry the membrane across calls (needs a fixed batch size);
        `reset_states()` zeroes it. Not under a tf.distribute strategy with
        several replicas: carry the state with `return_state=True` and
        `initial_state=` instead.
      return_state: also return the final membrane (float32).
      implementation: "auto" (the fused op; the reference, with one warning,
        where the op library cannot load or its kernels cannot run on the
        GPU), "fused" or "reference" (the tf.while_loop). Under XLA
        (`tf.function(jit_compile=True)`) the reference runs, which XLA
        compiles; `model.compile(jit_compile=True)` warns and runs without
        XLA, as with Keras' fused LSTM.
    """

    def __init__(self, tau=20.0, threshold=1.0, alpha=10.0, surrogate="fast_sigmoid",
                 reset="zero", detach_reset=False, trainable_tau=False,
                 trainable_threshold=False, stateful=False, return_state=False,
                 implementation="auto", **kwargs):
        super().__init__(**kwargs)
        check_implementation(implementation)
        _params.check_options(alpha, surrogate, reset, detach_reset)
        for name, flag in (("trainable_tau", trainable_tau),
                           ("trainable_threshold", trainable_threshold),
                           ("stateful", stateful), ("return_state", return_state)):
            _check_flag(name, flag)
        for name, value in (("tau", tau), ("threshold", threshold)):
            if not _params.is_number(value) and np.ndim(value) != 1:
                raise ValueError(f"{name} must be a number or a vector of one value per "
                                 f"channel, got shape {np.shape(value)}")
        _params.to_decay(tau if _params.is_number(tau) else np.asarray(tau, np.float32), None)
        _params.to_threshold(threshold if _params.is_number(threshold)
                             else np.asarray(threshold, np.float32), None)
        # Numbers stay numbers (the seed's exact decay); arrays become lists.
        self.tau = _plain(tau)
        self.threshold = _plain(threshold)
        self.alpha = alpha
        self.surrogate = surrogate
        self.reset = reset
        self.detach_reset = detach_reset
        self.trainable_tau = trainable_tau
        self.trainable_threshold = trainable_threshold
        self.stateful = stateful
        self.return_state = return_state
        self.implementation = implementation
        # No XLA kernel for the fused op: compile(jit_compile=True) warns and
        # runs without XLA (Keras' own check, as for the cuDNN LSTM).
        self.supports_jit = implementation == "reference"
        self.tau_weight = self.threshold_weight = None
        self.membrane_state = self.spikes_state = None

    # ------------------------------------------------------------- build --

    def _check_param_length(self, channels, what):
        for name in ("tau", "threshold"):
            value = getattr(self, name)
            if not _params.is_number(value) and len(value) != channels:
                raise ValueError(
                    f"{type(self).__name__}: {name} has {len(value)} values, but {what} "
                    f"{channels}: give one number, or one value per channel")

    def build_neurons(self, channels, batch_size=None, state_shape=None, recurrent=False):
        """Adds the neurons' weights: tau and threshold [channels] when
        trainable, then the stateful membrane [batch_size, *state_shape] (and,
        for recurrent neurons, the last spikes, of the same shape)."""
        if self.trainable_tau:
            self.tau_weight = self.add_weight(
                shape=(channels,), initializer=keras.initializers.Constant(self.tau),
                constraint=MinValue(_params.TAU_MIN), trainable=True, name="tau",
                autocast=False)
        if self.trainable_threshold:
            self.threshold_weight = self.add_weight(
                shape=(channels,), initializer=keras.initializers.Constant(self.threshold),
                trainable=True, name="threshold", autocast=False)
        if self.stateful:
            name = type(self).__name__
            refuse_replicas(tf.distribute.get_strategy().num_replicas_in_sync, name)
            if batch_size is None:
                raise ValueError(
                    f"{name}(stateful=True) needs a fixed batch size: give one, e.g. "
                    "keras.Input(shape=(time, features), batch_size=32)")
            self.membrane_state = self.add_weight(
                shape=(batch_size, *state_shape), initializer="zeros", trainable=False,
                name="membrane_state", dtype="float32", autocast=False)
            if recurrent:
                self.spikes_state = self.add_weight(
                    shape=(batch_size, *state_shape), initializer="zeros", trainable=False,
                    name="spikes_state", dtype="float32", autocast=False)

    def reset_states(self):
        """Zeroes the membrane carried across calls (stateful=True)."""
        for state in (self.membrane_state, self.spikes_state):
            if state is not None:
                state.assign(keras.ops.zeros_like(state))

    reset_state = reset_states

    # -------------------------------------------------------------- call --

    def scan_backend(self):
        """"fused" or "reference": what this call runs (the reference under XLA)."""
        global _warned_xla
        if in_xla_context():
            if self.implementation != "reference" and not _warned_xla:
                _warned_xla = True
                _log.warning("LIF neurons under XLA: running the XLA-compilable reference scan "
                             "(the fused op has no XLA kernel).")
            return "reference"
        return resolve_implementation(self.implementation)

    def _param(self, value, weight, positions):
        """tau or threshold for the scan: a Python number as is (the seed's
        exact decay), else a float32 vector over the neurons (per channel,
        tiled over `positions`)."""
        if weight is None:
            if _params.is_number(value):
                return value
            value = tf.constant(value, tf.float32)
        else:
            value = tf.convert_to_tensor(weight)
        return value if positions == 1 else tf.tile(value, [positions])

    def initial_state_or_carried(self, initial_state):
        """The explicit initial state, else the stateful one (the membrane, or
        (membrane, spikes) for recurrent neurons), else None."""
        if self.membrane_state is None:
            return initial_state
        replica = tf.distribute.get_replica_context()
        refuse_replicas(replica.num_replicas_in_sync if replica is not None
                        else tf.distribute.get_strategy().num_replicas_in_sync,
                        type(self).__name__)
        if initial_state is None:
            initial_state = tf.convert_to_tensor(self.membrane_state)
            if self.spikes_state is not None:
                initial_state = (initial_state, tf.convert_to_tensor(self.spikes_state))
        return initial_state

    def carry_state(self, *final_state):
        """Keeps the final state for the next call (stateful layers)."""
        for variable, value in zip((self.membrane_state, self.spikes_state), final_state):
            if variable is not None:
                variable.assign(value)

    def neuron_scan(self, currents, initial_membrane=None, bias=None, positions=1,
                    recurrent_kernel=None, initial_spikes=None):
        """(spikes, final_membrane) of the neurons driven by `currents`
        [batch, time, neurons] (+ bias), from `initial_membrane`
        [batch, neurons] (None: zeros); neurons = positions · channels. With
        a recurrent_kernel [neurons, neurons], the spikes of t-1 feed back
        (from `initial_spikes` at t = 0), and (spikes, final_membrane,
        final_spikes)."""
        fused = self.scan_backend() == "fused"
        kwargs = dict(tau=self._param(self.tau, self.tau_weight, positions),
                      threshold=self._param(self.threshold, self.threshold_weight, positions),
                      alpha=self.alpha, surrogate=self.surrogate, reset=self.reset,
                      detach_reset=self.detach_reset, initial_membrane=initial_membrane,
                      return_state=True, bias=bias)
        if recurrent_kernel is None:
            return (ops.lif_scan if fused else reference.lif_scan)(currents, **kwargs)
        scan = recurrent.recurrent_lif_scan if fused else reference.recurrent_lif_scan
        return scan(currents, recurrent_kernel, initial_spikes=initial_spikes, **kwargs)

    def neuron_config(self):
        return dict(tau=self.tau, threshold=self.threshold, alpha=self.alpha,
                    surrogate=self.surrogate, reset=self.reset, detach_reset=self.detach_reset,
                    trainable_tau=self.trainable_tau,
                    trainable_threshold=self.trainable_threshold, stateful=self.stateful,
                    return_state=self.return_state, implementation=self.implementation)


@keras.saving.register_keras_serializable(package="fused_lif")
class LIF(NeuronLayer):
    """Leaky integrate-and-fire neurons after any synapse: input currents
    [batch, time, *features] (rank >= 3) -> spikes of the same shape and the
    currents' dtype. No synaptic weights: put a Dense or a convolution
    (`fused_lif.TimeFolded(keras.layers.Conv2D(...))`) before it.

    The features are flattened into neurons as they lie in memory, and the
    fused op (or the reference) runs on [batch, time, neurons]: spikes are
    bit-identical to `fused_lif.lif_scan` on the flattened currents. tau and
    threshold are numbers or one value per channel (the last axis); with
    trainable_tau / trainable_threshold they are weights [channels] whose
    gradients sum over batch, time and position. `initial_state=` and
    `return_state=True` carry the membrane [batch, *features] (float32).
    Arguments: see `NeuronLayer`.

        x = keras.Input((20, 28, 28, 1))                         # [batch, time, H, W, C]
        h = fused_lif.TimeFolded(keras.layers.Conv2D(16, 3))(x)  # synapses, time folded
        s = fused_lif.LIF(tau=[10.0] * 8 + [20.0] * 8)(h)        # per-channel tau
    """

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(
                "LIF expects input currents of shape [batch, time, *features] (rank >= 3), "
                f"got shape {input_shape}")
        features = input_shape[2:]
        if any(d is None for d in features):
            raise ValueError(f"LIF needs known feature dimensions (all axes after time), got "
                             f"shape {input_shape}")
        self._check_param_length(features[-1], "the channels (the input's last axis) are")
        self.build_neurons(features[-1], input_shape[0], features)

    def call(self, inputs, initial_state=None):
        x = tf.convert_to_tensor(inputs)
        if x.shape.rank is not None and x.shape.rank < 3:
            raise ValueError("LIF expects input currents of shape [batch, time, *features] "
                             f"(rank >= 3), got shape {x.shape}")
        features = x.shape[2:]
        neurons = math.prod(features)
        shape = tf.shape(x)
        currents = tf.reshape(x, tf.stack([shape[0], shape[1], neurons]))
        currents.set_shape([x.shape[0], x.shape[1], neurons])
        initial = self.initial_state_or_carried(initial_state)
        if initial is not None:
            initial = tf.convert_to_tensor(initial)
            expected = tf.TensorShape([x.shape[0], *features])
            if not initial.shape.is_compatible_with(expected):
                raise ValueError(f"LIF: initial_state must have shape [batch, *features] = "
                                 f"{expected}, got {initial.shape}")
            initial = tf.reshape(initial, tf.stack([shape[0], neurons]))
        spikes, final = self.neuron_scan(currents, initial, positions=neurons // features[-1])
        spikes = tf.reshape(spikes, shape)
        final = tf.reshape(final, tf.concat([shape[:1], shape[2:]], 0))
        self.carry_state(final)
        return (spikes, final) if self.return_state else spikes

    def compute_output_spec(self, inputs, initial_state=None):
        spikes = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if self.return_state:
            return spikes, keras.KerasTensor((inputs.shape[0], *inputs.shape[2:]),
                                             dtype="float32")
        return spikes

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.return_state:
            return input_shape, (input_shape[0], *input_shape[2:])
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(self.neuron_config())
        return config
