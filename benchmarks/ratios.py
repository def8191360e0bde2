"""The ratio table of the performance targets (TARGETS) from a
pytest-benchmark JSON.

    pytest benchmarks --benchmark-json=bench.json
    python benchmarks/ratios.py bench.json            # markdown table
    python benchmarks/ratios.py bench.json --strict   # exit 1 if a target is missed

Every ratio compares medians measured in the same run.
"""

import argparse
import json
import sys

from fused_lif._bench_model import FLOOR_GEMMS
from ratios_networks import break_even, network_rows  # noqa: F401 (break_even: ratios.break_even)

# The performance targets that `ratio_table` checks. The bounds they compare
# with (the step without the scan; the GEMM floor, its GEMMs one at a time)
# run nothing at once that the fused step runs one after the other, so that no
# step can beat them: a ratio below 1 means noise or a wrong bound.
TARGETS = {
    "no_scan_ratio": 1.10,      # fused training step / the step without the scan, every shape: <=
    "floor_ratio": 1.15,        # fused training step / 5-GEMM floor, medium & large: <=
    "fit_no_scan_ratio": 1.15,  # seed notebook model.fit epoch, fused / without the scan: <=
    "sparse_floor_ratio": 0.6,  # sparse-input training step / dense GEMM floor, medium & large: <=
    "auto_dense_ratio": 1.05,   # spike_input="auto" step / dense step, dense (50%) input: <=
    "floor_in_sequence": 0.95,  # GEMM floor / sum of its GEMMs timed alone, floor >= 10 ms: >=
    "bandwidth_fraction": 0.85,  # LIF op fwd+bwd bandwidth / copy bandwidth: >=
    "memory_ratio": 0.4,        # peak host memory fused / reference: <=
    "options_ratio": 1.2,       # fused fwd+bwd, atan+subtract+per-neuron tau / default: <=
    "dfa_ratio": 1.0,           # DFA training step / backprop step (fused), medium & large: <
    # The spiking CNN and the recurrent network (ratios_networks.py):
    "conv_no_scan_ratio": 1.15,     # spiking CNN step, fused / every LIF a ReLU: <=
    "conv_reference_ratio": 3.0,    # spiking CNN step, reference / fused: >=
    "recurrent_ff_ratio": 1.3,      # recurrent step, fused recurrent / fused feed-forward: <=
    "recurrent_reference_ratio": 3.0,  # recurrent step, reference / fused recurrent: >=
}

# The shapes the GEMM floor targets are for.
FLOOR_SHAPES = ("medium", "large")
# The floor's own check (floor / sum of its GEMMs timed alone) is a target
# where the floor takes at least this long: each GEMM timed alone also pays a
# function call (~0.1-0.3 ms), which weighs on small shapes' sums.
FLOOR_CHECK_MIN_SECONDS = 0.010

# Input density of the sparse-input training step's target (rate-coded MNIST:
# about 10% ones).
SPIKE_INPUT_DENSITY = 0.1


def _by_info(benchmarks, **match):
    out = []
    for b in benchmarks:
        info = b.get("extra_info", {})
        if all(info.get(k) == v for k, v in match.items()):
            out.append(b)
    return out


def _median_seconds(benchmarks, **match):
    found = _by_info(benchmarks, **match)
    return found[0]["stats"]["median"] if found else None


