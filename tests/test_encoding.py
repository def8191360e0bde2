"""fused_lif.rate_encode / rate_encode_tf against the seed notebook's rate coding."""

import numpy as np
import pytest
import tensorflow as tf

import fused_lif


# The seed notebook's Cell 4, verbatim (the oracle).
def seed_rate_encode(data, time_steps, max_rate=1.0):
    """
    Convert static data to spike trains using rate coding.
    Higher input values produce more spikes over time.

    Args:
        data: Input data of shape [batch, features]
        time_steps: Number of time steps to encode
        max_rate: Maximum firing rate

    Returns:
        Spike trains of shape [batch, time_steps, features]
    """
    # Normalize input data to [0, 1] range
    data = np.clip(data, 0, 1)  # Ensure values are between 0 and 1
    #clip just sets the max as 1 and the min as 0

    # Generate random numbers for probabilistic spike generation
    rand = np.random.rand(data.shape[0], time_steps, data.shape[1])

    # Create spikes where random value < input value * max_rate
    # Higher input values = higher probability of spikes
    spikes = (rand < data[:, np.newaxis, :] * max_rate).astype(np.float32)

    return spikes  # Return encoded spike trains


@pytest.fixture
def intensities():
    """[6, 50]: pixels in [0, 1] plus out-of-range values the coding must clip."""
    data = np.random.default_rng(3).random((6, 50))
    data[0, :5] = [-0.5, 1.5, 0.0, 1.0, 7.0]
    return data


@pytest.mark.parametrize("max_rate", [1.0, 0.8, 0.3])
def test_numpy_matches_seed_under_the_same_global_state(intensities, max_rate):
    np.random.seed(42)
    expected = seed_rate_encode(intensities, 7, max_rate=max_rate)
    np.random.seed(42)
    actual = fused_lif.rate_encode(intensities, 7, max_rate=max_rate)
    assert actual.dtype == np.float32 and actual.shape == (6, 7, 50)
    np.testing.assert_array_equal(actual, expected)


def test_numpy_seed_is_reproducible_and_leaves_global_state_alone(intensities):
    np.random.seed(0)
    a = fused_lif.rate_encode(intensities, 9, 0.8, seed=5)
    after = np.random.rand()
    np.random.seed(0)
    b = fused_lif.rate_encode(intensities, 9, 0.8, seed=5)
    assert np.random.rand() == after
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fused_lif.rate_encode(intensities, 9, 0.8, seed=6))
    gen = np.random.default_rng(5)
    np.testing.assert_array_equal(a, fused_lif.rate_encode(intensities, 9, 0.8, seed=gen))


def _check_rates(spikes, data, max_rate, time_axis=1):
    """Spike frequency per feature ~ clip(data) * max_rate; never above it."""
    expected = np.clip(data, 0, 1) * max_rate
    rate = np.asarray(spikes).mean(axis=time_axis)
    # Binomial standard error over the time axis, 5 sigma.
    n = np.asarray(spikes).shape[time_axis]
    tol = 5 * np.sqrt(np.maximum(expected * (1 - expected), 1e-4) / n)
    assert np.all(np.abs(rate - expected) <= tol)
    assert set(np.unique(spikes)) <= {0.0, 1.0}
    # Zero intensity never spikes.
    assert np.all(rate[expected == 0] == 0)
    assert np.all(rate[expected >= 0.5] > 0)


@pytest.mark.parametrize("encode", ["numpy", "tf"])
def test_rates_follow_intensity(encode, max_rate=0.8):
    data = np.array([[0.0, 0.1, 0.5, 0.9, 1.0, 2.0, -1.0]])
    if encode == "numpy":
        spikes = fused_lif.rate_encode(data, 4000, max_rate, seed=1)
    else:
        spikes = fused_lif.rate_encode_tf(data, 4000, max_rate, seed=1).numpy()
    assert spikes.shape == (1, 4000, 7) and spikes.dtype == np.float32
    _check_rates(spikes, data, max_rate)


def test_tf_seeded_is_reproducible_and_seeds_differ():
    data = tf.fill([3, 20], 0.5)
    a = fused_lif.rate_encode_tf(data, 10, seed=7)
    b = fused_lif.rate_encode_tf(data, 10, seed=7)
    c = fused_lif.rate_encode_tf(data, 10, seed=[7, 1])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    unseeded = [fused_lif.rate_encode_tf(data, 10).numpy() for _ in range(2)]
    assert not np.array_equal(*unseeded)


def test_tf_single_example_inside_tf_data():
    """[features] -> [time, features] per example, in dataset.map, batched after."""
    images = np.random.default_rng(0).random((10, 30)).astype(np.float32)
    images[:, :10] = 0.0
    ds = tf.data.Dataset.from_tensor_slices(images).map(
        lambda x: fused_lif.rate_encode_tf(x, 5, 0.8)).batch(4)
    batches = list(ds)
    assert [b.shape.as_list() for b in batches] == [[4, 5, 30], [4, 5, 30], [2, 5, 30]]
    stacked = np.concatenate([b.numpy() for b in batches])
    assert np.all(stacked[:, :, :10] == 0)
    assert stacked[:, :, 10:].mean() > 0.2


def test_tf_in_tf_function_with_unknown_batch():
    fn = tf.function(lambda x: fused_lif.rate_encode_tf(x, 6, 1.0, seed=3),
                     input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    out = fn(tf.ones([2, 4]))
    np.testing.assert_array_equal(out, np.ones((2, 6, 4), np.float32))


@pytest.mark.parametrize("encode", [fused_lif.rate_encode, fused_lif.rate_encode_tf])
@pytest.mark.parametrize("bad", [{"time_steps": -1}, {"time_steps": 2.5},
                                 {"max_rate": -0.1}, {"max_rate": float("nan")}])
def test_bad_arguments_are_rejected(encode, bad):
    kwargs = {"time_steps": 3, "max_rate": 1.0, **bad}
    with pytest.raises(ValueError):
        encode(np.zeros((2, 3), np.float32), **kwargs)


def test_numpy_needs_batch_of_vectors():
    with pytest.raises(ValueError, match="batch, features"):
        fused_lif.rate_encode(np.zeros((2, 3, 4)), 3)
