"""The benchmark harness: everything `benchmarks/` measures with, on top of
`fused_lif._bench` (the shape grid, the seed model's training step, the GEMM
floor, the check against the reference, round-robin timing; `fused-lif bench`
uses that part alone). Here: machine-load probes, the op-level functions, the
copy-bandwidth baseline, the seed notebook's own model and the model without a
scan, the notebook's model.fit, the peak-memory probe, the targets and the
ratio table.

Used by the pytest-benchmark suite (benchmarks/test_bench_*.py),
benchmarks/ratios.py and benchmarks/profile_*.py, which find it on sys.path
(pytest and `python benchmarks/x.py` both put benchmarks/ there). Every
measurement of the fused op is paired with a check against the reference (a
fast wrong result is worthless): spikes must be equal, gradients equal to
float rounding.

    import harness as bm
    print(bm.format_table(bm.model_step_table(("seed", "medium"))))

Times are medians of `repeats` calls after `warmup` calls; implementations
are measured interleaved (round-robin) so that ratios come from the same
conditions. Compare ratios, never absolute times across machines or runs.
"""

import gc
import json
import os
import subprocess
import sys
import time

import numpy as np

from fused_lif import _bench
from fused_lif._bench import (
    FLOOR_GEMMS,
    IMPLEMENTATIONS,
    SHAPES,
    Shape,
    assert_same_result,
    compare_models,
    format_table,
    gemm_floor_inputs,
    gemm_floor_parts,
    gemm_floor_step,
    gemm_schedule,
    get_shape,
    loss_and_gradients,
    model_inputs,
    model_step_table,
    training_step,
    warm_up,
)

__all__ = [
    "COPY_BYTES_PER_FLOAT",
    "FLOOR_CHECK_MIN_SECONDS",
    "FLOOR_GEMMS",
    "FLOOR_SHAPES",
    "IMPLEMENTATIONS",
    "MEMORY_SHAPE",
    "OPTION_CONFIGS",
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
    "gemm_floor_parts",
    "gemm_floor_step",
    "gemm_overlaps",
    "gemm_schedule",
    "get_shape",
    "layer_step_peak_memory",
    "lif_bytes",
    "lif_forward_backward_fn",
    "lif_forward_fn",
    "lif_options_fn",
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

HERE = os.path.dirname(os.path.abspath(__file__))
# The seed notebook's layer, copied verbatim once: tests/seed_notebook.py.
TESTS_DIR = os.path.join(os.path.dirname(HERE), "tests")

# One layer's training step, for the peak-host-memory comparison:
# (batch, time, inputs, units).
MEMORY_SHAPE = (64, 500, 700, 512)

# Input density of the sparse-input training step's target (rate-coded MNIST:
# about 10% ones).
SPIKE_INPUT_DENSITY = 0.1


def break_even(points):
    """The density where spike_matmul stops beating the dense GEMM: points
    [(density, dense seconds, sparse seconds)] ascending; linear interpolation
    of sparse / dense between the two points around 1. None if sparse wins at
    every point; the first density if it loses at every point."""
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
}

# The shapes the GEMM floor targets are for.
FLOOR_SHAPES = ("medium", "large")
# The floor's own check (floor / sum of its GEMMs timed alone) is a target
# where the floor takes at least this long: each GEMM timed alone also pays a
# function call (~0.1-0.3 ms), which weighs on small shapes' sums.
FLOOR_CHECK_MIN_SECONDS = 0.010

# The neuron options, as keyword arguments of lif_scan: "default" is the
# seed's neuron; "options" is atan + subtract with a per-neuron tau tensor
# (trainable: its gradient is computed too).
OPTION_CONFIGS = {
    "default": dict(),
    "options": dict(surrogate="atan", reset="subtract", per_neuron_tau=True),
}

# An elementwise copy of n float32 values reads 4n and writes 4n bytes.
COPY_BYTES_PER_FLOAT = 8


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
        # /proc/stat counts whole clock ticks: over a short window the
        # rounding can exceed the machine's capacity, which bounds the truth.
        return min(1.0, max(0.0, other) / max(1e-9, wall * (os.cpu_count() or 1)))


