"""Hostile input, properties over random configurations, threads, leaks and
determinism. Every bad input ends in a clear exception or in the
reference's result."""

import threading

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, strategies as st

import fused_lif
from fused_lif import ops, reference

import oracle
from conftest import assert_close_scaled, make_currents, run_python, scan_grads

# ------------------------------------------------------------ properties --


@st.composite
def configurations(draw):
    batch = draw(st.integers(0, 4))
    time = draw(st.one_of(st.integers(0, 12), st.integers(100, 400)))
    neurons = draw(st.integers(0, 40))
    threshold = draw(st.one_of(st.just(0.0), st.floats(-2, 3, width=32)))
    kind = draw(st.sampled_from(["normal", "large", "at_threshold", "integers"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (batch, time, neurons)
    if kind == "normal":
        x = rng.normal(draw(st.floats(-1, 2)), draw(st.floats(0.01, 3)), shape)
    elif kind == "large":
        x = rng.normal(0, 1e30, shape)
    elif kind == "at_threshold":  # u lands exactly on the threshold (strict >)
        x = rng.choice([0.0, threshold, -threshold, 1.0], shape)
    else:
        x = rng.integers(-3, 4, shape).astype(float)
    tau = draw(st.one_of(st.just(1.0), st.floats(1.0, 1e4)))
    alpha = draw(st.floats(0, 50))
    options = dict(
        surrogate=draw(st.sampled_from(["fast_sigmoid", "atan", "sigmoid", "triangle"])),
        reset=draw(st.sampled_from(["zero", "subtract", "none"])),
        detach_reset=draw(st.booleans()))
    return x.astype(np.float32), tau, float(threshold), alpha, options


@given(configurations())
def test_fused_equals_reference_on_random_configurations(config):
    x, tau, threshold, alpha, options = config
    kwargs = dict(tau=tau, threshold=threshold, alpha=alpha, **options)
    f_spikes, f_final, f_grads = scan_grads(fused_lif.lif_scan, x, **kwargs)
    r_spikes, r_final, r_grads = scan_grads(reference.lif_scan, x, **kwargs)
    np.testing.assert_array_equal(f_spikes, r_spikes)
    np.testing.assert_array_equal(f_final, r_final)
    if np.all(np.isfinite(r_grads["currents"])):
        assert_close_scaled(f_grads["currents"], r_grads["currents"], 1e-4)


# --------------------------------------------------- non-finite values --

NONFINITE = [np.nan, np.inf, -np.inf, 3e38, -3e38]


@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
def test_nonfinite_currents_equal_reference(reset):
    x = make_currents((3, 20, 6), seed=1)
    for i, value in enumerate(NONFINITE):
        x[i % 3, 2 + 3 * i, i] = value
    fused, f_final = fused_lif.lif_scan(x, reset=reset, return_state=True)
    ref, r_final = reference.lif_scan(x, reset=reset, return_state=True)
    np.testing.assert_array_equal(fused.numpy(), ref.numpy())
    np.testing.assert_array_equal(f_final.numpy(), r_final.numpy())  # NaNs in the same places
    assert np.all(np.isin(fused.numpy(), [0.0, 1.0]))


def test_documented_nan_and_inf_semantics():
    x = np.array([[[np.nan], [0.0]], [[np.inf], [0.0]]], np.float32)  # [2, 2, 1]
    spikes, final = fused_lif.lif_scan(x, return_state=True)
    assert spikes.numpy()[:, :, 0].tolist() == [[0.0, 0.0], [1.0, 0.0]]  # NaN never spikes
    assert np.all(np.isnan(final.numpy()))  # NaN stays; inf * (1 - 1) = NaN


def test_nan_upstream_gradient_equals_reference():
    x = tf.constant(make_currents((2, 15, 5), seed=2))
    g = np.ones((2, 15, 5), np.float32)
    g[1, 7, 3] = np.nan
    grads = []
    for scan in (fused_lif.lif_scan, reference.lif_scan):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(scan(x) * g)
        grads.append(tape.gradient(loss, x).numpy())
    np.testing.assert_array_equal(np.isnan(grads[0]), np.isnan(grads[1]))
    assert np.isnan(grads[0]).any()
    finite = ~np.isnan(grads[1])
    assert_close_scaled(grads[0][finite], grads[1][finite], 1e-5)


# ----------------------------------------------------------- bad input --

X = np.zeros((2, 3, 4), np.float32)


@pytest.mark.parametrize("scan", [fused_lif.lif_scan, reference.lif_scan], ids=["fused", "reference"])
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(currents=np.zeros((2, 3), np.float32)), ValueError, "rank 3"),
    (dict(currents=np.zeros((2, 3, 4, 5), np.float32)), ValueError, "rank 3"),
    (dict(currents=np.zeros((2, 3, 4), np.int32)), TypeError, "int32"),
    (dict(currents=np.zeros((2, 3, 4), np.float64)), TypeError, "float64"),
    (dict(currents=X, tau=0.0), ValueError, "tau"),
    (dict(currents=X, tau=-5.0), ValueError, "tau"),
    (dict(currents=X, tau=float("inf")), ValueError, "tau"),
    (dict(currents=X, tau=float("nan")), ValueError, "tau"),
    (dict(currents=X, tau=np.array([1.0, 2.0, -3.0, 4.0], np.float32)), ValueError, "tau"),
    (dict(currents=X, tau=0.5), ValueError, r"tau must be finite and >= 1"),
    (dict(currents=X, tau=-float("inf")), ValueError, "tau"),
    (dict(currents=X, tau=np.array([20.0, 0.99, 3.0, 4.0], np.float32)), ValueError, "tau"),
    (dict(currents=X, tau=np.array([20.0, -np.inf, 3.0, 4.0], np.float32)), ValueError, "tau"),
    (dict(currents=X, tau=np.ones(5, np.float32)), ValueError, "tau"),
    (dict(currents=X, tau=np.ones((2, 2), np.float32)), ValueError, "tau"),
    (dict(currents=X, threshold=float("nan")), ValueError, "threshold"),
    (dict(currents=X, threshold=np.full(4, np.nan, np.float32)), ValueError, "threshold"),
    (dict(currents=X, threshold=np.ones(3, np.float32)), ValueError, "threshold"),
    (dict(currents=X, alpha=-1.0), ValueError, "alpha"),
    (dict(currents=X, alpha=float("nan")), ValueError, "alpha"),
    (dict(currents=X, alpha="10"), TypeError, "alpha"),
    (dict(currents=X, surrogate="relu"), ValueError, "surrogate"),
    (dict(currents=X, reset="hard"), ValueError, "reset"),
    (dict(currents=X, detach_reset="yes"), TypeError, "detach_reset"),
    (dict(currents=X, bias=np.ones(3, np.float32)), ValueError, "bias"),
    (dict(currents=X, initial_membrane=np.zeros((2, 3), np.float32)), ValueError, "initial_membrane"),
    (dict(currents=X, initial_membrane=np.zeros((2, 4), np.int32)), TypeError, "initial_membrane"),
])
def test_bad_arguments(scan, kwargs, error, match):
    with pytest.raises(error, match=match):
        scan(**kwargs)


