"""A long training run of the seed model: memory stays flat, the loss finite.

    python benchmarks/long_run.py [--steps 20000] [--batch 32] [--time-steps 20]

Trains the seed's 784-128-10 network (fused LIFLayer, Adam) on rate-coded
random inputs for --steps steps in one tf.function, samples the process's
resident memory (RSS, from /proc) every 1,000 steps, and exits non-zero if
RSS grows more than --max-growth-mb after the warm-up or a loss is not finite.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fused_lif  # noqa: E402
from harness.memory import read_status_kib  # noqa: E402  (benchmarks/ is on sys.path)


def rss_mb():
    kib = read_status_kib("VmRSS")
    if kib is None:
        raise RuntimeError("no VmRSS in /proc/self/status")
    return kib / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--time-steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--max-growth-mb", type=float, default=50.0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = fused_lif.create_snn_model(784, 128, 10, args.time_steps)
    optimizer = keras.optimizers.Adam(1e-3)
    rng = np.random.default_rng(0)
    pool = 16  # distinct batches, cycled
    xs = tf.constant(fused_lif.rate_encode(rng.random((pool * args.batch, 784)) * 0.5,
                                           args.time_steps, 0.8, seed=0))
    ys = tf.constant(np.eye(10, dtype=np.float32)[rng.integers(0, 10, pool * args.batch)])

    @tf.function
    def step(i):
        start = (i % pool) * args.batch
        x, y = xs[start:start + args.batch], ys[start:start + args.batch]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(fused_lif.spike_categorical_crossentropy(y, model(x, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    samples, losses, t0 = [], [], time.perf_counter()
    baseline = None
    for i in range(args.steps):
        loss = step(tf.constant(i))
        if (i + 1) % 1000 == 0 or i + 1 == args.warmup:
            value = float(loss)
            losses.append(value)
            if i + 1 >= args.warmup:
                rss = rss_mb()
                baseline = rss if baseline is None else baseline
                samples.append((i + 1, rss))
                print(f"step {i + 1:6d}  loss {value:.4f}  RSS {rss:7.1f} MB  "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    growth = max(r for _, r in samples) - baseline
    finite = all(np.isfinite(losses))
    print(f"RSS after warm-up {baseline:.1f} MB, largest growth {growth:+.1f} MB over "
          f"{args.steps} steps (limit {args.max_growth_mb} MB); losses finite: {finite}")
    return 0 if finite and growth <= args.max_growth_mb else 1


if __name__ == "__main__":
    sys.exit(main())
