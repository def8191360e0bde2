"""The seed notebook's network: input -> LIFLayer(hidden) -> LIFLayer(outputs)."""

import keras

from .layer import LIFLayer

__all__ = ["create_snn_model", "TRAINING_RULES"]

TRAINING_RULES = ("backprop", "dfa")


def create_snn_model(input_dim, hidden_units, output_units, time_steps, implementation="auto",
                     tau=20.0, threshold=1.0, training="backprop", feedback_initializer=None,
                     **layer_kwargs):
    """The seed's 2-layer dense SNN: [batch, time_steps, input_dim] -> spikes
    [batch, time_steps, output_units]. `implementation` and `layer_kwargs` go
    to both LIFLayers: e.g. `spike_input=True` (or "auto") computes both
    layers' input currents with `fused_lif.spike_matmul`, their inputs (rate-
    coded spikes, hidden spikes) being binary.

    training: "backprop" (the seed's keras.Model) or "dfa": a
    `fused_lif.DFAModel` whose hidden layer is a DFA hidden layer
    (use_dfa=True, output_units=output_units, its `feedback` drawn by
    `feedback_initializer`) and whose output layer has is_output_layer=True.
    """
    if training not in TRAINING_RULES:
        raise ValueError(f"training must be one of {TRAINING_RULES}, got {training!r}")
    dfa = training == "dfa"
    hidden_dfa = (dict(output_units=output_units, use_dfa=True, is_output_layer=False,
                       feedback_initializer=feedback_initializer) if dfa else {})
    output_dfa = dict(is_output_layer=True) if dfa else {}
    inputs = keras.Input(shape=(time_steps, input_dim), name="input")
    hidden = LIFLayer(units=hidden_units, tau=tau, threshold=threshold,
                      implementation=implementation, name="hidden_layer", **hidden_dfa,
                      **layer_kwargs)(inputs)
    outputs = LIFLayer(units=output_units, tau=tau, threshold=threshold,
                       implementation=implementation, name="output_layer", **output_dfa,
                       **layer_kwargs)(hidden)
    if dfa:
        from .dfa import DFAModel

        return DFAModel(inputs=inputs, outputs=outputs, name="2layer_snn")
    return keras.Model(inputs=inputs, outputs=outputs, name="2layer_snn")
