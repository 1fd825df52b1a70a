"""``dlgn sim``: simulate a build's Verilog with cocotb and hold it to the golden model (DESIGN §5).

Rung 4 (default): the emitted ``dlgn_core.v``. Rung 5 (``post_synth=True``): the core an ECP5
board build elaborates from ``netlist.json`` (gates as LUT4 cells, the board's group sum),
synthesized for ECP5 and written back as a netlist of ECP5 cells (:mod:`dlgn.sim.post_synth`). Both are driven with the
run's test set (all of it by default, back to back, one sample per clock) and random inputs
(with random idle cycles between them); every sample's per-class scores and class must equal
the golden model's, and on the whole test set the simulated accuracy must equal the trained
network's discrete accuracy from ``summary.json``. The result is written to
``sim_report.json`` (``sim_report_post_synth.json`` for rung 5) in the build directory.
"""

import json
from pathlib import Path

import numpy as np

from dlgn.compile.builddir import BuildDirError, find_run_dir, load_build
from dlgn.compile.golden import predict
from dlgn.safety import atomic_write_text

from .errors import SimError
from .post_synth import NETLIST_NAME, ecp5_cell_models, synthesize_ecp5
from .replay import load_vectors, prepend_vectors
from .runner import check_simulator, default_simulator, run_cocotb
from .vectors import BUILD_LATENCY, first_mismatch, make_stimulus, port_bytes

__all__ = ["simulate_build", "REPORT_FILE", "POST_SYNTH_REPORT_FILE", "REPORT_KEYS", "DEFAULT_RANDOM_SAMPLES"]

REPORT_FILE = "sim_report.json"
POST_SYNTH_REPORT_FILE = "sim_report_post_synth.json"
REPORT_FORMAT = "dlgn-sim-report"
REPORT_VERSION = 1
DEFAULT_RANDOM_SAMPLES = 1000
#: Keys every report carries (outside checks read them).
REPORT_KEYS = ("samples", "random_samples", "mismatches", "sim_accuracy", "golden_accuracy",
               "trained_discrete_accuracy", "simulator", "seconds", "samples_per_second")


def _random_gaps(stimulus, seed):
    """No idle cycles inside the test set (it streams back to back); before each random input,
    0 idle cycles three times in four, else 1 to 3, so that ``in_valid`` gaps are exercised."""
    rng = np.random.Generator(np.random.PCG64(seed + 1))
    gaps = np.zeros(len(stimulus), dtype=np.int32)
    r = stimulus.random_samples
    if r:
        gaps[stimulus.test_samples:] = np.where(rng.random(r) < 0.75, 0, rng.integers(1, 4, size=r))
    return gaps


def _accuracy(classes, labels):
    return float((np.asarray(classes) == labels).mean()) if len(labels) else None


