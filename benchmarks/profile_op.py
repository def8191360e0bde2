"""The LIF op alone against this machine's memory bandwidth: forward and
forward + backward of the fused op at each shape's [batch, time, hidden], next
to elementwise copies that move the same bytes into tensors of the same sizes,
with page faults per call.

    python benchmarks/profile_op.py                      # seed, medium, large, long
    python benchmarks/profile_op.py --threads 1 --shapes medium
    FUSED_LIF_OP_LIBRARY=/path/to/_lif_ops.so python benchmarks/profile_op.py
                                                       # an experimental build

Bytes: forward reads currents and writes spikes + membrane (12 B/element);
backward reads dL/dspikes + membrane and writes dL/dcurrents (12 B/element).
"""

import argparse
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def measure(fn, args, repeats, warmup=3):
    """(median ms, minor page faults per call)."""
    for _ in range(warmup):
        fn(*args)
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats
    return 1e3 * statistics.median(times), faults


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="seed,medium,large,long")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)

    import harness as bm
    from fused_lif import ops

    bm.set_threads(args.threads or None)
    import tensorflow as tf

    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    print(f"op library {ops.library_path()}; intra-op threads {threads}")
    print(f"{'shape':<8s} {'[B, T, N]':<17s} {'pass':<14s} {'ms':>8s} {'GB/s':>7s} "
          f"{'copy ms':>8s} {'copy GB/s':>9s} {'of copy':>8s} {'faults':>8s} {'copy flt':>8s}")
    empty = tf.function(lambda x: x)
    call_ms, _ = measure(empty, (tf.constant(1.0),), 200)
    for name in args.shapes.split(","):
        shape = bm.get_shape(name)
        currents, grad_spikes = bm.op_inputs(*shape.op_shape)
        forward = bm.lif_forward_fn("fused")
        forward_backward = bm.lif_forward_backward_fn("fused")
        for label, fn, fargs, backward in (
                ("forward", forward, (currents,), False),
                ("fwd+bwd", forward_backward, (currents, grad_spikes), True)):
            nbytes = bm.lif_bytes(*shape.op_shape, backward=backward)
            sources, one = bm.copy_inputs(nbytes, parts=3 if backward else 2)
            ms, faults = measure(fn, fargs, args.repeats)
            copy_ms, copy_faults = measure(bm.copy_step(), (sources, one), args.repeats)
            bw, copy_bw = nbytes / ms / 1e6, bm.copy_bytes(sources) / copy_ms / 1e6
            print(f"{name:<8s} {str(list(shape.op_shape)):<17s} {label:<14s} {ms:8.3f} "
                  f"{bw:7.1f} {copy_ms:8.3f} {copy_bw:9.1f} {bw / copy_bw:8.0%} "
                  f"{faults:8.0f} {copy_faults:8.0f}")
    print(f"(an empty tf.function call takes {call_ms:.3f} ms; included above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
