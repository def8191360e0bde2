"""`fused_lif.LIF`: LIF neurons on currents of any shape, against the numpy
oracle, the flattened `lif_scan`, and the reference implementation."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import fused_lif
import oracle
from conftest import assert_close_scaled, make_currents, run_python

BACKENDS = ["fused", "reference"]


def flat(x):
    """[batch, time, *features] -> [batch, time, neurons]."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def per_neuron(param, shape):
    """A per-channel parameter as the oracle's per-neuron vector (channels last)."""
    if np.ndim(param) == 0:
        return param
    return np.tile(np.asarray(param, np.float32), int(np.prod(shape[2:-1], dtype=np.int64)))


SHAPES = [(3, 7, 5), (2, 6, 4, 3), (2, 5, 3, 4, 3)]  # rank 3, 4 and 5


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per_channel"])
@pytest.mark.parametrize("implementation", BACKENDS)
def test_forward_matches_oracle(shape, per_channel, implementation):
    channels = shape[-1]
    tau = list(np.linspace(2.0, 30.0, channels)) if per_channel else 5.0
    threshold = list(np.linspace(0.4, 1.2, channels)) if per_channel else 0.7
    x = make_currents(shape, seed=len(shape))
    layer = fused_lif.LIF(tau=tau, threshold=threshold, return_state=True,
                          implementation=implementation)
    spikes, final = layer(x)
    assert spikes.shape == shape and final.shape == (shape[0], *shape[2:])
    want_s, _, want_v = oracle.forward(flat(x), per_neuron(tau, shape) if per_channel else tau,
                                       per_neuron(threshold, shape))
    np.testing.assert_array_equal(flat(spikes.numpy()), want_s)
    np.testing.assert_array_equal(final.numpy().reshape(shape[0], -1), want_v)


OPTIONS = list(itertools.product(["fast_sigmoid", "atan", "sigmoid", "triangle"],
                                 ["zero", "subtract", "none"], [False, True]))


@pytest.mark.parametrize("surrogate,reset,detach_reset", OPTIONS)
def test_gradients_match_oracle_with_per_channel_parameters(surrogate, reset, detach_reset):
    """Trainable per-channel tau and threshold on [batch, time, H, W, C]: the
    currents' gradient is the oracle's, and each parameter's gradient is the
    oracle's per-neuron one summed over batch and position (dL/dtau =
    dL/ddecay / tau²)."""
    shape = (2, 6, 3, 2, 4)
    tau = [2.0, 5.0, 10.0, 25.0]
    threshold = [0.5, 0.8, 1.0, 1.3]
    layer = fused_lif.LIF(tau=tau, threshold=threshold, trainable_tau=True,
                          trainable_threshold=True, surrogate=surrogate, reset=reset,
                          detach_reset=detach_reset, alpha=4.0)
    x = tf.constant(make_currents(shape, seed=3))
    weights = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * weights)
    g_x, g_tau, g_th = tape.gradient(loss, [x, layer.tau_weight, layer.threshold_weight])
    tau_n, th_n = per_neuron(tau, shape), per_neuron(threshold, shape)
    g_cur, g_decay, g_thr, _ = oracle.backward(flat(weights), flat(x.numpy()), tau_n, th_n,
                                               alpha=4.0, surrogate_kind=surrogate, reset=reset,
                                               detach_reset=detach_reset)
    assert_close_scaled(flat(g_x.numpy()), g_cur, 1e-5, "currents")
    channels = shape[-1]
    want_tau = (g_decay.sum(0).reshape(-1, channels).sum(0)
                / np.asarray(tau, np.float64) ** 2)
    want_th = g_thr.sum(0).reshape(-1, channels).sum(0)
    assert_close_scaled(g_tau.numpy(), want_tau, 1e-4, "tau")
    assert_close_scaled(g_th.numpy(), want_th, 1e-4, "threshold")
    assert g_tau.shape == (channels,) and g_th.shape == (channels,)


@pytest.mark.parametrize("surrogate,reset", [("fast_sigmoid", "zero"), ("atan", "subtract"),
                                             ("triangle", "none")])
