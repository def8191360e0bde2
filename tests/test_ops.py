"""The fused op against the reference (bit-identical spikes, autodiff
gradients) and against the independent numpy oracle, on every device
TensorFlow has (`device`: cpu, and gpu when one is visible)."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import fused_lif
from fused_lif import ops, reference

import oracle
from conftest import assert_close_scaled, make_currents, scan_grads

DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]


def has_gpu():
    return bool(tf.config.list_logical_devices("GPU"))


@pytest.fixture(params=DEVICES)
def device(request):
    """Runs the test body under tf.device(cpu or gpu); gpu skips without one."""
    if request.param == "gpu" and not has_gpu():
        pytest.skip("no GPU visible to TensorFlow")
    with tf.device(f"/{request.param}:0"):
        yield request.param


SHAPES = [(1, 1, 1), (2, 3, 5), (3, 17, 33), (1, 1000, 3), (4, 64, 300), (2, 5, 257)]
TAUS = [1.0, 2.5, 3.0, 20.0, 123.456]
THRESHOLDS = [0.0, 1.0, -0.5]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_spikes_bit_identical_to_reference(device, shape, tau, threshold):
    x = make_currents(shape, seed=sum(shape), mean=0.5 * threshold + 0.2, scale=1.5)
    fused, fused_final = fused_lif.lif_scan(x, tau=tau, threshold=threshold, return_state=True)
    ref, ref_final = reference.lif_scan(x, tau=tau, threshold=threshold, return_state=True)
    assert fused.dtype == tf.float32 and fused.shape == shape
    np.testing.assert_array_equal(fused.numpy(), ref.numpy())
    np.testing.assert_array_equal(fused_final.numpy(), ref_final.numpy())
    spikes, _, final = oracle.forward(x, tau, threshold)
    np.testing.assert_array_equal(fused.numpy(), spikes)
    np.testing.assert_array_equal(fused_final.numpy(), final)


def test_spikes_exist_and_reset():
    """Guards the grid above against a degenerate regime: some neurons spike,
    some do not, and a constant supra-threshold current fires periodically."""
    x = make_currents((4, 64, 300), seed=1)
    s = fused_lif.lif_scan(x).numpy()
    assert 0.05 < s.mean() < 0.95
    # I = 0.3, tau = 20: u = 0.3, 0.585, 0.856, 1.113 > 1 -> spike every 4th step.
    s = fused_lif.lif_scan(np.full((1, 12, 1), 0.3, np.float32)).numpy()[0, :, 0]
    np.testing.assert_array_equal(s, [0, 0, 0, 1] * 3)


def test_decay_rounding_matches_seed():
    """tau=3: float32(1 - 1/3) computed in double differs from float32
    arithmetic; spikes follow the seed's (double) decay."""
    assert oracle.decay_of(3.0) != np.float32(1) - np.float32(1) / np.float32(3)
    x = make_currents((8, 200, 64), seed=3, mean=0.35, scale=0.3)
    np.testing.assert_array_equal(fused_lif.lif_scan(x, tau=3.0).numpy(),
                                  oracle.forward(x, 3.0, 1.0)[0])


def test_values_exactly_at_threshold_do_not_spike():
    x = np.zeros((1, 3, 2), np.float32)
    x[0, 0] = [1.0, np.nextafter(np.float32(1.0), np.float32(2.0))]
    s = fused_lif.lif_scan(x, tau=1.0, threshold=1.0).numpy()
    np.testing.assert_array_equal(s[0, 0], [0.0, 1.0])


OPTIONS = list(itertools.product(
    ["fast_sigmoid", "atan", "sigmoid", "triangle"], ["zero", "subtract", "none"], [False, True]))


