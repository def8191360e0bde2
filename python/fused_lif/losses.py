"""The seed notebook's spike-count loss and accuracy, as Keras-serializable
functions: a model compiled with them saves and loads with only
`import fused_lif`."""

import keras
import tensorflow as tf

__all__ = ["spike_categorical_crossentropy", "spike_categorical_accuracy"]


@keras.saving.register_keras_serializable(package="fused_lif")
def spike_categorical_crossentropy(y_true, y_pred):
    """Cross-entropy of softmax(spike counts over time) against one-hot labels.

    y_pred: spikes [batch, time, classes]; y_true: one-hot [batch, classes].
    """
    spike_counts = tf.reduce_sum(y_pred, axis=1)  # [batch, classes]
    probs = tf.nn.softmax(spike_counts)
    return keras.losses.categorical_crossentropy(y_true, probs)


@keras.saving.register_keras_serializable(package="fused_lif")
def spike_categorical_accuracy(y_true, y_pred):
    """1.0 where the neuron with the most spikes is the labelled class.

    Ties go to the lowest index (tf.argmax), as in the seed.
    """
    spike_counts = tf.reduce_sum(y_pred, axis=1)
    matches = tf.equal(tf.argmax(spike_counts, axis=-1), tf.argmax(y_true, axis=-1))
    return tf.cast(matches, tf.float32)
