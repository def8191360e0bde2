"""The seed notebook's network: input -> LIFLayer(hidden) -> LIFLayer(outputs)."""

import keras

from .layer import LIFLayer

__all__ = ["create_snn_model"]


def create_snn_model(input_dim, hidden_units, output_units, time_steps, implementation="auto",
                     tau=20.0, threshold=1.0, **layer_kwargs):
    """The seed's 2-layer dense SNN: [batch, time_steps, input_dim] -> spikes
    [batch, time_steps, output_units]. `implementation` and `layer_kwargs` go
    to both LIFLayers."""
    inputs = keras.Input(shape=(time_steps, input_dim), name="input")
    hidden = LIFLayer(units=hidden_units, tau=tau, threshold=threshold,
                      implementation=implementation, name="hidden_layer", **layer_kwargs)(inputs)
    outputs = LIFLayer(units=output_units, tau=tau, threshold=threshold,
                       implementation=implementation, name="output_layer", **layer_kwargs)(hidden)
    return keras.Model(inputs=inputs, outputs=outputs, name="2layer_snn")
