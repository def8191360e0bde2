"""fused_lif.kernels: the framework-free bindings of the same kernels, on
numpy arrays, against the numpy oracle: the CPU loops, the CUDA kernels'
per-thread code run on the CPU over every index of its launches
("emulated"), and the CUDA kernels where a GPU is."""

import itertools

import numpy as np
import pytest

from fused_lif import kernels

import oracle
from conftest import assert_close_scaled, make_currents

DEVICES = ["cpu", "emulated", pytest.param("cuda", marks=pytest.mark.gpu)]


def need(device):
    if device == "cuda" and not kernels.cuda_available():
        pytest.skip("no CUDA device (or a CPU-only build)")


def decay(tau):
    """decay = 1 - 1/tau, as the op is given it (the oracle's rounding)."""
    value = oracle.decay_of(tau)
    return float(value) if np.ndim(value) == 0 else value


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 50, 7), (2, 300, 257), (5, 8, 1000)], ids=str)
@pytest.mark.parametrize("tau,threshold", [(20.0, 1.0), (3.0, 0.5), (1.0, 0.0)])
@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
def test_forward_matches_oracle(device, shape, tau, threshold, reset):
    need(device)
    x = make_currents(shape, seed=shape[1], mean=0.3)
    spikes, pre_reset, final = kernels.lif_forward(x, decay(tau), threshold, reset=reset,
                                                   device=device)
    e_spikes, e_pre_reset, e_final = oracle.forward(x, tau, threshold, reset)
    assert spikes.dtype == np.float32 and spikes.shape == shape
    np.testing.assert_array_equal(spikes, e_spikes)
    np.testing.assert_array_equal(pre_reset, e_pre_reset)
    np.testing.assert_array_equal(final, e_final)


