"""The LIF op alone: its inputs, its forward and forward + backward by the
fused op or the reference, the neuron options, the bytes its kernels move, and
the copy-bandwidth baseline that moves as many."""

import numpy as np

from fused_lif._bench_model import COMPARED

# The neuron options, as keyword arguments of lif_scan: "default" is the
# seed's neuron; "options" is atan + subtract with a per-neuron tau tensor
# (trainable: its gradient is computed too).
OPTION_CONFIGS = {
    "default": dict(),
    "options": dict(surrogate="atan", reset="subtract", per_neuron_tau=True),
}

# An elementwise copy of n float32 values reads 4n and writes 4n bytes.
COPY_BYTES_PER_FLOAT = 8


def op_inputs(batch, time, neurons, seed=0):
    """Currents [batch, time, neurons] that make neurons fire now and then, and
    an upstream gradient dL/dspikes of the same shape."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    currents = rng.normal(0.1, 0.5, (batch, time, neurons)).astype(np.float32)
    grad_spikes = rng.normal(0.0, 1.0, (batch, time, neurons)).astype(np.float32)
    return tf.constant(currents), tf.constant(grad_spikes)


def _scan_module(implementation):
    if implementation == "fused":
        from fused_lif import ops

        ops.load_library()  # says clearly why not, when it cannot load
        return ops
    if implementation == "reference":
        from fused_lif import reference

        return reference
    raise ValueError(f"implementation must be one of {COMPARED}, got {implementation!r}")


def lif_forward_fn(implementation):
    """tf.function currents -> spikes, by the fused op or the reference."""
    import tensorflow as tf

    module = _scan_module(implementation)
    return tf.function(lambda currents: module.lif_scan(currents))


def lif_forward_backward_fn(implementation, **options):
    """tf.function (currents, grad_spikes) -> (spikes, dL/dcurrents): the LIF
    forward and its backward, nothing else; `options` go to lif_scan."""
    import tensorflow as tf

    module = _scan_module(implementation)

    @tf.function
    def forward_backward(currents, grad_spikes):
        with tf.GradientTape() as tape:
            tape.watch(currents)
            spikes = module.lif_scan(currents, **options)
        return spikes, tape.gradient(spikes, currents, output_gradients=grad_spikes)

    return forward_backward


def lif_options_fn(implementation, config):
    """tf.function (currents, grad_spikes) -> (spikes, dL/dcurrents, dL/dtau)
    for one of OPTION_CONFIGS; dL/dtau is zeros([]) when tau is a constant."""
    import tensorflow as tf

    module = _scan_module(implementation)
    options = dict(OPTION_CONFIGS[config])
    per_neuron_tau = options.pop("per_neuron_tau", False)

    @tf.function
    def forward_backward(currents, grad_spikes):
        neurons = currents.shape[-1]
        tau = tf.linspace(5.0, 40.0, neurons) if per_neuron_tau else 20.0
        with tf.GradientTape() as tape:
            tape.watch(currents)
            if per_neuron_tau:
                tape.watch(tau)
            spikes = module.lif_scan(currents, tau=tau, **options)
        sources = [currents, tau] if per_neuron_tau else [currents]
        grads = tape.gradient(spikes, sources, output_gradients=grad_spikes)
        return spikes, grads[0], grads[1] if per_neuron_tau else tf.zeros([])

    return forward_backward


def lif_bytes(batch, time, neurons, backward=True, itemsize=4):
    """Bytes the LIF kernels must read and write (float32): forward reads
    currents, writes spikes and the membrane it saves; backward reads
    dL/dspikes and the membrane, writes dL/dcurrents. 12 bytes per element per
    pass; [batch, neurons] state and per-neuron parameters are negligible."""
    n = batch * time * neurons
    return (6 if backward else 3) * n * itemsize


def copy_inputs(nbytes, parts=3, seed=0):
    """(sources, one) for `copy_step`: `parts` float32 tensors whose copy moves
    `nbytes` in all (read + write). The default 3 parts match the LIF op's
    forward + backward, which writes three [batch, time, neurons] tensors
    (spikes, membrane, dL/dcurrents): the same sizes, so the same allocator
    and page-fault costs."""
    import tensorflow as tf

    n = max(1, nbytes // (COPY_BYTES_PER_FLOAT * parts))
    rng = np.random.default_rng(seed)
    sources = tuple(tf.constant(rng.random(n, dtype=np.float32)) for _ in range(parts))
    return sources, tf.constant(1.0)


def copy_bytes(sources):
    """Bytes read and written by `copy_step` on these sources."""
    return sum(int(np.prod(s.shape)) for s in sources) * COPY_BYTES_PER_FLOAT


def copy_step():
    """tf.function (sources, one) -> [s * one for s in sources]: elementwise
    copies into new tensors on TensorFlow's intra-op threads, as the LIF
    kernels write theirs. (`one` is an argument so that Grappler cannot remove
    the multiply.)"""
    import tensorflow as tf

    return tf.function(lambda sources, one: [s * one for s in sources])
