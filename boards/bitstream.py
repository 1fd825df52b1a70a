"""``dlgn bitstream``: a compiled build directory -> board top -> yowasp synthesis, place and route
-> ``top.bit`` and ``hw_report.json`` (DESIGN §3, §4).

The core is rebuilt from the build's ``netlist.json`` with the build's pipeline settings; each gate
becomes a device LUT primitive (``--lut-primitives``, the default) so Yosys does not re-map the
network. Amaranth's ``platform.prepare`` + ``BuildPlan.execute_local`` run Yosys, nextpnr and the
packer, so building never needs the programmer (openFPGALoader).
"""

import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from dlgn.compile import builddir
from dlgn.compile.builddir import find_run_dir, load_build
from dlgn.compile.estimate import design_estimate
from dlgn.safety import StagedDirectory, atomic_write_text

from .errors import BoardError
from .progress import Ticker, toolchain_status
from .protocol import BAUD, SCORE_BYTES
from .targets import get_board
from .toolchain import (nextpnr_utilization_from_log, read_nextpnr_report, read_yosys_stat, tool_env,
                        tool_versions, ecp5_pll)

__all__ = ["TOPS", "REPORT_FILE", "REPORT_KEYS", "build_bitstream", "load_test_set", "bist_rows", "check_freq",
           "ECP5_PLL_MHZ"]

TOPS = ("uart", "bist")
REPORT_FILE = "hw_report.json"
NAME = "top"
#: The stable keys of ``hw_report.json`` (outside checks read them); more keys may follow them.
REPORT_KEYS = ("board", "device", "lut4", "ff", "bram", "lut4_capacity", "fmax_mhz", "target_mhz", "timing_met",
               "latency_cycles", "samples_per_second", "tool_versions")
BIST_MAX_SAMPLES = 1024
# nextpnr resource names per family: logic cells, flip-flops, block RAM.
_RESOURCES = {"ecp5": ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD"), "ice40": ("ICESTORM_LC", "ICESTORM_LC", "ICESTORM_RAM")}
_BRAM_WIDTH = {"ecp5": (36, 512), "ice40": (16, 256)}  # widest configuration (bits, depth) of one block RAM
#: Output range of the ECP5 EHXPLLL's CLKOP (Lattice ECP5 sysCLOCK PLL usage guide, TN1263).
ECP5_PLL_MHZ = (3.125, 400.0)
#: How far the PLL's achieved frequency may be from the one asked for.
PLL_TOLERANCE = 0.01


def load_test_set(build, limit=None):
    """Raw test features ``[N, F]`` and labels of the run the build came from."""
    run_dir = find_run_dir(build)
    if run_dir is None:
        raise BoardError(f"{build.path} was compiled from a bare netlist: no test set to run on the board")
    test = builddir.load_test_set(run_dir, None)
    x, y = test.x, test.y
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)


def bist_rows(build, samples):
    """``(rows, expected_correct)``: the first ``samples`` test samples as (packed input bits,
    label) for :class:`~dlgn.boards.tops.BistRunner`, and how many the golden model gets right."""
    from dlgn.compile.golden import GoldenModel, encode_features, predict

    x, y = load_test_set(build, samples)
    bits = encode_features(build.netlist.encoding, x).astype(np.uint8)
    predicted = predict(GoldenModel(build.netlist).scores(bits))
    packed = np.packbits(bits, axis=1, bitorder="little")
    rows = [(int.from_bytes(row.tobytes(), "little"), int(label)) for row, label in zip(packed, y)]
    return rows, int((predicted == y).sum())