@pytest.mark.parametrize("surrogate,reset,detach_reset", OPTIONS)
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
def test_gradients_match_reference_autodiff(device, surrogate, reset, detach_reset, per_neuron):
    shape = (3, 40, 19)
    x = make_currents(shape, seed=7, mean=0.3, scale=0.8)
    rng = np.random.default_rng(5)
    kwargs = dict(alpha=2.0 if surrogate == "triangle" else 5.0, surrogate=surrogate,
                  reset=reset, detach_reset=detach_reset,
                  initial_membrane=rng.normal(0, 0.5, (3, 19)).astype(np.float32))
    if per_neuron:
        kwargs["tau"] = rng.uniform(2.0, 30.0, 19).astype(np.float32)
        kwargs["threshold"] = rng.uniform(0.5, 1.5, 19).astype(np.float32)
        kwargs["bias"] = rng.normal(0, 0.1, 19).astype(np.float32)
    else:
        kwargs["tau"] = np.float32(7.0)  # a scalar tensor: differentiable
        kwargs["threshold"] = np.float32(0.9)
    f_spikes, f_final, f_grads = scan_grads(fused_lif.lif_scan, x, **dict(kwargs))
    r_spikes, r_final, r_grads = scan_grads(reference.lif_scan, x, **dict(kwargs))
    np.testing.assert_array_equal(f_spikes, r_spikes)
    np.testing.assert_array_equal(f_final, r_final)
    assert 0.05 < f_spikes.mean() < 0.9
    assert set(f_grads) == set(r_grads)
    for name in r_grads:
        assert np.any(r_grads[name] != 0), name
        assert_close_scaled(f_grads[name], r_grads[name], 2e-5, name)


@pytest.mark.parametrize("surrogate,reset,detach_reset", OPTIONS)
def test_gradients_match_numpy_oracle(device, surrogate, reset, detach_reset):
    shape = (2, 30, 11)
    x = make_currents(shape, seed=11, mean=0.3, scale=0.8)
    rng = np.random.default_rng(6)
    tau = rng.uniform(2.0, 30.0, 11).astype(np.float32)
    threshold = rng.uniform(0.5, 1.5, 11).astype(np.float32)
    initial = rng.normal(0, 0.5, (2, 11)).astype(np.float32)
    g_spikes = rng.normal(size=shape).astype(np.float32)
    g_final = rng.normal(size=(2, 11)).astype(np.float32)
    kwargs = dict(alpha=3.0, surrogate=surrogate, reset=reset, detach_reset=detach_reset)
    xt, taut, tht, v0 = map(tf.constant, (x, tau, threshold, initial))
    with tf.GradientTape() as tape:
        tape.watch([xt, taut, tht, v0])
        decay = 1.0 - 1.0 / taut
        spikes, final = fused_lif.lif_scan(xt, tau=taut, threshold=tht, initial_membrane=v0,
                                           return_state=True, **kwargs)
        loss = tf.reduce_sum(spikes * g_spikes) + tf.reduce_sum(final * g_final)
    gx, gth, gv0, gdecay_via_tau = tape.gradient(loss, [xt, tht, v0, taut])
    e_x, e_decay, e_th, e_v0 = oracle.backward(
        g_spikes, x, tau, threshold, 3.0, surrogate, reset, detach_reset, initial, g_final)
    del decay
    assert_close_scaled(gx.numpy(), e_x, 1e-5, "currents")
    assert_close_scaled(gth.numpy(), e_th.sum(0), 1e-5, "threshold")
    assert_close_scaled(gv0.numpy(), e_v0, 1e-5, "initial_membrane")
    # d/dtau = d/ddecay * 1/tau^2
    assert_close_scaled(gdecay_via_tau.numpy(), e_decay.sum(0) / tau.astype(np.float64) ** 2,
                        1e-5, "tau")


def test_seed_gradient_through_reset_path():
    """The seed's autodiff includes d/du of v = u * (1 - s) through s; with
    detach_reset the gradient differs, so the reset path is really taken."""
    x = make_currents((2, 30, 8), seed=2)
    _, _, with_reset = scan_grads(fused_lif.lif_scan, x)
    _, _, detached = scan_grads(fused_lif.lif_scan, x, detach_reset=True)
    _, _, ref = scan_grads(reference.lif_scan, x)
    assert_close_scaled(with_reset["currents"], ref["currents"], 1e-5)
    assert not np.allclose(with_reset["currents"], detached["currents"])


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_currents(device, dtype):
    x = tf.cast(make_currents((3, 50, 20), seed=4), dtype)
    bias = tf.cast(np.linspace(-0.1, 0.1, 20), dtype)
    f_spikes, f_final, f_grads = scan_grads(fused_lif.lif_scan, x, bias=bias)
    r_spikes, r_final, r_grads = scan_grads(reference.lif_scan, x, bias=bias)
    assert fused_lif.lif_scan(x).dtype == dtype
    # The membrane is float32 in both: same currents, same spikes.
    np.testing.assert_array_equal(f_spikes, r_spikes)
    np.testing.assert_array_equal(f_final, r_final)
    for name in r_grads:
        assert_close_scaled(f_grads[name], r_grads[name], 1e-2, name)


