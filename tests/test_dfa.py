"""Direct feedback alignment: DFAModel's updates against an independent
oracle, the fixed feedback matrices, and the DFA configuration's bad inputs."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import fused_lif
from fused_lif import DFAModel, LIFLayer
from fused_lif import dfa as dfa_module

from conftest import assert_close_scaled


def spike_input(shape, seed=0, rate=0.4):
    return (np.random.default_rng(seed).random(shape) < rate).astype(np.float32)


def labels(batch, classes):
    return np.eye(classes, dtype=np.float32)[np.arange(batch) % classes]


def build_network(sizes, time_steps, implementation="fused", between=None, model_cls=DFAModel,
                  **options):
    """input [time, sizes[0]] -> DFA hidden LIFLayers (sizes[1:-1]) -> output
    LIFLayer (sizes[-1]); `between`: a weightless layer factory put after each
    hidden layer."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape=(time_steps, sizes[0]))
    h = inputs
    for i, units in enumerate(sizes[1:-1]):
        h = LIFLayer(units, output_units=sizes[-1], use_dfa=True, implementation=implementation,
                     name=f"hidden{i}", **options)(h)
        if between is not None:
            h = between()(h)
    outputs = LIFLayer(sizes[-1], is_output_layer=True, implementation=implementation,
                       name="output", **options)(h)
    return model_cls(inputs, outputs)


def lif_layers(model):
    return [layer for layer in model.layers if isinstance(layer, LIFLayer)]


def projected_currents(h, layer):
    """LIFLayer's projection, h [batch, time, features] @ layer.w, written here
    again on purpose: the oracle and the by-hand composition below check the
    layer against plain TensorFlow, so they must not run the layer's own code."""
    batch, time, features = h.shape
    return tf.reshape(tf.matmul(tf.reshape(h, [-1, features]), layer.w),
                      [batch, time, layer.units])


def oracle_gradients(model, x, y):
    """The DFA update written independently, in plain TensorFlow autodiff on
    the reference scan: stop_gradient between layers, and for each DFA layer
    the surrogate term sum(stop_gradient(e @ feedback) * spikes).

    Returns (e, {variable path: gradient}) for the model's LIF weights, and
    each layer's mean spike rate."""
    layers = lif_layers(model)
    variables = [v for layer in layers for v in layer.trainable_weights]
    with tf.GradientTape(persistent=True) as tape:
        h, hidden_spikes, rates = tf.constant(x), [], []
        for layer in layers:
            currents = projected_currents(tf.stop_gradient(h), layer)
            tau = layer.tau if layer.tau_weight is None else tf.convert_to_tensor(layer.tau_weight)
            threshold = (layer.threshold if layer.threshold_weight is None
                         else tf.convert_to_tensor(layer.threshold_weight))
            h = fused_lif.reference.lif_scan(
                currents, tau=tau, threshold=threshold, alpha=layer.alpha,
                surrogate=layer.surrogate, reset=layer.reset, detach_reset=layer.detach_reset,
                bias=layer.b)
            rates.append(float(tf.reduce_mean(h)))
            if layer.is_dfa_hidden:
                hidden_spikes.append((layer, h))
        loss = tf.reduce_mean(fused_lif.spike_categorical_crossentropy(y, h))
    e = tape.gradient(loss, h)
    with tape:
        objective = loss
        for layer, spikes in hidden_spikes:
            projected = tf.einsum("btk,kh->bth", e, layer.feedback)
            objective += tf.reduce_sum(tf.stop_gradient(projected) * spikes)
    grads = tape.gradient(objective, variables)
    return e.numpy(), {v.path: g.numpy() for v, g in zip(variables, grads)}, rates


def compiled(model, optimizer="adam"):
    model.compile(optimizer=optimizer, loss=fused_lif.spike_categorical_crossentropy,
                  metrics=[fused_lif.spike_categorical_accuracy])
    return model


ORACLE_CASES = {
    "seed_neuron": dict(sizes=(20, 16, 5), batch=8, time=12),
    "atan_subtract_trainable": dict(sizes=(18, 11, 4), batch=6, time=10, surrogate="atan",
                                    reset="subtract", alpha=3.0, trainable_tau=True,
                                    trainable_threshold=True, tau=8.0, threshold=0.8),
    "sigmoid_none_detach": dict(sizes=(15, 9, 3), batch=5, time=9, surrogate="sigmoid",
                                reset="none", detach_reset=True, threshold=1.0),
    "triangle_zero_trainable_tau": dict(sizes=(16, 13, 6), batch=7, time=11,
                                        surrogate="triangle", alpha=2.0, trainable_tau=True,
                                        tau=5.0, threshold=0.7),
    "three_layers_two_dfa": dict(sizes=(20, 16, 12, 5), batch=8, time=12, threshold=0.6,
                                 trainable_threshold=True),
    "reference_layers": dict(sizes=(20, 16, 5), batch=8, time=12, implementation="reference"),
}


