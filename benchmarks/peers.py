"""fused-lif against snnTorch and SpikingJelly: a network's training step
(forward, backward, Adam) in each, on the CPU, side by side. The networks
(`--network`): "mlp", the seed's 2-layer SNN (the default); "conv", the
spiking CNN of benchmarks/test_bench_conv.py; "recurrent", the recurrent
network of test_bench_recurrent.py against snnTorch's RLeaky.

    python -m venv .peers
    .peers/bin/pip install torch==2.13.0 snntorch spikingjelly \\
        --extra-index-url https://download.pytorch.org/whl/cpu
    python benchmarks/peers.py --peers-python .peers/bin/python         # seed, medium, large
    python benchmarks/peers.py --peers-python .peers/bin/python --shapes all --json peers.json
    python benchmarks/peers.py --network conv
    python benchmarks/peers.py --network recurrent

This file is the TensorFlow side, the driver. fused-lif's steps run in this
process (peers_cases.py: for the MLP, `fused_lif._bench_model`'s
`build_models` and `training_step`, exactly what `fused-lif bench` times, and
beside it the same model with `LIFLayer(spike_input=True)` (the inputs are
binary), in its own column; for the recurrent network, the fused recurrent
op, the same network feed-forward and the reference's while_loop). The
peers run in a worker process started with the peers venv's python
(`peers_worker.py`: it imports torch, never TensorFlow). The two take turns
round by round (fused-lif, snnTorch, SpikingJelly, fused-lif, ...;
`fused_lif._bench.interleaved_times`) with the same thread count, warm-up and
rounds, so the ratios come from the same conditions; a round times
back-to-back calls of one step lasting ~0.2 s (at least one call), measured
here for every library (a peer's round includes its request's round trip
through the worker's pipes, one JSON line each way), and the table gives the
median over rounds of the time per call.

The same network everywhere, e.g. the MLP: x [batch, time, inputs] -> Linear
-> LIF(hidden) -> Linear -> LIF(outputs); each Linear is one GEMM over all
time steps; the same initial weights and input spikes; loss = Keras'
categorical cross-entropy of softmax(output spike counts) (in a tf.function
Keras takes it from the softmax's logits: -sum(y log_softmax(counts)),
unclipped); Adam(lr=1e-3, eps=1e-7). The LIF neuron is the seed's: u = v * (1
- 1/tau) + I, tau = 20; s = [u > 1]; v = u * (1 - s) (reset to zero, the
gradient flowing through the reset); surrogate dS/du = 1 / (1 + |10 (u -
1)|)^2 (the seed's fast sigmoid, slope 10). Each peer is configured to match
(`peers_worker.PEERS`, `peers_torch`; `peers_worker.SEMANTICS` and
`NETWORK_SEMANTICS` list every difference that is left). Before timing, the
forward spikes of each peer from the same weights and inputs are compared
with fused-lif's, layer by layer, and so are the loss and the gradients: the
table says how much of each agrees.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

import peers_cases
from harness import machine
from peers_cases import MAIN, SPARSE, TITLES
from peers_worker import NETWORK_PEERS, NETWORK_SEMANTICS, PEERS, SEMANTICS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "peers_worker.py")
DEFAULT_PEERS_PYTHON = os.path.join(ROOT, ".peers", "bin", "python")
DEFAULT_SHAPES = peers_cases.default_shapes("mlp")
DEFAULT_PEERS = NETWORK_PEERS["mlp"]
LOADED = machine.LOADED  # other processes' share of the CPUs above which the table warns


class PeerProcess:
    """The worker under the peers venv's python, one request at a time."""

    def __init__(self, python, threads):
        if not os.path.isfile(python) or not os.access(python, os.X_OK):
            raise FileNotFoundError(
                f"--peers-python {python!r} is not an executable file; create the peers "
                f"venv (see `python {os.path.relpath(__file__)} --help`)")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.process = subprocess.Popen(
            [python, WORKER, "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def call(self, op, **request):
        self.process.stdin.write(json.dumps(dict(request, op=op)) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"the peers' worker exited (status {code}) during {op!r}; "
                               "its error is above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the peers' worker failed in {op!r}: {reply['error']}\n"
                               f"{reply['traceback']}")
        return reply

    def close(self):
        """Asks the worker to quit (kills it after 60 s) and closes the pipes."""
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
            except OSError:  # it died: nothing to ask
                pass
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _calls_per_round(seconds, target=0.2):
    """Back-to-back calls per timed round, so that one round lasts ~target."""
    return max(1, min(50, int(round(target / max(seconds, 1e-6)))))


def _round_robin(steps, args, worker, peers, repeats, warmup, progress, label):
    """({name: [seconds per call, one per round]}, {name: calls per round}) of
    fused-lif's `steps` {name: tf.function} on `args` and of the worker's
    `peers`, round-robin (`interleaved_times`). `warmup` rounds of one call
    each come first; the last sets how many calls back to back make a round."""
    from fused_lif._bench import interleaved_times

    def back_to_back(name, calls):
        def fused():
            for _ in range(calls):
                steps[name](*args)

        def peer():
            worker.call("steps", peer=name, calls=calls)

        return (fused if name in steps else peer), ()

    names = [*steps, *peers]
    once = interleaved_times({n: back_to_back(n, 1) for n in names}, max(1, warmup), warmup=0)
    calls = {n: _calls_per_round(t[-1]) for n, t in once.items()}
    rounds = interleaved_times({n: back_to_back(n, calls[n]) for n in names}, repeats,
                               warmup=0, progress=progress, label=label)
    return {n: [t / calls[n] for t in ts] for n, ts in rounds.items()}, calls


def run(shape_names, peers_python, peers=DEFAULT_PEERS, repeats=5, warmup=2, threads=2,
        progress=None, network="mlp"):
    """{"machine": ..., "network", "peers", "notes", "rows": [one per shape]}:
    each row has the median seconds per training step of fused-lif's columns
    and of each peer (interleaved rounds), the peers' speedups (their time
    over fused-lif's MAIN column, None where it did not run), and each
    peer's agreement with fused-lif. `shape_names`: names of the network's
    shapes (peers_cases.shapes), or shapes."""
    import tensorflow as tf

    import fused_lif

    tensorflow_threads = list(machine.set_threads(threads, threads))
    progress = progress or (lambda message: None)
    if network not in peers_cases.CASES:
        raise ValueError(f"unknown network {network!r}; known: {', '.join(peers_cases.CASES)}")
    for name in peers:
        if name not in NETWORK_PEERS[network]:
            raise ValueError(f"unknown peer {name!r} for the {network} network; known: "
                             f"{', '.join(NETWORK_PEERS[network])}")
    known = peers_cases.shapes(network)
    shapes = [known[s] if isinstance(s, str) else s for s in shape_names]
    # Other processes' share of the CPUs; the worker's time counts as ours once
    # close() has waited for it (RUSAGE_CHILDREN).
    load = machine.OtherLoad()
    worker = PeerProcess(peers_python, threads)
    rows, notes = [], []
    try:
        info = {"peers": worker.call("versions"), "tensorflow": tf.__version__,
                "threads": threads, "tensorflow_threads": tensorflow_threads,
                "cpus": os.cpu_count(), "fused_lif_op_library": fused_lif.ops.library_path()}
        with tempfile.TemporaryDirectory(prefix="fused-lif-peers-") as tmp:
            for shape in shapes:
                label = shape.name
                progress(f"{label}: building fused-lif's {network} model, checking the peers "
                         "against it")
                case = peers_cases.CASES[network](shape)
                path = os.path.join(tmp, f"{label}.npz")
                peers_cases.save_case(path, case)
                checks = worker.call("setup", shape=case.shape, case=path, peers=list(peers),
                                     network=network)["checks"]
                os.remove(path)
                notes += [n for n in case.notes if n not in notes]

                progress(f"{label}: warm-up")
                times, calls = _round_robin(case.steps, case.inputs, worker, peers, repeats,
                                            warmup, progress, label)
                medians = {name: statistics.median(t) for name, t in times.items()}
                main = medians.get(MAIN)
                rows.append({
                    **case.shape, "shape": label,
                    "step_ms": {name: 1e3 * m for name, m in medians.items()},
                    "min_ms": {name: 1e3 * min(t) for name, t in times.items()},
                    "rounds": repeats, "calls_per_round": calls,
                    "speedup": {name: medians[name] / main if main else None for name in peers},
                    "checks": checks,
                })
                del case
    finally:
        worker.close()
    info["other_load"] = load.fraction()
    return {"machine": info, "network": network, "peers": list(peers), "notes": notes,
            "rows": rows}


def _ms(value):
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def format_markdown(result):
    """The timing table and the agreement table, as markdown."""
    peers = result["peers"]
    rows = result["rows"]
    main = any(MAIN in row["step_ms"] for row in rows)
    extra = [k for k in TITLES if any(k in row["step_ms"] for row in rows)]
    header = (["shape"] + (["fused-lif"] if main else []) + [PEERS[p][0] for p in peers]
              + ([f"vs {PEERS[p][0]}" for p in peers] if main else []))
    for key in extra:
        header += [TITLES[key], "its speedup over the fastest peer"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ms = row["step_ms"]
        fastest = min(ms[p] for p in peers)
        cells = [row["shape"]] + ([_ms(ms[MAIN]) if MAIN in ms else "-"] if main else [])
        cells += [_ms(ms[p]) for p in peers]
        if main:
            cells += ["-" if row["speedup"][p] is None else f"{row['speedup'][p]:.2f}x"
                      for p in peers]
        for key in extra:
            cells += [_ms(ms[key]), f"{fastest / ms[key]:.2f}x"] if key in ms else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| shape | peer | spikes equal, per layer | spike counts fused / peer | "
              "loss fused / peer | gradients: max rel. diff, min cosine |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        for p in peers:
            c = row["checks"][p]
            layers, g = c["layers"], c["gradients"]
            lines.append(
                f"| {row['shape']} | {PEERS[p][0]} | "
                + ", ".join(f"{k} {100 * a['equal_fraction']:.4f}%" for k, a in layers.items())
                + " | " + "; ".join(f"{k} {a['fused_count']:,} / {a['peer_count']:,}"
                                    for k, a in layers.items())
                + f" | {c['fused_loss']:.6f} / {c['loss']:.6f} "
                f"| {g['max_rel_diff']:.2g}, {g['min_cosine']:.6f} |")
    lines += [f"\nNote: {n}" for n in result.get("notes", [])]
    m = result["machine"]
    load = m.get("other_load")
    lines += ["", f"torch {m['peers']['torch']}, snnTorch {m['peers']['snntorch']}, "
                  f"SpikingJelly {m['peers']['spikingjelly']}; TensorFlow {m['tensorflow']}; "
                  f"{m['threads']} threads each, {m['cpus']} CPUs; other processes used "
                  + (f"{100 * load:.0f}%" if load is not None else "an unknown share")
                  + " of the CPUs during the run."]
    if load is not None and load > LOADED and m["threads"] > 1:
        lines += ["", f"WARNING: the machine was loaded. With {m['threads']} threads every "
                      "parallel region waits for a descheduled thread, and the peers run one "
                      "per op per time step: these times measure the contention. Use an idle "
                      "machine, or --threads 1."]
    return "\n".join(lines)


def format_semantics(peers, network="mlp"):
    """What differs from fused-lif's network in each peer, as markdown bullets."""
    lines = [f"What differs from fused-lif's {network} network:"]
    lines += [f"- every peer: {text}" for text in SEMANTICS["all"] + NETWORK_SEMANTICS[network]]
    for key in peers:
        lines += [f"- {PEERS[key][0]}: {text}" for text in SEMANTICS[key]]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Peers venv: python -m venv .peers && .peers/bin/pip install torch==2.13.0 "
               "snntorch spikingjelly --extra-index-url https://download.pytorch.org/whl/cpu",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers-python", default=DEFAULT_PEERS_PYTHON,
                        help="python of the venv with torch, snntorch and spikingjelly "
                             "(default: .peers/bin/python in the checkout)")
    parser.add_argument("--network", default="mlp", choices=peers_cases.NETWORKS,
                        help="the seed's MLP (default), the spiking CNN, or the recurrent "
                             "network")
    parser.add_argument("--shapes", default=None,
                        help="comma-separated names of the network's shapes, or 'all' "
                             "(mlp: fused_lif._bench_model.SHAPES, default "
                             f"{','.join(DEFAULT_SHAPES)}; conv, recurrent: all of theirs)")
    parser.add_argument("--peers", default=None,
                        help="comma-separated, of the network's: "
                             + "; ".join(f"{n}: {','.join(p)}" for n, p in NETWORK_PEERS.items())
                             + " (default all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up rounds (default 2)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for TensorFlow (intra-op and inter-op) and torch "
                             "(default 2)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--threads and --repeats must be >= 1, --warmup >= 0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    known = peers_cases.shapes(args.network)
    shapes = args.shapes or ",".join(peers_cases.default_shapes(args.network))
    names = list(known) if shapes == "all" else [s for s in shapes.split(",") if s]
    unknown = [s for s in names if s not in known]
    if unknown or not names:
        parser.error(f"--shapes: unknown {unknown or names} for the {args.network} network; "
                     f"known: {', '.join(known)}")
    allowed = NETWORK_PEERS[args.network]
    peers = [p for p in (args.peers or ",".join(allowed)).split(",") if p]
    if not peers or any(p not in allowed for p in peers):
        parser.error(f"--peers: {args.peers!r}; known for the {args.network} network: "
                     f"{', '.join(allowed)}")
    if not os.path.isfile(args.peers_python):
        parser.error(f"--peers-python {args.peers_python!r} does not exist; create the "
                     f"peers venv first:\n  {parser.epilog.split(': ', 1)[1]}")
    result = run(names, args.peers_python, peers, repeats=args.repeats, warmup=args.warmup,
                 threads=args.threads, progress=lambda m: print(m, file=sys.stderr, flush=True),
                 network=args.network)
    print(format_markdown(result))
    print()
    print(format_semantics(peers, args.network))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
