"""What `fused-lif train` prints (cli.py parses and writes files; experiment.py
computes): the data line, each run's heading, and the results table."""

__all__ = ["data_line", "rate_words", "train_all", "report"]


def data_line(data, args, experiment):
    coding = ("rows as time steps, T=28" if args.model == "recurrent" else
              f"rate coding T={args.time_steps}, max_rate={args.max_rate}")
    return (f"MNIST from {data.source}: {data.n_train} training / {data.n_validation} "
            f"validation / {data.n_test} test digits; {coding}; "
            + experiment.MODELS[args.model].format(hidden=args.hidden_units))


def rate_words(args, training):
    """Adam's rate for a run and where it comes from, for the run's heading."""
    rate = args.learning_rates[training]
    if args.learning_rate is not None:
        return f"Adam {rate:g} (--learning-rate)"
    rule = "DFA" if training == "dfa" else training
    return f"Adam {rate:g} ({rule}'s default; --learning-rate sets it)"


def train_all(experiment, runs, data, args):
    """Trains each run from the same initial weights; prints a heading before
    each. Returns ({name: model}, {name: result})."""
    weights = {model: experiment.initial_weights(args, data.input_dim, model)
               for model in dict.fromkeys(model for _, _, model in runs.values())}
    print(data_line(data, args, experiment), flush=True)
    models, results = {}, {}
    for name, (implementation, training, model) in runs.items():
        epochs = f"{args.epochs} epoch" + ("s" if args.epochs > 1 else "")
        rule = "" if training == "backprop" else ", trained by DFA"
        what = {"mlp": "LIFLayer", "conv": "LIF", "recurrent": "recurrent LIFLayer",
                experiment.FEEDFORWARD: "LIFLayer, no recurrence"}[model]
        print(f"\n== {implementation} {what}{rule}: {epochs}, batch {args.batch_size}, "
              f"{rate_words(args, training)}", flush=True)
        models[name], results[name] = experiment.train_one(implementation, training,
                                                           weights[model], data, args, model)
    return models, results


def _cell(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


def report(results, compared, epochs):
    names = list(results)
    rows = [
        (f"validation accuracy (epoch {epochs})", "validation_accuracy", ".3f"),
        ("test accuracy", "test_accuracy", ".3f"),
        ("Adam learning rate", "learning_rate", "g"),
        ("first epoch, s (incl. tracing)", "first_epoch_seconds", ".2f"),
    ]
    later = "epoch 1 after its first step"
    if epochs > 1:
        later = "epoch 2" if epochs == 2 else f"epochs 2-{epochs}"
        rows.append((f"epoch time, s (median, {later})", "median_epoch_seconds_after_first",
                     ".2f"))
    rows.append((f"training step, ms (median, {later})", "median_step_ms", ".1f"))
    rows.append(("input spike density (all training digits)", "input_spike_density", ".3f"))
    digits = max(results[n].get("hidden_spike_density_digits") or 0 for n in names)
    rows.append((f"hidden spike density (final weights, {digits} training digits)",
                 "hidden_spike_density", ".3f"))
    width = max(len(r[0]) for r in rows)
    column = max(12, *(len(n) + 2 for n in names))
    lines = ["".join([" " * width] + [f"{n:>{column}}" for n in names])]
    for label, key, spec in rows:
        lines.append(label.ljust(width) + "".join(f"{_cell(results[n][key], spec):>{column}}"
                                                  for n in names))
    for pair, speedup in compared.items():
        slow, fast = pair.split(" (")[0].split(" / ")
        for kind, what in (("training_step", "median step"),
                           ("epoch", "epoch time, validation included")):
            if speedup[kind] is not None:
                lines.append(f"speedup, {kind.replace('_', ' ')}".ljust(width)
                             + f"{speedup[kind]:>{column - 1}.2f}x   ({pair.split(' (')[1][:-1]}: "
                             f"{slow} / {fast} {what})")
    return "\n".join(lines)
