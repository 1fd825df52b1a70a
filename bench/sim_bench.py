"""Simulation speed, Verilator vs Icarus side by side: ``dlgn sim`` on one build, build time and streaming rate.

    python bench/sim_bench.py [BUILD_DIR] [--random 100000] [--simulators verilator icarus]
                              [--icarus-samples N] [--icarus-random N] [--post-synth] [--jobs J]

Default: ``build/default`` (``make compile``: the default model, 3 x 8000 4-input gates), its
whole test set plus 100,000 random inputs on each simulator, every sample checked against the
golden model and the trained model's recorded scores (each run must pass). Icarus is slow on a
core this large; ``--icarus-samples``/``--icarus-random`` give it a smaller share of the same
stimulus (its rate is what is compared). ``--post-synth`` adds the ECP5 netlist through Verilator.
Each simulator works on its own copy of the build (``BUILD_DIR/sim-bench/<name>``). Records,
per run, the wall time including the simulator's build, the build time, the streaming time and
rate, the simulator's CPU seconds, and the machine's load before and after. Writes
``bench/results/sim-<machine>-<date>.json``.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from machine import cpu_name  # bench/machine.py (scripts run with bench/ on sys.path)

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def _copy_build(build_dir, dest):
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for path in Path(build_dir).iterdir():
        if path.is_file() and not path.name.startswith(("sim_report", "prove_report", "counterexample")):
            shutil.copy(path, dest / path.name)
    return dest


def _run(build_dir, work, name, simulator, samples, random_samples, post_synth, jobs):
    from dlgn.sim.check import simulate_build

    copy = _copy_build(build_dir, work / name)
    load_before = os.getloadavg()
    start = time.perf_counter()
    report = simulate_build(copy, samples=samples, random_samples=random_samples, simulator=simulator,
                            post_synth=post_synth, jobs=jobs, run_dir=None)
    wall = time.perf_counter() - start
    total = report["samples"] + report["random_samples"]
    return {
        "name": name,
        "simulator": simulator,
        "netlist": report["netlist"],
        "samples": report["samples"],
        "random_samples": report["random_samples"],
        "whole_test_set": report["whole_test_set"],
        "passed": report["passed"],
        "mismatches": report["mismatches"],
        "mismatches_vs_trained": report["mismatches_vs_trained"],
        "sim_accuracy": report["sim_accuracy"],
        "jobs": report["jobs"],
        "wall_seconds_including_build": round(wall, 2),
        "synth_seconds": report.get("synth_seconds"),
        "build_seconds": report["build_seconds"],
        "stream_seconds": report["stream_seconds"],
        "stream_samples_per_second": report["stream_samples_per_second"],
        "samples_per_second_including_build": report["samples_per_second"],
        "simulator_cpu_seconds": report["simulator_cpu_seconds"],
        "samples_per_cpu_second": round(total / report["simulator_cpu_seconds"], 1)
        if report["simulator_cpu_seconds"] else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv=None):
    from dlgn.compile.builddir import load_build
    from dlgn.sim.runner import verilator_version

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", nargs="?", default=str(ROOT / "build" / "default"), metavar="BUILD_DIR")
    parser.add_argument("--random", type=int, default=100_000, help="random inputs after the test set")
    parser.add_argument("--samples", type=int, default=None, help="test samples (default: the whole test set)")
    parser.add_argument("--simulators", nargs="+", default=["verilator", "icarus"], choices=("verilator", "icarus"))
    parser.add_argument("--icarus-samples", type=int, default=None, help="test samples for Icarus (default: as many)")
    parser.add_argument("--icarus-random", type=int, default=None, help="random inputs for Icarus (default: as many)")
    parser.add_argument("--post-synth", action="store_true", help="also the ECP5 netlist through Verilator")
    parser.add_argument("--jobs", type=int, default=None, help="simulator processes (default: one per core)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    build_dir = Path(args.build)
    if not (build_dir / "compile_report.json").is_file():
        print(f"{build_dir} is not a build directory: run 'make compile' (the default model) first", file=sys.stderr)
        return 2
    build = load_build(build_dir)
    work = build_dir / "sim-bench"
    runs = []
    for simulator in args.simulators:
        samples, random_samples = args.samples, args.random
        if simulator == "icarus":
            samples = args.icarus_samples if args.icarus_samples is not None else samples
            random_samples = args.icarus_random if args.icarus_random is not None else random_samples
        runs.append(_run(build_dir, work, simulator, simulator, samples, random_samples, False, args.jobs))
    if args.post_synth:
        runs.append(_run(build_dir, work, "verilator-post-synth", "verilator", args.samples, args.random, True,
                         args.jobs))
    version = verilator_version()
    result = {
        "benchmark": "sim",
        "machine": f"cpu-{platform.machine()}",
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "verilator": f"{version[0]}.{version[1]:03d}" if version else None,
        "iverilog": shutil.which("iverilog"),
        "date": datetime.date.today().isoformat(),
        "build": str(build_dir),
        "build_id": build.build_id,
        "gates": len(build.netlist.gates),
        "in_bits": build.netlist.in_bits,
        "classes": build.classes,
        "latency_cycles": build.latency,
        "target": "whole test set + 100,000 random inputs in under 120 s including the build (issue 12)",
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sim-{result['machine']}-{result['date']}.json"
    from dlgn.safety import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    for run in runs:
        print(f"{run['name']:<22} {run['samples']:>6} test + {run['random_samples']:>6} random: "
              f"{run['wall_seconds_including_build']:>7.1f} s including build {run['build_seconds']:.1f} s, "
              f"streaming {run['stream_samples_per_second']} samples/s, load {run['load_average_before'][0]}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
