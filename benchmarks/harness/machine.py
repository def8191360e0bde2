"""The machine the benchmarks run on: TensorFlow's thread pools, and how busy
the CPUs are (Linux /proc/stat). Other work on the machine skews timings: the
benchmarks record these next to their results."""

import os
import resource
import time
import warnings

# Other processes' share of the CPUs above which a run is marked as loaded.
LOADED = 0.10


def set_threads(intra_op=None, inter_op=None):
    """Sets TensorFlow's intra-op and inter-op pools (None or 0: leaves one
    as it is). Call before TensorFlow runs anything: when its pools have
    already started, warns and leaves them. Returns the (intra, inter) in
    force (0: TensorFlow's default)."""
    import tensorflow as tf

    threading = tf.config.threading
    try:
        if intra_op:
            threading.set_intra_op_parallelism_threads(int(intra_op))
        if inter_op:
            threading.set_inter_op_parallelism_threads(int(inter_op))
    except RuntimeError:  # TensorFlow already ran something in this process
        warnings.warn(f"TensorFlow's thread pools were already set up in this process "
                      f"(intra-op {threading.get_intra_op_parallelism_threads()}, inter-op "
                      f"{threading.get_inter_op_parallelism_threads()}), not "
                      f"{intra_op or 'unchanged'} and {inter_op or 'unchanged'}",
                      RuntimeWarning, stacklevel=2)
    return (threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads())


def cpu_ticks(stat_text):
    """(idle, total) clock ticks of all CPUs from the text of /proc/stat: its
    first line, "cpu user nice system idle iowait irq ..."; idle counts
    iowait too."""
    values = [int(v) for v in stat_text.splitlines()[0].split()[1:]]
    return values[3] + values[4], sum(values)


def _read_cpu_ticks():
    """cpu_ticks of this machine now; None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            return cpu_ticks(f.read())
    except (OSError, ValueError, IndexError):
        return None


def cpu_idle_fraction(seconds=0.5):
    """Fraction of all CPUs' time that was idle over `seconds`; None where
    unknown."""
    start = _read_cpu_ticks()
    time.sleep(seconds)
    end = _read_cpu_ticks()
    if start is None or end is None:
        return None
    return (end[0] - start[0]) / max(1, end[1] - start[1])


class OtherLoad:
    """CPU time that other processes used while this one ran: the machine's
    busy time minus this process's own (and its children's, once waited
    for). Timings are only comparable when this stays near 0.

        load = OtherLoad(); ...; load.fraction()  # of all CPUs' wall time
    """

    def __init__(self):
        self._start = self._snapshot()

    @staticmethod
    def _snapshot():
        ticks = _read_cpu_ticks()
        if ticks is None:
            return None
        own = sum(getattr(resource.getrusage(who), field)
                  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for field in ("ru_utime", "ru_stime"))
        busy = (ticks[1] - ticks[0]) / os.sysconf("SC_CLK_TCK")  # seconds, all but idle
        return time.monotonic(), busy, own

    def fraction(self):
        """Other processes' CPU seconds / (wall seconds x CPUs); None if
        unknown."""
        end = self._snapshot()
        if self._start is None or end is None:
            return None
        return other_fraction(self._start, end, os.cpu_count() or 1)


def other_fraction(start, end, cpus):
    """Other processes' share of `cpus` between two (wall seconds, busy CPU
    seconds of the machine, CPU seconds of this process) snapshots. /proc/stat
    counts whole clock ticks: over a short window the rounding can exceed the
    machine's capacity, which bounds the truth, or fall below what this
    process used, which bounds it from below: clamped to [0, 1]."""
    wall = end[0] - start[0]
    other = (end[1] - start[1]) - (end[2] - start[2])
    return min(1.0, max(0.0, other) / max(1e-9, wall * cpus))
