"""cocotb testbench of ``dlgn_core`` (runs inside the simulator; started by :mod:`dlgn.sim.runner`).

The simulated top is the bulk harness of :mod:`dlgn.sim.harness` around the core: it streams
the cycle-by-cycle stimulus from the hex files in the working directory and writes every valid
output to ``results.txt``. The test :func:`classify_bulk` starts the clock, waits for the
harness's ``done``, then reads the results and the vector file named by ``DLGN_SIM_VECTORS``
(see :func:`dlgn.sim.vectors.write_vectors`): every sample's scores and class must equal the
golden model's, every result must come exactly ``latency_cycles`` after its sample, no X or Z may
appear on the outputs, and nothing may come out that was not put in. What it saw is written to
``DLGN_SIM_RESULTS`` (an ``.npz``) for the caller's report.

No Python runs per clock cycle (the clock is cocotb's GPI clock), so the simulator, not the
testbench, sets the pace.
"""

import json
import os
import time

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from dlgn.sim.harness import RESET_CYCLES, RESULTS_FILE, read_harness_results
from dlgn.sim.vectors import BUILD_LATENCY, first_mismatch, read_vectors

CLOCK_PERIOD_NS = 10


def check_results(meta, vectors, cycles, classes, scores, unknown):
    """The problems (a list of messages, empty when all is well) of harness results against the
    expectations in ``vectors``; ``meta`` is the vector file's header."""
    problems = []
    expected_count = len(vectors["expected_scores"])
    if unknown:
        problems.append(f"X/Z on the outputs: {unknown}")
    if len(cycles) != expected_count:
        problems.append(f"{len(cycles)} results came out for {expected_count} samples")
    n = min(len(cycles), expected_count)
    expected_cycles = vectors["sample_cycles"][:n] + RESET_CYCLES + meta["latency"]
    late = np.flatnonzero(cycles[:n] != expected_cycles)
    if len(late):
        i = int(late[0])
        problems.append(f"sample {meta['first_index'] + i}'s result came "
                        f"{int(cycles[i] - expected_cycles[i] + meta['latency'])} cycles after it, "
                        f"expected {meta['latency']} ({meta.get('latency_source', BUILD_LATENCY)} = "
                        f"{meta['latency']})")
    if len(scores) == expected_count:
        mismatch = first_mismatch(vectors["expected_scores"], vectors["expected_classes"], scores, classes,
                                  os.environ.get("DLGN_SIM_STAGE", "simulation vs golden model"),
                                  meta["test_samples"], meta["first_index"], meta.get("first_label"))
        if mismatch:
            problems.append(mismatch)
    return problems


@cocotb.test()
async def classify_bulk(dut):
    """Stream the shard's vectors through the harness and check every result (see the module doc)."""
    meta, vectors = read_vectors(os.environ["DLGN_SIM_VECTORS"])
    results_path = os.environ["DLGN_SIM_RESULTS"]
    start, cpu_start = time.perf_counter(), time.process_time()
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start(start_high=False)
    await RisingEdge(dut.done)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    cycles, classes, scores, unknown = read_harness_results(RESULTS_FILE, meta["classes"], meta["score_width"])
    problems = check_results(meta, vectors, cycles, classes, scores, unknown)
    n = min(len(cycles), len(vectors["sample_cycles"]))
    delay = cycles[:n] - vectors["sample_cycles"][:n] - RESET_CYCLES
    np.savez(results_path, scores=scores, classes=classes, delay=delay, seconds=np.float64(seconds),
             cpu_seconds=np.float64(cpu_seconds), problems=np.array(json.dumps(problems)))
    assert not problems, "; ".join(problems)
