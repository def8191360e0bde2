"""Model level: one training step (forward + backward + Adam) of the seed's
2-layer SNN, fused vs reference; the same step without the scan; and the GEMM
floor (the model's matmuls alone). The fused and reference models start from the same weights; their
first step's spikes must be equal and gradients equal to rounding."""

import numpy as np
import pytest

import harness as bm

IMPLEMENTATIONS = ["reference", "fused"]


def _info(shape, **extra):
    return dict(shape=shape.name, model_shape=[shape.batch, shape.time, shape.inputs,
                                               shape.hidden, shape.outputs], **extra)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_training_step(run_benchmark, benchmark, cache, shape_name, implementation):
    shape = bm.get_shape(shape_name)
    models = cache.get(("models", shape.name), lambda: bm.build_models(shape))
    x, y = cache.get(("model-inputs", shape.name), lambda: bm.model_inputs(shape))
    # Checked before either model takes a step (the steps change the weights).
    check = cache.get(("model-check", shape.name),
                      lambda: bm.compare_models(models["fused"], models["reference"], x, y))
    assert check["spikes_equal"]
    benchmark.extra_info.update(max_abs_diff=check["max_abs_diff"],
                                spike_rate=check["spike_rate"])
    loss = run_benchmark(bm.training_step(models[implementation]), (x, y),
                         group=f"training step: {shape}",
                         **_info(shape, kind="model-step", implementation=implementation))
    assert np.isfinite(loss.numpy())


def test_dfa_training_step(run_benchmark, cache, shape_name):
    """The same network and step trained by direct feedback alignment
    (fused_lif.DFAModel, fused layers), from the same initial weights."""
    shape = bm.get_shape(shape_name)
    model = cache.get(("dfa-model", shape.name),
                      lambda: bm.build_models(shape, ("fused-dfa",))["fused-dfa"])
    x, y = cache.get(("model-inputs", shape.name), lambda: bm.model_inputs(shape))
    loss = run_benchmark(bm.training_step(model), (x, y), group=f"training step: {shape}",
                         **_info(shape, kind="model-step", implementation="fused-dfa"))
    assert np.isfinite(loss.numpy())


def test_training_step_without_scan(run_benchmark, cache, shape_name):
    """The same step with the LIF scan removed (x @ w + b per layer): the
    matmuls, bias, loss and Adam alone, a floor for any implementation."""
    shape = bm.get_shape(shape_name)
    model = cache.get(("no-scan-model", shape.name),
                      lambda: bm.build_models(shape, ("no-scan",))["no-scan"])
    x, y = cache.get(("model-inputs", shape.name), lambda: bm.model_inputs(shape))
    loss = run_benchmark(bm.training_step(model), (x, y), group=f"training step: {shape}",
                         **_info(shape, kind="model-step", implementation="no-scan"))
    assert np.isfinite(loss.numpy())


@pytest.mark.parametrize("input_gradient", [True, False], ids=["floor-6-gemms", "needed-5-gemms"])
def test_gemm_floor(run_benchmark, shape_name, input_gradient):
    shape = bm.get_shape(shape_name)
    x2d, w1, w2, g2 = bm.gemm_floor_inputs(shape)
    kind = "gemm-floor" if input_gradient else "gemm-floor-needed"
    outputs = run_benchmark(bm.gemm_floor_step(input_gradient), (x2d, w1, w2, g2),
                            group=f"training step: {shape}",
                            **_info(shape, kind=kind, implementation=kind))
    # Spot-check the matmuls against numpy on the first rows.
    x, a, b, g = (t.numpy().astype(np.float64) for t in (x2d, w1, w2, g2))
    rows = slice(0, 64)
    np.testing.assert_allclose(outputs[0].numpy()[rows], x[rows] @ a @ b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(outputs[2].numpy(), (x @ a).T @ g, rtol=1e-3, atol=1e-4)
    if input_gradient:
        np.testing.assert_allclose(outputs[3].numpy()[rows], g[rows] @ b.T @ a.T,
                                   rtol=1e-3, atol=1e-6)
