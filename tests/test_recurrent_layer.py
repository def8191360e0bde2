"""`LIFLayer(recurrent=True)`: the fused recurrent layer against the
reference layer and the float64 oracle; state across calls; save/load; mixed
precision; DFA with a recurrent hidden layer."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import fused_lif
import recurrent_oracle
from conftest import assert_close_scaled, run_python

BACKENDS = ["fused", "reference"]


def grid_layer(units, features, implementation, seed=0, **kwargs):
    """A built recurrent layer whose weights are multiples of 1/8 (with tau 2
    or 4 every forward sum is exact in float32, whatever its order)."""
    layer = fused_lif.LIFLayer(units, recurrent=True, implementation=implementation, **kwargs)
    layer.build((None, None, features))
    rng = np.random.default_rng(seed)
    w = rng.integers(-4, 5, (features, units)).astype(np.float32) / 8
    b = rng.integers(-1, 2, units).astype(np.float32) / 8
    grid = recurrent_oracle.grid_inputs((1, 1, units), seed=seed)
    layer.set_weights([w, b, grid["recurrent_kernel"]] + layer.get_weights()[3:])
    return layer


def grid_x(shape, seed=1):
    return (np.random.default_rng(seed).random(shape) < 0.4).astype(np.float32)


def test_not_recurrent_keeps_the_seed_weights():
    layer = fused_lif.LIFLayer(4)
    layer.build((None, 5, 3))
    assert [w.name for w in layer.weights] == ["weights", "bias"]
    layer = fused_lif.LIFLayer(4, recurrent=True, trainable_tau=True, stateful=True)
    layer.build((2, 5, 3))
    assert [w.name for w in layer.weights] == ["weights", "bias", "recurrent_kernel", "tau",
                                               "membrane_state", "spikes_state"]


@pytest.mark.parametrize("implementation", BACKENDS)
@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
def test_spikes_equal_the_oracle_exactly(implementation, reset):
    layer = grid_layer(9, 6, implementation, tau=4.0, reset=reset, return_state=True)
    x = grid_x((3, 12, 6))
    spikes, membrane, last = layer(x)
    w, b, R = (v.numpy() for v in layer.weights[:3])
    currents = (x.reshape(-1, 6) @ w).reshape(3, 12, 9)
    want_s, _, want_v = recurrent_oracle.forward(currents, R, tau=4.0, reset=reset, bias=b)
    assert 0.05 < want_s.mean() < 0.9, "the test needs neurons that spike and rest"
    np.testing.assert_array_equal(spikes.numpy(), want_s)
    np.testing.assert_array_equal(membrane.numpy(), want_v)
    np.testing.assert_array_equal(last.numpy(), want_s[:, -1])


OPTIONS = list(itertools.product(["fast_sigmoid", "atan", "sigmoid", "triangle"],
                                 ["zero", "subtract", "none"], [False, True]))


@pytest.mark.parametrize("surrogate,reset,detach_reset", OPTIONS)
def test_fused_gradients_equal_the_reference(surrogate, reset, detach_reset):
    kwargs = dict(tau=2.0, surrogate=surrogate, reset=reset, detach_reset=detach_reset,
                  alpha=3.0, trainable_tau=True, trainable_threshold=True, return_state=True)
    x = tf.constant(grid_x((4, 10, 5), seed=2))
    v0 = tf.constant(np.random.default_rng(3).integers(-4, 8, (4, 7)).astype(np.float32) / 8)
    s0 = tf.constant((np.random.default_rng(4).random((4, 7)) < 0.3).astype(np.float32))
    results = []
    for implementation in BACKENDS:
        layer = grid_layer(7, 5, implementation, seed=5, **kwargs)
        with tf.GradientTape() as tape:
            tape.watch([x, v0, s0])
            spikes, membrane, last = layer(x, initial_state=(v0, s0))
            loss = (tf.reduce_sum(spikes * tf.cos(tf.range(7, dtype=tf.float32)))
                    + tf.reduce_sum(membrane ** 2) + tf.reduce_sum(last * 0.5))
        grads = tape.gradient(loss, [x, v0, s0] + layer.trainable_weights)
        results.append((spikes.numpy(), membrane.numpy(), [g.numpy() for g in grads]))
    (s_f, v_f, g_f), (s_r, v_r, g_r) = results
    np.testing.assert_array_equal(s_f, s_r)
    np.testing.assert_array_equal(v_f, v_r)
    names = ["x", "initial membrane", "initial spikes", "w", "b", "recurrent_kernel", "tau",
             "threshold"]
    assert np.any(g_r[5] != 0), "the recurrent kernel must get a gradient"
    for name, a, b in zip(names, g_f, g_r):
        assert_close_scaled(a, b, 1e-5, name)


@pytest.mark.parametrize("implementation", BACKENDS)
def test_chunks_with_explicit_state_equal_one_run(implementation):
    layer = grid_layer(8, 4, implementation, tau=2.0, return_state=True)
    x = grid_x((2, 30, 4), seed=6)
    whole, membrane, last = layer(x)
    state, parts = None, []
    for lo, hi in ((0, 1), (1, 13), (13, 30)):
        spikes, *state = layer(x[:, lo:hi], initial_state=state)
        parts.append(spikes.numpy())
    np.testing.assert_array_equal(np.concatenate(parts, 1), whole.numpy())
    np.testing.assert_array_equal(state[0].numpy(), membrane.numpy())
    np.testing.assert_array_equal(state[1].numpy(), last.numpy())


@pytest.mark.parametrize("implementation", BACKENDS)
def test_stateful_chunks_in_graph_mode_equal_one_run(implementation):
    x = grid_x((3, 24, 4), seed=7)
    whole = grid_layer(6, 4, implementation, tau=4.0)(x).numpy()
    layer = fused_lif.LIFLayer(6, recurrent=True, stateful=True, tau=4.0,
                               implementation=implementation)
    layer.build((3, None, 4))
    layer.set_weights(grid_layer(6, 4, implementation, tau=4.0).get_weights()
                      + [np.zeros((3, 6), np.float32)] * 2)
    step = tf.function(layer)
    parts = [step(x[:, :10]).numpy(), step(x[:, 10:]).numpy()]
    np.testing.assert_array_equal(np.concatenate(parts, 1), whole)
    assert np.any(layer.spikes_state.numpy() != 0) or not np.any(whole[:, -1])
    layer.reset_states()
    np.testing.assert_array_equal(step(x[:, :10]).numpy(), whole[:, :10])


def test_keras_save_load_in_fresh_process(tmp_path):
    inputs = keras.Input((15, 6))
    hidden = fused_lif.LIFLayer(12, recurrent=True, threshold=0.5)(inputs)
    model = keras.Model(inputs, fused_lif.LIFLayer(3)(hidden))
    x = grid_x((4, 15, 6), seed=8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model(x).numpy())
    model.save(tmp_path / "m.keras")
    run_python(f"""
        import numpy as np, keras
        import fused_lif
        m = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        assert m.layers[1].recurrent and m.layers[1].recurrent_kernel.shape == (12, 12)
        np.testing.assert_array_equal(m(np.load({str(tmp_path / 'x.npy')!r})).numpy(),
                                      np.load({str(tmp_path / 'y.npy')!r}))
    """)


def test_mixed_precision_trains():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = fused_lif.create_snn_model(6, 16, 3, 12, recurrent=True, threshold=0.5)
        assert model.layers[1].compute_dtype == "float16"
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=fused_lif.spike_categorical_crossentropy)
        x = grid_x((16, 12, 6), seed=9)
        y = keras.utils.to_categorical(np.arange(16) % 3, 3)
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert model.layers[1].recurrent_kernel.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_dfa_trains_a_recurrent_hidden_layer_through_its_recurrence():
    """A recurrent DFA hidden layer: its gradients are its own BPTT (the
    recurrent path included) from e @ feedback reaching its spikes."""
    model = fused_lif.create_snn_model(6, 10, 3, 12, training="dfa", recurrent=True,
                                       threshold=0.5)
    model.compile(optimizer="adam", loss=fused_lif.spike_categorical_crossentropy)
    hidden, output = model.layers[1], model.layers[2]
    x = tf.constant(grid_x((8, 12, 6), seed=10))
    y = tf.constant(keras.utils.to_categorical(np.arange(8) % 3, 3))
    _, grads = model.dfa_gradients(x, y)
    by_name = {v.path: g for v, g in zip(model.trainable_weights, grads)}
    # Independently: the error at the output spikes, projected by feedback,
    # back through the hidden layer alone.
    with tf.GradientTape(persistent=True) as tape:
        h = hidden(x)
        out = output(tf.stop_gradient(h))
        loss = model.compute_loss(x=x, y=y, y_pred=out)
    error = tape.gradient(loss, out)
    want = tape.gradient(h, hidden.trainable_weights,
                         output_gradients=fused_lif.dfa.project_error(error, hidden.feedback))
    for variable, expected in zip(hidden.trainable_weights, want):
        assert_close_scaled(by_name[variable.path].numpy(), expected.numpy(), 1e-5, variable.path)
    assert np.any(by_name[hidden.recurrent_kernel.path].numpy() != 0)


def test_bad_arguments():
    with pytest.raises(TypeError, match="recurrent must be a bool"):
        fused_lif.LIFLayer(4, recurrent="yes")
    layer = fused_lif.LIFLayer(4, recurrent=True)
    with pytest.raises(ValueError, match=r"initial_state must be a pair \(membrane, spikes\)"):
        layer(tf.zeros((2, 3, 5)), initial_state=tf.zeros((2, 4)))
    with pytest.raises(ValueError, match="initial_spikes must be 0 or 1, got 0.5 at"):
        layer(tf.zeros((2, 3, 5)), initial_state=(None, tf.fill((2, 4), 0.5)))