def set_threads(intra_op=None, inter_op=None):
    """Sets TensorFlow's thread pools; call before TensorFlow runs anything."""
    import tensorflow as tf

    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra_op))
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter_op))




# ----------------------------------------------------------------- inputs --

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
        from fused_lif import ops

        ops.load_library()  # says clearly why not, when it cannot load
        return ops
    if implementation == "reference":
        from fused_lif import reference

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
    """The seed notebook's own model, verbatim in what it computes
    (tests/seed_notebook.py): one matmul per time step inside its
    tf.while_loop (for context: the package's reference does one matmul for
    all time steps)."""
    if TESTS_DIR not in sys.path:
        sys.path.append(TESTS_DIR)
    import seed_notebook

    return seed_notebook.create_snn_model(shape.inputs, shape.hidden, shape.outputs, shape.time)


def _no_scan_matmul(x2d, w):
    """x2d·w, with the gradient's dW and dX free to run at once (as in the
    fused step, where both wait only for the scan's backward), but dX handed
    to the layer below only once dW is done: the layer below's dW starts after
    both, as in the fused step, where that layer's scan backward runs between
    them. An unused dX (the input layer's) is pruned, as in the step."""
    import tensorflow as tf

    @tf.custom_gradient
    def matmul(x2d, w):
        def grad(upstream):
            dw = tf.matmul(x2d, upstream, transpose_a=True)
            dx = tf.matmul(upstream, w, transpose_b=True)
            with tf.control_dependencies([dw]):
                return tf.identity(dx), dw

        return tf.matmul(x2d, w), grad

    return matmul(x2d, w)


def _scan_removed(currents, bias):
    """Where the LIF op was: its inputs and outputs' data flow, none of its
    work. Returns the currents unchanged (the op adds the bias itself, so the
    bias add goes too); its gradient passes dL/dcurrents through and gives the
    bias a zero gradient (the op computes the real one; Adam still updates
    the bias, as in the step)."""
    import tensorflow as tf

    @tf.custom_gradient
    def removed(currents, bias):
        return tf.identity(currents), lambda upstream: (upstream, tf.zeros_like(bias))

    return removed(currents, bias)


def _no_scan_model(shape):
    """The 2-layer model with the LIF scan removed: the bound that any scan
    implementation's step (or model.fit epoch) takes at least. Every op of the
    fused step but the LIF op runs, with the same dependencies (the layer's
    matmul and reshapes, the loss, the gradients, Adam on every variable);
    the LIF op, with the bias add and bias gradient it computes, becomes
    `_scan_removed`. Nothing that the fused step runs one after the other runs
    at once here (`_no_scan_matmul`). Not a spiking model."""
    import keras
    import tensorflow as tf

    from fused_lif.layer import LIFLayer

    class NoScanLayer(LIFLayer):
        def call(self, inputs, training=None):
            x = tf.convert_to_tensor(inputs)
            shape = tf.shape(x)
            currents = _no_scan_matmul(tf.reshape(x, [-1, self.w.shape[0]]),
                                       tf.cast(self.w, x.dtype))
            currents = tf.reshape(currents, tf.stack([shape[0], shape[1], self.units]))
            currents.set_shape([x.shape[0], x.shape[1], self.units])
            return _scan_removed(currents, tf.cast(self.b, x.dtype))

    inputs = keras.Input(shape=(shape.time, shape.inputs), name="input")
    hidden = NoScanLayer(shape.hidden, implementation="reference", name="hidden_layer")(inputs)
    outputs = NoScanLayer(shape.outputs, implementation="reference",
                          name="output_layer")(hidden)
    return keras.Model(inputs=inputs, outputs=outputs, name="no_scan_snn")


