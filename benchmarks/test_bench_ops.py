"""Op level: the LIF scan alone, forward and forward + backward, fused vs
reference, at each shape's [batch, time, hidden]. Each benchmark asserts the
fused result equals the reference (spikes exactly, gradients to rounding)."""

import pytest

from fused_lif._bench import assert_same_result
from fused_lif._bench_model import COMPARED, get_shape
from harness import op_level

# COMPARED lists the reference first: its result is cached for the fused op's check.


def _inputs(cache, shape):
    return cache.get(("op-inputs", shape.name), lambda: op_level.op_inputs(*shape.op_shape))


def _info(shape, implementation, kind, backward):
    batch, time, neurons = shape.op_shape
    return dict(kind=kind, shape=shape.name, implementation=implementation,
                op_shape=list(shape.op_shape), elements=batch * time * neurons,
                bytes=op_level.lif_bytes(batch, time, neurons, backward=backward))


@pytest.mark.parametrize("implementation", COMPARED)
def test_op_forward(run_benchmark, cache, shape_name, implementation):
    shape = get_shape(shape_name)
    currents, _ = _inputs(cache, shape)
    spikes = run_benchmark(op_level.lif_forward_fn(implementation), (currents,),
                           group=f"op forward: {shape}",
                           **_info(shape, implementation, "op-forward", backward=False))
    key = ("op-forward-reference", shape.name)
    if implementation == "reference":
        cache.get(key, lambda: spikes.numpy())
    reference = cache.get(key, lambda: op_level.lif_forward_fn("reference")(currents).numpy())
    assert_same_result(spikes.numpy(), reference)


@pytest.mark.parametrize("implementation", COMPARED)
def test_op_forward_backward(run_benchmark, benchmark, cache, shape_name, implementation):
    shape = get_shape(shape_name)
    currents, grad_spikes = _inputs(cache, shape)
    spikes, grad = run_benchmark(op_level.lif_forward_backward_fn(implementation),
                                 (currents, grad_spikes),
                                 group=f"op forward+backward: {shape}",
                                 **_info(shape, implementation, "op-forward-backward",
                                         backward=True))
    key = ("op-forward-backward-reference", shape.name)
    if implementation == "reference":
        cache.get(key, lambda: (spikes.numpy(), grad.numpy()))
    ref_spikes, ref_grad = cache.get(key, lambda: tuple(
        t.numpy() for t in op_level.lif_forward_backward_fn("reference")(currents, grad_spikes)))
    diff = assert_same_result(spikes.numpy(), ref_spikes, [grad.numpy()], [ref_grad])
    benchmark.extra_info["max_abs_diff"] = diff


@pytest.mark.parametrize("config", list(op_level.OPTION_CONFIGS))
def test_op_options(run_benchmark, benchmark, cache, shape_name, config):
    """The neuron options: atan + subtract + a per-neuron (trainable) tau, fused, vs the
    seed's neuron; the options' result is checked against the reference."""
    shape = get_shape(shape_name)
    currents, grad_spikes = _inputs(cache, shape)
    result = run_benchmark(op_level.lif_options_fn("fused", config), (currents, grad_spikes),
                           group=f"op options: {shape}", config=config,
                           **_info(shape, "fused", "op-options", backward=True))
    reference = op_level.lif_options_fn("reference", config)(currents, grad_spikes)
    diff = assert_same_result(result[0].numpy(), reference[0].numpy(),
                                 [g.numpy() for g in result[1:]],
                                 [g.numpy() for g in reference[1:]])
    benchmark.extra_info["max_abs_diff"] = diff
