"""Benchmark helpers, in one place: the shape grid, input builders, the
training step, the GEMM floor, the copy-bandwidth baseline, warm-up and
timing, the fused-vs-reference checks, the peak-memory probe and the ratio
table of issue 8.

Used by `benchmarks/` (pytest-benchmark), `benchmarks/ratios.py` and the
`fused-lif bench` command. Every measurement of the fused op is paired with a
check against the reference (a fast wrong result is worthless): spikes must be
equal, gradients equal to float rounding.

    from fused_lif import benchmarking
    print(benchmarking.format_table(benchmarking.model_step_table(("seed", "medium"))))

Times are medians of `repeats` calls after `warmup` calls; implementations
are measured interleaved (round-robin) so that ratios come from the same
conditions. Compare ratios, never absolute times across machines or runs.
"""

import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

__all__ = [
    "COPY_BYTES_PER_FLOAT",
    "IMPLEMENTATIONS",
    "MEMORY_SHAPE",
    "OtherLoad",
    "SHAPES",
    "Shape",
    "TARGETS",
    "assert_same_result",
    "build_models",
    "compare_models",
    "copy_bytes",
    "copy_inputs",
    "copy_step",
    "cpu_idle_fraction",
    "format_table",
    "gemm_floor_inputs",
    "gemm_floor_step",
    "get_shape",
    "layer_step_peak_memory",
    "lif_bytes",
    "lif_forward_backward_fn",
    "lif_forward_fn",
    "loss_and_gradients",
    "model_inputs",
    "model_step_table",
    "notebook_fit",
    "op_inputs",
    "ratio_table",
    "set_threads",
    "time_calls",
    "training_step",
    "warm_up",
]

IMPLEMENTATIONS = ("reference", "fused")


@dataclasses.dataclass(frozen=True)
class Shape:
    """A model shape: (batch, time, inputs, hidden, outputs) of the seed's
    2-layer SNN. The LIF op alone runs at (batch, time, hidden)."""

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

# One layer's training step, for the peak-host-memory comparison:
# (batch, time, inputs, units).
MEMORY_SHAPE = (64, 500, 700, 512)

# Issue 8's targets, as used by `ratio_table`.
TARGETS = {
    "seed_speedup": 4.0,        # fused training step vs reference, seed shape: >=
    "floor_ratio": 1.15,        # fused training step / GEMM floor, medium & large: <=
    "bandwidth_fraction": 0.85,  # LIF op fwd+bwd bandwidth / copy bandwidth: >=
    "memory_ratio": 0.4,        # peak host memory fused / reference: <=
    "fit_speedup": 2.0,         # seed notebook model.fit epoch, reference / fused: >=
    "options_ratio": 1.2,       # issue 7: fused fwd+bwd, atan+subtract+per-neuron tau / default: <=
}

# Issue 7's neuron options, as keyword arguments of lif_scan: "default" is the
# seed's neuron; "options" is atan + subtract with a per-neuron tau tensor
# (trainable: its gradient is computed too).
OPTION_CONFIGS = {
    "default": dict(),
    "options": dict(surrogate="atan", reset="subtract", per_neuron_tau=True),
}

# An elementwise copy of n float32 values reads 4n and writes 4n bytes.
COPY_BYTES_PER_FLOAT = 8


def get_shape(shape):
    """A `Shape` from its name in SHAPES, or the Shape itself."""
    if isinstance(shape, Shape):
        return shape
    try:
        return SHAPES[shape]
    except KeyError:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}") from None


def cpu_idle_fraction(seconds=0.5):
    """Fraction of all CPUs' time that was idle over `seconds` (Linux
    /proc/stat; None elsewhere). Other work on the machine skews timings:
    benchmarks record this next to their results."""
    def snapshot():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = snapshot()
        time.sleep(seconds)
        idle1, total1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    return (idle1 - idle0) / max(1, total1 - total0)