def test_tf_function_unknown_shapes():
    fn = tf.function(
        lambda x: fused_lif.lif_scan(x, tau=5.0),
        input_signature=[tf.TensorSpec([None, None, 7], tf.float32)])
    for shape in [(2, 9, 7), (5, 1, 7), (1, 300, 7)]:
        x = make_currents(shape, seed=shape[1])
        np.testing.assert_array_equal(fn(x).numpy(), reference.lif_scan(x, tau=5.0).numpy())


def test_tf_function_gradient_matches_eager():
    x = tf.constant(make_currents((4, 25, 16), seed=8))

    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fused_lif.lif_scan(x) * tf.range(16, dtype=tf.float32))
        return tape.gradient(loss, x)

    np.testing.assert_array_equal(grad(x).numpy(), tf.function(grad)(x).numpy())


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0), (0, 0, 0)], ids=str)
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_empty_dimensions(device, shape, impl):
    scan = fused_lif.lif_scan if impl == "fused" else reference.lif_scan
    x = tf.zeros(shape)
    with tf.GradientTape() as tape:
        tape.watch(x)
        spikes, final = scan(x, return_state=True)
        loss = tf.reduce_sum(spikes) + tf.reduce_sum(final)
    assert spikes.shape == shape and final.shape == (shape[0], shape[2])
    assert tape.gradient(loss, x).shape == shape


# Batch 1-4 with wide layers: on several threads the CPU kernels cut the
# neurons into narrower tiles (at batch 3 on 2 threads: 1024 wide, the last
# partial) so that the threads share the work evenly, and, past 65,536
# columns, sum the parameter gradients on several threads.
SMALL_BATCH_SHAPES = [(1, 40, 2085), (2, 30, 1100), (3, 30, 1500), (4, 12, 20000)]


@pytest.mark.parametrize("shape", [(16, 100, 128)] + SMALL_BATCH_SHAPES, ids=str)
def test_deterministic_run_to_run(device, shape):
    neurons = shape[2]
    x = make_currents(shape, seed=9)
    tau = np.linspace(2, 40, neurons).astype(np.float32)
    kwargs = dict(tau=tau, threshold=np.array(0.9, np.float32), bias=np.zeros(neurons, np.float32))
    first = scan_grads(fused_lif.lif_scan, x, **kwargs)
    for _ in range(3):
        again = scan_grads(fused_lif.lif_scan, x, **kwargs)
        np.testing.assert_array_equal(first[0], again[0])
        for name in first[2]:
            np.testing.assert_array_equal(first[2][name], again[2][name], err_msg=name)


