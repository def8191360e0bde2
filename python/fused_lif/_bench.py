"""What `fused-lif bench` needs: the shape grid, the seed model's training
step, the GEMM floor (the step's 5 GEMMs, one after the other), the check
against the reference (spikes equal, gradients equal to float rounding: a fast
wrong result is worthless), round-robin timing and the table. The benchmark
harness, `benchmarks/harness.py`, builds on this.
"""

import dataclasses
import statistics
import time

import numpy as np

IMPLEMENTATIONS = ("reference", "fused")


@dataclasses.dataclass(frozen=True)
class Shape:
    """(batch, time, inputs, hidden, outputs) of the seed's 2-layer SNN."""

    name: str
    batch: int
    time: int
    inputs: int
    hidden: int
    outputs: int

    @property
    def op_shape(self):
        """[batch, time, neurons] of the hidden layer's LIF scan."""
        return (self.batch, self.time, self.hidden)

    def __str__(self):
        return (f"{self.name} (B={self.batch}, T={self.time}, in={self.inputs}, "
                f"hidden={self.hidden}, out={self.outputs})")


SHAPES = {s.name: s for s in (
    Shape("seed", 32, 20, 784, 128, 10),        # the seed notebook's
    Shape("medium", 128, 100, 784, 512, 10),
    Shape("large", 256, 200, 700, 1024, 20),
    Shape("long", 32, 1000, 784, 128, 10),     # long sequences: T = 1,000
)}


def get_shape(shape):
    """A `Shape` from its name in SHAPES, or the Shape itself."""
    if isinstance(shape, Shape):
        return shape
    try:
        return SHAPES[shape]
    except KeyError:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}") from None


def model_inputs(shape, seed=0, rate=0.2):
    """Rate-coded input spikes x [batch, time, inputs] (Bernoulli(rate), as the
    seed's rate coding of MNIST gives) and one-hot labels y [batch, outputs]."""
    import tensorflow as tf

    shape = get_shape(shape)
    rng = np.random.default_rng(seed)
    x = (rng.random((shape.batch, shape.time, shape.inputs), dtype=np.float32) < rate)
    labels = rng.integers(0, shape.outputs, shape.batch)
    y = np.eye(shape.outputs, dtype=np.float32)[labels]
    return tf.constant(x.astype(np.float32)), tf.constant(y)


def build_models(shape, implementations=IMPLEMENTATIONS, seed=0, builders=None):
    """{implementation: the seed's 2-layer SNN at `shape`}, all with the same
    initial weights; `builders` maps other names to functions Shape -> Model."""
    import keras

    from .models import create_snn_model

    shape = get_shape(shape)
    models, weights = {}, None
    for implementation in implementations:
        keras.utils.set_random_seed(seed)
        if builders and implementation in builders:
            model = builders[implementation](shape)
        else:
            model = create_snn_model(shape.inputs, shape.hidden, shape.outputs, shape.time,
                                     implementation=implementation)
        # Trainable weights only: a DFA model also has its fixed feedback.
        if weights is None:
            weights = [w.numpy() for w in model.trainable_weights]
        else:
            assert len(weights) == len(model.trainable_weights), implementation
            for variable, value in zip(model.trainable_weights, weights):
                variable.assign(value)
        models[implementation] = model
    return models


def loss_and_gradients(model):
    """tf.function (x, y) -> (spikes, loss, gradients), without the update."""
    import tensorflow as tf

    from .losses import spike_categorical_crossentropy

    @tf.function
    def run(x, y):
        with tf.GradientTape() as tape:
            spikes = model(x, training=True)
            loss = tf.reduce_mean(spike_categorical_crossentropy(y, spikes))
        return spikes, loss, tape.gradient(loss, model.trainable_variables)

    return run


def training_step(model, learning_rate=1e-3):
    """tf.function (x, y) -> loss: forward, backward, Adam, as the seed trains;
    a `DFAModel` computes its gradients by direct feedback alignment."""
    import keras
    import tensorflow as tf

    from .losses import spike_categorical_crossentropy

    optimizer = keras.optimizers.Adam(learning_rate)
    dfa = hasattr(model, "dfa_gradients")
    if dfa and not model.compiled:
        model.compile(loss=spike_categorical_crossentropy)  # the loss dfa_gradients uses

    @tf.function
    def step(x, y):
        if dfa:
            loss, gradients = model.dfa_gradients(x, y)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss
        with tf.GradientTape() as tape:
            spikes = model(x, training=True)
            loss = tf.reduce_mean(spike_categorical_crossentropy(y, spikes))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


