"""The seed's 2-layer SNN, for the benchmarks: the models beside fused and
reference (the seed notebook's own layer, the model without the LIF scan, DFA),
the DFA training step, the notebook's model.fit, and the checks that the GEMM
floor and the step without the scan run their GEMMs as a step does (in the
traced graph and in the profiler's trace). The shapes, inputs, training step
and GEMM floor themselves are `fused_lif._bench_model`'s, which `fused-lif
bench` uses too."""

import os
import sys

import numpy as np

from fused_lif import _bench_model
from fused_lif._bench_model import COMPARED, FLOOR_GEMMS, Shape

BENCHMARKS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The seed notebook's layer, copied verbatim once: tests/seed_notebook.py.
TESTS_DIR = os.path.join(os.path.dirname(BENCHMARKS_DIR), "tests")


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
        """LIFLayer's weights, paths and build, with its projection written
        again here on purpose: the bound must run nothing at once that the
        fused step runs one after the other. The layer's own `x @ w` has a
        plain matmul gradient, which lets TensorFlow start the layer below's
        dW as soon as this layer's dX is done, while this layer's dW still
        runs; in the fused step the layer below's scan backward sits between
        them. `_no_scan_matmul` hands dX down only once dW is done."""

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


def _dfa_model(shape):
    from fused_lif import create_snn_model

    return create_snn_model(shape.inputs, shape.hidden, shape.outputs, shape.time,
                            implementation="fused", training="dfa")


def build_models(shape, implementations=COMPARED, seed=0):
    """The seed's 2-layer SNN at `shape`, one per implementation, all with the
    same initial weights. Returns {implementation: keras.Model}.

    Implementations: "fused", "reference" (LIFLayer's); for context "seed",
    the seed notebook's own layer (a matmul per time step), "no-scan", the
    same model without the LIF scan (a lower bound on any step's time), and
    "fused-dfa", the fused model trained by direct feedback alignment (time
    its step with `dfa_training_step`).
    """
    return _bench_model.build_models(shape, implementations, seed, builders={
        "seed": _seed_notebook_model, "no-scan": _no_scan_model, "fused-dfa": _dfa_model})


def dfa_training_step(model, learning_rate=1e-3):
    """tf.function (x, y) -> loss: a `DFAModel`'s step, its gradients by direct
    feedback alignment, then Adam (as `_bench_model.training_step` for
    backprop)."""
    import keras
    import tensorflow as tf

    from fused_lif.losses import spike_categorical_crossentropy

    optimizer = keras.optimizers.Adam(learning_rate)
    if not model.compiled:
        model.compile(loss=spike_categorical_crossentropy)  # the loss dfa_gradients uses

    @tf.function
    def step(x, y):
        loss, gradients = model.dfa_gradients(x, y)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


# ------------------------------------------------ the GEMMs, as they run --

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

    from fused_lif._bench import warm_up

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
