"""fused_lif.recurrent_lif_scan (the FusedLif>RecurrentLif* ops and their
registered gradient) against the independent numpy oracle
(recurrent_oracle.py), on every device TensorFlow has (`device`: cpu, and
gpu when one is visible). On the oracle's 1/8 grid every forward sum is
exact: spikes and states must match bit for bit, gradients to float rounding."""

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import fused_lif
from fused_lif import ops

import recurrent_oracle as oracle
from conftest import assert_close_scaled

DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]
SURROGATES = ["fast_sigmoid", "atan", "sigmoid", "triangle"]
RESETS = ["zero", "subtract", "none"]


@pytest.fixture(params=DEVICES)
def device(request):
    """Runs the test body under tf.device(cpu or gpu); gpu skips without one."""
    if request.param == "gpu" and not tf.config.list_logical_devices("GPU"):
        pytest.skip("no GPU visible to TensorFlow")
    with tf.device(f"/{request.param}:0"):
        yield request.param


def as_tensors(p, params_as_tensors=True):
    """The grid inputs as the scan's arguments: tau, threshold and bias as
    tensors (watched, differentiable) or as they are."""
    args = {k: tf.constant(v) for k, v in p.items()
            if k in ("currents", "recurrent_kernel", "initial_membrane", "initial_spikes")}
    for name in ("tau", "threshold", "bias"):
        args[name] = tf.constant(np.float32(p[name])) if params_as_tensors else p[name]
    return args


def run(p, params_as_tensors=True, dtype=tf.float32, seed=0, **options):
    """Spikes, final membrane, final spikes and the gradients of a fixed
    random loss of the spikes and the final membrane w.r.t. every input."""
    args = as_tensors(p, params_as_tensors)
    args["currents"] = tf.cast(args["currents"], dtype)
    shape = p["currents"].shape
    rng = np.random.default_rng(seed)
    w_spikes = tf.constant(rng.normal(size=shape).astype(np.float32))
    w_final = tf.constant(rng.normal(size=(shape[0], shape[2])).astype(np.float32))
    watched = {k: v for k, v in args.items() if isinstance(v, tf.Tensor)}
    with tf.GradientTape() as tape:
        tape.watch(list(watched.values()))
        spikes, final, final_spikes = fused_lif.recurrent_lif_scan(
            args.pop("currents"), args.pop("recurrent_kernel"), return_state=True, **args,
            **options)
        loss = (tf.reduce_sum(tf.cast(spikes, tf.float32) * w_spikes)
                + tf.reduce_sum(final * w_final))
    grads = tape.gradient(loss, watched)
    return (spikes, final, final_spikes,
            {k: None if g is None else g.numpy() for k, g in grads.items()},
            w_spikes.numpy(), w_final.numpy())


def expected(p, w_spikes, w_final, alpha=10.0, surrogate="fast_sigmoid", reset="zero",
             detach_reset=False, dtype=np.float32):
    """The oracle's spikes, states and gradients in the scan's terms (tau,
    not decay; parameters summed to their shapes)."""
    spikes, u, final = oracle.forward(p["currents"], p["recurrent_kernel"], p["tau"],
                                      p["threshold"], reset, p["initial_membrane"],
                                      p["initial_spikes"], p["bias"], dtype)
    e = oracle.backward(w_spikes, spikes, u, p["recurrent_kernel"], p["tau"], p["threshold"],
                        alpha, surrogate, reset, detach_reset, p["initial_membrane"],
                        p["initial_spikes"], w_final)
    tau = np.asarray(p["tau"], np.float64)
    per = {name: np.ndim(p[name]) == 1 for name in ("tau", "threshold", "bias")}
    grads = {
        "currents": e["currents"],
        "recurrent_kernel": e["recurrent_kernel"],
        "initial_membrane": e["initial_membrane"],
        "initial_spikes": e["initial_spikes"],
        "bias": e["bias"] if per["bias"] else e["bias"].sum(),
        # d decay / d tau = 1 / tau²
        "tau": (e["decay"].sum(0) if per["tau"] else e["decay"].sum()) / tau ** 2,
        "threshold": e["threshold"].sum(0) if per["threshold"] else e["threshold"].sum(),
    }
    return spikes, final, grads


def check(p, got, alpha=10.0, surrogate="fast_sigmoid", reset="zero", detach_reset=False,
          dtype=np.float32, rtol=2e-5):
    spikes, final, final_spikes, grads, w_spikes, w_final = got
    e_spikes, e_final, e_grads = expected(p, w_spikes, w_final, alpha, surrogate, reset,
                                          detach_reset, dtype)
    np.testing.assert_array_equal(tf.cast(spikes, tf.float32).numpy(), e_spikes)
    np.testing.assert_array_equal(final.numpy(), e_final)
    last = e_spikes[:, -1] if e_spikes.shape[1] else p["initial_spikes"]
    np.testing.assert_array_equal(final_spikes.numpy(), last)
    for name, value in grads.items():
        assert value is not None, name
        assert_close_scaled(value, e_grads[name], rtol, name)


