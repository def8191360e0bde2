"""Model level: one training step (forward + backward + Adam) of the seed's
2-layer SNN, fused vs reference; the same step without the scan; the GEMM
floor (the step's 5 matmuls alone, one at a time) and each of them alone. The
fused and reference models start from the same weights; their first step's
spikes must be equal and gradients equal to rounding."""

import numpy as np
import pytest

from fused_lif._bench import compare_models
from fused_lif._bench_model import (
    COMPARED,
    FLOOR_GEMMS,
    gemm_floor_inputs,
    gemm_floor_step,
    get_shape,
    model_inputs,
    training_step,
)
from harness import model_level


def _info(shape, **extra):
    return dict(shape=shape.name, model_shape=[shape.batch, shape.time, shape.inputs,
                                               shape.hidden, shape.outputs], **extra)


@pytest.mark.parametrize("implementation", COMPARED)
def test_training_step(run_benchmark, benchmark, cache, shape_name, implementation):
    shape = get_shape(shape_name)
    models = cache.get(("models", shape.name), lambda: model_level.build_models(shape))
    x, y = cache.get(("model-inputs", shape.name), lambda: model_inputs(shape))
    # Checked before either model takes a step (the steps change the weights).
    check = cache.get(("model-check", shape.name),
                      lambda: compare_models(models["fused"], models["reference"], x, y))
    assert check["spikes_equal"]
    benchmark.extra_info.update(max_abs_diff=check["max_abs_diff"],
                                spike_rate=check["spike_rate"])
    loss = run_benchmark(training_step(models[implementation]), (x, y),
                         group=f"training step: {shape}",
                         **_info(shape, kind="model-step", implementation=implementation))
    assert np.isfinite(loss.numpy())


def test_dfa_training_step(run_benchmark, cache, shape_name):
    """The same network and step trained by direct feedback alignment
    (fused_lif.DFAModel, fused layers), from the same initial weights."""
    shape = get_shape(shape_name)
    model = cache.get(("dfa-model", shape.name),
                      lambda: model_level.build_models(shape, ("fused-dfa",))["fused-dfa"])
    x, y = cache.get(("model-inputs", shape.name), lambda: model_inputs(shape))
    loss = run_benchmark(model_level.dfa_training_step(model), (x, y),
                         group=f"training step: {shape}",
                         **_info(shape, kind="model-step", implementation="fused-dfa"))
    assert np.isfinite(loss.numpy())


def test_training_step_without_scan(run_benchmark, cache, shape_name):
    """The same step with the LIF scan removed (model_level._no_scan_model:
    every op but the scan, GEMMs one at a time): a lower bound for any
    implementation's step."""
    shape = get_shape(shape_name)
    model = cache.get(("no-scan-model", shape.name),
                      lambda: model_level.build_models(shape, ("no-scan",))["no-scan"])
    x, y = cache.get(("model-inputs", shape.name), lambda: model_inputs(shape))
    loss = run_benchmark(training_step(model), (x, y), group=f"training step: {shape}",
                         **_info(shape, kind="model-step", implementation="no-scan"))
    assert np.isfinite(loss.numpy())


def test_gemm_floor(run_benchmark, shape_name):
    """The step's 5 GEMMs, one at a time (fused_lif._bench_model.gemm_floor_step)."""
    shape = get_shape(shape_name)
    x2d, w1, w2, g2 = gemm_floor_inputs(shape)
    c2, dw1, dw2 = run_benchmark(gemm_floor_step(), (x2d, w1, w2, g2),
                                 group=f"training step: {shape}",
                                 **_info(shape, kind="gemm-floor", implementation="gemm-floor"))
    # Spot-check the matmuls against numpy on the first rows.
    x, a, b, g = (t.numpy().astype(np.float64) for t in (x2d, w1, w2, g2))
    rows = slice(0, 64)
    np.testing.assert_allclose(c2.numpy()[rows], x[rows] @ a @ b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dw2.numpy(), (x @ a).T @ g, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dw1.numpy()[:, :8], x.T @ (g @ b.T)[:, :8], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("gemm", [gemm[0] for gemm in FLOOR_GEMMS])
def test_gemm_alone(run_benchmark, cache, shape_name, gemm):
    """Each of the floor's GEMMs alone: the floor must take about their sum
    (ratios.py checks it), or it is running some of them at once."""
    shape = get_shape(shape_name)
    parts = cache.get(("gemm-parts", shape.name),
                      lambda: model_level.gemm_floor_parts(*gemm_floor_inputs(shape)))
    fn, args = parts[gemm]
    run_benchmark(fn, args, group=f"GEMM floor's parts: {shape}",
                  **_info(shape, kind="gemm-alone", implementation="gemm-alone", gemm=gemm))
