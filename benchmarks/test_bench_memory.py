"""Peak host memory of one training step (forward, backward, Adam) of one
LIFLayer at harness.memory.MEMORY_SHAPE = (64, 500, 700, 512), fused vs
reference, each in a fresh process. The time recorded is that process's wall
time (TensorFlow import included); the result is extra_info["delta_mib"]: peak
resident memory during the step minus the resident memory before it."""

import pytest

from fused_lif._bench_model import COMPARED
from harness import memory


@pytest.mark.parametrize("implementation", COMPARED)
def test_peak_memory(run_benchmark, benchmark, cache, bench_settings, implementation):
    threads = bench_settings["threads"]
    result = run_benchmark(memory.layer_step_peak_memory,
                           (implementation, memory.MEMORY_SHAPE, 0, threads),
                           rounds=1, warmup=0, group="peak host memory: one layer step",
                           kind="peak-memory", implementation=implementation)
    benchmark.extra_info.update(
        memory_shape=list(memory.MEMORY_SHAPE), delta_mib=result["delta_mib"],
        peak_mib=result["peak_mib"], baseline_mib=result["baseline_mib"],
        method=result["method"])
    assert result["delta_mib"] > 0
    cache.get(("memory", implementation), lambda: result)
    reference = cache.get(("memory", "reference"), lambda: memory.layer_step_peak_memory(
        "reference", memory.MEMORY_SHAPE, 0, threads))
    # Same weights and inputs: the same spikes, loss and gradients.
    assert result["spike_count"] == reference["spike_count"]
    assert abs(result["loss"] - reference["loss"]) <= 1e-6 * max(1.0, abs(reference["loss"]))
    for f, r in zip(result["grad_norms"], reference["grad_norms"]):
        assert abs(f - r) <= 1e-4 * max(abs(r), 1e-12)
