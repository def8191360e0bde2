"""`LIFLayer`: the seed notebook's Keras layer, with the fused op inside: a
dense projection feeding the LIF neuron core (`fused_lif.neurons`).

A drop-in replacement: the seed's constructor and weights ([w, b], in that
order), so a seed model or checkpoint switches by changing one import.
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

from . import dfa
from .neurons import MinValue, NeuronLayer
from .spikes import check_spike_input, input_currents

__all__ = ["LIFLayer", "MinValue"]


@keras.saving.register_keras_serializable(package="fused_lif")
class LIFLayer(NeuronLayer):
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
        1 - 1/tau, in [0, 1). A number or one value per neuron.
      threshold: spike threshold, a number or one value per neuron.
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
        matmul (see `fused_lif.spikes.input_currents`). float32, float16 and
        bfloat16 (sums in float32). The sparse sums run in index order, so
        the currents equal the dense ones to float rounding, not bit for bit:
        a spike can flip where a current sits at the threshold to the last
        bit. Under XLA the dense matmul is used.
      stateful: carry the membrane across calls (needs a fixed batch size);
        `reset_states()` zeroes it. Not under a tf.distribute strategy with
        several replicas (refused when built or called there): carry the
        state explicitly with `return_state=True` and `initial_state=`.
      recurrent: if True, each neuron also receives the layer's own spikes
        of the previous step through a trainable `recurrent_kernel`
        [units, units] (rows presynaptic, as Keras' SimpleRNN):
        I[t] = x[t] @ w + b + s[t-1] @ recurrent_kernel, s[-1] = 0. The
        recurrent sum runs inside the fused kernel (a sum of the rows of the
        neurons that spiked); gradients are BPTT through it. The state is
        then (membrane, spikes), both [batch, units] float32: return_state
        returns (spikes, final_membrane, final_spikes), initial_state takes
        the pair (membrane, spikes), and stateful carries both.
      recurrent_initializer: of recurrent_kernel; default "orthogonal", as
        Keras' SimpleRNN: the fed-back spike vector keeps its norm, so the
        recurrent current neither grows nor fades with the layer's width.

    Weights: [w (features, units), b (units,)], then recurrent_kernel
    (units, units) when recurrent, tau and threshold (units,) when trainable,
    then the stateful membrane (and last spikes, when recurrent).
    """

    def __init__(self, units, output_units=None, tau=20.0, threshold=1.0, use_dfa=True,
                 is_output_layer=False, implementation="auto", alpha=10.0,
                 surrogate="fast_sigmoid", reset="zero", detach_reset=False,
                 trainable_tau=False, trainable_threshold=False, return_state=False,
                 stateful=False, feedback_initializer=None, spike_input=False, recurrent=False,
                 recurrent_initializer="orthogonal", **kwargs):
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units <= 0:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        super().__init__(tau=tau, threshold=threshold, alpha=alpha, surrogate=surrogate,
                         reset=reset, detach_reset=detach_reset, trainable_tau=trainable_tau,
                         trainable_threshold=trainable_threshold, stateful=stateful,
                         return_state=return_state, implementation=implementation, **kwargs)
        self._check_param_length(units, "the layer's units are")
        check_spike_input(spike_input)
        if output_units is not None and (isinstance(output_units, bool) or not isinstance(
                output_units, numbers.Integral) or output_units <= 0):
            raise ValueError(f"output_units must be a positive integer or None, got "
                             f"{output_units!r}")
        for name, flag in (("use_dfa", use_dfa), ("is_output_layer", is_output_layer)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.units = int(units)
        self.output_units = None if output_units is None else int(output_units)
        self.use_dfa = use_dfa
        self.is_output_layer = is_output_layer
        self.spike_input = spike_input
        self.feedback_initializer = (None if feedback_initializer is None
                                     else keras.initializers.get(feedback_initializer))
        self.feedback = None
        if not isinstance(recurrent, (bool, np.bool_)):
            raise TypeError(f"recurrent must be a bool, got {recurrent!r}")
        self.recurrent = bool(recurrent)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.recurrent_kernel = None

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
        if self.recurrent:
            self.recurrent_kernel = self.add_weight(
                shape=(self.units, self.units), initializer=self.recurrent_initializer,
                trainable=True, name="recurrent_kernel")
        self.build_neurons(self.units, input_shape[0], (self.units,), recurrent=self.recurrent)
        if self.is_dfa_hidden:
            self.feedback = dfa.add_feedback_weight(self)

    @property
    def is_dfa_hidden(self):
        """A DFA hidden layer: use_dfa, output_units set, not the output layer."""
        return bool(self.use_dfa) and self.output_units is not None and not self.is_output_layer

    def call(self, inputs, initial_state=None, training=None):
        x = dfa.layer_input(self, tf.convert_to_tensor(inputs), training)
        features = self.w.shape[0]
        shape = tf.shape(x)
        # One GEMM over all time steps: [batch * time, features] @ [features, units].
        currents = input_currents(tf.reshape(x, [-1, features]), tf.cast(self.w, x.dtype),
                                  self.spike_input)
        currents = tf.reshape(currents, tf.stack([shape[0], shape[1], self.units]))
        currents.set_shape([x.shape[0], x.shape[1], self.units])
        initial_state = self.initial_state_or_carried(initial_state)
        bias = tf.cast(self.b, x.dtype)
        if self.recurrent:
            membrane, last_spikes = self._recurrent_state(initial_state)
            state = self.neuron_scan(currents, membrane, bias=bias,
                                     recurrent_kernel=self.recurrent_kernel,
                                     initial_spikes=last_spikes)
        else:
            state = self.neuron_scan(currents, initial_state, bias=bias)
        spikes, final_state = state[0], state[1:]
        self.carry_state(*final_state)
        dfa.record_spikes(self, spikes)
        return (spikes, *final_state) if self.return_state else spikes

    @staticmethod
    def _recurrent_state(initial_state):
        """(membrane, spikes) of a recurrent layer's initial state: None, or a
        pair (either may be None: zeros)."""
        if initial_state is None:
            return None, None
        if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2:
            raise ValueError(
                "LIFLayer(recurrent=True): initial_state must be a pair (membrane, spikes), "
                "each [batch, units] (the last two results of return_state=True), got "
                f"{type(initial_state).__name__}")
        return initial_state

    def compute_output_spec(self, inputs, initial_state=None, training=None):
        # The final state is float32 whatever the compute dtype.
        shape = self.compute_output_shape(inputs.shape)
        if self.return_state:
            return (keras.KerasTensor(shape[0], dtype=self.compute_dtype),
                    *(keras.KerasTensor(s, dtype="float32") for s in shape[1:]))
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        spikes = (input_shape[0], input_shape[1], self.units)
        if not self.return_state:
            return spikes
        state = (input_shape[0], self.units)
        return (spikes, state, state) if self.recurrent else (spikes, state)

    def get_config(self):
        config = super().get_config()
        config.update(self.neuron_config())
        config.update(
            units=self.units, output_units=self.output_units, use_dfa=self.use_dfa,
            is_output_layer=self.is_output_layer, spike_input=self.spike_input,
            recurrent=self.recurrent,
            recurrent_initializer=keras.initializers.serialize(self.recurrent_initializer),
            feedback_initializer=(None if self.feedback_initializer is None else
                                  keras.initializers.serialize(self.feedback_initializer)))
        return config
