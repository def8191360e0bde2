"""The peers' networks in torch, for peers_worker.py: the seed's 2-layer SNN
("mlp"), the spiking CNN ("conv") and the recurrent network ("recurrent"),
in snnTorch and SpikingJelly, each loading fused-lif's initial weights
(Keras layout) and giving its spikes, loss and gradients back in fused-lif's
layout for the check. Imports torch (never TensorFlow) when a network is
built.

Every network gives the spikes of its LIF layers batch-major, as fused-lif's
are ([batch, time, neurons], or [batch, time, H, W, C] for convolutions), in
`LAYERS[network]`'s order, and takes and returns its weights as Keras lists
them (`load`, `keras_grads`).
"""

# The seed's neuron and training (see the notebook and fused_lif.reference).
TAU = 20.0
THRESHOLD = 1.0
ALPHA = 10.0           # the fast sigmoid's slope
LEARNING_RATE = 1e-3
ADAM_EPSILON = 1e-7    # Keras' default (torch's is 1e-8)

# The LIF layers whose spikes each network's check compares, in order.
LAYERS = {"mlp": ("hidden", "output"), "conv": ("lif1", "lif2", "output"),
          "recurrent": ("hidden", "output")}


def torch_loss(output_counts, y):
    """The seed's loss, batch mean: Keras' categorical_crossentropy(y,
    softmax(counts)), which Keras computes inside a tf.function (as every
    training step is) from the softmax's logits, unclipped:
    -sum(y * log_softmax(counts))."""
    import torch

    return torch.nn.functional.cross_entropy(output_counts, y)


def seed_fast_sigmoid():
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


def _leaky():
    import snntorch
    from snntorch import surrogate

    return snntorch.Leaky(beta=1.0 - 1.0 / TAU, threshold=THRESHOLD,
                          spike_grad=surrogate.fast_sigmoid(slope=ALPHA),
                          reset_mechanism="zero", reset_delay=False)


def _scan(lif, currents):
    """snnTorch's Leaky over time, [batch, time, ...] -> spikes of that shape.
    unbind, not currents[:, t]: each slice's backward would fill a zero
    tensor of the whole sequence (quadratic in time)."""
    import torch

    mem = lif.reset_mem()
    spikes = []
    for current in currents.unbind(1):
        spike, mem = lif(current, mem)
        spikes.append(spike)
    return torch.stack(spikes, dim=1)


def _lif_node(exact):
    from spikingjelly.activation_based import neuron, surrogate

    spike = seed_fast_sigmoid() if exact else surrogate.SoftSign(alpha=ALPHA)
    return neuron.LIFNode(tau=TAU, decay_input=False, v_threshold=THRESHOLD, v_reset=0.0,
                          surrogate_function=spike, detach_reset=False, step_mode="m")


# ----------------------------------------------------------- the networks --
# Each is a torch.nn.Module with: time_major (its input and spikes are
# [time, batch, ...]), prepare(fused-lif's x [batch, time, features]) -> its
# input, forward(its input) -> spikes of LAYERS[network], batch_major(spikes
# of one layer) -> fused-lif's layout, load(*Keras' weights), keras_grads()
# -> the gradients in Keras' layout, after backward().

def _linear(layer, w, b):
    """Keras' w is [in, out]; torch's Linear weight is [out, in]."""
    import torch

    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w.T.copy()))
        if b is not None:
            layer.bias.copy_(torch.from_numpy(b))


