"""The `fused-lif` command (also `python -m fused_lif`).

  fused-lif train [--compare]   the seed notebook's MNIST experiment, end to end
  fused-lif bench               fused vs reference step times for the seed model
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

__all__ = ["main"]

EXAMPLES_EXTRA = 'pip install "fused-lif[examples]"'
CURVES_FILE = "training_curves.png"
RASTER_FILE = "spike_raster.png"
SUMMARY_FILE = "summary.json"
EVAL_BATCH_SIZE = 256
# The seed model at its own shape and at T = 1,000: under a minute on 2 cores.
BENCH_SHAPES = ("seed", "long")


def _err(message):
    print(message, file=sys.stderr, flush=True)


def _positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _fraction(text):
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fused-lif",
        description="Fused leaky integrate-and-fire layers for TensorFlow/Keras.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train the seed notebook's spiking network on MNIST",
        description=(
            "The seed notebook's experiment: MNIST digits (flattened, scaled to [0, 1]) rate-"
            "coded into spike trains, a 784-128-10 LIF network trained with Adam on the "
            "spike-count cross-entropy, with a validation split; then evaluated on held-out "
            "test digits. Writes training curves, a spike raster and summary.json to --out."))
    train.add_argument("--implementation", choices=("fused", "reference"), default="fused",
                       help="LIFLayer implementation to train (default: fused)")
    train.add_argument("--compare", action="store_true",
                       help="train both implementations from the same initial weights and "
                            "print accuracy and epoch time side by side")
    train.add_argument("--samples", type=_positive_int, default=1000,
                       help="training digits, before the validation split (default: 1000)")
    train.add_argument("--validation-split", type=_fraction, default=0.2,
                       help="last fraction of the training digits used for validation "
                            "(default: 0.2)")
    train.add_argument("--test-samples", type=_non_negative_int, default=None,
                       help="held-out test digits to evaluate on (default: all the source "
                            "has; 0 skips the test evaluation)")
    train.add_argument("--epochs", type=_positive_int, default=10, help="(default: 10)")
    train.add_argument("--batch-size", type=_positive_int, default=32, help="(default: 32)")
    train.add_argument("--time-steps", type=_positive_int, default=20,
                       help="rate-coding time steps T (default: 20)")
    train.add_argument("--max-rate", type=float, default=0.8,
                       help="spike probability per step of a white pixel (default: 0.8)")
    train.add_argument("--hidden-units", type=_positive_int, default=128, help="(default: 128)")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="Adam (default: 1e-3)")
    train.add_argument("--seed", type=int, default=0,
                       help="seed for weights, rate coding and shuffling (default: 0)")
    train.add_argument("--data", metavar="PATH.npz", default=None,
                       help="MNIST-like .npz with x_train, y_train, x_test, y_test (the keras "
                            "layout) instead of downloading")
    train.add_argument("--out", metavar="DIR", default=os.path.join(".", "fused-lif-out"),
                       help="output folder (default: ./fused-lif-out/)")
    train.add_argument("--raster-digits", type=_non_negative_int, default=4,
                       help="test digits shown in the spike raster (default: 4)")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="Keras fit verbosity: 1 progress bar (default), 2 one line per "
                            "epoch, 0 silent")
    train.set_defaults(func=_train_command)

    bench = commands.add_parser(
        "bench",
        help="fused vs reference step times of the seed model",
        description="Times a training step of the seed model with the fused and the reference "
                    "LIFLayer (fused_lif.benchmarking) and prints a table.")
    bench.add_argument("--shapes", nargs="+", metavar="NAME", default=list(BENCH_SHAPES),
                       help="names in fused_lif.benchmarking.SHAPES: seed (B=32, T=20), "
                            "medium, large, long (T=1000) (default: %(default)s)")
    bench.add_argument("--repeats", type=_positive_int, default=5, help="(default: 5)")
    bench.add_argument("--warmup", type=_non_negative_int, default=2, help="(default: 2)")
    bench.set_defaults(func=_bench_command)
    return parser


def main(argv=None):
    """Entry point of the `fused-lif` console script; returns the exit status."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


# ----------------------------------------------------------------------------- train


def _figure_class():
    """matplotlib's Figure (no pyplot, no global backend), or None with a notice."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        _err(f"fused-lif: matplotlib is not installed, so no plots will be written: "
             f"{EXAMPLES_EXTRA}")
        return None
    return Figure


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall time of each epoch (its training steps and its validation
        pass) and of each training step (forward, backward, Adam)."""

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

    return EpochTimer()