class OtherLoad:
    """CPU time that other processes used while this one ran (Linux): the
    machine's busy time from /proc/stat minus this process's own (and its
    children's). Timings are only comparable when this stays near 0.

        load = OtherLoad(); ...; load.fraction()  # of all CPUs' wall time
    """

    def __init__(self):
        self._start = self._snapshot()

    @staticmethod
    def _snapshot():
        import resource

        try:
            with open("/proc/stat") as f:
                values = [int(v) for v in f.readline().split()[1:]]
            ticks = os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            return None
        busy = (sum(values) - values[3] - values[4]) / ticks  # all but idle and iowait
        own = sum(getattr(resource.getrusage(who), field)
                  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for field in ("ru_utime", "ru_stime"))
        return time.monotonic(), busy, own

    def fraction(self):
        """Other processes' CPU seconds / (wall seconds x CPUs); None if
        unknown."""
        end = self._snapshot()
        if self._start is None or end is None:
            return None
        wall = end[0] - self._start[0]
        other = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return max(0.0, other) / max(1e-9, wall * (os.cpu_count() or 1))


def set_threads(intra_op=None, inter_op=None):
    """Sets TensorFlow's thread pools; call before TensorFlow runs anything."""
    import tensorflow as tf

    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra_op))
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op))


# ----------------------------------------------------------------- inputs --

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


