"""Where the time of one training step goes: TensorFlow's profiler trace of
the seed's 2-layer SNN training step (forward + backward + Adam), summed per
op kind, next to the step's wall time, the GEMM floor, the LIF op alone and an
equal-bytes copy.

    python benchmarks/profile_step.py --shape seed
    python benchmarks/profile_step.py --shape medium --threads 1

Op times are summed over TensorFlow's inter-op threads (ops may overlap, so
their sum can exceed the wall time); "not in ops" is the wall time that no op
accounts for (Python, function call, executor scheduling).
"""

import argparse
import collections
import glob
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def kind_of(op_type, name):
    if "MatMul" in op_type:
        return "matmul"
    if op_type.startswith("FusedLif>"):
        return op_type.split(">")[1]
    if name.startswith("adam/") or "/adam/" in name:
        return "adam (optimizer ops)"
    return "other ops"


def profile(step, args, steps, logdir):
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        step(*args)
    tf.profiler.experimental.stop()
    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    per_kind = collections.Counter()
    per_op = collections.Counter()
    count = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                label = plane.event_metadata[event.metadata_id].name
                if ":" not in label or "::" in label:  # executor bookkeeping, not an op
                    continue
                name, op_type = label.rsplit(":", 1)
                per_kind[kind_of(op_type, name)] += event.duration_ps
                per_op[op_type] += event.duration_ps
                count[op_type] += 1
    scale = 1e-9 / steps  # ps -> ms per step
    return ({k: v * scale for k, v in per_kind.items()},
            {k: v * scale for k, v in per_op.items()},
            {k: v / steps for k, v in count.items()})


def median_ms(fn, args, repeats=20, warmup=3):
    from fused_lif._bench import interleaved_times

    return 1e3 * statistics.median(interleaved_times({"": (fn, args)}, repeats, warmup)[""])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="seed")
    parser.add_argument("--implementation", default="fused")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads")
    parser.add_argument("--steps", type=int, default=20, help="profiled steps")
    args = parser.parse_args(argv)

    from fused_lif import _bench_model
    from harness import machine, model_level, op_level

    machine.set_threads(args.threads or None)
    import tensorflow as tf

    shape = _bench_model.get_shape(args.shape)
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    print(f"{shape}; {args.implementation}; intra-op threads {threads}")
    model = model_level.build_models(shape, (args.implementation,))[args.implementation]
    x, y = _bench_model.model_inputs(shape)
    step = (model_level.dfa_training_step(model) if args.implementation == "fused-dfa"
            else _bench_model.training_step(model))
    grads = _bench_model.loss_and_gradients(model)
    forward = tf.function(lambda x: model(x, training=True))
    floor_args = _bench_model.gemm_floor_inputs(shape)
    timings = {
        "training step (fwd + bwd + Adam)": median_ms(step, (x, y)),
        "forward + backward (no Adam)": median_ms(grads, (x, y)),
        "forward only": median_ms(forward, (x,)),
        "GEMM floor (the step's 5 GEMMs, one at a time)": median_ms(_bench_model.gemm_floor_step(),
                                                                    floor_args),
    }
    if args.implementation == "fused":
        for units, label in ((shape.hidden, "hidden"), (shape.outputs, "output")):
            currents, grad_spikes = op_level.op_inputs(shape.batch, shape.time, units)
            timings[f"LIF op fwd+bwd alone, {label} layer"] = median_ms(
                op_level.lif_forward_backward_fn("fused"), (currents, grad_spikes))
        nbytes = op_level.lif_bytes(*shape.op_shape)
        timings[f"copy of the hidden LIF op's {nbytes / 1e6:.1f} MB"] = median_ms(
            op_level.copy_step(), op_level.copy_inputs(nbytes))
    timings["empty tf.function call"] = median_ms(tf.function(lambda x: x), (tf.constant(1.0),),
                                                  repeats=200)
    for label, ms in timings.items():
        print(f"  {label:<45s} {ms:9.3f} ms")

    with tempfile.TemporaryDirectory() as logdir:
        start = time.perf_counter()
        per_kind, per_op, count = profile(step, (x, y), args.steps, logdir)
        wall = 1e3 * (time.perf_counter() - start) / args.steps
    total = sum(per_kind.values())
    print(f"\nProfiled training step ({args.steps} steps; wall {wall:.3f} ms/step under the "
          f"profiler, {sum(count.values()):.0f} ops/step):")
    for kind, ms in sorted(per_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<30s} {ms:9.3f} ms  {ms / total:6.1%}")
    print(f"  {'sum of op times':<30s} {total:9.3f} ms")
    print("\nTop op types (ms/step, count/step):")
    for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {op:<40s} {ms:9.3f} ms  x{count[op]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
