"""pytest-benchmark configuration for fused-lif's benchmark suite.

Not collected by the normal test run (`pytest` only looks in tests/). Run:

    pytest benchmarks --benchmark-json=bench.json      # seed, medium, long
    pytest benchmarks --bench-shapes=all ...           # + large (~2x longer)
    python benchmarks/ratios.py bench.json             # the targets' ratio table

Options:
  --bench-shapes   comma-separated names from fused_lif._bench_model.SHAPES,
                   or "all" (default: seed,medium,long)
  --bench-rounds   timed rounds per benchmark (default 5; fast ones repeat
                   until ~1 s of timed calls, at most 200), after
  --bench-warmup   warm-up rounds (default 2)
  --bench-threads  TensorFlow intra-op threads (default: TensorFlow's, = cores)
"""

import hashlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from fused_lif._bench import warm_up  # noqa: E402
from fused_lif._bench_model import SHAPES, get_shape  # noqa: E402
from harness import machine  # noqa: E402  (benchmarks/harness/: this folder is on sys.path)

DEFAULT_SHAPES = "seed,medium,long"
MIN_TIMED_SECONDS = 1.0  # fast benchmarks repeat up to this much timed work
MAX_ROUNDS = 200


def pytest_addoption(parser):
    group = parser.getgroup("fused-lif benchmarks")
    group.addoption("--bench-shapes", default=DEFAULT_SHAPES,
                    help="shapes to run: comma-separated names or 'all' "
                         f"(default {DEFAULT_SHAPES})")
    group.addoption("--bench-rounds", type=int, default=5, help="timed rounds (default 5)")
    group.addoption("--bench-warmup", type=int, default=2, help="warm-up rounds (default 2)")
    group.addoption("--bench-threads", type=int, default=0,
                    help="TensorFlow intra-op threads (default: TensorFlow's choice)")


def pytest_configure(config):
    # Thread pools must be set before TensorFlow runs anything.
    threads = config.getoption("--bench-threads", default=0)
    if threads:
        machine.set_threads(intra_op=threads)
    config._fused_lif_idle_at_start = machine.cpu_idle_fraction()
    config._fused_lif_other_load = machine.OtherLoad()


def pytest_benchmark_update_machine_info(config, machine_info):
    import tensorflow as tf

    from fused_lif import ops

    machine_info["tensorflow"] = tf.__version__
    path = ops.library_path()
    machine_info["fused_lif_op_library"] = path
    try:
        with open(path, "rb") as f:
            machine_info["fused_lif_op_library_sha256"] = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        pass
    # Other processes on the machine skew timings: record how idle it was.
    machine_info["cpu_idle_fraction_at_start"] = getattr(config, "_fused_lif_idle_at_start", None)
    machine_info["cpu_idle_fraction_at_end"] = machine.cpu_idle_fraction()
    other = getattr(config, "_fused_lif_other_load", None)
    machine_info["other_processes_cpu_fraction"] = other.fraction() if other else None


def selected_shapes(config):
    value = config.getoption("--bench-shapes")
    names = list(SHAPES) if value == "all" else [
        s.strip() for s in value.split(",") if s.strip()]
    for name in names:
        get_shape(name)  # unknown names fail loudly
    return names


def pytest_generate_tests(metafunc):
    if "shape_name" in metafunc.fixturenames:
        metafunc.parametrize("shape_name", selected_shapes(metafunc.config))


@pytest.fixture(scope="session")
def bench_settings(request):
    """Rounds, warm-up and threads for every benchmark."""
    import tensorflow as tf

    return {
        "rounds": request.config.getoption("--bench-rounds"),
        "warmup": request.config.getoption("--bench-warmup"),
        "threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
    }


@pytest.fixture
def run_benchmark(benchmark, bench_settings):
    """run_benchmark(fn, args, group=..., **extra_info) -> fn's result.

    Times fn(*args) with pytest-benchmark's pedantic mode (one call per round)
    and records `extra_info` (kind, shape, implementation, bytes, ...) that
    benchmarks/ratios.py reads.
    """

    def run(fn, args=(), group=None, rounds=None, warmup=None, **extra_info):
        benchmark.group = group
        benchmark.extra_info.update(extra_info, threads=bench_settings["threads"])
        args = tuple(args)
        warmup = bench_settings["warmup"] if warmup is None else warmup
        if rounds is None:
            # At least --bench-rounds; more for fast calls (noise), up to
            # MIN_TIMED_SECONDS of timed calls.
            rounds = bench_settings["rounds"]
            if warmup:
                warm_up(fn, args, warmup)
                warmup = 0
                start = time.perf_counter()
                fn(*args)
                once = time.perf_counter() - start
                rounds = max(rounds, min(MAX_ROUNDS, int(MIN_TIMED_SECONDS / max(once, 1e-6))))
        return benchmark.pedantic(fn, args=args, iterations=1, rounds=rounds,
                                  warmup_rounds=warmup)

    return run


class _Cache:
    """Session cache: models, inputs and reference results are built once."""

    def __init__(self):
        self._values = {}

    def get(self, key, make):
        if key not in self._values:
            self._values[key] = make()
        return self._values[key]


@pytest.fixture(scope="session")
def cache():
    return _Cache()
