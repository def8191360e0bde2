"""Functional tests of the benchmark harness, benchmarks/harness.py (tiny
shapes; no timing assertions). Not part of the unit suite; CI runs them:

    python -m pytest -q -p no:cacheprovider benchmarks/test_harness.py
"""

import numpy as np
import pytest

import fused_lif
import harness as bm

needs_fused = pytest.mark.skipif(not fused_lif.is_available(),
                                 reason="the fused op library is not built")

TINY = bm.Shape("tiny", batch=3, time=5, inputs=7, hidden=6, outputs=4)


def test_memory_shape():
    assert bm.MEMORY_SHAPE == (64, 500, 700, 512)


def test_lif_bytes_counts_each_tensor_the_kernels_touch():
    # forward: currents in, spikes + membrane out; backward: dL/dspikes +
    # membrane in, dL/dcurrents out; 4 bytes each.
    assert bm.lif_bytes(2, 3, 5, backward=False) == 3 * 30 * 4
    assert bm.lif_bytes(2, 3, 5) == 6 * 30 * 4


def test_op_inputs_shapes():
    currents, grad = bm.op_inputs(2, 3, 4)
    assert currents.shape == grad.shape == (2, 3, 4)


def test_copy_step_copies():
    sources, one = bm.copy_inputs(bm.lif_bytes(2, 5, 100))
    assert [s.shape for s in sources] == [(1000,)] * 3  # one per tensor the LIF op writes
    assert bm.copy_bytes(sources) == bm.lif_bytes(2, 5, 100)
    outputs = bm.copy_step()(sources, one)
    for out, src in zip(outputs, sources):
        np.testing.assert_array_equal(out.numpy(), src.numpy())


@needs_fused
def test_op_functions_fused_equals_reference():
    currents, grad_spikes = bm.op_inputs(3, 17, 5)
    fused = bm.lif_forward_backward_fn("fused")(currents, grad_spikes)
    reference = bm.lif_forward_backward_fn("reference")(currents, grad_spikes)
    assert 0 < np.mean(reference[0].numpy()) < 1  # the inputs make neurons fire
    bm.assert_same_result(fused[0], reference[0], [fused[1]], [reference[1]])
    np.testing.assert_array_equal(bm.lif_forward_fn("fused")(currents).numpy(),
                                  bm.lif_forward_fn("reference")(currents).numpy())
    with pytest.raises(ValueError, match="implementation"):
        bm.lif_forward_fn("magic")


@needs_fused
def test_build_models_share_weights_and_match():
    models = bm.build_models(TINY, ("reference", "fused", "seed", "no-scan"))
    weights = [m.get_weights() for m in models.values()]
    for other in weights[1:]:
        for a, b in zip(weights[0], other):
            np.testing.assert_array_equal(a, b)
    x, y = bm.model_inputs(TINY)
    check = bm.compare_models(models["fused"], models["reference"], x, y)
    assert check["spikes_equal"] and check["max_abs_diff"] < 1e-5
    bm.compare_models(models["seed"], models["reference"], x, y)  # the seed's own layer
    assert models["no-scan"](x).shape == (3, 5, 4)


def test_no_scan_model_is_the_matmuls_and_their_gradients():
    import tensorflow as tf

    model = bm.build_models(TINY, ("no-scan",))["no-scan"]
    w1, b1, w2, b2 = (v for v in model.trainable_variables)
    for b in (b1, b2):  # the LIF op adds the bias: removed with it
        b.assign(tf.ones_like(b))
    x, y = bm.model_inputs(TINY, rate=0.5)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tf.reduce_sum(out * tf.random.stateless_normal(out.shape, [1, 2]))
    grads = tape.gradient(loss, [w1, b1, w2, b2])
    with tf.GradientTape() as tape:
        x2d = tf.reshape(x, [-1, TINY.inputs])
        want = tf.reshape(x2d @ w1 @ w2, out.shape)
        loss_want = tf.reduce_sum(want * tf.random.stateless_normal(out.shape, [1, 2]))
    want_grads = tape.gradient(loss_want, [w1, w2])
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[0].numpy(), want_grads[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[2].numpy(), want_grads[1].numpy(), rtol=1e-5, atol=1e-6)
    for g, b in ((grads[1], b1), (grads[3], b2)):  # Adam still updates the biases
        np.testing.assert_array_equal(g.numpy(), np.zeros(b.shape))


def _signature(op):
    """A GEMM by what it computes: output shape and transposes."""
    return (tuple(op.outputs[0].shape), op.get_attr("transpose_a"), op.get_attr("transpose_b"))


