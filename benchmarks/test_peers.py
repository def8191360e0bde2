"""Functional tests of benchmarks/peers.py and peers_worker.py (tiny shapes,
no timing checks).

    python -m pytest -q -p no:cacheprovider benchmarks/test_peers.py

The tests that run snnTorch and SpikingJelly need the peers venv (torch,
snntorch, spikingjelly; see peers.py): .peers/bin/python in the checkout, or
the python named by FUSED_LIF_PEERS_PYTHON. Without it they skip, saying so;
the rest (tables, agreement measures, argument checks) always run.
"""

import os
import warnings

import numpy as np
import pytest

import fused_lif
import peers
import peers_cases
import peers_worker
from fused_lif._bench_model import Shape
from harness.conv_level import ConvShape

PEERS_PYTHON = os.environ.get("FUSED_LIF_PEERS_PYTHON", peers.DEFAULT_PEERS_PYTHON)
needs_peers = pytest.mark.skipif(
    not os.path.isfile(PEERS_PYTHON),
    reason=f"no peers venv at {PEERS_PYTHON} (torch, snntorch, spikingjelly; see peers.py)")
needs_fused = pytest.mark.skipif(not fused_lif.is_available(),
                                 reason="the fused op library is not built")

# Big enough that every layer fires, small enough to take a few seconds.
TINY = Shape("tiny", batch=4, time=12, inputs=64, hidden=32, outputs=6)
TINY_CONV = ConvShape("tiny-conv", batch=3, time=16, image=(8, 8, 1), channels=(4, 8),
                      kernel_size=3, outputs=3)
TINY_RECURRENT = Shape("tiny-recurrent", batch=4, time=40, inputs=120, hidden=48, outputs=5)


def test_agreement_counts_equal_positions():
    fused = np.array([[0, 1, 1, 0], [1, 0, 0, 0]], np.float32)
    peer = np.array([[0, 1, 0, 0], [1, 0, 0, 1]], np.float32)
    assert peers_worker.agreement(peer, fused) == {
        "equal_fraction": 0.75, "fused_count": 3, "peer_count": 3}
    assert peers_worker.agreement(fused, fused)["equal_fraction"] == 1.0
    assert peers_worker.agreement(np.zeros((0, 3)), np.zeros((0, 3)))["equal_fraction"] == 1.0


def test_gradient_agreement_measures_difference_and_direction():
    fused = [np.array([[1.0, -2.0]]), np.array([4.0])]
    same = peers_worker.gradient_agreement([g.copy() for g in fused], fused)
    assert same == {"max_rel_diff": 0.0, "min_cosine": pytest.approx(1.0)}
    scaled = peers_worker.gradient_agreement([5 * g for g in fused], fused)
    assert scaled["max_rel_diff"] == pytest.approx(4.0)  # |5g - g| / max|g|
    assert scaled["min_cosine"] == pytest.approx(1.0)    # same direction
    flipped = peers_worker.gradient_agreement([fused[0], -fused[1]], fused)
    assert flipped["min_cosine"] == pytest.approx(-1.0)
    zero = [np.zeros(3)]
    assert peers_worker.gradient_agreement([np.ones(3)], zero)["max_rel_diff"] == float("inf")
    assert peers_worker.gradient_agreement(zero, zero) == {"max_rel_diff": 0.0, "min_cosine": 1.0}


def test_case_file_spikes_round_trip_through_the_bit_packing(tmp_path):
    rng = np.random.default_rng(0)
    spikes = {key: (rng.random(shape) < 0.3).astype(np.float32)
              for key, shape in zip(peers_worker.PACKED, [(2, 3, 5), (2, 3, 4), (2, 3, 1)])}
    arrays = {"w1": rng.normal(size=(5, 4)).astype(np.float32)}
    for key, value in spikes.items():
        arrays[key], arrays[key + "_shape"] = peers_worker.pack(value)
    np.savez(tmp_path / "case.npz", **arrays)
    data = peers_worker.load_case(tmp_path / "case.npz")
    assert sorted(data) == sorted(["w1", *spikes])
    np.testing.assert_array_equal(data["w1"], arrays["w1"])
    for key, value in spikes.items():
        assert data[key].dtype == np.float32
        np.testing.assert_array_equal(data[key], value)