def gemm_floor_inputs(shape, seed=0):
    """The model's matmul operands x2d [B*T, in], w1, w2, g2 [B*T, out]."""
    import tensorflow as tf

    shape = get_shape(shape)
    rng = np.random.default_rng(seed)
    rows = shape.batch * shape.time
    x = (rng.random((rows, shape.inputs), dtype=np.float32) < 0.2).astype(np.float32)
    w1 = rng.normal(0, 0.05, (shape.inputs, shape.hidden)).astype(np.float32)
    w2 = rng.normal(0, 0.05, (shape.hidden, shape.outputs)).astype(np.float32)
    g2 = rng.normal(0, 1e-3, (rows, shape.outputs)).astype(np.float32)
    return tuple(tf.constant(a) for a in (x, w1, w2, g2))


# The 5 GEMMs a training step of the seed model runs, in the order it runs
# them: (output, a, b, transpose_a, transpose_b) for output = a·b. The input
# layer's dX is never computed (the input needs no gradient).
FLOOR_GEMMS = (
    ("c1", "x", "w1", False, False),    # [BT, hidden] = X·W1:     layer 1 forward
    ("c2", "c1", "w2", False, False),   # [BT, out]    = C1·W2:    layer 2 forward
    ("dw2", "c1", "g2", True, False),   # [hidden, out] = C1ᵀ·G2:  layer 2 dW
    ("dc1", "g2", "w2", False, True),   # [BT, hidden] = G2·W2ᵀ:   layer 2 dX
    ("dw1", "x", "dc1", True, False),   # [in, hidden] = Xᵀ·dC1:   layer 1 dW
)


def gemm_floor_step():
    """tf.function (x2d, w1, w2, g2) -> (c2, dw1, dw2): the GEMM floor, the
    FLOOR_GEMMS alone, one after the other. Each waits for the one before
    (a data or a control dependency), as in a step, where each GEMM needs the
    one before or the scan between them: TensorFlow's inter-op pool cannot run
    two at once (independent, they would share the cores and slow each other
    down, which no step pays)."""
    import tensorflow as tf

    @tf.function
    def floor(x2d, w1, w2, g2):
        values = {"x": x2d, "w1": w1, "w2": w2, "g2": g2}
        before = []
        for out, a, b, transpose_a, transpose_b in FLOOR_GEMMS:
            with tf.control_dependencies(before):
                values[out] = tf.matmul(values[a], values[b], transpose_a=transpose_a,
                                        transpose_b=transpose_b, name=f"floor_{out}")
            before = [values[out]]
        return values["c2"], values["dw1"], values["dw2"]

    return floor


def gemm_floor_parts(x2d, w1, w2, g2):
    """{output: (tf.function (a, b) -> a·b, (a, b))}: each of FLOOR_GEMMS
    alone, on the operands the floor gives it. The sum of their times is what
    the chained floor must take at least (~, timing noise aside): the check
    that it does run them one at a time."""
    import tensorflow as tf

    values = {"x": x2d, "w1": w1, "w2": w2, "g2": g2}
    parts = {}
    for out, a, b, transpose_a, transpose_b in FLOOR_GEMMS:
        fn = tf.function(lambda p, q, ta=transpose_a, tb=transpose_b:
                         tf.matmul(p, q, transpose_a=ta, transpose_b=tb))
        fn.get_concrete_function(values[a], values[b])  # traced here, not when timed
        parts[out] = (fn, (values[a], values[b]))
        values[out] = tf.matmul(values[a], values[b], transpose_a=transpose_a,
                                transpose_b=transpose_b)
    return parts


def gemm_schedule(fn, *args):
    """(gemms, at_once) of tf.function `fn` traced on `args`: the MatMul ops
    it runs (those its outputs and side effects need), in graph order, and
    the pairs of them that TensorFlow may run at the same time (neither waits
    for the other through data or control dependencies)."""
    graph = fn.get_concrete_function(*args).graph

    def before(ops):  # `ops` and every op they wait for
        seen, stack = set(), list(ops)
        while stack:
            op = stack.pop()
            if op not in seen:
                seen.add(op)
                stack.extend(t.op for t in op.inputs)
                stack.extend(op.control_inputs)
        return seen

    run = before([t.op for t in graph.outputs] + list(graph.control_outputs))
    gemms = [op for op in graph.get_operations() if op.type == "MatMul" and op in run]
    waits_for = {op: before([t.op for t in op.inputs] + list(op.control_inputs))
                 for op in gemms}
    at_once = [(a, b) for i, a in enumerate(gemms) for b in gemms[i + 1:]
               if a not in waits_for[b] and b not in waits_for[a]]
    return gemms, at_once


def _max_abs_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        d = np.abs(a - b)
    # NaN in the same places counts as equal; anywhere else as infinitely far.
    same_nan = np.isnan(a) & np.isnan(b)
    d = np.where(same_nan, 0.0, np.where(np.isnan(d), np.inf, d))
    return float(d.max())


