"""The `train` command's figures, drawn with matplotlib's object API (no
pyplot, no global backend): training curves and a spike raster."""

import math
import os

CURVES_FILE = "training_curves.png"
RASTER_FILE = "spike_raster.png"


def figure_class():
    """matplotlib's Figure, or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def plot_curves(Figure, results, path):
    """Loss, accuracy and epoch time per epoch, each implementation in `results`."""
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    styles = {"fused": "-", "reference": "--"}  # line style by implementation
    colors = {"backprop": ("C0", "C1"), "dfa": ("C2", "C3")}  # train, validation by rule
    for name, result in results.items():
        h = result["history"]
        epochs = range(1, len(h["loss"]) + 1)
        ls = styles.get(result.get("implementation"), "-")
        train_color, val_color = colors.get(result.get("training"), ("C0", "C1"))
        axes[0].plot(epochs, h["loss"], ls, color=train_color, label=f"{name} train")
        axes[1].plot(epochs, h["spike_categorical_accuracy"], ls, color=train_color,
                     label=f"{name} train")
        if "val_loss" in h:
            axes[0].plot(epochs, h["val_loss"], ls, color=val_color, label=f"{name} validation")
            axes[1].plot(epochs, h["val_spike_categorical_accuracy"], ls, color=val_color,
                         label=f"{name} validation")
        axes[2].plot(epochs, result["epoch_seconds"], ls, marker="o", label=name)
    axes[0].set(title="spike-count cross-entropy", xlabel="epoch")
    axes[1].set(title="spike-count accuracy", xlabel="epoch", ylim=(0, 1))
    axes[2].set(title="epoch time (epoch 1 includes tracing)", xlabel="epoch",
                ylabel="seconds", ylim=(0, None))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def plot_raster(Figure, model, implementation, images, labels, spikes_in, path):
    """Input, hidden and output spikes of a few digits (`spikes_in`: the
    model's inputs for `images`); predicted vs true class."""
    import keras
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    from .experiment import hidden_probe

    probe = keras.Model(model.inputs, [hidden_probe(model).output, model.output])
    hidden, output = (np.asarray(a) for a in probe.predict(spikes_in, verbose=0))
    hidden = hidden.reshape(*hidden.shape[:2], -1)  # [digits, time, neurons]
    time_steps = spikes_in.shape[1]
    k = len(images)
    fig = Figure(figsize=(12, 2.3 * k), layout="constrained")
    axes = fig.subplots(k, 4, squeeze=False, width_ratios=[1, 2, 2, 1.3])
    side = int(round(math.sqrt(images[0].size)))
    for i in range(k):
        counts = output[i].sum(axis=0)
        predicted = int(np.argmax(counts))
        if side * side == images[i].size:
            axes[i, 0].imshow(images[i].reshape(side, side), cmap="gray_r")
        axes[i, 0].set_title(f"label {labels[i]}, predicted {predicted}", fontsize=9)
        axes[i, 0].axis("off")
        for ax, spikes, title in ((axes[i, 1], spikes_in[i] > 0, "input"),
                                  (axes[i, 2], hidden[i], "hidden layer spikes"),
                                  (axes[i, 3], output[i], "output spikes")):
            t, n = np.nonzero(spikes)
            ax.scatter(t, n, s=4 if spikes.shape[1] > 20 else 16, marker="|", color="k",
                       linewidths=0.8)
            ax.set_xlim(-0.5, spikes.shape[0] - 0.5)
            ax.set_ylim(-0.5, spikes.shape[1] - 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(title, fontsize=9)
            ax.set_ylabel("neuron", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[i, 3].set_yticks(range(output.shape[2]))
        axes[i, 3].axhline(labels[i], color="C2", alpha=0.3, linewidth=6)
        if i == k - 1:
            for ax in axes[i, 1:]:
                ax.set_xlabel("time step", fontsize=8)
    fig.suptitle(f"{implementation} LIFLayer, T={time_steps} (green: true class)",
                 fontsize=10)
    fig.savefig(path, dpi=100)


def write_figures(Figure, models, results, raw_test, config):
    """Training curves of every implementation, and a spike raster of the first
    one's on config.raster_digits test digits (raw_test: (x, y) as loaded), in
    config.out. Returns the paths written."""
    from .data import preprocess
    from .experiment import encode_inputs

    path = os.path.join(config.out, CURVES_FILE)
    plot_curves(Figure, results, path)
    files = [path]
    x_test, y_test = raw_test
    k = min(config.raster_digits, len(x_test))
    if k:
        path = os.path.join(config.out, RASTER_FILE)
        shown = next(iter(models))
        images = preprocess(x_test[:k], y_test[:k])[0]
        plot_raster(Figure, models[shown], shown, images, y_test[:k],
                    encode_inputs(config, images, config.seed + 1), path)
        files.append(path)
    return files
