"""fused_lif.kernels: the framework-free bindings of the same kernels, on
numpy arrays, against the numpy oracle (CPU here; CUDA where a GPU is)."""

import itertools

import numpy as np
import pytest

from fused_lif import kernels

import oracle
from conftest import assert_close_scaled, make_currents

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def need(device):
    if device == "cuda" and not kernels.cuda_available():
        pytest.skip("no CUDA device (or a CPU-only build)")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 50, 7), (2, 300, 257), (5, 8, 1000)], ids=str)
@pytest.mark.parametrize("tau,threshold", [(20.0, 1.0), (3.0, 0.5), (1.0, 0.0)])
@pytest.mark.parametrize("reset", ["zero", "subtract", "none"])
def test_forward_matches_oracle(device, shape, tau, threshold, reset):
    need(device)
    x = make_currents(shape, seed=shape[1], mean=0.3)
    spikes, membrane = kernels.lif_forward(x, tau, threshold, device, reset=reset)
    e_spikes, e_membrane, _ = oracle.forward(x, tau, threshold, reset)
    assert spikes.dtype == np.float32 and spikes.shape == shape
    np.testing.assert_array_equal(spikes, e_spikes)
    np.testing.assert_array_equal(membrane, e_membrane)


@pytest.mark.parametrize("device", DEVICES)
def test_per_neuron_parameters(device):
    need(device)
    x = make_currents((4, 60, 33), seed=2)
    tau = np.linspace(1.5, 40, 33).astype(np.float32)
    threshold = np.linspace(0.2, 1.5, 33).astype(np.float32)
    spikes, _ = kernels.lif_forward(x, tau, threshold, device)
    np.testing.assert_array_equal(spikes, oracle.forward(x, tau, threshold)[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("surrogate,reset,detach",
                         list(itertools.product(["fast_sigmoid", "atan", "sigmoid", "triangle"],
                                                ["zero", "subtract", "none"], [False, True])))
def test_backward_matches_oracle(device, surrogate, reset, detach):
    need(device)
    shape = (3, 40, 17)
    x = make_currents(shape, seed=5, mean=0.3, scale=0.8)
    g = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    _, membrane = kernels.lif_forward(x, 6.0, 0.9, device, reset=reset)
    grad = kernels.lif_backward(g, membrane, 6.0, 0.9, 3.0, device, surrogate=surrogate,
                                reset=reset, detach_reset=detach)
    expected = oracle.backward(g, x, 6.0, 0.9, 3.0, surrogate, reset, detach)[0]
    assert np.any(expected != 0)
    assert_close_scaled(grad, expected, 1e-5)


def test_strided_input_is_copied_not_misread():
    x = make_currents((4, 30, 20), seed=3)
    view = x[:, ::2, 1::3]
    assert not view.flags.c_contiguous
    spikes, _ = kernels.lif_forward(view, 20.0, 1.0)
    np.testing.assert_array_equal(spikes, oracle.forward(np.ascontiguousarray(view))[0])


def test_empty_shapes():
    for shape in [(0, 3, 2), (2, 0, 2), (2, 3, 0)]:
        spikes, membrane = kernels.lif_forward(np.zeros(shape, np.float32), 20.0, 1.0)
        assert spikes.shape == membrane.shape == shape
        grad = kernels.lif_backward(spikes, membrane, 20.0, 1.0)
        assert grad.shape == shape


@pytest.mark.parametrize("call,error,match", [
    (lambda: kernels.lif_forward(np.zeros((2, 3, 4)), 20.0, 1.0), TypeError, "float32"),
    (lambda: kernels.lif_forward(np.zeros((2, 3), np.float32), 20.0, 1.0), ValueError, "rank 3"),
    (lambda: kernels.lif_forward([[[1.0]]], 20.0, 1.0), TypeError, "numpy array"),
    (lambda: kernels.lif_forward(np.zeros((1, 2, 3), np.float32), 0.0, 1.0), ValueError, "tau"),
    (lambda: kernels.lif_forward(np.zeros((1, 2, 3), np.float32), -2.0, 1.0), ValueError, "tau"),
    (lambda: kernels.lif_forward(np.zeros((1, 2, 3), np.float32), float("inf"), 1.0), ValueError, "tau"),
    (lambda: kernels.lif_forward(np.zeros((1, 2, 3), np.float32), 20.0, float("nan")), ValueError, "threshold"),
    (lambda: kernels.lif_forward(np.zeros((1, 2, 3), np.float32), np.ones(4, np.float32), 1.0), ValueError, "tau"),
    (lambda: kernels.lif_forward(np.zeros((1, 2, 3), np.float32), 20.0, 1.0, "tpu"), ValueError, "device"),
    (lambda: kernels.lif_forward(np.zeros((1, 2, 3), np.float32), 20.0, 1.0, reset="soft"), ValueError, "reset"),
    (lambda: kernels.lif_backward(np.zeros((1, 2, 3), np.float32), np.zeros((1, 2, 4), np.float32), 20.0, 1.0), ValueError, "same shape"),
    (lambda: kernels.lif_backward(np.zeros((1, 2, 3), np.float32), np.zeros((1, 2, 3), np.float32), 20.0, 1.0, -1.0), ValueError, "alpha"),
    (lambda: kernels.lif_backward(np.zeros((1, 2, 3), np.float32), np.zeros((1, 2, 3), np.float32), 20.0, 1.0, surrogate="relu"), ValueError, "surrogate"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_cuda_request_without_gpu_is_a_clear_error():
    if kernels.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises((ValueError, RuntimeError), match="CUDA|cuda"):
        kernels.lif_forward(np.zeros((1, 2, 3), np.float32), 20.0, 1.0, "cuda")


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
    tau = np.linspace(3, 25, 9).astype(np.float32)
    threshold = np.linspace(0.7, 1.2, 9).astype(np.float32)
    g = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    _, membrane = kernels.lif_forward(x, tau, threshold, device, reset=reset)
    got = kernels.lif_backward(g, membrane, tau, threshold, 4.0, device, reset=reset,
                               surrogate="atan", all_grads=True)
    e_x, e_decay, e_th, e_v0 = oracle.backward(g, x, tau, threshold, 4.0, "atan", reset)
    assert_close_scaled(got["grad_currents"], e_x, 1e-5, "currents")
    assert_close_scaled(got["grad_decay"], e_decay.sum(0), 1e-5, "decay")
    assert_close_scaled(got["grad_threshold"], e_th.sum(0), 1e-5, "threshold")
    assert_close_scaled(got["grad_initial_membrane"], e_v0, 1e-5, "initial_membrane")
    assert_close_scaled(got["grad_bias"], e_x.sum(), 1e-5, "bias")
    scalar = kernels.lif_backward(g, membrane, 7.0, 0.9, 4.0, device, reset=reset, all_grads=True)
    assert scalar["grad_decay"].shape == () and scalar["grad_threshold"].shape == ()
