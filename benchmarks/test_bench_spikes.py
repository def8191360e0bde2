"""Binary-spike matmuls: `fused_lif.spike_matmul` against the dense GEMM.

- A density sweep (1%..50%) at the medium hidden layer, [B*T, in] @ [in,
  hidden] = [12800, 784] @ [784, 512]: forward, and forward + weight
  gradient (what a first layer's step needs), dense vs sparse. Their
  break-even is LIFLayer's SPIKE_BREAK_EVEN_DENSITY ("auto").
- The seed model's training step with LIFLayer(spike_input=True) and
  ("auto"), beside the dense fused step, on 10%-density rate-coded input.

    pytest benchmarks/test_bench_spikes.py --bench-shapes=medium,large \\
        --benchmark-json=spikes.json
    python benchmarks/test_bench_spikes.py      # the sweep, interleaved: break-even
    python benchmarks/test_bench_spikes.py --steps medium,large   # steps vs 5-GEMM floor

`--steps` times the steps beside the chained 5-GEMM floor (test_bench_model.py's,
`fused_lif._bench_model.gemm_floor_step`) and each of its GEMMs alone.
"""

import statistics

import numpy as np
import pytest
import tensorflow as tf

import fused_lif
from fused_lif import _bench_model
from fused_lif._bench import interleaved_times
from harness import model_level
from ratios import SPIKE_INPUT_DENSITY, break_even

DENSITIES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
SWEEP_SHAPE = (128 * 100, 784, 512)  # the medium shape's hidden layer: rows, inputs, outputs
INPUT_DENSITY = SPIKE_INPUT_DENSITY  # rate-coded MNIST: about 10% ones
STEP_IMPLEMENTATIONS = {
    "fused": False,  # the dense GEMM (the default)
    "fused-sparse": True,
    "fused-auto": "auto",
}


def sweep_inputs(density, seed=0):
    rows, inputs, outputs = SWEEP_SHAPE
    rng = np.random.default_rng(seed)
    x = (rng.random((rows, inputs), dtype=np.float32) < density).astype(np.float32)
    w = rng.normal(0, 0.05, (inputs, outputs)).astype(np.float32)
    g = rng.normal(0, 1e-3, (rows, outputs)).astype(np.float32)
    return tf.constant(x), tf.Variable(w), tf.constant(g)


def sweep_fn(implementation, backward):
    """tf.function (x, w, g) -> output (and dW = xᵀ g with `backward`): the
    product, and its weight gradient as a first layer's step needs it."""
    matmul = fused_lif.spike_matmul if implementation == "sparse" else tf.matmul

    @tf.function
    def run(x, w, g):
        if not backward:
            return matmul(x, w)
        with tf.GradientTape() as tape:
            out = matmul(x, w)
            loss = tf.reduce_sum(out * g)
        return out, tape.gradient(loss, w)

    return run


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward-backward"])
@pytest.mark.parametrize("density", DENSITIES, ids=lambda d: f"density-{d:g}")
@pytest.mark.parametrize("implementation", ["dense", "sparse"])
def test_spike_matmul_density_sweep(run_benchmark, cache, implementation, density, backward):
    x, w, g = cache.get(("sweep", density), lambda: sweep_inputs(density))
    result = run_benchmark(
        sweep_fn(implementation, backward), (x, w, g),
        group=f"spike matmul {'forward + dW' if backward else 'forward'}: "
              f"{SWEEP_SHAPE[0]}x{SWEEP_SHAPE[1]} @ {SWEEP_SHAPE[1]}x{SWEEP_SHAPE[2]}",
        kind="spike-matmul-backward" if backward else "spike-matmul", shape="medium",
        matmul_shape=list(SWEEP_SHAPE), density=density, implementation=implementation)
    out = result[0] if backward else result
    # Spot-check against float64 on the first rows.
    exact = x.numpy()[:64].astype(np.float64) @ w.numpy().astype(np.float64)
    np.testing.assert_allclose(out.numpy()[:64], exact, rtol=1e-4, atol=1e-4)


def _step_builder(spike_input):
    def build(shape):
        return fused_lif.create_snn_model(shape.inputs, shape.hidden, shape.outputs,
                                          shape.time, implementation="fused",
                                          spike_input=spike_input)
    return build


def _step_models(shape):
    return _bench_model.build_models(shape, tuple(STEP_IMPLEMENTATIONS), builders={
        name: _step_builder(spike_input) for name, spike_input in STEP_IMPLEMENTATIONS.items()})


# (implementation, input density): the sparse path at rate-coded MNIST's
# density, and "auto" against dense at "auto"'s switch (30%: the sparse path
# at its least gain) and above the break-even (50%: "auto" picks dense and
# must cost no more than its density pass).
STEP_CASES = [(name, INPUT_DENSITY) for name in STEP_IMPLEMENTATIONS] + [
    (name, density) for density in (0.3, 0.5) for name in ("fused", "fused-auto")]


