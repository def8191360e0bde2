"""The seed notebook's experiment, as `fused-lif train` runs it (the command
parses and prints; this computes): MNIST rate-coded into spike trains, the
784-128-10 LIF network trained with Adam, held-out test digits; each
run (an implementation, fused or reference, with a training rule, backprop or
direct feedback alignment) from the same initial weights and batch order.
`--model` picks the network (MODELS): the seed's MLP, a spiking CNN on the
same spike trains, or a recurrent LIF network on row-sequential digits (28
steps of 28-pixel rows), trained beside the same network without its
recurrent weights.
`config` is the `train` command's options (an argparse.Namespace), with
`learning_rates` ({training rule: Adam's rate}) filled in by the command."""

import dataclasses
import math
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from . import __version__
from .data import NUM_CLASSES, load_mnist, preprocess
from .encoding import rate_encode, rate_encode_tf
from .losses import spike_categorical_accuracy, spike_categorical_crossentropy
from .models import create_conv_snn_model, create_snn_model
from .neurons import NeuronLayer

__all__ = ["EpochTimer", "Data", "MODELS", "prepare_data", "runs", "initial_weights",
           "train_one", "spike_densities", "speedups", "comparisons", "summary"]

EVAL_BATCH_SIZE = 256
# Training digits that the hidden layer's spike density is measured on.
DENSITY_DIGITS = 1024
# fused-lif train --model: {name: what it is}. "feedforward" is not an
# option: it is the recurrent model's network without recurrent weights,
# which --model recurrent trains beside it.
MODELS = {
    "mlp": "784-{hidden}-10 LIF network on rate-coded digits (the seed's)",
    "conv": "spiking CNN (conv16-LIF-pool, conv32-LIF-pool, LIF readout) on rate-coded digits",
    "recurrent": "28-{hidden}-10 LIF network, recurrent hidden layer, on digits row by row",
}
FEEDFORWARD = "feedforward"
ROW_STEPS = 28  # row-sequential MNIST: one 28-pixel row per time step
# The train command's options that summary.json records.
CONFIG_KEYS = ("model", "implementation", "compare", "training", "spike_input", "samples",
               "validation_split", "test_samples", "epochs", "batch_size", "time_steps",
               "max_rate", "hidden_units", "learning_rate", "learning_rates", "seed", "data")


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch (its training steps and its validation pass)
    and of each training step (forward, backward, Adam)."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.step_seconds = []  # one list per epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self.step_seconds.append([])

    def on_train_batch_begin(self, batch, logs=None):
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.step_seconds[-1].append(time.perf_counter() - self._step_start)

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)

    def steady_steps(self):
        """Step times without tracing: epochs 2+, or epoch 1 less its first step."""
        if len(self.step_seconds) > 1:
            return [t for epoch in self.step_seconds[1:] for t in epoch]
        return self.step_seconds[0][1:] if self.step_seconds else []


@dataclasses.dataclass
class Data:
    """The digits, preprocessed and rate-coded, as every implementation sees them."""

    source: str
    available_train: int    # training digits the source has
    spikes: np.ndarray      # [train + validation, time, input_dim]: the models' inputs
                            # (rate-coded spikes; for --model recurrent, pixel rows)
    labels: np.ndarray      # one-hot [train + validation, 10]
    n_train: int            # the last n_validation digits are for validation
    n_validation: int
    n_test: int
    test: object            # tf.data.Dataset of rate-coded test batches, or None
    raw_test: tuple         # (x_test [n, 28, 28], y_test [n]) as loaded, for the raster
    input_dim: int


def row_sequences(images):
    """Row-sequential digits: [n, 784] pixels -> [n, 28 steps, 28 pixels]."""
    return np.asarray(images, np.float32).reshape(len(images), ROW_STEPS, -1)


def encode_inputs(config, images, seed):
    """The model's input for preprocessed images [n, 784]: spike trains
    [n, time_steps, 784], or for the recurrent model rows [n, 28, 28]."""
    if config.model == "recurrent":
        return row_sequences(images)
    return rate_encode(images, config.time_steps, config.max_rate, seed=seed)


