"""fused-lif against snnTorch and SpikingJelly: the seed's 2-layer SNN's
training step (forward, backward, Adam) in each, on the CPU, side by side.

    python -m venv .peers
    .peers/bin/pip install torch==2.13.0 snntorch spikingjelly \\
        --extra-index-url https://download.pytorch.org/whl/cpu
    python benchmarks/peers.py --peers-python .peers/bin/python         # seed, medium, large
    python benchmarks/peers.py --peers-python .peers/bin/python --shapes all --json peers.json

fused-lif's step runs in this process: TensorFlow, `fused_lif._bench`'s
`build_models` and `training_step`, exactly what `fused-lif bench` times;
beside it, the same model with `LIFLayer(spike_input=True)` (the inputs are
binary), in its own column. The
peers run in a worker process started with the peers venv's python (this
file with `--worker`: it imports torch, never TensorFlow), which times its own
calls. The processes take turns round by round (fused-lif, snnTorch,
SpikingJelly, fused-lif, ...) with the same thread count, warm-up and rounds,
so the ratios come from the same conditions; a round times back-to-back calls
of one step lasting ~0.2 s (at least one call), and the table gives the
median over rounds of the time per call.

The same network everywhere: x [batch, time, inputs] -> Linear -> LIF(hidden)
-> Linear -> LIF(outputs); each Linear is one GEMM over all time steps; the
same initial weights and input spikes; loss = Keras' categorical
cross-entropy of softmax(output spike counts) (in a tf.function Keras takes
it from the softmax's logits: -sum(y log_softmax(counts)), unclipped);
Adam(lr=1e-3, eps=1e-7). The
LIF neuron is the seed's: u = v * (1 - 1/tau) + I, tau = 20; s = [u > 1];
v = u * (1 - s) (reset to zero, the gradient flowing through the reset);
surrogate dS/du = 1 / (1 + |10 (u - 1)|)^2 (the seed's fast sigmoid, slope
10). Each peer is configured to match (`PEERS`, and `SEMANTICS` lists every
difference that is left). Before timing, the forward spikes of each peer from
the same weights and inputs are compared with fused-lif's, and so are the loss
and the gradients: the table says how much of each agrees.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_PEERS_PYTHON = os.path.join(ROOT, ".peers", "bin", "python")
DEFAULT_SHAPES = ("seed", "medium", "large")
LOADED = 0.10  # other processes' share of the CPUs above which the table warns

# The seed's neuron and training (see the notebook and fused_lif.reference).
TAU = 20.0
THRESHOLD = 1.0
ALPHA = 10.0           # the fast sigmoid's slope
LEARNING_RATE = 1e-3
ADAM_EPSILON = 1e-7    # Keras' default (torch's is 1e-8)

# name: (column title, how the peer runs the seed's neuron)
PEERS = {
    "snntorch": ("snnTorch", "snntorch.Leaky(beta=1-1/tau, reset_mechanism='zero', "
                             "reset_delay=False, spike_grad=surrogate.fast_sigmoid(slope=10)), "
                             "a Python loop over time"),
    "spikingjelly": ("SpikingJelly", "neuron.LIFNode(tau, decay_input=False, v_reset=0.0, "
                                     "surrogate_function=SoftSign(alpha=10)), step_mode='m': "
                                     "its registered multi-step LIF op"),
    "spikingjelly-exact": ("SpikingJelly (exact surrogate)",
                           "neuron.LIFNode as above with the seed's fast sigmoid as a "
                           "custom surrogate: SpikingJelly's autograd reference path"),
}
DEFAULT_PEERS = tuple(PEERS)

# What still differs from the seed's network after configuring each peer.
SEMANTICS = {
    "all": [
        "The GEMMs are torch's (oneDNN/MKL through ATen) instead of TensorFlow's, so the "
        "currents equal fused-lif's to float rounding, not bit for bit; a spike flips where a "
        "current sits within rounding of the threshold, and the flip then changes that "
        "neuron's later steps.",
        "Adam: torch adds eps to sqrt(v_hat), Keras to sqrt(v) before the bias correction "
        "(the same update up to eps's scale).",
    ],
    "snntorch": [
        "Same recurrence, spike (u - 1 > 0), reset and surrogate. The reset term is "
        "u - (s - r) * u with r = [v_prev > 1] detached, and r is always 0 under the "
        "immediate reset: equal values and gradients.",
    ],
    "spikingjelly": [
        "Charge v - v/tau + I instead of v * (1 - 1/tau) + I (float rounding).",
        "Spike [u >= 1] instead of [u > 1] (differs only at u == 1 exactly).",
        "Surrogate: SoftSign(alpha=10) is alpha/2 = 5 x the seed's fast sigmoid, the only "
        "built-in of the same shape (the registered op takes only built-ins). The factor "
        "enters once per layer a gradient passes, and the reset term once, so the gradients "
        "are not a constant multiple of the seed's (that Adam would cancel): the check's "
        "cosine similarity shows how far their direction moves.",
        "Time-major data ([time, batch, inputs], SpikingJelly's layout): the input is "
        "transposed once, outside the step.",
    ],
    "spikingjelly-exact": [
        "As SpikingJelly, but the surrogate is the seed's exactly (a torch.autograd.Function "
        "with the seed's spike [u - 1 > 0]), which sends LIFNode down its autograd reference "
        "path instead of its registered op.",
    ],
}


# =================================================================== worker ==
# Runs under the peers venv's python: torch, snnTorch, SpikingJelly; never
# TensorFlow. Reads one JSON request per line on stdin, writes one JSON reply
# per line on (the real) stdout.

def _torch_loss(output_counts, y):
    """The seed's loss, batch mean: Keras' categorical_crossentropy(y,
    softmax(counts)), which Keras computes inside a tf.function (as every
    training step is) from the softmax's logits, unclipped:
    -sum(y * log_softmax(counts))."""
    import torch

    return torch.nn.functional.cross_entropy(output_counts, y)


def _seed_fast_sigmoid():
    """The seed's spike as a SpikingJelly surrogate module: forward [x > 0],
    backward 1 / (1 + |alpha x|)^2."""
    import torch

    class FastSigmoidSpike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return grad_output / (1.0 + (ALPHA * x).abs()) ** 2

    class SeedFastSigmoid(torch.nn.Module):
        def forward(self, x):
            return FastSigmoidSpike.apply(x)

    return SeedFastSigmoid()


def _snntorch_net(shape):
    import snntorch
    import torch
    from snntorch import surrogate

    class Net(torch.nn.Module):
        """[batch, time, inputs] -> (hidden, output) spikes [batch, time, n]."""

        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(shape["inputs"], shape["hidden"])
            self.fc2 = torch.nn.Linear(shape["hidden"], shape["outputs"])
            self.lif1, self.lif2 = (
                snntorch.Leaky(beta=1.0 - 1.0 / TAU, threshold=THRESHOLD,
                               spike_grad=surrogate.fast_sigmoid(slope=ALPHA),
                               reset_mechanism="zero", reset_delay=False)
                for _ in range(2))

        @staticmethod
        def scan(lif, currents):
            # unbind, not currents[:, t]: each slice's backward would fill a
            # zero tensor of the whole sequence (quadratic in time).
            mem = lif.reset_mem()
            spikes = []
            for current in currents.unbind(1):
                spike, mem = lif(current, mem)
                spikes.append(spike)
            return torch.stack(spikes, dim=1)

        def forward(self, x):
            hidden = self.scan(self.lif1, self.fc1(x))
            return hidden, self.scan(self.lif2, self.fc2(hidden))

    return Net()


def _spikingjelly_net(shape, exact):
    import torch
    from spikingjelly.activation_based import layer, neuron, surrogate

    def lif():
        spike = _seed_fast_sigmoid() if exact else surrogate.SoftSign(alpha=ALPHA)
        return neuron.LIFNode(tau=TAU, decay_input=False, v_threshold=THRESHOLD, v_reset=0.0,
                              surrogate_function=spike, detach_reset=False, step_mode="m")

    class Net(torch.nn.Module):
        """[time, batch, inputs] -> (hidden, output) spikes [time, batch, n]."""

        def __init__(self):
            super().__init__()
            self.fc1 = layer.Linear(shape["inputs"], shape["hidden"], step_mode="m")
            self.fc2 = layer.Linear(shape["hidden"], shape["outputs"], step_mode="m")
            self.lif1, self.lif2 = lif(), lif()

        def forward(self, x):
            hidden = self.lif1(self.fc1(x))
            return hidden, self.lif2(self.fc2(hidden))

    return Net()


class PeerStep:
    """One peer's network with the given weights, its data and its training
    step (forward, loss, backward, Adam)."""

    def __init__(self, name, shape, data):
        import torch

        self.name = name
        self.time_major = name.startswith("spikingjelly")
        if name == "snntorch":
            self.net = _snntorch_net(shape)
        elif self.time_major:
            self.net = _spikingjelly_net(shape, exact=name == "spikingjelly-exact")
        else:
            raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
        with torch.no_grad():  # Keras' w is [in, out]; torch's Linear weight is [out, in]
            for linear, (w, b) in ((self.net.fc1, ("w1", "b1")), (self.net.fc2, ("w2", "b2"))):
                linear.weight.copy_(torch.from_numpy(data[w].T.copy()))
                linear.bias.copy_(torch.from_numpy(data[b]))
        x = torch.from_numpy(data["x"])
        self.x = x.transpose(0, 1).contiguous() if self.time_major else x
        self.y = torch.from_numpy(data["y"])
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=LEARNING_RATE,
                                          eps=ADAM_EPSILON)

    def _reset(self):
        if self.time_major:
            from spikingjelly.activation_based import functional

            functional.reset_net(self.net)

    def forward(self):
        """(hidden, output) spikes [batch, time, n] and the loss."""
        hidden, output = self.net(self.x)
        self._reset()
        if self.time_major:
            hidden, output = hidden.transpose(0, 1), output.transpose(0, 1)
        return hidden, output, _torch_loss(output.sum(dim=1), self.y)

    def gradients(self):
        """[dW1, db1, dW2, db2] in Keras' layout, at the current weights."""
        self.optimizer.zero_grad()
        _, _, loss = self.forward()
        loss.backward()
        grads = [p.grad.numpy().copy() for p in
                 (self.net.fc1.weight, self.net.fc1.bias, self.net.fc2.weight, self.net.fc2.bias)]
        self.optimizer.zero_grad()
        return [grads[0].T, grads[1], grads[2].T, grads[3]]

    def step(self):
        self.optimizer.zero_grad()
        hidden, output = self.net(self.x)
        counts = output.sum(dim=0 if self.time_major else 1)
        loss = _torch_loss(counts, self.y)
        loss.backward()
        self.optimizer.step()
        self._reset()
        return loss


