"""The recurrent LIF op against the plain LIF op at the same [batch, time,
neurons]: forward, and forward + backward (the gradients a training step
needs: currents, and for the recurrent op the recurrent kernel too), timed
in alternation (one call of each in turn) so that other load on the machine
hits both alike. Prints the median ms of each, their ratio, the spike rate,
and the share of the machine other processes used meanwhile.

    python benchmarks/profile_recurrent.py                        # (64,100,256), (32,250,128)
    python benchmarks/profile_recurrent.py --shapes 8x100x1024 --threads 1
    python benchmarks/profile_recurrent.py --rate 0.2             # denser recurrent spikes
    python benchmarks/profile_recurrent.py --threads 1 --cpu-time # this process's CPU time
                                         # per call: steadier than wall time on a busy machine
    FUSED_LIF_OP_LIBRARY=/path/to/_lif_ops.so python benchmarks/profile_recurrent.py

Inputs: currents ~ N(mean, 0.5) and R ~ N(0, 0.5/√N), the mean set by
--rate's search so that about that fraction of the neurons spike per step.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import machine  # noqa: E402

DEFAULT_SHAPES = ["64x100x256", "32x250x128"]


def parse_shape(text):
    try:
        batch, steps, neurons = (int(part) for part in text.split("x"))
    except ValueError:
        raise SystemExit(f"shape {text!r}: expected BATCHxTIMExNEURONS, e.g. 64x100x256")
    return batch, steps, neurons


def functions(tau=20.0):
    import tensorflow as tf

    import fused_lif

    @tf.function
    def recurrent_forward(x, kernel):
        return fused_lif.recurrent_lif_scan(x, kernel, tau=tau)

    @tf.function
    def plain_forward(x, kernel):
        return fused_lif.lif_scan(x, tau=tau)

    @tf.function
    def recurrent_step(x, kernel, grad):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            spikes = fused_lif.recurrent_lif_scan(x, kernel, tau=tau)
        return tape.gradient(spikes, [x, kernel], output_gradients=grad)

    @tf.function
    def plain_step(x, kernel, grad):
        with tf.GradientTape() as tape:
            tape.watch(x)
            spikes = fused_lif.lif_scan(x, tau=tau)
        return tape.gradient(spikes, x, output_gradients=grad)

    return {"forward": (recurrent_forward, plain_forward),
            "forward+backward": (recurrent_step, plain_step)}


def inputs(shape, rate, seed=0):
    """Currents whose mean gives about `rate` spikes per neuron and step with
    the recurrence on, R, and an upstream gradient."""
    import tensorflow as tf

    import fused_lif

    batch, steps, neurons = shape
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 0.5, shape).astype(np.float32)
    kernel = rng.normal(0.0, 0.5 / np.sqrt(neurons), (neurons, neurons)).astype(np.float32)
    low, high = -1.0, 2.0
    for _ in range(20):  # bisect the mean current for the spike rate
        mean = (low + high) / 2
        got = float(tf.reduce_mean(fused_lif.recurrent_lif_scan(noise + mean, kernel)))
        low, high = (mean, high) if got < rate else (low, mean)
    x = tf.constant(noise + np.float32(mean))
    grad = tf.constant(rng.normal(size=shape).astype(np.float32))
    return x, tf.constant(kernel), grad, got


def process_seconds():
    """This process's CPU time (user + system), in seconds."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def profile(args):
    machine.set_threads(args.threads)
    import tensorflow as tf

    from fused_lif._bench import warm_up

    clock = process_seconds if args.cpu_time else time.perf_counter
    unit = "cpu ms" if args.cpu_time else "ms"
    print(f"TensorFlow {tf.__version__}, {args.threads or 'default'} intra-op threads, "
          f"median of {args.repeats} alternating calls, "
          f"{'process CPU time' if args.cpu_time else 'wall time'} per call")
    print(f"{'shape':>14} {'pass':>17} {'recurrent ' + unit:>17} {'plain ' + unit:>13} "
          f"{'ratio':>6} {'spikes':>7} {'other load':>10}")
    fns = functions()
    for text in args.shapes:
        shape = parse_shape(text)
        x, kernel, grad, rate = inputs(shape, args.rate)
        for name, (recurrent, plain) in fns.items():
            extra = (grad,) if name != "forward" else ()
            calls = [lambda: recurrent(x, kernel, *extra), lambda: plain(x, kernel, *extra)]
            for call in calls:
                warm_up(call, (), 3)
            times = [[], []]
            load = machine.OtherLoad()
            for _ in range(args.repeats):
                for i, call in enumerate(calls):
                    start = clock()
                    out = call()
                    _ = [t.numpy() for t in tf.nest.flatten(out)][:0]
                    times[i].append(clock() - start)
            other = load.fraction()
            rec, pl = (1e3 * statistics.median(t) for t in times)
            print(f"{text:>14} {name:>17} {rec:17.2f} {pl:13.2f} {rec / pl:6.2f} {rate:7.1%} "
                  f"{'?' if other is None else f'{other:.0%}':>10}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=lambda s: s.split(","), default=DEFAULT_SHAPES)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0.1, help="target spike rate")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time calls by this process's CPU time (with --threads 1: the work "
                             "itself, whatever else runs on the machine)")
    profile(parser.parse_args())


if __name__ == "__main__":
    main()