def build_models(shape, implementations=IMPLEMENTATIONS, seed=0):
    """The seed's 2-layer SNN at `shape`, one per implementation, all with the
    same initial weights. Returns {implementation: keras.Model}.

    Implementations: "fused", "reference" (LIFLayer's); for context "seed",
    the seed notebook's own layer (a matmul per time step), "no-scan", the
    same model without the LIF scan (a lower bound on any step's time), and
    "fused-dfa", the fused model trained by direct feedback alignment.
    """
    return _bench.build_models(shape, implementations, seed, builders={
        "seed": _seed_notebook_model, "no-scan": _no_scan_model, "fused-dfa": _dfa_model})


def _dfa_model(shape):
    from fused_lif import create_snn_model

    return create_snn_model(shape.inputs, shape.hidden, shape.outputs, shape.time,
                            implementation="fused", training="dfa")


# ----------------------------------------------------------------- timing --

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





def gemm_overlaps(fn, args=(), calls=5):
    """(matmuls, overlapping) of `calls` calls of fn(*args) in TensorFlow's
    profiler trace: how many MatMul ops ran, and the (name, name) pairs of
    those whose run times overlapped (that ran at the same time on the
    inter-op pool). What `gemm_schedule` reads in the traced graph, seen at
    run time (after Grappler's rewrites)."""
    import glob
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    warm_up(fn, args)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(calls):
                fn(*args)
        finally:
            tf.profiler.experimental.stop()
        path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    runs = []  # (start, end) in ps, op name
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the inter-op threads
                continue
            for event in line.events:
                label = plane.event_metadata[event.metadata_id].name  # "name:type"
                if "MatMul" in label.rsplit(":", 1)[-1]:
                    start = line.timestamp_ns * 1000 + event.offset_ps
                    runs.append((start, start + event.duration_ps, label.rsplit(":", 1)[0]))
    runs.sort()
    overlapping = [(a[2], b[2]) for i, a in enumerate(runs) for b in runs[i + 1:]
                   if b[0] < a[1]]
    return len(runs), overlapping


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

    from fused_lif.encoding import rate_encode
    from fused_lif.experiment import EpochTimer
    from fused_lif.losses import spike_categorical_accuracy, spike_categorical_crossentropy
    from fused_lif.models import create_snn_model

    rng = np.random.default_rng(seed)
    # MNIST-like intensities: ~19% of the pixels lit, mean ~0.14.
    images = ((rng.random((samples, 784)) < 0.19) * rng.uniform(0.5, 1.0, (samples, 784)))
    x = rate_encode(images.astype(np.float32), time_steps, max_rate=0.8, seed=seed)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, samples)]
    keras.utils.set_random_seed(seed)
    if implementation == "no-scan":  # the bound: the same fit without the scan
        model = _no_scan_model(Shape("notebook", 32, time_steps, 784, 128, 10))
    else:
        model = create_snn_model(784, 128, 10, time_steps, implementation=implementation)
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001),
                  loss=spike_categorical_crossentropy, metrics=[spike_categorical_accuracy])

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

    from fused_lif.layer import LIFLayer

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
            "import harness as b\n"
            "impl, B, T, I, U, seed, threads = json.loads(sys.argv[1])\n"
            "b.set_threads(threads)\n"
            "print('FUSED_LIF_MEMORY ' + json.dumps(b._memory_probe(impl, B, T, I, U, seed)))\n")
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Make the child import this harness and the same fused_lif as this process.
    import fused_lif

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fused_lif.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [HERE, package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
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
        if floor and len(alone) == len(_bench.FLOOR_GEMMS):
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
            rows.append({
                "target": target, "shape": shape, "measured": None, "measured_text": "-",
                "goal": f"<= {TARGETS['sparse_floor_ratio']:.2f}x", "verdict": "not run",
                "detail": "needs the sparse training step (implementation \"fused-sparse\") "
                          "and the GEMM floor at this shape in the same run"})

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

    lines = ["| target | shape | measured | goal | verdict | detail |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['shape']} | {r['measured_text']} | {r['goal']} | "
                     f"{r['verdict']} | {r['detail']} |")
    return rows, "\n".join(lines)