def op_inputs(batch, time, neurons, seed=0):
    """Currents [batch, time, neurons] that make neurons fire now and then, and
    an upstream gradient dL/dspikes of the same shape."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    currents = rng.normal(0.1, 0.5, (batch, time, neurons)).astype(np.float32)
    grad_spikes = rng.normal(0.0, 1.0, (batch, time, neurons)).astype(np.float32)
    return tf.constant(currents), tf.constant(grad_spikes)


# -------------------------------------------------------------- op level --

def _scan_module(implementation):
    if implementation == "fused":
        from . import ops

        ops.load_library()  # says clearly why not, when it cannot load
        return ops
    if implementation == "reference":
        from . import reference

        return reference
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")


def lif_forward_fn(implementation):
    """tf.function currents -> spikes, by the fused op or the reference."""
    import tensorflow as tf

    module = _scan_module(implementation)
    return tf.function(lambda currents: module.lif_scan(currents))


def lif_forward_backward_fn(implementation):
    """tf.function (currents, grad_spikes) -> (spikes, dL/dcurrents): the LIF
    forward and its backward, nothing else."""
    import tensorflow as tf

    module = _scan_module(implementation)

    @tf.function
    def forward_backward(currents, grad_spikes):
        with tf.GradientTape() as tape:
            tape.watch(currents)
            spikes = module.lif_scan(currents)
        return spikes, tape.gradient(spikes, currents, output_gradients=grad_spikes)

    return forward_backward


def lif_options_fn(implementation, config):
    """tf.function (currents, grad_spikes) -> (spikes, dL/dcurrents, dL/dtau)
    for one of OPTION_CONFIGS; dL/dtau is zeros([]) when tau is a constant."""
    import tensorflow as tf

    module = _scan_module(implementation)
    options = dict(OPTION_CONFIGS[config])
    per_neuron_tau = options.pop("per_neuron_tau", False)

    @tf.function
    def forward_backward(currents, grad_spikes):
        neurons = currents.shape[-1]
        tau = tf.linspace(5.0, 40.0, neurons) if per_neuron_tau else 20.0
        with tf.GradientTape() as tape:
            tape.watch(currents)
            if per_neuron_tau:
                tape.watch(tau)
            spikes = module.lif_scan(currents, tau=tau, **options)
        sources = [currents, tau] if per_neuron_tau else [currents]
        grads = tape.gradient(spikes, sources, output_gradients=grad_spikes)
        return spikes, grads[0], grads[1] if per_neuron_tau else tf.zeros([])

    return forward_backward


def lif_bytes(batch, time, neurons, backward=True, itemsize=4):
    """Bytes the LIF kernels must read and write (float32): forward reads
    currents, writes spikes and the membrane it saves; backward reads
    dL/dspikes and the membrane, writes dL/dcurrents. 12 bytes per element per
    pass; [batch, neurons] state and per-neuron parameters are negligible."""
    n = batch * time * neurons
    return (6 if backward else 3) * n * itemsize


def copy_inputs(nbytes, parts=3, seed=0):
    """(sources, one) for `copy_step`: `parts` float32 tensors whose copy moves
    `nbytes` in all (read + write). The default 3 parts match the LIF op's
    forward + backward, which writes three [batch, time, neurons] tensors
    (spikes, membrane, dL/dcurrents): the same sizes, so the same allocator
    and page-fault costs."""
    import tensorflow as tf

    n = max(1, nbytes // (COPY_BYTES_PER_FLOAT * parts))
    rng = np.random.default_rng(seed)
    sources = tuple(tf.constant(rng.random(n, dtype=np.float32)) for _ in range(parts))
    return sources, tf.constant(1.0)


def copy_bytes(sources):
    """Bytes read and written by `copy_step` on these sources."""
    return sum(int(np.prod(s.shape)) for s in sources) * COPY_BYTES_PER_FLOAT


def copy_step():
    """tf.function (sources, one) -> [s * one for s in sources]: elementwise
    copies into new tensors on TensorFlow's intra-op threads, as the LIF
    kernels write theirs. (`one` is an argument so that Grappler cannot remove
    the multiply.)"""
    import tensorflow as tf

    return tf.function(lambda sources, one: [s * one for s in sources])


# ----------------------------------------------------------- model level --

def _seed_notebook_model(shape):
    """The seed notebook's own model, verbatim in what it computes: one matmul
    per time step inside its tf.while_loop (for context: the package's
    reference does one matmul for all time steps)."""
    import keras
    import tensorflow as tf

    @tf.custom_gradient
    def spike_function(v, threshold):
        spikes = tf.cast(tf.greater(v, threshold), tf.float32)

        def grad(dy):
            surrogate_grad = 1.0 / (1.0 + tf.abs(10.0 * (v - threshold))) ** 2
            return dy * surrogate_grad, None

        return spikes, grad

    class SeedLIFLayer(keras.layers.Layer):
        def __init__(self, units, tau=20.0, threshold=1.0, **kwargs):
            super().__init__(**kwargs)
            self.units, self.tau, self.threshold = units, tau, threshold

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], self.units),
                                     initializer="glorot_uniform", name="weights")
            self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

        def call(self, inputs):
            time_steps = tf.shape(inputs)[1]
            v = tf.zeros((tf.shape(inputs)[0], self.units))
            spikes_array = tf.TensorArray(tf.float32, size=time_steps, dynamic_size=False)

            def time_step(t, v, spikes_array):
                i_in = tf.matmul(inputs[:, t, :], self.w) + self.b
                v = v * (1.0 - 1.0 / self.tau) + i_in
                spike = spike_function(v, self.threshold)
                v = v * (1.0 - spike)
                return t + 1, v, spikes_array.write(t, spike)

            _, _, spikes_array = tf.while_loop(lambda t, *_: t < time_steps, time_step,
                                               [0, v, spikes_array])
            return tf.transpose(spikes_array.stack(), [1, 0, 2])

    inputs = keras.Input(shape=(shape.time, shape.inputs), name="input")
    hidden = SeedLIFLayer(shape.hidden, name="hidden_layer")(inputs)
    outputs = SeedLIFLayer(shape.outputs, name="output_layer")(hidden)
    return keras.Model(inputs=inputs, outputs=outputs, name="seed_notebook_snn")


def _no_scan_model(shape):
    """The 2-layer model with the LIF scan removed (the layers return
    x @ w + b): its training step is the matmuls, bias, loss and Adam alone,
    the least time any scan implementation can take. Not a spiking model."""
    import keras
    import tensorflow as tf

    from .layer import LIFLayer

    class NoScanLayer(LIFLayer):
        def call(self, inputs, training=None):
            x = tf.convert_to_tensor(inputs)
            shape = tf.shape(x)
            currents = tf.matmul(tf.reshape(x, [-1, self.w.shape[0]]), self.w) + self.b
            return tf.reshape(currents, tf.stack([shape[0], shape[1], self.units]))

    inputs = keras.Input(shape=(shape.time, shape.inputs), name="input")
    hidden = NoScanLayer(shape.hidden, implementation="reference", name="hidden_layer")(inputs)
    outputs = NoScanLayer(shape.outputs, implementation="reference",
                          name="output_layer")(hidden)
    return keras.Model(inputs=inputs, outputs=outputs, name="no_scan_snn")


def build_models(shape, implementations=IMPLEMENTATIONS, seed=0):
    """The seed's 2-layer SNN at `shape`, one per implementation, all with the
    same initial weights. Returns {implementation: keras.Model}.

    Implementations: "fused", "reference" (LIFLayer's); for context "seed",
    the seed notebook's own layer (a matmul per time step), and "no-scan",
    the same model without the LIF scan (a lower bound on any step's time).
    """
    import keras

    from .models import create_snn_model

    shape = get_shape(shape)
    models = {}
    weights = None
    for implementation in implementations:
        keras.utils.set_random_seed(seed)
        if implementation == "seed":
            model = _seed_notebook_model(shape)
        elif implementation == "no-scan":
            model = _no_scan_model(shape)
        else:
            model = create_snn_model(shape.inputs, shape.hidden, shape.outputs, shape.time,
                                     implementation=implementation)
        if weights is None:
            weights = model.get_weights()
        else:
            model.set_weights(weights)
        models[implementation] = model
    return models


def loss_and_gradients(model):
    """tf.function (x, y) -> (spikes, loss, gradients): the training step's
    forward and backward without the update, for checking results."""
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
    """tf.function (x, y) -> loss: forward, backward and an Adam update, as the
    seed notebook trains (its loss; Adam(1e-3))."""
    import keras
    import tensorflow as tf

    from .losses import spike_categorical_crossentropy

    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            spikes = model(x, training=True)
            loss = tf.reduce_mean(spike_categorical_crossentropy(y, spikes))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


def gemm_floor_inputs(shape, seed=0):
    """(x2d [B*T, in], w1 [in, hidden], w2 [hidden, out], g2 [B*T, out]) for
    `gemm_floor_step`: the model's matmul operands."""
    import tensorflow as tf

    shape = get_shape(shape)
    rng = np.random.default_rng(seed)
    rows = shape.batch * shape.time
    x = (rng.random((rows, shape.inputs), dtype=np.float32) < 0.2).astype(np.float32)
    w1 = rng.normal(0, 0.05, (shape.inputs, shape.hidden)).astype(np.float32)
    w2 = rng.normal(0, 0.05, (shape.hidden, shape.outputs)).astype(np.float32)
    g2 = rng.normal(0, 1e-3, (rows, shape.outputs)).astype(np.float32)
    return tuple(tf.constant(a) for a in (x, w1, w2, g2))


def gemm_floor_step(input_gradient=True):
    """tf.function (x2d, w1, w2, g2) -> outputs: the matmuls of the 2-layer
    model's training step alone, with the data flow of the real step.

    Forward X·W per layer; backward dW per layer and dX of layer 2 (the
    gradient into the hidden spikes). With `input_gradient` (issue 8's
    definition: "backward dX and dW per layer") also layer 1's dX, which the
    training step never computes (the model input needs no gradient); without
    it, exactly the five GEMMs the fused step runs.
    """
    import tensorflow as tf

    @tf.function
    def floor(x2d, w1, w2, g2):
        c1 = tf.matmul(x2d, w1)                          # [BT, hidden]: layer 1 forward
        c2 = tf.matmul(c1, w2)                           # [BT, out]:    layer 2 forward
        dw2 = tf.matmul(c1, g2, transpose_a=True)        # [hidden, out]: layer 2 dW
        dc1 = tf.matmul(g2, w2, transpose_b=True)        # [BT, hidden]: layer 2 dX
        dw1 = tf.matmul(x2d, dc1, transpose_a=True)      # [in, hidden]: layer 1 dW
        outputs = [c2, dw1, dw2]
        if input_gradient:
            outputs.append(tf.matmul(dc1, w1, transpose_b=True))  # [BT, in]: layer 1 dX
        return outputs

    return floor


# ----------------------------------------------------------------- checks --

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
    magnitude (float rounding: the two sum in different orders).

    Returns the largest absolute difference over spikes and gradients.
    """
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
    """One training step's forward and backward (no update) of both models from
    the same weights and inputs. Raises AssertionError if the spikes differ or
    a gradient differs beyond float rounding; returns
    {"spikes_equal", "max_abs_diff", "loss_diff", "spike_rate"}."""
    fused = loss_and_gradients(fused_model)(x, y)
    reference = loss_and_gradients(reference_model)(x, y)
    (fs, fl, fg), (rs, rl, rg) = fused, reference
    worst = assert_same_result(fs, rs, [g.numpy() for g in fg], [g.numpy() for g in rg], rtol)
    loss_diff = abs(float(fl) - float(rl))
    return {
        "spikes_equal": True,
        "max_abs_diff": max(worst, loss_diff),
        "loss_diff": loss_diff,
        "spike_rate": float(np.mean(rs.numpy())),
    }


# ----------------------------------------------------------------- timing --

def warm_up(fn, args=(), n=2):
    """Calls fn(*args) n times (tracing, kernel creation, allocator warm-up)."""
    result = None
    for _ in range(max(1, n)):
        result = fn(*args)
    return result


def time_calls(fn, args=(), repeats=5, warmup=2):
    """Seconds per call of fn(*args), `repeats` calls after `warmup` calls.

    TensorFlow's CPU functions return when their outputs are computed, so the
    wall time of the call is the time of the work.
    """
    warm_up(fn, args, warmup)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return times


def _interleaved_times(calls, repeats, warmup, progress, label):
    """Median seconds of each of `calls` ({name: (fn, args)}), measured
    round-robin so that they share the same conditions."""
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
    """Times one training step (forward + backward + Adam) of the seed's 2-layer
    SNN for each implementation, and the GEMM floor, at each shape.

    shape_names: names in SHAPES (or Shape objects).
    progress: callable taking a str, called as each measurement runs.

    Returns one dict per (shape, implementation) with keys:
      shape, batch, time, inputs, hidden, outputs, implementation,
      step_ms (median), min_ms, repeats,
      speedup_vs_reference (reference median / this median),
      vs_gemm_floor (this median / GEMM floor median; None without the floor),
      spikes_equal, max_abs_diff (of this implementation's spikes, loss and
      gradients vs the reference, from the same weights; 0 for the
      reference, None for the floor).
    Raises AssertionError when the fused result differs from the reference.
    """
    progress = progress or (lambda message: None)
    implementations = tuple(implementations)
    rows = []
    for shape in (get_shape(s) for s in shape_names):
        label = shape.name
        progress(f"{label}: building models {', '.join(implementations)}")
        models = build_models(shape, implementations)
        x, y = model_inputs(shape)
        checks = {}
        for implementation in implementations:
            if implementation == "reference":
                checks[implementation] = {"spikes_equal": True, "max_abs_diff": 0.0}
            elif implementation == "no-scan":  # not a spiking model: nothing to compare
                checks[implementation] = {"spikes_equal": None, "max_abs_diff": None}
            elif "reference" in models:
                progress(f"{label}: checking {implementation} against the reference")
                checks[implementation] = compare_models(models[implementation],
                                                        models["reference"], x, y)
            else:
                checks[implementation] = {"spikes_equal": None, "max_abs_diff": None}
        calls = {impl: (training_step(models[impl]), (x, y)) for impl in implementations}
        if floor:
            calls["gemm-floor"] = (gemm_floor_step(), gemm_floor_inputs(shape))
        times = _interleaved_times(calls, repeats, warmup, progress, label)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            check = checks.get(name, {"spikes_equal": None, "max_abs_diff": None})
            rows.append({
                "shape": shape.name, "batch": shape.batch, "time": shape.time,
                "inputs": shape.inputs, "hidden": shape.hidden, "outputs": shape.outputs,
                "implementation": name,
                "step_ms": 1e3 * medians[name],
                "min_ms": 1e3 * min(t),
                "repeats": len(t),
                "speedup_vs_reference": (medians["reference"] / medians[name]
                                         if "reference" in medians else None),
                "vs_gemm_floor": (medians[name] / medians["gemm-floor"]
                                  if "gemm-floor" in medians else None),
                "spikes_equal": check["spikes_equal"],
                "max_abs_diff": check["max_abs_diff"],
            })
    return rows


def _fmt(value, spec):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def format_table(rows):
    """A plain-text table of `model_step_table` rows."""
    header = ("shape", "B", "T", "in", "hidden", "out", "implementation", "step ms",
              "vs reference", "vs GEMM floor", "spikes equal", "max |diff|")
    lines = [header]
    for r in rows:
        lines.append((
            r["shape"], str(r["batch"]), str(r["time"]), str(r["inputs"]), str(r["hidden"]),
            str(r["outputs"]), r["implementation"], _fmt(r["step_ms"], ".2f"),
            _fmt(r["speedup_vs_reference"], ".2f") + ("x" if r["speedup_vs_reference"] else ""),
            _fmt(r["vs_gemm_floor"], ".2f") + ("x" if r["vs_gemm_floor"] else ""),
            _fmt(r["spikes_equal"], ""), _fmt(r["max_abs_diff"], ".2g"),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for k, line in enumerate(lines):
        out.append("  ".join(cell.rjust(w) if k and i >= 7 else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(line, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# ------------------------------------------------------- notebook model.fit --

def notebook_fit(implementation, samples=1000, time_steps=20, seed=0, weights=None):
    """The seed notebook's training cell with synthetic MNIST-like data.

    Returns (model, fit, (x, y)). fit(epochs) runs
    model.fit(x, y, batch_size=32, epochs=epochs, validation_split=0.2,
    verbose=0) as the notebook does (Keras overhead and validation included)
    and returns (history, seconds of each epoch). Compare epochs after the
    first (which traces the functions); a separate fit() call per epoch would
    also time Keras' per-call data setup (~0.1-0.3 s here).
    implementation: "fused", "reference", or "no-scan" (the model without the
    LIF scan: the least time any implementation's epoch can take).
    """
    import keras

    from .encoding import rate_encode
    from .losses import spike_categorical_accuracy, spike_categorical_crossentropy
    from .models import create_snn_model

    rng = np.random.default_rng(seed)
    # MNIST-like intensities: ~19% of the pixels lit, mean ~0.14.
    images = ((rng.random((samples, 784)) < 0.19) * rng.uniform(0.5, 1.0, (samples, 784)))
    x = rate_encode(images.astype(np.float32), time_steps, max_rate=0.8, seed=seed)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, samples)]
    keras.utils.set_random_seed(seed)
    if implementation == "no-scan":  # the bound: the same fit without any scan
        model = _no_scan_model(Shape("notebook", 32, time_steps, 784, 128, 10))
    else:
        model = create_snn_model(784, 128, 10, time_steps, implementation=implementation)
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001),
                  loss=spike_categorical_crossentropy, metrics=[spike_categorical_accuracy])

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    def fit(epochs=1):
        timer = EpochTimer()
        history = model.fit(x, y, batch_size=32, epochs=epochs, validation_split=0.2,
                            verbose=0, callbacks=[timer])
        return history, timer.seconds

    return model, fit, (x, y)


# ------------------------------------------------------------ peak memory --

def _read_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak_rss():
    """Resets VmHWM (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _memory_probe(implementation, batch, time_steps, inputs, units, seed=0):
    """In a fresh process: one training step (forward, backward, Adam) of one
    LIFLayer; returns the peak resident memory it added, in MiB."""
    import resource

    import keras
    import tensorflow as tf

    from .layer import LIFLayer

    rng = np.random.default_rng(seed)
    x = tf.constant((rng.random((batch, time_steps, inputs), dtype=np.float32) < 0.2)
                    .astype(np.float32))
    target = tf.constant(rng.random((batch, units), dtype=np.float32) * 0.3)
    keras.utils.set_random_seed(seed)
    layer = LIFLayer(units, implementation=implementation)
    layer.build(x.shape)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(layer.trainable_variables)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            spikes = layer(x, training=True)
            rate = tf.reduce_mean(spikes, axis=1)
            loss = tf.reduce_mean(tf.square(rate - target))
        gradients = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply_gradients(zip(gradients, layer.trainable_variables))
        return loss, tf.reduce_sum(spikes), [tf.norm(g) for g in gradients]

    step.get_concrete_function(x)  # trace outside the measurement
    gc.collect()
    # The first step is measured: TensorFlow's allocator keeps what it freed,
    # so a second step would mostly reuse the first one's memory.
    reset = _reset_peak_rss()
    rss_before = _read_status_kib("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss, spike_count, grad_norms = step(x)
    if reset:
        peak, method = _read_status_kib("VmHWM"), "VmHWM (reset by /proc/self/clear_refs)"
    else:  # ru_maxrss never resets: valid only if the step is the process's peak
        peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
        if peak <= maxrss_before:
            method += " (NOT the step's: an earlier peak was higher)"
    result = {
        "implementation": implementation, "shape": [batch, time_steps, inputs, units],
        "loss": float(loss), "spike_count": float(spike_count),
        "grad_norms": [float(g) for g in grad_norms],
        "method": method, "baseline_mib": rss_before / 1024, "peak_mib": peak / 1024,
        "delta_mib": (peak - rss_before) / 1024,
    }
    return result


def layer_step_peak_memory(implementation, shape=MEMORY_SHAPE, seed=0, threads=None,
                           timeout=900):
    """Peak host memory that one training step of one LIFLayer adds, measured in
    a fresh Python process (so that nothing else is resident).

    shape: (batch, time, inputs, units). Returns the probe's dict: delta_mib
    (peak RSS during the step minus RSS before it), peak_mib, baseline_mib,
    method, and loss / spike_count / grad_norms for checking the result.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, "
                         f"got {implementation!r}")
    batch, time_steps, inputs, units = (int(v) for v in shape)
    spec = json.dumps([implementation, batch, time_steps, inputs, units, seed, threads])
    code = ("import json, sys\n"
            "from fused_lif import benchmarking as b\n"
            "impl, B, T, I, U, seed, threads = json.loads(sys.argv[1])\n"
            "b.set_threads(threads)\n"
            "print('FUSED_LIF_MEMORY ' + json.dumps(b._memory_probe(impl, B, T, I, U, seed)))\n")
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Make the child import the same fused_lif as this process.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-c", code, spec], capture_output=True, text=True,
                          env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("FUSED_LIF_MEMORY "):
            return json.loads(line[len("FUSED_LIF_MEMORY "):])
    raise RuntimeError(f"memory probe ({implementation}) failed with exit code "
                       f"{proc.returncode}:\n{proc.stderr[-4000:]}")


# ------------------------------------------------------------ ratio table --

def _by_info(benchmarks, **match):
    out = []
    for b in benchmarks:
        info = b.get("extra_info", {})
        if all(info.get(k) == v for k, v in match.items()):
            out.append(b)
    return out


def _median(benchmarks, **match):
    found = _by_info(benchmarks, **match)
    return found[0]["stats"]["median"] if found else None


def _verdict(value, target, higher_is_better):
    if value is None:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def ratio_table(data):
    """Issue 8's targets from a pytest-benchmark JSON (a dict, as loaded).

    Returns (rows, markdown): rows are dicts with target, shape, measured,
    goal, verdict and detail; markdown is the table.
    """
    benches = data.get("benchmarks", [])
    rows = []

    def add(target, shape, value, goal, higher, detail, fmt="{:.2f}x"):
        rows.append({
            "target": target, "shape": shape,
            "measured": value, "measured_text": "-" if value is None else fmt.format(value),
            "goal": (">= " if higher else "<= ") + fmt.format(goal),
            "verdict": _verdict(value, goal, higher), "detail": detail,
        })

    shapes = []
    for b in benches:
        s = b.get("extra_info", {}).get("shape")
        if s and s not in shapes:
            shapes.append(s)

    # Training step: fused vs reference (seed target), fused vs GEMM floor.
    for shape in shapes:
        ref = _median(benches, kind="model-step", shape=shape, implementation="reference")
        fused = _median(benches, kind="model-step", shape=shape, implementation="fused")
        floor = _median(benches, kind="gemm-floor", shape=shape)
        floor_needed = _median(benches, kind="gemm-floor-needed", shape=shape)
        no_scan = _median(benches, kind="model-step", shape=shape, implementation="no-scan")
        if ref and fused:
            target = shape == "seed"
            detail = f"reference {1e3 * ref:.2f} ms, fused {1e3 * fused:.2f} ms"
            if no_scan:
                detail += (f"; without any scan {1e3 * no_scan:.2f} ms: the most any "
                           f"implementation can reach is {ref / no_scan:.2f}x")
            add("training step: reference / fused" + ("" if target else " (info)"), shape,
                ref / fused, TARGETS["seed_speedup"], True, detail)
            if not target:
                rows[-1]["goal"], rows[-1]["verdict"] = "-", "-"
        if fused and floor:
            target = shape in ("medium", "large")
            detail = f"fused {1e3 * fused:.2f} ms, floor {1e3 * floor:.2f} ms (6 GEMMs)"
            if floor_needed:
                detail += (f"; vs the 5 GEMMs the step runs ({1e3 * floor_needed:.2f} ms): "
                           f"{fused / floor_needed:.2f}x")
            add("training step: fused / GEMM floor" + ("" if target else " (info)"), shape,
                fused / floor, TARGETS["floor_ratio"], False, detail)
            if not target:
                rows[-1]["goal"], rows[-1]["verdict"] = "-", "-"

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
            ref = _median(benches, kind=kind, shape=shape, implementation="reference")
            fused = _median(benches, kind=kind, shape=shape, implementation="fused")
            if ref and fused:
                add(f"{kind}: reference / fused (info)", shape, ref / fused, 0, True,
                    f"reference {1e3 * ref:.2f} ms, fused {1e3 * fused:.2f} ms")
                rows[-1]["goal"], rows[-1]["verdict"] = "-", "-"

    # Issue 7: the neuron options cost little.
    for shape in shapes:
        default = _median(benches, kind="op-options", shape=shape, config="default")
        options = _median(benches, kind="op-options", shape=shape, config="options")
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
    if "reference" in fits and "fused" in fits:
        ref, fused = (fits[k]["extra_info"]["epoch_median_s"] for k in ("reference", "fused"))
        first = [fits[k]["extra_info"]["first_epoch_s"] for k in ("reference", "fused")]
        whole = [fits[k]["stats"]["median"] for k in ("reference", "fused")]
        epochs = fits["fused"]["extra_info"]["epochs"]
        add("seed notebook model.fit epoch: reference / fused", "seed", ref / fused,
            TARGETS["fit_speedup"], True,
            f"median epoch after the first: reference {1e3 * ref:.0f} ms, fused "
            f"{1e3 * fused:.0f} ms; first epoch (tracing) {first[0]:.2f} s vs {first[1]:.2f} s; "
            f"whole fit(epochs={epochs}) {whole[0]:.2f} s vs {whole[1]:.2f} s "
            f"({whole[0] / whole[1]:.2f}x)")
        if "no-scan" in fits:
            bound = fits["no-scan"]["extra_info"]["epoch_median_s"]
            rows[-1]["detail"] += (f"; without any scan {1e3 * bound:.0f} ms: the most any "
                                   f"implementation can reach is {ref / bound:.2f}x")

    lines = ["| target | shape | measured | goal | verdict | detail |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['shape']} | {r['measured_text']} | {r['goal']} | "
                     f"{r['verdict']} | {r['detail']} |")
    return rows, "\n".join(lines)