@pytest.mark.parametrize("device", DEVICES)
def test_per_neuron_parameters(device):
    need(device)
    x = make_currents((4, 60, 33), seed=2)
    tau = np.linspace(1.5, 40, 33).astype(np.float32)
    threshold = np.linspace(0.2, 1.5, 33).astype(np.float32)
    spikes = kernels.lif_forward(x, decay(tau), threshold, device=device).spikes
    np.testing.assert_array_equal(spikes, oracle.forward(x, tau, threshold)[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_bias_and_initial_membrane(device, reset):
    need(device)
    x = make_currents((3, 20, 5), seed=6)
    rng = np.random.default_rng(3)
    bias = rng.normal(0, 0.2, 5).astype(np.float32)
    initial = rng.normal(0, 0.5, (3, 5)).astype(np.float32)
    got = kernels.lif_forward(x, decay(7.0), 0.8, bias=bias, initial_membrane=initial,
                              reset=reset, device=device)
    expected = oracle.forward(x + bias, 7.0, 0.8, reset, initial)
    for name, got_value, want in zip(got._fields, got, expected):
        np.testing.assert_array_equal(got_value, want, err_msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("surrogate,reset,detach",
                         list(itertools.product(["fast_sigmoid", "atan", "sigmoid", "triangle"],
                                                ["zero", "subtract", "none"], [False, True])))
def test_backward_matches_oracle(device, surrogate, reset, detach):
    need(device)
    shape = (3, 40, 17)
    x = make_currents(shape, seed=5, mean=0.3, scale=0.8)
    g = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    pre_reset = kernels.lif_forward(x, decay(6.0), 0.9, reset=reset, device=device)[1]
    grad = kernels.lif_backward(g, pre_reset, decay(6.0), 0.9, alpha=3.0, surrogate=surrogate,
                                reset=reset, detach_reset=detach, device=device)
    expected = oracle.backward(g, x, 6.0, 0.9, 3.0, surrogate, reset, detach)[0]
    assert np.any(expected != 0)
    assert_close_scaled(grad.grad_currents, expected, 1e-5)


def test_strided_input_is_copied_not_misread():
    x = make_currents((4, 30, 20), seed=3)
    view = x[:, ::2, 1::3]
    assert not view.flags.c_contiguous
    spikes = kernels.lif_forward(view, decay(20.0), 1.0).spikes
    np.testing.assert_array_equal(spikes, oracle.forward(np.ascontiguousarray(view))[0])


def test_empty_shapes():
    for shape in [(0, 3, 2), (2, 0, 2), (2, 3, 0)]:
        spikes, pre_reset, final = kernels.lif_forward(np.zeros(shape, np.float32), 0.95, 1.0)
        assert spikes.shape == pre_reset.shape == shape
        assert final.shape == (shape[0], shape[2])
        grads = kernels.lif_backward(spikes, pre_reset, 0.95, 1.0)
        assert grads.grad_currents.shape == shape
        assert grads.grad_initial_membrane.shape == (shape[0], shape[2])


Z = np.zeros((1, 2, 3), np.float32)


@pytest.mark.parametrize("call,error,match", [
    (lambda: kernels.lif_forward(np.zeros((2, 3, 4)), 0.95, 1.0), TypeError, "float32"),
    (lambda: kernels.lif_forward(np.zeros((2, 3), np.float32), 0.95, 1.0), ValueError, "rank 3"),
    (lambda: kernels.lif_forward([[[1.0]]], 0.95, 1.0), TypeError, "numpy array"),
    (lambda: kernels.lif_forward(Z, 1.5, 1.0), ValueError, "tau must be finite and >= 1"),  # tau < 0
    (lambda: kernels.lif_forward(Z, float("-inf"), 1.0), ValueError, "tau must be finite and >= 1"),  # tau 0
    (lambda: kernels.lif_forward(Z, float("nan"), 1.0), ValueError, "tau must be finite and >= 1"),
    (lambda: kernels.lif_forward(Z, -0.5, 1.0), ValueError, "tau must be finite and >= 1"),  # tau 2/3
    (lambda: kernels.lif_forward(Z, np.array([0.9, 2.0, 0.9], np.float32), 1.0), ValueError, "at index 1"),
    (lambda: kernels.lif_forward(Z, 0.95, float("nan")), ValueError, "threshold is NaN"),
    (lambda: kernels.lif_forward(Z, np.ones(4, np.float32), 1.0), ValueError, r"decay .* \[neurons\] = \[3\]"),
    (lambda: kernels.lif_forward(Z, 0.95, np.ones(2, np.float32)), ValueError, "threshold"),
    (lambda: kernels.lif_forward(Z, 0.95, 1.0, bias=np.ones(2, np.float32)), ValueError, "bias"),
    (lambda: kernels.lif_forward(Z, 0.95, 1.0, initial_membrane=np.zeros((1, 4), np.float32)), ValueError, r"initial_membrane must have shape \[batch, neurons\] = \[1, 3\]"),
    (lambda: kernels.lif_forward(Z, 0.95, 1.0, device="tpu"), ValueError, "device"),
    (lambda: kernels.lif_forward(Z, 0.95, 1.0, reset="soft"), ValueError, "reset must be one of 'zero', 'subtract', 'none', got 'soft'"),
    (lambda: kernels.lif_backward(Z, np.zeros((1, 2, 4), np.float32), 0.95, 1.0), ValueError, "grad_spikes must have the shape of pre_reset_membrane"),
    (lambda: kernels.lif_backward(Z, Z, 0.95, 1.0, alpha=-1.0), ValueError, "alpha"),
    (lambda: kernels.lif_backward(Z, Z, 0.95, 1.0, surrogate="relu"), ValueError, "surrogate must be one of"),
    (lambda: kernels.lif_backward(Z, Z, 2.0, 1.0), ValueError, "tau must be finite and >= 1"),
    (lambda: kernels.lif_backward(Z, Z, 0.95, 1.0, grad_final_membrane=np.zeros(3, np.float32)), ValueError, "grad_final_membrane must have shape"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_cuda_request_without_gpu_is_a_clear_error():
    if kernels.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises((ValueError, RuntimeError), match="CUDA|cuda"):
        kernels.lif_forward(Z, 0.95, 1.0, device="cuda")


@pytest.mark.gpu
def test_cuda_benchmark_reports_bandwidth():
    need("cuda")
    t = kernels.cuda_benchmark(64, 100, 512, 5)
    assert t["forward_ms"] > 0 and t["backward_ms"] > 0 and t["copy_ms"] > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_all_gradients_match_oracle(device, reset):
    need(device)
    shape = (3, 30, 9)
    x = make_currents(shape, seed=8, mean=0.3, scale=0.8)
    rng = np.random.default_rng(2)
    tau = np.linspace(3, 25, 9).astype(np.float32)
    threshold = np.linspace(0.7, 1.2, 9).astype(np.float32)
    initial = rng.normal(0, 0.5, (3, 9)).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    g_final = rng.normal(size=(3, 9)).astype(np.float32)
    pre_reset = kernels.lif_forward(x, decay(tau), threshold, initial_membrane=initial,
                                    reset=reset, device=device).pre_reset_membrane
    got = kernels.lif_backward(g, pre_reset, decay(tau), threshold, grad_final_membrane=g_final,
                               initial_membrane=initial, bias=np.zeros(9, np.float32),
                               alpha=4.0, surrogate="atan", reset=reset, device=device)
    e_x, e_decay, e_th, e_v0 = oracle.backward(g, x, tau, threshold, 4.0, "atan", reset,
                                               initial=initial, grad_final=g_final)
    assert_close_scaled(got.grad_currents, e_x, 1e-5, "currents")
    assert_close_scaled(got.grad_decay, e_decay.sum(0), 1e-5, "decay")
    assert_close_scaled(got.grad_threshold, e_th.sum(0), 1e-5, "threshold")
    assert_close_scaled(got.grad_initial_membrane, e_v0, 1e-5, "initial_membrane")
    assert_close_scaled(got.grad_bias, e_x.sum((0, 1)), 1e-5, "bias")


@pytest.mark.parametrize("device", DEVICES)
def test_scalar_parameters_give_scalar_gradients(device):
    need(device)
    shape = (2, 10, 4)
    x = make_currents(shape, seed=9, mean=0.3)
    g = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    pre_reset = kernels.lif_forward(x, decay(7.0), 0.9, device=device).pre_reset_membrane
    got = kernels.lif_backward(g, pre_reset, decay(7.0), 0.9, device=device)
    assert type(got) is kernels.LifBackwardResult
    assert got.grad_decay.shape == got.grad_threshold.shape == got.grad_bias.shape == ()
    e_x, e_decay, e_th, _ = oracle.backward(g, x, 7.0, 0.9)
    assert_close_scaled(got.grad_decay, e_decay.sum(), 1e-5, "decay")
    assert_close_scaled(got.grad_threshold, e_th.sum(), 1e-5, "threshold")
    assert_close_scaled(got.grad_bias, e_x.sum(), 1e-5, "bias")
    # param_grads=False (tau and threshold constants): their gradients are 0, the rest unchanged.
    constant = kernels.lif_backward(g, pre_reset, decay(7.0), 0.9, param_grads=False, device=device)
    assert constant.grad_decay == 0 and constant.grad_threshold == 0
    np.testing.assert_array_equal(constant.grad_currents, got.grad_currents)
    np.testing.assert_array_equal(constant.grad_bias, got.grad_bias)


# Launch shapes of the CUDA path (256 threads per block, one thread per
# batch x neuron column; one per neuron for the per-neuron sums): one partial
# block, neurons < 32, exact multiples of the block, several blocks with a
# partial last one, neurons not a multiple of the block size.
# Also batch 1-2 with wide layers (several CPU tiles per batch row, the last
# one partial) and sums over everything that do not fill the tree's last row
# of lanes.
LAUNCH_SHAPES = [(1, 1, 1), (3, 7, 5), (1, 4, 31), (2, 4, 256), (4, 3, 257), (5, 13, 300),
                 (33, 5, 31), (3, 2, 1031), (1, 3, 2085), (2, 5, 1100)]


@pytest.mark.parametrize("shape", LAUNCH_SHAPES, ids=str)
@pytest.mark.parametrize("per_neuron", [False, True], ids=["scalar", "per_neuron"])
def test_emulated_cuda_threads_equal_cpu_kernels_bit_for_bit(shape, per_neuron):
    """The CUDA kernels' per-thread functions, run over every (block, thread)
    of the launches a GPU gets, give the CPU kernels' floats: forward (vs the
    oracle too), every gradient, and the per-neuron sums and the sum tree."""
    batch, _, neurons = shape
    x = make_currents(shape, seed=sum(shape), mean=0.3, scale=0.9)
    rng = np.random.default_rng(neurons)
    tau = rng.uniform(2, 30, neurons).astype(np.float32) if per_neuron else 6.0
    threshold = rng.uniform(0.6, 1.2, neurons).astype(np.float32) if per_neuron else 0.9
    bias = rng.normal(0, 0.1, neurons).astype(np.float32) if per_neuron else 0.0
    initial = rng.normal(0, 0.5, (batch, neurons)).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    g_final = rng.normal(size=(batch, neurons)).astype(np.float32)
    forward = {device: kernels.lif_forward(x, decay(tau), threshold, bias=bias,
                                           initial_membrane=initial, reset="subtract",
                                           device=device)
               for device in ("cpu", "emulated")}
    expected = oracle.forward(x + np.float32(bias), tau, threshold, "subtract", initial)
    for name, got, want in zip(forward["cpu"]._fields, forward["emulated"], expected):
        np.testing.assert_array_equal(got, want, err_msg=name)
    pre_reset = forward["cpu"].pre_reset_membrane
    for surrogate, param_grads in [("sigmoid", True), ("atan", False)]:
        grads = {device: kernels.lif_backward(
            g, pre_reset, decay(tau), threshold, grad_final_membrane=g_final,
            initial_membrane=initial, bias=bias, alpha=3.0, surrogate=surrogate,
            reset="subtract", param_grads=param_grads, device=device)
            for device in ("cpu", "emulated")}
        for name, got, want in zip(grads["cpu"]._fields, grads["emulated"], grads["cpu"]):
            assert np.shape(got) == np.shape(want), name
            np.testing.assert_array_equal(got, want, err_msg=f"{surrogate} {name}")
        e_x = oracle.backward(g, x + np.float32(bias), tau, threshold, 3.0, surrogate, "subtract",
                              initial=initial, grad_final=g_final)[0]
        assert_close_scaled(grads["emulated"].grad_currents, e_x, 1e-5, "currents")
        assert_close_scaled(grads["emulated"].grad_bias, e_x.sum((0, 1)) if per_neuron else e_x.sum(),
                            1e-5, "bias")


def test_lif_exp_within_two_ulp_and_exact_at_the_edges():
    """lif.h's own exp, which the sigmoid surrogate uses on every device: within
    2 ulp of e^x (float64, rounded) over the normal range, and NaN, inf and 0
    where e^x is."""
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-87.0, 88.7, 1_000_001, dtype=np.float32),
                        rng.uniform(-87.0, 88.7, 1_000_000).astype(np.float32),
                        np.float32([0.0, -0.0, 1.0, -1.0, 1e-8, -1e-8])])
    got = kernels.exp(x)
    want = np.exp(x.astype(np.float64)).astype(np.float32)
    ulp = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulp.max() <= 2, (ulp.max(), x[np.argmax(ulp)])
    edges = np.float32([np.nan, np.inf, -np.inf, 89.0, 100.0, -120.0, -200.0])
    np.testing.assert_array_equal(kernels.exp(edges),
                                  np.float32([np.nan, np.inf, 0.0, np.inf, np.inf, 0.0, 0.0]))


def test_sigmoid_surrogate_gradient_matches_the_oracle():
    """The sigmoid surrogate's gradient, with lif.h's own exp, stays within
    float rounding of the oracle's (numpy's exp), from e^x near 1 to under-
    and overflow."""
    x = make_currents((4, 50, 64), seed=12, mean=0.9, scale=0.6)
    g = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    pre_reset = kernels.lif_forward(x, decay(5.0), 1.0).pre_reset_membrane
    for alpha in (0.5, 4.0, 60.0):  # e^x from near 1 to under/overflow
        got = kernels.lif_backward(g, pre_reset, decay(5.0), 1.0, alpha=alpha,
                                   surrogate="sigmoid").grad_currents
        want = oracle.backward(g, x, 5.0, 1.0, alpha, "sigmoid")[0]
        assert np.all(np.isfinite(got))
        assert_close_scaled(got, want, 1e-5, f"alpha={alpha}")


@pytest.mark.parametrize("device", DEVICES)
def test_subnormals_flush_to_zero_as_tensorflow_cpu_kernels_do(device):
    """TensorFlow runs CPU kernels with FTZ/DAZ set and the CUDA kernels are
    built with --ftz=true: subnormal floats read and come out as zero on every
    device, so all give the same floats (numpy would keep them)."""
    need(device)
    x = np.zeros((1, 3, 2), np.float32)
    x[0, 0] = [1e-39, 1e-37]  # a subnormal current; a normal one that decays below 2^-126
    got = kernels.lif_forward(x, 0.001, 1.0, device=device)
    np.testing.assert_array_equal(got.pre_reset_membrane[0, :, 0], [0, 0, 0])
    np.testing.assert_array_equal(got.pre_reset_membrane[0, :, 1], [np.float32(1e-37), 0, 0])
    assert oracle.forward(x, 1 / 0.999, 1.0)[1][0, 1, 1] != 0  # numpy keeps the subnormal
