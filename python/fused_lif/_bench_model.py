"""The workload of `fused-lif bench` and the benchmarks: the seed's 2-layer
SNN at the benchmark shapes, its inputs, models sharing their initial
weights, its training step, and the GEMM floor (the step's 5 GEMMs, one after
the other). `_bench` times and checks them.
"""

import dataclasses

import numpy as np

# What `fused-lif bench` compares, the reference first: the others are checked
# against it. (The layer's own choices are fused_lif.layer.IMPLEMENTATIONS.)
COMPARED = ("reference", "fused")


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
    y = np.eye(shape.outputs, dtype=np.float32)[rng.integers(0, shape.outputs, shape.batch)]
    return tf.constant(x.astype(np.float32)), tf.constant(y)


def build_models(shape, implementations=COMPARED, seed=0, builders=None):
    """{implementation: the seed's 2-layer SNN at `shape`}, all with the first
    one's initial trainable weights (a DFA model also has fixed feedback);
    `builders` maps other names to functions Shape -> Model."""
    import keras

    from .models import create_snn_model

    shape = get_shape(shape)
    models = {}
    for name in implementations:
        keras.utils.set_random_seed(seed)
        models[name] = (builders[name](shape) if builders and name in builders else
                        create_snn_model(shape.inputs, shape.hidden, shape.outputs, shape.time,
                                         implementation=name))
    first = [w.numpy() for w in models[implementations[0]].trainable_weights]
    for name, model in models.items():
        assert len(first) == len(model.trainable_weights), name
        for variable, value in zip(model.trainable_weights, first):
            variable.assign(value)
    return models


def _forward_backward(model, x, y):
    """(spikes, loss, gradients) with the seed's loss, traced where called."""
    import tensorflow as tf

    from .losses import spike_categorical_crossentropy

    with tf.GradientTape() as tape:
        spikes = model(x, training=True)
        loss = tf.reduce_mean(spike_categorical_crossentropy(y, spikes))
    return spikes, loss, tape.gradient(loss, model.trainable_variables)


def loss_and_gradients(model):
    """tf.function (x, y) -> (spikes, loss, gradients), without the update."""
    import tensorflow as tf

    return tf.function(lambda x, y: _forward_backward(model, x, y))


def training_step(model, learning_rate=1e-3):
    """tf.function (x, y) -> loss: forward, backward, Adam, as the seed trains."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(x, y):
        _, loss, gradients = _forward_backward(model, x, y)
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
    FLOOR_GEMMS alone, each waiting for the one before (data or control
    dependencies), as in a step, where each needs the one before or the scan
    between them. Independent, TensorFlow's inter-op pool would run several at
    once on the same cores, slowing each other down, which no step pays."""
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
