"""Rate coding: static intensities in [0, 1] -> Bernoulli spike trains."""

import numpy as np
import tensorflow as tf

__all__ = ["rate_encode", "rate_encode_tf"]


def _check(time_steps, max_rate):
    if isinstance(time_steps, bool) or not isinstance(time_steps, (int, np.integer)) or time_steps < 0:
        raise ValueError(f"time_steps must be a non-negative integer, got {time_steps!r}")
    if not np.isfinite(max_rate) or max_rate < 0:
        raise ValueError(f"max_rate must be finite and >= 0, got {max_rate!r}")


def rate_encode(data, time_steps, max_rate=1.0, seed=None):
    """The seed's rate coding, in numpy.

    data [batch, features] is clipped to [0, 1]; each time step spikes where a
    uniform draw is < data * max_rate. Returns float32 [batch, time_steps,
    features]. `seed` (int or numpy Generator) makes it reproducible; None
    draws from numpy's global generator, as the seed notebook does.
    """
    _check(time_steps, max_rate)
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must have shape [batch, features], got {data.shape}")
    data = np.clip(data, 0, 1)
    shape = (data.shape[0], time_steps, data.shape[1])
    if seed is None:
        rand = np.random.rand(*shape)
    else:
        rand = np.random.default_rng(seed).random(shape)
    return (rand < data[:, np.newaxis, :] * max_rate).astype(np.float32)


def rate_encode_tf(data, time_steps, max_rate=1.0, seed=None):
    """The same coding in TensorFlow, for use inside tf.data pipelines.

    data [..., features] (e.g. one example [features] in `dataset.map`) ->
    [..., time_steps, features] float32. `seed` is a stateless seed: an int
    or a shape-[2] int tensor (e.g. derived from the example index), giving
    the same spikes on every epoch; None draws fresh spikes each call.
    """
    _check(time_steps, max_rate)
    data = tf.clip_by_value(tf.cast(data, tf.float32), 0.0, 1.0)
    data = tf.expand_dims(data, -2)  # [..., 1, features]
    shape = tf.concat([tf.shape(data)[:-2], [time_steps], tf.shape(data)[-1:]], 0)
    if seed is None:
        rand = tf.random.uniform(shape)
    else:
        seed = tf.convert_to_tensor(seed)
        if seed.shape.rank == 0:
            seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        rand = tf.random.stateless_uniform(shape, seed=seed)
    return tf.cast(rand < data * max_rate, tf.float32)
