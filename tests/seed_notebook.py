"""The seed notebook's spike_function and LIFLayer, copied verbatim (comments
trimmed): the oracle for "a seed model switches by changing one import"."""

import keras
import tensorflow as tf


@tf.custom_gradient
def spike_function(v, threshold):
    spikes = tf.cast(tf.greater(v, threshold), tf.float32)

    def grad(dy):
        alpha = 10.0
        v_shifted = v - threshold
        surrogate_grad = 1.0 / (1.0 + tf.abs(alpha * v_shifted)) ** 2
        dv = dy * surrogate_grad
        return dv, None

    return spikes, grad


class LIFLayer(keras.layers.Layer):
    def __init__(self, units, output_units=None, tau=20.0, threshold=1.0, use_dfa=True,
                 is_output_layer=False, **kwargs):
        super(LIFLayer, self).__init__(**kwargs)
        self.units = units
        self.output_units = output_units
        self.tau = tau
        self.threshold = threshold
        self.use_dfa = use_dfa
        self.is_output_layer = is_output_layer

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units),
                                 initializer='glorot_uniform', trainable=True, name='weights')
        self.b = self.add_weight(shape=(self.units,), initializer='zeros', trainable=True,
                                 name='bias')

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.units)

    def call(self, inputs, training=None):
        batch_size = tf.shape(inputs)[0]
        time_steps = tf.shape(inputs)[1]
        v = tf.zeros((batch_size, self.units))
        spikes_array = tf.TensorArray(dtype=tf.float32, size=time_steps, dynamic_size=False)

        def time_step(t, v, spikes_array):
            x_t = inputs[:, t, :]
            i_in = tf.matmul(x_t, self.w) + self.b
            v = v * (1.0 - 1.0 / self.tau) + i_in
            spike = spike_function(v, self.threshold)
            v = v * (1.0 - spike)
            spikes_array = spikes_array.write(t, spike)
            return t + 1, v, spikes_array

        _, _, spikes_array = tf.while_loop(
            cond=lambda t, *_: t < time_steps, body=time_step, loop_vars=[0, v, spikes_array])
        output = spikes_array.stack()
        output = tf.transpose(output, [1, 0, 2])
        return output


def create_snn_model(input_dim, hidden_units, output_units, time_steps, layer_cls=LIFLayer):
    inputs = keras.Input(shape=(time_steps, input_dim), name='input')
    hidden = layer_cls(units=hidden_units, tau=20.0, threshold=1.0, name='hidden_layer')(inputs)
    outputs = layer_cls(units=output_units, tau=20.0, threshold=1.0, name='output_layer')(hidden)
    return keras.Model(inputs=inputs, outputs=outputs, name='2layer_snn')