@pytest.mark.parametrize("surrogate,reset,detach",
                         list(itertools.product(SURROGATES, RESETS, [False, True])))
def test_exact_against_oracle_every_option(device, surrogate, reset, detach):
    p = oracle.grid_inputs((3, 20, 9), seed=1, per_neuron=True)
    options = dict(alpha=2.0, surrogate=surrogate, reset=reset, detach_reset=detach)
    check(p, run(p, **options), **options)


# Batch 1, one neuron, one step, no step, more rows than threads (and than the
# CPU backward's 4-row blocks), wide layers (past every tile and block size).
SHAPES = [(1, 25, 6), (4, 30, 1), (3, 1, 10), (9, 12, 40), (2, 6, 1100)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
def test_exact_against_oracle_shapes(device, shape, per_neuron):
    p = oracle.grid_inputs(shape, seed=sum(shape), per_neuron=per_neuron)
    check(p, run(p, reset="subtract", surrogate="sigmoid", alpha=4.0), reset="subtract",
          surrogate="sigmoid", alpha=4.0)


def test_empty_sequence_returns_the_initial_state(device):
    p = oracle.grid_inputs((3, 0, 5), seed=2, per_neuron=True)
    spikes, final, final_spikes, grads, _, w_final = run(p)
    assert spikes.shape == (3, 0, 5)
    np.testing.assert_array_equal(final.numpy(), p["initial_membrane"])
    np.testing.assert_array_equal(final_spikes.numpy(), p["initial_spikes"])
    np.testing.assert_array_equal(grads["initial_membrane"], w_final)
    for name in ("recurrent_kernel", "initial_spikes", "bias", "tau", "threshold"):
        assert not np.any(grads[name]), name


def test_constant_parameters_skip_their_gradients(device):
    """Python numbers for tau and threshold (param_grads=False in the op):
    every other gradient as with tensors."""
    p = oracle.grid_inputs((4, 15, 12), seed=3)
    spikes, final, final_spikes, grads, w_spikes, w_final = run(p, params_as_tensors=False)
    e_spikes, e_final, e_grads = expected(p, w_spikes, w_final)
    np.testing.assert_array_equal(spikes.numpy(), e_spikes)
    assert set(grads) == {"currents", "recurrent_kernel", "initial_membrane", "initial_spikes"}
    for name, value in grads.items():
        assert_close_scaled(value, e_grads[name], 2e-5, name)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision(device, dtype):
    """float16 and bfloat16 currents (the membrane is float32): the grid's
    values are exact in both, so spikes are still the oracle's bit for bit;
    gradients within the element type's rounding."""
    p = oracle.grid_inputs((3, 20, 16), seed=4, per_neuron=True)
    got = run(p, dtype=dtype, reset="zero")
    assert got[0].dtype == dtype
    check(p, got, dtype=dtype.as_numpy_dtype, rtol=2e-2)


def test_chunks_continue_exactly(device):
    """(final membrane, final spikes) fed back as (initial_membrane,
    initial_spikes): two chunks give the spikes of one whole run."""
    p = oracle.grid_inputs((3, 40, 20), seed=5)
    x, R = p["currents"], p["recurrent_kernel"]
    whole, whole_final, _ = fused_lif.recurrent_lif_scan(x, R, tau=4.0, return_state=True)
    first, v, s = fused_lif.recurrent_lif_scan(x[:, :13], R, tau=4.0, return_state=True)
    second, v2, _ = fused_lif.recurrent_lif_scan(x[:, 13:], R, tau=4.0, initial_membrane=v,
                                                 initial_spikes=s, return_state=True)
    np.testing.assert_array_equal(tf.concat([first, second], 1).numpy(), whole.numpy())
    np.testing.assert_array_equal(v2.numpy(), whole_final.numpy())


def test_graph_mode_with_unknown_time(device):
    """Under tf.function with the batch and time unknown until run time:
    the same spikes and gradients as eagerly, an empty sequence included."""
    p = oracle.grid_inputs((2, 10, 8), seed=6)
    R = tf.constant(p["recurrent_kernel"])

    @tf.function(input_signature=[tf.TensorSpec([None, None, 8], tf.float32),
                                  tf.TensorSpec([None, 8], tf.float32)])
    def step(x, s0):
        with tf.GradientTape() as tape:
            tape.watch([x, R, s0])
            spikes, v, s = fused_lif.recurrent_lif_scan(x, R, tau=2.0, initial_spikes=s0,
                                                        return_state=True)
            loss = tf.reduce_sum(spikes * tf.range(1.0, 9.0)) + tf.reduce_sum(v) + tf.reduce_sum(s)
        return (spikes, v, s) + tuple(tape.gradient(loss, [x, R, s0]))

    x, s0 = tf.constant(p["currents"]), tf.constant(p["initial_spikes"])
    graph = step(x, s0)
    with tf.GradientTape() as tape:
        tape.watch([x, R, s0])
        spikes, v, s = fused_lif.recurrent_lif_scan(x, R, tau=2.0, initial_spikes=s0,
                                                    return_state=True)
        loss = tf.reduce_sum(spikes * tf.range(1.0, 9.0)) + tf.reduce_sum(v) + tf.reduce_sum(s)
    eager = (spikes, v, s) + tuple(tape.gradient(loss, [x, R, s0]))
    for a, b in zip(graph, eager):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    empty = step(tf.zeros([2, 0, 8]), s0)
    np.testing.assert_array_equal(empty[2].numpy(), p["initial_spikes"])


def test_recurrent_kernel_gradient_uses_the_binary_row_kernel_on_cpu():
    """On the CPU, dL/dR comes from spike_matmul's weight-gradient kernel
    (the shifted spikes are binary), not a dense matmul."""
    p = oracle.grid_inputs((2, 5, 6), seed=7)
    R = tf.Variable(p["recurrent_kernel"])

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fused_lif.recurrent_lif_scan(x, R, tau=2.0))
        return tape.gradient(loss, R)

    with tf.device("/cpu:0"):
        graph = grad.get_concrete_function(tf.constant(p["currents"])).graph
    types = [op.type for op in graph.get_operations()]
    assert "FusedLif>SpikeMatmulWeightGrad" in types
    assert "MatMul" not in types


