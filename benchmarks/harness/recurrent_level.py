"""Recurrent LIF networks, for the benchmarks: input -> LIFLayer(hidden,
recurrent=True) -> LIFLayer(outputs) (`fused_lif.create_snn_model(...,
recurrent=True)`) on 5% Bernoulli input spikes, at the two shapes
(batch, time, inputs, hidden, outputs) of RECURRENT_SHAPES; and the density
sweep's inputs and functions: the recurrent LIF forward alone, the fused
row-sum op against a dense per-step matmul.

The models timed side by side, from the same initial weights (w, b of both
layers; the recurrent kernel where there is one):

- "fused-recurrent": LIFLayer(recurrent=True, implementation="fused"), the
  fused recurrent op (`fused_lif.recurrent.recurrent_lif_scan`);
- "fused": the same network feed-forward (recurrent=False), fused: the
  budget, what the recurrence should cost little more than;
- "reference-recurrent": LIFLayer(recurrent=True, implementation="reference"),
  the tf.while_loop with s[t-1] @ recurrent_kernel at each step.
"""

import numpy as np

from fused_lif._bench_model import Shape

# The reference first: the fused recurrent model is checked against it.
RECURRENT_IMPLEMENTATIONS = ("reference-recurrent", "fused-recurrent", "fused")
RECURRENT_SHAPES = {s.name: s for s in (
    Shape("rec-wide", 64, 100, 700, 256, 20),   # SHD-like: 700 input channels
    Shape("rec-long", 32, 250, 140, 128, 20),   # fewer inputs, 250 steps
)}
INPUT_DENSITY = 0.05  # Bernoulli input spikes


def get_recurrent_shape(shape):
    """A `Shape` from its name in RECURRENT_SHAPES, or the Shape itself."""
    if isinstance(shape, Shape):
        return shape
    try:
        return RECURRENT_SHAPES[shape]
    except KeyError:
        raise ValueError(f"unknown recurrent shape {shape!r}; known: "
                         f"{', '.join(RECURRENT_SHAPES)}") from None