def test_fused_equals_reference_with_per_channel_gradients(surrogate, reset):
    shape = (3, 8, 4, 4, 6)
    x = tf.constant(make_currents(shape, seed=11))
    kwargs = dict(tau=list(np.linspace(2.0, 20.0, 6)), threshold=0.8, trainable_tau=True,
                  trainable_threshold=True, surrogate=surrogate, reset=reset,
                  return_state=True)
    results = []
    for implementation in BACKENDS:
        layer = fused_lif.LIF(implementation=implementation, **kwargs)
        v0 = tf.constant(np.random.default_rng(5).normal(0, 0.5, (3, 4, 4, 6)).astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch([x, v0])
            spikes, final = layer(x, initial_state=v0)
            loss = tf.reduce_sum(spikes * tf.sin(x)) + tf.reduce_sum(final ** 2)
        grads = tape.gradient(loss, [x, v0, layer.tau_weight, layer.threshold_weight])
        results.append((spikes.numpy(), final.numpy(), [g.numpy() for g in grads]))
    (s_f, v_f, g_f), (s_r, v_r, g_r) = results
    np.testing.assert_array_equal(s_f, s_r)
    np.testing.assert_array_equal(v_f, v_r)
    for name, a, b in zip(["currents", "initial", "tau", "threshold"], g_f, g_r):
        assert np.any(b != 0), name
        assert_close_scaled(a, b, 2e-5, name)


def test_spikes_equal_lif_scan_on_flattened_features():
    shape = (4, 9, 5, 5, 8)
    x = make_currents(shape, seed=21)
    tau = list(np.linspace(3.0, 40.0, 8))
    spikes = fused_lif.LIF(tau=tau, threshold=0.9, reset="subtract")(x).numpy()
    want = fused_lif.lif_scan(flat(x), tau=tf.constant(per_neuron(tau, shape)), threshold=0.9,
                              reset="subtract").numpy()
    np.testing.assert_array_equal(flat(spikes), want)


@pytest.mark.parametrize("implementation", BACKENDS)
def test_stateful_chunks_equal_one_run_in_graph_mode(implementation):
    shape = (2, 30, 3, 3, 2)
    x = make_currents(shape, seed=8, mean=0.2)
    whole = fused_lif.LIF(tau=[4.0, 9.0], implementation=implementation)(x).numpy()
    layer = fused_lif.LIF(tau=[4.0, 9.0], stateful=True, implementation=implementation)
    step = tf.function(layer)
    parts = [step(x[:, :12]).numpy(), step(x[:, 12:19]).numpy(), step(x[:, 19:]).numpy()]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    assert layer.membrane_state.shape == (2, 3, 3, 2)
    layer.reset_states()
    np.testing.assert_array_equal(step(x[:, :12]).numpy(), whole[:, :12])


@pytest.mark.parametrize("implementation", BACKENDS)
def test_return_state_chunks_equal_one_run(implementation):
    x = make_currents((3, 20, 4, 2), seed=9)
    layer = fused_lif.LIF(tau=6.0, return_state=True, implementation=implementation)
    whole, final = layer(x)
    first, mid = layer(x[:, :7])
    second, final2 = layer(x[:, 7:], initial_state=mid)
    np.testing.assert_array_equal(np.concatenate([first, second], 1), whole.numpy())
    np.testing.assert_array_equal(final2.numpy(), final.numpy())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_currents(dtype):
    shape = (2, 6, 3, 4)
    x = tf.cast(make_currents(shape, seed=12), dtype)
    spikes = fused_lif.LIF(tau=[2.0, 4.0, 8.0, 16.0], dtype=dtype)(x)
    assert spikes.dtype == dtype
    want = fused_lif.lif_scan(tf.reshape(x, [2, 6, 12]),
                              tau=tf.constant(per_neuron([2.0, 4.0, 8.0, 16.0], shape)))
    np.testing.assert_array_equal(tf.reshape(spikes, [2, 6, 12]).numpy(), want.numpy())
    reference = fused_lif.LIF(tau=[2.0, 4.0, 8.0, 16.0], dtype=dtype,
                              implementation="reference")(x)
    np.testing.assert_array_equal(spikes.numpy(), reference.numpy())


def test_mixed_precision_policy_spiking_cnn_trains():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = conv_model(trainable_tau=True)
        assert model.layers[2].compute_dtype == "float16"
        x, y = conv_data()
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=fused_lif.spike_categorical_crossentropy)
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert model.layers[2].tau_weight.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_under_xla_runs_the_reference():
    layer = fused_lif.LIF(tau=[3.0, 7.0])
    x = tf.constant(make_currents((2, 9, 3, 2), seed=13))
    eager = layer(x).numpy()
    np.testing.assert_array_equal(tf.function(layer, jit_compile=True)(x).numpy(), eager)


# --------------------------------------------------------------- errors ----