def _test_dataset(x, y, time_steps, max_rate, seed):
    """Test digits rate-coded batch by batch in tf.data (the whole set is never
    encoded at once); stateless seeds per batch give every model the same spikes."""
    import tensorflow as tf

    from .encoding import rate_encode_tf

    def encode(index, batch):
        images, labels = batch
        batch_seed = tf.stack([tf.constant(seed, tf.int64), index])
        return rate_encode_tf(images, time_steps, max_rate, seed=batch_seed), labels

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(EVAL_BATCH_SIZE).enumerate()
    return ds.map(encode).prefetch(2)


def _mean(values):
    return sum(values) / len(values) if values else None


def _median(values):
    return statistics.median(values) if values else None


def _scaled(value, factor):
    return None if value is None else value * factor


def _train_one(implementation, initial_weights, spikes, labels, test, args, input_dim):
    import keras

    from .losses import spike_categorical_accuracy, spike_categorical_crossentropy
    from .models import create_snn_model

    model = create_snn_model(input_dim, args.hidden_units, 10, args.time_steps,
                             implementation=implementation)
    model.set_weights(initial_weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
                  loss=spike_categorical_crossentropy, metrics=[spike_categorical_accuracy])
    timer = _epoch_timer()
    keras.utils.set_random_seed(args.seed)  # the same batch order for every implementation
    history = model.fit(spikes, labels, batch_size=args.batch_size, epochs=args.epochs,
                        validation_split=args.validation_split, verbose=args.verbose,
                        callbacks=[timer])
    history = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    result = {
        "history": history,
        "epoch_seconds": timer.seconds,
        "first_epoch_seconds": timer.seconds[0],
        # Epoch 1 includes tracing the train and validation functions.
        "mean_epoch_seconds_after_first": _mean(timer.seconds[1:]),
        "median_epoch_seconds_after_first": _median(timer.seconds[1:]),
        # Median training step (forward, backward, Adam; no validation), without
        # tracing: over epochs 2+, or over epoch 1 less its first step.
        "median_step_ms": _scaled(_median(timer.steady_steps()), 1e3),
        "train_accuracy": history["spike_categorical_accuracy"][-1],
        "validation_accuracy": history.get("val_spike_categorical_accuracy", [None])[-1],
        "validation_loss": history.get("val_loss", [None])[-1],
        "test_accuracy": None,
        "test_loss": None,
        "test_seconds": None,
    }
    if test is not None:
        start = time.perf_counter()
        scores = model.evaluate(test, verbose=0, return_dict=True)
        result["test_seconds"] = time.perf_counter() - start
        result["test_accuracy"] = float(scores["spike_categorical_accuracy"])
        result["test_loss"] = float(scores["loss"])
    return model, result


