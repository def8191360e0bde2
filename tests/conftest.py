import os
import subprocess
import sys
import textwrap
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

try:
    from hypothesis import settings

    settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
    settings.register_profile("dev", max_examples=300, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test dependency; only its tests need it
    pass


@pytest.fixture(autouse=True)
def _seeded_per_test(request):
    """Seeds Python, numpy, TensorFlow and Keras from the test's id. Without it
    unseeded initial weights (glorot_uniform in LIFLayer) came from Keras'
    global seed generator, shared by the whole session: a test's weights then
    depended on which tests ran before it, so a failure of one draw could not
    be reproduced by running that test alone, or in another order."""
    keras.utils.set_random_seed(zlib.crc32(request.node.nodeid.encode()))


def make_currents(shape, seed=0, mean=0.4, scale=1.0, dtype=np.float32):
    """Currents of both signs around the threshold."""
    rng = np.random.default_rng(seed)
    return (rng.normal(mean, scale, shape)).astype(dtype)


def scan_grads(scan, currents, **kwargs):
    """Spikes, final membrane and the gradients of a fixed random loss of both
    w.r.t. every differentiable input (currents, and tau / threshold /
    initial_membrane / bias when they are tensors)."""
    currents = tf.convert_to_tensor(currents)
    watched = {"currents": currents}
    for name in ("tau", "threshold", "initial_membrane", "bias"):
        if name in kwargs and isinstance(kwargs[name], (tf.Tensor, np.ndarray)):
            kwargs[name] = tf.convert_to_tensor(kwargs[name])
            watched[name] = kwargs[name]
    rng = np.random.default_rng(99)
    shape = currents.shape
    w_spikes = tf.constant(rng.normal(size=shape).astype(np.float32))
    w_final = tf.constant(rng.normal(size=(shape[0], shape[2])).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(list(watched.values()))
        spikes, final = scan(currents, return_state=True, **kwargs)
        loss = tf.reduce_sum(tf.cast(spikes, tf.float32) * w_spikes) + tf.reduce_sum(final * w_final)
    grads = tape.gradient(loss, watched)
    return spikes.numpy(), final.numpy(), {k: (None if g is None else g.numpy()) for k, g in grads.items()}


def assert_close_scaled(actual, expected, rtol=1e-5, name=""):
    """|actual - expected| <= rtol * max|expected| (float rounding of sums)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    scale = max(np.max(np.abs(expected), initial=0.0), 1e-30)
    err = np.max(np.abs(actual - expected), initial=0.0)
    assert err <= rtol * scale, f"{name}: max error {err} > {rtol} * {scale}"


def run_python(code, env=None, args=(), timeout=300):
    """Runs code in a fresh interpreter (as a user's new process would), with
    this folder importable; fails the test with its output if it fails."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    here = os.path.dirname(os.path.abspath(__file__))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, full_env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, env=full_env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


# Two logical CPUs must be configured before TensorFlow initialises its
# devices, which this process has already done: the code runs in a fresh one.
TWO_CPU_PRELUDE = """\
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import fused_lif
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
"""


@pytest.fixture
def run_on_two_cpus():
    """Returns run(code): runs `code` (run_python's way) in a fresh interpreter
    in which the CPU is split into two logical devices and `strategy` is a
    MirroredStrategy over them (np, tf, keras and fused_lif imported);
    returns its output."""

    def run(code):
        return run_python(TWO_CPU_PRELUDE + textwrap.dedent(code))

    return run