def _mlp(shape, peer):
    import torch
    from spikingjelly.activation_based import layer

    class MLP(torch.nn.Module):
        """x -> Linear -> LIF(hidden) -> Linear -> LIF(outputs); one GEMM per
        layer over all time steps."""

        time_major = peer.startswith("spikingjelly")

        def __init__(self):
            super().__init__()
            if self.time_major:
                self.fc1 = layer.Linear(shape["inputs"], shape["hidden"], step_mode="m")
                self.fc2 = layer.Linear(shape["hidden"], shape["outputs"], step_mode="m")
                self.lif1, self.lif2 = (_lif_node(peer == "spikingjelly-exact") for _ in "12")
            else:
                self.fc1 = torch.nn.Linear(shape["inputs"], shape["hidden"])
                self.fc2 = torch.nn.Linear(shape["hidden"], shape["outputs"])
                self.lif1, self.lif2 = _leaky(), _leaky()

        def forward(self, x):
            if self.time_major:
                hidden = self.lif1(self.fc1(x))
                return hidden, self.lif2(self.fc2(hidden))
            hidden = _scan(self.lif1, self.fc1(x))
            return hidden, _scan(self.lif2, self.fc2(hidden))

        def prepare(self, x):
            return x.transpose(0, 1).contiguous() if self.time_major else x

        def batch_major(self, spikes):
            return spikes.transpose(0, 1) if self.time_major else spikes

        def load(self, w1, b1, w2, b2):
            _linear(self.fc1, w1, b1)
            _linear(self.fc2, w2, b2)

        def keras_grads(self):
            return [g.grad.numpy().T.copy() if g.grad.ndim == 2 else g.grad.numpy().copy()
                    for g in (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)]

    return MLP()