def graph_call(fn, *args):
    """Calls fn in a tf.function with unknown shapes (and ranks): neither Python
    nor the shape functions see the problem, the kernels' validation must."""
    specs = [tf.TensorSpec(None, tf.as_dtype(np.asarray(a).dtype)) for a in args]
    return tf.function(fn, input_signature=specs)(*args)


@pytest.mark.parametrize("args,match", [
    ((X, np.ones(4, np.float32), np.float32(1.5)), r"tau must be finite and >= 1"),  # decay > 1: tau < 0
    ((X, np.ones(4, np.float32), np.float32(np.nan)), r"tau must be finite and >= 1"),
    ((X, np.ones(4, np.float32), np.float32(-0.5)), r"tau must be finite and >= 1"),  # tau = 2/3
    ((X, np.ones(4, np.float32), np.ones(3, np.float32)), r"decay .* one value per neuron \[4\]"),
    ((np.zeros((2, 3), np.float32), np.ones(4, np.float32), np.float32(0.9)), r"rank 3"),
])
def test_kernel_validates_forward_inputs(args, match):
    lib = ops.load_library()

    def forward(currents, threshold, decay):
        batch, neurons = tf.shape(currents)[0], tf.shape(currents)[-1]
        return lib.fused_lif_lif_forward(currents, tf.zeros([], tf.float32), decay,
                                         threshold[0], tf.zeros([batch, neurons]))[0]

    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        graph_call(forward, *args)