def _bist_samples(board, row_width, requested, available):
    width, depth = _BRAM_WIDTH[board.family]
    blocks = board.bram_bits // (18432 if board.family == "ecp5" else 4096)
    budget = max(1, blocks // 2)  # leave half the block RAM for the design
    columns = math.ceil(row_width / width)
    if columns > budget:
        raise BoardError(f"a BIST sample is {row_width} bits wide and needs {columns} block RAMs per {depth} samples; "
                         f"{board.name} has {blocks}. Use the uart top, or a larger board")
    fit = (budget // columns) * depth
    n = min(available, requested or BIST_MAX_SAMPLES, fit, 65535)
    return n


def _core(build, encoder, lut_primitives, family, lut_cell=None):
    from dlgn.hdl.top import DlgnCore

    from .primitives import lut_cell_for

    report, netlist = build.report, build.netlist
    if lut_primitives:
        lut_cell = lut_cell_for(family)
    return DlgnCore(netlist.in_bits, netlist.gates, netlist.groups,
                    encoding=netlist.encoding if encoder else None,
                    pipeline_every=int(report["pipeline_every"]), output_every=int(report["output_every"]),
                    lut_cell=lut_cell)


def _fit_advice(board, needed):
    from .targets import BOARDS

    larger = sorted((b for b in BOARDS.values() if b.lut4 > max(needed, board.lut4)), key=lambda b: b.lut4)
    board_hint = f"a larger board (--board {larger[0].name}, {larger[0].lut4} LUT4)" if larger else "a larger device"
    return f"train a smaller model (fewer gates per layer: --set model.width=...) or use {board_hint}"


def build_bitstream(build_dir, board_name, out_dir=None, *, top="uart", freq=None, lut_primitives=True,
                    bist_samples=None, router=None, seed=1, verify=True, log=print):
    """Build ``top.bit`` and ``hw_report.json`` for ``board_name`` in ``out_dir`` (default
    ``build_dir/<board>``); returns the report. Raises :class:`BoardError` (one message, with the
    figures and what to change) when the design does not fit or misses timing.

    The build runs in a staging directory that replaces ``out_dir`` only when it has a
    bitstream: an interrupted or failed build leaves the previous one whole (a failed build's
    logs are kept in ``OUT_DIR-failed``)."""
    board = get_board(board_name)
    if bist_samples is not None and bist_samples < 1:
        raise BoardError(f"--bist-samples must be at least 1, not {bist_samples}")
    if top not in TOPS:
        raise BoardError(f"unknown top {top!r}; choose one of {', '.join(TOPS)}")
    target = check_freq(board, freq)
    build = load_build(build_dir)
    final = Path(out_dir) if out_dir is not None else Path(build_dir) / board.name
    _check_out_dir(final)
    netlist = build.netlist
    if netlist.encoding is None:
        raise BoardError(f"{build.path}: the netlist has no input encoding; the board tops need one (raw features)")

    # Refuse a design that cannot fit before spending minutes in synthesis: the whole design
    # (encoder, gates, group sum, argmax, UART or BIST), as the compiler estimates it.
    estimate = design_estimate(build.report, board.family, top)
    if estimate["total"] > board.lut4:
        parts = ", ".join(f"{k} {v}" for k, v in estimate.items() if k != "total" and v)
        raise BoardError(f"the design does not fit {board.name} ({board.device}): about {estimate['total']} logic "
                         f"cells ({parts}) against {board.lut4} on the device; {_fit_advice(board, estimate['total'])}")

    pll = None
    clock_mhz = board.clock_mhz
    if abs(target - board.clock_mhz) > 1e-6:
        params, attrs, clock_mhz = ecp5_pll(board.clock_mhz, target)
        if abs(clock_mhz - target) > PLL_TOLERANCE * target:
            raise BoardError(f"the ECP5 PLL cannot make {target:g} MHz from the {board.clock_mhz:g} MHz oscillator: the "
                             f"nearest it reaches is {clock_mhz:g} MHz; pass --freq {clock_mhz:g}")
        pll = _pll_factory(params, attrs, clock_mhz)
        log(f"PLL: {board.clock_mhz:g} MHz -> {clock_mhz:g} MHz")
    divisor = int(round(clock_mhz * 1e6 / BAUD))

    stage = StagedDirectory.created(final, BoardError, "-o")
    try:
        return _build_in(stage, final, build, board, top, target, clock_mhz, pll, divisor, lut_primitives,
                         bist_samples, router, seed, verify, log, estimate)
    finally:
        stage.discard()


def _check_out_dir(out):
    """``out`` may be replaced only when it is a board build directory (or empty)."""
    if out.exists() and not out.is_dir():
        raise BoardError(f"{out} exists and is not a directory; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not any((out / name).exists() for name in (REPORT_FILE,
                                                                                          f"build_{NAME}.sh")):
        raise BoardError(f"{out} is not empty and is not a dlgn board build directory; dlgn bitstream never "
                         f"replaces it: choose another -o")


def check_freq(board, freq):
    """The clock to build for, in MHz: the board's oscillator, or ``freq`` when the board's PLL
    can make it (refused at once otherwise, with the range it can make)."""
    if freq is None:
        return board.clock_mhz
    if isinstance(freq, bool) or not isinstance(freq, (int, float)) or not math.isfinite(freq) or freq <= 0:
        raise BoardError(f"--freq must be a positive number of MHz, not {freq!r}")
    freq = float(freq)
    if abs(freq - board.clock_mhz) <= 1e-6:
        return freq
    if board.family != "ecp5":
        raise BoardError(f"--freq on {board.name} is not supported yet (no iCE40 PLL); its clock is "
                         f"{board.clock_mhz:g} MHz: drop --freq")
    low, high = ECP5_PLL_MHZ
    if not low <= freq <= high:
        raise BoardError(f"--freq {freq:g} MHz is outside what the ECP5 PLL can make ({low:g} to {high:g} MHz); "
                         f"choose a frequency in that range")
    return freq


def _build_in(stage, final, build, board, top, target, clock_mhz, pll, divisor, lut_primitives, bist_samples, router,
              seed, verify, log, estimate):
    """Build into the staging directory and put it in place as ``final``; returns the report."""
    from .tops import BistRunner, BoardTop, UartClassifier

    out = stage.path
    netlist = build.netlist

    extra = {"estimate": estimate}
    if lut_primitives and verify:
        from dlgn.compile.yosys import YosysError

        from .primitives import check_lut_equivalence

        start = time.perf_counter()
        try:
            with Ticker("proving the LUT-primitive core equal to the generic core (Yosys)"):
                check_lut_equivalence(lambda cell: _core(build, top == "uart", False, board.family, cell),
                                      board.family, out / "lut_equivalence")
        except YosysError as e:
            raise BoardError(f"the {board.family} LUT-primitive core is not equal to the generic core: {e}") from None
        extra["checks"] = {"lut_primitives_equal_to_generic_core": True,
                           "equivalence_seconds": round(time.perf_counter() - start, 1)}
        log(f"  LUT-primitive core == generic core (Yosys equivalence proof, "
            f"{extra['checks']['equivalence_seconds']} s)")
    core = _core(build, top == "uart", lut_primitives, board.family)
    if top == "uart":
        inner = UartClassifier(core, netlist.encoding, divisor)
        request = 1 + netlist.encoding.features
        response = 2 + SCORE_BYTES * netlist.classes
        samples_per_second = BAUD / 10 / (request + response)
    else:
        x, _y = load_test_set(build)
        n = _bist_samples(board, netlist.in_bits + core.class_width, bist_samples, len(x))
        rows, expected = bist_rows(build, n)
        inner = BistRunner(core, rows, divisor)
        samples_per_second = None  # one per clock: set from the clock below
        extra.update(bist_samples=n, bist_expected_correct=expected)
        log(f"BIST: {n} test samples in block RAM; the golden model gets {expected} right")
    wrapper = BoardTop(inner, clock=board.clock, pll=pll, leds=board.leds)

    platform = board.platform()
    nextpnr_opts = ["--report", f"{NAME}.report.json", "--timing-allow-fail", "--seed", str(seed)]
    if router or board.family == "ecp5":
        nextpnr_opts += ["--router", router or "router2"]
    if board.family == "ice40":
        nextpnr_opts += ["--freq", f"{clock_mhz:g}"]
    overrides = {
        "script_after_synth": f"tee -q -o {NAME}.stat.json stat -json",
        "nextpnr_opts": " ".join(nextpnr_opts),
    }
    log(f"elaborating the {top} top for {board.name} ({board.device}), {len(netlist.gates)} gates, "
        f"{'LUT primitives' if lut_primitives else 'logic expressions'}")
    env = tool_env(board.family)
    start = time.perf_counter()
    saved = {k: os.environ.get(k) for k in ("YOSYS",)}
    os.environ["YOSYS"] = env["YOSYS"]  # prepare() runs Yosys for the debug Verilog
    try:
        plan = platform.prepare(wrapper, name=NAME, **overrides)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    prepare_seconds = time.perf_counter() - start
    log(f"running Yosys, nextpnr and the packer for {final}")
    start = time.perf_counter()
    try:
        with Ticker("synthesis, place and route", lambda: toolchain_status(out, NAME)):
            plan.execute_local(str(out), env=env)
    except subprocess.CalledProcessError:
        _explain_failure(stage, final, board)
    total = time.perf_counter() - start
    synth_seconds = _mtime(out / f"{NAME}.json") - _start_time(start)
    pnr_end = _mtime(out / f"{NAME}.report.json")
    timings = {"prepare_seconds": round(prepare_seconds, 1), "synth_seconds": round(synth_seconds, 1),
               "pnr_seconds": round(pnr_end - _mtime(out / f"{NAME}.json"), 1), "build_seconds": round(total, 1)}

    bitstream = f"{NAME}.bit" if board.family == "ecp5" else f"{NAME}.bin"
    utilization, fmax = read_nextpnr_report(out / f"{NAME}.report.json")
    cells = read_yosys_stat(out / f"{NAME}.stat.json")
    comb, ff, bram = _RESOURCES[board.family]
    lut4_used, lut4_capacity = utilization.get(comb, (0, board.lut4))
    if board.family == "ice40":
        ff_used = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
    else:
        ff_used = utilization.get(ff, (0, 0))[0]
    achieved = min((a for a, _c in fmax.values()), default=None)
    # nextpnr's own verdict: every clock reaches its constraint (which it derives through the PLL).
    timing_met = bool(fmax) and all(a >= c for a, c in fmax.values())
    if samples_per_second is None:
        samples_per_second = clock_mhz * 1e6
    report = {
        "board": board.name,
        "device": board.device,
        "lut4": lut4_used,
        "ff": ff_used,
        "bram": utilization.get(bram, (0, 0))[0],
        "lut4_capacity": lut4_capacity,
        "fmax_mhz": round(achieved, 2) if achieved is not None else None,
        "target_mhz": round(clock_mhz, 3),
        "timing_met": bool(timing_met),
        "latency_cycles": core.latency,
        "samples_per_second": round(samples_per_second, 1),
        "tool_versions": tool_versions(board.family),
        # More detail (not part of the stable keys):
        "top": top,
        "gates": len(netlist.gates),
        "lut_primitives": bool(lut_primitives),
        "pipeline_every": int(build.report["pipeline_every"]),
        "output_every": int(build.report["output_every"]),
        "stage_latency": core.stage_latencies,
        "core_samples_per_second": round(clock_mhz * 1e6, 1),
        "utilization": {k: {"used": u, "available": a} for k, (u, a) in utilization.items()},
        "yosys_cells": cells,
        "fmax_by_clock": {k: {"achieved_mhz": round(a, 2), "constraint_mhz": round(c, 2)} for k, (a, c) in fmax.items()},
        "timings": timings,
        **extra,
    }
    report["bitstream"] = bitstream
    report["build_id"] = build.build_id
    if top == "uart":
        report["baud"] = BAUD
    atomic_write_text(out / REPORT_FILE, json.dumps(report, indent=1) + "\n")
    stage.commit()
    out = final
    log(f"wrote {out / bitstream} and {REPORT_FILE}: {lut4_used}/{lut4_capacity} LUT4, {ff_used} FF, "
        f"{report['bram']} BRAM, Fmax {report['fmax_mhz']} MHz (target {clock_mhz:g}), "
        f"synthesis {timings['synth_seconds']} s, place and route {timings['pnr_seconds']} s")
    if not timing_met:
        k, s_out = report["pipeline_every"], report["output_every"]
        if k != 1 or s_out != 1:
            stages = "recompile with a register after every level (dlgn compile --pipeline-every 1 --output-every 1)"
        else:
            stages = f"the core already has a register after every level: see the critical path in {out / (NAME + '.tim')}"
        raise BoardError(f"timing not met on {board.name}: Fmax {report['fmax_mhz']} MHz < target {clock_mhz:g} MHz "
                         f"(latency {core.latency} cycles, registers every {k} gate levels and every {s_out} output "
                         f"levels). The bitstream and {REPORT_FILE} are in {out}, but do not trust the board at this "
                         f"clock: lower --freq to at most {math.floor(achieved or 0)}, or {stages}, or use a smaller "
                         f"model with local wiring")
    return report


def _start_time(perf_start):
    # Wall-clock time of the build's start, to compare with file modification times.
    return time.time() - (time.perf_counter() - perf_start)


def _mtime(path):
    try:
        return path.stat().st_mtime
    except OSError:
        return float("nan")


def _pll_factory(params, attrs, achieved_mhz):
    from amaranth.hdl import Instance, Signal

    def pll(m, clk_in):
        clk_out, locked = Signal(), Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            **{f"a_{k}": v for k, v in attrs.items()},
            **{f"p_{k}": v for k, v in params.items()},
            i_RST=0, i_STDBY=0, i_CLKI=clk_in, o_CLKOP=clk_out, i_CLKFB=clk_out,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0,
            i_ENCLKOP=0, o_LOCK=locked)
        return clk_out, locked

    pll.achieved_mhz = achieved_mhz
    return pll


