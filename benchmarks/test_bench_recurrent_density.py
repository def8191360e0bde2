"""The recurrent LIF forward at hidden spike rates 2-60%: the fused op's
row sums (`fused_lif.recurrent.recurrent_lif_scan`: the rows of R of the
neurons that spiked at t-1) against a dense per-step matmul s[t-1] @ R.

At each of `harness.recurrent_level.SWEEP_SHAPES` (the recurrent networks'
hidden layers, [batch, time, neurons]) the op runs on currents that make
its neurons fire at exactly the set density (`density_inputs`); beside it:

- "fused": the fused feed-forward LIF op on the same currents: the LIF scan
  without the recurrent term;
- "dense-steps": s[t] @ R for every t, one dense matmul per step, each after
  the one before: the recurrent term as a dense per-step kernel computes it;
- "dense-gemm": the same products in one GEMM over all steps (which no
  recurrence can do): the floor under any dense product of these spikes;
- "reference-recurrent": the reference's while_loop (a dense s[t-1] @ R in
  each step, with the LIF ops), for context.

The row sum pays while fused recurrent < fused feed-forward + dense steps
(what a dense kernel would need at least); ratios.py interpolates the
break-even density. The spikes of the fused and reference forwards must be
the density mask exactly.

    pytest benchmarks/test_bench_recurrent_density.py --benchmark-json=density.json
    python benchmarks/test_bench_recurrent_density.py            # the sweep, interleaved
    python benchmarks/test_bench_recurrent_density.py --json density.json
"""

import argparse
import json
import sys

import numpy as np
import pytest

from harness import interleaved, machine, recurrent_level
from harness.recurrent_level import DENSITIES, SWEEP_SHAPES

VARIANTS = ("fused-recurrent", "fused", "dense-steps", "dense-gemm",
                   "reference-recurrent")
DENSE = ("dense-steps", "dense-gemm")  # multiply the spikes (the mask)

TABLE_ROWS = "recurrent forward"  # the ratio table's rows that this file's runs give


def sweep_fn(implementation):
    """tf.function (currents, recurrent_kernel[, spikes]) for one column."""
    if implementation == "fused-recurrent":
        return recurrent_level.recurrent_forward_fn("fused")
    if implementation == "reference-recurrent":
        return recurrent_level.recurrent_forward_fn("reference")
    if implementation == "fused":
        return recurrent_level.feedforward_forward_fn()
    if implementation == "dense-steps":
        return recurrent_level.dense_steps_fn()
    if implementation == "dense-gemm":
        return recurrent_level.dense_gemm_fn()
    raise ValueError(f"unknown sweep implementation {implementation!r}")


def sweep_case(implementation, inputs):
    """(fn, args): the dense products multiply the spikes (the mask), the
    others run on the currents."""
    import tensorflow as tf

    currents, kernel, mask = inputs
    fn = sweep_fn(implementation)
    return fn, ((tf.constant(mask), kernel) if implementation in DENSE
                else (currents, kernel))


def check_result(implementation, result, inputs):
    """The spikes are the density mask; the dense products equal s[t] @ R (a
    spot check in float64 on the first batch row)."""
    currents, kernel, mask = inputs
    out = result.numpy()
    if implementation in DENSE:
        exact = mask[0].astype(np.float64) @ kernel.numpy().astype(np.float64)
        np.testing.assert_allclose(out[0], exact, rtol=1e-4, atol=1e-7)
    else:
        mismatched = int(np.sum(out != mask))
        assert not mismatched, (f"{implementation}: spikes differ from the density mask at "
                                f"{mismatched} of {mask.size} positions")


def _info(sweep_shape, implementation, density, mask):
    return dict(kind="recurrent-density", shape=sweep_shape, implementation=implementation,
                op_shape=list(SWEEP_SHAPES[sweep_shape]), density=density,
                measured_density=float(np.mean(mask)))


@pytest.mark.parametrize("implementation", VARIANTS)
@pytest.mark.parametrize("density", DENSITIES, ids=lambda d: f"density-{d:g}")
@pytest.mark.parametrize("sweep_shape", list(SWEEP_SHAPES))
def test_recurrent_forward_density_sweep(run_benchmark, cache, sweep_shape, density,
                                         implementation):
    if implementation == "fused-recurrent":
        scan, why_not = cache.get("fused-recurrent", recurrent_level.fused_recurrent_scan)
        if scan is None:
            pytest.skip(why_not)
    inputs = cache.get(("density", sweep_shape, density), lambda: recurrent_level.density_inputs(
        SWEEP_SHAPES[sweep_shape], density))
    fn, args = sweep_case(implementation, inputs)
    result = run_benchmark(fn, args, group=f"recurrent forward, {sweep_shape} "
                                           f"{SWEEP_SHAPES[sweep_shape]}, density {density:.0%}",
                           **_info(sweep_shape, implementation, density, inputs[2]))
    check_result(implementation, result, inputs)


def main(argv=None):
    import ratios

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(SWEEP_SHAPES),
                        help=f"comma-separated, from {', '.join(SWEEP_SHAPES)}")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls (default 2)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow's intra-op and inter-op threads (default: its own)")
    parser.add_argument("--json", metavar="PATH", help="write the run as a benchmark JSON")
    args = parser.parse_args(argv)
    machine.set_threads(args.threads, args.threads)  # before TensorFlow runs anything
    names = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in names if s not in SWEEP_SHAPES]
    if unknown:
        parser.error(f"--shapes: unknown {unknown}; known: {', '.join(SWEEP_SHAPES)}")
    scan, why_not = recurrent_level.fused_recurrent_scan()
    implementations = [i for i in VARIANTS if scan or i != "fused-recurrent"]
    if why_not:
        print(f"fused-recurrent: not run: {why_not}")
    run = interleaved.Run()
    entries = []
    for name in names:
        print(f"\nrecurrent forward, {name} [batch, time, neurons] = {SWEEP_SHAPES[name]}: "
              f"median of {args.repeats} interleaved calls, ms")
        width = {i: max(9, len(i)) for i in implementations}
        print(f"{'density':>8} " + " ".join(f"{i:>{width[i]}}" for i in implementations)
              + f" {'ff + dense':>11}" + (f" {'row sum / (ff + dense)':>23}" if scan else ""))
        for density in DENSITIES:
            inputs = recurrent_level.density_inputs(SWEEP_SHAPES[name], density)
            cases = {impl: (*sweep_case(impl, inputs), _info(name, impl, density, inputs[2]))
                     for impl in implementations}
            for impl, (fn, fn_args, _) in cases.items():  # checked before timing
                check_result(impl, fn(*fn_args), inputs)
            found = interleaved.run_interleaved(cases, args.repeats, args.warmup,
                                                label=f"{name} {density:.0%}")
            ms = {e["name"]: 1e3 * e["stats"]["median"] for e in found}
            dense = ms["fused"] + ms["dense-steps"]
            print(f"{density:8.0%} " + " ".join(f"{ms[i]:{width[i]}.2f}" for i in implementations)
                  + f" {dense:11.2f}"
                  + (f" {ms['fused-recurrent'] / dense:23.2f}" if scan else ""), flush=True)
            entries += found
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
