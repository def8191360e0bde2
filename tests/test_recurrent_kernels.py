"""fused_lif.kernels' recurrent LIF kernels on numpy arrays (no TensorFlow),
against the numpy oracle (recurrent_oracle.py): the CPU loops, the CUDA
kernels' per-block code run on the CPU over every block and thread of their
launches ("emulated"), and the CUDA kernels where a GPU is."""

import itertools

import numpy as np
import pytest

from fused_lif import kernels

import recurrent_oracle as oracle
from conftest import assert_close_scaled, make_currents

DEVICES = ["cpu", "emulated", pytest.param("cuda", marks=pytest.mark.gpu)]
SURROGATES = ["fast_sigmoid", "atan", "sigmoid", "triangle"]
RESETS = ["zero", "subtract", "none"]
GRADIENTS = ["currents", "bias", "decay", "threshold", "initial_membrane", "initial_spikes"]


def need(device):
    if device == "cuda" and not kernels.cuda_available():
        pytest.skip("no CUDA device (or a CPU-only build)")


def decay(tau):
    """decay = 1 - 1/tau, as the op is given it (the oracle's rounding)."""
    value = oracle.decay_of(tau)
    return float(value) if np.ndim(value) == 0 else value


def forward(p, device, reset="zero"):
    return kernels.recurrent_lif_forward(
        p["currents"], p["recurrent_kernel"], decay(p["tau"]), p["threshold"], bias=p["bias"],
        initial_membrane=p["initial_membrane"], initial_spikes=p["initial_spikes"], reset=reset,
        device=device)


def backward(p, pre_reset, g, g_final, device, **options):
    return kernels.recurrent_lif_backward(
        g, pre_reset, p["recurrent_kernel"], decay(p["tau"]), p["threshold"],
        grad_final_membrane=g_final, initial_membrane=p["initial_membrane"], bias=p["bias"],
        device=device, **options)


def oracle_forward(p, reset="zero"):
    return oracle.forward(p["currents"], p["recurrent_kernel"], p["tau"], p["threshold"], reset,
                          p["initial_membrane"], p["initial_spikes"], p["bias"])


def oracle_grads(p, spikes, pre_reset, g, g_final, alpha=10.0, surrogate="fast_sigmoid",
                 reset="zero", detach_reset=False):
    """The oracle's gradients, reduced to the kernels' shapes."""
    e = oracle.backward(g, spikes, pre_reset, p["recurrent_kernel"], p["tau"], p["threshold"],
                        alpha, surrogate, reset, detach_reset, p["initial_membrane"],
                        p["initial_spikes"], g_final)
    per_neuron = {name: np.ndim(p[key]) == 1
                  for name, key in (("bias", "bias"), ("decay", "tau"), ("threshold", "threshold"))}
    e["bias"] = e["bias"] if per_neuron["bias"] else e["bias"].sum()
    for name in ("decay", "threshold"):
        e[name] = e[name].sum(0) if per_neuron[name] else e[name].sum()
    return e


def grads_of(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape).astype(np.float32),
            rng.normal(size=(shape[0], shape[2])).astype(np.float32))


