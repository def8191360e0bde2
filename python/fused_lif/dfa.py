"""Direct feedback alignment (DFA) for LIF networks: `DFAModel`.

DFA (Nokland 2016, "Direct feedback alignment provides learning in deep
neural networks") trains each hidden layer from the output error sent to it
through a fixed random matrix, instead of from the gradient of the layers
above it. Spiking DFA (Frenkel et al. 2021, "Learning without feedback:
fixed random learning signals allow for feedforward training of deep neural
networks"; Neftci et al. 2017, event-driven random backpropagation) keeps
backprop through time inside each layer. Here, per training step:

    e = dL/d(output spikes)                          [batch, time, K]
    DFA hidden layer l:  its spikes receive e[:, t] @ feedback_l as their
        gradient; its own fused backward runs through time from there
        (surrogate, reset, trainable tau/threshold) to its weight gradients
    output layer:        its true gradient, from e through its own scan
    no gradient crosses a LIFLayer's input, so no dX GEMM is computed and the
        layers' backward passes are independent of each other

It is one backward pass: the gradients of [output spikes, spikes_1, ...,
spikes_L] w.r.t. the trainable weights with output gradients [e, e @ B_1,
..., e @ B_L], every LIFLayer's input under `tf.stop_gradient` during the
forward (plus the loss itself, for regularizers, which sees the output
spikes through a stop_gradient; e comes from a small tape on the loss).

    hidden = fused_lif.LIFLayer(128, output_units=10, use_dfa=True)(inputs)
    outputs = fused_lif.LIFLayer(10, is_output_layer=True)(hidden)
    model = fused_lif.DFAModel(inputs, outputs)   # fit/evaluate/save as usual
"""

import threading
import warnings

import keras
import tensorflow as tf

try:  # what Keras' own train_step reports as the loss under tf.distribute
    from keras.src.losses.loss import unscale_loss_for_distribution as _unscale
except ImportError:  # pragma: no cover - private Keras API moved
    def _unscale(loss):
        return loss

__all__ = ["DFAModel", "dfa_layers", "project_error"]

# While `DFAModel.train_step` runs its forward pass, `_dfa_step.spikes` is a
# list (per thread: tf.distribute runs replicas in threads); every LIFLayer
# then stops the gradient into its input (`layer_input`), and each DFA hidden
# layer appends (layer, spikes) to it (`record_spikes`).
_dfa_step = threading.local()
_warned_dfa = False


def layer_input(layer, x, training):
    """A LIFLayer's input as its call should use it: under a DFA step, with
    no gradient into the layer below."""
    global _warned_dfa
    if getattr(_dfa_step, "spikes", None) is not None:
        return tf.stop_gradient(x)
    if training is True and layer.is_dfa_hidden and not _warned_dfa:
        _warned_dfa = True
        warnings.warn(
            f"LIFLayer {layer.name!r} is configured for direct feedback alignment (use_dfa=True, "
            "output_units set) but is trained outside fused_lif.DFAModel: it trains by "
            "backprop. Build the model with fused_lif.DFAModel(inputs, outputs) to train it "
            "with DFA.", UserWarning, stacklevel=4)
    return x


def record_spikes(layer, spikes):
    """Under a DFA step, a DFA hidden layer's spikes: they receive the
    projected error."""
    recorded = getattr(_dfa_step, "spikes", None)
    if recorded is not None and layer.is_dfa_hidden:
        recorded.append((layer, spikes))


def add_feedback_weight(layer):
    """A DFA hidden layer's fixed random feedback B [output_units, units]
    (Nokland 2016, "Direct feedback alignment provides learning in deep
    neural networks": fixed random matrices). By default uniform in
    +-1/sqrt(output_units), the variance-preserving (LeCun) scale for the
    fan-in of the projection e @ B, so that the projected error does not grow
    with the number of outputs; with Adam the overall scale matters little."""
    initializer = layer.feedback_initializer or keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform")
    return layer.add_weight(shape=(layer.output_units, layer.units), initializer=initializer,
                            trainable=False, name="feedback", autocast=False)


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def dfa_layers(model):
    """(output layer, [DFA hidden layers]) of a DFA network; raises ValueError
    saying what is wrong when `model` cannot train by DFA."""
    from .layer import LIFLayer  # layer.py imports this module

    name = f"DFAModel {model.name!r}"
    if len(model.outputs) != 1:
        raise ValueError(
            f"{name} needs exactly one output, the output LIFLayer's spikes; got "
            f"{len(model.outputs)} outputs (a LIFLayer with return_state=True gives two)")
    output, _, tensor_index = model.outputs[0]._keras_history
    if not isinstance(output, LIFLayer) or tensor_index != 0:
        raise ValueError(
            f"{name}: the model's output must be the spikes of a LIFLayer (the output layer), "
            f"got the output of {type(output).__name__} {output.name!r}")
    if not output.is_output_layer:
        raise ValueError(
            f"{name}: the output layer {output.name!r} must be created with "
            "is_output_layer=True")
    hidden, refused = [], []
    for layer in _all_layers(model):
        if layer is output:
            continue
        if isinstance(layer, LIFLayer) and layer.is_dfa_hidden:
            if layer.output_units != output.units:
                raise ValueError(
                    f"{name}: DFA hidden layer {layer.name!r} has output_units="
                    f"{layer.output_units}, but the output layer {output.name!r} has "
                    f"{output.units} units; its feedback [output_units, units] must map the "
                    "output error onto it")
            if layer.return_state:
                raise ValueError(
                    f"{name}: DFA hidden layer {layer.name!r} has return_state=True; DFA "
                    "delivers the error to the spikes only (no gradient for the final "
                    "membrane): use return_state=False")
            hidden.append(layer)
        elif isinstance(layer, LIFLayer) and layer.is_output_layer:
            refused.append(
                f"LIFLayer {layer.name!r} has is_output_layer=True but is not the model's "
                f"output layer ({output.name!r})")
        elif layer.trainable_weights:
            what = ("neither the output layer nor a DFA hidden layer (use_dfa=True, "
                    f"output_units={output.units})" if isinstance(layer, LIFLayer) else
                    "not a LIFLayer")
            refused.append(
                f"{type(layer).__name__} {layer.name!r} has trainable weights but is {what}; "
                "DFA would never update it, since no gradient crosses a LIFLayer's input. Make "
                "it a DFA LIFLayer, freeze it (trainable=False), or train by backprop with "
                "keras.Model")
    if not hidden:
        raise ValueError(
            f"{name} has no DFA hidden layer: give the hidden LIFLayers use_dfa=True and "
            f"output_units={output.units} (the output layer's units)")
    if refused:
        raise ValueError(f"{name}: {refused[0]}")
    return output, hidden