def agreement(peer_spikes, fused_spikes):
    """Fraction of positions where the spikes are equal, and both totals."""
    peer_spikes = np.asarray(peer_spikes) > 0.5
    fused_spikes = np.asarray(fused_spikes) > 0.5
    return {"equal_fraction": float(np.mean(peer_spikes == fused_spikes))
            if fused_spikes.size else 1.0,
            "fused_count": int(fused_spikes.sum()), "peer_count": int(peer_spikes.sum())}


def gradient_agreement(peer_grads, fused_grads):
    """Over the weights: the largest |peer - fused| / max|fused| and the
    smallest cosine similarity."""
    worst_rel, worst_cos = 0.0, 1.0
    for p, f in zip(peer_grads, fused_grads):
        p, f = np.asarray(p, np.float64).ravel(), np.asarray(f, np.float64).ravel()
        diff = float(np.max(np.abs(p - f))) if f.size else 0.0
        scale = float(np.max(np.abs(f))) if f.size else 0.0
        worst_rel = max(worst_rel, diff / scale if scale else (math.inf if diff else 0.0))
        norm = np.linalg.norm(p) * np.linalg.norm(f)
        worst_cos = min(worst_cos, float(p @ f / norm) if norm else 1.0)
    return {"max_rel_diff": worst_rel, "min_cosine": worst_cos}


