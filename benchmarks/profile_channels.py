"""The cost of per-channel parameters: `fused_lif.LIF` tiles a per-channel tau
over the positions in the graph (tf.tile; its gradient sums over them). This
times lif_scan forward + backward at [32, 20, 28*28*16] with tau a [12544]
variable (no tile) against a [16] variable tiled, interleaved.

    python benchmarks/profile_channels.py
"""
import statistics

import numpy as np
import tensorflow as tf

import fused_lif
from fused_lif._bench import interleaved_times

B, T, H, C = 32, 20, 28 * 28, 16
x = tf.constant(np.random.default_rng(0).normal(0.3, 1, (B, T, H * C)).astype(np.float32))
tau_full = tf.Variable(np.tile(np.linspace(2, 30, C, dtype=np.float32), H))
tau_ch = tf.Variable(np.linspace(2, 30, C, dtype=np.float32))


def step(tau_fn, var):
    @tf.function
    def f():
        with tf.GradientTape() as t:
            t.watch(x)
            s = fused_lif.lif_scan(x, tau=tau_fn())
            loss = tf.reduce_sum(s)
        return t.gradient(loss, [x, var])
    return f


full = step(lambda: tau_full, tau_full)
tiled = step(lambda: tf.tile(tau_ch, [H]), tau_ch)

times = interleaved_times({"per-neuron [12544] variable": (full, ()),
                           "per-channel [16] tiled": (tiled, ())}, repeats=30, warmup=3)
med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
for k, v in med.items():
    print(f"{k:32s} {v:7.2f} ms (min {min(times[k])*1e3:.2f})")
a, b = med.values()
print(f"tiled / per-neuron: {b / a:.3f}")
