"""Peak host memory of one LIFLayer's training step (forward, backward, Adam),
measured in a fresh Python process so that nothing else is resident."""

import gc
import json
import os
import subprocess
import sys

import numpy as np

from fused_lif._bench_model import COMPARED

BENCHMARKS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One layer's training step, for the peak-host-memory comparison:
# (batch, time, inputs, units).
MEMORY_SHAPE = (64, 500, 700, 512)


def read_status_kib(field):
    """A field of /proc/self/status in KiB (VmRSS, VmHWM, ...); None if absent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak_rss():
    """Resets VmHWM (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _memory_probe(implementation, batch, time_steps, inputs, units, seed=0):
    """In a fresh process: one training step (forward, backward, Adam) of one
    LIFLayer; returns the peak resident memory it added, in MiB."""
    import resource

    import keras
    import tensorflow as tf

    from fused_lif.layer import LIFLayer

    rng = np.random.default_rng(seed)
    x = tf.constant((rng.random((batch, time_steps, inputs), dtype=np.float32) < 0.2)
                    .astype(np.float32))
    target = tf.constant(rng.random((batch, units), dtype=np.float32) * 0.3)
    keras.utils.set_random_seed(seed)
    layer = LIFLayer(units, implementation=implementation)
    layer.build(x.shape)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(layer.trainable_variables)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            spikes = layer(x, training=True)
            rate = tf.reduce_mean(spikes, axis=1)
            loss = tf.reduce_mean(tf.square(rate - target))
        gradients = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply_gradients(zip(gradients, layer.trainable_variables))
        return loss, tf.reduce_sum(spikes), [tf.norm(g) for g in gradients]

    step.get_concrete_function(x)  # trace outside the measurement
    gc.collect()
    # The first step is measured: TensorFlow's allocator keeps what it freed,
    # so a second step would mostly reuse the first one's memory.
    reset = _reset_peak_rss()
    rss_before = read_status_kib("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss, spike_count, grad_norms = step(x)
    if reset:
        peak, method = read_status_kib("VmHWM"), "VmHWM (reset by /proc/self/clear_refs)"
    else:  # ru_maxrss never resets: valid only if the step is the process's peak
        peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
        if peak <= maxrss_before:
            method += " (NOT the step's: an earlier peak was higher)"
    return {
        "implementation": implementation, "shape": [batch, time_steps, inputs, units],
        "loss": float(loss), "spike_count": float(spike_count),
        "grad_norms": [float(g) for g in grad_norms],
        "method": method, "baseline_mib": rss_before / 1024, "peak_mib": peak / 1024,
        "delta_mib": (peak - rss_before) / 1024,
    }


def layer_step_peak_memory(implementation, shape=MEMORY_SHAPE, seed=0, threads=None,
                           timeout=900):
    """Peak host memory that one training step of one LIFLayer adds, measured in
    a fresh Python process (so that nothing else is resident).

    shape: (batch, time, inputs, units). Returns the probe's dict: delta_mib
    (peak RSS during the step minus RSS before it), peak_mib, baseline_mib,
    method, and loss / spike_count / grad_norms for checking the result.
    """
    if implementation not in COMPARED:
        raise ValueError(f"implementation must be one of {COMPARED}, got {implementation!r}")
    batch, time_steps, inputs, units = (int(v) for v in shape)
    spec = json.dumps([implementation, batch, time_steps, inputs, units, seed, threads])
    code = ("import json, sys\n"
            "from harness import machine, memory\n"
            "impl, B, T, I, U, seed, threads = json.loads(sys.argv[1])\n"
            "machine.set_threads(threads)\n"
            "result = memory._memory_probe(impl, B, T, I, U, seed)\n"
            "print('FUSED_LIF_MEMORY ' + json.dumps(result))\n")
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Make the child import this harness and the same fused_lif as this process.
    import fused_lif

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fused_lif.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [BENCHMARKS_DIR, package_root]
        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-c", code, spec], capture_output=True, text=True,
                          env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("FUSED_LIF_MEMORY "):
            return json.loads(line[len("FUSED_LIF_MEMORY "):])
    raise RuntimeError(f"memory probe ({implementation}) failed with exit code "
                       f"{proc.returncode}:\n{proc.stderr[-4000:]}")