@pytest.mark.parametrize("kwargs,error,match", [
    (dict(tau=0.5), ValueError, "tau"),
    (dict(tau=[2.0, 0.9]), ValueError, "tau"),
    (dict(tau=float("nan")), ValueError, "tau"),
    (dict(threshold=float("nan")), ValueError, "threshold"),
    (dict(tau=[[2.0, 3.0]]), ValueError, "tau"),
    (dict(surrogate="relu"), ValueError, "surrogate"),
    (dict(reset="hard"), ValueError, "reset"),
    (dict(alpha=-1.0), ValueError, "alpha"),
    (dict(implementation="cuda"), ValueError, "implementation"),
    (dict(stateful="yes"), TypeError, "stateful"),
    (dict(trainable_tau=1), TypeError, "trainable_tau"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fused_lif.LIF(**kwargs)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"rank >= 3.*\(2, 5\)"):
        fused_lif.LIF()(tf.zeros((2, 5)))
    with pytest.raises(ValueError, match="tau has 2 values, but the channels .* are 3"):
        fused_lif.LIF(tau=[2.0, 3.0])(tf.zeros((2, 5, 4, 3)))
    with pytest.raises(ValueError, match="threshold has 4 values, but the channels .* are 3"):
        fused_lif.LIF(threshold=[1.0] * 4)(tf.zeros((2, 5, 3)))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16.*int32"):
        fused_lif.LIF()(tf.zeros((2, 5, 3), tf.int32))
    with pytest.raises(ValueError, match=r"initial_state must have shape \[batch, \*features\]"):
        fused_lif.LIF()(tf.zeros((2, 5, 4, 3)), initial_state=tf.zeros((2, 12)))
    with pytest.raises(ValueError, match="batch size"):
        keras.Sequential([keras.Input((5, 4, 3)), fused_lif.LIF(stateful=True)])


# ---------------------------------------------------- a spiking CNN ----

def conv_model(implementation="auto", **lif_kwargs):
    inputs = keras.Input((6, 8, 8, 1))
    h = fused_lif.TimeFolded(keras.layers.Conv2D(4, 3, padding="same"))(inputs)
    h = fused_lif.LIF(tau=[5.0, 10.0, 15.0, 20.0], threshold=0.5, implementation=implementation,
                      **lif_kwargs)(h)
    h = fused_lif.TimeFolded(keras.layers.AveragePooling2D(2))(h)
    h = keras.layers.Reshape((6, 4 * 4 * 4))(h)
    outputs = fused_lif.LIFLayer(3, implementation=implementation, threshold=0.5)(h)
    return keras.Model(inputs, outputs)


def conv_data(n=32):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = np.zeros((n, 8, 8, 1), np.float32)
    for c in range(3):
        images[labels == c, :, c * 2:c * 2 + 3] = 1.0
    x = (rng.random((n, 6, 8, 8, 1)) < 0.7 * images[:, None]).astype(np.float32)
    return x, keras.utils.to_categorical(labels, 3)


def test_spiking_cnn_fits_saves_and_reloads_in_fresh_process(tmp_path):
    model = conv_model(trainable_tau=True)
    x, y = conv_data()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=fused_lif.spike_categorical_crossentropy,
                  metrics=[fused_lif.spike_categorical_accuracy])
    history = model.fit(x, y, batch_size=8, epochs=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    model.save(tmp_path / "cnn.keras")
    run_python(f"""
        import numpy as np, keras
        import fused_lif
        m = keras.models.load_model({str(tmp_path / 'cnn.keras')!r})
        assert [type(l).__name__ for l in m.layers[1:3]] == ["TimeFolded", "LIF"]
        np.testing.assert_array_equal(m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0),
                                      np.load({str(tmp_path / 'y.npy')!r}))
    """)


def test_spiking_cnn_fused_equals_reference():
    x, y = conv_data(8)
    fused, ref = conv_model("fused", trainable_threshold=True), conv_model(
        "reference", trainable_threshold=True)
    ref.set_weights(fused.get_weights())
    grads = []
    for model in (fused, ref):
        with tf.GradientTape() as tape:
            loss = fused_lif.spike_categorical_crossentropy(y, model(x))
        grads.append(tape.gradient(loss, model.trainable_weights))
    np.testing.assert_array_equal(fused(x).numpy(), ref(x).numpy())
    for a, b in zip(*grads):
        assert_close_scaled(a.numpy(), b.numpy(), 2e-5)


def test_get_config_round_trip():
    layer = fused_lif.LIF(tau=[2.0, 3.0], threshold=0.5, surrogate="atan", reset="subtract",
                          trainable_tau=True, return_state=True, implementation="reference")
    config = layer.get_config()
    assert fused_lif.LIF.from_config(config).get_config() == config