@pytest.mark.parametrize("shape", SMALL_BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
def test_small_batch_wide_layers_match_reference(device, shape, per_neuron):
    """Narrow tiles and threaded parameter-gradient sums: spikes bit-identical
    to the reference, every gradient to float rounding, for per-neuron and
    shared (summed over everything) tau, threshold and bias."""
    batch, _, neurons = shape
    x = make_currents(shape, seed=sum(shape), mean=0.3, scale=0.8)
    rng = np.random.default_rng(neurons)
    kwargs = dict(surrogate="sigmoid", reset="subtract", alpha=4.0,
                  initial_membrane=rng.normal(0, 0.5, (batch, neurons)).astype(np.float32))
    if per_neuron:
        kwargs.update(tau=rng.uniform(2.0, 30.0, neurons).astype(np.float32),
                      threshold=rng.uniform(0.5, 1.5, neurons).astype(np.float32),
                      bias=rng.normal(0, 0.1, neurons).astype(np.float32))
    else:
        # 0-d arrays: tensors, so differentiable (Python or numpy scalars are constants)
        kwargs.update(tau=np.array(7.0, np.float32), threshold=np.array(0.9, np.float32),
                      bias=np.array(0.05, np.float32))
    f_spikes, f_final, f_grads = scan_grads(fused_lif.lif_scan, x, **dict(kwargs))
    r_spikes, r_final, r_grads = scan_grads(reference.lif_scan, x, **dict(kwargs))
    np.testing.assert_array_equal(f_spikes, r_spikes)
    np.testing.assert_array_equal(f_final, r_final)
    assert 0.02 < f_spikes.mean() < 0.9
    assert set(f_grads) == set(r_grads) == {"currents", "tau", "threshold", "initial_membrane",
                                            "bias"}
    for name in r_grads:
        assert np.any(r_grads[name] != 0), name
        assert_close_scaled(f_grads[name], r_grads[name], 2e-5, name)


def test_registered_gradient_for_forward_op():
    """The gradient is registered for the op type, so it works in graphs the
    package did not build (e.g. a restored SavedModel)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 3, 4])
        s = fused_lif.lif_scan(x)
        tf.gradients(tf.reduce_sum(s), [x])
        types = [op.type for op in graph.get_operations()]
    assert s.op.type == "FusedLif>LifForward"
    assert types.count("FusedLif>LifBackward") == 1
    assert "While" not in types and "StatelessWhile" not in types


def test_reference_empty_time_axis_unknown_statically():
    fn = tf.function(lambda x: reference.lif_scan(x),
                     input_signature=[tf.TensorSpec([None, None, 4], tf.float32)])
    assert fn(tf.zeros((2, 0, 4))).shape == (2, 0, 4)
    np.testing.assert_array_equal(fn(make_currents((2, 5, 4))).numpy(),
                                  fused_lif.lif_scan(make_currents((2, 5, 4))).numpy())


# ------------------------------------------------ no silent zero gradients --

def _raw_forward(x):
    lib = ops.load_library()
    return lib.fused_lif_lif_forward(x, tf.zeros([]), tf.constant(0.95), tf.constant(1.0),
                                     tf.zeros([x.shape[0], x.shape[2]]))


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_loss_on_pre_reset_membrane_is_refused(mode):
    """The raw op's u[t] output has no gradient: a loss on it raises, where it
    used to get zeros silently."""
    x = tf.constant(make_currents((2, 6, 3), seed=5))

    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            spikes, pre_reset, _ = _raw_forward(x)
            loss = tf.reduce_sum(spikes) + tf.reduce_sum(pre_reset ** 2)
        return tape.gradient(loss, x)

    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="not differentiable"):
        (grad if mode == "eager" else tf.function(grad))(x)


@pytest.mark.parametrize("mode", ["eager", "function", "function_in_loop"])
def test_unused_pre_reset_membrane_is_not_refused(mode):
    """Zeros that TensorFlow passes for the unused output are not a loss on it,
    also where they are built at run time (inside a while loop)."""
    x = tf.constant(make_currents((2, 6, 3), seed=5))

    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if mode == "function_in_loop":
                total = tf.while_loop(lambda i, acc: i < 2,
                                      lambda i, acc: (i + 1, acc + tf.reduce_sum(_raw_forward(x)[0])),
                                      (0, 0.0))[1]
            else:
                total = tf.reduce_sum(_raw_forward(x)[0]) + tf.reduce_sum(_raw_forward(x)[2])
        return tape.gradient(total, x)

    g = (grad if mode == "eager" else tf.function(grad))(x)
    assert np.any(g.numpy() != 0)


def test_every_differentiable_input_gets_a_gradient_and_second_order_is_refused():
    """Audit: each input of the forward op receives a gradient that depends on
    the loss (none silently zero), and differentiating the backward op raises
    instead of returning zeros."""
    x = tf.constant(make_currents((3, 8, 4), seed=6))
    inputs = [x, tf.constant(np.float32(0.1)), tf.constant(np.full(4, 0.9, np.float32)),
              tf.constant(np.full(4, 0.8, np.float32)),
              tf.constant(make_currents((3, 4), seed=7, mean=0.0, scale=0.3))]
    lib = ops.load_library()
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(inputs)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            spikes, _, final = lib.fused_lif_lif_forward(*inputs)
            loss = tf.reduce_sum(spikes * tf.range(4, dtype=tf.float32)) + tf.reduce_sum(final)
        grads = tape.gradient(loss, inputs)
        for name, g in zip(["currents", "bias", "decay", "threshold", "initial_membrane"], grads):
            assert g is not None and np.any(g.numpy() != 0), name
        second = tf.reduce_sum(grads[0])
    with pytest.raises(LookupError, match="FusedLif>LifBackward"):
        outer.gradient(second, inputs[0])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [tf.float32, tf.float16, tf.bfloat16])
@pytest.mark.parametrize("surrogate,reset,detach_reset", [
    ("fast_sigmoid", "zero", False), ("sigmoid", "subtract", False), ("atan", "none", False),
    ("triangle", "zero", True)])
def test_gpu_results_equal_cpu_bit_for_bit(dtype, surrogate, reset, detach_reset):
    """Same inputs on both devices: spikes, final membrane and every gradient
    are the same floats (no FMA contraction on the GPU, one exp, one order of
    sums)."""
    if not has_gpu():
        pytest.skip("no GPU visible to TensorFlow")
    rng = np.random.default_rng(3)
    x = make_currents((5, 60, 300), seed=3, mean=0.3, scale=0.8)
    x[0, :, :4] = [1e-39, 1e-37, -1e-38, 0.0]  # subnormals, and values that decay into them
    x = tf.cast(x, dtype)
    kwargs = dict(alpha=3.0, surrogate=surrogate, reset=reset, detach_reset=detach_reset,
                  tau=rng.uniform(2, 30, 300).astype(np.float32),
                  threshold=rng.uniform(0.6, 1.3, 300).astype(np.float32),
                  bias=tf.cast(rng.normal(0, 0.1, 300), dtype),
                  initial_membrane=rng.normal(0, 0.5, (5, 300)).astype(np.float32))
    results = {}
    for device in ("cpu", "gpu"):
        with tf.device(f"/{device}:0"):
            results[device] = scan_grads(fused_lif.lif_scan, x, **dict(kwargs))
    (c_spikes, c_final, c_grads), (g_spikes, g_final, g_grads) = results["cpu"], results["gpu"]
    np.testing.assert_array_equal(g_spikes, c_spikes)
    np.testing.assert_array_equal(g_final, c_final)
    assert set(g_grads) == set(c_grads) == {"currents", "tau", "threshold", "initial_membrane",
                                            "bias"}
    for name in c_grads:
        np.testing.assert_array_equal(g_grads[name], c_grads[name], err_msg=name)


@pytest.mark.parametrize("tau,threshold,match", [
    (np.float32(-2.0), np.float32(1.0), "tau must be finite and >= 1"),
    (np.float32(0.0), np.float32(1.0), "tau must be finite and >= 1"),
    (np.array([5.0, np.nan, 5.0, 5.0], np.float32), np.float32(1.0), "tau must be finite and >= 1.* at index 1"),
    (np.array([5.0, 0.5, 5.0, 5.0], np.float32), np.float32(1.0), "tau must be finite and >= 1.* at index 1"),
    (np.float32(5.0), np.array([1.0, 1.0, np.nan, 1.0], np.float32), "threshold is NaN at index 2"),
])
def test_invalid_tau_and_threshold_tensors_rejected_on_every_device(device, tau, threshold, match):
    """Values only known when the graph runs reach the kernel, whose checks
    (in host memory, on the GPU too) give the same error on every device."""
    x = make_currents((2, 3, 4), seed=1)

    def scan(x, tau, threshold):
        return fused_lif.lif_scan(x, tau=tau, threshold=threshold)

    specs = [tf.TensorSpec(None, tf.float32)] * 3
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        tf.function(scan, input_signature=specs)(x, tau, threshold)


def test_layer_fused_matches_reference_on_every_device(device):
    x = make_currents((3, 20, 6), seed=5)
    outputs = {}
    for implementation in ("fused", "reference"):
        keras_layer = fused_lif.LIFLayer(7, implementation=implementation, trainable_tau=True)
        keras_layer.build(x.shape)
        keras_layer.set_weights([np.linspace(-1, 1, 42, dtype=np.float32).reshape(6, 7),
                                 np.full(7, 0.05, np.float32), np.linspace(2, 20, 7, dtype=np.float32)])
        with tf.GradientTape() as tape:
            spikes = keras_layer(x)
            loss = tf.reduce_sum(spikes * np.arange(7, dtype=np.float32))
        outputs[implementation] = (spikes.numpy(),
                                   [g.numpy() for g in tape.gradient(loss, keras_layer.trainable_weights)])
    np.testing.assert_array_equal(outputs["fused"][0], outputs["reference"][0])
    for got, want in zip(outputs["fused"][1], outputs["reference"][1]):
        assert_close_scaled(got, want, 2e-5)


def test_unused_pre_reset_membrane_costs_no_check_per_step():
    """Where shapes are unknown, TensorFlow's zeros for the unused output are a
    ZerosLike: recognised when tracing, so the step runs no reduction over
    [batch, time, neurons] and no assertion (which would sync a GPU)."""
    layer = fused_lif.LIFLayer(4)
    layer.build((None, None, 3))

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3])])
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, layer.trainable_variables)

    graph = grads.get_concrete_function().graph
    types = [op.type for op in graph.get_operations()]
    assert "FusedLif>LifBackward" in types
    assert "Assert" not in types and "Any" not in types, sorted(set(types))