@pytest.mark.parametrize("scan", [fused_lif.lif_scan, reference.lif_scan], ids=["fused", "reference"])
@pytest.mark.parametrize("tau,match", [
    ([20.0, 0.5, 3.0, 4.0], "tau must be"), ([20.0, -np.inf, 3.0, 4.0], "tau must be"),
    ([20.0, np.inf, 3.0, 4.0], "tau must be"), ([20.0, np.nan, 3.0, 4.0], "tau must be"),
    ([0.0, 2.0, 3.0, 4.0], "tau must be"),
])
def test_tau_out_of_range_in_a_graph_is_rejected_when_run(scan, tau, match):
    """In a graph the value of tau is unknown until run time: both scans reject
    it then, with the same range as the eager check (a tau of -inf used to give
    decay = 1 and pass)."""
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        graph_call_known_rank(lambda x, t: scan(x, tau=t), X, np.array(tau, np.float32))


@pytest.mark.parametrize("scan", [fused_lif.lif_scan, reference.lif_scan], ids=["fused", "reference"])
def test_threshold_nan_in_a_graph_is_rejected_when_run(scan):
    with pytest.raises(tf.errors.InvalidArgumentError, match="threshold"):
        graph_call_known_rank(lambda x, th: scan(x, threshold=th), X,
                              np.array([1, np.nan, 1, 1], np.float32))


def graph_call_known_rank(fn, *args):
    """Calls fn in a tf.function that knows ranks but no sizes or values."""
    specs = [tf.TensorSpec([None] * np.ndim(a), tf.as_dtype(np.asarray(a).dtype)) for a in args]
    return tf.function(fn, input_signature=specs)(*args)


def test_kernel_validates_threshold_and_state():
    lib = ops.load_library()
    with pytest.raises(tf.errors.InvalidArgumentError, match="threshold is NaN"):
        graph_call(lambda x, th: lib.fused_lif_lif_forward(x, 0.0, 0.9, th, tf.zeros([2, 4]))[0],
                   X, np.float32(np.nan))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"initial_membrane must have shape \[batch, neurons\] = \[2, 4\]"):
        graph_call(lambda x, v: lib.fused_lif_lif_forward(x, 0.0, 0.9, 1.0, v)[0],
                   X, np.zeros((2, 5), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="alpha"):
        lib.fused_lif_lif_forward(X, 0.0, 0.9, 1.0, tf.zeros([2, 4]), alpha=-2.0)


@pytest.mark.parametrize("shapes,match", [
    (((2, 3, 4), (2, 4), (2, 3, 5), (2, 4)), "grad_spikes must have the shape of pre_reset_membrane"),
    (((2, 3, 4), (2, 5), (2, 3, 4), (2, 4)), "grad_final_membrane must have shape"),
    (((2, 3, 4), (2, 4), (2, 3, 4), (3, 4)), "initial_membrane must have shape"),
    (((2, 3, 4), (2, 4), (2, 3), (2, 4)), "membrane must have rank 3"),
])
def test_kernel_validates_backward_inputs(shapes, match):
    lib = ops.load_library()
    args = [np.zeros(s, np.float32) for s in shapes]
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        graph_call(lambda g, gf, u, v0: lib.fused_lif_lif_backward(g, gf, u, v0, 0.0, 0.9, 1.0)[0],
                   *args)


def test_very_long_sequence_tiny_width():
    x = make_currents((1, 200_000, 1), seed=3, mean=0.2, scale=0.5)
    spikes = fused_lif.lif_scan(x, tau=5.0)
    np.testing.assert_array_equal(spikes.numpy(), oracle.forward(x, 5.0)[0])
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        loss = tf.reduce_sum(fused_lif.lif_scan(xt, tau=5.0))
    assert np.all(np.isfinite(tape.gradient(loss, xt).numpy()))


def test_strided_and_sliced_inputs():
    x = tf.constant(make_currents((4, 40, 30), seed=4))
    for view in (x[:, ::2, 1::3], tf.transpose(x, [0, 2, 1])[:, :7, :], x[1:3, 5:, :]):
        np.testing.assert_array_equal(fused_lif.lif_scan(view).numpy(),
                                      reference.lif_scan(view).numpy())


# ------------------------------------------- threads, leaks, determinism --

def test_ten_threads_share_a_layer_and_the_op():
    """Ten Python threads call one LIFLayer and lif_scan 100 times each, eager
    and in a shared tf.function, on their own inputs: every result equals the
    single-thread one, bit for bit."""
    threads_count, calls = 10, 100
    layer = fused_lif.LIFLayer(16, tau=5.0, threshold=0.8)
    layer.build((None, None, 12))
    layer_fn = tf.function(layer)
    scan_fn = tf.function(lambda x: fused_lif.lif_scan(x, tau=5.0, return_state=True))
    inputs = [make_currents((3, 10, 12), seed=100 + i, mean=0.6) for i in range(threads_count)]
    currents = [make_currents((3, 10, 16), seed=200 + i) for i in range(threads_count)]

    def results(i):
        return [layer(inputs[i]).numpy(), layer_fn(inputs[i]).numpy(),
                *[t.numpy() for t in fused_lif.lif_scan(currents[i], tau=5.0, return_state=True)],
                *[t.numpy() for t in scan_fn(currents[i])]]

    expected = [results(i) for i in range(threads_count)]
    assert any(np.any(e[0]) for e in expected) and any(np.any(e[2]) for e in expected)
    errors, mismatches = [], []

    def work(i):
        try:
            for call in range(calls):
                for got, want in zip(results(i), expected[i]):
                    if not np.array_equal(got, want):
                        mismatches.append((i, call))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads_count)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors[:3]
    assert not mismatches, mismatches[:10]