def _verdict(value, target, higher_is_better):
    if value is None:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def ratio_table(data):
    """The TARGETS, checked on a pytest-benchmark JSON (a dict, as loaded).

    Returns (rows, markdown): rows are dicts with target, shape, measured,
    goal, verdict and detail; markdown is the table.
    """
    benches = data.get("benchmarks", [])
    rows = []

    def add(target, shape, value, goal, higher, detail, fmt="{:.2f}x", info=False,
            bound=False):
        """One row; `info`: measured for context, at a shape the goal is not for;
        `bound`: value is a time over a lower bound of it, so below 1 is wrong."""
        if bound and value < 1:
            detail += "; BELOW 1: the bound did not hold in this run (noise, or a wrong bound)"
        rows.append({
            "target": target + (" (info)" if info else ""), "shape": shape,
            "measured": value, "measured_text": "-" if value is None else fmt.format(value),
            "goal": "-" if info else (">= " if higher else "<= ") + fmt.format(goal),
            "verdict": "-" if info else _verdict(value, goal, higher), "detail": detail,
        })

    def not_run(target, shape, goal, higher, detail, fmt="{:.2f}x"):
        """A target's row where its benchmarks are missing from the run."""
        rows.append({"target": target, "shape": shape, "measured": None, "measured_text": "-",
                     "goal": (">= " if higher else "<= ") + fmt.format(goal),
                     "verdict": "not run", "detail": detail})

    shapes = []
    for b in benches:
        s = b.get("extra_info", {}).get("shape")
        if s and s not in shapes:
            shapes.append(s)

    # Training step: fused vs the step without the scan, vs the GEMM floor;
    # the GEMM floor's own check; reference / fused for information.
    for shape in shapes:
        ref = _median_seconds(benches, kind="model-step", shape=shape, implementation="reference")
        fused = _median_seconds(benches, kind="model-step", shape=shape, implementation="fused")
        no_scan = _median_seconds(benches, kind="model-step", shape=shape, implementation="no-scan")
        floor = _median_seconds(benches, kind="gemm-floor", shape=shape)
        alone = _by_info(benches, kind="gemm-alone", shape=shape)
        if fused and no_scan:
            add("training step: fused / without the scan", shape, fused / no_scan,
                TARGETS["no_scan_ratio"], False,
                f"fused {1e3 * fused:.2f} ms, the same step without the scan "
                f"{1e3 * no_scan:.2f} ms", bound=True)
        if fused and floor:
            add("training step: fused / GEMM floor", shape, fused / floor,
                TARGETS["floor_ratio"], False,
                f"fused {1e3 * fused:.2f} ms, floor {1e3 * floor:.2f} ms (the step's 5 GEMMs, "
                f"one at a time)", info=shape not in FLOOR_SHAPES, bound=True)
        if floor and len(alone) == len(FLOOR_GEMMS):
            total = sum(b["stats"]["median"] for b in alone)
            add("GEMM floor / sum of its GEMMs timed alone", shape, floor / total,
                TARGETS["floor_in_sequence"], True,
                f"floor {1e3 * floor:.2f} ms, sum {1e3 * total:.2f} ms ("
                + ", ".join(f"{b['extra_info']['gemm']} {1e3 * b['stats']['median']:.2f}"
                            for b in alone)
                + "): about 1 when the floor runs them one at a time; each alone pays a "
                  "function call",
                info=floor < FLOOR_CHECK_MIN_SECONDS)
        if ref and fused:
            detail = f"reference {1e3 * ref:.2f} ms, fused {1e3 * fused:.2f} ms"
            if no_scan:
                detail += (f"; without the scan {1e3 * no_scan:.2f} ms: the most any "
                           f"implementation can reach is {ref / no_scan:.2f}x")
            add("training step: reference / fused", shape, ref / fused, 0, True, detail,
                info=True)

    # The sparse (binary spike input) path against the dense floor: faster
    # than any dense implementation can be.
    for shape in FLOOR_SHAPES:
        # test_bench_spikes.py's training step with LIFLayer(spike_input=True).
        sparse = _by_info(benches, kind="model-step-spikes", shape=shape,
                          implementation="fused-sparse", input_density=SPIKE_INPUT_DENSITY)
        floor = _median_seconds(benches, kind="gemm-floor", shape=shape)
        target = "sparse-input training step / dense GEMM floor"
        if sparse and floor:
            seconds = sparse[0]["stats"]["median"]
            density = sparse[0]["extra_info"].get("input_density")
            add(target, shape, seconds / floor, TARGETS["sparse_floor_ratio"], False,
                f"sparse {1e3 * seconds:.2f} ms, dense floor {1e3 * floor:.2f} ms (5 GEMMs)"
                + ("" if density is None else f"; input density {density:.0%}"))
        else:
            not_run(target, shape, TARGETS["sparse_floor_ratio"], False,
                    "needs the sparse training step (implementation \"fused-sparse\") "
                    "and the GEMM floor at this shape in the same run")

    # spike_input="auto" against dense at every input density measured: it
    # must never cost more than 5% over dense (its density pass), whichever
    # path it picks.
    for shape in shapes:
        for density in sorted({b["extra_info"].get("input_density") for b in benches
                               if b["extra_info"].get("kind") == "model-step-spikes"
                               and b["extra_info"].get("shape") == shape} - {None}):
            dense, auto = (_median_seconds(benches, kind="model-step-spikes", shape=shape,
                                           implementation=name, input_density=density)
                           for name in ("fused", "fused-auto"))
            if dense and auto:
                add(f'spike_input="auto" / dense step, {density:.0%} input', shape,
                    auto / dense, TARGETS["auto_dense_ratio"], False,
                    f"auto {1e3 * auto:.2f} ms, dense {1e3 * dense:.2f} ms")
    # The density sweep's break-even (sparse forward + dW against dense).
    sweep = {}
    for b in benches:
        info = b["extra_info"]
        if info.get("kind") == "spike-matmul-backward":
            sweep.setdefault(info["density"], {})[info["implementation"]] = b["stats"]["median"]
    points = [(d, t["dense"], t["sparse"]) for d, t in sorted(sweep.items())
              if "dense" in t and "sparse" in t]
    if points:
        point = break_even(points)
        rows.append({
            "target": "spike_matmul break-even density (forward + dW)", "shape": "medium",
            "measured": point, "verdict": "-", "goal": "-",
            "measured_text": (f"above {points[-1][0]:.0%}" if point is None else f"{point:.0%}"),
            "detail": "sparse / dense: " + ", ".join(f"{d:.0%} {sp / de:.2f}"
                                                     for d, de, sp in points)})

    # Direct feedback alignment: its training step against backprop's (both fused).
    for shape in shapes:
        fused = _median_seconds(benches, kind="model-step", shape=shape, implementation="fused")
        dfa = _median_seconds(benches, kind="model-step", shape=shape, implementation="fused-dfa")
        if fused and dfa:
            add("training step: DFA / backprop", shape, dfa / fused, TARGETS["dfa_ratio"], False,
                f"DFA {1e3 * dfa:.2f} ms, backprop {1e3 * fused:.2f} ms",
                info=shape not in ("medium", "large"))

    # LIF op alone, forward + backward: bandwidth vs an equal-bytes copy.
    for shape in shapes:
        for b in _by_info(benches, kind="op-forward-backward", shape=shape,
                          implementation="fused"):
            copy = _by_info(benches, kind="copy", shape=shape)
            if not copy:
                continue
            nbytes = b["extra_info"]["bytes"]
            op_bw = nbytes / b["stats"]["median"]
            copy_bw = copy[0]["extra_info"]["bytes"] / copy[0]["stats"]["median"]
            add("LIF op fwd+bwd: bandwidth / copy bandwidth", shape, op_bw / copy_bw,
                TARGETS["bandwidth_fraction"], True,
                f"{nbytes / 1e6:.0f} MB in {1e3 * b['stats']['median']:.2f} ms = "
                f"{op_bw / 1e9:.1f} GB/s; copy {copy_bw / 1e9:.1f} GB/s", fmt="{:.0%}")

    # Op level, informational: fused vs reference speedups.
    for shape in shapes:
        for kind in ("op-forward", "op-forward-backward"):
            ref = _median_seconds(benches, kind=kind, shape=shape, implementation="reference")
            fused = _median_seconds(benches, kind=kind, shape=shape, implementation="fused")
            if ref and fused:
                add(f"{kind}: reference / fused", shape, ref / fused, 0, True,
                    f"reference {1e3 * ref:.2f} ms, fused {1e3 * fused:.2f} ms", info=True)

    # The neuron options cost little.
    for shape in shapes:
        default = _median_seconds(benches, kind="op-options", shape=shape, config="default")
        options = _median_seconds(benches, kind="op-options", shape=shape, config="options")
        if default and options:
            add("neuron options (atan + subtract + per-neuron tau, its gradient) / default",
                shape, options / default, TARGETS["options_ratio"], False,
                f"default {1e3 * default:.2f} ms, options {1e3 * options:.2f} ms (fused fwd+bwd)")

    # Peak host memory, one layer's training step.
    mem = {}
    for b in _by_info(benches, kind="peak-memory"):
        mem[b["extra_info"]["implementation"]] = b["extra_info"]
    if "fused" in mem and "reference" in mem:
        f, r = mem["fused"]["delta_mib"], mem["reference"]["delta_mib"]
        add("peak host memory, one layer step: fused / reference",
            "x".join(str(v) for v in mem["fused"]["memory_shape"]), f / r,
            TARGETS["memory_ratio"],
            False, f"fused +{f:.0f} MiB, reference +{r:.0f} MiB")

    # Seed notebook model.fit: epochs after the first, within one fit call.
    fits = {b["extra_info"]["implementation"]: b for b in _by_info(benches, kind="notebook-fit")}

    def epoch_detail(names):
        return ", ".join(f"{name} {1e3 * fits[name]['extra_info']['epoch_median_s']:.0f} ms"
                         for name in names)

    if "fused" in fits and "no-scan" in fits:
        fused, bound = (fits[k]["extra_info"]["epoch_median_s"] for k in ("fused", "no-scan"))
        add("seed notebook model.fit epoch: fused / without the scan", "seed", fused / bound,
            TARGETS["fit_no_scan_ratio"], False,
            "median epoch after the first: " + epoch_detail(("fused", "no-scan")), bound=True)
    if "reference" in fits and "fused" in fits:
        ref, fused = (fits[k]["extra_info"]["epoch_median_s"] for k in ("reference", "fused"))
        first = [fits[k]["extra_info"]["first_epoch_s"] for k in ("reference", "fused")]
        whole = [fits[k]["stats"]["median"] for k in ("reference", "fused")]
        epochs = fits["fused"]["extra_info"]["epochs"]
        detail = (f"median epoch after the first: {epoch_detail(('reference', 'fused'))}; "
                  f"first epoch (tracing) {first[0]:.2f} s vs {first[1]:.2f} s; "
                  f"whole fit(epochs={epochs}) {whole[0]:.2f} s vs {whole[1]:.2f} s "
                  f"({whole[0] / whole[1]:.2f}x)")
        if "no-scan" in fits:
            bound = fits["no-scan"]["extra_info"]["epoch_median_s"]
            detail += (f"; without the scan {1e3 * bound:.0f} ms: the most any "
                       f"implementation can reach is {ref / bound:.2f}x")
        add("seed notebook model.fit epoch: reference / fused", "seed", ref / fused, 0, True,
            detail, info=True)

    # The spiking CNN, the recurrent network and its density sweep.
    network_rows(benches, rows, add, not_run, TARGETS)
    return rows, markdown(rows)


