"""The `fused-lif` command (also `python -m fused_lif`): arguments and output.

  fused-lif train [--compare]   the seed notebook's MNIST experiment (fused_lif.experiment)
  fused-lif bench               fused vs reference step times of the seed model (fused_lif._bench)

Loading this module imports neither TensorFlow nor fused_lif; `main` imports
them after parsing, with TensorFlow's start-up logging quieted. The console
script (`_fused_lif_cli`) loads this file without importing the package, so
--help and argument errors answer at once.
"""

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time

__all__ = ["main"]

EXAMPLES_EXTRA = 'pip install "fused-lif[examples]"'
SUMMARY_FILE = "summary.json"
# The seed model at its own shape and at T = 1,000: under a minute on 2 cores.
BENCH_SHAPES = ("seed", "long")
# Adam's learning rate for each training rule when --learning-rate is not given:
# backprop the seed notebook's; DFA learns more slowly, and at the seed's rate
# it is still climbing after the seed's 10 epochs (the DFA documentation has
# the accuracies of both rules at both rates).
DEFAULT_LEARNING_RATES = {"backprop": 1e-3, "dfa": 3e-3}
# Says where `python -m fused_lif --help` spends its seconds, and what is fast.
SLOW_START_NOTE = (
    "`python -m fused_lif` imports the fused_lif package, and with it TensorFlow (seconds), "
    "before it reads its arguments: the package registers its ops at import. The `fused-lif` "
    "console script runs the same command and answers --help and argument errors at once.")
# TensorFlow's C++ log level for the commands: 3 hides its INFO, WARNING and
# ERROR lines (the oneDNN, CUDA-driver and CPU-feature notices, and the
# `failed call to cuInit` of a machine without a GPU, which reads as a failure).
QUIET_TF_LOG_LEVEL = "3"
# What TensorFlow logs while it loads, whatever its log level: absl's notice
# and INFO / WARNING lines (oneDNN, no CUDA driver), the CPU-feature notice.
TF_STARTUP_NOTICE = re.compile(r"^[IW]\d{4} \d\d:\d\d:|absl::InitializeLog\(\)|"
                               r"^To enable the following instructions:.*rebuild TensorFlow")


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


