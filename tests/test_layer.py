"""LIFLayer: a drop-in for the seed's layer, and a Keras citizen."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fused_lif
from fused_lif import LIFLayer

import seed_notebook
from conftest import assert_close_scaled, run_python


def spike_input(shape, seed=0, rate=0.3):
    return (np.random.default_rng(seed).random(shape) < rate).astype(np.float32)


def seed_and_fused_models(implementation, input_dim=784, time_steps=20):
    seed = seed_notebook.create_snn_model(input_dim, 128, 10, time_steps)
    ours = fused_lif.create_snn_model(input_dim, 128, 10, time_steps,
                                      implementation=implementation)
    ours.set_weights(seed.get_weights())
    return seed, ours


@pytest.mark.parametrize("implementation", ["fused", "reference"])
def test_seed_weights_give_seed_outputs_and_gradients(implementation):
    seed, ours = seed_and_fused_models(implementation)
    x = tf.constant(spike_input((16, 20, 784), rate=0.25))
    y = tf.one_hot(np.arange(16) % 10, 10)
    results = []
    for model in (seed, ours):
        with tf.GradientTape() as tape:
            out = model(x)
            loss = tf.reduce_mean(fused_lif.spike_categorical_crossentropy(y, out))
        results.append((out.numpy(), tape.gradient(loss, model.trainable_variables)))
    (seed_out, seed_grads), (our_out, our_grads) = results
    assert 0.01 < seed_out.mean() < 0.9
    np.testing.assert_array_equal(our_out, seed_out)
    for g_ours, g_seed, v in zip(our_grads, seed_grads, seed.trainable_variables):
        assert_close_scaled(g_ours.numpy(), g_seed.numpy(), 1e-5, v.path)


def test_seed_constructor_and_weights():
    layer = LIFLayer(64, 10, 20.0, 1.0, True, False, name="hidden")
    layer.build((None, 5, 12))
    assert [w.shape for w in layer.trainable_weights] == [(12, 64), (64,)]
    assert [w.name for w in layer.trainable_weights] == ["weights", "bias"]
    # output_units=10 with the seed's use_dfa=True makes a DFA hidden layer: it
    # also owns a fixed feedback matrix (tests/test_dfa.py).
    assert [(w.name, w.shape) for w in layer.non_trainable_weights] == [("feedback", (10, 64))]
    assert (layer.output_units, layer.use_dfa, layer.is_output_layer) == (10, True, False)
    assert layer.compute_output_shape((None, 5, 12)) == (None, 5, 64)


def test_seed_checkpoint_loads(tmp_path):
    seed = seed_notebook.create_snn_model(30, 16, 4, 8)
    path = str(tmp_path / "seed.weights.h5")
    seed.save_weights(path)
    ours = fused_lif.create_snn_model(30, 16, 4, 8)
    ours.load_weights(path)
    x = spike_input((5, 8, 30), rate=0.5)
    for a, b in zip(seed.get_weights(), ours.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ours(x).numpy(), seed(x).numpy())


ALL_OPTIONS = dict(units=7, output_units=3, tau=12.5, threshold=0.7, use_dfa=False,
                   is_output_layer=True, implementation="reference", alpha=4.0,
                   surrogate="atan", reset="subtract", detach_reset=True, trainable_tau=True,
                   trainable_threshold=True, return_state=True, stateful=False)


def test_get_config_round_trip():
    layer = LIFLayer(name="lif", **ALL_OPTIONS)
    config = layer.get_config()
    for key, value in ALL_OPTIONS.items():
        assert config[key] == value, key
    clone = LIFLayer.from_config(config)
    assert clone.get_config() == config


@pytest.mark.parametrize("kwargs,match", [
    (dict(units=0), "units"), (dict(units=-3), "units"), (dict(units=2.5), "units"),
    (dict(units=4, implementation="cuda"), "implementation"),
    (dict(units=4, tau=0.0), "tau"), (dict(units=4, tau=float("nan")), "tau"),
    (dict(units=4, tau=0.5), "tau"), (dict(units=4, tau=[20.0, 0.5, 3.0, 2.0]), "tau"),
    (dict(units=4, threshold=float("nan")), "threshold"),
    (dict(units=4, alpha=-1.0), "alpha"), (dict(units=4, surrogate="relu"), "surrogate"),
    (dict(units=4, reset="hard"), "reset"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIFLayer(**kwargs)


def test_rank2_input_is_rejected():
    with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
        LIFLayer(4)(tf.zeros((2, 5)))


@pytest.mark.parametrize("surrogate,reset", [("atan", "subtract"), ("triangle", "none"),
                                             ("sigmoid", "zero")])
def test_layer_options_fused_vs_reference(surrogate, reset):
    kwargs = dict(units=9, tau=8.0, threshold=0.8, surrogate=surrogate, reset=reset, alpha=3.0,
                  trainable_tau=True, trainable_threshold=True)
    fused, ref = LIFLayer(implementation="fused", **kwargs), LIFLayer(implementation="reference", **kwargs)
    x = tf.constant(spike_input((4, 30, 13), seed=3, rate=0.5))
    fused.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(fused.get_weights())
    grads = []
    for layer in (fused, ref):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x) * tf.range(9, dtype=tf.float32))
        grads.append([g.numpy() for g in tape.gradient(loss, layer.trainable_variables)])
    np.testing.assert_array_equal(fused(x).numpy(), ref(x).numpy())
    assert [v.name for v in fused.trainable_variables] == ["weights", "bias", "tau", "threshold"]
    for g_f, g_r in zip(*grads):
        assert np.any(g_r != 0)
        assert_close_scaled(g_f, g_r, 2e-5)


def test_trainable_tau_stays_valid():
    layer = LIFLayer(5, tau=1.5, trainable_tau=True)
    model = keras.Sequential([keras.Input((10, 3)), layer])
    model.compile(optimizer=keras.optimizers.SGD(100.0), loss="mse")
    # Fixed weights, not the random initialiser's: with those some seeds left
    # every neuron too far from threshold for the update to reach tau = 1.
    w, b, tau = layer.get_weights()
    layer.set_weights([np.full_like(w, 0.3), b, tau])
    x = spike_input((8, 10, 3), rate=0.9)
    model.fit(x, np.ones((8, 10, 5), np.float32) * 5, epochs=3, verbose=0)
    tau = layer.tau_weight.numpy()
    assert np.all(tau >= 1.0) and np.all(np.isfinite(tau))
    # One valid range: an update that would take tau below 1 is clipped to 1,
    # which the scans and the constructor accept; what they refuse training
    # never reaches.
    keras.optimizers.SGD(1.0).apply_gradients([(tf.fill([5], 1e6), layer.tau_weight)])
    tau = layer.tau_weight.numpy()
    np.testing.assert_array_equal(tau, np.ones(5, np.float32))
    fused_lif.lif_scan(np.ones((2, 4, 5), np.float32), tau=layer.tau_weight)
    LIFLayer(5, tau=tau.tolist())
    with pytest.raises(ValueError, match="tau"):
        LIFLayer(5, tau=np.nextafter(np.float32(1.0), np.float32(0.0)).item())


def test_model_fit_reduces_loss():
    model = fused_lif.create_snn_model(20, 32, 4, 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=fused_lif.spike_categorical_crossentropy,
                  metrics=[fused_lif.spike_categorical_accuracy])
    labels = np.arange(64) % 4
    intensity = np.zeros((64, 20), np.float32)
    for c in range(4):
        intensity[labels == c, c * 5:(c + 1) * 5] = 1.0
    x = fused_lif.rate_encode(intensity, 10, 0.8, seed=0)
    y = keras.utils.to_categorical(labels, 4)
    history = model.fit(x, y, batch_size=16, epochs=15, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    assert history.history["spike_categorical_accuracy"][-1] > 0.5


# ------------------------------------------------------------ state ----

def test_stateful_chunks_equal_whole_sequence():
    x = spike_input((4, 60, 11), seed=5, rate=0.4)
    whole = LIFLayer(6, tau=15.0)
    whole.build(x.shape)
    chunked = LIFLayer(6, tau=15.0, stateful=True)
    chunked.build(x.shape[:1] + (None, 11))
    chunked.set_weights(whole.get_weights() + [np.zeros((4, 6), np.float32)])
    expected = whole(x).numpy()
    parts = [chunked(x[:, :25]).numpy(), chunked(x[:, 25:]).numpy()]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), expected)
    chunked.reset_states()
    np.testing.assert_array_equal(chunked(x[:, :25]).numpy(), expected[:, :25])


def test_stateful_needs_batch_size():
    with pytest.raises(ValueError, match="batch size"):
        keras.Sequential([keras.Input((5, 3)), LIFLayer(4, stateful=True)])


@pytest.mark.parametrize("implementation", ["fused", "reference"])
def test_return_state_and_initial_state_gradients(implementation):
    layer = LIFLayer(5, return_state=True, implementation=implementation)
    x = tf.constant(spike_input((3, 12, 4), seed=6, rate=0.6))
    v0 = tf.constant(np.random.default_rng(0).normal(0, 0.5, (3, 5)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(v0)
        spikes, final = layer(x, initial_state=v0)
        loss = tf.reduce_sum(spikes * 0.3) + tf.reduce_sum(final ** 2)
    grad = tape.gradient(loss, v0)
    assert final.shape == (3, 5) and final.dtype == tf.float32
    assert grad is not None and np.any(grad.numpy() != 0)
    # The same through the scan directly, as an independent check.
    scan = fused_lif.lif_scan if implementation == "fused" else fused_lif.reference.lif_scan
    currents = tf.reshape(tf.reshape(x, [-1, 4]) @ layer.w, [3, 12, 5])
    s2, f2 = scan(currents, initial_membrane=v0, bias=layer.b, return_state=True)
    np.testing.assert_array_equal(spikes.numpy(), s2.numpy())
    np.testing.assert_array_equal(final.numpy(), f2.numpy())
    assert layer.compute_output_shape((3, 12, 4)) == ((3, 12, 5), (3, 5))


# ---------------------------------------------------- XLA, precision ----

def test_jit_compile_function_runs_reference_under_xla():
    layer = LIFLayer(8)
    x = tf.constant(spike_input((4, 15, 6), seed=7, rate=0.6))
    eager = layer(x).numpy()
    compiled = tf.function(layer, jit_compile=True)
    np.testing.assert_array_equal(compiled(x).numpy(), eager)

    @tf.function(jit_compile=True)
    def grad(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, layer.w)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    assert_close_scaled(grad(x).numpy(), tape.gradient(loss, layer.w).numpy(), 1e-5)


def test_model_compile_jit_compile_warns_and_trains():
    model = fused_lif.create_snn_model(6, 8, 3, 5)
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile(optimizer="adam", loss=fused_lif.spike_categorical_crossentropy,
                      jit_compile=True)
    model.fit(spike_input((8, 5, 6)), np.eye(3)[np.arange(8) % 3], verbose=0, epochs=1)
    reference_model = fused_lif.create_snn_model(6, 8, 3, 5, implementation="reference")
    reference_model.compile(optimizer="adam", loss=fused_lif.spike_categorical_crossentropy,
                            jit_compile=True)
    assert reference_model.jit_compile


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = fused_lif.create_snn_model(12, 16, 3, 10)
        ref = fused_lif.create_snn_model(12, 16, 3, 10, implementation="reference")
        ref.set_weights(model.get_weights())
        x = spike_input((8, 10, 12), seed=8, rate=0.7)
        out = model(x)
        assert out.dtype == keras.mixed_precision.global_policy().compute_dtype
        assert model.layers[1].w.dtype == "float32"
        np.testing.assert_array_equal(out.numpy(), ref(x).numpy())
        y = np.eye(3)[np.arange(8) % 3].astype(np.float32)
        grads = []
        for m in (model, ref):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(fused_lif.spike_categorical_crossentropy(y, tf.cast(m(x), tf.float32)))
            grads.append([g.numpy() for g in tape.gradient(loss, m.trainable_variables)])
        for g_f, g_r in zip(*grads):
            assert_close_scaled(g_f, g_r, 2e-2)
        model.compile(optimizer="adam", loss=fused_lif.spike_categorical_crossentropy)
        history = model.fit(x, y, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ------------------------------------------------- save, load, serve ----

def test_keras_save_load_in_fresh_process(tmp_path):
    model = fused_lif.create_snn_model(10, 12, 3, 6)
    model.compile(optimizer="adam", loss=fused_lif.spike_categorical_crossentropy,
                  metrics=[fused_lif.spike_categorical_accuracy])
    x = spike_input((4, 6, 10), seed=9, rate=0.6)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model(x).numpy())
    model.save(tmp_path / "m.keras")
    run_python(f"""
        import numpy as np, keras
        import fused_lif
        m = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        assert type(m.layers[1]).__name__ == "LIFLayer"
        np.testing.assert_array_equal(m(np.load({str(tmp_path / 'x.npy')!r})).numpy(),
                                      np.load({str(tmp_path / 'y.npy')!r}))
        assert m.loss is fused_lif.spike_categorical_crossentropy
    """)


def test_saved_model_serves_in_fresh_process(tmp_path):
    model = fused_lif.create_snn_model(10, 12, 3, 6)
    x = spike_input((4, 6, 10), seed=10, rate=0.6)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model(x).numpy())
    model.export(str(tmp_path / "exported"), verbose=False)
    out = run_python(f"""
        import numpy as np, tensorflow as tf
        import fused_lif  # loads the op library before the SavedModel
        served = tf.saved_model.load({str(tmp_path / 'exported')!r})
        y = served.serve(tf.constant(np.load({str(tmp_path / 'x.npy')!r})))
        np.testing.assert_array_equal(y.numpy(), np.load({str(tmp_path / 'y.npy')!r}))
        print("served ok")
    """)
    assert "served ok" in out


def test_stateful_under_several_replicas_is_refused_and_explicit_state_works(run_on_two_cpus):
    out = run_on_two_cpus("""
        # Built under the strategy: refused at build time, saying what to do.
        with strategy.scope():
            try:
                keras.Sequential([keras.Input((5, 3), batch_size=8),
                                  fused_lif.LIFLayer(4, stateful=True)])
            except ValueError as e:
                assert "stateful=True" in str(e) and "initial_state" in str(e), e
            else:
                raise AssertionError("stateful layer built under 2 replicas")

        # Built outside, called on the replicas: refused when called.
        layer = fused_lif.LIFLayer(4, stateful=True)
        layer.build((8, 5, 3))
        x = np.random.default_rng(0).normal(0.5, 1, (8, 5, 3)).astype(np.float32)
        try:
            strategy.run(tf.function(lambda xr: layer(xr)), args=(x,))
        except ValueError as e:
            assert "2 replicas" in str(e), e
        else:
            raise AssertionError("stateful layer called on 2 replicas")

        # What works instead: return_state + initial_state, on every replica,
        # gives exactly the spikes of one whole run on one device.
        with strategy.scope():
            layer = fused_lif.LIFLayer(4, return_state=True)
            layer.build((None, None, 3))
        x = np.random.default_rng(1).normal(0.4, 1, (8, 12, 3)).astype(np.float32)
        whole, _ = layer(x)

        @tf.function
        def chunked(xr):
            s1, v = layer(xr[:, :5])
            s2, _ = layer(xr[:, 5:], initial_state=v)
            return tf.concat([s1, s2], axis=1)

        dataset = tf.data.Dataset.from_tensor_slices(x).batch(8)
        xb = next(iter(strategy.experimental_distribute_dataset(dataset)))
        per_replica = strategy.run(chunked, args=(xb,))
        got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(per_replica)])
        np.testing.assert_array_equal(got, whole.numpy())
        print("replicas ok")
    """)
    assert "replicas ok" in out


def test_mirrored_strategy_matches_single_device(run_on_two_cpus):
    out = run_on_two_cpus("""
        x = (np.random.default_rng(0).random((16, 8, 10)) < 0.5).astype(np.float32)
        y = np.eye(3, dtype=np.float32)[np.arange(16) % 3]
        single = fused_lif.create_snn_model(10, 12, 3, 8)
        weights = single.get_weights()
        loss_fn = fused_lif.spike_categorical_crossentropy
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(y, single(x)))
        expected = [g.numpy() for g in tape.gradient(loss, single.trainable_variables)]

        with strategy.scope():
            model = fused_lif.create_snn_model(10, 12, 3, 8)
            model.set_weights(weights)

        @tf.function
        def step(xb, yb):
            def replica(xr, yr):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(loss_fn(yr, model(xr))) / 16.0
                return tape.gradient(loss, model.trainable_variables)
            per_replica = strategy.run(replica, args=(xb, yb))
            return [strategy.reduce("SUM", g, axis=None) for g in per_replica]

        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        xb, yb = next(iter(strategy.experimental_distribute_dataset(dataset)))
        got = step(xb, yb)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g.numpy(), e, rtol=1e-5, atol=1e-6)

        with strategy.scope():
            model.compile(optimizer="adam", loss=loss_fn)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        print("mirrored ok")
    """)
    assert "mirrored ok" in out


@pytest.mark.parametrize("implementation", ["fused", "reference"])
def test_unknown_batch_and_time_dimensions(implementation):
    inputs = keras.Input(shape=(None, 6))
    outputs = LIFLayer(5, implementation=implementation)(inputs)
    model = keras.Model(inputs, outputs)
    assert tuple(model.output_shape) == (None, None, 5)
    model.summary(print_fn=lambda *a, **k: None)
    fn = tf.function(model, input_signature=[tf.TensorSpec([None, None, 6], tf.float32)])
    for shape in [(2, 7, 6), (5, 1, 6), (1, 40, 6)]:
        x = spike_input(shape, seed=shape[1], rate=0.6)
        np.testing.assert_array_equal(fn(x).numpy(), model(x).numpy())
        assert fn(x).shape == shape[:2] + (5,)


def test_per_neuron_constant_parameters_save_and_load(tmp_path):
    tau = np.linspace(5, 30, 4).astype(np.float32)
    model = keras.Sequential([keras.Input((6, 3)), LIFLayer(4, tau=tau, threshold=[0.5, 0.7, 0.9, 1.1])])
    x = spike_input((2, 6, 3), seed=11, rate=0.8)
    expected = model(x).numpy()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded(x).numpy(), expected)
    ref = fused_lif.reference.lif_scan(
        tf.reshape(tf.reshape(x, [-1, 3]) @ model.layers[0].w, [2, 6, 4]), tau=tau,
        threshold=np.array([0.5, 0.7, 0.9, 1.1], np.float32), bias=model.layers[0].b)
    np.testing.assert_array_equal(expected, ref.numpy())


def test_return_state_symbolic_dtypes_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        spikes, final = LIFLayer(4, return_state=True)(keras.Input((5, 3)))
        assert spikes.dtype == "float16" and final.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
