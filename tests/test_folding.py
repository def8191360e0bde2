"""`fused_lif.TimeFolded`: a layer on [batch · time, ...], equal to Keras'
TimeDistributed, built once, serializable."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fused_lif

LAYERS = {
    "conv2d": lambda: keras.layers.Conv2D(5, 3, padding="valid"),
    "conv1d": lambda: keras.layers.Conv1D(4, 2),
    "max_pool": lambda: keras.layers.MaxPooling2D(2),
    "avg_pool": lambda: keras.layers.AveragePooling2D(2),
    "dense": lambda: keras.layers.Dense(7),
    "flatten": lambda: keras.layers.Flatten(),
}
INPUTS = {"conv2d": (3, 4, 8, 8, 2), "conv1d": (3, 4, 9, 3), "max_pool": (2, 5, 6, 6, 3),
          "avg_pool": (2, 5, 6, 6, 3), "dense": (3, 4, 6), "flatten": (2, 3, 4, 4, 2)}


@pytest.mark.parametrize("name", LAYERS)
def test_equals_time_distributed(name):
    inner = LAYERS[name]()
    x = tf.constant(np.random.default_rng(1).normal(size=INPUTS[name]).astype(np.float32))
    folded = fused_lif.TimeFolded(inner)
    distributed = keras.layers.TimeDistributed(inner)  # the same weights
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_folded, y_dist = folded(x), distributed(x)
        loss_f = tf.reduce_sum(y_folded * tf.cos(y_folded))
        loss_d = tf.reduce_sum(y_dist * tf.cos(y_dist))
    assert y_folded.shape == y_dist.shape
    np.testing.assert_allclose(y_folded.numpy(), y_dist.numpy(), rtol=1e-6, atol=1e-6)
    assert folded.compute_output_shape(x.shape) == tuple(y_dist.shape)
    for a, b in zip(tape.gradient(loss_f, [x] + inner.trainable_weights),
                    tape.gradient(loss_d, [x] + inner.trainable_weights)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def test_builds_its_layer_once_on_the_folded_shape():
    shapes = []

    class Recording(keras.layers.Dense):
        def build(self, input_shape):
            shapes.append(tuple(input_shape))
            super().build(input_shape)

    folded = fused_lif.TimeFolded(Recording(3))
    model = keras.Sequential([keras.Input((5, 4), batch_size=2), folded])
    model(np.ones((2, 5, 4), np.float32))
    tf.function(folded)(tf.ones((6, 7, 4)))
    assert shapes == [(10, 4)]
    assert len(model.weights) == 2


def test_unknown_batch_and_time_in_a_graph():
    folded = fused_lif.TimeFolded(keras.layers.Conv2D(2, 3))
    fn = tf.function(folded, input_signature=[tf.TensorSpec([None, None, 6, 6, 1])])
    y = fn(tf.ones((3, 4, 6, 6, 1)))
    assert y.shape == (3, 4, 4, 4, 2)
    assert fn.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 4, 4, 2]


def test_training_reaches_the_inner_layer():
    x = np.ones((4, 3, 10), np.float32)
    folded = fused_lif.TimeFolded(keras.layers.Dropout(0.5, seed=1))
    np.testing.assert_array_equal(folded(x, training=False).numpy(), x)
    assert np.any(folded(x, training=True).numpy() == 0)


def test_batch_normalization_normalises_over_batch_and_time():
    """As documented: folded BatchNormalization's statistics span batch, time
    and position (TimeDistributed's span batch and position per time step)."""
    x = np.random.default_rng(2).normal(size=(4, 3, 5, 2)).astype(np.float32)
    x[:, 1] += 10.0  # time step 1 has another mean
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    y = fused_lif.TimeFolded(bn)(x, training=True).numpy()
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-4)


def test_serialization_round_trip(tmp_path):
    inputs = keras.Input((4, 6, 6, 1))
    outputs = fused_lif.LIF()(fused_lif.TimeFolded(keras.layers.Conv2D(3, 3, name="c"))(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(3).normal(1.0, 1.0, (2, 4, 6, 6, 1)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    config = model.layers[1].get_config()
    assert config["layer"]["config"]["name"] == "c"


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"rank >= 3.*\(4, 6\)"):
        fused_lif.TimeFolded(keras.layers.Dense(2))(tf.zeros((4, 6)))
    with pytest.raises(ValueError, match="Keras layer"):
        fused_lif.TimeFolded(lambda x: x)
