"""The recurrent network's training step (forward + backward + Adam in a
tf.function; `harness.recurrent_level`): input -> LIFLayer(hidden,
recurrent=True) -> LIFLayer(outputs) on 5% Bernoulli input spikes, at
(batch, time, inputs, hidden, outputs) = (64, 100, 700, 256, 20) "rec-wide"
and (32, 250, 140, 128, 20) "rec-long"; the fused recurrent op, the same
network feed-forward (fused: the budget) and the reference's while_loop, all
from the same weights. Before any step the fused recurrent model is checked
against the reference (spikes equal, gradients equal to float rounding).
Until the fused recurrent op is built here, its benchmarks skip, saying why,
and the others run.

    pytest benchmarks/test_bench_recurrent.py --benchmark-json=recurrent.json
    python benchmarks/test_bench_recurrent.py --repeats 10 --json recurrent.json  # interleaved
    python benchmarks/ratios.py recurrent.json
"""

import argparse
import json
import sys

import numpy as np
import pytest

from fused_lif._bench import compare_models
from fused_lif._bench_model import training_step
from harness import interleaved, machine, recurrent_level
from harness.recurrent_level import RECURRENT_IMPLEMENTATIONS, RECURRENT_SHAPES

TABLE_ROWS = "recurrent step"  # the ratio table's rows that this file's runs give


def prepare(shape_name):
    """(models, (x, y), info per implementation): the models that run here,
    from the same weights, the fused recurrent one checked against the
    reference before any of them steps; info holds what the benchmark
    records (hidden spike rate, the check, why the fused op is missing)."""
    shape = recurrent_level.get_recurrent_shape(shape_name)
    scan, why_not = recurrent_level.fused_recurrent_scan()
    names = [n for n in RECURRENT_IMPLEMENTATIONS if scan or n != "fused-recurrent"]
    models = recurrent_level.build_recurrent_models(shape, names)
    x, y = recurrent_level.recurrent_inputs(shape)
    check = None
    if "fused-recurrent" in models:
        check = compare_models(models["fused-recurrent"], models["reference-recurrent"], x, y)
    info = {}
    for name, model in models.items():
        info[name] = dict(
            kind="recurrent-step", shape=shape.name, implementation=name,
            model_shape=[shape.batch, shape.time, shape.inputs, shape.hidden, shape.outputs],
            input_density=recurrent_level.INPUT_DENSITY,
            hidden_spike_rate=recurrent_level.hidden_spike_rate(model, x))
        if why_not:
            info[name]["fused_recurrent_unavailable"] = why_not
        if check and name == "fused-recurrent":
            info[name].update(spikes_equal=check["spikes_equal"],
                              max_abs_diff=check["max_abs_diff"])
    return models, (x, y), info


@pytest.mark.parametrize("implementation", RECURRENT_IMPLEMENTATIONS)
@pytest.mark.parametrize("recurrent_shape", list(RECURRENT_SHAPES))
def test_recurrent_training_step(run_benchmark, cache, recurrent_shape, implementation):
    models, (x, y), info = cache.get(("recurrent", recurrent_shape),
                                     lambda: prepare(recurrent_shape))
    if implementation not in models:
        pytest.skip(info["reference-recurrent"]["fused_recurrent_unavailable"])
    if implementation == "fused-recurrent":
        assert info[implementation]["spikes_equal"]
    shape = RECURRENT_SHAPES[recurrent_shape]
    loss = run_benchmark(training_step(models[implementation]), (x, y),
                         group=f"recurrent training step: {shape}", **info[implementation])
    assert np.isfinite(loss.numpy())


def main(argv=None):
    import ratios

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(RECURRENT_SHAPES),
                        help=f"comma-separated, from {', '.join(RECURRENT_SHAPES)}")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls (default 2)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow's intra-op and inter-op threads (default: its own)")
    parser.add_argument("--json", metavar="PATH", help="write the run as a benchmark JSON "
                        "(python benchmarks/ratios.py PATH reads it)")
    args = parser.parse_args(argv)
    machine.set_threads(args.threads, args.threads)  # before TensorFlow runs anything
    names = [s for s in args.shapes.split(",") if s]
    for name in names:
        recurrent_level.get_recurrent_shape(name)  # unknown names fail here
    run = interleaved.Run()
    entries = []
    for name in names:
        models, (x, y), info = prepare(name)
        shape = RECURRENT_SHAPES[name]
        print(f"\n{shape}, input density {recurrent_level.INPUT_DENSITY:.0%}")
        for impl, i in info.items():
            print(f"  {impl}: hidden spike rate {i['hidden_spike_rate']:.1%}"
                  + (f"; vs reference: spikes equal, gradients within {i['max_abs_diff']:.2g}"
                     if "max_abs_diff" in i else ""))
        if "fused_recurrent_unavailable" in info["reference-recurrent"]:
            print(f"  fused-recurrent: not run: "
                  f"{info['reference-recurrent']['fused_recurrent_unavailable']}")
        cases = {impl: (training_step(m), (x, y), info[impl]) for impl, m in models.items()}
        shape_entries = interleaved.run_interleaved(
            cases, args.repeats, args.warmup, label=name,
            progress=lambda m: print(m, file=sys.stderr, flush=True))
        for e in shape_entries:
            print(f"  {e['name']:20s} {1e3 * e['stats']['median']:8.1f} ms "
                  f"(min {1e3 * e['stats']['min']:.1f}), median of {args.repeats} interleaved")
        entries += shape_entries
        del models, cases
    data = run.json(entries)
    rows, _ = ratios.ratio_table(data)
    print("\n" + ratios.markdown([r for r in rows if r["shape"] in names
                                   and r["target"].startswith(TABLE_ROWS)]))
    print("\n" + interleaved.load_line(data))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