def test_deterministic_across_thread_counts_and_runs(tmp_path):
    """The same bits on 1, 2 and 4 intra-op threads (one subprocess each,
    each running twice), at a batch that splits over the threads."""
    script = textwrap.dedent("""
        import sys, numpy as np, tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
        import fused_lif
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(0.3, 1.0, (13, 40, 300)).astype(np.float32))
        R = tf.constant(rng.normal(0, 0.05, (300, 300)).astype(np.float32))
        tau = tf.constant(rng.uniform(2, 20, 300).astype(np.float32))
        w = tf.constant(rng.normal(size=(13, 40, 300)).astype(np.float32))
        def once():
            with tf.GradientTape() as tape:
                tape.watch([x, R, tau])
                spikes, v, _ = fused_lif.recurrent_lif_scan(x, R, tau=tau, return_state=True)
                loss = tf.reduce_sum(spikes * w) + tf.reduce_sum(v)
            grads = tape.gradient(loss, [x, R, tau])
            return np.concatenate([t.numpy().ravel() for t in [spikes, v] + grads])
        first, second = once(), once()
        assert np.array_equal(first, second), "run to run"
        np.save(sys.argv[2], first)
    """)
    results = []
    for threads in (1, 2, 4):
        path = tmp_path / f"threads_{threads}.npy"
        subprocess.run([sys.executable, "-c", script, str(threads), str(path)], check=True)
        results.append(np.load(path))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


X = np.zeros((2, 3, 4), np.float32)
R4 = np.zeros((4, 4), np.float32)


def with_value(shape, index, value):
    out = np.zeros(shape, np.float32)
    out[index] = value
    return out


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(recurrent_kernel=np.zeros((4, 5), np.float32)), ValueError,
     r"recurrent_kernel must have shape \[neurons, neurons\] = \[4, 4\], got \(4, 5\)"),
    (dict(recurrent_kernel=np.zeros((4, 4), np.int32)), TypeError,
     "recurrent_kernel must be a float tensor, got int32"),
    (dict(initial_spikes=np.zeros((2, 5), np.float32)), ValueError,
     r"initial_spikes must have shape \[batch, neurons\] = \(2, 4\), got \(2, 5\)"),
    (dict(initial_spikes=np.array([["a"] * 4] * 2)), TypeError,
     "initial_spikes must be a float, integer or bool tensor, got string"),
    (dict(initial_spikes=with_value((2, 4), (1, 2), 0.5)), ValueError,
     r"initial_spikes must be 0 or 1, got 0.5 at \[1, 2\]"),
    (dict(initial_spikes=with_value((2, 4), (0, 3), -1.0)), ValueError,
     r"initial_spikes must be 0 or 1, got -1.0 at \[0, 3\]"),
    (dict(tau=0.5), ValueError, "tau must be finite and >= 1"),
    (dict(threshold=float("nan")), ValueError, "threshold must not be NaN"),
    (dict(surrogate="relu"), ValueError, "surrogate must be one of"),
    (dict(currents=np.zeros((2, 3), np.float32)), ValueError, "rank 3"),
    (dict(currents=np.zeros((2, 3, 4), np.float64)), TypeError, "float32, float16 or bfloat16"),
])
def test_bad_input_is_a_clear_error(device, kwargs, error, match):
    args = dict(currents=X, recurrent_kernel=R4)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        fused_lif.recurrent_lif_scan(args.pop("currents"), args.pop("recurrent_kernel"), **args)