@pytest.mark.parametrize("implementation, density", STEP_CASES,
                         ids=[f"{name}-{density:g}" for name, density in STEP_CASES])
def test_training_step_spike_input(run_benchmark, cache, shape_name, implementation, density):
    """The seed model's training step on binary input of the given density:
    dense input matmuls (the default) vs LIFLayer(spike_input=True / "auto"),
    from the same weights; the first step's loss agrees to rounding."""
    shape = _bench_model.get_shape(shape_name)
    # Fresh models per density: the steps timed at one density train them apart.
    models = cache.get(("spike-models", shape.name, density), lambda: _step_models(shape))
    x, y = cache.get(("spike-inputs", shape.name, density),
                     lambda: _bench_model.model_inputs(shape, rate=density))
    losses = cache.get(("spike-losses", shape.name, density), lambda: {
        name: float(_bench_model.loss_and_gradients(m)(x, y)[1]) for name, m in models.items()})
    np.testing.assert_allclose(losses[implementation], losses["fused"], rtol=1e-3)
    loss = run_benchmark(_bench_model.training_step(models[implementation]), (x, y),
                         group=f"training step, {density:.0%} input: {shape}",
                         kind="model-step-spikes", shape=shape.name,
                         model_shape=[shape.batch, shape.time, shape.inputs, shape.hidden,
                                      shape.outputs],
                         input_density=density, implementation=implementation,
                         spike_input=STEP_IMPLEMENTATIONS[implementation])
    assert np.isfinite(loss.numpy())


# --------------------------------------------------------- break-even ----

def main(repeats=5):
    """The sweep, dense and sparse calls interleaved per density (ratios from
    the same moments of a shared machine), and the break-even."""
    print(f"spike_matmul vs tf.matmul, [{SWEEP_SHAPE[0]}, {SWEEP_SHAPE[1]}] @ "
          f"[{SWEEP_SHAPE[1]}, {SWEEP_SHAPE[2]}], median of {repeats}, ms")
    print(f"{'density':>8} {'dense fwd':>10} {'sparse fwd':>11} {'ratio':>6} "
          f"{'dense f+dW':>11} {'sparse f+dW':>12} {'ratio':>6}")
    results = {False: [], True: []}
    for density in DENSITIES:
        args = sweep_inputs(density)
        cells = []
        for backward in (False, True):
            times = interleaved_times({impl: (sweep_fn(impl, backward), args)
                                       for impl in ("dense", "sparse")}, repeats)
            dense, sparse = (1e3 * statistics.median(times[impl]) for impl in ("dense", "sparse"))
            results[backward].append((density, dense, sparse))
            cells += [f"{dense:10.1f}", f"{sparse:11.1f}", f"{sparse / dense:6.2f}"]
        print(f"{density:8.0%} " + " ".join(cells), flush=True)
    for backward, label in ((False, "forward"), (True, "forward + dW")):
        point = break_even(results[backward])
        print(f"break-even density, {label}: "
              + ("above the sweep" if point is None else f"{point:.1%}"))


def step_table(shape_name, repeats=5, density=INPUT_DENSITY):
    """The training step at `density` input, dense / spike_input=True / "auto",
    beside the chained 5-GEMM floor and each of its GEMMs alone; all calls
    interleaved."""
    shape = _bench_model.get_shape(shape_name)
    models = _step_models(shape)
    x, y = _bench_model.model_inputs(shape, rate=density)
    floor_args = _bench_model.gemm_floor_inputs(shape)
    calls = {name: (_bench_model.training_step(m), (x, y)) for name, m in models.items()}
    gemms = model_level.gemm_floor_parts(*floor_args)
    calls.update(gemms)
    calls["5-GEMM floor"] = (_bench_model.gemm_floor_step(), floor_args)
    times = interleaved_times(calls, repeats)
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    floor = ms["5-GEMM floor"]
    print(f"\ntraining step, {density:.0%} input, {shape}: median of {repeats}, ms")
    for name in gemms:
        print(f"  {name:16s} {ms[name]:9.1f}")
    print(f"  {'5-GEMM floor':16s} {floor:9.1f}   (chained; its GEMMs alone sum to "
          f"{sum(ms[name] for name in gemms):.1f})")
    for name in models:
        print(f"  {name:16s} {ms[name]:9.1f}   {ms[name] / floor:.2f}x floor")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", default="", metavar="SHAPES",
                        help="comma-separated shapes: time the training steps there instead "
                             "of the density sweep (e.g. medium,large)")
    parser.add_argument("--density", type=float, default=INPUT_DENSITY,
                        help="input density of the training steps (default 0.1)")
    options = parser.parse_args()
    if options.steps:
        for name in options.steps.split(","):
            step_table(name.strip(), options.repeats, options.density)
    else:
        main(options.repeats)