def _fake_result():
    check = {"layers": {"hidden": {"equal_fraction": 1.0, "fused_count": 10, "peer_count": 10},
                        "output": {"equal_fraction": 0.5, "fused_count": 2, "peer_count": 3}},
             "loss": 1.25, "fused_loss": 1.5,
             "gradients": {"max_rel_diff": 1e-6, "min_cosine": 1.0}}
    return {"peers": ["snntorch", "spikingjelly"],
            "machine": {"peers": {"torch": "T", "snntorch": "S", "spikingjelly": "J"},
                        "tensorflow": "TF", "threads": 2, "cpus": 2, "other_load": 0.25},
            "rows": [{"shape": "seed", "step_ms": {"fused-lif": 2.0, "snntorch": 15.0,
                                                   "spikingjelly": 1234.0},
                      "speedup": {"snntorch": 7.5, "spikingjelly": 617.0},
                      "checks": {"snntorch": check, "spikingjelly": check}}]}


def test_format_markdown_has_times_speedups_and_checks():
    text = peers.format_markdown(_fake_result())
    lines = text.splitlines()
    assert lines[0] == ("| shape | fused-lif | snnTorch | SpikingJelly | vs snnTorch "
                        "| vs SpikingJelly |")
    assert lines[2] == "| seed | 2.0 ms | 15.0 ms | 1,234 ms | 7.50x | 617.00x |"
    assert ("| seed | snnTorch | hidden 100.0000%, output 50.0000% | hidden 10 / 10; "
            "output 2 / 3 | 1.500000 / 1.250000 | 1e-06, 1.000000 |") in text
    assert "other processes used 25% of the CPUs" in text
    assert "WARNING: the machine was loaded" in text  # 25% > peers.LOADED, 2 threads


def test_format_markdown_adds_the_sparse_step_where_measured():
    result = _fake_result()
    result["rows"][0]["step_ms"][peers.SPARSE] = 1.5
    lines = peers.format_markdown(result).splitlines()
    assert lines[0].endswith("| fused-lif, spike_input=True | its speedup over the fastest peer |")
    assert lines[2] == ("| seed | 2.0 ms | 15.0 ms | 1,234 ms | 7.50x | 617.00x | 1.5 ms "
                        "| 10.00x |")


def test_format_markdown_without_the_main_column_and_with_notes():
    """The recurrent network before the fused recurrent op is built: the
    feed-forward and reference columns, each against the fastest peer; no
    speedup columns; the note says why."""
    result = _fake_result()
    result["peers"] = ["snntorch-rleaky"]
    row = result["rows"][0]
    row["step_ms"] = {peers_cases.FEED_FORWARD: 5.0, peers_cases.REFERENCE: 20.0,
                      "snntorch-rleaky": 40.0}
    row["speedup"] = {"snntorch-rleaky": None}
    row["checks"] = {"snntorch-rleaky": row["checks"]["snntorch"]}
    result["notes"] = ["fused-lif not run: why"]
    lines = peers.format_markdown(result).splitlines()
    assert lines[0] == ("| shape | snnTorch RLeaky | fused-lif feed-forward | its speedup over "
                        "the fastest peer | fused-lif reference (while_loop) | its speedup over "
                        "the fastest peer |")
    assert lines[2] == "| seed | 40.0 ms | 5.0 ms | 8.00x | 20.0 ms | 2.00x |"
    assert "Note: fused-lif not run: why" in lines


@pytest.mark.parametrize("threads, other_load", [(1, 0.25), (2, 0.01), (2, None)])
def test_format_markdown_warns_only_of_contention(threads, other_load):
    result = _fake_result()
    result["machine"].update(threads=threads, other_load=other_load)
    assert "WARNING" not in peers.format_markdown(result)


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "huge"], "unknown"),
    (["--peers", "brian2"], "--peers"),
    (["--threads", "0"], "--threads"),
    (["--peers-python", "/nonexistent/python"], "does not exist"),
    (["--network", "conv", "--shapes", "seed"], "unknown ['seed'] for the conv network"),
    (["--network", "recurrent", "--peers", "snntorch"], "known for the recurrent network"),
    (["--network", "mlp", "--peers", "snntorch-rleaky"], "--peers"),
    (["--network", "transformer"], "--network"),
])
def test_main_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        peers.main(argv + (["--peers-python", PEERS_PYTHON] if "--peers-python" not in argv
                           else []))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_peer_process_rejects_a_python_that_is_not_executable(tmp_path):
    not_python = tmp_path / "python"
    not_python.write_text("")
    with pytest.raises(FileNotFoundError, match="not an executable"):
        peers.PeerProcess(str(not_python), threads=1)


def _run_quietly(shape, network):
    with warnings.catch_warnings():  # other tests may have started TensorFlow's pools
        warnings.filterwarnings("ignore", "TensorFlow's thread pools were already set up")
        return peers.run([shape], PEERS_PYTHON, list(peers.NETWORK_PEERS[network]), repeats=1,
                         warmup=1, threads=1, network=network)