def test_concurrent_calls_equal_serial_calls():
    inputs = [make_currents((8, 50, 64), seed=s) for s in range(8)]
    serial = [scan_grads(fused_lif.lif_scan, x) for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        results[i] = scan_grads(fused_lif.lif_scan, inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[2]["currents"], want[2]["currents"])


def test_one_and_two_intra_op_threads_give_identical_results(tmp_path):
    """Every output and gradient is the same float on 1 and 2 threads: at
    batch 16, and at batch 1-4 where the neurons are cut into narrower tiles
    per thread and the parameter gradients (per neuron, and summed over
    everything) are summed on several threads."""
    code = """
        import sys, numpy as np, tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
        import fused_lif
        from conftest import scan_grads, make_currents
        out = {}
        for shape in [(16, 80, 300), (1, 60, 2085), (2, 40, 1100), (3, 40, 1500), (3, 8, 30000), (4, 6, 20000)]:
            n = shape[2]
            x = make_currents(shape, seed=5 + shape[0])
            per_neuron = dict(tau=np.linspace(2, 40, n).astype(np.float32),
                              threshold=np.array(0.8, np.float32), bias=np.array(0.01, np.float32))
            shared = dict(tau=np.array(9.0, np.float32), threshold=np.linspace(0.6, 1.2, n).astype(np.float32),
                          bias=np.zeros(n, np.float32), surrogate="sigmoid")
            for label, kwargs in (("a", per_neuron), ("b", shared)):
                s, f, g = scan_grads(fused_lif.lif_scan, x, **kwargs)
                tag = f"{shape}{label}"
                out.update({f"{tag} spikes": s, f"{tag} final": f})
                out.update({f"{tag} {k}": v for k, v in g.items()})
        np.savez(sys.argv[2], **out)
    """
    outputs = []
    for threads in (1, 2):
        path = str(tmp_path / f"t{threads}.npz")
        run_python(code, args=[str(threads), path])
        outputs.append(np.load(path))
    assert len(outputs[0].files) == 6 * 2 * 6  # spikes, final and 4 gradients
    for key in outputs[0].files:
        np.testing.assert_array_equal(outputs[0][key], outputs[1][key], err_msg=key)


def test_memory_stays_flat_over_2000_training_steps():
    out = run_python("""
        import resource, numpy as np, tensorflow as tf, keras
        import fused_lif
        model = fused_lif.create_snn_model(32, 32, 4, 10)
        opt = keras.optimizers.Adam(1e-3)
        x = tf.constant((np.random.default_rng(0).random((16, 10, 32)) < 0.3).astype(np.float32))
        y = tf.one_hot(np.arange(16) % 4, 4)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(fused_lif.spike_categorical_crossentropy(y, model(x)))
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                    model.trainable_variables))
            return loss

        def rss_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize() / 2**20

        for _ in range(200):
            step()
        start = rss_mb()
        for _ in range(2000):
            step()
        grown = rss_mb() - start
        print(f"rss growth {grown:.1f} MB")
        assert grown < 50, grown
    """, timeout=600)
    assert "rss growth" in out
