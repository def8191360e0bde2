"""The spiking CNN's training step (forward + backward + Adam in a
tf.function; `harness.conv_level`): B=32, T=20, 28x28x1 rate-coded input,
conv16-pool-conv32-pool-dense10 (`fused_lif.models.create_conv_snn_model`,
kernel 3), with fused LIF neurons, the reference's, every LIF a ReLU (the
no-scan bound) and `keras.layers.TimeDistributed` synapses instead of
`fused_lif.TimeFolded`; all from the same weights. Before any step, the
fused model and the TimeDistributed one are checked against the reference
(spikes equal, gradients equal to float rounding).

    pytest benchmarks/test_bench_conv.py --benchmark-json=conv.json
    python benchmarks/test_bench_conv.py --repeats 10 --json conv.json   # interleaved
    python benchmarks/ratios.py conv.json
"""

import argparse
import json
import sys

import numpy as np
import pytest

from fused_lif._bench import compare_models
from fused_lif._bench_model import training_step
from harness import conv_level, interleaved, machine
from harness.conv_level import CONV_IMPLEMENTATIONS, CONV_SHAPE

CHECKED = ("fused", "time-distributed")  # against the reference, before any step


def _info(shape, implementation, checks, rates):
    info = dict(kind="conv-step", shape=shape.name, implementation=implementation,
                model_shape=[shape.batch, shape.time, *shape.image, *shape.channels,
                             shape.outputs], spike_rates=rates)
    if implementation in checks:
        info.update(max_abs_diff=checks[implementation]["max_abs_diff"],
                    spikes_equal=checks[implementation]["spikes_equal"])
    return info


def prepare(shape=CONV_SHAPE, implementations=CONV_IMPLEMENTATIONS):
    """(models, (x, y), checks, spike rates): the models from the same
    weights, checked against the reference before any of them steps."""
    models = conv_level.build_conv_models(shape, implementations)
    x, y = conv_level.conv_inputs(shape)
    checks = {name: compare_models(models[name], models["reference"], x, y)
              for name in CHECKED if name in models and "reference" in models}
    rates = conv_level.spike_rates(models["reference" if "reference" in models else
                                          next(iter(models))], x)
    return models, (x, y), checks, rates


@pytest.mark.parametrize("implementation", CONV_IMPLEMENTATIONS)
def test_conv_training_step(run_benchmark, benchmark, cache, implementation):
    models, (x, y), checks, rates = cache.get(("conv", CONV_SHAPE.name), prepare)
    for name, check in checks.items():
        assert check["spikes_equal"], name
    loss = run_benchmark(training_step(models[implementation]), (x, y),
                         group=f"spiking CNN training step: {CONV_SHAPE}",
                         **_info(CONV_SHAPE, implementation, checks, rates))
    assert np.isfinite(loss.numpy())


def main(argv=None):
    import ratios

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls (default 2)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow's intra-op and inter-op threads (default: its own)")
    parser.add_argument("--json", metavar="PATH", help="write the run as a benchmark JSON "
                        "(python benchmarks/ratios.py PATH reads it)")
    args = parser.parse_args(argv)
    machine.set_threads(args.threads, args.threads)  # before TensorFlow runs anything
    run = interleaved.Run()
    models, (x, y), checks, rates = prepare()
    print(f"{CONV_SHAPE}; spike rates " + ", ".join(f"{k} {v:.1%}" for k, v in rates.items()))
    for name, check in checks.items():
        print(f"{name} vs reference: spikes equal, gradients within "
              f"{check['max_abs_diff']:.2g} (before any step)")
    cases = {name: (training_step(model), (x, y), _info(CONV_SHAPE, name, checks, rates))
             for name, model in models.items()}
    entries = interleaved.run_interleaved(
        cases, args.repeats, args.warmup, label=CONV_SHAPE.name,
        progress=lambda m: print(m, file=sys.stderr, flush=True))
    data = run.json(entries)
    fused = next(e for e in entries if e["name"] == "fused")["stats"]["median"]
    print(f"\ntraining step, median of {args.repeats} interleaved rounds:")
    for e in entries:
        median = e["stats"]["median"]
        print(f"  {e['name']:17s} {1e3 * median:8.1f} ms  (min {1e3 * e['stats']['min']:.1f})"
              f"  {median / fused:5.2f}x fused")
    rows, _ = ratios.ratio_table(data)
    print("\n" + ratios.markdown([r for r in rows if r["shape"] == CONV_SHAPE.name]))
    print("\n" + interleaved.load_line(data))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
