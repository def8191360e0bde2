"""The networks of `fused-lif train`: the seed notebook's dense SNN
(input -> LIFLayer(hidden) -> LIFLayer(outputs)) and a spiking CNN."""

import math

import keras

from .folding import TimeFolded
from .layer import LIFLayer
from .neurons import LIF

__all__ = ["create_snn_model", "create_conv_snn_model", "TRAINING_RULES"]

TRAINING_RULES = ("backprop", "dfa")


def create_snn_model(input_dim, hidden_units, output_units, time_steps, implementation="auto",
                     tau=20.0, threshold=1.0, training="backprop", feedback_initializer=None,
                     recurrent=False, **layer_kwargs):
    """The seed's 2-layer dense SNN: [batch, time_steps, input_dim] -> spikes
    [batch, time_steps, output_units]. `implementation` and `layer_kwargs` go
    to both LIFLayers: e.g. `spike_input=True` (or "auto") computes both
    layers' input currents with `fused_lif.spike_matmul`, their inputs (rate-
    coded spikes, hidden spikes) being binary.

    training: "backprop" (the seed's keras.Model) or "dfa": a
    `fused_lif.DFAModel` whose hidden layer is a DFA hidden layer
    (use_dfa=True, output_units=output_units, its `feedback` drawn by
    `feedback_initializer`) and whose output layer has is_output_layer=True.
    recurrent: the hidden layer is a LIFLayer(recurrent=True).
    """
    if training not in TRAINING_RULES:
        raise ValueError(f"training must be one of {TRAINING_RULES}, got {training!r}")
    dfa = training == "dfa"
    hidden_dfa = (dict(output_units=output_units, use_dfa=True, is_output_layer=False,
                       feedback_initializer=feedback_initializer) if dfa else {})
    output_dfa = dict(is_output_layer=True) if dfa else {}
    inputs = keras.Input(shape=(time_steps, input_dim), name="input")
    hidden = LIFLayer(units=hidden_units, tau=tau, threshold=threshold,
                      implementation=implementation, name="hidden_layer", recurrent=recurrent,
                      **hidden_dfa,
                      **layer_kwargs)(inputs)
    outputs = LIFLayer(units=output_units, tau=tau, threshold=threshold,
                       implementation=implementation, name="output_layer", **output_dfa,
                       **layer_kwargs)(hidden)
    if dfa:
        from .dfa import DFAModel

        return DFAModel(inputs=inputs, outputs=outputs, name="2layer_snn")
    return keras.Model(inputs=inputs, outputs=outputs, name="2layer_snn")


def create_conv_snn_model(image_shape, output_units, time_steps, implementation="auto",
                          tau=20.0, threshold=1.0, channels=(16, 32), kernel_size=3,
                          **readout_kwargs):
    """A spiking CNN on rate-coded images: [batch, time_steps, H·W·C] (the
    flattened spike trains the MLP takes) -> spikes [batch, time_steps,
    output_units].

    For each of `channels`: TimeFolded(Conv2D(c, kernel_size, "same")), LIF
    neurons, TimeFolded(MaxPooling2D(2)); then a spiking readout,
    LIFLayer(output_units) on the flattened pooled spikes. Neurons fire
    before the pooling, so that each max-pooled value is a spike (an OR over
    the window) and every synapse after the input sees binary spikes, as in
    the convolutional SNNs of snnTorch's and SpikingJelly's tutorials; "same"
    padding keeps 28x28 digits at 28, 14 and 7. The 784-128-10 MLP's 100k
    synapses become 4.8k convolution weights and a 15.7k-weight readout.
    `implementation`, `tau` and `threshold` go to every LIF neuron,
    `readout_kwargs` (e.g. spike_input) to the readout LIFLayer.
    """
    height, width, depth = image_shape
    neurons = dict(tau=tau, threshold=threshold, implementation=implementation)
    inputs = keras.Input(shape=(time_steps, height * width * depth), name="input")
    h = keras.layers.Reshape((time_steps, height, width, depth), name="images")(inputs)
    for i, c in enumerate(channels, 1):
        h = TimeFolded(keras.layers.Conv2D(c, kernel_size, padding="same"), name=f"conv{i}")(h)
        h = LIF(name=f"lif{i}", **neurons)(h)
        h = TimeFolded(keras.layers.MaxPooling2D(2), name=f"pool{i}")(h)
    features = math.prod(h.shape[2:])
    h = keras.layers.Reshape((time_steps, features), name="flatten")(h)
    outputs = LIFLayer(units=output_units, name="output_layer", **neurons, **readout_kwargs)(h)
    return keras.Model(inputs=inputs, outputs=outputs, name="conv_snn")
