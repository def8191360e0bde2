"""Functional tests of the benchmark harness, benchmarks/harness/, and of the
ratio table, benchmarks/ratios.py (tiny shapes; no timing assertions). Not
part of the unit suite; CI runs them:

    python -m pytest -q -p no:cacheprovider benchmarks/test_harness.py
"""

import os

import numpy as np
import pytest

import fused_lif
import ratios
from fused_lif._bench import assert_same_result, compare_models
from fused_lif._bench_model import (
    FLOOR_GEMMS,
    Shape,
    gemm_floor_inputs,
    gemm_floor_step,
    model_inputs,
    training_step,
)
from harness import machine, memory, model_level, op_level

needs_fused = pytest.mark.skipif(not fused_lif.is_available(),
                                 reason="the fused op library is not built")

TINY = Shape("tiny", batch=3, time=5, inputs=7, hidden=6, outputs=4)


def test_lif_bytes_counts_each_tensor_the_kernels_touch():
    # forward: currents in, spikes + membrane out; backward: dL/dspikes +
    # membrane in, dL/dcurrents out; 4 bytes each.
    assert op_level.lif_bytes(2, 3, 5, backward=False) == 3 * 30 * 4
    assert op_level.lif_bytes(2, 3, 5) == 6 * 30 * 4


def test_op_inputs_shapes():
    currents, grad = op_level.op_inputs(2, 3, 4)
    assert currents.shape == grad.shape == (2, 3, 4)


def test_copy_step_copies():
    sources, one = op_level.copy_inputs(op_level.lif_bytes(2, 5, 100))
    assert [s.shape for s in sources] == [(1000,)] * 3  # one per tensor the LIF op writes
    assert op_level.copy_bytes(sources) == op_level.lif_bytes(2, 5, 100)
    outputs = op_level.copy_step()(sources, one)
    for out, src in zip(outputs, sources):
        np.testing.assert_array_equal(out.numpy(), src.numpy())


@needs_fused
def test_op_functions_fused_equals_reference():
    currents, grad_spikes = op_level.op_inputs(3, 17, 5)
    fused = op_level.lif_forward_backward_fn("fused")(currents, grad_spikes)
    reference = op_level.lif_forward_backward_fn("reference")(currents, grad_spikes)
    assert 0 < np.mean(reference[0].numpy()) < 1  # the inputs make neurons fire
    assert_same_result(fused[0], reference[0], [fused[1]], [reference[1]])
    np.testing.assert_array_equal(op_level.lif_forward_fn("fused")(currents).numpy(),
                                  op_level.lif_forward_fn("reference")(currents).numpy())
    with pytest.raises(ValueError, match="implementation"):
        op_level.lif_forward_fn("magic")


@needs_fused
def test_build_models_share_weights_and_match():
    models = model_level.build_models(TINY, ("reference", "fused", "seed", "no-scan"))
    weights = [m.get_weights() for m in models.values()]
    for other in weights[1:]:
        for a, b in zip(weights[0], other):
            np.testing.assert_array_equal(a, b)
    x, y = model_inputs(TINY)
    check = compare_models(models["fused"], models["reference"], x, y)
    assert check["spikes_equal"] and check["max_abs_diff"] < 1e-5
    compare_models(models["seed"], models["reference"], x, y)  # the seed's own layer
    assert models["no-scan"](x).shape == (3, 5, 4)