def simulate_build(build_dir, *, samples=None, random_samples=DEFAULT_RANDOM_SAMPLES, simulator=None,
                   post_synth=False, run_dir=None, jobs=None, seed=0, vectors=None, log=print):
    """Simulate ``build_dir`` and check it against the golden model; returns the report dict.

    ``samples``: how many test samples (``None``: the whole test set, ``0``: none);
    ``random_samples``: random inputs after them; ``simulator``: ``"verilator"``, ``"icarus"``
    or ``None`` (Verilator when it works, else Icarus); ``run_dir``: the trained run (default:
    the one recorded by ``dlgn compile``); ``jobs``: simulator processes (default: one per core
    when there are enough samples); ``vectors``: a vector file (:mod:`dlgn.sim.replay`, e.g. the
    counterexample of ``dlgn prove``) simulated instead of the test set. Raises
    :class:`SimError` naming the first mismatching sample, class and stage when anything
    differs; the report is written either way."""
    for name, value in (("--samples", samples), ("--random", random_samples), ("--jobs", jobs)):
        if value is not None and (not isinstance(value, int) or value < 0 or (name == "--jobs" and value < 1)):
            raise SimError(f"{name} must be a {'positive' if name == '--jobs' else 'non-negative'} integer, "
                           f"not {value!r}")
    if vectors is not None and samples not in (None, 0):
        raise SimError("--vectors replaces the test set; drop --samples")
    simulator = default_simulator() if simulator is None else simulator
    check_simulator(simulator)
    build = load_build(Path(build_dir).resolve())  # the simulator runs in its own working directory
    if vectors is not None:
        samples = 0
    try:
        run = find_run_dir(build, run_dir)
    except BuildDirError:
        if samples != 0 or run_dir is not None:
            raise
        run = None
    if run is None and samples != 0:
        raise SimError(f"cannot find the trained run of {build.path}: it was compiled from a netlist file, so the "
                       f"test set is unknown; pass --run RUN_DIR, or --samples 0 to simulate random inputs only")
    stimulus, trained, full = make_stimulus(build, run, samples, random_samples, seed)
    if vectors is not None:
        stimulus = prepend_vectors(build, stimulus, load_vectors(vectors, build))
    if not len(stimulus):
        raise SimError("nothing to simulate: --samples 0 and --random 0")
    labels = stimulus.labels
    whole_test_set = run is not None and vectors is None and stimulus.test_samples == full
    golden_accuracy = None if vectors is not None else _accuracy(stimulus.expected_classes[:stimulus.test_samples],
                                                                 labels)
    first = (f"{stimulus.test_samples} vectors from {vectors}" if vectors is not None else
             f"{stimulus.test_samples} test samples{' (the whole test set)' if whole_test_set else ''}")
    log(f"{build.path}: {build.netlist.in_bits} input bits, {len(build.netlist.gates)} gates, "
        f"latency {build.latency} cycles; {first} + {stimulus.random_samples} random inputs")

    report_name = POST_SYNTH_REPORT_FILE if post_synth else REPORT_FILE
    extra = {}
    latency, latency_source = build.latency, BUILD_LATENCY
    if post_synth:
        work_dir = build.path / "post_synth"
        netlist, synth_seconds, board = synthesize_ecp5(build, work_dir, log=log)
        models, include, defines = ecp5_cell_models(work_dir / "cells")
        sources, includes = [netlist, models], [include]
        stage = f"post-synthesis simulation ({simulator}, ECP5 netlist {NETLIST_NAME}) vs golden model"
        latency, latency_source = board["latency_cycles"], f"the ECP5 board core's latency ({board['popcount']} group sum)"
        extra = {"synth_seconds": round(synth_seconds, 3), "netlist_file": str(Path("post_synth") / NETLIST_NAME),
                 "board_core": {"family": "ecp5", "gates": "LUT4 cells (INIT = truth table) up to 4 inputs", **board}}
    else:
        work_dir = build.path / "sim"
        sources, includes, defines = [build.verilog], [], {}
        stage = f"RTL simulation ({simulator}, {build.verilog.name}) vs golden model"

    log(f"  simulating with {simulator} ...")
    result = run_cocotb(build, stimulus, port_bytes(build, stimulus), work_dir, simulator=simulator, sources=sources,
                        includes=includes, defines=defines, jobs=jobs, gaps=_random_gaps(stimulus, seed), stage=stage,
                        seed=seed, latency=latency, latency_source=latency_source)
    scores, classes, seconds = result.scores, result.classes, result.seconds

    total = len(stimulus)
    mismatch = first_mismatch(stimulus.expected_scores, stimulus.expected_classes, scores, classes, stage,
                              stimulus.test_samples, first_label=stimulus.first_label)
    if scores.shape == stimulus.expected_scores.shape:
        mismatches = int(((scores != stimulus.expected_scores).any(axis=1)
                          | (classes != stimulus.expected_classes)).sum())
    else:
        mismatches = total
    sim_accuracy = (_accuracy(classes[:stimulus.test_samples], labels)
                    if len(classes) == total and vectors is None else None)

    failures = list(result.problems)
    if mismatch and mismatch not in failures:
        failures.insert(0, mismatch)
    references = ["golden model (netlist.json), every sample"]
    if vectors is not None:
        references.append(f"vectors of {vectors} ({stimulus.test_samples}), golden model's scores")
    trained_scores = stimulus.trained_scores
    mismatches_vs_trained = None
    if trained_scores is not None:
        # Per sample against what the trained model itself computed: a netlist and Verilog
        # edited consistently (each agreeing with the other) still fail here.
        n = stimulus.test_samples
        references.append(f"trained model's recorded discrete scores, each of the {n} test samples")
        golden_vs_trained = first_mismatch(trained_scores, predict(trained_scores), stimulus.expected_scores[:n],
                                           stimulus.expected_classes[:n], "netlist (golden model) vs trained model", n)
        if golden_vs_trained:
            failures.insert(0, f"{golden_vs_trained}: the netlist side differs from the trained model")
        if len(scores) == total:
            mismatches_vs_trained = int((scores[:n] != trained_scores).any(axis=1).sum())
    elif run is not None and stimulus.test_samples and vectors is None:
        references.append("trained model: whole-test-set accuracy only (the run recorded no per-sample scores)")
    if whole_test_set:
        correct_trained = round(trained * full)
        if round(golden_accuracy * full) != correct_trained:
            failures.append(f"golden model vs trained model: accuracy {golden_accuracy:.6f} on the whole test set, "
                            f"summary.json says test_acc_discrete = {trained:.6f}")
        if sim_accuracy is not None and round(sim_accuracy * full) != correct_trained:
            failures.append(f"simulated accuracy {sim_accuracy:.6f} differs from the trained discrete accuracy "
                            f"{trained:.6f} (summary.json)")
    report = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "build_dir": str(build.path),
        "build_id": build.build_id,
        "run_dir": str(run) if run is not None else None,
        "references": references,
        "netlist": "post-synth" if post_synth else "rtl",
        "stage": stage,
        "samples": stimulus.test_samples,
        "random_samples": stimulus.random_samples,
        "whole_test_set": whole_test_set,
        "mismatches": mismatches,
        "mismatches_vs_trained": mismatches_vs_trained,
        "sim_accuracy": sim_accuracy,
        "golden_accuracy": golden_accuracy,
        "trained_discrete_accuracy": trained,
        "accuracy_compared_with_trained": whole_test_set,
        "simulator": simulator,
        "jobs": result.jobs,
        "latency_cycles": latency,
        "vectors_file": str(vectors) if vectors is not None else None,
        "seconds": round(seconds, 3),
        "compile_seconds": round(result.compile_seconds, 3),
        "build_seconds": round(result.compile_seconds, 3),
        "stream_seconds": round(result.stream_seconds, 3),
        "simulator_cpu_seconds": round(result.cpu_seconds, 3),
        "samples_per_second": round(total / seconds, 2) if seconds > 0 else None,
        "stream_samples_per_second": (round(total / result.stream_seconds, 2) if result.stream_seconds > 0
                                      else None),
        "passed": not failures,
        "first_failure": failures[0] if failures else None,
        **extra,
    }
    report_path = build.path / report_name
    atomic_write_text(report_path, json.dumps(report, indent=1) + "\n")
    if failures:
        more = f" (and {len(failures) - 1} more problems)" if len(failures) > 1 else ""
        raise SimError(f"simulation check failed: {failures[0]}{more}; report in {report_path}, "
                       f"simulator log under {work_dir}")
    acc = (f", accuracy {100 * sim_accuracy:.2f}% = trained discrete accuracy" if whole_test_set else
           f", accuracy {100 * sim_accuracy:.2f}% on the first {stimulus.test_samples} test samples"
           if sim_accuracy is not None else "")
    log(f"  all {total} samples: scores and class equal the golden model{acc}; "
        f"{report['samples_per_second']} samples/s ({seconds:.1f} s, {result.jobs} simulator processes; "
        f"build {result.compile_seconds:.1f} s, streaming {report['stream_samples_per_second']} samples/s)")
    log(f"wrote {report_path}")
    return report