def fused_recurrent_scan():
    """(recurrent_lif_scan, None) of the fused recurrent op when it imports
    and runs here, else (None, why not): the op is built on its own
    schedule, and the benchmarks of it skip, saying so, until it is."""
    import tensorflow as tf

    try:
        from fused_lif.recurrent import recurrent_lif_scan

        recurrent_lif_scan(tf.zeros([1, 2, 3]), tf.zeros([3, 3]))
    except Exception as error:  # noqa: BLE001  (any reason is reported)
        return None, (f"the fused recurrent op is not available here "
                      f"({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    return recurrent_lif_scan, None


def recurrent_inputs(shape, seed=0):
    """Input spikes x [batch, time, inputs], Bernoulli(INPUT_DENSITY), and
    one-hot labels y [batch, outputs]."""
    from fused_lif._bench_model import model_inputs

    return model_inputs(get_recurrent_shape(shape), seed=seed, rate=INPUT_DENSITY)


def _model(shape, implementation):
    from fused_lif import create_snn_model

    recurrent = implementation.endswith("-recurrent")
    return create_snn_model(shape.inputs, shape.hidden, shape.outputs, shape.time,
                            implementation=implementation.split("-")[0], recurrent=recurrent)


def build_recurrent_models(shape, implementations=RECURRENT_IMPLEMENTATIONS, seed=0):
    """{implementation: the network at `shape`} (see the module docstring),
    sharing the first one's initial weights by name (the feed-forward model
    has no recurrent kernel)."""
    import keras

    shape = get_recurrent_shape(shape)
    models = {}
    for name in implementations:
        if name not in RECURRENT_IMPLEMENTATIONS:
            raise ValueError(f"unknown recurrent implementation {name!r}; known: "
                             f"{', '.join(RECURRENT_IMPLEMENTATIONS)}")
        keras.utils.set_random_seed(seed)
        models[name] = _model(shape, name)
    values = {}
    for model in models.values():  # the recurrent kernel from the first that has one
        for v in model.trainable_weights:
            values.setdefault(v.path, v.numpy())
    for model in models.values():
        for v in model.trainable_weights:
            v.assign(values[v.path])
    return models


def hidden_spike_rate(model, x):
    """Mean spike rate of the model's hidden layer on x."""
    return float(np.mean(model.get_layer("hidden_layer")(x).numpy()))


# ------------------------------------------------------ the density sweep --

# Hidden spike rates: 2-40%, and 50-60% to find where the row sum stops paying.
DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
# The hidden layers of RECURRENT_SHAPES: [batch, time, neurons].
SWEEP_SHAPES = {name: (s.batch, s.time, s.hidden) for name, s in RECURRENT_SHAPES.items()}
DRIVE = 2.0              # the current that makes a neuron fire at once, from rest
RECURRENT_SCALE = 1e-4   # the recurrent weights' spread: too weak to move a spike


def density_inputs(op_shape, density, seed=0):
    """(currents, recurrent_kernel, spikes) for the recurrent LIF forward, so
    that its hidden layer fires at `density` exactly: currents [batch, time,
    neurons] are DRIVE where a Bernoulli(density) mask is 1, else 0; the
    reset is to zero and the recurrent kernel [neurons, neurons] is
    N(0, RECURRENT_SCALE), whose sums (at most 20 x neurons x 1e-4 over the
    membrane's memory) never reach the threshold, nor cancel DRIVE. So the
    spikes are the mask (`spikes`), and the row-sum kernel sums
    density x neurons rows per step and row, at random positions, as in a
    trained network."""
    import tensorflow as tf

    batch, time, neurons = op_shape
    rng = np.random.default_rng(seed)
    mask = (rng.random((batch, time, neurons)) < density).astype(np.float32)
    kernel = rng.normal(0.0, RECURRENT_SCALE, (neurons, neurons)).astype(np.float32)
    return tf.constant(DRIVE * mask), tf.constant(kernel), mask


def recurrent_forward_fn(implementation):
    """tf.function (currents, recurrent_kernel) -> spikes: the recurrent LIF
    forward, "fused" (the row-sum op) or "reference" (the while_loop with a
    dense s[t-1] @ R per step)."""
    import tensorflow as tf

    if implementation == "fused":
        scan, why_not = fused_recurrent_scan()
        if scan is None:
            raise RuntimeError(why_not)
    elif implementation == "reference":
        from fused_lif.reference import recurrent_lif_scan as scan
    else:
        raise ValueError(f"implementation must be 'fused' or 'reference', got "
                         f"{implementation!r}")
    return tf.function(lambda currents, kernel: scan(currents, kernel))


def feedforward_forward_fn():
    """tf.function (currents, recurrent_kernel) -> spikes of the fused
    feed-forward op on the same currents (the kernel unused): the LIF scan
    alone, what the recurrent op does besides its row sums."""
    import tensorflow as tf

    from fused_lif import lif_scan

    return tf.function(lambda currents, kernel: lif_scan(currents))


def dense_steps_fn():
    """tf.function (spikes [batch, time, neurons], recurrent_kernel) ->
    [batch, time, neurons]: s[t] @ R for every t, one dense matmul per step,
    each waiting for the one before (as in a recurrence, where s[t] needs
    the product of t-1): the recurrent term as a dense per-step kernel would
    compute it, without the LIF."""
    import tensorflow as tf

    @tf.function
    def dense_steps(spikes, kernel):
        outputs, before = [], []
        for step in tf.unstack(spikes, axis=1):
            with tf.control_dependencies(before):
                product = tf.matmul(step, kernel)
            outputs.append(product)
            before = [product]
        return tf.stack(outputs, axis=1)

    return dense_steps


def dense_gemm_fn():
    """tf.function (spikes [batch, time, neurons], recurrent_kernel) -> the
    same products as `dense_steps_fn` in one GEMM over all steps, which no
    recurrence can do (s[t] needs the product of t-1): the least any dense
    product of these spikes costs, the floor under the dense steps."""
    import tensorflow as tf

    @tf.function
    def dense_gemm(spikes, kernel):
        shape = tf.shape(spikes)
        product = tf.reshape(spikes, [-1, spikes.shape[-1]]) @ kernel
        return tf.reshape(product, shape)

    return dense_gemm