def test_no_scan_model_is_the_matmuls_and_their_gradients():
    import tensorflow as tf

    model = model_level.build_models(TINY, ("no-scan",))["no-scan"]
    w1, b1, w2, b2 = (v for v in model.trainable_variables)
    for b in (b1, b2):  # the LIF op adds the bias: removed with it
        b.assign(tf.ones_like(b))
    x, y = model_inputs(TINY, rate=0.5)
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
    models = model_level.build_models(TINY, ("fused", "no-scan"))
    x, y = model_inputs(TINY)
    schedules = {name: model_level.gemm_schedule(training_step(model), x, y)
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


def test_gemm_schedule_finds_gemms_that_may_run_at_once():
    import tensorflow as tf

    @tf.function
    def independent(a, b):
        unused = tf.matmul(b, a)  # noqa: F841 (not run: nothing needs it)
        return tf.matmul(a, b), tf.matmul(b, a, transpose_a=True)

    @tf.function
    def chained(a, b):
        first = tf.matmul(a, b)
        with tf.control_dependencies([first]):
            return first, tf.matmul(b, a, transpose_a=True)

    a, b = tf.ones([3, 3]), tf.ones([3, 3])
    gemms, at_once = model_level.gemm_schedule(independent, a, b)
    assert len(gemms) == 2 and at_once == [tuple(gemms)]
    assert not gemms[0].get_attr("transpose_a") and gemms[1].get_attr("transpose_a")
    gemms, at_once = model_level.gemm_schedule(chained, a, b)
    assert len(gemms) == 2 and at_once == []


def test_gemm_floor_parts_are_the_floor_gemms():
    inputs = gemm_floor_inputs(TINY)
    parts = model_level.gemm_floor_parts(*inputs)
    assert list(parts) == [gemm[0] for gemm in FLOOR_GEMMS]
    c2, dw1, dw2 = gemm_floor_step()(*inputs)
    for name, want in (("c2", c2), ("dw1", dw1), ("dw2", dw2)):
        fn, args = parts[name]
        np.testing.assert_allclose(fn(*args).numpy(), want.numpy(), rtol=1e-5, atol=1e-7)


def test_gemm_floor_waits_for_each_gemm_in_the_graph():
    """The 5 GEMMs a step runs (no dX of the input layer), each waiting for the
    one before: TensorFlow cannot run two at once."""
    inputs = gemm_floor_inputs(TINY)
    gemms, at_once = model_level.gemm_schedule(gemm_floor_step(), *inputs)
    assert len(gemms) == len(FLOOR_GEMMS) == 5
    assert at_once == []


def test_gemm_floor_runs_one_gemm_at_a_time():
    """In the profiler's trace (after Grappler), not only in the graph."""
    calls = 3
    matmuls, overlapping = model_level.gemm_overlaps(
        gemm_floor_step(), gemm_floor_inputs("seed"), calls=calls)
    assert matmuls == calls * len(FLOOR_GEMMS)
    assert overlapping == []


@needs_fused
def test_notebook_fit_runs_one_epoch():
    for implementation in ("fused", "no-scan"):
        model, fit, (x, y) = model_level.notebook_fit(implementation, samples=40, time_steps=2)
        assert x.shape == (40, 2, 784) and y.shape == (40, 10)
        history, seconds = fit(2)
        assert len(history.history["loss"]) == 2 and "val_loss" in history.history
        assert len(seconds) == 2 and all(t > 0 for t in seconds)


@needs_fused
def test_layer_step_peak_memory_in_subprocess():
    shape = (2, 4, 5, 3)
    fused = memory.layer_step_peak_memory("fused", shape)
    reference = memory.layer_step_peak_memory("reference", shape)
    for r in (fused, reference):
        assert r["shape"] == list(shape)
        assert r["delta_mib"] >= 0 and r["peak_mib"] >= r["baseline_mib"] > 0
    assert fused["spike_count"] == reference["spike_count"]
    np.testing.assert_allclose(fused["grad_norms"], reference["grad_norms"], rtol=1e-5)
    with pytest.raises(ValueError, match="implementation"):
        memory.layer_step_peak_memory("magic", shape)


def _result(kind, median, **info):
    return {"stats": {"median": median}, "extra_info": dict(kind=kind, **info)}


def test_ratio_table_from_benchmark_json():
    op_bytes = op_level.lif_bytes(128, 100, 512)
    alone = [_result("gemm-alone", 0.020, shape="medium", implementation="gemm-alone", gemm=g[0])
             for g in FLOOR_GEMMS]
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
    rows, markdown = ratios.ratio_table(data)
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
    small = ratios.ratio_table({"benchmarks": [
        _result("gemm-floor", 0.002, shape="seed", implementation="gemm-floor")] + [
        _result("gemm-alone", 0.001, shape="seed", implementation="gemm-alone", gemm=g[0])
        for g in FLOOR_GEMMS]})[0]
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
    peak = found[("peak host memory, one layer step: fused / reference", "64x500x700x512")]
    assert peak["measured"] == pytest.approx(0.15) and peak["verdict"] == "met"
    fit = found[("seed notebook model.fit epoch: fused / without the scan", "seed")]
    assert fit["measured"] == pytest.approx(1.2) and fit["verdict"] == "MISSED"
    fit_speedup = found[("seed notebook model.fit epoch: reference / fused (info)", "seed")]
    assert fit_speedup["measured"] == pytest.approx(5 / 3) and fit_speedup["verdict"] == "-"
    assert "can reach is 2.00x" in fit_speedup["detail"]
    assert markdown.startswith("| target |") and markdown.count("\n") == len(rows) + 1
    # An empty run: only the rows that say what was not run.
    assert {r["verdict"] for r in ratios.ratio_table({"benchmarks": []})[0]} == {"not run"}


def test_cpu_ticks_reads_the_first_line_of_proc_stat():
    text = ("cpu  100 5 50 800 40 3 2 0 0 0\n"   # user nice system idle iowait irq ...
            "cpu0 50 2 25 400 20 1 1 0 0 0\n")
    assert machine.cpu_ticks(text) == (840, 1000)  # idle + iowait, all
    with pytest.raises(ValueError):
        machine.cpu_ticks("cpu  1 2 x\n")


def test_cpu_idle_fraction_from_two_readings(monkeypatch):
    readings = iter([(840, 1000), (900, 1100)])
    monkeypatch.setattr(machine, "_read_cpu_ticks", lambda: next(readings))
    assert machine.cpu_idle_fraction(0.0) == pytest.approx(0.6)
    monkeypatch.setattr(machine, "_read_cpu_ticks", lambda: None)  # no /proc/stat
    assert machine.cpu_idle_fraction(0.0) is None


def test_other_fraction_is_the_machines_busy_time_less_our_own():
    # (wall s, the machine's busy CPU s, ours): 10 s on 2 CPUs, the machine
    # busy for 8 CPU seconds, 3 of them ours.
    assert machine.other_fraction((0.0, 100.0, 1.0), (10.0, 108.0, 4.0), cpus=2) == \
        pytest.approx(0.25)
    # Whole clock ticks over a short window: busier than the machine can be,
    # or less busy than we were, is rounding.
    assert machine.other_fraction((0.0, 0.0, 0.0), (0.01, 0.05, 0.0), cpus=2) == 1.0
    assert machine.other_fraction((0.0, 0.0, 0.0), (1.0, 0.5, 0.6), cpus=2) == 0.0


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat")
def test_machine_load_probes_read_this_machine():
    load = machine.OtherLoad()
    idle = machine.cpu_idle_fraction(0.05)
    assert idle is not None and 0.0 <= idle <= 1.0
    assert load.fraction() is not None


def test_set_threads_sets_the_pools_before_tensorflow_runs_and_warns_after(tmp_path):
    """In a fresh process: TensorFlow fixes its pools when it first runs."""
    import subprocess
    import sys

    code = ("import warnings\n"
            "from harness import machine\n"
            "print(machine.set_threads(1, 3))\n"
            "import tensorflow as tf\n"
            "tf.constant(1.0) + 1.0\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    print(machine.set_threads(2))\n"
            "print(caught[0].category.__name__, caught[0].message)\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        [machine.__file__.rsplit(os.sep, 2)[0], os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300, check=True).stdout.splitlines()
    assert out[:2] == ["(1, 3)", "(1, 3)"]
    assert out[2].startswith("RuntimeWarning TensorFlow's thread pools were already set up")


def test_break_even_interpolates_where_sparse_stops_winning():
    assert ratios.break_even([(0.1, 1.0, 0.2), (0.3, 1.0, 0.8), (0.5, 1.0, 1.2)]) == pytest.approx(0.4)
    assert ratios.break_even([(0.1, 1.0, 0.2), (0.5, 2.0, 1.0)]) is None  # sparse wins throughout
    assert ratios.break_even([(0.01, 1.0, 1.5), (0.1, 1.0, 2.0)]) == 0.01  # never wins