def markdown(rows):
    """Rows of `ratio_table` as a markdown table."""
    lines = ["| target | shape | measured | goal | verdict | detail |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['shape']} | {r['measured_text']} | {r['goal']} | "
                     f"{r['verdict']} | {r['detail']} |")
    return "\n".join(lines)


def _percent(value):
    return "?" if value is None else f"{value:.0%}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", help="file written by pytest --benchmark-json")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    with open(args.json) as f:
        data = json.load(f)
    rows, table = ratio_table(data)
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    threads = sorted({b.get("extra_info", {}).get("threads") for b in data.get("benchmarks", [])}
                     - {None})
    print(f"Run: {data.get('datetime', '?')}; {cpu.get('brand_raw', machine.get('processor', '?'))}"
          f", {cpu.get('count', '?')} CPUs; TensorFlow intra-op threads: "
          f"{', '.join(map(str, threads)) or '?'}; commit "
          f"{data.get('commit_info', {}).get('id', '?')[:12]}"
          f"{' (dirty)' if data.get('commit_info', {}).get('dirty') else ''}; TensorFlow "
          f"{machine.get('tensorflow', '?')}; CPUs idle at start / end: "
          f"{_percent(machine.get('cpu_idle_fraction_at_start'))} / "
          f"{_percent(machine.get('cpu_idle_fraction_at_end'))}; other processes used "
          f"{_percent(machine.get('other_processes_cpu_fraction'))} of the CPUs during the run"
          " (timings are comparable only near 0%)\n")
    print(table)
    if args.strict and any(r["verdict"] in ("MISSED",) for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
