"""Functional tests of the spiking CNN's and the recurrent network's
benchmarks: harness/conv_level.py, harness/recurrent_level.py,
harness/interleaved.py, ratios_networks.py and the helpers of
test_bench_conv.py, test_bench_recurrent.py and
test_bench_recurrent_density.py (tiny shapes; no timing assertions). CI runs
them with test_harness.py:

    python -m pytest -q -p no:cacheprovider benchmarks/test_harness_networks.py
"""

import json

import numpy as np
import pytest

import fused_lif
import ratios
import test_bench_conv
import test_bench_recurrent
import test_bench_recurrent_density as density_bench
from fused_lif._bench import compare_models
from fused_lif._bench_model import Shape, training_step
from harness import conv_level, interleaved, machine, recurrent_level

needs_fused = pytest.mark.skipif(not fused_lif.is_available(),
                                 reason="the fused op library is not built")
FUSED_RECURRENT, WHY_NOT = recurrent_level.fused_recurrent_scan()
needs_fused_recurrent = pytest.mark.skipif(FUSED_RECURRENT is None, reason=str(WHY_NOT))

# Every LIF layer fires at these shapes.
TINY_CONV = conv_level.ConvShape("tiny-conv", batch=3, time=16, image=(8, 8, 1),
                                 channels=(4, 8), kernel_size=3, outputs=3)
TINY_RECURRENT = Shape("tiny-recurrent", batch=4, time=40, inputs=120, hidden=48, outputs=5)


# ------------------------------------------------------------- spiking CNN --

def test_conv_shape_is_the_issues_network():
    shape = conv_level.CONV_SHAPE
    assert (shape.batch, shape.time, shape.image, shape.channels, shape.kernel_size,
            shape.outputs) == (32, 20, (28, 28, 1), (16, 32), 3, 10)
    assert shape.inputs == 784 and "conv16-pool-conv32-pool-dense10" in str(shape)


def test_conv_inputs_are_rate_coded_digit_like_images():
    images = conv_level.conv_images(50)
    assert images.shape == (50, 784) and images.min() == 0.0 and images.max() <= 1.0
    assert 0.1 < np.mean(images > 0) < 0.3  # ~20% lit, as MNIST
    x, y = conv_level.conv_inputs(TINY_CONV)
    assert x.shape == (3, 16, 64) and y.shape == (3, 3)
    assert set(np.unique(x.numpy())) <= {0.0, 1.0}
    np.testing.assert_array_equal(y.numpy().sum(axis=1), 1.0)


@needs_fused
def test_conv_network_is_create_conv_snn_model():
    """The harness's own builder (for the TimeDistributed and ReLU variants)
    with TimeFolded and fused LIF neurons: the same layers and, from the same
    weights, the same spikes as the package's model."""
    import keras

    from fused_lif.models import create_conv_snn_model

    ours = conv_level.conv_network(TINY_CONV)
    package = create_conv_snn_model(TINY_CONV.image, TINY_CONV.outputs, TINY_CONV.time,
                                    channels=TINY_CONV.channels, kernel_size=3)
    assert ([(type(a).__name__, a.name) for a in ours.layers]
            == [(type(b).__name__, b.name) for b in package.layers])
    for a, b in zip(ours.layers, package.layers):
        if isinstance(a, keras.layers.Wrapper):
            assert a.layer.get_config() | {"name": ""} == b.layer.get_config() | {"name": ""}
    ours.set_weights(package.get_weights())
    x, _ = conv_level.conv_inputs(TINY_CONV)
    np.testing.assert_array_equal(ours(x).numpy(), package(x).numpy())