# Batch 1, one neuron, one step, rows of one or several warps and a partial
# one, several neurons per CUDA thread (past 512), and wide layers (past the
# CPU backward's 256-neuron tiles and 64-column register tiles).
SHAPES = [(1, 1, 1), (1, 40, 1), (2, 1, 9), (3, 50, 7), (9, 20, 33), (5, 12, 130),
          (2, 6, 600), (2, 8, 1100)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
def test_forward_exact_against_oracle(device, shape, reset, per_neuron):
    """On the 1/8 grid every sum is exact: spikes, u and the final membrane
    equal the oracle's bit for bit."""
    need(device)
    p = oracle.grid_inputs(shape, seed=sum(shape), per_neuron=per_neuron)
    got = forward(p, device, reset)
    want = oracle_forward(p, reset)
    for name, a, b in zip(got._fields, got, want):
        assert a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_grid_inputs_are_neither_silent_nor_saturated():
    """Guards the exact tests against a degenerate regime, and checks that the
    recurrence matters: the spikes without it differ."""
    for shape in [(9, 20, 33), (2, 8, 1100)]:
        p = oracle.grid_inputs(shape, seed=sum(shape))
        spikes = forward(p, "cpu").spikes
        assert 0.1 < spikes.mean() < 0.7, (shape, spikes.mean())
        silent = dict(p, recurrent_kernel=np.zeros_like(p["recurrent_kernel"]))
        assert np.any(forward(silent, "cpu").spikes != spikes)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("surrogate,reset,detach",
                         list(itertools.product(SURROGATES, RESETS, [False, True])))
def test_backward_against_oracle(device, surrogate, reset, detach):
    need(device)
    shape = (3, 30, 17)
    p = oracle.grid_inputs(shape, seed=7, per_neuron=True)
    spikes, pre_reset, _ = forward(p, device, reset)
    g, g_final = grads_of(shape, 1)
    options = dict(alpha=2.0, surrogate=surrogate, reset=reset, detach_reset=detach)
    got = backward(p, pre_reset, g, g_final, device, **options)
    want = oracle_grads(p, spikes, pre_reset, g, g_final, **options)
    assert np.any(want["initial_spikes"] != 0)
    for name in GRADIENTS:
        assert_close_scaled(getattr(got, f"grad_{name}"), want[name], 2e-5, name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_backward_shapes_against_oracle(device, shape):
    """Every gradient over the shapes of the forward test, scalar parameters
    (the sum tree) and per-neuron ones (the per-neuron sums)."""
    need(device)
    for per_neuron in (False, True):
        p = oracle.grid_inputs(shape, seed=3, per_neuron=per_neuron)
        spikes, pre_reset, _ = forward(p, device, "subtract")
        g, g_final = grads_of(shape, 2)
        got = backward(p, pre_reset, g, g_final, device, alpha=3.0, surrogate="atan",
                       reset="subtract")
        want = oracle_grads(p, spikes, pre_reset, g, g_final, 3.0, "atan", "subtract")
        for name in GRADIENTS:
            assert np.shape(getattr(got, f"grad_{name}")) == np.shape(want[name]), name
            assert_close_scaled(getattr(got, f"grad_{name}"), want[name], 2e-5,
                                f"{name} per_neuron={per_neuron}")


@pytest.mark.parametrize("device", DEVICES)
def test_param_grads_false_gives_zero_parameter_gradients(device):
    need(device)
    shape = (4, 10, 20)
    p = oracle.grid_inputs(shape, seed=4, per_neuron=True)
    pre_reset = forward(p, device).pre_reset_membrane
    g, g_final = grads_of(shape, 5)
    full = backward(p, pre_reset, g, g_final, device)
    constant = backward(p, pre_reset, g, g_final, device, param_grads=False)
    assert not np.any(constant.grad_decay) and not np.any(constant.grad_threshold)
    for name in ("grad_currents", "grad_bias", "grad_initial_membrane", "grad_initial_spikes"):
        np.testing.assert_array_equal(getattr(constant, name), getattr(full, name), err_msg=name)


# Launch shapes of the CUDA path (one block per batch row, threads: the
# neurons rounded up to a warp, at most 512): one thread, a partial warp,
# exactly one block's worth, threads that own two or three neurons, and
# more rows than the CPU backward's 4-row blocks (a partial last block).
LAUNCH_SHAPES = [(1, 3, 1), (3, 7, 5), (1, 4, 31), (2, 4, 32), (6, 5, 512), (5, 6, 513),
                 (2, 3, 1100), (7, 9, 64)]


@pytest.mark.parametrize("shape", LAUNCH_SHAPES, ids=str)
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
def test_emulated_cuda_threads_equal_cpu_kernels_bit_for_bit(shape, per_neuron):
    """Off the grid (sums round): the CUDA blocks' per-thread code, run over
    every block and thread, gives the CPU kernels' floats, forward and every
    gradient: the summation orders are the same."""
    batch, _, neurons = shape
    rng = np.random.default_rng(sum(shape))
    p = {
        "currents": make_currents(shape, seed=sum(shape), mean=0.3, scale=0.9),
        "recurrent_kernel": rng.normal(0, 0.6 / np.sqrt(neurons), (neurons, neurons)).astype(np.float32),
        "tau": rng.uniform(2, 30, neurons).astype(np.float32) if per_neuron else 6.0,
        "threshold": rng.uniform(0.6, 1.2, neurons).astype(np.float32) if per_neuron else 0.9,
        "bias": rng.normal(0, 0.1, neurons).astype(np.float32) if per_neuron else 0.05,
        "initial_membrane": rng.normal(0, 0.5, (batch, neurons)).astype(np.float32),
        "initial_spikes": (rng.random((batch, neurons)) < 0.3).astype(np.float32),
    }
    g, g_final = grads_of(shape, 9)
    for reset in RESETS:
        fwd = {device: forward(p, device, reset) for device in ("cpu", "emulated")}
        for name, a, b in zip(fwd["cpu"]._fields, fwd["emulated"], fwd["cpu"]):
            np.testing.assert_array_equal(a, b, err_msg=f"{reset} {name}")
        for surrogate, param_grads in [("sigmoid", True), ("triangle", False)]:
            options = dict(alpha=3.0, surrogate=surrogate, reset=reset, param_grads=param_grads)
            grads = {device: backward(p, fwd["cpu"].pre_reset_membrane, g, g_final, device,
                                      **options) for device in ("cpu", "emulated")}
            for name, a, b in zip(grads["cpu"]._fields, grads["emulated"], grads["cpu"]):
                assert np.shape(a) == np.shape(b), name
                np.testing.assert_array_equal(a, b, err_msg=f"{reset} {surrogate} {name}")


@pytest.mark.parametrize("device", DEVICES)
def test_chunks_continue_exactly(device):
    """The state (final membrane, last spikes) continues a sequence: two
    chunks give the spikes of one whole run."""
    need(device)
    shape = (3, 40, 25)
    p = oracle.grid_inputs(shape, seed=11)
    whole = forward(p, device, "subtract")
    first = forward(dict(p, currents=p["currents"][:, :17]), device, "subtract")
    second = forward(dict(p, currents=p["currents"][:, 17:],
                          initial_membrane=first.final_membrane,
                          initial_spikes=first.spikes[:, -1]), device, "subtract")
    np.testing.assert_array_equal(np.concatenate([first.spikes, second.spikes], 1), whole.spikes)
    np.testing.assert_array_equal(second.final_membrane, whole.final_membrane)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_shapes(device):
    need(device)
    for shape in [(0, 3, 2), (2, 0, 2), (2, 3, 0)]:
        B, T, N = shape
        R = np.ones((N, N), np.float32)
        initial = np.full((B, N), 0.5, np.float32)
        spikes0 = np.ones((B, N), np.float32)
        got = kernels.recurrent_lif_forward(np.zeros(shape, np.float32), R, 0.5, 1.0,
                                            initial_membrane=initial, initial_spikes=spikes0,
                                            device=device)
        assert got.spikes.shape == got.pre_reset_membrane.shape == shape
        np.testing.assert_array_equal(got.final_membrane, initial)  # no step: v[-1]
        g_final = np.full((B, N), 2.0, np.float32)
        grads = kernels.recurrent_lif_backward(got.spikes, got.pre_reset_membrane, R, 0.5, 1.0,
                                               grad_final_membrane=g_final, device=device)
        assert grads.grad_currents.shape == shape
        np.testing.assert_array_equal(grads.grad_initial_membrane, g_final)
        np.testing.assert_array_equal(grads.grad_initial_spikes, np.zeros((B, N)))
        assert grads.grad_decay == 0 and grads.grad_threshold == 0 and grads.grad_bias == 0


def test_strided_inputs_are_copied_not_misread():
    p = oracle.grid_inputs((4, 30, 20), seed=3)
    view = dict(p, currents=p["currents"][:, ::2, :],
                recurrent_kernel=np.asfortranarray(p["recurrent_kernel"]))
    got = forward(view, "cpu")
    want = oracle_forward(dict(view, currents=np.ascontiguousarray(view["currents"])))
    np.testing.assert_array_equal(got.spikes, want[0])


Z = np.zeros((2, 3, 4), np.float32)
R4 = np.zeros((4, 4), np.float32)
S = np.zeros((2, 4), np.float32)


def with_value(array, index, value):
    out = array.copy()
    out[index] = value
    return out


@pytest.mark.parametrize("call,error,match", [
    (lambda: kernels.recurrent_lif_forward(Z, np.zeros((4, 5), np.float32), 0.5, 1.0), ValueError,
     r"recurrent_kernel must have shape \[neurons, neurons\] = \[4, 4\], got shape \(4, 5\)"),
    (lambda: kernels.recurrent_lif_forward(Z, np.zeros(4, np.float32), 0.5, 1.0), ValueError,
     r"recurrent_kernel must have shape \[neurons, neurons\] = \[4, 4\]"),
    (lambda: kernels.recurrent_lif_forward(Z, R4.astype(np.float64), 0.5, 1.0), TypeError,
     "recurrent_kernel must be float32"),
    (lambda: kernels.recurrent_lif_forward(Z, R4, 0.5, 1.0, initial_spikes=with_value(S, (1, 2), 0.5)),
     ValueError, r"initial_spikes must be binary \(every value 0 or 1\), got 0.5 at \[1, 2\]"),
    (lambda: kernels.recurrent_lif_forward(Z, R4, 0.5, 1.0, initial_spikes=with_value(S, (0, 3), np.nan)),
     ValueError, r"initial_spikes must be binary \(every value 0 or 1\), got nan at \[0, 3\]"),
    (lambda: kernels.recurrent_lif_forward(Z, R4, 0.5, 1.0, initial_spikes=np.zeros((2, 5), np.float32)),
     ValueError, r"initial_spikes must have shape \[batch, neurons\] = \[2, 4\], got shape \(2, 5\)"),
    (lambda: kernels.recurrent_lif_forward(Z, R4, 2.0, 1.0), ValueError, "tau must be finite and >= 1"),
    (lambda: kernels.recurrent_lif_forward(Z, R4, 0.5, np.nan), ValueError, "threshold is NaN"),
    (lambda: kernels.recurrent_lif_forward(Z[0], R4, 0.5, 1.0), ValueError, "rank 3"),
    (lambda: kernels.recurrent_lif_forward(Z, R4, 0.5, 1.0, reset="soft"), ValueError, "reset must be one of"),
    (lambda: kernels.recurrent_lif_forward(Z, R4, 0.5, 1.0, device="tpu"), ValueError, "device"),
    (lambda: kernels.recurrent_lif_backward(Z, Z, np.zeros((3, 3), np.float32), 0.5, 1.0), ValueError,
     r"recurrent_kernel must have shape \[neurons, neurons\] = \[4, 4\], got shape \(3, 3\)"),
    (lambda: kernels.recurrent_lif_backward(Z[:, :2], Z, R4, 0.5, 1.0), ValueError,
     "grad_spikes must have the shape of pre_reset_membrane"),
    (lambda: kernels.recurrent_lif_backward(Z, Z, R4, 0.5, 1.0, alpha=-1.0), ValueError, "alpha"),
    (lambda: kernels.recurrent_lif_backward(Z, Z, R4, 0.5, 1.0, surrogate="relu"), ValueError,
     "surrogate must be one of"),
    (lambda: kernels.recurrent_lif_backward(Z, Z, R4, 0.5, 1.0, grad_final_membrane=S[:1]),
     ValueError, r"grad_final_membrane must have shape \[batch, neurons\] = \[2, 4\]"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_cuda_request_without_gpu_is_a_clear_error():
    if kernels.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises((ValueError, RuntimeError), match="CUDA|cuda"):
        kernels.recurrent_lif_forward(Z, R4, 0.5, 1.0, device="cuda")