@needs_fused
def test_no_scan_step_runs_the_fused_steps_gemms_never_more_at_once():
    models = bm.build_models(TINY, ("fused", "no-scan"))
    x, y = bm.model_inputs(TINY)
    schedules = {name: bm.gemm_schedule(bm.training_step(model), x, y)
                 for name, model in models.items()}
    gemms = {name: sorted(_signature(op) for op in s[0]) for name, s in schedules.items()}
    assert len(gemms["fused"]) == 5  # no dX of the input layer
    assert gemms["no-scan"] == gemms["fused"]
    pairs = {name: {frozenset((_signature(a), _signature(b))) for a, b in s[1]}
             for name, s in schedules.items()}
    # Only layer 2's dW and dX may run at once (both wait only for the scan's
    # backward in the fused step); layer 1's dW waits for both.
    dw2 = ((TINY.hidden, TINY.outputs), True, False)
    dx2 = ((TINY.batch * TINY.time, TINY.hidden), False, True)
    assert pairs["no-scan"] == {frozenset((dw2, dx2))}
    assert pairs["no-scan"] <= pairs["fused"]


def test_gemm_floor_runs_one_gemm_at_a_time():
    """In the profiler's trace (after Grappler), not only in the graph."""
    calls = 3
    matmuls, overlapping = bm.gemm_overlaps(
        bm.gemm_floor_step(), bm.gemm_floor_inputs("seed"), calls=calls)
    assert matmuls == calls * len(bm.FLOOR_GEMMS)
    assert overlapping == []


@needs_fused
def test_notebook_fit_runs_one_epoch():
    for implementation in ("fused", "no-scan"):
        model, fit, (x, y) = bm.notebook_fit(implementation, samples=40, time_steps=2)
        assert x.shape == (40, 2, 784) and y.shape == (40, 10)
        history, seconds = fit(2)
        assert len(history.history["loss"]) == 2 and "val_loss" in history.history
        assert len(seconds) == 2 and all(t > 0 for t in seconds)


@needs_fused
def test_layer_step_peak_memory_in_subprocess():
    shape = (2, 4, 5, 3)
    fused = bm.layer_step_peak_memory("fused", shape)
    reference = bm.layer_step_peak_memory("reference", shape)
    for r in (fused, reference):
        assert r["shape"] == list(shape)
        assert r["delta_mib"] >= 0 and r["peak_mib"] >= r["baseline_mib"] > 0
    assert fused["spike_count"] == reference["spike_count"]
    np.testing.assert_allclose(fused["grad_norms"], reference["grad_norms"], rtol=1e-5)
    with pytest.raises(ValueError, match="implementation"):
        bm.layer_step_peak_memory("magic", shape)


def _result(kind, median, **info):
    return {"stats": {"median": median}, "extra_info": dict(kind=kind, **info)}