def _positive_float(text):
    value = float(text)
    if not value > 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text):
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fused-lif",
        description="Fused leaky integrate-and-fire layers for TensorFlow/Keras.",
        epilog=SLOW_START_NOTE)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train the seed notebook's spiking network on MNIST",
        description=(
            "The seed notebook's experiment: MNIST digits (flattened, scaled to [0, 1]) rate-"
            "coded into spike trains, a 784-128-10 LIF network trained with Adam on the "
            "spike-count cross-entropy, with a validation split; then evaluated on held-out "
            "test digits. Writes training curves, a spike raster and summary.json to --out."),
        epilog=SLOW_START_NOTE)
    train.add_argument("--model", choices=("mlp", "conv", "recurrent"), default="mlp",
                       help="mlp (default): the seed's 784-128-10 LIF network; conv: a spiking "
                            "CNN (TimeFolded Conv2D, LIF, max pooling, twice; a LIFLayer "
                            "readout) on the same spike trains; recurrent: row-sequential "
                            "digits (28 steps of 28-pixel rows) into a recurrent LIF hidden "
                            "layer and a LIF readout, trained beside the same network "
                            "without recurrence ('feedforward')")
    train.add_argument("--implementation", choices=("fused", "reference"), default="fused",
                       help="LIFLayer implementation to train (default: fused)")
    train.add_argument("--compare", action="store_true",
                       help="train both implementations from the same initial weights and "
                            "print accuracy and epoch time side by side")
    train.add_argument("--training", choices=("backprop", "dfa", "both"), default="backprop",
                       help="training rule: backprop (default), dfa (direct feedback "
                            "alignment: fused_lif.DFAModel), or both side by side from the "
                            "same initial weights, each at its own default --learning-rate")
    train.add_argument("--spike-input", choices=("off", "on", "auto"), default="off",
                       help="LIFLayer(spike_input=...) for both layers: off (default: dense "
                            "input matmuls, bit-identical to the seed), on (binary-spike "
                            "matmuls: sums of weight rows, equal to dense to float rounding) "
                            "or auto (sparse where the measured density pays)")
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
    train.add_argument("--learning-rate", type=_positive_float, default=None,
                       help="Adam's learning rate for every run (default: "
                            + ", ".join(f"{rate:g} for {rule}" for rule, rate
                                        in DEFAULT_LEARNING_RATES.items())
                            + ": DFA learns more slowly)")
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
                            "epoch and TensorFlow's own logging, 0 silent")
    train.set_defaults(func=_train_command)

    bench = commands.add_parser(
        "bench",
        help="fused vs reference step times of the seed model",
        description="Times a training step of the seed model with the fused and the reference "
                    "LIFLayer, and the GEMM floor (the 5 matrix products a step runs, one "
                    "after the other: what any step must pay), and prints a table; "
                    "\"vs GEMM floor\" is step / floor (benchmarks/ has the full suite).",
        epilog=SLOW_START_NOTE)
    bench.add_argument("--shapes", nargs="+", metavar="NAME", default=list(BENCH_SHAPES),
                       help="seed (B=32, T=20), "
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
    _import_fused_lif(quiet=quiet_tensorflow(getattr(args, "verbose", 1)))
    return args.func(args)


def quiet_tensorflow(verbose):
    """Sets TensorFlow's C++ log level to QUIET_TF_LOG_LEVEL unless the user
    set TF_CPP_MIN_LOG_LEVEL or asked for everything (verbose 2); returns
    whether it did. Takes effect only before TensorFlow is imported."""
    if verbose >= 2 or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = QUIET_TF_LOG_LEVEL
    return True


def _import_fused_lif(quiet):
    """Imports fused_lif, and with it TensorFlow; when `quiet`, without the
    lines TensorFlow logs while it loads whatever TF_CPP_MIN_LOG_LEVEL says
    (tensorflow#100442)."""
    quiet = quiet and "tensorflow" not in sys.modules
    with _startup_notices_hidden() if quiet else contextlib.nullcontext():
        import fused_lif  # noqa: F401


@contextlib.contextmanager
def _startup_notices_hidden():
    """Captures standard error (the file descriptor, where C++ writes) and
    passes on all but TF_STARTUP_NOTICE lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not TF_STARTUP_NOTICE.search(line)))
            sys.stderr.flush()


# ----------------------------------------------------------------------------- train


def _fused_library_loads():
    from fused_lif import FusedOpUnavailableError, _library

    try:
        _library.load_library()
    except FusedOpUnavailableError as e:
        _err(str(e))
        _err("fused-lif train: the fused op library cannot load, so the fused layer cannot "
             "train here. Run with --implementation reference to train the tf.while_loop "
             "layer alone.")
        return False
    return True


def _figure_class():
    """matplotlib's Figure, or None with a notice saying which extra installs it."""
    from fused_lif import _plots

    Figure = _plots.figure_class()
    if Figure is None:
        _err(f"fused-lif: matplotlib is not installed, so no plots will be written: "
             f"{EXAMPLES_EXTRA}")
    return Figure


def learning_rates(args):
    """{training rule: Adam's learning rate} for the rules the train command
    runs: --learning-rate for every rule when given, else each rule's
    DEFAULT_LEARNING_RATES."""
    rules = ("backprop", "dfa") if args.training == "both" else (args.training,)
    return {rule: DEFAULT_LEARNING_RATES[rule] if args.learning_rate is None
            else args.learning_rate for rule in rules}


def _train_command(args):
    from fused_lif import _plots, _train_output, experiment
    from fused_lif.data import DataUnavailableError

    wall_start = time.perf_counter()
    args.learning_rates = learning_rates(args)
    if args.model == "conv" and args.training != "backprop":
        _err("fused-lif train: --model conv trains by backprop only: DFA (fused_lif.DFAModel) "
             "updates LIFLayers alone, and the CNN's convolutions would never learn. Use "
             "--training backprop (the default), or --model mlp or recurrent for DFA.")
        return 2
    if args.model == "recurrent" and args.spike_input == "on":
        _err("fused-lif train: --model recurrent feeds pixel rows, not spikes, so "
             "--spike-input on cannot apply (it needs binary input); use off or auto.")
        return 2
    runs = experiment.runs(args)
    if any(impl == "fused" for impl, _, _ in runs.values()) and not _fused_library_loads():
        return 1
    Figure = _figure_class()
    try:
        data = experiment.prepare_data(args)
    except DataUnavailableError as e:
        _err(str(e))
        return 2
    if args.samples > data.available_train:
        _err(f"fused-lif: {data.source} has {data.available_train} training digits; using all "
             f"of them (--samples {args.samples}).")

    models, results = _train_output.train_all(experiment, runs, data, args)
    compared = experiment.comparisons(results, args.epochs)
    print()
    print(_train_output.report(results, compared, args.epochs))

    os.makedirs(args.out, exist_ok=True)
    files = (_plots.write_figures(Figure, models, results, data.raw_test, args)
             if Figure is not None else [])
    files.append(os.path.join(args.out, SUMMARY_FILE))
    summary = experiment.summary(args, args.argv, data, results, compared,
                                 [os.path.basename(f) for f in files],
                                 time.perf_counter() - wall_start)
    with open(files[-1], "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nwall time {summary['wall_seconds']:.0f} s (after importing TensorFlow); wrote "
          + ", ".join(files))
    return 0


# ----------------------------------------------------------------------------- bench


def _bench_command(args):
    from fused_lif import FusedOpUnavailableError, _bench  # imports TensorFlow

    def progress(message):
        print(message, file=sys.stderr, flush=True)

    try:
        rows = _bench.model_step_table(shape_names=tuple(args.shapes), repeats=args.repeats,
                                       warmup=args.warmup, progress=progress)
    except (FusedOpUnavailableError, ValueError) as e:  # no op library; unknown shape name
        _err(f"fused-lif bench: {e}")
        return 1
    except AssertionError as e:  # the helper checks fused against the reference first
        _err(f"fused-lif bench: the fused result differs from the reference: {e}")
        return 1
    print(_bench.format_table(rows))
    return 0
