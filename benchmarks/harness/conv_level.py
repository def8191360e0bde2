"""The spiking CNN, for the benchmarks: `fused_lif.models.create_conv_snn_model`
(conv16-LIF-pool, conv32-LIF-pool, LIF readout, kernel 3, "same" padding) on
rate-coded 28x28x1 images, and the models timed beside it, all from the same
initial weights:

- "fused": the model as `fused-lif train --model conv` builds it (fused LIF);
- "reference": every LIF neuron `implementation="reference"` (tf.while_loop);
- "no-scan": every LIF replaced by a ReLU, the readout's too (relu(x @ w + b)):
  the same data flow without the time loop, a lower bound of the fused step;
- "time-distributed": the fused model with `keras.layers.TimeDistributed`
  convolutions and pooling instead of `fused_lif.TimeFolded` (for
  information: what a Keras user who does the obvious thing gets).

The training step is `fused_lif._bench_model.training_step` (forward, the
seed's loss on the output spike counts, backward, Adam), as for the MLP.
"""

import dataclasses
import math

import numpy as np

# The reference first: the others are checked against it.
CONV_IMPLEMENTATIONS = ("reference", "fused", "no-scan", "time-distributed")


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """A spiking CNN's batch, time steps, image [H, W, C], channels per
    convolution, kernel size and outputs."""

    name: str
    batch: int
    time: int
    image: tuple
    channels: tuple
    kernel_size: int
    outputs: int

    @property
    def inputs(self):
        """Features of the flattened input spike trains, H·W·C."""
        return math.prod(self.image)

    def __str__(self):
        return (f"{self.name} (B={self.batch}, T={self.time}, "
                f"{'x'.join(map(str, self.image))}, conv{'-pool-conv'.join(map(str, self.channels))}"
                f"-pool-dense{self.outputs}, kernel {self.kernel_size})")


# The spiking CNN of the table: B=32, T=20, 28x28x1 digits,
# conv16-pool-conv32-pool-dense10, kernel 3.
CONV_SHAPE = ConvShape("conv", batch=32, time=20, image=(28, 28, 1), channels=(16, 32),
                       kernel_size=3, outputs=10)


def conv_images(count, image=(28, 28, 1), seed=0):
    """Digit-like intensities [count, H·W·C] in [0, 1]: blocks of a random 7x7
    grid (strokes a few pixels wide, as a convolution sees them), ~20% of
    the pixels lit at 0.5-1, as MNIST's."""
    height, width, depth = image
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, -(-height // 4), -(-width // 4), depth)) < 0.2
    lit = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :height, :width]
    values = lit * rng.uniform(0.5, 1.0, lit.shape)
    return values.reshape(count, -1).astype(np.float32)


def conv_inputs(shape=CONV_SHAPE, seed=0, max_rate=1.0):
    """Rate-coded spikes x [batch, time, H·W·C] (fused_lif.rate_encode of
    `conv_images`) and one-hot labels y [batch, outputs]."""
    import tensorflow as tf

    from fused_lif.encoding import rate_encode

    images = conv_images(shape.batch, shape.image, seed)
    x = rate_encode(images, shape.time, max_rate=max_rate, seed=seed)
    rng = np.random.default_rng(seed + 1)
    y = np.eye(shape.outputs, dtype=np.float32)[rng.integers(0, shape.outputs, shape.batch)]
    return tf.constant(x), tf.constant(y)


def _relu_readout_class():
    import keras
    import tensorflow as tf

    from fused_lif.layer import LIFLayer

    class ReluReadout(LIFLayer):
        """The readout LIFLayer's weights [w, b] and projection, a ReLU where
        its LIF neurons were: relu(x @ w + b) (the LIF op adds the bias
        itself, so the bias add stays with the ReLU)."""

        def call(self, inputs, initial_state=None, training=None):
            x = tf.convert_to_tensor(inputs)
            shape = tf.shape(x)
            currents = tf.reshape(x, [-1, self.w.shape[0]]) @ tf.cast(self.w, x.dtype)
            currents = tf.reshape(currents, tf.stack([shape[0], shape[1], self.units]))
            currents.set_shape([x.shape[0], x.shape[1], self.units])
            return keras.activations.relu(currents + tf.cast(self.b, x.dtype))

    return ReluReadout