def _keep_failed(stage, final):
    """Move a failed build's staging directory to ``FINAL-failed`` (its logs), leaving ``final`` as it was."""
    failed = final.with_name(final.name + "-failed")
    if failed.exists():
        shutil.rmtree(failed)
    os.replace(stage.path, failed)
    return failed


def _explain_failure(stage, final, board):
    out = _keep_failed(stage, final)
    logs = {name: (out / name).read_text(errors="replace") if (out / name).is_file() else ""
            for name in (f"{NAME}.rpt", f"{NAME}.tim")}
    pnr = logs[f"{NAME}.tim"]
    utilization = nextpnr_utilization_from_log(pnr)
    over = {k: (u, a) for k, (u, a) in utilization.items() if u > a}
    if over or re.search(r"only has|no BELs remaining|not enough|Unable to place", pnr):
        figures = ", ".join(f"{k} {u}/{a}" for k, (u, a) in (over or utilization).items()) or "see the log"
        needed = max((u for u, _a in over.values()), default=board.lut4 + 1)
        raise BoardError(f"the design does not fit {board.name} ({board.device}): {figures} used/available; "
                         f"{_fit_advice(board, needed)}. "
                         f"Log: {out / (NAME + '.tim')}")
    for name, text in logs.items():
        errors = [line for line in text.splitlines() if "ERROR" in line]
        if errors:
            raise BoardError(f"{'nextpnr' if name.endswith('.tim') else 'Yosys'} failed: {errors[-1].strip()} "
                             f"(log: {out / name})")
    raise BoardError(f"the board build failed; see {out / (NAME + '.rpt')} (Yosys) and {out / (NAME + '.tim')} (nextpnr)")