def _test_dataset(config, x, y):
    """Test digits encoded batch by batch in tf.data (the whole set is never
    encoded at once); stateless seeds per batch give every model the same spikes."""

    def encode(index, batch):
        images, labels = batch
        if config.model == "recurrent":
            return tf.reshape(images, [-1, ROW_STEPS, images.shape[-1] // ROW_STEPS]), labels
        batch_seed = tf.stack([tf.constant(config.seed, tf.int64), index])
        return rate_encode_tf(images, config.time_steps, config.max_rate,
                              seed=batch_seed), labels

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(EVAL_BATCH_SIZE).enumerate()
    return ds.map(encode).prefetch(2)


def prepare_data(config):
    """Loads MNIST (`fused_lif.data.load_mnist`: raises DataUnavailableError
    when no source works), preprocesses it as the seed does, and rate-codes
    the training digits (seeded by config.seed)."""
    mnist = load_mnist(config.data)
    x_train, y_train = preprocess(mnist.x_train[:config.samples],
                                  mnist.y_train[:config.samples])
    n_test = len(mnist.x_test) if config.test_samples is None else min(config.test_samples,
                                                                       len(mnist.x_test))
    x_test, y_test = preprocess(mnist.x_test[:n_test], mnist.y_test[:n_test])
    keras.utils.set_random_seed(config.seed)
    spikes = encode_inputs(config, x_train, config.seed)
    test = _test_dataset(config, x_test, y_test) if n_test else None
    n_train = int(math.floor(len(x_train) * (1.0 - config.validation_split)))
    return Data(mnist.source, len(mnist.x_train), spikes, y_train, n_train,
                len(x_train) - n_train, n_test, test, (mnist.x_test, mnist.y_test),
                spikes.shape[-1])


def runs(config):
    """{run name: (implementation, training rule, model)} that the command
    trains: fused (or --implementation), and the reference too with
    --compare; by backprop, by DFA, or each by both (--training both); the
    model is --model. Backprop runs are named by their implementation alone,
    DFA runs "<implementation> dfa". --model recurrent adds, per rule, the
    same network without recurrent weights ("feedforward"), with the first
    implementation."""
    implementations = ["fused", "reference"] if config.compare else [config.implementation]
    rules = ["backprop", "dfa"] if config.training == "both" else [config.training]
    out = {}
    for rule in rules:
        suffix = "" if rule == "backprop" else " dfa"
        for impl in implementations:
            out[impl + suffix] = (impl, rule, config.model)
        if config.model == "recurrent":
            out[FEEDFORWARD + suffix] = (implementations[0], rule, FEEDFORWARD)
    return out


# fused-lif train --spike-input -> LIFLayer(spike_input=...).
SPIKE_INPUT = {"off": False, "on": True, "auto": "auto"}


def build_model(implementation, training, config, input_dim, model=None):
    """The network of `model` (default: config.model)."""
    model = model or config.model
    spike_input = SPIKE_INPUT[config.spike_input]
    if model == "conv":
        if training != "backprop":
            raise ValueError("fused_lif.DFAModel trains LIFLayer networks only: the spiking "
                             "CNN's convolutions would get no DFA update")
        side = int(round(math.sqrt(input_dim)))
        return create_conv_snn_model((side, side, 1), NUM_CLASSES, config.time_steps,
                                     implementation=implementation, spike_input=spike_input)
    if model in ("recurrent", FEEDFORWARD):
        return create_snn_model(input_dim, config.hidden_units, NUM_CLASSES, ROW_STEPS,
                                implementation=implementation, training=training,
                                recurrent=model == "recurrent")
    return create_snn_model(input_dim, config.hidden_units, NUM_CLASSES, config.time_steps,
                            implementation=implementation, training=training,
                            spike_input=spike_input)


def initial_weights(config, input_dim, model=None):
    """One set of initial (trainable) weights for every run of a model; a DFA
    run's fixed feedback weights come from its own seeded initializer."""
    keras.utils.set_random_seed(config.seed)
    return [w.numpy() for w in build_model("reference", "backprop", config, input_dim,
                                           model).trainable_weights]


def _mean(values):
    return sum(values) / len(values) if values else None


def _median_or_none(values):
    return statistics.median(values) if values else None


def spike_densities(model, data):
    """The fraction of ones in the input spike trains (every training digit,
    as fit saw them) and in the hidden layer's spikes (an inference pass with
    the final weights over the first DENSITY_DIGITS training digits): what
    LIFLayer(spike_input=...) would see. (input, hidden, digits of the hidden
    pass); None where there is no training digit. (The recurrent model's
    inputs are pixels, not spikes: no input density.)"""
    x = data.spikes[:data.n_train]
    if x.size == 0:
        return None, None, 0
    binary = bool(np.all((x == 0) | (x == 1)))
    input_density = float(np.count_nonzero(x)) / x.size if binary else None
    sample = x[:DENSITY_DIGITS]
    hidden = hidden_probe(model)
    ones = size = 0
    for start in range(0, len(sample), EVAL_BATCH_SIZE):  # eager calls: no predict function
        spikes = hidden(sample[start:start + EVAL_BATCH_SIZE], training=False).numpy()
        ones, size = ones + np.count_nonzero(spikes), size + spikes.size
    return input_density, float(ones) / size, len(sample)


def hidden_probe(model):
    """The model up to its first spiking layer (a LIFLayer or LIF): its spikes."""
    layer = next(layer for layer in model.layers if isinstance(layer, NeuronLayer))
    if model.layers[1] is layer:  # right after the input: call it directly
        return layer
    return keras.Model(model.input, layer.output)


def train_one(implementation, training, weights, data, config, model_name=None):
    """Trains one implementation by one training rule from `weights`,
    evaluates it on the test digits; returns (model, result dict: history,
    times, accuracies)."""
    keras.utils.set_random_seed(config.seed)  # the same feedback weights for every DFA run
    model = build_model(implementation, training, config, data.input_dim, model_name)
    assert len(model.trainable_weights) == len(weights), "one model's weights for another"
    for variable, value in zip(model.trainable_weights, weights):
        variable.assign(value)
    learning_rate = config.learning_rates[training]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss=spike_categorical_crossentropy, metrics=[spike_categorical_accuracy])
    timer = EpochTimer()
    keras.utils.set_random_seed(config.seed)  # the same batch order for every implementation
    history = model.fit(data.spikes, data.labels, batch_size=config.batch_size,
                        epochs=config.epochs, validation_split=config.validation_split,
                        verbose=config.verbose, callbacks=[timer])
    history = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    steady_step = _median_or_none(timer.steady_steps())
    result = {
        "model": model_name or config.model,
        "implementation": implementation,
        "training": training,
        "learning_rate": learning_rate,
        "history": history,
        "epoch_seconds": timer.seconds,
        "first_epoch_seconds": timer.seconds[0],
        # Epoch 1 includes tracing the train and validation functions.
        "mean_epoch_seconds_after_first": _mean(timer.seconds[1:]),
        "median_epoch_seconds_after_first": _median_or_none(timer.seconds[1:]),
        # Median training step (forward, backward, Adam; no validation), without
        # tracing: over epochs 2+, or over epoch 1 less its first step.
        "median_step_ms": None if steady_step is None else 1e3 * steady_step,
        "train_accuracy": history["spike_categorical_accuracy"][-1],
        "validation_accuracy": history.get("val_spike_categorical_accuracy", [None])[-1],
        "validation_loss": history.get("val_loss", [None])[-1],
        "test_accuracy": None,
        "test_loss": None,
        "test_seconds": None,
    }
    (result["input_spike_density"], result["hidden_spike_density"],
     result["hidden_spike_density_digits"]) = spike_densities(model, data)
    if data.test is not None:
        start = time.perf_counter()
        scores = model.evaluate(data.test, verbose=0, return_dict=True)
        result["test_seconds"] = time.perf_counter() - start
        result["test_accuracy"] = float(scores["spike_categorical_accuracy"])
        result["test_loss"] = float(scores["loss"])
    return model, result


def speedups(results, epochs, slow="reference", fast="fused"):
    """results[slow] / results[fast]: the median training step, and the epoch
    time (epochs 2+, or the first epoch when there is only one)."""
    fused, ref = results[fast], results[slow]
    epoch_key = "median_epoch_seconds_after_first" if epochs > 1 else "first_epoch_seconds"
    return {
        "training_step": (ref["median_step_ms"] / fused["median_step_ms"]
                          if fused["median_step_ms"] and ref["median_step_ms"] else None),
        "epoch": ref[epoch_key] / fused[epoch_key],
    }


def comparisons(results, epochs):
    """The speedups a run of several models shows: reference / fused for each
    training rule with both implementations, and backprop / DFA for each
    implementation trained by both. {label: speedups dict}."""
    out = {}
    for suffix in ("", " dfa"):
        if f"fused{suffix}" in results and f"reference{suffix}" in results:
            rule = "DFA" if suffix else "backprop"
            out[f"reference / fused ({rule})"] = speedups(results, epochs, f"reference{suffix}",
                                                          f"fused{suffix}")
    for impl in ("fused", "reference"):
        if impl in results and f"{impl} dfa" in results:
            out[f"backprop / DFA ({impl})"] = speedups(results, epochs, impl, f"{impl} dfa")
    return out


def summary(config, argv, data, results, compared, files, wall_seconds):
    """What summary.json holds: configuration, data, results (one per run,
    each naming its implementation and training rule), speedups, versions.
    `compared` is `comparisons(...)`; "speedup" is its reference / fused by
    backprop, when there is one."""
    speedup = compared.get("reference / fused (backprop)")
    return {
        "argv": argv,
        "config": {k: getattr(config, k) for k in CONFIG_KEYS},
        "data": {"source": data.source, "train_digits": data.n_train,
                 "validation_digits": data.n_validation, "test_digits": data.n_test},
        "results": results,
        "speedup": speedup,
        "speedup_basis": None if speedup is None else {
            "training_step": "reference / fused median_step_ms (no tracing, no validation)",
            "epoch": ("reference / fused median epoch time, epochs 2+" if config.epochs > 1
                      else "reference / fused first epoch time, incl. tracing"),
        },
        "comparisons": compared,
        "epoch_time_includes": "training steps and the validation pass",
        "versions": {"fused_lif": __version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__},
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "files": files,
        "wall_seconds": wall_seconds,  # from the start of the command, after importing TensorFlow
    }
