"""`TimeFolded`: any Keras layer on every time step at once.

A spiking network's synapses (Conv2D, pooling, Dense, BatchNormalization)
act on each time step alike. Keras 3's `TimeDistributed` runs them in a
Python loop over time steps, with a transpose and a stack; `TimeFolded`
folds time into the batch instead, one call of the layer on
[batch · time, ...], and unfolds its output back to [batch, time, ...]: no
loop, no copy (both reshapes are free), the same results.

Layers with batch statistics see batch and time together:
`TimeFolded(keras.layers.BatchNormalization())` normalises over batch, time
and position (SpikingJelly's multi-step mode does the same), where
`TimeDistributed` normalises each time step over the batch alone.
"""

import inspect

import keras
import tensorflow as tf

__all__ = ["TimeFolded"]


@keras.saving.register_keras_serializable(package="fused_lif")
class TimeFolded(keras.layers.Wrapper):
    """Runs `layer` on [batch · time, ...] and reshapes its output back to
    [batch, time, ...].

    Input [batch, time, *features] (rank >= 3) -> [batch, time, *outputs],
    where the layer maps [n, *features] to [n, *outputs]. The inner layer is
    built once, on [batch · time, *features]; `training` reaches it when its
    call takes it. Serializable: get_config holds the inner layer's config.

        x = keras.Input((20, 28, 28, 1))                           # [batch, time, H, W, C]
        h = fused_lif.TimeFolded(keras.layers.Conv2D(16, 5))(x)    # [batch, time, 24, 24, 16]
        s = fused_lif.LIF()(h)
    """

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"TimeFolded needs a Keras layer, got {layer!r}")
        super().__init__(layer, **kwargs)
        self._layer_takes_training = "training" in inspect.signature(layer.call).parameters

    @staticmethod
    def _folded(input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3:
            raise ValueError(
                f"TimeFolded expects inputs of shape [batch, time, *features] (rank >= 3), got "
                f"shape {input_shape}")
        batch, time = input_shape[:2]
        return (None if batch is None or time is None else batch * time, *input_shape[2:])

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(self._folded(input_shape))
        self.built = True

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape(self._folded(input_shape))
        return (input_shape[0], input_shape[1], *inner[1:])

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        self._folded(x.shape)  # checks the rank
        shape = tf.shape(x)
        folded = tf.reshape(x, tf.concat([[-1], shape[2:]], 0))
        folded.set_shape(self._folded(x.shape))
        kwargs = {"training": training} if self._layer_takes_training else {}
        y = self.layer(folded, **kwargs)
        out = tf.reshape(y, tf.concat([shape[:2], tf.shape(y)[1:]], 0))
        out.set_shape([x.shape[0], x.shape[1], *y.shape[1:]])
        return out
