"""The LIF op alone against this machine's memory bandwidth: forward and
forward + backward of the fused op at each shape's [batch, time, hidden], next
to elementwise copies that move the same bytes into tensors of the same sizes,
with page faults per call.

    python benchmarks/profile_op.py                      # seed, medium, large, long
    python benchmarks/profile_op.py --threads 1 --shapes medium
    python benchmarks/profile_op.py --shapes 1x1000x2048 --threads 1,2
                                         # speedup of 2 threads over 1 (one process each)
    python benchmarks/profile_op.py --shapes medium --surrogates fast_sigmoid,sigmoid
                                         # each surrogate's fwd+bwd, relative to the first
    FUSED_LIF_OP_LIBRARY=/path/to/_lif_ops.so python benchmarks/profile_op.py
                                                       # an experimental build

Shapes are names (seed, medium, large, long) or BATCHxTIMExNEURONS.
Bytes: forward reads currents and writes spikes + membrane (12 B/element);
backward reads dL/dspikes + membrane and writes dL/dcurrents (12 B/element).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


STATISTIC = statistics.median


def measure(fn, args, repeats, warmup=3):
    """(median ms, or the --best statistic, minor page faults per call)."""
    for _ in range(warmup):
        fn(*args)
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats
    return 1e3 * STATISTIC(times), faults


def op_shape(name):
    """[batch, time, neurons] of a named shape or of 'BxTxN'."""
    from fused_lif._bench_model import get_shape

    if "x" in name:
        try:
            batch, steps, neurons = (int(part) for part in name.split("x"))
        except ValueError:
            raise SystemExit(f"shape {name!r}: expected BATCHxTIMExNEURONS, e.g. 1x1000x2048")
        return batch, steps, neurons
    try:
        return tuple(get_shape(name).op_shape)
    except ValueError as error:
        raise SystemExit(str(error))


def profile(args):
    """Rows {shape, pass, ms, copy_ms, ...} for every shape and pass, printed as they come."""
    from fused_lif import ops
    from harness import machine, op_level

    machine.set_threads(args.threads[0] or None)
    import tensorflow as tf

    ops.load_library()
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    if not args.json:
        print(f"op library {ops.library_path()}; intra-op threads {threads}")
        print(f"{'shape':<8s} {'[B, T, N]':<17s} {'pass':<22s} {'ms':>8s} {'GB/s':>7s} "
              f"{'copy ms':>8s} {'copy GB/s':>9s} {'of copy':>8s} {'faults':>8s} "
              f"{'copy flt':>8s} {'vs first':>8s}")
    empty = tf.function(lambda x: x)
    call_ms, _ = measure(empty, (tf.constant(1.0),), 200)
    rows = []
    for name in args.shapes.split(","):
        shape = op_shape(name)
        currents, grad_spikes = op_level.op_inputs(*shape)
        passes = [("forward", op_level.lif_forward_fn("fused"), (currents,), False)]
        for surrogate in args.surrogates.split(","):
            label = "fwd+bwd" if surrogate == "fast_sigmoid" else f"fwd+bwd {surrogate}"
            fn = op_level.lif_forward_backward_fn("fused", surrogate=surrogate)
            passes.append((label, fn, (currents, grad_spikes), True))
        first_backward_ms = None
        for label, fn, fargs, backward in passes:
            nbytes = op_level.lif_bytes(*shape, backward=backward)
            sources, one = op_level.copy_inputs(nbytes, parts=3 if backward else 2)
            ms, faults = measure(fn, fargs, args.repeats)
            copy_ms, copy_faults = measure(op_level.copy_step(), (sources, one), args.repeats)
            bw, copy_bw = nbytes / ms / 1e6, op_level.copy_bytes(sources) / copy_ms / 1e6
            if backward and first_backward_ms is None:
                first_backward_ms = ms
            relative = f"{ms / first_backward_ms:7.2f}x" if backward else ""
            rows.append(dict(shape=name, op_shape=list(shape), label=label, ms=ms,
                             copy_ms=copy_ms, of_copy=bw / copy_bw, threads=threads))
            if not args.json:
                print(f"{name:<8s} {str(list(shape)):<17s} {label:<22s} {ms:8.3f} "
                      f"{bw:7.1f} {copy_ms:8.3f} {copy_bw:9.1f} {bw / copy_bw:8.0%} "
                      f"{faults:8.0f} {copy_faults:8.0f} {relative:>8s}", flush=True)
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"(an empty tf.function call takes {call_ms:.3f} ms; included above)")
    return rows


def compare_threads(args):
    """One process per thread count (TensorFlow fixes its pools at start),
    `rounds` times in turn; the best of each, and the speedup over the first."""
    base = [f"--shapes={args.shapes}", f"--surrogates={args.surrogates}",
            f"--repeats={args.repeats}"] + (["--best"] if args.best else [])
    best = {}
    for _ in range(args.rounds):
        for threads in args.threads:
            out = subprocess.run([sys.executable, __file__, *base, f"--threads={threads}", "--json"],
                                 check=True, capture_output=True, text=True).stdout
            for row in json.loads(out.strip().splitlines()[-1]):
                key = (row["shape"], row["label"], threads)
                best[key] = min(best.get(key, float("inf")), row["ms"])
    first = args.threads[0]
    print(f"{'shape':<12s} {'pass':<22s} " + " ".join(f"{f'{t} thr ms':>10s}" for t in args.threads)
          + " " + " ".join(f"{f'x{t}/{first}':>8s}" for t in args.threads[1:]))
    for shape, label in dict.fromkeys((k[0], k[1]) for k in best):
        times = [best[(shape, label, t)] for t in args.threads]
        print(f"{shape:<12s} {label:<22s} " + " ".join(f"{ms:10.3f}" for ms in times) + " "
              + " ".join(f"{times[0] / ms:7.2f}x" for ms in times[1:]))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="seed,medium,large,long")
    parser.add_argument("--threads", default="0",
                        help="intra-op threads (0: TensorFlow's default); a comma-separated "
                             "list runs one process per count and prints the speedups")
    parser.add_argument("--surrogates", default="fast_sigmoid",
                        help="comma-separated surrogates for the fwd+bwd rows")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2,
                        help="with several --threads: processes per count, in turn (best kept)")
    parser.add_argument("--best", action="store_true",
                        help="the fastest call instead of the median (on a loaded machine)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",")]
    if args.best:
        global STATISTIC
        STATISTIC = min
    if len(args.threads) > 1:
        return compare_threads(args)
    profile(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
