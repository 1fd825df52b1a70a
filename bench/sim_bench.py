"""Simulation throughput: ``dlgn sim`` on compiled builds (whole test set + random inputs).

    python bench/sim_bench.py BUILD_DIR [BUILD_DIR ...] [--jobs 1 2] [--random 1000] [--samples N]
                              [--simulator icarus] [--post-synth]

Each build is simulated once per ``--jobs`` value (simulator processes); every run must pass the
check (zero mismatches, simulated accuracy = trained discrete accuracy). Records wall time,
samples/s, the simulator's CPU seconds (which the load of a shared machine does not inflate)
and the machine's load. Writes ``bench/results/sim-<machine>-<date>.json``.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
from pathlib import Path

from machine import cpu_name  # bench/machine.py (scripts run with bench/ on sys.path)

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    from dlgn.sim.check import simulate_build
    from dlgn.sim.vectors import load_build

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", metavar="BUILD_DIR")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--random", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=None, help="test samples (default: the whole test set)")
    parser.add_argument("--simulator", default="icarus")
    parser.add_argument("--post-synth", action="store_true", help="simulate the ECP5 netlist instead (synthesizes)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    runs = []
    for build_dir in args.builds:
        build = load_build(build_dir)
        for jobs in dict.fromkeys(args.jobs):
            load_before = os.getloadavg()[0]
            report = simulate_build(build_dir, samples=args.samples, random_samples=args.random,
                                    simulator=args.simulator, jobs=jobs, post_synth=args.post_synth)
            total = report["samples"] + report["random_samples"]
            runs.append({
                "build": Path(build_dir).name,
                "netlist": report["netlist"],
                "synth_seconds": report.get("synth_seconds"),
                "gates": len(build.netlist.gates),
                "gates_discretized": build.report["passes"][0]["gates"],
                "in_bits": build.netlist.in_bits,
                "classes": build.classes,
                "latency_cycles": build.latency,
                "dataset": build.netlist.source.get("dataset"),
                "jobs": report["jobs"],
                "samples": report["samples"],
                "random_samples": report["random_samples"],
                "whole_test_set": report["whole_test_set"],
                "mismatches": report["mismatches"],
                "sim_accuracy": report["sim_accuracy"],
                "trained_discrete_accuracy": report["trained_discrete_accuracy"],
                "seconds": report["seconds"],
                "compile_seconds": report["compile_seconds"],
                "stream_seconds": report["stream_seconds"],
                "samples_per_second": report["samples_per_second"],
                "simulator_cpu_seconds": report["simulator_cpu_seconds"],
                "samples_per_cpu_second": round(total / report["simulator_cpu_seconds"], 1),
                "load_average_1min_before": round(load_before, 2),
                "load_average_1min_after": round(os.getloadavg()[0], 2),
            })
    today = datetime.date.today().isoformat()
    machine = f"cpu-{platform.machine()}"
    result = {
        "benchmark": "sim", "simulator": args.simulator, "machine": machine, "cpu": cpu_name(),
        "cores": os.cpu_count(), "iverilog": shutil.which("iverilog"), "python": platform.python_version(),
        "date": today, "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sim-{machine}-{today}.json"
    if path.is_file():  # several invocations on one day add up
        previous = json.loads(path.read_text())
        result["runs"] = previous.get("runs", []) + runs
    path.write_text(json.dumps(result, indent=1) + "\n")
    for r in runs:
        total = r["samples"] + r["random_samples"]
        print(f"{r['build']:<20} {r['netlist']:<10} {r['gates']:>6} gates  {total:>6} samples  "
              f"jobs {r['jobs']}  {r['seconds']:7.1f} s  {r['samples_per_second']:7.1f} samples/s  "
              f"{r['samples_per_cpu_second']:7.1f} samples/CPU-s")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