def assert_same_result(fused_spikes, reference_spikes, fused_grads=(), reference_grads=(),
                       rtol=1e-4):
    """Spikes exactly equal; each gradient within rtol of its largest
    magnitude (float rounding). Returns the largest absolute difference."""
    fused_spikes = np.asarray(fused_spikes)
    reference_spikes = np.asarray(reference_spikes)
    mismatched = int(np.sum(fused_spikes != reference_spikes))
    if mismatched:
        raise AssertionError(
            f"fused spikes differ from the reference at {mismatched} of "
            f"{reference_spikes.size} positions")
    worst = 0.0
    if len(fused_grads) != len(reference_grads):
        raise AssertionError(f"{len(fused_grads)} fused gradients vs {len(reference_grads)}")
    for i, (f, r) in enumerate(zip(fused_grads, reference_grads)):
        f, r = np.asarray(f), np.asarray(r)
        diff = _max_abs_diff(f, r)
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


def _interleaved_times(calls, repeats, warmup, progress, label):
    """{name: seconds per call} of `calls` {name: (fn, args)}, round-robin."""
    for name, (fn, args) in calls.items():
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


def model_step_table(shape_names=("seed",), repeats=5, warmup=2, progress=None,
                     implementations=IMPLEMENTATIONS, floor=True):
    """One row per (shape, implementation, and the GEMM floor: the step's 5
    GEMMs, one after the other, `gemm_floor_step`): the median
    training step (forward, backward, Adam; step_ms, min_ms, repeats), its
    speedup_vs_reference, vs_gemm_floor, and spikes_equal / max_abs_diff vs
    the reference from the same weights (None for the floor). Raises
    AssertionError when the fused result differs from the reference."""
    progress = progress or (lambda message: None)
    implementations = tuple(implementations)
    unchecked = {"spikes_equal": None, "max_abs_diff": None}
    rows = []
    for shape in (get_shape(s) for s in shape_names):
        label = shape.name
        progress(f"{label}: building models {', '.join(implementations)}")
        models = build_models(shape, implementations)
        x, y = model_inputs(shape)
        checks = {"reference": {"spikes_equal": True, "max_abs_diff": 0.0}}
        for impl in implementations:
            if impl != "reference" and "reference" in models:
                progress(f"{label}: checking {impl} against the reference")
                checks[impl] = compare_models(models[impl], models["reference"], x, y)
        calls = {impl: (training_step(models[impl]), (x, y)) for impl in implementations}
        if floor:
            calls["gemm-floor"] = (gemm_floor_step(), gemm_floor_inputs(shape))
        times = _interleaved_times(calls, repeats, warmup, progress, label)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            check = checks.get(name, unchecked)
            rows.append({
                "shape": shape.name, "batch": shape.batch, "time": shape.time,
                "inputs": shape.inputs, "hidden": shape.hidden, "outputs": shape.outputs,
                "implementation": name, "step_ms": 1e3 * medians[name],
                "min_ms": 1e3 * min(t), "repeats": len(t),
                "speedup_vs_reference": (medians["reference"] / medians[name]
                                         if "reference" in medians else None),
                "vs_gemm_floor": (medians[name] / medians["gemm-floor"]
                                  if "gemm-floor" in medians else None),
                "spikes_equal": check["spikes_equal"], "max_abs_diff": check["max_abs_diff"],
            })
    return rows


def _table_cell(value, spec):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


FLOOR_NOTE = ("gemm-floor: the step's 5 matrix products alone, one after the other: what "
              "any implementation's step pays. vs GEMM floor = step / floor.")


def format_table(rows):
    """A plain-text table of `model_step_table` rows; below it, FLOOR_NOTE when
    a row is the GEMM floor."""
    header = ("shape", "B", "T", "in", "hidden", "out", "implementation", "step ms",
              "vs reference", "vs GEMM floor", "spikes equal", "max |diff|")
    lines = [header]
    for r in rows:
        lines.append((
            r["shape"], str(r["batch"]), str(r["time"]), str(r["inputs"]), str(r["hidden"]),
            str(r["outputs"]), r["implementation"], _table_cell(r["step_ms"], ".2f"),
            _table_cell(r["speedup_vs_reference"], ".2f")
            + ("x" if r["speedup_vs_reference"] else ""),
            _table_cell(r["vs_gemm_floor"], ".2f") + ("x" if r["vs_gemm_floor"] else ""),
            _table_cell(r["spikes_equal"], ""), _table_cell(r["max_abs_diff"], ".2g"),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for k, line in enumerate(lines):
        out.append("  ".join(cell.rjust(w) if k and i >= 7 else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(line, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    if any(r["implementation"] == "gemm-floor" for r in rows):
        out += ["", FLOOR_NOTE]
    return "\n".join(out)
