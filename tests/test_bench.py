"""Functional tests of fused_lif._bench and fused_lif._bench_model, what
`fused-lif bench` measures with (tiny shapes; no timing assertions). The
benchmark harness built on them is tested in benchmarks/test_harness.py."""

import numpy as np
import pytest

import fused_lif
from fused_lif import _bench as bench
from fused_lif import _bench_model as bm

needs_fused = pytest.mark.skipif(not fused_lif.is_available(),
                                 reason="the fused op library is not built")

TINY = bm.Shape("tiny", batch=3, time=5, inputs=7, hidden=6, outputs=4)


def test_shape_grid_has_the_benchmark_shapes():
    assert bm.SHAPES["seed"] == bm.Shape("seed", 32, 20, 784, 128, 10)
    assert bm.SHAPES["medium"] == bm.Shape("medium", 128, 100, 784, 512, 10)
    assert bm.SHAPES["large"] == bm.Shape("large", 256, 200, 700, 1024, 20)
    assert bm.SHAPES["long"].time == 1000
    assert bm.get_shape("seed").op_shape == (32, 20, 128)
    assert bm.get_shape(TINY) is TINY
    with pytest.raises(ValueError, match="unknown shape 'huge'"):
        bm.get_shape("huge")


def test_model_inputs_shapes_and_values():
    x, y = bm.model_inputs(TINY)
    assert x.shape == (3, 5, 7) and y.shape == (3, 4)
    assert set(np.unique(x.numpy())) <= {0.0, 1.0}
    np.testing.assert_array_equal(y.numpy().sum(axis=1), 1.0)
    np.testing.assert_array_equal(bm.model_inputs(TINY)[0].numpy(), x.numpy())  # seeded


def test_gemm_floor_computes_the_step_matmuls():
    inputs = bm.gemm_floor_inputs(TINY)
    x, w1, w2, g2 = (t.numpy().astype(np.float64) for t in inputs)
    floor = bm.gemm_floor_step()
    c1 = x @ w1
    dc1 = g2 @ w2.T
    expected = [c1 @ w2, x.T @ dc1, c1.T @ g2]  # c2, dw1, dw2
    outputs = floor(*inputs)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-7)


def test_assert_same_result():
    spikes = np.array([[0.0, 1.0]])
    grads = [np.array([1.0, -2.0])]
    assert bench.assert_same_result(spikes, spikes.copy(), grads, [g.copy() for g in grads]) == 0
    with pytest.raises(AssertionError, match="spikes differ .* at 1 of 2"):
        bench.assert_same_result(spikes, np.array([[1.0, 1.0]]))
    with pytest.raises(AssertionError, match="gradient 0"):
        bench.assert_same_result(spikes, spikes, [np.array([1.0, -2.1])], grads)
    with pytest.raises(AssertionError, match="gradient 0"):
        bench.assert_same_result(spikes, spikes, [np.array([np.nan, -2.0])], grads)
    # Rounding-size differences pass.
    assert bench.assert_same_result(spikes, spikes, [np.array([1.0, -2.0 + 1e-7])], grads) > 0


def test_interleaved_times_warms_up_then_takes_turns():
    calls = []
    record = {name: (lambda name=name: calls.append(name), ()) for name in ("a", "b", "c")}
    messages = []
    times = bench.interleaved_times(record, repeats=3, warmup=2, progress=messages.append,
                                    label="tiny")
    assert calls == ["a", "a", "b", "b", "c", "c"] + ["a", "b", "c"] * 3
    assert list(times) == ["a", "b", "c"]
    assert all(len(t) == 3 and all(s >= 0 for s in t) for t in times.values())
    assert messages[0] == "tiny: warm-up a" and messages[-1] == "tiny: c 3/3"
    calls.clear()
    bench.interleaved_times(record, repeats=1, warmup=0)
    assert calls == ["a", "b", "c"]  # no warm-up, no progress needed


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
    rows = bench.model_step_table((TINY,), repeats=2, warmup=1, progress=messages.append)
    assert [r["implementation"] for r in rows] == ["reference", "fused", "gemm-floor"]
    assert messages and all(isinstance(m, str) for m in messages)
    by_impl = {r["implementation"]: r for r in rows}
    for row in rows:
        for key in ("shape", "implementation", "step_ms", "speedup_vs_reference",
                    "vs_gemm_floor", "max_abs_diff", "spikes_equal"):
            assert key in row
        assert row["shape"] == "tiny" and row["step_ms"] > 0 and row["repeats"] == 2
        assert 0 < row["min_ms"] <= row["step_ms"]  # the fastest call, the median
    # Each ratio is of the medians in the rows: reference / this, this / floor.
    floor_ms = by_impl["gemm-floor"]["step_ms"]
    for row in rows:
        assert row["speedup_vs_reference"] == pytest.approx(
            by_impl["reference"]["step_ms"] / row["step_ms"])
        assert row["vs_gemm_floor"] == pytest.approx(row["step_ms"] / floor_ms)
    assert by_impl["fused"]["spikes_equal"] is True
    assert by_impl["fused"]["max_abs_diff"] < 1e-5
    assert by_impl["gemm-floor"]["max_abs_diff"] is None
    table = bench.format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows) + 2  # header, rule, rows, blank, what the floor is
    assert lines[-1] == bench.FLOOR_NOTE
    assert bench.format_table(rows[:2]).splitlines()[-1].startswith("tiny")  # no floor: no note
    assert "implementation" in lines[0] and "fused" in table and "gemm-floor" in table
    fused_line = next(line for line in lines if " fused " in line).split()
    assert fused_line[:7] == ["tiny", "3", "5", "7", "6", "4", "fused"]
    assert fused_line[7:10] == [f"{by_impl['fused']['step_ms']:.2f}",
                                f"{by_impl['fused']['speedup_vs_reference']:.2f}x",
                                f"{by_impl['fused']['vs_gemm_floor']:.2f}x"]
    assert fused_line[10] == "yes"
    assert lines[2 + len(rows) - 1].split()[-2:] == ["-", "-"]  # the floor: nothing checked
    assert bench.format_table([]).count("\n") == 1  # header only
