"""fused-lif's side of each network that benchmarks/peers.py compares: its
models and training steps (the columns timed beside the peers), and the case
file (weights, inputs, fused-lif's spikes, loss and gradients before any
step) that the peers' worker checks itself against (peers_worker.load_case).

- "mlp": the seed's 2-layer SNN at `fused_lif._bench_model.SHAPES`: fused,
  and fused with LIFLayer(spike_input=True) (its inputs are binary);
- "conv": the spiking CNN at `harness.conv_level.CONV_SHAPE`, fused;
- "recurrent": the recurrent network at
  `harness.recurrent_level.RECURRENT_SHAPES`: fused recurrent (once the op
  is built), the same network feed-forward, and the reference's while_loop.
"""

import dataclasses

import numpy as np

from peers_torch import LAYERS
from peers_worker import pack

NETWORKS = ("mlp", "conv", "recurrent")
MAIN = "fused-lif"  # the column the peers' speedups are relative to
# fused-lif's other columns: (key, title).
SPARSE = "fused-lif sparse"
FEED_FORWARD = "fused-lif feed-forward"
REFERENCE = "fused-lif reference"
TITLES = {SPARSE: "fused-lif, spike_input=True", FEED_FORWARD: "fused-lif feed-forward",
          REFERENCE: "fused-lif reference (while_loop)"}


@dataclasses.dataclass
class Case:
    """fused-lif's side of one network at one shape."""

    shape: dict        # what the worker builds its networks from
    steps: dict        # {column: tf.function (x, y) -> loss}, MAIN first if it runs
    inputs: tuple      # (x, y)
    arrays: dict       # the case file's
    notes: list        # what this run could not do, and why


def shapes(network):
    """{name: shape} of a network."""
    if network == "mlp":
        from fused_lif._bench_model import SHAPES

        return dict(SHAPES)
    if network == "conv":
        from harness.conv_level import CONV_SHAPE

        return {CONV_SHAPE.name: CONV_SHAPE}
    if network == "recurrent":
        from harness.recurrent_level import RECURRENT_SHAPES

        return dict(RECURRENT_SHAPES)
    raise ValueError(f"unknown network {network!r}; known: {', '.join(NETWORKS)}")


def default_shapes(network):
    return ("seed", "medium", "large") if network == "mlp" else tuple(shapes(network))


def case_arrays(model, layers, x, y):
    """The case file's arrays from `model` before any step: the weights, x,
    the spikes of the model's `layers` (Keras layer names, in
    peers_torch.LAYERS' order), the seed's loss and its gradients."""
    import keras

    from fused_lif._bench_model import loss_and_gradients

    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in layers])
    spikes = probe(x)
    _, loss, grads = loss_and_gradients(model)(x, y)
    arrays = {"y": y.numpy(), "fused_loss": np.float32(loss),
              "params": np.int64(len(model.trainable_variables))}
    arrays["x"], arrays["x_shape"] = pack(x.numpy())
    for i, (variable, grad) in enumerate(zip(model.trainable_variables, grads)):
        arrays[f"param_{i}"], arrays[f"grad_{i}"] = variable.numpy(), grad.numpy()
    return arrays, spikes


def _with_spikes(arrays, network, spikes):
    for layer, value in zip(LAYERS[network], spikes):
        key = f"spikes_{layer}"
        arrays[key], arrays[key + "_shape"] = pack(np.asarray(value))
    return arrays


def mlp_case(shape):
    import fused_lif
    from fused_lif import _bench_model

    models = _bench_model.build_models(shape, ("fused", SPARSE), builders={
        SPARSE: lambda s: fused_lif.create_snn_model(
            s.inputs, s.hidden, s.outputs, s.time, implementation="fused", spike_input=True)})
    x, y = _bench_model.model_inputs(shape)
    arrays, spikes = case_arrays(models["fused"], ("hidden_layer", "output_layer"), x, y)
    return Case(shape=_fields(shape, ("name", "batch", "time", "inputs", "hidden", "outputs")),
                steps={MAIN: _bench_model.training_step(models["fused"]),
                       SPARSE: _bench_model.training_step(models[SPARSE])},
                inputs=(x, y), arrays=_with_spikes(arrays, "mlp", spikes), notes=[])


def conv_case(shape):
    from fused_lif._bench_model import training_step
    from harness import conv_level

    model = conv_level.build_conv_models(shape, ("fused",))["fused"]
    x, y = conv_level.conv_inputs(shape)
    arrays, spikes = case_arrays(model, ("lif1", "lif2", "output_layer"), x, y)
    return Case(shape=_fields(shape, ("name", "batch", "time", "image", "channels",
                                      "kernel_size", "outputs")),
                steps={MAIN: training_step(model)}, inputs=(x, y),
                arrays=_with_spikes(arrays, "conv", spikes), notes=[])


def recurrent_case(shape):
    from fused_lif._bench_model import training_step
    from harness import recurrent_level

    scan, why_not = recurrent_level.fused_recurrent_scan()
    names = {MAIN: "fused-recurrent", FEED_FORWARD: "fused", REFERENCE: "reference-recurrent"}
    if scan is None:
        del names[MAIN]
    models = recurrent_level.build_recurrent_models(shape, tuple(names.values()))
    x, y = recurrent_level.recurrent_inputs(shape)
    # The fused op's spikes are the reference's, bit for bit: either is the case.
    checked = models[names[MAIN if MAIN in names else REFERENCE]]
    arrays, spikes = case_arrays(checked, ("hidden_layer", "output_layer"), x, y)
    notes = [] if scan else [f"{MAIN} (the fused recurrent op) not run: {why_not}; the peers "
                             f"are checked against the reference"]
    return Case(shape=_fields(shape, ("name", "batch", "time", "inputs", "hidden", "outputs")),
                steps={column: training_step(models[name]) for column, name in names.items()},
                inputs=(x, y), arrays=_with_spikes(arrays, "recurrent", spikes), notes=notes)


CASES = {"mlp": mlp_case, "conv": conv_case, "recurrent": recurrent_case}


def _fields(shape, names):
    return {k: (list(v) if isinstance(v, tuple) else v)
            for k in names for v in [getattr(shape, k)]}


def save_case(path, case):
    np.savez(path, **case.arrays)
