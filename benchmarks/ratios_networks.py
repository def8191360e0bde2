"""The ratio table's rows for the spiking CNN (test_bench_conv.py), the
recurrent network (test_bench_recurrent.py) and the recurrent forward's
density sweep (test_bench_recurrent_density.py); `ratios.ratio_table` adds
them to the rest. The targets are ratios.TARGETS.
"""

CONV_SHAPES = ("conv",)                    # harness.conv_level.CONV_SHAPE's name
RECURRENT_SHAPES = ("rec-wide", "rec-long")  # harness.recurrent_level.RECURRENT_SHAPES


def break_even(points):
    """The density where the sparse path stops beating the dense one: points
    [(density, dense seconds, sparse seconds)] ascending; linear
    interpolation of sparse / dense between the two points around 1. None if
    sparse wins at every point; the first density if it loses at every
    point."""
    prev = None
    for density, dense, sparse in points:
        ratio = sparse / dense
        if ratio >= 1.0:
            if prev is None:
                return density
            d0, r0 = prev
            return d0 + (1.0 - r0) * (density - d0) / (ratio - r0)
        prev = (density, ratio)
    return None


def _medians(benches, kind):
    """{(shape, implementation[, density]): (median seconds, extra_info)}."""
    out = {}
    for b in benches:
        info = b.get("extra_info", {})
        if info.get("kind") == kind:
            key = (info.get("shape"), info.get("implementation"))
            if "density" in info:
                key += (info["density"],)
            out.setdefault(key, (b["stats"]["median"], info))
    return out


def _shapes(found, default):
    """The shapes measured, in order, or `default` when none was."""
    shapes = []
    for key in found:
        if key[0] not in shapes:
            shapes.append(key[0])
    return shapes or list(default)


def _ms(seconds):
    return f"{1e3 * seconds:.2f} ms"


def _why_fused_recurrent_missing(found, shape):
    """The reason a run recorded for the missing fused recurrent op."""
    for key, (_, info) in found.items():
        if key[0] == shape and info.get("fused_recurrent_unavailable"):
            return "; " + info["fused_recurrent_unavailable"]
    return ""


def network_rows(benches, rows, add, not_run, targets):
    """Adds the rows to `rows`, through ratio_table's `add` and `not_run`."""
    conv = _medians(benches, "conv-step")
    for shape in _shapes(conv, CONV_SHAPES):
        t = {impl: conv[key][0] for key in conv for impl in [key[1]] if key[0] == shape}
        fused, no_scan, ref, td = (t.get(k) for k in ("fused", "no-scan", "reference",
                                                      "time-distributed"))
        target = "spiking CNN step: fused / every LIF a ReLU (no-scan bound)"
        if fused and no_scan:
            add(target, shape, fused / no_scan, targets["conv_no_scan_ratio"], False,
                f"fused {_ms(fused)}, every LIF a ReLU {_ms(no_scan)}", bound=True)
        else:
            not_run(target, shape, targets["conv_no_scan_ratio"], False,
                    "needs the fused and no-scan spiking CNN steps in the same run")
        target = "spiking CNN step: reference / fused"
        if fused and ref:
            add(target, shape, ref / fused, targets["conv_reference_ratio"], True,
                f"reference {_ms(ref)}, fused {_ms(fused)}"
                + (f"; every LIF a ReLU {_ms(no_scan)}: the most any implementation can "
                   f"reach is {ref / no_scan:.2f}x" if no_scan else ""))
        else:
            not_run(target, shape, targets["conv_reference_ratio"], True,
                    "needs the fused and reference spiking CNN steps in the same run")
        if fused and td:
            add("spiking CNN step: TimeDistributed / TimeFolded synapses", shape, td / fused,
                0, False, f"keras.layers.TimeDistributed {_ms(td)}, fused_lif.TimeFolded "
                          f"{_ms(fused)} (both with fused LIF neurons)", info=True)

    rec = _medians(benches, "recurrent-step")
    for shape in _shapes(rec, RECURRENT_SHAPES):
        t = {key[1]: rec[key][0] for key in rec if key[0] == shape}
        recurrent, feedforward, ref = (t.get(k) for k in ("fused-recurrent", "fused",
                                                          "reference-recurrent"))
        missing = _why_fused_recurrent_missing(rec, shape)
        target = "recurrent step: fused recurrent / fused feed-forward"
        if recurrent and feedforward:
            add(target, shape, recurrent / feedforward, targets["recurrent_ff_ratio"], False,
                f"fused recurrent {_ms(recurrent)}, fused feed-forward {_ms(feedforward)} "
                f"(same shapes)", bound=True)
        else:
            not_run(target, shape, targets["recurrent_ff_ratio"], False,
                    "needs the fused recurrent and feed-forward steps in the same run" + missing)
        target = "recurrent step: reference / fused recurrent"
        if recurrent and ref:
            add(target, shape, ref / recurrent, targets["recurrent_reference_ratio"], True,
                f"reference (while_loop) {_ms(ref)}, fused recurrent {_ms(recurrent)}")
        else:
            not_run(target, shape, targets["recurrent_reference_ratio"], True,
                    "needs the fused and reference recurrent steps in the same run" + missing)
        if ref and feedforward:
            add("recurrent step: reference recurrent / fused feed-forward", shape,
                ref / feedforward, 0, True,
                f"reference (while_loop) {_ms(ref)}, fused feed-forward {_ms(feedforward)}: "
                f"the recurrence's cost in the reference", info=True)

    sweep = _medians(benches, "recurrent-density")
    for shape in _shapes(sweep, ()):
        t = {}
        for key, (median, _) in sweep.items():
            if key[0] == shape:
                t.setdefault(key[2], {})[key[1]] = median
        dense = [(d, v) for d, v in sorted(t.items()) if "fused" in v and "dense-steps" in v]
        points = [(d, v["fused"] + v["dense-steps"], v["fused-recurrent"]) for d, v in dense
                  if "fused-recurrent" in v]
        row = {"target": "recurrent forward: row sum / dense per-step matmuls, break-even "
                         "density", "shape": shape, "goal": "-", "verdict": "-"}
        if points:
            point = break_even(points)
            row.update(measured=point, measured_text=(f"above {points[-1][0]:.0%}"
                                                      if point is None else f"{point:.0%}"),
                       detail="fused recurrent / (fused feed-forward + dense steps): "
                              + ", ".join(f"{d:.0%} {sp / de:.2f}" for d, de, sp in points))
        else:
            row.update(measured=None, measured_text="-", verdict="not run",
                       detail="needs the fused recurrent op's forward in the sweep"
                              + _why_fused_recurrent_missing(sweep, shape)
                              + ("; dense steps / fused feed-forward: " + ", ".join(
                                  f"{d:.0%} {v['dense-steps'] / v['fused']:.2f}"
                                  for d, v in dense) if dense else ""))
        rows.append(row)