def conv_network(shape=CONV_SHAPE, wrapper=None, neurons="fused"):
    """The spiking CNN of `create_conv_snn_model`, layer for layer, with the
    synapses wrapped by `wrapper` (default fused_lif.TimeFolded; or
    keras.layers.TimeDistributed) and `neurons`: "fused" or "reference" (LIF
    neurons and LIFLayer readout of that implementation), or "relu" (ReLUs
    where the LIF neurons were, the readout relu(x @ w + b)). The harness's
    tests check that it is create_conv_snn_model's network."""
    import keras

    from fused_lif import LIF, LIFLayer, TimeFolded

    wrapper = wrapper or TimeFolded
    height, width, depth = shape.image
    inputs = keras.Input(shape=(shape.time, shape.inputs), name="input")
    h = keras.layers.Reshape((shape.time, height, width, depth), name="images")(inputs)
    for i, c in enumerate(shape.channels, 1):
        h = wrapper(keras.layers.Conv2D(c, shape.kernel_size, padding="same"), name=f"conv{i}")(h)
        neuron = (keras.layers.ReLU(name=f"relu{i}") if neurons == "relu"
                  else LIF(implementation=neurons, name=f"lif{i}"))
        h = neuron(h)
        h = wrapper(keras.layers.MaxPooling2D(2), name=f"pool{i}")(h)
    features = math.prod(h.shape[2:])
    h = keras.layers.Reshape((shape.time, features), name="flatten")(h)
    readout = _relu_readout_class() if neurons == "relu" else LIFLayer
    kwargs = {} if neurons == "relu" else {"implementation": neurons}
    outputs = readout(units=shape.outputs, name="output_layer", **kwargs)(h)
    return keras.Model(inputs=inputs, outputs=outputs, name=f"conv_snn_{neurons}")


def build_conv_models(shape=CONV_SHAPE, implementations=CONV_IMPLEMENTATIONS, seed=0):
    """{implementation: the spiking CNN} (see the module docstring), all with
    the first one's initial weights. "fused" and "reference" are
    `create_conv_snn_model` itself; "no-scan" and "time-distributed" are
    `conv_network`."""
    import keras
    from keras.layers import TimeDistributed

    from fused_lif.models import create_conv_snn_model

    builders = {
        "no-scan": lambda: conv_network(shape, neurons="relu"),
        "time-distributed": lambda: conv_network(shape, TimeDistributed, neurons="fused"),
    }
    models = {}
    for name in implementations:
        keras.utils.set_random_seed(seed)
        if name in builders:
            models[name] = builders[name]()
        elif name in ("fused", "reference"):
            models[name] = create_conv_snn_model(shape.image, shape.outputs, shape.time,
                                                 implementation=name, channels=shape.channels,
                                                 kernel_size=shape.kernel_size)
        else:
            raise ValueError(f"unknown conv implementation {name!r}; known: "
                             f"{', '.join(CONV_IMPLEMENTATIONS)}")
    share_weights(models, implementations[0])
    return models


def share_weights(models, source):
    """Gives every model `source`'s trainable weights, in order (the same
    layers' weights, whatever their names)."""
    first = [w.numpy() for w in models[source].trainable_weights]
    for name, model in models.items():
        shapes = [tuple(w.shape) for w in model.trainable_weights]
        if shapes != [w.shape for w in first]:
            raise AssertionError(f"{name}'s weights {shapes} are not {source}'s "
                                 f"{[w.shape for w in first]}")
        for variable, value in zip(model.trainable_weights, first):
            variable.assign(value)


def spike_rates(model, x):
    """{layer name: mean spike rate} of the model's LIF layers and readout on x."""
    import keras

    names = [layer.name for layer in model.layers
             if layer.name.startswith("lif") or layer.name == "output_layer"]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    return {n: float(np.mean(out)) for n, out in zip(names, probe(x))}
