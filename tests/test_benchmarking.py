"""Functional tests of fused_lif.benchmarking (tiny shapes; no timing
assertions: the benchmarks themselves live in benchmarks/)."""

import numpy as np
import pytest

import fused_lif
from fused_lif import benchmarking as bm

needs_fused = pytest.mark.skipif(not fused_lif.is_available(),
                                 reason="the fused op library is not built")

TINY = bm.Shape("tiny", batch=3, time=5, inputs=7, hidden=6, outputs=4)


def test_shape_grid_has_issue_8_shapes():
    assert bm.SHAPES["seed"] == bm.Shape("seed", 32, 20, 784, 128, 10)
    assert bm.SHAPES["medium"] == bm.Shape("medium", 128, 100, 784, 512, 10)
    assert bm.SHAPES["large"] == bm.Shape("large", 256, 200, 700, 1024, 20)
    assert bm.SHAPES["long"].time == 1000
    assert bm.MEMORY_SHAPE == (64, 500, 700, 512)
    assert bm.get_shape("seed").op_shape == (32, 20, 128)
    assert bm.get_shape(TINY) is TINY
    with pytest.raises(ValueError, match="unknown shape 'huge'"):
        bm.get_shape("huge")


def test_lif_bytes_counts_each_tensor_the_kernels_touch():
    # forward: currents in, spikes + membrane out; backward: dL/dspikes +
    # membrane in, dL/dcurrents out; 4 bytes each.
    assert bm.lif_bytes(2, 3, 5, backward=False) == 3 * 30 * 4
    assert bm.lif_bytes(2, 3, 5) == 6 * 30 * 4


def test_inputs_shapes_and_values():
    x, y = bm.model_inputs(TINY)
    assert x.shape == (3, 5, 7) and y.shape == (3, 4)
    assert set(np.unique(x.numpy())) <= {0.0, 1.0}
    np.testing.assert_array_equal(y.numpy().sum(axis=1), 1.0)
    currents, grad = bm.op_inputs(2, 3, 4)
    assert currents.shape == grad.shape == (2, 3, 4)
    np.testing.assert_array_equal(bm.model_inputs(TINY)[0].numpy(), x.numpy())  # seeded


def test_copy_step_copies():
    sources, one = bm.copy_inputs(bm.lif_bytes(2, 5, 100))
    assert [s.shape for s in sources] == [(1000,)] * 3  # one per tensor the LIF op writes
    assert bm.copy_bytes(sources) == bm.lif_bytes(2, 5, 100)
    outputs = bm.copy_step()(sources, one)
    for out, src in zip(outputs, sources):
        np.testing.assert_array_equal(out.numpy(), src.numpy())


@pytest.mark.parametrize("input_gradient", [True, False])
def test_gemm_floor_computes_the_model_matmuls(input_gradient):
    x, w1, w2, g2 = (t.numpy().astype(np.float64) for t in bm.gemm_floor_inputs(TINY))
    outputs = bm.gemm_floor_step(input_gradient)(*bm.gemm_floor_inputs(TINY))
    c1 = x @ w1
    dc1 = g2 @ w2.T
    expected = [c1 @ w2, x.T @ dc1, c1.T @ g2] + ([dc1 @ w1.T] if input_gradient else [])
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-7)


def test_assert_same_result():
    spikes = np.array([[0.0, 1.0]])
    grads = [np.array([1.0, -2.0])]
    assert bm.assert_same_result(spikes, spikes.copy(), grads, [g.copy() for g in grads]) == 0
    with pytest.raises(AssertionError, match="spikes differ .* at 1 of 2"):
        bm.assert_same_result(spikes, np.array([[1.0, 1.0]]))
    with pytest.raises(AssertionError, match="gradient 0"):
        bm.assert_same_result(spikes, spikes, [np.array([1.0, -2.1])], grads)
    with pytest.raises(AssertionError, match="gradient 0"):
        bm.assert_same_result(spikes, spikes, [np.array([np.nan, -2.0])], grads)
    # Rounding-size differences pass.
    assert bm.assert_same_result(spikes, spikes, [np.array([1.0, -2.0 + 1e-7])], grads) > 0


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