def raw_forward(currents=X, bias=0.0, kernel=R4, decay=0.5, threshold=1.0, initial=None,
                initial_spikes=None):
    """The op itself, past recurrent_lif_scan's checks: what the kernels
    validate at entry."""
    initial = np.zeros((2, 4), np.float32) if initial is None else initial
    initial_spikes = np.zeros((2, 4), np.float32) if initial_spikes is None else initial_spikes
    return ops.load_library().fused_lif_recurrent_lif_forward(
        currents, tf.constant(bias, tf.float32), kernel, tf.constant(decay, tf.float32),
        tf.constant(threshold, tf.float32), initial, initial_spikes)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel=np.zeros((4, 5), np.float32)),
     r"recurrent_kernel must have shape \[neurons, neurons\] = \[4, 4\], got shape \[4,5\]"),
    (dict(kernel=np.zeros((5, 5), np.float32)),
     r"recurrent_kernel must have shape \[neurons, neurons\] = \[4, 4\], got shape \[5,5\]"),
    (dict(initial_spikes=np.zeros((3, 4), np.float32)),
     r"initial_spikes must have shape \[batch, neurons\] = \[2, 4\], got shape \[3,4\]"),
    (dict(initial_spikes=with_value((2, 4), (1, 3), np.nan)),
     r"initial_spikes must be binary \(every value 0 or 1\), got nan at \[1, 3\]"),
    (dict(decay=float("nan")), "tau must be finite and >= 1"),
    (dict(threshold=float("nan")), "threshold is NaN"),
    (dict(bias=np.zeros(3, np.float32)), r"bias must be a scalar or a vector of one value per neuron \[4\]"),
    (dict(currents=np.zeros((2, 4), np.float32)), "currents must have rank 3"),
])
def test_op_validates_at_entry(device, kwargs, match):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=match):
        raw_forward(**kwargs)


def test_backward_op_validates_at_entry(device):
    library = ops.load_library()
    state = np.zeros((2, 4), np.float32)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError),
                       match="grad_spikes must have the shape of pre_reset_membrane"):
        library.fused_lif_recurrent_lif_backward(np.zeros((2, 2, 4), np.float32), state, X, state,
                                                 R4, 0.0, 0.5, 1.0)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError),
                       match=r"recurrent_kernel must have shape \[neurons, neurons\] = \[4, 4\]"):
        library.fused_lif_recurrent_lif_backward(X, state, X, state, np.zeros((4, 3), np.float32),
                                                 0.0, 0.5, 1.0)


def test_non_binary_initial_spikes_in_a_graph_are_refused_when_it_runs(device):
    """Values unknown until run time (a tf.function's argument): the op
    refuses them at entry, naming the value and its [row, col]."""
    @tf.function
    def scan(initial_spikes):
        return fused_lif.recurrent_lif_scan(X, R4, initial_spikes=initial_spikes)

    scan(tf.constant(with_value((2, 4), (1, 2), 1.0)))  # binary: runs
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"initial_spikes must be binary \(every value 0 or 1\), got 0.5 at "
                             r"\[1, 2\]"):
        scan(tf.constant(with_value((2, 4), (1, 2), 0.5)))


def test_tau_out_of_range_in_a_graph_is_refused_when_it_runs():
    """A tensor tau known only at run time (NaN decay past the range) is
    refused by the op, naming tau."""
    @tf.function
    def scan(tau):
        return fused_lif.recurrent_lif_scan(X, R4, tau=tau)

    with pytest.raises(tf.errors.InvalidArgumentError, match="tau must be finite and >= 1"):
        scan(tf.constant(0.5))


def test_gradient_of_pre_reset_membrane_is_refused():
    x = tf.constant(oracle.grid_inputs((2, 3, 4), seed=8)["currents"])
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, pre_reset, _ = raw_forward(currents=x)
        loss = tf.reduce_sum(pre_reset)
    with pytest.raises(ValueError, match="pre-reset membrane u\\[t\\] output of "
                                         "FusedLif>RecurrentLifForward"):
        tape.gradient(loss, x)
