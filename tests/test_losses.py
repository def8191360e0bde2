"""fused_lif's spike-count loss and metric against the seed notebook's, and
their Keras serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fused_lif


# The seed notebook's Cell 7 definitions, verbatim (the oracles).
def seed_spike_categorical_crossentropy(y_true, y_pred):
    """
    Loss function that compares spike counts to target labels.
    Sum spikes over time and compute crossentropy.
    """
    # Sum spikes across time dimension to get firing rates
    spike_counts = tf.reduce_sum(y_pred, axis=1)  # Shape: [batch, output_units]

    # Apply softmax to convert spike counts to probabilities
    probs = tf.nn.softmax(spike_counts)  # Normalize to probability distribution

    # Compute categorical crossentropy loss
    loss = keras.losses.categorical_crossentropy(y_true, probs)

    return loss  # Return scalar loss value


def seed_spike_categorical_accuracy(y_true, y_pred):
    """
    Accuracy metric that sums spikes over time before comparing to labels.
    """
    # Sum spikes across time dimension to get total spike counts
    spike_counts = tf.reduce_sum(y_pred, axis=1)  # Shape: [batch, output_units]

    # Get predicted class (neuron with most spikes)
    y_pred_class = tf.argmax(spike_counts, axis=-1)  # Shape: [batch]

    # Get true class from one-hot labels
    y_true_class = tf.argmax(y_true, axis=-1)  # Shape: [batch]

    # Compare predictions to true labels
    matches = tf.equal(y_pred_class, y_true_class)  # Boolean tensor

    # Convert to float (1.0 for match, 0.0 for mismatch)
    accuracy = tf.cast(matches, tf.float32)

    return accuracy  # Return accuracy values


def _batch(seed=0, batch=64, time=12, classes=10, rate=0.3):
    rng = np.random.default_rng(seed)
    spikes = (rng.random((batch, time, classes)) < rate).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    # Make some predictions right: extra spikes on the labelled neuron.
    spikes[: batch // 2, :, :][np.arange(batch // 2), :, labels[: batch // 2]] = 1.0
    return tf.constant(np.eye(classes, dtype=np.float32)[labels]), tf.constant(spikes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_seed(seed):
    y_true, y_pred = _batch(seed)
    expected = seed_spike_categorical_crossentropy(y_true, y_pred).numpy()
    actual = fused_lif.spike_categorical_crossentropy(y_true, y_pred).numpy()
    assert actual.shape == (64,)
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    assert expected.std() > 0.1  # the batch exercises both right and wrong predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accuracy_matches_seed(seed):
    y_true, y_pred = _batch(seed)
    expected = seed_spike_categorical_accuracy(y_true, y_pred).numpy()
    actual = fused_lif.spike_categorical_accuracy(y_true, y_pred).numpy()
    np.testing.assert_array_equal(actual, expected)
    assert 0 < expected.mean() < 1


def test_accuracy_ties_and_silence_go_to_the_lowest_index_like_the_seed():
    y_pred = np.zeros((3, 4, 3), np.float32)  # sample 0: silent -> class 0
    y_pred[1, :2, 1] = y_pred[1, :2, 2] = 1.0  # sample 1: tie 1 vs 2 -> class 1
    y_pred[2, :, 2] = 1.0  # sample 2: class 2
    y_true = np.eye(3, dtype=np.float32)[[0, 2, 2]]
    actual = fused_lif.spike_categorical_accuracy(y_true, y_pred).numpy()
    np.testing.assert_array_equal(actual, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(actual, seed_spike_categorical_accuracy(y_true, y_pred))


def test_loss_gradient_matches_seed():
    y_true, y_pred = _batch(4)
    grads = []
    for fn in (seed_spike_categorical_crossentropy, fused_lif.spike_categorical_crossentropy):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = tf.reduce_mean(fn(y_true, y_pred))
        grads.append(tape.gradient(loss, y_pred).numpy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6, atol=1e-9)
    assert np.abs(grads[0]).max() > 0


def test_compiled_model_saves_and_loads_with_only_fused_lif(tmp_path):
    """Keras resolves the loss and metric by their registered names
    ('fused_lif>...'), without custom_objects."""
    keras.utils.set_random_seed(0)
    model = fused_lif.create_snn_model(16, 8, 3, 5, implementation="reference")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=fused_lif.spike_categorical_crossentropy,
                  metrics=[fused_lif.spike_categorical_accuracy])
    rng = np.random.default_rng(0)
    x = (rng.random((8, 5, 16)) < 0.5).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "x.keras"
    model.save(path)

    loaded = keras.models.load_model(path)
    assert loaded.loss is fused_lif.spike_categorical_crossentropy
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert set(after) == {"loss", "spike_categorical_accuracy"}
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-6)
    # The restored optimizer continues training.
    loaded.fit(x, y, epochs=1, batch_size=4, verbose=0)


@pytest.mark.parametrize("fn", [fused_lif.spike_categorical_crossentropy,
                                fused_lif.spike_categorical_accuracy])
def test_registered_names(fn):
    name = keras.saving.get_registered_name(fn)
    assert name == f"fused_lif>{fn.__name__}"
    assert keras.saving.get_registered_object(name) is fn
