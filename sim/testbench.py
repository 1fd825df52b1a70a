"""cocotb testbench of ``dlgn_core`` (runs inside the simulator; started by :mod:`dlgn.sim.runner`).

The test :func:`classify_stream` reads the vector file named by ``DLGN_SIM_VECTORS`` (see
:func:`dlgn.sim.vectors.write_vectors`), streams its samples into the core, collects one result
per sample in order, compares scores and class with the golden model's, checks that every
result arrives exactly ``latency_cycles`` after its sample, and writes what it saw to
``DLGN_SIM_RESULTS`` (an ``.npz``) so that the caller can build its report.

Timing: the driver changes the inputs on falling clock edges and the monitor samples the
outputs on falling edges too, half a cycle away from the rising edge on which the core's
registers move, so no read races a write. A sample presented on one falling edge is taken by
the next rising edge; its result is therefore seen ``max(latency, 1)`` falling edges later
(a combinational core, latency 0, is read one edge after its inputs were set).
"""

import json
import os
import time

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time

from dlgn.sim.vectors import first_mismatch, read_vectors

CLOCK_PERIOD_NS = 10
RESET_CYCLES = 2
PROGRESS_SECONDS = 0.5


class SampleDriver:
    """Streams input samples into ``in_valid`` and the input port, one per clock.

    ``gaps[i]`` idle cycles (``in_valid`` low, random data on the port, which the core must
    ignore) precede sample ``i``. ``sent`` records the cycle each sample was presented."""

    def __init__(self, dut, port_name, seed=0, progress=None):
        self._clk = dut.clk
        self._valid = dut.in_valid
        self._port = getattr(dut, port_name)
        self._width = len(self._port)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._progress = progress
        self.sent = []

    def _report_progress(self, count):
        """Write how many samples went in to the progress file (read by the runner's bar)."""
        if self._progress is None:
            return
        tmp = self._progress + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(count))
        os.replace(tmp, self._progress)

    def idle(self):
        self._valid.value = 0

    async def stream(self, values, gaps):
        """Present every row of ``values`` (little-endian bytes of the port value)."""
        falling = self._clk.falling_edge
        mask = (1 << self._width) - 1
        next_report = time.monotonic() + PROGRESS_SECONDS
        for row, gap in zip(values, gaps):
            if time.monotonic() >= next_report:
                self._report_progress(len(self.sent))
                next_report = time.monotonic() + PROGRESS_SECONDS
            for _ in range(int(gap)):
                await falling
                self._valid.value = 0
                self._port.value = int.from_bytes(self._rng.bytes(len(row)), "little") & mask
            await falling
            self._port.value = int.from_bytes(row.tobytes(), "little")
            self._valid.value = 1
            self.sent.append(_cycle())
        await falling
        self._valid.value = 0
        self._report_progress(len(self.sent))


class ResultMonitor:
    """Collects ``out_class`` and ``out_scores`` (split into per-class scores) of every cycle
    with ``out_valid`` high, in order, with the cycle each result was seen."""

    def __init__(self, dut, classes, score_width):
        self._clk = dut.clk
        self._valid = dut.out_valid
        self._class = dut.out_class
        self._scores = dut.out_scores
        self._classes = classes
        self._score_width = score_width
        self.classes = []
        self.scores = []
        self.seen = []
        self.unknown = None  # first cycle whose outputs held X or Z while valid
        self._task = None

    def start(self):
        self._task = cocotb.start_soon(self._run())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):
        falling = self._clk.falling_edge
        mask = (1 << self._score_width) - 1
        shifts = [c * self._score_width for c in range(self._classes)]
        while True:
            await falling
            valid = self._valid.value
            if not valid.is_resolvable:
                self.unknown = self.unknown or f"out_valid is {valid} at cycle {_cycle()}"
                continue
            if not int(valid):
                continue
            cls, scores = self._class.value, self._scores.value
            if not (cls.is_resolvable and scores.is_resolvable):
                self.unknown = self.unknown or f"out_class/out_scores hold X or Z at cycle {_cycle()}"
                continue
            packed = scores.to_unsigned()
            self.scores.append([(packed >> s) & mask for s in shifts])
            self.classes.append(cls.to_unsigned())
            self.seen.append(_cycle())