def _conv(shape, peer):
    import torch
    from spikingjelly.activation_based import layer

    height, width, depth = shape["image"]
    c1, c2 = shape["channels"]
    k = shape["kernel_size"]
    pooled = (height // 4) * (width // 4)  # two 2x2 poolings

    class ConvNet(torch.nn.Module):
        """conv(c1)-LIF-pool, conv(c2)-LIF-pool, Linear-LIF readout, "same"
        padding; the convolutions and poolings on [batch·time, C, H, W]
        (time folded into the batch, as fused-lif's TimeFolded and
        SpikingJelly's multi-step layers do), the LIF over time."""

        time_major = peer.startswith("spikingjelly")

        def __init__(self):
            super().__init__()
            if self.time_major:
                self.conv1 = layer.Conv2d(depth, c1, k, padding=k // 2, step_mode="m")
                self.conv2 = layer.Conv2d(c1, c2, k, padding=k // 2, step_mode="m")
                self.pool = layer.MaxPool2d(2, step_mode="m")
                self.fc = layer.Linear(pooled * c2, shape["outputs"], step_mode="m")
                self.lifs = torch.nn.ModuleList(
                    _lif_node(peer == "spikingjelly-exact") for _ in range(3))
            else:
                self.conv1 = torch.nn.Conv2d(depth, c1, k, padding=k // 2)
                self.conv2 = torch.nn.Conv2d(c1, c2, k, padding=k // 2)
                self.pool = torch.nn.MaxPool2d(2)
                self.fc = torch.nn.Linear(pooled * c2, shape["outputs"])
                self.lifs = torch.nn.ModuleList(_leaky() for _ in range(3))

        def forward(self, x):
            lif1, lif2, lif3 = self.lifs
            if self.time_major:  # x [T, B, C, H, W]
                s1 = lif1(self.conv1(x))
                s2 = lif2(self.conv2(self.pool(s1)))
                flat = self.pool(s2).flatten(2)
                return s1, s2, lif3(self.fc(flat))
            batch, time = x.shape[:2]  # x [B, T, C, H, W]

            def folded(module, h):
                out = module(h.flatten(0, 1))
                return out.reshape(batch, time, *out.shape[1:])

            s1 = _scan(lif1, folded(self.conv1, x))
            s2 = _scan(lif2, folded(self.conv2, folded(self.pool, s1)))
            flat = folded(self.pool, s2).flatten(2)
            return s1, s2, _scan(lif3, self.fc(flat))

        def prepare(self, x):  # [B, T, H·W·C] -> [B, T, C, H, W] (or time-major)
            x = x.reshape(*x.shape[:2], height, width, depth).permute(0, 1, 4, 2, 3)
            return (x.transpose(0, 1) if self.time_major else x).contiguous()

        def batch_major(self, spikes):
            if self.time_major:
                spikes = spikes.transpose(0, 1)
            # [B, T, C, H, W] -> fused-lif's [B, T, H, W, C]; the readout's [B, T, n] as is
            return spikes.permute(0, 1, 3, 4, 2) if spikes.ndim == 5 else spikes

        def load(self, k1, b1, k2, b2, w, b):
            with torch.no_grad():  # Keras [kh, kw, in, out] -> torch [out, in, kh, kw]
                for conv, kernel, bias in ((self.conv1, k1, b1), (self.conv2, k2, b2)):
                    conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
                    conv.bias.copy_(torch.from_numpy(bias))
            # Keras flattens the pooled spikes as (h, w, c), torch as (c, h, w).
            _linear(self.fc, w.reshape(pooled, c2, -1).transpose(1, 0, 2).reshape(
                pooled * c2, -1), b)

        def keras_grads(self):
            g = [p.grad.numpy() for p in (self.conv1.weight, self.conv1.bias, self.conv2.weight,
                                          self.conv2.bias, self.fc.weight, self.fc.bias)]
            fc = g[4].T.reshape(c2, pooled, -1).transpose(1, 0, 2).reshape(pooled * c2, -1)
            return [g[0].transpose(2, 3, 1, 0).copy(), g[1].copy(),
                    g[2].transpose(2, 3, 1, 0).copy(), g[3].copy(), fc.copy(), g[5].copy()]

    return ConvNet()


def _recurrent(shape, peer):
    import snntorch
    import torch
    from snntorch import surrogate

    hidden = shape["hidden"]

    class RecurrentNet(torch.nn.Module):
        """x -> Linear -> RLeaky(hidden, all_to_all) -> Linear -> Leaky. The
        RLeaky's recurrent nn.Linear is replaced by one without a bias: its
        currents are then fused-lif's, I[t] = x[t] @ w + b + s[t-1] @ R."""

        time_major = False

        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(shape["inputs"], hidden)
            self.rlif = snntorch.RLeaky(
                beta=1.0 - 1.0 / TAU, threshold=THRESHOLD, all_to_all=True,
                linear_features=hidden, spike_grad=surrogate.fast_sigmoid(slope=ALPHA),
                reset_mechanism="zero", reset_delay=False)
            self.rlif.recurrent = torch.nn.Linear(hidden, hidden, bias=False)
            self.fc2 = torch.nn.Linear(hidden, shape["outputs"])
            self.lif2 = _leaky()

        def forward(self, x):
            currents = self.fc1(x)
            spike = torch.zeros(x.shape[0], hidden)
            mem = torch.zeros(x.shape[0], hidden)
            spikes = []
            for current in currents.unbind(1):
                spike, mem = self.rlif(current, spike, mem)
                spikes.append(spike)
            h = torch.stack(spikes, dim=1)
            return h, _scan(self.lif2, self.fc2(h))

        def prepare(self, x):
            return x

        def batch_major(self, spikes):
            return spikes

        def load(self, w1, b1, r, w2, b2):
            _linear(self.fc1, w1, b1)
            _linear(self.rlif.recurrent, r, None)  # s @ R = Linear with weight R^T
            _linear(self.fc2, w2, b2)

        def keras_grads(self):
            g = [p.grad.numpy() for p in (self.fc1.weight, self.fc1.bias,
                                          self.rlif.recurrent.weight, self.fc2.weight,
                                          self.fc2.bias)]
            return [g[0].T.copy(), g[1].copy(), g[2].T.copy(), g[3].T.copy(), g[4].copy()]

    return RecurrentNet()


BUILDERS = {"mlp": _mlp, "conv": _conv, "recurrent": _recurrent}


def build(network, shape, peer):
    """The torch network `network` ("mlp", "conv", "recurrent") of `peer`."""
    try:
        builder = BUILDERS[network]
    except KeyError:
        raise ValueError(f"unknown network {network!r}; known: {', '.join(BUILDERS)}") from None
    return builder(shape, peer)