def project_error(error, feedback):
    """e @ B for every (batch, time): [batch, time, K] @ [K, units] ->
    [batch, time, units], as one GEMM, in the dtype of `error`."""
    shape = tf.shape(error)
    feedback = tf.cast(feedback, error.dtype)
    projected = tf.matmul(tf.reshape(error, [-1, feedback.shape[0]]), feedback)
    return tf.reshape(projected, tf.concat([shape[:-1], tf.shape(feedback)[1:]], 0))


@keras.saving.register_keras_serializable(package="fused_lif")
class DFAModel(keras.Model):
    """A functional Keras model, `DFAModel(inputs, outputs)`, whose training
    step trains its LIFLayers by direct feedback alignment.

    The network: one output, the spikes of a LIFLayer(is_output_layer=True)
    with K units; one or more DFA hidden LIFLayers (use_dfa=True,
    output_units=K). Layers without weights (Dropout, Reshape, ...) may sit
    anywhere; they pass spikes forward and need no gradient. Any other
    trainable weight is refused at construction (DFA would never update it).

    `fit` trains by DFA; `evaluate`, `predict`, `save` and
    `keras.models.load_model` are those of any functional model: inference is
    unchanged. `dfa_gradients(x, y)` returns one step's gradients without
    applying them.
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs, outputs, name=name, **kwargs)
        self._dfa_output, self._dfa_hidden = dfa_layers(self)

    def _forward_backward(self, x, y, sample_weight, scale_loss):
        recorded = []
        _dfa_step.spikes = recorded
        try:
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                # The loss sees the output spikes through a stop_gradient: on
                # `tape` it carries only what does not pass through them
                # (regularizers); e comes from `loss_tape`.
                output_spikes = tf.stop_gradient(y_pred)
                with tf.GradientTape() as loss_tape:
                    loss_tape.watch(output_spikes)
                    loss = self._compute_loss(x=x, y=y, y_pred=output_spikes,
                                              sample_weight=sample_weight, training=True)
                    scaled = loss
                    if scale_loss and self.optimizer is not None:
                        scaled = self.optimizer.scale_loss(loss)  # mixed precision
        finally:
            _dfa_step.spikes = None
        error = loss_tape.gradient(scaled, output_spikes)  # e: [batch, time, K]
        if error is None:
            error = tf.zeros_like(y_pred)
        # One backward pass: the output layer from e, each DFA hidden layer
        # from e @ feedback; no path joins them (their inputs are stopped).
        targets, output_gradients = [scaled, y_pred], [tf.ones_like(scaled), error]
        for layer, spikes in recorded:
            targets.append(spikes)
            output_gradients.append(project_error(error, layer.feedback))
        gradients = tape.gradient(targets, self.trainable_weights,
                                  output_gradients=output_gradients)
        return y_pred, loss, gradients

    def dfa_gradients(self, x, y, sample_weight=None):
        """One step's (loss, gradients), gradients aligned with
        `self.trainable_weights`, without updating anything. Needs `compile`
        (for the loss)."""
        _, loss, gradients = self._forward_backward(x, y, sample_weight, scale_loss=False)
        return loss, gradients

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred, loss, gradients = self._forward_backward(x, y, sample_weight, scale_loss=True)
        batch = tf.shape(next(i for i in tf.nest.flatten(x) if i is not None))[0]
        self._loss_tracker.update_state(_unscale(loss), sample_weight=batch)
        if self.trainable_weights:
            self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        else:
            warnings.warn("The model does not have any trainable weights.")
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
