"""Training across processes: the MultiWorkerMirroredStrategy example of
docs/usage.md, run as two workers on 127.0.0.1, against one process training
on the same global batches."""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

USAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "usage.md")
TIMEOUT_S = 300


def readme_example(marker):
    """The python block after `<!-- marker -->` in docs/usage.md."""
    text = open(USAGE).read()
    match = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"no python block after <!-- {marker} --> in docs/usage.md"
    return match.group(1)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(script, count, out_dir):
    """Starts `count` workers of a cluster on loopback ports; each saves its
    final weights. Kills them all if one fails or the run is too long."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(count)]}
    procs = []
    try:
        for index in range(count):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            path = os.path.join(out_dir, f"weights_{count}_{index}.npz")
            procs.append(subprocess.Popen(
                [sys.executable, "-c", script, path], env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return [dict(np.load(os.path.join(out_dir, f"weights_{count}_{i}.npz"))) for i in range(count)]


@pytest.mark.slow
def test_readme_multi_worker_example_matches_one_process(tmp_path):
    script = readme_example("multi-worker-example") + (
        "\nimport sys\n"
        "workers = strategy.cluster_resolver.cluster_spec().num_tasks('worker')\n"
        "assert strategy.num_replicas_in_sync == workers, strategy.num_replicas_in_sync\n"
        "assert np.isfinite(float(loss))\n"
        "keras.utils.set_random_seed(0)\n"
        "untrained = fused_lif.create_snn_model(784, 128, 10, 20)\n"
        "np.savez(sys.argv[1], *[w.numpy() for w in model.weights],\n"
        "         *[w.numpy() for w in untrained.weights])\n")
    two = run_workers(script, 2, str(tmp_path))
    one = run_workers(script, 1, str(tmp_path))[0]
    trained = [f"arr_{i}" for i in range(4)]  # w, b of both layers; then the untrained copy
    for worker in two:
        assert sorted(worker) == sorted(one) and len(one) == 8
        for key in trained:
            np.testing.assert_allclose(worker[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
    for key in trained:
        np.testing.assert_array_equal(two[0][key], two[1][key])  # replicas stay in sync
    assert not np.array_equal(one["arr_0"], one["arr_4"]), "the example did not train"
