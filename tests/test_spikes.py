"""fused_lif.spike_matmul (binary spikes @ weights, zeros skipped) and
LIFLayer(spike_input=...): the sparse product against tf.matmul and a float64
numpy oracle, its gradients, every option of the layer, and bad input."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import fused_lif
from fused_lif import spikes as spikes_module

pytestmark = pytest.mark.skipif(not fused_lif.is_available(),
                                reason="the fused op library is not built")

EPS = {tf.float32: 2.0 ** -24, tf.float16: 2.0 ** -11, tf.bfloat16: 2.0 ** -8}


def spikes_of(shape, density, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < density).astype(dtype)


def weights_of(shape, seed=1, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def sum_bound(x, w, dtype=tf.float32):
    """A rounding bound for float sums of |terms| in index order: (terms + 1)
    * eps * Σ|terms| per output element (accumulated in float32, then the
    output rounded to dtype)."""
    a, b = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    terms = a.sum(axis=1, keepdims=True) if a.ndim == 2 else None
    magnitude = a @ b
    return (terms + 1) * 2.0 ** -24 * magnitude + EPS[dtype] * magnitude + 1e-30


# ------------------------------------------------------------ forward ----

@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 3), (64, 300, 129), (300, 784, 256),
                                   (513, 40, 10)])
@pytest.mark.parametrize("density", [0.01, 0.1, 0.5])
def test_forward_matches_float64_and_dense(shape, density):
    m, k, n = shape
    x, w = spikes_of((m, k), density), weights_of((k, n))
    out = fused_lif.spike_matmul(x, w).numpy()
    exact = x.astype(np.float64) @ w.astype(np.float64)
    assert np.all(np.abs(out - exact) <= sum_bound(x, w))
    dense = tf.matmul(x, w).numpy()
    assert np.all(np.abs(out - dense) <= 2 * sum_bound(x, w))


def test_forward_sums_rows_in_index_order():
    """Exactly Σ_k W[k] in float32, k ascending (not just close)."""
    x, w = spikes_of((50, 200), 0.3, seed=3), weights_of((200, 140), seed=4)
    expected = np.zeros((50, 140), np.float32)
    for m in range(50):
        for k in np.flatnonzero(x[m]):
            expected[m] += w[k]
    np.testing.assert_array_equal(fused_lif.spike_matmul(x, w).numpy(), expected)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_forward_low_precision_accumulates_in_float(dtype):
    x = spikes_of((40, 500), 0.5)
    w = weights_of((500, 33))
    wd = tf.cast(w, dtype)
    out = fused_lif.spike_matmul(tf.cast(x, dtype), wd)
    assert out.dtype == dtype
    exact = x.astype(np.float64) @ tf.cast(wd, tf.float64).numpy()
    # Summed in float32 and rounded once: within an output ulp of the exact sum.
    err = np.abs(tf.cast(out, tf.float64).numpy() - exact)
    assert np.all(err <= EPS[dtype] * np.abs(exact) + sum_bound(x, w) + 1e-6)


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_empty(shape):
    m, k, n = shape
    x, w = np.zeros((m, k), np.float32), weights_of((k, n))
    out = fused_lif.spike_matmul(x, w)
    assert out.shape == (m, n)
    np.testing.assert_array_equal(out.numpy(), np.zeros((m, n)))
    with tf.GradientTape() as tape:
        xt, wt = tf.constant(x), tf.Variable(w)
        tape.watch(xt)
        loss = tf.reduce_sum(fused_lif.spike_matmul(xt, wt))
    gx, gw = tape.gradient(loss, [xt, wt])
    assert gx.shape == (m, k) and gw.shape == (k, n)
    np.testing.assert_array_equal(gw.numpy(), np.zeros((k, n)))


@pytest.mark.parametrize("value", [0.0, 1.0], ids=["all-zeros", "all-ones"])
def test_all_zeros_and_all_ones(value):
    x, w = np.full((300, 257), value, np.float32), weights_of((257, 130))
    out = fused_lif.spike_matmul(x, w).numpy()
    exact = x.astype(np.float64) @ w.astype(np.float64)
    assert np.all(np.abs(out - exact) <= sum_bound(x, w))
    if value == 0.0:
        assert not out.any()


# ---------------------------------------------------------- gradients ----

@pytest.mark.parametrize("shape", [(3, 4, 5), (300, 784, 256), (700, 64, 10), (260, 50, 300)])
@pytest.mark.parametrize("density", [0.05, 0.4])
def test_gradients_match_float64(shape, density):
    m, k, n = shape
    x, w = spikes_of((m, k), density, seed=5), weights_of((k, n), seed=6)
    g = weights_of((m, n), seed=7)
    xt, wt = tf.constant(x), tf.Variable(w)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(fused_lif.spike_matmul(xt, wt) * g)
    gx, gw = tape.gradient(loss, [xt, wt])
    gw_exact = x.T.astype(np.float64) @ g.astype(np.float64)
    assert np.all(np.abs(gw.numpy() - gw_exact) <= sum_bound(x.T, g))
    gx_exact = g.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(gx.numpy(), gx_exact, rtol=1e-4, atol=1e-4 * np.abs(gx_exact).max())
    # ... and against the dense matmul's autodiff.
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(tf.matmul(xt, wt) * g)
    dx, dw = tape.gradient(loss, [xt, wt])
    np.testing.assert_allclose(gw.numpy(), dw.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx.numpy(), dx.numpy(), rtol=1e-5, atol=1e-5)


def test_weight_gradient_sums_rows_in_index_order():
    x, g = spikes_of((600, 30), 0.2, seed=8), weights_of((600, 140), seed=9)
    expected = np.zeros((30, 140), np.float32)
    for k in range(30):
        for m in np.flatnonzero(x[:, k]):
            expected[k] += g[m]
    wt = tf.Variable(weights_of((30, 140)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fused_lif.spike_matmul(x, wt) * g)
    np.testing.assert_array_equal(tape.gradient(loss, wt).numpy(), expected)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_weight_gradient_low_precision(dtype):
    x, g = spikes_of((500, 40), 0.3), weights_of((500, 20))
    wt = tf.Variable(tf.cast(weights_of((40, 20)), dtype))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(fused_lif.spike_matmul(tf.cast(x, dtype), wt), tf.float32)
                             * tf.cast(tf.cast(g, dtype), tf.float32))
    gw = tape.gradient(loss, wt)
    assert gw.dtype == dtype
    exact = x.T.astype(np.float64) @ tf.cast(tf.cast(g, dtype), tf.float64).numpy()
    err = np.abs(tf.cast(gw, tf.float64).numpy() - exact)
    assert np.all(err <= EPS[dtype] * np.abs(exact) + sum_bound(x.T, g) + 1e-6)


def test_gradient_in_tf_function_and_input_gradient_pruned():
    x, w = spikes_of((64, 32), 0.2), weights_of((32, 16))
    wt = tf.Variable(w)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fused_lif.spike_matmul(x, wt) ** 2)
        return tape.gradient(loss, wt)

    gw = step(tf.constant(x)).numpy()
    out = x.astype(np.float64) @ w
    np.testing.assert_allclose(gw, x.T @ (2 * out), rtol=1e-4, atol=1e-4)
    graph = step.get_concrete_function(tf.constant(x)).graph
    types = [op.type for op in graph.get_operations()]
    assert "FusedLif>SpikeMatmulWeightGrad" in types
    assert "MatMul" not in types  # dX = g @ Wᵀ: nothing needs it


def test_deterministic_across_thread_counts(tmp_path):
    """The same bits on 1, 2 and 4 intra-op threads (one subprocess each)."""
    script = textwrap.dedent("""
        import sys, numpy as np, tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
        import fused_lif
        rng = np.random.default_rng(0)
        x = (rng.random((3000, 300)) < 0.1).astype(np.float32)
        w = tf.Variable(rng.normal(size=(300, 640)).astype(np.float32))
        g = rng.normal(size=(3000, 640)).astype(np.float32)
        with tf.GradientTape() as tape:
            out = fused_lif.spike_matmul(x, w)
            loss = tf.reduce_sum(out * g)
        gw = tape.gradient(loss, w)
        # One column tile (100 outputs): dW's rows split over the threads.
        w1 = tf.Variable(rng.normal(size=(300, 100)).astype(np.float32))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fused_lif.spike_matmul(x, w1) * g[:, :100])
        gw1 = tape.gradient(loss, w1)
        np.save(sys.argv[2], np.concatenate([out.numpy().ravel(), gw.numpy().ravel(),
                                             gw1.numpy().ravel()]))
    """)
    results = []
    for threads in (1, 2, 4):
        path = tmp_path / f"threads_{threads}.npy"
        subprocess.run([sys.executable, "-c", script, str(threads), str(path)], check=True)
        results.append(np.load(path))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_second_order_gradient_raises():
    """No gradient of the weight-gradient op: asking for one raises, it never
    gives silent zeros (as for the LIF op)."""
    x = tf.constant(spikes_of((20, 8), 0.3))
    w = tf.Variable(weights_of((8, 5)))
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_sum(fused_lif.spike_matmul(x, w) ** 2)
        gw = inner.gradient(loss, w)
        total = tf.reduce_sum(gw)
    with pytest.raises(LookupError, match="FusedLif>SpikeMatmulWeightGrad"):
        outer.gradient(total, w)


# ---------------------------------------------------------- bad input ----

@pytest.mark.parametrize("value, text", [(0.5, "0.5"), (-1.0, "-1"), (2.0, "2"),
                                         (np.nan, "nan"), (np.inf, "inf")], ids=str)
@pytest.mark.parametrize("rows, first, later", [(300, 123, 200), (40000, 21000, 39000)],
                         ids=["inline", "threads"])
def test_non_binary_input_is_rejected_with_value_and_position(value, text, rows, first, later):
    """The first bad value (in row order) is named, also when the rows are
    counted on several threads and a later shard finds its own first."""
    x = spikes_of((rows, 70), 0.2)
    x[later, 3] = value
    x[first, 45] = value
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"binary \(every value 0 or 1\), got {text} at \[{first}, 45\]"):
        fused_lif.spike_matmul(x, weights_of((70, 20)))


@pytest.mark.parametrize("spikes_shape, weights_shape, match", [
    ((4,), (4, 3), "spikes must have rank 2"),
    ((2, 4, 5), (5, 3), "spikes must have rank 2"),
    ((4, 5), (5,), "weights must have rank 2"),
    ((4, 5), (6, 3), "must agree on inputs"),
])
def test_wrong_shapes_are_rejected(spikes_shape, weights_shape, match):
    with pytest.raises(ValueError, match=match):
        fused_lif.spike_matmul(np.zeros(spikes_shape, np.float32),
                               np.zeros(weights_shape, np.float32))


def test_wrong_shapes_in_graph_with_unknown_dims_are_rejected():
    f = tf.function(fused_lif.spike_matmul, input_signature=[
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must agree on inputs"):
        f(tf.zeros([3, 4]), tf.zeros([5, 2]))


@pytest.mark.parametrize("spikes_dtype, weights_dtype, match", [
    (np.float64, np.float64, "float32, float16 or bfloat16, got float64"),
    (np.int32, np.int32, "float32, float16 or bfloat16, got int32"),
    (np.float32, np.float16, "same dtype"),
])
def test_wrong_dtypes_are_rejected(spikes_dtype, weights_dtype, match):
    with pytest.raises(TypeError, match=match):
        fused_lif.spike_matmul(np.zeros((2, 3), spikes_dtype), np.zeros((3, 4), weights_dtype))


def test_weight_gradient_op_rejects_bad_row_lists():
    lib = fused_lif.ops.load_library()
    g, w = tf.zeros([2, 3]), tf.zeros([4, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="not the row lists"):
        lib.fused_lif_spike_matmul_weight_grad(g, tf.constant([0, 1, 2], tf.int64),
                                               tf.constant([0, 9], tf.int32), w)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"row_ptr must have shape"):
        lib.fused_lif_spike_matmul_weight_grad(g, tf.constant([0, 1], tf.int64),
                                               tf.constant([0], tf.int32), w)


def test_spike_density():
    x = spikes_of((100, 50), 0.2)
    density, binary = fused_lif.spike_density(x)
    assert bool(binary) and float(density) == pytest.approx(x.mean(), abs=1e-7)
    x[3, 4] = np.nan
    assert not bool(fused_lif.spike_density(x)[1])
    density, binary = fused_lif.spike_density(np.zeros((0, 7), np.float32))
    assert float(density) == 0.0 and bool(binary)


# ---------------------------------------------------------------- layer ----

def layer_pair(spike_input, features=60, units=72, **kwargs):
    dense = fused_lif.LIFLayer(units, **kwargs)
    sparse = fused_lif.LIFLayer(units, spike_input=spike_input, **kwargs)
    dense.build((None, None, features))
    sparse.build((None, None, features))
    sparse.set_weights(dense.get_weights())
    return dense, sparse


def layer_grads(layer, x, g):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x)
        loss = tf.reduce_sum(tf.cast(out, tf.float32) * g)
    return out, tape.gradient(loss, [x] + layer.trainable_weights)


@pytest.mark.parametrize("spike_input", [True, "auto"])
@pytest.mark.parametrize("options", [
    dict(),
    dict(surrogate="atan", reset="subtract"),
    dict(surrogate="sigmoid", reset="none", detach_reset=False),
    dict(surrogate="triangle", reset="zero", detach_reset=True, trainable_tau=True,
         trainable_threshold=True),
    dict(implementation="reference"),
], ids=["default", "atan-subtract", "sigmoid-none", "triangle-detach-trainable", "reference"])
def test_layer_sparse_matches_dense(spike_input, options, sparse_runs):
    x = spikes_of((6, 12, 60), 0.15, seed=10)
    g = weights_of((6, 12, 72), seed=11)
    dense, sparse = layer_pair(spike_input, **options)
    out_d, grads_d = layer_grads(dense, x, g)
    out_s, grads_s = layer_grads(sparse, x, g)
    assert sparse_runs == [1]  # "auto" took the sparse path too (15% < its break-even)
    # Currents equal to rounding: a spike flips only where a current sits at
    # the threshold to the last bits; none does with these draws.
    np.testing.assert_array_equal(out_s.numpy(), out_d.numpy())
    for a, b in zip(grads_s, grads_d):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_layer_sparse_low_precision(dtype):
    x = spikes_of((4, 10, 60), 0.2, seed=12)
    dense, sparse = layer_pair(True, dtype=keras.DTypePolicy(f"mixed_{dtype}"))
    out_d = dense(tf.cast(x, dtype)).numpy().astype(np.float32)
    out_s = sparse(tf.cast(x, dtype)).numpy().astype(np.float32)
    assert out_s.shape == out_d.shape
    # Low-precision currents may round differently: most spikes agree.
    assert np.mean(out_s == out_d) > 0.97


def test_layer_default_is_the_dense_matmul():
    layer = fused_lif.LIFLayer(8)
    assert layer.spike_input is False
    x = tf.constant(spikes_of((2, 3, 5), 0.5))

    @tf.function
    def f(x):
        return layer(x)

    types = {op.type for op in f.get_concrete_function(x).graph.get_operations()}
    assert "MatMul" in types and not any(t.startswith("FusedLif>Spike") for t in types)


def test_layer_spike_input_true_rejects_non_binary_input():
    layer = fused_lif.LIFLayer(8, spike_input=True)
    x = spikes_of((2, 3, 5), 0.5)
    x[1, 2, 4] = 0.25
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got 0.25 at \[5, 4\]"):
        layer(x)


def test_layer_auto_routes_non_binary_and_dense_input_to_the_dense_matmul(monkeypatch):
    units = spikes_module.SPIKE_MIN_UNITS
    dense, auto = layer_pair("auto", features=30, units=units)
    calls = []
    real = spikes_module.spike_matmul
    monkeypatch.setattr(spikes_module, "spike_matmul",
                        lambda x, w: calls.append(1) or real(x, w))
    rng = np.random.default_rng(13)
    non_binary = rng.normal(size=(3, 7, 30)).astype(np.float32)
    nan = spikes_of((3, 7, 30), 0.1)
    nan[0, 0, 0] = np.nan
    for x in (non_binary, nan, spikes_of((3, 7, 30), 0.9)):  # the last above the break-even
        np.testing.assert_array_equal(auto(x).numpy(), dense(x).numpy())
    assert not calls  # eager tf.cond runs the taken branch only
    x = spikes_of((3, 7, 30), 0.05)
    np.testing.assert_array_equal(auto(x).numpy(), dense(x).numpy())
    assert calls == [1]


@pytest.fixture
def sparse_runs(monkeypatch):
    """A list that gets an entry each time the layer's spike_matmul RUNS (a
    py_function in its branch: a traced but untaken tf.cond branch adds none)."""
    runs = []
    real = spikes_module.spike_matmul

    def counted(x, w):
        out = real(x, w)
        mark = tf.py_function(lambda: runs.append(1) or np.int32(0), [], tf.int32)
        with tf.control_dependencies([mark]):
            return tf.identity(out)

    monkeypatch.setattr(spikes_module, "spike_matmul", counted)
    return runs


def test_layer_auto_in_graph_picks_when_the_step_runs(sparse_runs):
    layer = fused_lif.LIFLayer(spikes_module.SPIKE_MIN_UNITS + 6, spike_input="auto")
    layer.build((None, None, 30))
    dense = fused_lif.LIFLayer.from_config({**layer.get_config(), "spike_input": False})
    dense.build((None, None, 30))
    dense.set_weights(layer.get_weights())
    f = tf.function(layer)
    types = {op.type for op in f.get_concrete_function(
        tf.TensorSpec([None, 7, 30])).graph.get_operations()}
    assert "FusedLif>SpikeDensity" in types and types & {"If", "StatelessIf"}
    for density, sparse in ((0.05, True), (0.9, False), (0.05, True)):
        x = spikes_of((3, 7, 30), density)
        before = len(sparse_runs)
        np.testing.assert_array_equal(f(x).numpy(), dense(x).numpy())
        assert len(sparse_runs) - before == int(sparse), density


@pytest.mark.parametrize("density", [0.05, 0.9], ids=["sparse-branch", "dense-branch"])
def test_layer_auto_gradients_in_tf_function(density, sparse_runs):
    """Both tf.cond branches differentiate in a graph (the sparse branch's row
    lists cross the cond) and give the dense layer's gradients."""
    dense, auto = layer_pair("auto", features=30)
    x = spikes_of((4, 6, 30), density, seed=14)
    g = weights_of((4, 6, 72), seed=15)

    def grads(layer):
        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x) * g)
            return tape.gradient(loss, [x] + layer.trainable_weights)
        return run(tf.constant(x))

    for a, b in zip(grads(auto), grads(dense)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert len(sparse_runs) == (1 if density < 0.5 else 0)


def test_layer_auto_narrow_layer_is_dense_without_measuring():
    layer = fused_lif.LIFLayer(spikes_module.SPIKE_MIN_UNITS - 1, spike_input="auto")
    f = tf.function(layer)
    types = {op.type for op in f.get_concrete_function(
        tf.TensorSpec([None, 7, 30])).graph.get_operations()}
    assert "MatMul" in types and not any(t.startswith("FusedLif>Spike") for t in types)


@pytest.mark.parametrize("bad", [1, 0, "yes", None, "Auto"])
def test_layer_rejects_bad_spike_input(bad):
    with pytest.raises(ValueError, match="spike_input must be one of"):
        fused_lif.LIFLayer(8, spike_input=bad)


@pytest.mark.parametrize("spike_input", [True, "auto"])
def test_layer_save_load_keeps_spike_input(tmp_path, spike_input):
    model = fused_lif.create_snn_model(30, 16, 4, 5, spike_input=spike_input)
    assert [l.spike_input for l in model.layers[1:]] == [spike_input] * 2
    x = spikes_of((3, 5, 30), 0.2)
    expected = model(x).numpy()
    model.save(tmp_path / "m.keras")
    script = textwrap.dedent(f"""
        import numpy as np, keras, fused_lif
        m = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        assert [l.spike_input for l in m.layers[1:]] == [{spike_input!r}] * 2
        np.save({str(tmp_path / 'y.npy')!r}, m(np.load({str(tmp_path / 'x.npy')!r})).numpy())
    """)
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_model_trains_with_sparse_input():
    model = fused_lif.create_snn_model(40, 32, 5, 8, spike_input=True, threshold=0.3)
    model.compile(optimizer="adam", loss=fused_lif.spike_categorical_crossentropy)
    x = spikes_of((16, 8, 40), 0.2)
    y = np.eye(5, dtype=np.float32)[np.arange(16) % 5]
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
