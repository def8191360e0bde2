"""The peers' side of benchmarks/peers.py: the seed's 2-layer SNN in snnTorch
and SpikingJelly, configured to match fused-lif's (`PEERS`; `SEMANTICS` lists
what still differs), checked against fused-lif's forward and gradients, and
their training steps run on request.

Runs under the peers venv's python (torch, snnTorch, SpikingJelly; never
TensorFlow), started by peers.py's `PeerProcess`:

    .peers/bin/python benchmarks/peers_worker.py --threads 2

It reads one JSON request per line on stdin ({"op": ..., arguments}) and
writes one JSON reply per line on stdout: "versions", "setup" (a case file
from peers.py: weights, inputs and fused-lif's results), "steps" (run a
peer's training step `calls` times), "quit". An error comes back as
{"error", "traceback"}. Nothing else may write to stdout: libraries' prints go
to stderr.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

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


# A case file (np.savez, written by peers.py's save_case): y, fused_loss, the
# weights w1, b1, w2, b2, fused-lif's gradients g_w1, g_b1, g_w2, g_b2, and
# the spikes x, fused_hidden, fused_output bit-packed by `pack` (KEY and
# KEY_shape), which `load_case` unpacks.
PACKED = ("x", "fused_hidden", "fused_output")


def pack(spikes):
    """(bits, shape) of a 0/1 array, for a case file."""
    spikes = np.asarray(spikes)
    return np.packbits(spikes.astype(bool).ravel()), np.array(spikes.shape, np.int64)


def load_case(path):
    """The arrays of a case file, its bit-packed spikes unpacked to float32."""
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    for key in PACKED:
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
        self.prepared = {}

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
        self.prepared, checks = {}, {}
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
            self.prepared[name] = step
        return {"checks": checks}

    def steps(self, peer, calls):
        """`calls` training steps of `peer` back to back (peers.py times the
        request)."""
        step = self.prepared[peer].step
        for _ in range(calls):
            step()
        return {"calls": calls}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, required=True,
                        help="torch's intra-op and inter-op threads")
    threads = parser.parse_args(argv).threads
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
