"""Interleaved runs as a benchmark JSON: the scripts beside the
pytest-benchmark suite (`python benchmarks/test_bench_conv.py`, ...) time
their calls round-robin (`fused_lif._bench.interleaved_times`: every ratio
from the same moments of a shared machine) and write what pytest-benchmark's
`--benchmark-json` writes, as far as `benchmarks/ratios.py` reads it: one
entry per call with its stats (seconds) and extra_info, the machine, the
commit and how busy the CPUs were. So `python benchmarks/ratios.py` makes
the same ratio table from either.
"""

import datetime
import os
import platform
import statistics
import subprocess

from harness import machine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_interleaved(cases, repeats=5, warmup=2, progress=None, label=""):
    """Benchmark entries of `cases` {name: (fn, args, extra_info)}, timed
    round-robin: each warmed up `warmup` times, then called once per round
    for `repeats` rounds. Returns [{"name", "group", "stats", "extra_info"}]
    in the order of `cases`; stats in seconds (median, min, max, mean,
    rounds, data)."""
    from fused_lif._bench import interleaved_times

    times = interleaved_times({name: (fn, args) for name, (fn, args, _) in cases.items()},
                              repeats, warmup, progress, label)
    entries = []
    for name, (_, _, info) in cases.items():
        t = times[name]
        entries.append({
            "name": name, "group": label,
            "stats": {"median": statistics.median(t), "min": min(t), "max": max(t),
                      "mean": statistics.fmean(t), "rounds": len(t), "data": list(t)},
            "extra_info": dict(info)})
    return entries


def _commit():
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=ROOT, capture_output=True, text=True,
                                    timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"id": head, "dirty": dirty} if head else {}


def _cpu():
    try:
        import cpuinfo

        brand = cpuinfo.get_cpu_info().get("brand_raw")
    except Exception:  # noqa: BLE001  (only informative)
        brand = None
    return {"brand_raw": brand or platform.processor() or "?", "count": os.cpu_count()}


class Run:
    """A script's run: how idle the CPUs were when it started and what
    other processes used during it, and the JSON at the end.

        run = Run(); entries = run_interleaved(...); data = run.json(entries)
    """

    def __init__(self):
        self.idle_at_start = machine.cpu_idle_fraction()
        self.load = machine.OtherLoad()
        self.started = datetime.datetime.now(datetime.timezone.utc)

    def json(self, entries):
        """The pytest-benchmark-like dict that ratios.py reads; each entry's
        extra_info gets TensorFlow's intra-op threads, as conftest.py's do."""
        import tensorflow as tf

        threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        for entry in entries:
            entry["extra_info"].setdefault("threads", threads)

        return {
            "datetime": self.started.isoformat(),
            "machine_info": {
                "cpu": _cpu(), "tensorflow": tf.__version__,
                "cpu_idle_fraction_at_start": self.idle_at_start,
                "cpu_idle_fraction_at_end": machine.cpu_idle_fraction(),
                "other_processes_cpu_fraction": self.load.fraction()},
            "commit_info": _commit(),
            "benchmarks": entries,
        }


def load_line(data):
    """One line on how busy the machine was, from a JSON's machine_info; it
    says LOADED when other processes used more than 10% of the CPUs."""
    info = data.get("machine_info", {})
    other = info.get("other_processes_cpu_fraction")
    idle = [info.get(k) for k in ("cpu_idle_fraction_at_start", "cpu_idle_fraction_at_end")]
    text = ("CPUs idle at start / end: " + " / ".join(
        "?" if v is None else f"{v:.0%}" for v in idle) + "; other processes used "
        + ("?" if other is None else f"{other:.0%}") + " of the CPUs during the run")
    if other is not None and other > machine.LOADED:
        text += " (LOADED: timings are noisy; compare ratios of interleaved calls only)"
    return text