def test_ratio_table_from_benchmark_json():
    op_bytes = bm.lif_bytes(128, 100, 512)
    alone = [_result("gemm-alone", 0.020, shape="medium", implementation="gemm-alone", gemm=g[0])
             for g in bm.FLOOR_GEMMS]
    data = {"benchmarks": alone + [
        _result("model-step", 0.010, shape="seed", implementation="reference"),
        _result("model-step", 0.002, shape="seed", implementation="fused"),
        _result("gemm-floor", 0.0018, shape="seed", implementation="gemm-floor"),
        _result("model-step", 0.004, shape="seed", implementation="no-scan"),
        _result("model-step", 0.120, shape="medium", implementation="fused"),
        _result("model-step", 0.100, shape="medium", implementation="no-scan"),
        _result("model-step", 0.114, shape="medium", implementation="fused-dfa"),
        _result("model-step", 0.0021, shape="seed", implementation="fused-dfa"),
        _result("gemm-floor", 0.100, shape="medium", implementation="gemm-floor"),
        _result("model-step-spikes", 0.055, shape="medium", implementation="fused-sparse",
               input_density=0.1),
        _result("model-step-spikes", 0.050, shape="medium", implementation="fused-auto",
               input_density=0.1),
        _result("model-step-spikes", 0.100, shape="medium", implementation="fused",
               input_density=0.5),
        _result("model-step-spikes", 0.090, shape="medium", implementation="fused",
               input_density=0.1),
        _result("model-step-spikes", 0.104, shape="medium", implementation="fused-auto",
               input_density=0.5),
        *[_result("spike-matmul-backward", median, shape="medium", density=density,
                  implementation=name)
          for density, dense, sparse in ((0.1, 1.0, 0.2), (0.3, 1.0, 0.8), (0.5, 1.0, 1.2))
          for name, median in (("dense", dense), ("sparse", sparse))],
        _result("op-forward-backward", 0.010, shape="medium", implementation="fused",
               bytes=op_bytes),
        _result("copy", 0.008, shape="medium", bytes=op_bytes),
        _result("peak-memory", 9.0, implementation="fused", memory_shape=[64, 500, 700, 512],
               delta_mib=150.0),
        _result("peak-memory", 9.0, implementation="reference",
               memory_shape=[64, 500, 700, 512], delta_mib=1000.0),
        _result("notebook-fit", 2.0, shape="seed", implementation="reference", epochs=6,
               first_epoch_s=1.0, epoch_median_s=0.25),
        _result("notebook-fit", 1.2, shape="seed", implementation="fused", epochs=6,
               first_epoch_s=0.6, epoch_median_s=0.15),
        _result("notebook-fit", 1.0, shape="seed", implementation="no-scan", epochs=6,
               first_epoch_s=0.5, epoch_median_s=0.125),
    ]}
    rows, markdown = bm.ratio_table(data)
    found = {(r["target"], r["shape"]): r for r in rows}
    # Against the step without the scan, at every shape.
    no_scan = found[("training step: fused / without the scan", "medium")]
    assert no_scan["measured"] == pytest.approx(1.2) and no_scan["verdict"] == "MISSED"
    seed = found[("training step: fused / without the scan", "seed")]
    assert seed["measured"] == pytest.approx(0.5) and seed["verdict"] == "met"
    assert "BELOW 1" in seed["detail"]  # faster than its own lower bound: flagged
    # Against the GEMM floor: a target at medium and large only.
    floor = found[("training step: fused / GEMM floor", "medium")]
    assert floor["measured"] == pytest.approx(1.2) and floor["verdict"] == "MISSED"
    assert "BELOW 1" not in floor["detail"]
    assert found[("training step: fused / GEMM floor (info)", "seed")]["verdict"] == "-"
    in_sequence = found[("GEMM floor / sum of its GEMMs timed alone", "medium")]
    assert in_sequence["measured"] == pytest.approx(1.0) and in_sequence["verdict"] == "met"
    assert ("GEMM floor / sum of its GEMMs timed alone", "seed") not in found  # none alone
    small = bm.ratio_table({"benchmarks": [
        _result("gemm-floor", 0.002, shape="seed", implementation="gemm-floor")] + [
        _result("gemm-alone", 0.001, shape="seed", implementation="gemm-alone", gemm=g[0])
        for g in bm.FLOOR_GEMMS]})[0]
    small = [r for r in small if r["target"].startswith("GEMM floor / sum")]
    # Under 10 ms, each GEMM's own function call weighs on the sum: information.
    assert len(small) == 1 and small[0]["measured"] == pytest.approx(0.4)
    assert small[0]["verdict"] == "-"
    # reference / fused: information beside the targets.
    speedup = found[("training step: reference / fused (info)", "seed")]
    assert speedup["measured"] == pytest.approx(5.0) and speedup["verdict"] == "-"
    assert "can reach is 2.50x" in speedup["detail"]  # reference / step without the scan
    # The sparse path against the dense floor; "not run" where it is absent.
    sparse = found[("sparse-input training step / dense GEMM floor", "medium")]
    assert sparse["measured"] == pytest.approx(0.55) and sparse["verdict"] == "met"
    auto = found[('spike_input="auto" / dense step, 50% input', "medium")]
    assert auto["measured"] == pytest.approx(1.04) and auto["verdict"] == "met"
    faster = found[('spike_input="auto" / dense step, 10% input', "medium")]
    assert faster["measured"] == pytest.approx(0.5 / 0.9) and faster["verdict"] == "met"
    # Interpolated where sparse / dense crosses 1: 0.8 at 30%, 1.2 at 50%.
    assert found[("spike_matmul break-even density (forward + dW)", "medium")][
        "measured_text"] == "40%"
    absent = found[("sparse-input training step / dense GEMM floor", "large")]
    assert absent["verdict"] == "not run" and absent["measured"] is None
    dfa = found[("training step: DFA / backprop", "medium")]
    assert dfa["measured"] == pytest.approx(0.95) and dfa["verdict"] == "met"
    assert found[("training step: DFA / backprop (info)", "seed")]["verdict"] == "-"
    bandwidth = found[("LIF op fwd+bwd: bandwidth / copy bandwidth", "medium")]
    assert bandwidth["measured"] == pytest.approx(0.8) and bandwidth["verdict"] == "MISSED"
    memory = found[("peak host memory, one layer step: fused / reference", "64x500x700x512")]
    assert memory["measured"] == pytest.approx(0.15) and memory["verdict"] == "met"
    fit = found[("seed notebook model.fit epoch: fused / without the scan", "seed")]
    assert fit["measured"] == pytest.approx(1.2) and fit["verdict"] == "MISSED"
    fit_speedup = found[("seed notebook model.fit epoch: reference / fused (info)", "seed")]
    assert fit_speedup["measured"] == pytest.approx(5 / 3) and fit_speedup["verdict"] == "-"
    assert "can reach is 2.00x" in fit_speedup["detail"]
    assert markdown.startswith("| target |") and markdown.count("\n") == len(rows) + 1
    # An empty run: only the rows that say what was not run.
    assert {r["verdict"] for r in bm.ratio_table({"benchmarks": []})[0]} == {"not run"}


def test_machine_load_probes():
    load = bm.OtherLoad()
    idle = bm.cpu_idle_fraction(0.05)
    fraction = load.fraction()
    for value in (idle, fraction):
        assert value is None or 0.0 <= value <= 1.0


def test_break_even_interpolates_where_sparse_stops_winning():
    assert bm.break_even([(0.1, 1.0, 0.2), (0.3, 1.0, 0.8), (0.5, 1.0, 1.2)]) == pytest.approx(0.4)
    assert bm.break_even([(0.1, 1.0, 0.2), (0.5, 2.0, 1.0)]) is None  # sparse wins throughout
    assert bm.break_even([(0.01, 1.0, 1.5), (0.1, 1.0, 2.0)]) == 0.01  # never wins