@pytest.mark.parametrize("case", list(ORACLE_CASES))
def test_dfa_gradients_equal_oracle(case):
    options = dict(ORACLE_CASES[case])
    sizes, batch, time = options.pop("sizes"), options.pop("batch"), options.pop("time")
    model = compiled(build_network(sizes, time, **options))
    x, y = spike_input((batch, time, sizes[0]), seed=2), labels(batch, sizes[-1])
    _, gradients = model.dfa_gradients(x, y)
    e, expected, rates = oracle_gradients(model, x, y)
    assert np.any(e != 0)  # the loss is not saturated: there is an error to send
    assert len([layer for layer in lif_layers(model) if layer.is_dfa_hidden]) == len(sizes) - 2
    assert all(0.02 < rate < 0.9 for rate in rates), rates  # neither silent nor saturated
    for variable, gradient in zip(model.trainable_weights, gradients):
        assert np.any(expected[variable.path] != 0), variable.path
        assert_close_scaled(gradient.numpy(), expected[variable.path], 2e-5, variable.path)


def test_fit_step_applies_the_dfa_update():
    model = compiled(build_network((20, 16, 5), 12), keras.optimizers.SGD(learning_rate=1.0))
    x, y = spike_input((8, 12, 20), seed=2), labels(8, 5)
    before = [v.numpy() for v in model.trainable_weights]
    feedback = model.get_layer("hidden0").feedback.numpy()
    _, expected, _ = oracle_gradients(model, x, y)
    model.train_on_batch(x, y)
    for variable, old in zip(model.trainable_weights, before):
        assert_close_scaled(old - variable.numpy(), expected[variable.path], 1e-4, variable.path)
    np.testing.assert_array_equal(model.get_layer("hidden0").feedback.numpy(), feedback)


def test_weightless_layers_between_lif_layers():
    model = compiled(build_network((20, 16, 12, 5), 12, between=lambda: keras.layers.Dropout(0.5),
                                   threshold=0.6))
    x, y = spike_input((8, 12, 20), seed=2), labels(8, 5)
    _, gradients = model.dfa_gradients(x, y)  # dropout is active in training
    assert all(np.all(np.isfinite(g.numpy())) for g in gradients)
    assert all(np.any(g.numpy() != 0) for g in gradients)
    assert model.predict(x, verbose=0).shape == (8, 12, 5)


def test_no_gradient_leaks_below_a_dfa_layer():
    model = compiled(build_network((20, 16, 12, 5), 12, threshold=0.6))
    x, y = spike_input((8, 12, 20), seed=2), labels(8, 5)
    lower = model.get_layer("hidden0")
    lower.feedback.assign(tf.zeros_like(lower.feedback))
    _, gradients = model.dfa_gradients(x, y)
    for variable, gradient in zip(model.trainable_weights, gradients):
        below = variable.path.startswith("hidden0/")
        # hidden0 learns from its own (zero) feedback alone, nothing from above
        assert np.all(gradient.numpy() == 0) == below, variable.path


def test_feedback_is_fixed_by_training_and_saved(tmp_path):
    model = compiled(build_network((20, 16, 12, 5), 12, threshold=0.6))
    x, y = spike_input((32, 12, 20), seed=4), labels(32, 5)
    feedback = {layer.name: layer.feedback.numpy() for layer in lif_layers(model)
                if layer.is_dfa_hidden}
    weights = [v.numpy() for v in model.trainable_weights]
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert any(np.any(w != v.numpy()) for w, v in zip(weights, model.trainable_weights))
    path = str(tmp_path / "dfa.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is DFAModel
    for name, matrix in feedback.items():
        assert not model.get_layer(name).feedback.trainable
        np.testing.assert_array_equal(model.get_layer(name).feedback.numpy(), matrix)
        np.testing.assert_array_equal(loaded.get_layer(name).feedback.numpy(), matrix)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)  # trains on after loading


def test_inference_is_unchanged():
    model = build_network((20, 16, 5), 12)
    plain = keras.Model(model.input, model.output)
    x = spike_input((8, 12, 20), seed=5)
    np.testing.assert_array_equal(model.predict(x, verbose=0), plain.predict(x, verbose=0))
    np.testing.assert_array_equal(model(x).numpy(), plain(x).numpy())