@needs_fused
def test_training_step_updates_weights():
    model = bm.build_models(TINY, ("fused",))["fused"]
    before = [w.copy() for w in model.get_weights()]
    x, y = bm.model_inputs(TINY, rate=0.9)
    loss = bm.training_step(model)(x, y)
    assert np.isfinite(loss.numpy())
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@needs_fused
def test_model_step_table_and_format():
    messages = []
    rows = bm.model_step_table((TINY,), repeats=2, warmup=1, progress=messages.append)
    assert [r["implementation"] for r in rows] == ["reference", "fused", "gemm-floor"]
    assert messages and all(isinstance(m, str) for m in messages)
    by_impl = {r["implementation"]: r for r in rows}
    for row in rows:
        for key in ("shape", "implementation", "step_ms", "speedup_vs_reference",
                    "vs_gemm_floor", "max_abs_diff", "spikes_equal"):
            assert key in row
        assert row["shape"] == "tiny" and row["step_ms"] > 0 and row["repeats"] == 2
    assert by_impl["reference"]["speedup_vs_reference"] == 1.0
    assert by_impl["reference"]["max_abs_diff"] == 0.0
    assert by_impl["fused"]["spikes_equal"] is True
    assert by_impl["fused"]["max_abs_diff"] < 1e-5
    assert by_impl["gemm-floor"]["max_abs_diff"] is None
    assert by_impl["gemm-floor"]["vs_gemm_floor"] == 1.0
    table = bm.format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert "implementation" in lines[0] and "fused" in table and "gemm-floor" in table
    assert bm.format_table([]).count("\n") == 1  # header only


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


def _bench(kind, median, **info):
    return {"stats": {"median": median}, "extra_info": dict(kind=kind, **info)}


def test_ratio_table_from_benchmark_json():
    op_bytes = bm.lif_bytes(128, 100, 512)
    data = {"benchmarks": [
        _bench("model-step", 0.010, shape="seed", implementation="reference"),
        _bench("model-step", 0.002, shape="seed", implementation="fused"),
        _bench("gemm-floor", 0.0018, shape="seed", implementation="gemm-floor"),
        _bench("model-step", 0.004, shape="seed", implementation="no-scan"),
        _bench("model-step", 0.120, shape="medium", implementation="fused"),
        _bench("gemm-floor", 0.100, shape="medium", implementation="gemm-floor"),
        _bench("gemm-floor-needed", 0.080, shape="medium", implementation="gemm-floor-needed"),
        _bench("op-forward-backward", 0.010, shape="medium", implementation="fused",
               bytes=op_bytes),
        _bench("copy", 0.008, shape="medium", bytes=op_bytes),
        _bench("peak-memory", 9.0, implementation="fused", memory_shape=[64, 500, 700, 512],
               delta_mib=150.0),
        _bench("peak-memory", 9.0, implementation="reference",
               memory_shape=[64, 500, 700, 512], delta_mib=1000.0),
        _bench("notebook-fit", 2.0, shape="seed", implementation="reference", epochs=6,
               first_epoch_s=1.0, epoch_median_s=0.25),
        _bench("notebook-fit", 1.2, shape="seed", implementation="fused", epochs=6,
               first_epoch_s=0.6, epoch_median_s=0.15),
        _bench("notebook-fit", 1.0, shape="seed", implementation="no-scan", epochs=6,
               first_epoch_s=0.5, epoch_median_s=0.125),
    ]}
    rows, markdown = bm.ratio_table(data)
    found = {(r["target"], r["shape"]): r for r in rows}
    seed = found[("training step: reference / fused", "seed")]
    assert seed["measured"] == pytest.approx(5.0) and seed["verdict"] == "met"
    assert "can reach is 2.50x" in seed["detail"]  # reference / step without a scan
    floor = found[("training step: fused / GEMM floor", "medium")]
    assert floor["measured"] == pytest.approx(1.2) and floor["verdict"] == "MISSED"
    assert "1.50x" in floor["detail"]  # vs the 5 GEMMs the step runs
    assert found[("training step: fused / GEMM floor (info)", "seed")]["verdict"] == "-"
    bandwidth = found[("LIF op fwd+bwd: bandwidth / copy bandwidth", "medium")]
    assert bandwidth["measured"] == pytest.approx(0.8) and bandwidth["verdict"] == "MISSED"
    memory = found[("peak host memory, one layer step: fused / reference", "64x500x700x512")]
    assert memory["measured"] == pytest.approx(0.15) and memory["verdict"] == "met"
    fit = found[("seed notebook model.fit epoch: reference / fused", "seed")]
    assert fit["measured"] == pytest.approx(5 / 3) and fit["verdict"] == "MISSED"
    assert "can reach is 2.00x" in fit["detail"]
    assert markdown.startswith("| target |") and markdown.count("\n") == len(rows) + 1
    assert bm.ratio_table({"benchmarks": []})[0] == []


def test_machine_load_probes():
    load = bm.OtherLoad()
    idle = bm.cpu_idle_fraction(0.05)
    fraction = load.fraction()
    for value in (idle, fraction):
        assert value is None or 0.0 <= value <= 1.0
