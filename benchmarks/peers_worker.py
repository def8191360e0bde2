"""The peers' side of benchmarks/peers.py: the seed's 2-layer SNN, the
spiking CNN and the recurrent network (peers_torch.py) in snnTorch and
SpikingJelly, configured to match fused-lif's (`PEERS`, `NETWORK_PEERS`;
`SEMANTICS` and `NETWORK_SEMANTICS` list what still differs), checked
against fused-lif's forward and gradients, and their training steps run on
request.

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

from peers_torch import ADAM_EPSILON, LAYERS, LEARNING_RATE, build, torch_loss

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
    "snntorch-rleaky": ("snnTorch RLeaky",
                        "snntorch.RLeaky(all_to_all=True, linear_features=hidden, options as "
                        "Leaky's) with its recurrent nn.Linear without a bias, a Python "
                        "loop over time; the readout a Leaky"),
}

# The peers of each network (peers_torch.BUILDERS): SpikingJelly's recurrent
# containers run single-step only, so the recurrent network is snnTorch's.
NETWORK_PEERS = {
    "mlp": ("snntorch", "spikingjelly", "spikingjelly-exact"),
    "conv": ("snntorch", "spikingjelly", "spikingjelly-exact"),
    "recurrent": ("snntorch-rleaky",),
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
    "snntorch-rleaky": [
        "RLeaky charges beta * mem + I + recurrent(s[t-1]), where recurrent is an "
        "nn.Linear(hidden, hidden) with a bias by default: replaced by one without, whose "
        "weight is fused-lif's recurrent_kernel transposed, so the currents are fused-lif's "
        "I[t] = x[t] @ w + b + s[t-1] @ R, summed in another order (float rounding). Spike, "
        "reset and surrogate as snnTorch's Leaky.",
    ],
}

# What differs in a network beyond the neurons (every peer).
NETWORK_SEMANTICS = {
    "mlp": [],
    "conv": [
        "torch's convolutions are NCHW (fused-lif's NHWC): the input is transposed once, "
        "outside the step; the readout's weight rows are permuted once from Keras' (h, w, c) "
        "flattening order to torch's (c, h, w). snnTorch's convolutions and poolings run on "
        "[batch·time, C, H, W] (time folded into the batch, as fused-lif's TimeFolded and "
        "SpikingJelly's multi-step layers), its Leaky neurons in a loop over time.",
        "The convolutions are torch's too: like the GEMMs, equal to fused-lif's to float "
        "rounding, so a spike can flip, and a flip in the first layer moves the layers "
        "after it.",
    ],
    "recurrent": [],
}


class PeerStep:
    """One peer's `network` (peers_torch) with the case's weights, its data
    and its training step (forward, loss, backward, Adam)."""

    def __init__(self, name, network, shape, data):
        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
        if name not in NETWORK_PEERS.get(network, ()):
            raise ValueError(f"{name!r} has no {network!r} network; it has: "
                             f"{', '.join(NETWORK_PEERS.get(network, ())) or 'none'} "
                             f"(networks: {', '.join(NETWORK_PEERS)})")
        import torch

        self.name, self.network = name, network
        self.net = build(network, shape, name)
        self.net.load(*(data[f"param_{i}"] for i in range(int(data["params"]))))
        self.x = self.net.prepare(torch.from_numpy(data["x"]))
        self.y = torch.from_numpy(data["y"])
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=LEARNING_RATE,
                                          eps=ADAM_EPSILON)

    def _reset(self):
        if self.net.time_major:
            from spikingjelly.activation_based import functional

            functional.reset_net(self.net)

    def _loss(self, output):
        return torch_loss(output.sum(dim=0 if self.net.time_major else 1), self.y)

    def forward(self):
        """(spikes of each of LAYERS[network], batch-major, in fused-lif's
        layout; the loss)."""
        spikes = self.net(self.x)
        self._reset()
        return [self.net.batch_major(s) for s in spikes], self._loss(spikes[-1])

    def gradients(self):
        """The gradients in Keras' layout and order, at the current weights."""
        self.optimizer.zero_grad()
        _, loss = self.forward()
        loss.backward()
        grads = self.net.keras_grads()
        self.optimizer.zero_grad()
        return grads

    def step(self):
        self.optimizer.zero_grad()
        loss = self._loss(self.net(self.x)[-1])
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


# A case file (np.savez, written by peers_cases.save_case): y, fused_loss;
# params (their count) and param_0, param_1, ... the weights in Keras' order,
# grad_0, ... fused-lif's gradients; x and spikes_LAYER for LAYERS[network],
# bit-packed by `pack` (KEY and KEY_shape), which `load_case` unpacks.
PACKED = ("x", "spikes_hidden", "spikes_output")  # the MLP's


def pack(spikes):
    """(bits, shape) of a 0/1 array, for a case file."""
    spikes = np.asarray(spikes)
    return np.packbits(spikes.astype(bool).ravel()), np.array(spikes.shape, np.int64)


def load_case(path):
    """The arrays of a case file, its bit-packed spikes (every KEY with a
    KEY_shape) unpacked to float32."""
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    for key in [k[:-len("_shape")] for k in data if k.endswith("_shape")]:
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

    def setup(self, shape, case, peers, network="mlp"):
        """Builds each peer's `network` from the case's weights and compares
        its forward spikes (each of LAYERS[network]), loss and gradients with
        fused-lif's."""
        data = load_case(case)
        self.prepared, checks = {}, {}
        fused_grads = [data[f"grad_{i}"] for i in range(int(data["params"]))]
        for name in peers:
            step = PeerStep(name, network, shape, data)
            spikes, loss = step.forward()
            grads = step.gradients()
            checks[name] = {
                "layers": {layer: agreement(s.detach().numpy(), data[f"spikes_{layer}"])
                           for layer, s in zip(LAYERS[network], spikes)},
                "loss": loss.item(), "fused_loss": float(data["fused_loss"]),
                "gradients": gradient_agreement(grads, fused_grads),
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