@needs_fused
def test_conv_models_share_weights_and_agree():
    models = conv_level.build_conv_models(TINY_CONV)
    assert list(models) == list(conv_level.CONV_IMPLEMENTATIONS)
    first = models["reference"].get_weights()
    for model in models.values():
        for a, b in zip(first, model.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert type(models["time-distributed"].get_layer("conv1")).__name__ == "TimeDistributed"
    with pytest.raises(ValueError, match="unknown conv implementation 'magic'"):
        conv_level.build_conv_models(TINY_CONV, ("magic",))
    x, y = conv_level.conv_inputs(TINY_CONV)
    rates = conv_level.spike_rates(models["fused"], x)
    assert list(rates) == ["lif1", "lif2", "output_layer"] and min(rates.values()) > 0
    for name in ("fused", "time-distributed"):
        check = compare_models(models[name], models["reference"], x, y)
        assert check["spikes_equal"] and check["max_abs_diff"] < 1e-4
    for model in models.values():
        assert np.isfinite(training_step(model)(x, y).numpy())


def test_no_scan_conv_model_is_the_same_data_flow_with_relus():
    """Every LIF a ReLU, the readout relu(x @ w + b): the network's output is
    that of the same layers computed here."""
    import keras

    model = conv_level.build_conv_models(TINY_CONV, ("no-scan",))["no-scan"]
    names = [layer.name for layer in model.layers]
    assert "relu1" in names and "relu2" in names and not any(n.startswith("lif") for n in names)
    x, _ = conv_level.conv_inputs(TINY_CONV)
    flat = keras.Model(model.inputs, model.get_layer("flatten").output)(x).numpy()
    w, b = (v.numpy() for v in model.get_layer("output_layer").trainable_weights)
    b[:] = 0.1  # a bias, so that its add is checked too
    model.get_layer("output_layer").b.assign(b)
    np.testing.assert_allclose(model(x).numpy(), np.maximum(flat @ w + b, 0.0), rtol=1e-5,
                               atol=1e-6)
    conv1 = keras.Model(model.inputs, model.get_layer("relu1").output)(x).numpy()
    assert conv1.min() == 0.0 and conv1.max() > 0.0  # a ReLU, not spikes


@needs_fused
def test_conv_benchmark_prepares_checked_models_with_their_info():
    models, (x, y), checks, rates = test_bench_conv.prepare(TINY_CONV)
    assert set(checks) == set(test_bench_conv.CHECKED)
    assert all(c["spikes_equal"] for c in checks.values())
    info = test_bench_conv._info(TINY_CONV, "fused", checks, rates)
    assert info["kind"] == "conv-step" and info["shape"] == "tiny-conv"
    assert info["spikes_equal"] and info["spike_rates"] == rates


# ------------------------------------------------------- recurrent network --

def test_recurrent_shapes_are_the_issues():
    assert {(s.batch, s.time, s.inputs, s.hidden, s.outputs)
            for s in recurrent_level.RECURRENT_SHAPES.values()} == {
        (64, 100, 700, 256, 20), (32, 250, 140, 128, 20)}
    with pytest.raises(ValueError, match="unknown recurrent shape 'seed'"):
        recurrent_level.get_recurrent_shape("seed")


@needs_fused
def test_recurrent_models_share_weights_by_name():
    names = ("reference-recurrent", "fused")
    models = recurrent_level.build_recurrent_models(TINY_RECURRENT, names)
    recurrent, feedforward = (models[n] for n in names)
    assert [v.path for v in recurrent.trainable_weights] == [
        "hidden_layer/weights", "hidden_layer/bias", "hidden_layer/recurrent_kernel",
        "output_layer/weights", "output_layer/bias"]
    values = {v.path: v.numpy() for v in recurrent.trainable_weights}
    for v in feedforward.trainable_weights:
        np.testing.assert_array_equal(v.numpy(), values[v.path])
    x, y = recurrent_level.recurrent_inputs(TINY_RECURRENT)
    assert abs(float(np.mean(x.numpy())) - recurrent_level.INPUT_DENSITY) < 0.01
    assert recurrent_level.hidden_spike_rate(recurrent, x) > 0
    # The recurrence changes the hidden spikes: the two networks are not the same.
    assert not np.array_equal(recurrent.get_layer("hidden_layer")(x).numpy(),
                              feedforward.get_layer("hidden_layer")(x).numpy())
    with pytest.raises(ValueError, match="unknown recurrent implementation"):
        recurrent_level.build_recurrent_models(TINY_RECURRENT, ("magic",))


def test_fused_recurrent_scan_runs_or_says_why_not():
    scan, why_not = recurrent_level.fused_recurrent_scan()
    assert (scan is None) != (why_not is None)
    if scan is None:
        assert why_not.startswith("the fused recurrent op is not available here (")
        with pytest.raises(RuntimeError, match="not available"):
            recurrent_level.recurrent_forward_fn("fused")


@needs_fused
def test_recurrent_benchmark_prepares_what_runs_here():
    models, (x, y), info = test_bench_recurrent.prepare(TINY_RECURRENT)
    assert ("fused-recurrent" in models) == (FUSED_RECURRENT is not None)
    for name, i in info.items():
        assert i["kind"] == "recurrent-step" and i["implementation"] == name
        assert i["input_density"] == recurrent_level.INPUT_DENSITY
        assert ("fused_recurrent_unavailable" in i) == (FUSED_RECURRENT is None)
    if FUSED_RECURRENT is not None:
        assert info["fused-recurrent"]["spikes_equal"]
    for model in models.values():
        assert np.isfinite(training_step(model)(x, y).numpy())


@pytest.fixture
def stand_in_for_the_fused_recurrent_op(monkeypatch):
    """Where the fused recurrent op is not built yet: `fused_lif.recurrent`
    with the reference's recurrent_lif_scan in its place, so that the
    benchmarks' fused-recurrent wiring (models, checks, columns) is tested
    before the op lands. Where it is built, the tests that use this skip:
    the real op runs in the tests above."""
    import sys
    import types

    if FUSED_RECURRENT is not None:
        pytest.skip("the fused recurrent op is built: the other tests run it")
    stand_in = types.ModuleType("fused_lif.recurrent")
    stand_in.recurrent_lif_scan = fused_lif.reference.recurrent_lif_scan
    monkeypatch.setitem(sys.modules, "fused_lif.recurrent", stand_in)
    monkeypatch.setattr(fused_lif, "recurrent", stand_in, raising=False)


@needs_fused
def test_fused_recurrent_columns_are_wired(stand_in_for_the_fused_recurrent_op):
    import peers_cases

    scan, why_not = recurrent_level.fused_recurrent_scan()
    assert scan is fused_lif.reference.recurrent_lif_scan and why_not is None
    models, (x, y), info = test_bench_recurrent.prepare(TINY_RECURRENT)
    assert list(models) == list(recurrent_level.RECURRENT_IMPLEMENTATIONS)
    assert info["fused-recurrent"]["spikes_equal"]
    assert not any("fused_recurrent_unavailable" in i for i in info.values())
    inputs = recurrent_level.density_inputs((2, 30, 16), 0.2)
    fn, args = density_bench.sweep_case("fused-recurrent", inputs)
    density_bench.check_result("fused-recurrent", fn(*args), inputs)
    case = peers_cases.recurrent_case(TINY_RECURRENT)
    assert list(case.steps) == [peers_cases.MAIN, peers_cases.FEED_FORWARD,
                                peers_cases.REFERENCE] and case.notes == []


# -------------------------------------------------------- density sweep ---

@pytest.mark.parametrize("density", [0.02, 0.4])
def test_density_inputs_make_the_recurrent_forward_fire_at_the_density(density):
    """The spikes are the mask, exactly, whatever the recurrent weights add
    (the reference here; the fused op below when it is built)."""
    currents, kernel, mask = recurrent_level.density_inputs((4, 60, 32), density)
    assert abs(float(np.mean(mask)) - density) < 0.03
    inputs = (currents, kernel, mask)
    for implementation in ("reference-recurrent", "dense-steps", "dense-gemm"):
        fn, args = density_bench.sweep_case(implementation, inputs)
        density_bench.check_result(implementation, fn(*args), inputs)
    if fused_lif.is_available():
        fn, args = density_bench.sweep_case("fused", inputs)
        density_bench.check_result("fused", fn(*args), inputs)


@needs_fused_recurrent
def test_density_sweep_fused_recurrent_forward_is_the_mask():
    inputs = recurrent_level.density_inputs((3, 50, 40), 0.3)
    fn, args = density_bench.sweep_case("fused-recurrent", inputs)
    density_bench.check_result("fused-recurrent", fn(*args), inputs)


def test_density_check_catches_wrong_results():
    import tensorflow as tf

    currents, kernel, mask = inputs = recurrent_level.density_inputs((2, 5, 8), 0.3)
    wrong = np.array(mask)
    wrong[0, 0, 0] = 1 - wrong[0, 0, 0]
    with pytest.raises(AssertionError, match="differ from the density mask at 1 of 80"):
        density_bench.check_result("reference-recurrent", tf.constant(wrong), inputs)
    product = mask @ kernel.numpy()
    product[0, 0, 0] += 1.0
    with pytest.raises(AssertionError):
        density_bench.check_result("dense-steps", tf.constant(product), inputs)
    with pytest.raises(ValueError, match="unknown sweep implementation"):
        density_bench.sweep_fn("magic")


def test_dense_steps_run_one_matmul_per_step_one_after_the_other():
    from harness.model_level import gemm_schedule

    _, kernel, mask = recurrent_level.density_inputs((2, 6, 8), 0.3)
    import tensorflow as tf

    gemms, at_once = gemm_schedule(recurrent_level.dense_steps_fn(), tf.constant(mask), kernel)
    assert len(gemms) == 6 and at_once == []
    gemms, _ = gemm_schedule(recurrent_level.dense_gemm_fn(), tf.constant(mask), kernel)
    assert len(gemms) == 1


# ------------------------------------------------- interleaved runs, JSON --

def test_run_interleaved_gives_benchmark_entries_that_ratios_reads(tmp_path):
    calls = []
    cases = {name: (lambda n=name: calls.append(n), (), {"kind": "conv-step", "shape": "conv",
                                                          "implementation": name})
             for name in ("fused", "no-scan")}
    entries = interleaved.run_interleaved(cases, repeats=3, warmup=1)
    assert calls == ["fused", "no-scan"] + ["fused", "no-scan"] * 3  # warm-up, then round-robin
    assert [e["name"] for e in entries] == ["fused", "no-scan"]
    for e in entries:
        assert e["stats"]["rounds"] == 3 and len(e["stats"]["data"]) == 3
        assert e["stats"]["min"] <= e["stats"]["median"] <= e["stats"]["max"]
    data = json.loads(json.dumps(interleaved.Run().json(entries)))  # JSON-safe
    assert {"datetime", "machine_info", "commit_info", "benchmarks"} <= set(data)
    rows, _ = ratios.ratio_table(data)
    assert any(r["target"].startswith("spiking CNN step: fused / every LIF a ReLU")
               and r["verdict"] in ("met", "MISSED") for r in rows)
    path = tmp_path / "run.json"  # as the scripts' --json writes it
    path.write_text(json.dumps(data))
    assert ratios.main([str(path)]) == 0


def test_load_line_marks_a_loaded_machine():
    quiet = {"machine_info": {"cpu_idle_fraction_at_start": 0.99,
                              "cpu_idle_fraction_at_end": 0.98,
                              "other_processes_cpu_fraction": 0.01}}
    assert interleaved.load_line(quiet) == ("CPUs idle at start / end: 99% / 98%; other "
                                            "processes used 1% of the CPUs during the run")
    loaded = {"machine_info": {"other_processes_cpu_fraction": machine.LOADED + 0.2}}
    assert "? / ?" in interleaved.load_line(loaded) and "LOADED" in interleaved.load_line(loaded)


def _result(kind, median, **info):
    return {"stats": {"median": median}, "extra_info": dict(kind=kind, **info)}


def test_ratio_table_rows_of_the_cnn_and_the_recurrent_network():
    conv = [_result("conv-step", t, shape="conv", implementation=name) for name, t in (
        ("reference", 0.300), ("fused", 0.050), ("no-scan", 0.045), ("time-distributed", 0.3))]
    recurrent = [_result("recurrent-step", t, shape="rec-wide", implementation=name)
                 for name, t in (("reference-recurrent", 0.100), ("fused-recurrent", 0.040),
                                 ("fused", 0.030))]
    why = "the fused recurrent op is not available here (ImportError: x)"
    recurrent += [_result("recurrent-step", t, shape="rec-long", implementation=name,
                          fused_recurrent_unavailable=why)
                  for name, t in (("reference-recurrent", 0.140), ("fused", 0.007))]
    sweep = [_result("recurrent-density", t, shape="rec-wide", implementation=name, density=d)
             for d, times in ((0.1, (2.0, 1.0, 1.0)), (0.3, (3.0, 1.0, 1.0)),
                              (0.5, (5.0, 1.0, 1.0)))
             for name, t in zip(("fused-recurrent", "fused", "dense-steps"), times)]
    sweep += [_result("recurrent-density", 1.0, shape="rec-long", implementation=name,
                      density=0.1, fused_recurrent_unavailable=why)
              for name in ("fused", "dense-steps")]
    rows, markdown = ratios.ratio_table({"benchmarks": conv + recurrent + sweep})
    found = {(r["target"], r["shape"]): r for r in rows}
    bound = found[("spiking CNN step: fused / every LIF a ReLU (no-scan bound)", "conv")]
    assert bound["measured"] == pytest.approx(50 / 45) and bound["verdict"] == "met"
    assert bound["goal"] == "<= 1.15x"
    speedup = found[("spiking CNN step: reference / fused", "conv")]
    assert speedup["measured"] == pytest.approx(6.0) and speedup["verdict"] == "met"
    assert "can reach is 6.67x" in speedup["detail"]
    folded = found[("spiking CNN step: TimeDistributed / TimeFolded synapses (info)", "conv")]
    assert folded["measured"] == pytest.approx(6.0) and folded["verdict"] == "-"
    ff = found[("recurrent step: fused recurrent / fused feed-forward", "rec-wide")]
    assert ff["measured"] == pytest.approx(4 / 3) and ff["verdict"] == "MISSED"
    ref = found[("recurrent step: reference / fused recurrent", "rec-wide")]
    assert ref["measured"] == pytest.approx(2.5) and ref["verdict"] == "MISSED"
    for target in ("recurrent step: fused recurrent / fused feed-forward",
                   "recurrent step: reference / fused recurrent"):
        missing = found[(target, "rec-long")]
        assert missing["verdict"] == "not run" and why in missing["detail"]
    info = found[("recurrent step: reference recurrent / fused feed-forward (info)", "rec-long")]
    assert info["measured"] == pytest.approx(20.0)
    # Row sum / (feed-forward + dense steps): 1.0 at 10%, 1.5 at 30%: the row
    # sum stops paying at 10%; 2.5 at 50%.
    sweep_target = "recurrent forward: row sum / dense per-step matmuls, break-even density"
    assert found[(sweep_target, "rec-wide")]["measured_text"] == "10%"
    not_run = found[(sweep_target, "rec-long")]
    assert not_run["verdict"] == "not run" and why in not_run["detail"]
    assert "dense steps / fused feed-forward: 10% 1.00" in not_run["detail"]
    assert markdown.count("\n") == len(rows) + 1
    # Nothing of these in the run: their targets say "not run".
    empty = ratios.ratio_table({"benchmarks": []})[0]
    assert {(r["target"], r["shape"]) for r in empty if r["target"].startswith(
        ("spiking CNN", "recurrent step"))} == {
        ("spiking CNN step: fused / every LIF a ReLU (no-scan bound)", "conv"),
        ("spiking CNN step: reference / fused", "conv"),
        ("recurrent step: fused recurrent / fused feed-forward", "rec-wide"),
        ("recurrent step: fused recurrent / fused feed-forward", "rec-long"),
        ("recurrent step: reference / fused recurrent", "rec-wide"),
        ("recurrent step: reference / fused recurrent", "rec-long")}
