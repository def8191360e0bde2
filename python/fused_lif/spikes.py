"""`spike_matmul`: spikes @ weights for binary spikes, without multiplying by
the zeros (the compiled FusedLif>SpikeMatmul op, CPU kernels only; see
csrc/spike_matmul.h), and its registered gradient.

For binary X, X @ W is a sum of the rows of W that X's ones select, and the
weight gradient Xᵀ @ dOut a sum of dOut's rows. The forward finds each row's
ones once (a CSR: row_ptr, cols) and the backward reuses them; dX = dOut @ Wᵀ
stays a dense matmul. Sums run in index order (k ascending in the forward,
m ascending in the weight gradient), accumulated in float32 whatever the
dtype: the result equals tf.matmul's to float rounding, not bit for bit.

The layers' `spike_input=` policy (`input_currents`) lives here too: when a
layer's input currents x @ w take the sparse path.
"""

import logging

import tensorflow as tf

from ._library import in_xla_context, is_available, load_library
from ._params import DTYPES

__all__ = ["spike_matmul", "spike_density", "input_currents", "SPIKE_INPUTS",
           "SPIKE_BREAK_EVEN_DENSITY", "SPIKE_MIN_UNITS"]

SPIKE_INPUTS = (False, True, "auto")
# spike_input="auto" takes the sparse matmul at input densities up to this
# (the fraction of ones), the dense GEMM above it: below the measured
# break-even of spike_matmul against tf.matmul at [12800, 784] @ [784, 512]
# (about 40%; benchmarks/README.md, "binary-spike matmuls", gives the sweep
# and its command), with a margin for the density pass "auto" adds.
SPIKE_BREAK_EVEN_DENSITY = 0.3
# ... and only in layers of at least this many units: building the row lists
# costs the same whatever the width, the dense GEMM grows with it (the sweep
# over widths is in benchmarks/README.md).
SPIKE_MIN_UNITS = 64
_log = logging.getLogger("fused_lif")
_warned_xla = False


def _check(spikes, weights):
    spikes = tf.convert_to_tensor(spikes)
    weights = tf.convert_to_tensor(weights)
    for name, t in (("spikes", spikes), ("weights", weights)):
        if t.dtype not in DTYPES:
            raise TypeError(f"spike_matmul: {name} must be float32, float16 or bfloat16, got "
                            f"{t.dtype.name}")
    if spikes.dtype != weights.dtype:
        raise TypeError(f"spike_matmul: spikes and weights must have the same dtype, got "
                        f"{spikes.dtype.name} and {weights.dtype.name}")
    for name, t, axes in (("spikes", spikes, "[rows, inputs]"),
                          ("weights", weights, "[inputs, outputs]")):
        if t.shape.rank is not None and t.shape.rank != 2:
            raise ValueError(f"spike_matmul: {name} must have rank 2 {axes}, got shape {t.shape}")
    k_spikes, k_weights = spikes.shape[-1], weights.shape[0] if weights.shape.rank else None
    if k_spikes is not None and k_weights is not None and k_spikes != k_weights:
        raise ValueError(f"spike_matmul: spikes [rows, inputs] and weights [inputs, outputs] "
                         f"must agree on inputs, got spikes {spikes.shape} and weights "
                         f"{weights.shape}")
    return spikes, weights


def spike_matmul(spikes, weights):
    """spikes [rows, inputs] @ weights [inputs, outputs] for spikes that are all
    0 or 1: the sum of weights' rows that each row's ones select.

    Differentiable in both arguments (weights: from the saved row lists; spikes:
    grad @ weightsᵀ, dense). float32, float16 and bfloat16 (same dtype for both;
    sums in float32). A value other than 0 or 1 (NaN included) raises
    tf.errors.InvalidArgumentError naming it and its [row, col]. Runs on the CPU.
    """
    spikes, weights = _check(spikes, weights)
    output, _, _ = load_library().fused_lif_spike_matmul(spikes, weights)
    return output


def spike_density(spikes):
    """(density, binary): the fraction of nonzero values of `spikes` (a float32
    scalar tensor) and whether every value is 0 or 1 (a bool scalar), in one pass."""
    spikes = tf.convert_to_tensor(spikes)
    if spikes.dtype not in DTYPES:
        raise TypeError(f"spike_density: spikes must be float32, float16 or bfloat16, got "
                        f"{spikes.dtype.name}")
    result = load_library().fused_lif_spike_density(spikes)
    return result.density, result.binary


@tf.RegisterGradient("FusedLif>SpikeMatmul")
def _spike_matmul_grad(op, grad_output, grad_row_ptr, grad_cols):
    """dW from the forward's row lists (FusedLif>SpikeMatmulWeightGrad); dX =
    grad @ Wᵀ, dense, skipped when nothing needs it (eager: skip_input_indices;
    graphs prune it)."""
    del grad_row_ptr, grad_cols  # integer outputs: no gradient
    spikes, weights = op.inputs
    _, row_ptr, cols = op.outputs
    skip = getattr(op, "skip_input_indices", None) or ()
    grad_spikes = None if 0 in skip else tf.matmul(grad_output, weights, transpose_b=True)
    grad_weights = None if 1 in skip else load_library().fused_lif_spike_matmul_weight_grad(
        grad_output, row_ptr, cols, weights)
    return grad_spikes, grad_weights


# FusedLif>SpikeMatmulWeightGrad has no gradient registered (on purpose: a
# second-order gradient through spike_matmul raises LookupError rather than
# giving silent zeros). SpikeDensity's outputs, a fraction and a bool, are
# not differentiable:
tf.no_gradient("FusedLif>SpikeDensity")


def check_spike_input(spike_input):
    """Raises ValueError unless spike_input is False, True or "auto"."""
    if not any(spike_input is v or (isinstance(v, str) and spike_input == v)
               for v in SPIKE_INPUTS):
        raise ValueError(f"spike_input must be one of {SPIKE_INPUTS}, got {spike_input!r}")


def input_currents(x, w, spike_input):
    """x [rows, features] @ w [features, units], dense or sparse as a layer's
    `spike_input` says: False, the dense matmul (bit-identical to the seed);
    True, spike_matmul (x must be binary); "auto", spike_matmul for binary x
    at density <= SPIKE_BREAK_EVEN_DENSITY, decided in the graph, and the
    dense matmul otherwise, and always where no gain is possible (fewer than
    SPIKE_MIN_UNITS units, a dtype spike_matmul lacks, no op library, a GPU).
    Under XLA, the dense matmul (spike_matmul has no XLA kernel)."""
    global _warned_xla
    if spike_input is False:
        return tf.matmul(x, w)
    if in_xla_context():
        if not _warned_xla:
            _warned_xla = True
            _log.warning("LIFLayer(spike_input=...) under XLA: using the dense matmul "
                         "(spike_matmul has no XLA kernel).")
        return tf.matmul(x, w)
    if spike_input is True:
        return spike_matmul(x, w)
    if (w.shape[-1] < SPIKE_MIN_UNITS or x.dtype not in DTYPES
            or not is_available() or tf.config.list_logical_devices("GPU")):
        return tf.matmul(x, w)  # no gain possible here: not even measured
    density, binary = spike_density(x)
    sparse = tf.logical_and(binary, density <= SPIKE_BREAK_EVEN_DENSITY)
    return tf.cond(sparse, lambda: spike_matmul(x, w), lambda: tf.matmul(x, w))
