"""What `fused-lif bench` runs: the seed model's training step
(`_bench_model`) fused and reference, and the GEMM floor, timed round-robin,
after a check against the reference (spikes equal, gradients equal to float
rounding: a fast wrong result is worthless); and the table it prints. The
benchmark harness in `benchmarks/` builds on this and on `_bench_model`.
"""

import statistics
import time

import numpy as np

from ._bench_model import (
    COMPARED,
    build_models,
    gemm_floor_inputs,
    gemm_floor_step,
    get_shape,
    loss_and_gradients,
    model_inputs,
    training_step,
)


def assert_same_result(fused_spikes, reference_spikes, fused_grads=(), reference_grads=(),
                       rtol=1e-4):
    """Spikes exactly equal; each gradient within rtol of its largest
    magnitude (float rounding; NaN only where the reference has NaN). Returns
    the largest absolute difference."""
    fused_spikes, reference_spikes = np.asarray(fused_spikes), np.asarray(reference_spikes)
    mismatched = int(np.sum(fused_spikes != reference_spikes))
    if mismatched:
        raise AssertionError(f"fused spikes differ from the reference at {mismatched} of "
                             f"{reference_spikes.size} positions")
    if len(fused_grads) != len(reference_grads):
        raise AssertionError(f"{len(fused_grads)} fused gradients vs {len(reference_grads)}")
    worst = 0.0
    for i, (f, r) in enumerate(zip(fused_grads, reference_grads)):
        f, r = np.asarray(f, np.float64), np.asarray(r, np.float64)
        if f.shape != r.shape:
            raise AssertionError(f"gradient {i}: shapes differ: {f.shape} vs {r.shape}")
        with np.errstate(invalid="ignore"):
            d = np.abs(f - r)
        d = np.where(np.isnan(f) & np.isnan(r), 0.0, np.where(np.isnan(d), np.inf, d))
        diff = float(d.max()) if d.size else 0.0
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        if not diff <= rtol * scale + 1e-30:
            raise AssertionError(
                f"gradient {i} {r.shape}: max |fused - reference| = {diff:.3g} exceeds "
                f"{rtol:g} x max |reference| = {rtol * scale:.3g}")
        worst = max(worst, diff)
    return worst


def compare_models(fused_model, reference_model, x, y, rtol=1e-4):
    """Forward and backward (no update) of both models on (x, y); raises
    AssertionError unless they agree (`assert_same_result`). Returns
    {"spikes_equal", "max_abs_diff", "loss_diff", "spike_rate"}."""
    (fs, fl, fg) = loss_and_gradients(fused_model)(x, y)
    (rs, rl, rg) = loss_and_gradients(reference_model)(x, y)
    worst = assert_same_result(fs, rs, [g.numpy() for g in fg], [g.numpy() for g in rg], rtol)
    loss_diff = abs(float(fl) - float(rl))
    return {"spikes_equal": True, "max_abs_diff": max(worst, loss_diff),
            "loss_diff": loss_diff, "spike_rate": float(np.mean(rs.numpy()))}


def warm_up(fn, args=(), n=2):
    """Calls fn(*args) n times (tracing, kernel creation, allocator warm-up)."""
    result = None
    for _ in range(max(1, n)):
        result = fn(*args)
    return result


def interleaved_times(calls, repeats=5, warmup=2, progress=None, label=""):
    """{name: [seconds of each call]} of `calls` {name: (fn, args)}: each warmed
    up `warmup` times, then called once per round, round-robin, for `repeats`
    rounds: ratios from the same moments of a (possibly shared) machine.
    TensorFlow's CPU functions return when their outputs are computed."""
    progress = progress or (lambda message: None)
    for name, (fn, args) in calls.items() if warmup else ():
        progress(f"{label}: warm-up {name}")
        warm_up(fn, args, warmup)
    times = {name: [] for name in calls}
    for r in range(repeats):
        for name, (fn, args) in calls.items():
            progress(f"{label}: {name} {r + 1}/{repeats}")
            start = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - start)
    return times


def model_step_table(shape_names=("seed",), repeats=5, warmup=2, progress=None):
    """One row per shape and COMPARED implementation, and the GEMM floor
    (`gemm_floor_step`): the median training step (forward, backward, Adam;
    step_ms, min_ms, repeats), its speedup_vs_reference and vs_gemm_floor, and
    spikes_equal / max_abs_diff against the reference from the same weights
    (None for the floor). Raises AssertionError when fused differs from it."""
    progress = progress or (lambda message: None)
    rows = []
    for shape in (get_shape(s) for s in shape_names):
        label = shape.name
        progress(f"{label}: building models {', '.join(COMPARED)}")
        models = build_models(shape)
        x, y = model_inputs(shape)
        checks = {"reference": {"spikes_equal": True, "max_abs_diff": 0.0},
                  "gemm-floor": {"spikes_equal": None, "max_abs_diff": None}}
        for name in COMPARED[1:]:
            progress(f"{label}: checking {name} against the reference")
            checks[name] = compare_models(models[name], models["reference"], x, y)
        calls = {name: (training_step(models[name]), (x, y)) for name in COMPARED}
        calls["gemm-floor"] = (gemm_floor_step(), gemm_floor_inputs(shape))
        times = interleaved_times(calls, repeats, warmup, progress, label)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            rows.append({
                "shape": shape.name, **{k: getattr(shape, k) for k in SIZES},
                "implementation": name, "step_ms": 1e3 * medians[name],
                "min_ms": 1e3 * min(t), "repeats": len(t),
                "speedup_vs_reference": medians["reference"] / medians[name],
                "vs_gemm_floor": medians[name] / medians["gemm-floor"],
                "spikes_equal": checks[name]["spikes_equal"],
                "max_abs_diff": checks[name]["max_abs_diff"]})
    return rows


SIZES = ("batch", "time", "inputs", "hidden", "outputs")  # a Shape's, in each row
# format_table's columns: (title, row key, format spec, suffix).
COLUMNS = (("shape", "shape", "", ""), ("B", "batch", "", ""), ("T", "time", "", ""),
           ("in", "inputs", "", ""), ("hidden", "hidden", "", ""), ("out", "outputs", "", ""),
           ("implementation", "implementation", "", ""), ("step ms", "step_ms", ".2f", ""),
           ("vs reference", "speedup_vs_reference", ".2f", "x"),
           ("vs GEMM floor", "vs_gemm_floor", ".2f", "x"),
           ("spikes equal", "spikes_equal", "", ""), ("max |diff|", "max_abs_diff", ".2g", ""))
FLOOR_NOTE = ("gemm-floor: the step's 5 matrix products alone, one after the other: what "
              "any implementation's step pays. vs GEMM floor = step / floor.")


def format_table(rows):
    """A plain-text table of `model_step_table` rows, numbers right-aligned;
    below it, FLOOR_NOTE when a row is the GEMM floor."""
    def cell(value, spec, suffix):
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "NO"
        return format(value, spec) + suffix

    lines = [[title for title, *_ in COLUMNS]] + [
        [cell(r[key], spec, suffix) for _, key, spec, suffix in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = []
    for k, line in enumerate(lines):
        out.append("  ".join(text.rjust(w) if k and i >= 7 else text.ljust(w)
                             for i, (text, w) in enumerate(zip(line, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    if any(r["implementation"] == "gemm-floor" for r in rows):
        out += ["", FLOOR_NOTE]
    return "\n".join(out)