def load_case(path):
    """The arrays `save_case` wrote, the bit-packed spikes unpacked."""
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    for key in ("x", "fused_hidden", "fused_output"):
        shape = tuple(data.pop(key + "_shape"))
        data[key] = np.unpackbits(data[key], count=int(np.prod(shape))).reshape(shape).astype(
            np.float32)
    return data


class Worker:
    """The request handlers of the peers' process."""

    def __init__(self, threads):
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
        self.steps = {}

    def versions(self, **_):
        import snntorch
        import spikingjelly
        import torch

        try:
            from importlib.metadata import version
            sj = version("spikingjelly")
        except Exception:  # noqa: BLE001  (only informative)
            sj = getattr(spikingjelly, "__version__", "?")
        return {"torch": torch.__version__, "snntorch": snntorch.__version__,
                "spikingjelly": sj, "threads": torch.get_num_threads(),
                "python": sys.version.split()[0],
                "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}

    def setup(self, shape, case, peers):
        """Builds each peer from the case's weights and compares its forward
        spikes, loss and gradients with fused-lif's."""
        data = load_case(case)
        self.steps, checks = {}, {}
        for name in peers:
            step = PeerStep(name, shape, data)
            hidden, output, loss = step.forward()
            grads = step.gradients()
            checks[name] = {
                "hidden": agreement(hidden.detach().numpy(), data["fused_hidden"]),
                "output": agreement(output.detach().numpy(), data["fused_output"]),
                "loss": loss.item(), "fused_loss": float(data["fused_loss"]),
                "gradients": gradient_agreement(
                    grads, [data[k] for k in ("g_w1", "g_b1", "g_w2", "g_b2")]),
            }
            self.steps[name] = step
        return {"checks": checks}

    def time(self, peer, calls):
        """Seconds for `calls` training steps back to back."""
        step = self.steps[peer].step
        start = time.perf_counter()
        for _ in range(calls):
            step()
        return {"seconds": time.perf_counter() - start}


def worker_main(threads):
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing a library prints may reach the protocol
    worker = Worker(threads)
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        if op == "quit":
            break
        try:
            reply = getattr(worker, op)(**request)
        except Exception as error:  # noqa: BLE001  (sent back to the caller)
            import traceback

            reply = {"error": f"{type(error).__name__}: {error}",
                     "traceback": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ===================================================================== main ==
# Runs under the venv with TensorFlow and fused-lif.

class PeerProcess:
    """The worker under the peers venv's python, one request at a time."""

    def __init__(self, python, threads):
        if not os.path.isfile(python) or not os.access(python, os.X_OK):
            raise FileNotFoundError(
                f"--peers-python {python!r} is not an executable file; create the peers "
                f"venv (see `python {os.path.relpath(__file__)} --help`)")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.process = subprocess.Popen(
            [python, os.path.abspath(__file__), "--worker", "--threads", str(threads)],
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


def _packed(spikes):
    spikes = np.asarray(spikes)
    return np.packbits(spikes.astype(bool).ravel()), np.array(spikes.shape, np.int64)


def save_case(path, model, x, y):
    """The fused model's weights, the inputs, and its forward spikes, loss and
    gradients from those weights (before any training step)."""
    import tensorflow as tf

    from fused_lif._bench import loss_and_gradients

    hidden_layer, output_layer = model.get_layer("hidden_layer"), model.get_layer("output_layer")
    hidden = hidden_layer(x)
    output = output_layer(hidden)
    _, loss, grads = loss_and_gradients(model)(x, y)
    names = [v.path for v in model.trainable_variables]
    expected = [hidden_layer.w.path, hidden_layer.b.path, output_layer.w.path, output_layer.b.path]
    if names != expected:
        raise AssertionError(f"unexpected trainable variables {names}")
    arrays = {"y": y.numpy(), "fused_loss": np.float32(loss)}
    for key, value in (("x", x), ("fused_hidden", hidden), ("fused_output", output)):
        arrays[key], arrays[key + "_shape"] = _packed(tf.convert_to_tensor(value).numpy())
    for key, variable in zip(("w1", "b1", "w2", "b2"), model.trainable_variables):
        arrays[key] = variable.numpy()
    for key, grad in zip(("g_w1", "g_b1", "g_w2", "g_b2"), grads):
        arrays[key] = grad.numpy()
    np.savez(path, **arrays)


def _calls_per_round(seconds, target=0.2):
    """Back-to-back calls per timed round, so that one round lasts ~target."""
    return max(1, min(50, int(round(target / max(seconds, 1e-6)))))


def _set_tensorflow_threads(threads):
    """Caps TensorFlow's intra-op and inter-op pools (independent ops at once)
    at `threads`, as torch's eager ops use `threads` one op at a time.
    Returns the (intra, inter) in force; warns when TensorFlow had already
    started with others (0: TensorFlow's default)."""
    import warnings

    import tensorflow as tf

    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(threads)
        threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran something in this process
        warnings.warn(f"TensorFlow's thread pools were already set up in this process "
                      f"(intra-op {threading.get_intra_op_parallelism_threads()}, inter-op "
                      f"{threading.get_inter_op_parallelism_threads()}), not {threads}",
                      RuntimeWarning, stacklevel=3)
    return [threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads()]


# fused-lif's step with LIFLayer(spike_input=True) too: the inputs are binary
# (model_inputs: Bernoulli(0.2)), so its binary-spike matmuls apply. Its
# currents equal the dense ones to float rounding; the peers' check compares
# them with the dense model.
SPARSE = "fused-lif sparse"
SPARSE_TITLE = "fused-lif, spike_input=True"


def run(shape_names, peers_python, peers=DEFAULT_PEERS, repeats=5, warmup=2, threads=2,
        progress=None):
    """{"machine": ..., "rows": [one per shape]}: each row has the median
    seconds per training step of fused-lif and of each peer (interleaved
    rounds), the speedups, and each peer's agreement with fused-lif."""
    import tensorflow as tf

    tensorflow_threads = _set_tensorflow_threads(threads)
    from fused_lif import _bench

    progress = progress or (lambda message: None)
    for name in peers:
        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    shapes = [_bench.get_shape(s) for s in shape_names]
    # Other processes' share of the CPUs; the worker's time counts as ours once
    # close() has waited for it (RUSAGE_CHILDREN).
    from harness import OtherLoad  # benchmarks/, beside this file; never in the worker

    load = OtherLoad()
    worker = PeerProcess(peers_python, threads)
    rows = []
    try:
        machine = {"peers": worker.call("versions"), "tensorflow": tf.__version__,
                   "threads": threads, "tensorflow_threads": tensorflow_threads,
                   "cpus": os.cpu_count(),
                   "fused_lif_op_library": __import__("fused_lif").ops.library_path()}
        with tempfile.TemporaryDirectory(prefix="fused-lif-peers-") as tmp:
            for shape in shapes:
                label = shape.name
                progress(f"{label}: building fused-lif's model, checking the peers against it")
                models = _bench.build_models(shape, ("fused", SPARSE), builders={
                    SPARSE: lambda s: __import__("fused_lif").create_snn_model(
                        s.inputs, s.hidden, s.outputs, s.time, implementation="fused",
                        spike_input=True)})
                model = models["fused"]
                x, y = _bench.model_inputs(shape)
                case = os.path.join(tmp, f"{label}.npz")
                save_case(case, model, x, y)
                shape_dict = {k: getattr(shape, k) for k in
                              ("name", "batch", "time", "inputs", "hidden", "outputs")}
                checks = worker.call("setup", shape=shape_dict, case=case,
                                     peers=list(peers))["checks"]
                os.remove(case)
                steps = {"fused-lif": _bench.training_step(model),
                         SPARSE: _bench.training_step(models[SPARSE])}

                def time_fused(name, calls):
                    step = steps[name]
                    start = time.perf_counter()
                    for _ in range(calls):
                        step(x, y)
                    return time.perf_counter() - start

                progress(f"{label}: warm-up")
                calls = dict.fromkeys(steps, 1)
                for _ in range(max(1, warmup)):  # the last warm-up call sets the calls per round
                    for name in steps:
                        calls[name] = _calls_per_round(time_fused(name, 1))
                    for name in peers:
                        calls[name] = _calls_per_round(worker.call("time", peer=name,
                                                                   calls=1)["seconds"])
                times = {name: [] for name in calls}
                for r in range(repeats):
                    progress(f"{label}: round {r + 1}/{repeats}")
                    for name in steps:
                        times[name].append(time_fused(name, calls[name]) / calls[name])
                    for name in peers:
                        seconds = worker.call("time", peer=name, calls=calls[name])["seconds"]
                        times[name].append(seconds / calls[name])
                medians = {name: statistics.median(t) for name, t in times.items()}
                rows.append({
                    "shape": label, "batch": shape.batch, "time": shape.time,
                    "inputs": shape.inputs, "hidden": shape.hidden, "outputs": shape.outputs,
                    "step_ms": {name: 1e3 * m for name, m in medians.items()},
                    "min_ms": {name: 1e3 * min(t) for name, t in times.items()},
                    "rounds": repeats, "calls_per_round": calls,
                    "speedup": {name: medians[name] / medians["fused-lif"] for name in peers},
                    "checks": checks,
                })
                del model, models, steps
    finally:
        worker.close()
    machine["other_load"] = load.fraction()
    return {"machine": machine, "peers": list(peers), "rows": rows}


def _ms(value):
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def format_markdown(result):
    """The timing table and the agreement table, as markdown."""
    peers = result["peers"]
    sparse = any(SPARSE in row["step_ms"] for row in result["rows"])
    header = (["shape", "fused-lif"] + [PEERS[p][0] for p in peers]
              + [f"vs {PEERS[p][0]}" for p in peers]
              + ([SPARSE_TITLE, "its speedup over the fastest peer"] if sparse else []))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        cells = [row["shape"], _ms(row["step_ms"]["fused-lif"])]
        cells += [_ms(row["step_ms"][p]) for p in peers]
        cells += [f"{row['speedup'][p]:.2f}x" for p in peers]
        if sparse:
            fastest = min(row["step_ms"][p] for p in peers)
            cells += [_ms(row["step_ms"][SPARSE]), f"{fastest / row['step_ms'][SPARSE]:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| shape | peer | hidden spikes equal | output spikes equal | spike counts "
              "fused / peer (hidden; output) | loss fused / peer | gradients: max rel. diff, "
              "min cosine |", "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for p in peers:
            c = row["checks"][p]
            h, o, g = c["hidden"], c["output"], c["gradients"]
            lines.append(
                f"| {row['shape']} | {PEERS[p][0]} | {100 * h['equal_fraction']:.4f}% "
                f"| {100 * o['equal_fraction']:.4f}% "
                f"| {h['fused_count']:,} / {h['peer_count']:,}; "
                f"{o['fused_count']:,} / {o['peer_count']:,} "
                f"| {c['fused_loss']:.6f} / {c['loss']:.6f} "
                f"| {g['max_rel_diff']:.2g}, {g['min_cosine']:.6f} |")
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


def format_semantics(peers):
    """What differs from the seed's network in each peer, as markdown bullets."""
    lines = ["What differs from the seed's network:"]
    for key in ("all", *peers):
        title = "every peer" if key == "all" else PEERS[key][0]
        lines += [f"- {title}: {text}" for text in SEMANTICS[key]]
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
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                        help="comma-separated names from fused_lif._bench.SHAPES, or 'all' "
                             f"(default {','.join(DEFAULT_SHAPES)})")
    parser.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                        help=f"comma-separated, from {', '.join(PEERS)} "
                             f"(default {','.join(DEFAULT_PEERS)})")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up rounds (default 2)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for TensorFlow (intra-op and inter-op) and torch "
                             "(default 2)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--threads and --repeats must be >= 1, --warmup >= 0")
    if args.worker:
        worker_main(args.threads)
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from fused_lif._bench import SHAPES

    names = list(SHAPES) if args.shapes == "all" else [s for s in args.shapes.split(",") if s]
    unknown = [s for s in names if s not in SHAPES]
    if unknown or not names:
        parser.error(f"--shapes: unknown {unknown or names}; known: {', '.join(SHAPES)}")
    peers = [p for p in args.peers.split(",") if p]
    if not peers or any(p not in PEERS for p in peers):
        parser.error(f"--peers: {args.peers!r}; known: {', '.join(PEERS)}")
    if not os.path.isfile(args.peers_python):
        parser.error(f"--peers-python {args.peers_python!r} does not exist; create the "
                     f"peers venv first:\n  {parser.epilog.split(': ', 1)[1]}")
    result = run(names, args.peers_python, peers, repeats=args.repeats, warmup=args.warmup,
                 threads=args.threads, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_markdown(result))
    print()
    print(format_semantics(peers))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
