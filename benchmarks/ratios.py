"""The ratio table of the performance targets (harness.TARGETS) from a
pytest-benchmark JSON.

    pytest benchmarks --benchmark-json=bench.json
    python benchmarks/ratios.py bench.json            # markdown table
    python benchmarks/ratios.py bench.json --strict   # exit 1 if a target is missed

Every ratio compares medians measured in the same run.
"""

import argparse
import json
import sys

from harness import ratio_table


def _percent(value):
    return "?" if value is None else f"{value:.0%}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", help="file written by pytest --benchmark-json")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    with open(args.json) as f:
        data = json.load(f)
    rows, table = ratio_table(data)
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    threads = sorted({b.get("extra_info", {}).get("threads") for b in data.get("benchmarks", [])}
                     - {None})
    print(f"Run: {data.get('datetime', '?')}; {cpu.get('brand_raw', machine.get('processor', '?'))}"
          f", {cpu.get('count', '?')} CPUs; TensorFlow intra-op threads: "
          f"{', '.join(map(str, threads)) or '?'}; commit "
          f"{data.get('commit_info', {}).get('id', '?')[:12]}"
          f"{' (dirty)' if data.get('commit_info', {}).get('dirty') else ''}; TensorFlow "
          f"{machine.get('tensorflow', '?')}; CPUs idle at start / end: "
          f"{_percent(machine.get('cpu_idle_fraction_at_start'))} / "
          f"{_percent(machine.get('cpu_idle_fraction_at_end'))}; other processes used "
          f"{_percent(machine.get('other_processes_cpu_fraction'))} of the CPUs during the run"
          " (timings are comparable only near 0%)\n")
    print(table)
    if args.strict and any(r["verdict"] in ("MISSED",) for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