def _fmt(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


def _report(results, speedup, epochs):
    names = list(results)
    rows = [
        (f"validation accuracy (epoch {epochs})", "validation_accuracy", ".3f"),
        ("test accuracy", "test_accuracy", ".3f"),
        ("first epoch, s (incl. tracing)", "first_epoch_seconds", ".2f"),
    ]
    later = "epoch 1 after its first step"
    if epochs > 1:
        later = "epoch 2" if epochs == 2 else f"epochs 2-{epochs}"
        rows.append((f"epoch time, s (median, {later})", "median_epoch_seconds_after_first",
                     ".2f"))
    rows.append((f"training step, ms (median, {later})", "median_step_ms", ".1f"))
    width = max(len(r[0]) for r in rows)
    lines = ["".join([" " * width] + [f"{n:>12}" for n in names])]
    for label, key, spec in rows:
        lines.append(label.ljust(width) + "".join(f"{_fmt(results[n][key], spec):>12}"
                                                  for n in names))
    if speedup is not None:
        for kind, note in (("training_step", "reference / fused median step"),
                           ("epoch", "reference / fused epoch time, validation included")):
            if speedup[kind] is not None:
                lines.append(f"speedup, {kind.replace('_', ' ')}".ljust(width)
                             + f"{speedup[kind]:>11.2f}x   ({note})")
    return "\n".join(lines)


def _plot_curves(Figure, results, path):
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    styles = {"fused": "-", "reference": "--"}
    for name, result in results.items():
        h = result["history"]
        epochs = range(1, len(h["loss"]) + 1)
        ls = styles.get(name, "-")
        axes[0].plot(epochs, h["loss"], ls, color="C0", label=f"{name} train")
        axes[1].plot(epochs, h["spike_categorical_accuracy"], ls, color="C0",
                     label=f"{name} train")
        if "val_loss" in h:
            axes[0].plot(epochs, h["val_loss"], ls, color="C1", label=f"{name} validation")
            axes[1].plot(epochs, h["val_spike_categorical_accuracy"], ls, color="C1",
                         label=f"{name} validation")
        axes[2].plot(epochs, result["epoch_seconds"], ls, marker="o", label=name)
    axes[0].set(title="spike-count cross-entropy", xlabel="epoch")
    axes[1].set(title="spike-count accuracy", xlabel="epoch", ylim=(0, 1))
    axes[2].set(title="epoch time (epoch 1 includes tracing)", xlabel="epoch",
                ylabel="seconds", ylim=(0, None))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def _plot_raster(Figure, model, implementation, images, labels, args, path):
    import keras
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    from .encoding import rate_encode

    spikes_in = rate_encode(images.reshape(len(images), -1), args.time_steps, args.max_rate,
                            seed=args.seed + 1)
    probe = keras.Model(model.inputs, [model.get_layer("hidden_layer").output, model.output])
    hidden, output = (np.asarray(a) for a in probe.predict(spikes_in, verbose=0))
    k = len(images)
    fig = Figure(figsize=(12, 2.3 * k), layout="constrained")
    axes = fig.subplots(k, 4, squeeze=False, width_ratios=[1, 2, 2, 1.3])
    side = int(round(math.sqrt(images[0].size)))
    for i in range(k):
        counts = output[i].sum(axis=0)
        predicted = int(np.argmax(counts))
        if side * side == images[i].size:
            axes[i, 0].imshow(images[i].reshape(side, side), cmap="gray_r")
        axes[i, 0].set_title(f"label {labels[i]}, predicted {predicted}", fontsize=9)
        axes[i, 0].axis("off")
        for ax, spikes, title in ((axes[i, 1], spikes_in[i], "input spikes"),
                                  (axes[i, 2], hidden[i], "hidden layer spikes"),
                                  (axes[i, 3], output[i], "output spikes")):
            t, n = np.nonzero(spikes)
            ax.scatter(t, n, s=4 if spikes.shape[1] > 20 else 16, marker="|", color="k",
                       linewidths=0.8)
            ax.set_xlim(-0.5, spikes.shape[0] - 0.5)
            ax.set_ylim(-0.5, spikes.shape[1] - 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(title, fontsize=9)
            ax.set_ylabel("neuron", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[i, 3].set_yticks(range(output.shape[2]))
        axes[i, 3].axhline(labels[i], color="C2", alpha=0.3, linewidth=6)
        if i == k - 1:
            for ax in axes[i, 1:]:
                ax.set_xlabel("time step", fontsize=8)
    fig.suptitle(f"{implementation} LIFLayer, T={args.time_steps} (green: true class)",
                 fontsize=10)
    fig.savefig(path, dpi=100)


def _train_command(args):
    wall_start = time.perf_counter()
    import keras
    import numpy as np
    import tensorflow as tf

    from . import __version__, ops
    from .data import DataUnavailableError, load_mnist, preprocess
    from .encoding import rate_encode
    from .models import create_snn_model

    implementations = ["fused", "reference"] if args.compare else [args.implementation]
    if "fused" in implementations:
        try:
            ops.load_library()
        except ops.FusedOpUnavailableError as e:
            _err(str(e))
            _err("fused-lif train: the fused op library cannot load, so the fused layer cannot "
                 "train here. Run with --implementation reference to train the tf.while_loop "
                 "layer alone.")
            return 1
    Figure = _figure_class()

    try:
        mnist = load_mnist(args.data)
    except DataUnavailableError as e:
        _err(str(e))
        return 2
    available = len(mnist.x_train)
    if args.samples > available:
        _err(f"fused-lif: {mnist.source} has {available} training digits; using all of them "
             f"(--samples {args.samples}).")
    x_train, y_train = preprocess(mnist.x_train[:args.samples], mnist.y_train[:args.samples])
    n_test = len(mnist.x_test) if args.test_samples is None else min(args.test_samples,
                                                                     len(mnist.x_test))
    x_test, y_test = preprocess(mnist.x_test[:n_test], mnist.y_test[:n_test])
    n_train = int(math.floor(len(x_train) * (1.0 - args.validation_split)))
    input_dim = x_train.shape[1]

    keras.utils.set_random_seed(args.seed)
    spikes = rate_encode(x_train, args.time_steps, args.max_rate, seed=args.seed)
    test = (_test_dataset(x_test, y_test, args.time_steps, args.max_rate, args.seed)
            if n_test else None)
    # One set of initial weights for every implementation.
    initial_weights = create_snn_model(input_dim, args.hidden_units, 10, args.time_steps,
                                       implementation="reference").get_weights()

    print(f"MNIST from {mnist.source}: {n_train} training / {len(x_train) - n_train} validation "
          f"/ {n_test} test digits; rate coding T={args.time_steps}, max_rate={args.max_rate}; "
          f"{input_dim}-{args.hidden_units}-10 LIF network", flush=True)
    results, models = {}, {}
    for name in implementations:
        epochs = f"{args.epochs} epoch" + ("s" if args.epochs > 1 else "")
        print(f"\n== {name} LIFLayer: {epochs}, batch {args.batch_size}, "
              f"Adam {args.learning_rate:g}", flush=True)
        models[name], results[name] = _train_one(name, initial_weights, spikes, y_train, test,
                                                 args, input_dim)

    speedup = None
    if args.compare:
        fused, ref = results["fused"], results["reference"]
        epoch_key = ("median_epoch_seconds_after_first" if args.epochs > 1
                     else "first_epoch_seconds")
        speedup = {
            "training_step": (ref["median_step_ms"] / fused["median_step_ms"]
                              if fused["median_step_ms"] and ref["median_step_ms"] else None),
            "epoch": ref[epoch_key] / fused[epoch_key],
        }
    print()
    print(_report(results, speedup, args.epochs))

    os.makedirs(args.out, exist_ok=True)
    files = []
    if Figure is not None:
        path = os.path.join(args.out, CURVES_FILE)
        _plot_curves(Figure, results, path)
        files.append(path)
        k = min(args.raster_digits, len(mnist.x_test))
        if k:
            path = os.path.join(args.out, RASTER_FILE)
            shown = implementations[0]
            _plot_raster(Figure, models[shown], shown, preprocess(mnist.x_test[:k],
                         mnist.y_test[:k])[0], mnist.y_test[:k], args, path)
            files.append(path)
    summary_path = os.path.join(args.out, SUMMARY_FILE)
    files.append(summary_path)
    summary = {
        "argv": args.argv,
        "config": {k: getattr(args, k) for k in (
            "implementation", "compare", "samples", "validation_split", "test_samples",
            "epochs", "batch_size", "time_steps", "max_rate", "hidden_units", "learning_rate",
            "seed", "data")},
        "data": {"source": mnist.source, "train_digits": n_train,
                 "validation_digits": len(x_train) - n_train, "test_digits": n_test},
        "results": results,
        "speedup": speedup,
        "speedup_basis": None if speedup is None else {
            "training_step": "reference / fused median_step_ms (no tracing, no validation)",
            "epoch": ("reference / fused median epoch time, epochs 2+" if args.epochs > 1
                      else "reference / fused first epoch time, incl. tracing"),
        },
        "epoch_time_includes": "training steps and the validation pass",
        "versions": {"fused_lif": __version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__},
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "files": [os.path.basename(f) for f in files],
        "wall_seconds": None,  # from the start of the command, after importing TensorFlow
    }
    summary["wall_seconds"] = time.perf_counter() - wall_start
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nwall time {summary['wall_seconds']:.0f} s (after importing TensorFlow); wrote "
          + ", ".join(os.path.join(args.out, os.path.basename(p)) for p in files))
    return 0


# ----------------------------------------------------------------------------- bench


def _bench_command(args):
    try:
        from . import benchmarking
    except ModuleNotFoundError as e:
        if e.name not in ("fused_lif.benchmarking", __package__ + ".benchmarking"):
            raise
        _err("fused-lif bench: fused_lif.benchmarking is missing from this installation.")
        return 1
    from .ops import FusedOpUnavailableError

    def progress(message):
        print(message, file=sys.stderr, flush=True)

    try:
        rows = benchmarking.model_step_table(shape_names=tuple(args.shapes),
                                             repeats=args.repeats, warmup=args.warmup,
                                             progress=progress)
    except (FusedOpUnavailableError, ValueError) as e:  # no op library; unknown shape name
        _err(f"fused-lif bench: {e}")
        return 1
    except AssertionError as e:  # the helper checks fused against the reference first
        _err(f"fused-lif bench: the fused result differs from the reference: {e}")
        return 1
    print(benchmarking.format_table(rows))
    return 0
