"""The seed notebook's training cell: model.fit on 1,000 samples, T = 20,
batch 32, 20% validation, Keras overhead included, fused vs reference from the
same weights, and the same fit with the scan removed (the bound). One
fit(epochs=1 + max(8, rounds)) call per implementation, as the notebook
trains: pytest-benchmark times the whole call; extra_info holds each epoch's
seconds, and ratios.py compares the median epoch after the first (the first
traces the functions)."""

import statistics

import pytest

from fused_lif._bench import compare_models
from harness import model_level


@pytest.mark.parametrize("implementation", ["reference", "fused", "no-scan"])
def test_notebook_fit_epochs(run_benchmark, benchmark, cache, bench_settings, implementation):
    """no-scan: the same fit with the LIF scan removed (model_level._no_scan_model:
    every op but the scan, GEMMs one at a time), the bound for any
    implementation's epoch (not a spiking model: nothing to check)."""
    setups = cache.get("notebook-fit", lambda: {
        impl: model_level.notebook_fit(impl) for impl in ("reference", "fused")})
    x, y = setups["reference"][2]

    def check():
        return compare_models(setups["fused"][0], setups["reference"][0], x[:64], y[:64])

    result = cache.get("notebook-fit-check", check)  # before either model trains
    if implementation == "no-scan":
        model, fit, _ = model_level.notebook_fit("no-scan")
    else:
        model, fit, _ = setups[implementation]
        benchmark.extra_info["max_abs_diff"] = result["max_abs_diff"]
    epochs = 1 + max(8, bench_settings["rounds"])
    history, seconds = run_benchmark(fit, (epochs,), rounds=1, warmup=0,
                                     group="seed notebook: model.fit", kind="notebook-fit",
                                     shape="seed", implementation=implementation)
    benchmark.extra_info.update(epochs=epochs, epoch_seconds=seconds, first_epoch_s=seconds[0],
                                epoch_median_s=statistics.median(seconds[1:]))
    assert len(history.history["loss"]) == epochs