class DlgnCoreTB:
    """Clock, reset, a :class:`SampleDriver` and a :class:`ResultMonitor` around ``dlgn_core``."""

    def __init__(self, dut, input_port, classes, score_width, latency, seed=0, progress=None):
        self.dut = dut
        self.latency = latency
        self.clock = Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns")
        self.driver = SampleDriver(dut, input_port, seed, progress)
        self.monitor = ResultMonitor(dut, classes, score_width)

    async def reset(self):
        """Start the clock, hold ``rst`` for a few cycles with ``in_valid`` low."""
        self.clock.start(start_high=False)
        self.driver.idle()
        self.dut.rst.value = 1
        for _ in range(RESET_CYCLES):
            await self.dut.clk.falling_edge
        self.dut.rst.value = 0
        self.monitor.start()

    async def classify(self, values, gaps):
        """Stream all samples, then wait until the last result has had time to come out."""
        await self.driver.stream(values, gaps)
        for _ in range(self.latency + 2):
            await self.dut.clk.falling_edge
        self.monitor.stop()

    @property
    def delay(self):
        """Cycles from each sample to its result, where both exist."""
        n = min(len(self.driver.sent), len(self.monitor.seen))
        return np.asarray(self.monitor.seen[:n]) - np.asarray(self.driver.sent[:n])


def _cycle():
    return int(get_sim_time("ns")) // CLOCK_PERIOD_NS


@cocotb.test()
async def classify_stream(dut):
    """Every sample's scores and class equal the golden model's, each result arrives
    ``latency_cycles`` after its sample, and nothing comes out that was not put in."""
    meta, vectors = read_vectors(os.environ["DLGN_SIM_VECTORS"])
    results_path = os.environ["DLGN_SIM_RESULTS"]
    tb = DlgnCoreTB(dut, meta["input_port"], meta["classes"], meta["score_width"], meta["latency"],
                    seed=meta["first_index"], progress=os.environ.get("DLGN_SIM_PROGRESS"))
    start, cpu_start = time.perf_counter(), time.process_time()
    await tb.reset()
    await tb.classify(vectors["values"], vectors["gaps"])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    monitor, expected_count = tb.monitor, len(vectors["values"])
    observed = max(meta["latency"], 1)
    delay = tb.delay
    problems = []
    if monitor.unknown:
        problems.append(f"X/Z on the outputs: {monitor.unknown}")
    if len(monitor.seen) != expected_count:
        problems.append(f"{len(monitor.seen)} results came out for {expected_count} samples")
    late = np.flatnonzero(delay != observed)
    if len(late):
        i = int(late[0])
        problems.append(f"sample {meta['first_index'] + i}'s result came {int(delay[i])} falling edges after it, "
                        f"expected {observed} (compile_report latency_cycles = {meta['latency']})")
    scores = np.asarray(monitor.scores, dtype=np.int64).reshape(-1, meta["classes"])
    classes = np.asarray(monitor.classes, dtype=np.int64)
    if len(scores) == expected_count:
        mismatch = first_mismatch(vectors["expected_scores"], vectors["expected_classes"], scores, classes,
                                  os.environ.get("DLGN_SIM_STAGE", "simulation vs golden model"),
                                  meta["test_samples"], meta["first_index"])
        if mismatch:
            problems.append(mismatch)
    np.savez(results_path, scores=scores, classes=classes, delay=delay, seconds=np.float64(seconds),
             cpu_seconds=np.float64(cpu_seconds),
             problems=np.array(json.dumps(problems)))
    assert not problems, "; ".join(problems)