def _check_agreement(row, exact):
    """Every layer's spikes equal (each layer fired), the loss equal; the
    gradients to float rounding for the `exact` peers (the seed's surrogate)."""
    for name, check in row["checks"].items():
        for layer, found in check["layers"].items():
            assert found["fused_count"] > 0, (name, layer)  # the comparison means something
            assert found["equal_fraction"] == 1.0, (name, layer, found)
        assert check["loss"] == pytest.approx(check["fused_loss"], rel=1e-5), name
    for name in exact:
        assert row["checks"][name]["gradients"]["max_rel_diff"] < 1e-4, name


@needs_peers
@needs_fused
def test_peers_compute_fused_lifs_network():
    (row,) = _run_quietly(TINY, "mlp")["rows"]
    assert set(row["step_ms"]) == {"fused-lif", peers.SPARSE, *peers.NETWORK_PEERS["mlp"]}
    assert all(t > 0 for t in row["step_ms"].values())
    assert all(list(c["layers"]) == ["hidden", "output"] for c in row["checks"].values())
    # Same surrogate and reset as the seed: gradients equal to float rounding.
    _check_agreement(row, exact=("snntorch", "spikingjelly-exact"))
    # SoftSign(alpha=10) is 5x the seed's fast sigmoid: not the same gradients. Nor
    # always the same direction: in the reset term v = u (1 - s), dv/du = 1 - s - u s'(u),
    # the 5x larger s' can flip the sign (min cosine -0.52 at this shape; 0.82-0.98 at the
    # benchmark shapes, README).
    softsign = row["checks"]["spikingjelly"]["gradients"]
    assert softsign["max_rel_diff"] > 1.0 and softsign["min_cosine"] < 0.99


@needs_peers
@needs_fused
def test_peers_compute_fused_lifs_spiking_cnn():
    """NCHW convolutions from Keras' NHWC kernels, the readout's rows
    permuted to torch's flattening order: the same spikes, loss and
    gradients (in Keras' layout) as fused-lif's."""
    (row,) = _run_quietly(TINY_CONV, "conv")["rows"]
    assert set(row["step_ms"]) == {"fused-lif", *peers.NETWORK_PEERS["conv"]}
    assert all(list(c["layers"]) == ["lif1", "lif2", "output"] for c in row["checks"].values())
    _check_agreement(row, exact=("snntorch", "spikingjelly-exact"))


@needs_peers
@needs_fused
def test_rleaky_computes_fused_lifs_recurrent_network():
    """RLeaky with a recurrent Linear without bias, weight R^T: fused-lif's
    I[t] = x[t] @ w + b + s[t-1] @ R, the same spikes and gradients
    (dL/dR included)."""
    result = _run_quietly(TINY_RECURRENT, "recurrent")
    (row,) = result["rows"]
    assert {peers_cases.FEED_FORWARD, peers_cases.REFERENCE, "snntorch-rleaky"} <= set(
        row["step_ms"])
    assert ("fused-lif" in row["step_ms"]) == (not result["notes"])
    _check_agreement(row, exact=("snntorch-rleaky",))


def test_peer_step_refuses_a_network_the_peer_lacks():
    with pytest.raises(ValueError, match="'spikingjelly' has no 'recurrent' network"):
        peers_worker.PeerStep("spikingjelly", "recurrent", {}, {})
    with pytest.raises(ValueError, match="unknown peer 'brian2'"):
        peers_worker.PeerStep("brian2", "mlp", {}, {})


def test_every_peer_is_described():
    assert set(peers_worker.SEMANTICS) == {"all", *peers_worker.PEERS}
    assert set(peers_worker.NETWORK_SEMANTICS) == set(peers_worker.NETWORK_PEERS) == set(
        peers_cases.NETWORKS)
    assert {p for ps in peers_worker.NETWORK_PEERS.values() for p in ps} == set(peers.PEERS)
    text = peers.format_semantics(["snntorch"])
    assert "- snnTorch:" in text and "SpikingJelly" not in text
    conv = peers.format_semantics(["snntorch"], "conv")
    assert "NCHW" in conv and "NCHW" not in text


@needs_peers
def test_worker_errors_come_back_as_exceptions(tmp_path):
    worker = peers.PeerProcess(PEERS_PYTHON, threads=1)
    try:
        assert worker.call("versions")["threads"] == 1
        with pytest.raises(RuntimeError, match="failed in 'setup'.*No such file"):
            worker.call("setup", shape={}, case=str(tmp_path / "missing.npz"), peers=["snntorch"])
        with pytest.raises(RuntimeError, match="failed in 'steps'"):
            worker.call("steps", peer="brian2", calls=1)  # never set up
        assert worker.call("versions")["threads"] == 1  # still serving
    finally:
        worker.close()
    assert worker.process.returncode == 0