def test_feedback_initializer_scale_seed_and_config():
    layer = LIFLayer(400, output_units=25, use_dfa=True)
    layer.build((None, 3, 7))
    feedback = layer.feedback.numpy()
    assert feedback.shape == (25, 400) and layer.feedback.name == "feedback"
    limit = 1.0 / np.sqrt(25)  # uniform in +-1/sqrt(output_units)
    assert np.abs(feedback).max() <= limit and np.abs(feedback).max() > 0.95 * limit
    assert abs(feedback.std() - limit / np.sqrt(3)) < 0.05 * limit
    seeded = [LIFLayer(6, output_units=3, feedback_initializer=keras.initializers.RandomNormal(
        stddev=0.5, seed=7)) for _ in range(2)]
    for layer in seeded:
        layer.build((None, 3, 7))
    np.testing.assert_array_equal(seeded[0].feedback.numpy(), seeded[1].feedback.numpy())
    config = seeded[0].get_config()
    clone = LIFLayer.from_config(config)
    assert clone.get_config() == config
    clone.build((None, 3, 7))
    np.testing.assert_array_equal(clone.feedback.numpy(), seeded[0].feedback.numpy())


def test_seed_model_is_unchanged_without_output_units():
    """output_units=None (the seed's default, use_dfa=True): no feedback, and
    spikes and gradients bit-identical to the fused scan composed by hand."""
    model = fused_lif.create_snn_model(30, 16, 4, 8, implementation="fused")
    assert [w.name for w in model.weights] == ["weights", "bias"] * 2
    x, y = spike_input((6, 8, 30), seed=3), labels(6, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DFA warning either
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.reduce_mean(fused_lif.spike_categorical_crossentropy(y, out))
        grads = tape.gradient(loss, model.trainable_weights)
    with tf.GradientTape() as tape:
        h = tf.constant(x)
        for layer in lif_layers(model):
            h = fused_lif.lif_scan(projected_currents(h, layer), bias=layer.b)
        loss_by_hand = tf.reduce_mean(fused_lif.spike_categorical_crossentropy(y, h))
    by_hand = tape.gradient(loss_by_hand, model.trainable_weights)
    np.testing.assert_array_equal(out.numpy(), h.numpy())
    for g, g_hand in zip(grads, by_hand):
        assert np.any(g_hand.numpy() != 0)
        np.testing.assert_array_equal(g.numpy(), g_hand.numpy())


def test_plain_model_with_dfa_layers_trains_by_backprop_and_warns_once(monkeypatch):
    monkeypatch.setattr(dfa_module, "_warned_dfa", False)
    dfa = build_network((20, 16, 5), 12)
    plain = compiled(keras.Model(dfa.input, dfa.output))
    x, y = spike_input((16, 12, 20), seed=2), labels(16, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(fused_lif.spike_categorical_crossentropy(
                y, plain(x, training=True)))
        grads = tape.gradient(loss, plain.trainable_weights)
        plain.fit(x, y, batch_size=8, epochs=2, verbose=0)
        plain.predict(x, verbose=0)
    messages = [str(w.message) for w in caught if "DFAModel" in str(w.message)]
    assert len(messages) == 1 and "hidden0" in messages[0] and "backprop" in messages[0]
    # backprop: the hidden layer gets the output layer's true gradient
    assert all(np.any(g.numpy() != 0) for g in grads)
    _, dfa_grads = compiled(dfa).dfa_gradients(x, y)
    assert not np.allclose(grads[0].numpy(), dfa_grads[0].numpy())
    monkeypatch.setattr(dfa_module, "_warned_dfa", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dfa.fit(x, y, batch_size=8, epochs=1, verbose=0)  # DFAModel: no warning


def test_create_snn_model_dfa():
    model = fused_lif.create_snn_model(30, 16, 4, 8, training="dfa")
    hidden, output = model.get_layer("hidden_layer"), model.get_layer("output_layer")
    assert type(model) is DFAModel
    assert hidden.is_dfa_hidden and hidden.output_units == 4 and output.is_output_layer
    assert [w.path for w in model.trainable_weights] == [
        "hidden_layer/weights", "hidden_layer/bias", "output_layer/weights", "output_layer/bias"]
    with pytest.raises(ValueError, match="training must be one of"):
        fused_lif.create_snn_model(30, 16, 4, 8, training="hebbian")


def test_mirrored_strategy_step_matches_single_device(run_on_two_cpus):
    out = run_on_two_cpus("""
        x = (np.random.default_rng(0).random((16, 8, 10)) < 0.5).astype(np.float32)
        y = np.eye(3, dtype=np.float32)[np.arange(16) % 3]

        def one_step(weights=None):
            model = fused_lif.create_snn_model(10, 12, 3, 8, training="dfa", threshold=0.5)
            if weights is not None:
                model.set_weights(weights)
            model.compile(optimizer=keras.optimizers.SGD(1.0),
                          loss=fused_lif.spike_categorical_crossentropy)
            before = model.get_weights()
            model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
            return before, [b - a for b, a in zip(before, model.get_weights())]

        weights, expected = one_step()
        assert all(np.any(d != 0) for d in expected[:2])  # the hidden layer learned
        with strategy.scope():
            _, got = one_step(weights)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
        print("mirrored dfa ok")
    """)
    assert "mirrored dfa ok" in out


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision(mixed_float16):
    model = compiled(build_network((20, 16, 5), 12))
    x, y = spike_input((8, 12, 20), seed=2), labels(8, 5)
    assert model.get_layer("hidden0").feedback.dtype == "float32"
    loss, gradients = model.dfa_gradients(x, y)
    assert np.isfinite(loss.numpy()) and all(np.all(np.isfinite(g.numpy())) for g in gradients)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def dense_between():
    inputs = keras.Input(shape=(6, 10))
    h = LIFLayer(8, output_units=3, use_dfa=True)(inputs)
    h = keras.layers.Dense(8, name="dense")(h)
    return inputs, LIFLayer(3, is_output_layer=True)(h)


def bad_networks():
    inputs = keras.Input(shape=(6, 10))
    hidden = LIFLayer(8, output_units=3, use_dfa=True, name="hidden")(inputs)
    yield "output_units=3.*4 units", (inputs, LIFLayer(4, is_output_layer=True)(hidden))
    yield "is_output_layer=True", (inputs, LIFLayer(3)(hidden))
    yield "must be the spikes of a LIFLayer", (inputs, keras.layers.Dense(3)(hidden))
    out, state = LIFLayer(3, is_output_layer=True, return_state=True)(hidden)
    yield "exactly one output", (inputs, [out, state])
    plain = LIFLayer(8, name="plain")(inputs)
    yield "no DFA hidden layer", (inputs, LIFLayer(3, is_output_layer=True)(plain))
    h = LIFLayer(8, use_dfa=False, output_units=3, name="bp")(hidden)
    yield "'bp'.*neither the output layer nor a DFA hidden layer", (
        inputs, LIFLayer(3, is_output_layer=True)(h))
    yield "'dense'.*not a LIFLayer", dense_between()
    h, _ = LIFLayer(8, output_units=3, use_dfa=True, return_state=True, name="rs")(inputs)
    yield "'rs' has return_state=True", (inputs, LIFLayer(3, is_output_layer=True)(h))
    h = LIFLayer(8, is_output_layer=True, name="early")(hidden)
    yield "'early' has is_output_layer=True but is not", (
        inputs, LIFLayer(3, is_output_layer=True)(h))


@pytest.mark.parametrize("index", range(9))
def test_bad_dfa_networks_are_refused(index):
    match, (inputs, outputs) = list(bad_networks())[index]
    with pytest.raises(ValueError, match=match):
        DFAModel(inputs, outputs)


def test_frozen_non_lif_layer_is_allowed_and_stays_fixed():
    """A frozen Dense between the LIF layers is accepted, gets no update, and
    the LIF layers around it still train."""
    inputs, outputs = dense_between()
    keras.Model(inputs, outputs).get_layer("dense").trainable = False
    model = compiled(DFAModel(inputs, outputs), keras.optimizers.SGD(learning_rate=1.0))
    dense = model.get_layer("dense")
    lif_weights = [v.path for layer in lif_layers(model) for v in layer.trainable_weights]
    assert len(lif_weights) == 4 and not dense.trainable_weights
    assert [v.path for v in model.trainable_weights] == lif_weights
    x, y = spike_input((8, 6, 10), seed=2), labels(8, 3)
    _, gradients = model.dfa_gradients(x, y)
    assert len(gradients) == 4
    for variable, gradient in zip(model.trainable_weights, gradients):
        assert np.all(np.isfinite(gradient.numpy())), variable.path
        assert np.any(gradient.numpy() != 0), variable.path
    frozen = [v.numpy() for v in dense.weights]
    before = [v.numpy() for v in model.trainable_weights]
    model.train_on_batch(x, y)
    for variable, old in zip(dense.weights, frozen):
        np.testing.assert_array_equal(variable.numpy(), old)
    for variable, old in zip(model.trainable_weights, before):
        assert np.any(variable.numpy() != old), variable.path


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(output_units=0), ValueError, "output_units"),
    (dict(output_units=2.5), ValueError, "output_units"),
    (dict(output_units="10"), ValueError, "output_units"),
    (dict(output_units=True), ValueError, "output_units"),
    (dict(use_dfa="yes"), TypeError, "use_dfa"),
    (dict(is_output_layer=1), TypeError, "is_output_layer"),
    (dict(output_units=3, feedback_initializer="no_such_initializer"), ValueError, "initializer"),
])
def test_bad_dfa_layer_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LIFLayer(4, **kwargs)
