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
from dlgn.compile.estimate import arrival_thresholds, design_estimate, encoder_size
from dlgn.safety import StagedDirectory, atomic_write_text

from .errors import BoardError
from .progress import Ticker, toolchain_status
from .protocol import BAUD, SCORE_BYTES
from .targets import get_board
from .toolchain import (nextpnr_routing_from_log, nextpnr_utilization_from_log, read_nextpnr_report, read_yosys_stat, tool_env,
                        tool_versions, ecp5_pll)

__all__ = ["TOPS", "REPORT_FILE", "REPORT_KEYS", "BLOCKS", "POPCOUNT_CHOICES", "AUTO_POPCOUNT", "build_bitstream",
           "load_test_set", "bist_rows", "check_freq", "resolve_popcount", "ECP5_PLL_MHZ"]

TOPS = ("uart", "bist")
REPORT_FILE = "hw_report.json"
NAME = "top"
#: The stable keys of ``hw_report.json`` (outside checks read them); more keys may follow them.
REPORT_KEYS = ("board", "device", "lut4", "ff", "bram", "lut4_capacity", "fmax_mhz", "target_mhz", "timing_met",
               "latency_cycles", "samples_per_second", "tool_versions", "popcount", "summed_bits", "blocks")
#: The blocks of ``hw_report.json``'s ``blocks`` (outside checks read these names).
BLOCKS = ("encoder", "core", "group_sum", "argmax", "io")
#: ``--popcount`` choices: ``auto`` or one of the group sum's implementations (hdl/group_sum.py).
POPCOUNT_CHOICES = ("auto", "adder", "compressor", "chain")
#: What ``--popcount auto`` builds per family: the smallest output stage that keeps Fmax, as
#: measured (bench/results/popcount-*.json). ECP5: the LUT compressor tree (2.04 LUT4-equivalents
#: per summed bit against the adder tree's 2.87, and a higher Fmax); iCE40: the adder tree (Yosys
#: puts its adders on SB_CARRY inside the logic cells: 1.66 cells per bit against 2.04).
AUTO_POPCOUNT = {"ecp5": "compressor", "ice40": "adder"}
BIST_MAX_SAMPLES = 1024
#: ``--bist-memory``: where the bist top holds its samples (see :class:`~dlgn.boards.tops.BistRunner`).
BIST_MEMORIES = ("bram", "lut")
#: Samples the bist top holds in LUT ROM unless ``--bist-samples`` says otherwise (3 LUT4 per
#: input bit at most: two 16-entry pieces and their multiplexer).
LUT_BIST_SAMPLES = 32
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


#: The most memory words one BIST sample may be split into (one sample every that many clocks).
BIST_MAX_WORDS = 16


def lut_rom_cells(row_width, samples):
    """LUT4s of a ``samples``-deep LUT ROM of ``row_width`` columns (an upper bound: constant
    columns cost nothing): a LUT4 per 16 entries, and a LUT for each 2:1 multiplexer joining them
    (see :meth:`~dlgn.boards.tops.BistRunner._rom_column`)."""
    pieces = -(-samples // 16)
    return row_width * (2 * pieces - 1)


def _bist_samples(board, row_width, requested, available):
    """``(samples, words)``: how many test samples the BIST holds on ``board`` and in how many
    memory words each is stored (1: one sample per clock; more when a whole sample per row would
    need more than half the board's block RAMs)."""
    width, depth = _BRAM_WIDTH[board.family]
    blocks = board.bram_bits // (18432 if board.family == "ecp5" else 4096)
    budget = max(1, blocks // 2)  # leave half the block RAM for the design
    for words in range(1, BIST_MAX_WORDS + 1):
        columns = math.ceil(math.ceil(row_width / words) / width)
        if columns <= budget:
            break
    else:  # columns is now the need at BIST_MAX_WORDS words
        raise BoardError(f"a BIST sample is {row_width} bits wide and needs {math.ceil(row_width / width)} block RAMs "
                         f"per {depth} samples ({columns} split into {BIST_MAX_WORDS} words); {board.name} has {blocks}, of which the BIST "
                         f"may use {budget}. Use the uart top, or a larger board")
    fit = (budget // columns) * depth // words
    n = min(available, requested or BIST_MAX_SAMPLES, fit, 65535)
    return n, words


def resolve_popcount(popcount, family):
    """The group sum implementation ``--popcount`` asks for on ``family`` (``auto``: :data:`AUTO_POPCOUNT`)."""
    if popcount not in POPCOUNT_CHOICES:
        raise BoardError(f"unknown --popcount {popcount!r}; choose one of {', '.join(POPCOUNT_CHOICES)}")
    return AUTO_POPCOUNT[family] if popcount == "auto" else popcount


def uart_encodes_on_arrival(netlist):
    """Whether the ``uart`` top encodes ``netlist``'s features as they arrive (its core then takes
    encoded bits; see :class:`~dlgn.boards.tops.UartClassifier`)."""
    encoding = netlist.encoding
    return encoding is not None and arrival_thresholds(encoding.bits, encoding.feature_width) is not None


def _core(build, encoder, lut_primitives, family, lut_cell=None, popcount="adder"):
    """The board's :class:`~dlgn.hdl.top.DlgnCore`; with ``lut_primitives`` every gate (and the
    group sum's LUTs and carry chains, for a plan ``popcount``) is a device cell."""
    from dlgn.hdl.top import DlgnCore

    from .primitives import carry_chain_for, lut_cell_for

    report, netlist = build.report, build.netlist
    carry_chain = None
    if lut_primitives:
        lut_cell = lut_cell_for(family)
        carry_chain = carry_chain_for(family)
    return DlgnCore(netlist.in_bits, netlist.gates, netlist.groups,
                    encoding=netlist.encoding if encoder else None,
                    pipeline_every=int(report["pipeline_every"]), output_every=int(report["output_every"]),
                    lut_cell=lut_cell, popcount=popcount, carry_chain=carry_chain)


def _group_sum(build, family, popcount):
    """The build's group sum (plain logic; for its sizes and groups, never elaborated)."""
    core = _core(build, False, False, family, popcount=popcount)
    for part in (core, core.core, core.group_sum, core.argmax):
        part._MustUse__used = True
    return core.group_sum


def _fit_advice(board, needed):
    from .targets import BOARDS

    larger = sorted((b for b in BOARDS.values() if b.lut4 > max(needed, board.lut4)), key=lambda b: b.lut4)
    board_hint = f"a larger board (--board {larger[0].name}, {larger[0].lut4} LUT4)" if larger else "a larger device"
    return f"train a smaller model (fewer gates per layer: --set model.width=...) or use {board_hint}"


def build_bitstream(build_dir, board_name, out_dir=None, *, top="uart", freq=None, lut_primitives=True,
                    bist_samples=None, router=None, seed=1, verify=True, popcount="auto", blocks=True,
                    bist_memory="bram", log=print):
    """Build ``top.bit`` and ``hw_report.json`` for ``board_name`` in ``out_dir`` (default
    ``build_dir/<board>``); returns the report. Raises :class:`BoardError` (one message, with the
    figures and what to change) when the design does not fit or misses timing.

    The build runs in a staging directory that replaces ``out_dir`` only when it has a
    bitstream: an interrupted or failed build leaves the previous one whole (a failed build's
    logs are kept in ``OUT_DIR-failed``).

    ``popcount`` chooses the group sum (``auto``: :data:`AUTO_POPCOUNT`); with ``verify`` a plan is
    proved equal to the reference adder tree (:func:`~dlgn.boards.primitives.prove_group_sum`).
    ``blocks`` runs a second synthesis with the blocks kept apart for ``hw_report.json``'s
    ``blocks`` (in parallel with place and route). ``bist_memory`` (``--top bist``): the samples in
    block RAM (``bram``) or in a LUT ROM (``lut``, :data:`LUT_BIST_SAMPLES` unless ``bist_samples``)."""
    board = get_board(board_name)
    popcount = resolve_popcount(popcount, board.family)
    if bist_samples is not None and bist_samples < 1:
        raise BoardError(f"--bist-samples must be at least 1, not {bist_samples}")
    if top not in TOPS:
        raise BoardError(f"unknown top {top!r}; choose one of {', '.join(TOPS)}")
    if bist_memory not in BIST_MEMORIES:
        raise BoardError(f"unknown --bist-memory {bist_memory!r}; choose one of {', '.join(BIST_MEMORIES)}")
    if bist_memory != "bram" and top != "bist":
        raise BoardError(f"--bist-memory {bist_memory} is for the bist top: add --top bist or drop --bist-memory")
    target = check_freq(board, freq)
    build = load_build(build_dir)
    final = Path(out_dir) if out_dir is not None else Path(build_dir) / board.name
    _check_out_dir(final)
    netlist = build.netlist
    if netlist.encoding is None:
        raise BoardError(f"{build.path}: the netlist has no input encoding; the board tops need one (raw features)")

    # Refuse a design that cannot fit before spending minutes in synthesis: the whole design
    # (encoder, gates, group sum, argmax, UART or BIST), as the compiler estimates it.
    group_sum = _group_sum(build, board.family, popcount)
    # the encoder's size from the netlist itself (a build compiled before the uart top encoded on
    # arrival has no arrival_* counts in its report)
    report = dict(build.report, encoder_size=encoder_size(netlist))
    estimate = design_estimate(report, board.family, top, popcount=popcount, group_sum_cells=group_sum.adder_bits)
    if top == "bist" and bist_memory == "lut":  # the ROM's size is known now: count it, and build that many
        bist_samples = min(bist_samples or LUT_BIST_SAMPLES, len(load_test_set(build)[0]), 65535)
        estimate["bist_rom"] = lut_rom_cells(netlist.in_bits + max(1, (netlist.classes - 1).bit_length()), bist_samples)
        estimate["total"] += estimate["bist_rom"]
    if estimate["total"] > board.lut4:
        parts = ", ".join(f"{k} {v}" for k, v in estimate.items() if k != "total" and v)
        advice = ("hold fewer samples (--bist-samples) or " if "bist_rom" in estimate else "") + \
            _fit_advice(board, estimate["total"])
        raise BoardError(f"the design does not fit {board.name} ({board.device}): about {estimate['total']} logic "
                         f"cells ({parts}) against {board.lut4} on the device; {advice}")

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
                         bist_samples, router, seed, verify, log, estimate, popcount, blocks, bist_memory)
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
              seed, verify, log, estimate, popcount, want_blocks, bist_memory="bram"):
    """Build into the staging directory and put it in place as ``final``; returns the report."""
    from .tops import BistRunner, BoardTop, UartClassifier

    out = stage.path
    netlist = build.netlist
    # the uart top encodes each byte on arrival when the features share their thresholds; the
    # core's own encoder (raw features in) only for per-feature thresholds
    core_encoder = top == "uart" and not uart_encodes_on_arrival(netlist)

    extra = {"estimate": estimate}
    if lut_primitives and verify:
        from dlgn.compile.yosys import YosysError

        from .primitives import check_lut_equivalence

        start = time.perf_counter()
        try:
            with Ticker("proving the LUT-primitive core equal to the generic core (Yosys)"):
                check_lut_equivalence(lambda cell: _core(build, core_encoder, False, board.family, cell),
                                      board.family, out / "lut_equivalence")
        except YosysError as e:
            raise BoardError(f"the {board.family} LUT-primitive core is not equal to the generic core: {e}") from None
        extra["checks"] = {"lut_primitives_equal_to_generic_core": True,
                           "equivalence_seconds": round(time.perf_counter() - start, 1)}
        log(f"  LUT-primitive core == generic core (Yosys equivalence proof, "
            f"{extra['checks']['equivalence_seconds']} s)")
    if verify and popcount != "adder":
        extra.setdefault("checks", {})["group_sum"] = _prove_group_sum(build, board, popcount, lut_primitives,
                                                                       out / "group_sum_equivalence", log)
    core = _core(build, core_encoder, lut_primitives, board.family, popcount=popcount)
    if top == "uart":
        inner = UartClassifier(core, netlist.encoding, divisor)
        extra["uart_encoding"] = "core_encoder" if core_encoder else "on_arrival"
        request = 1 + netlist.encoding.features
        response = 2 + SCORE_BYTES * netlist.classes
        samples_per_second = BAUD / 10 / (request + response)
    else:
        if bist_memory == "lut":
            n, words = bist_samples, 1  # sized by build_bitstream
        else:
            available = len(load_test_set(build)[0])
            n, words = _bist_samples(board, netlist.in_bits + core.class_width, bist_samples, available)
        rows, expected = bist_rows(build, n)
        rom_cell = None
        if bist_memory == "lut" and lut_primitives:
            from .primitives import lut_cell_for

            rom_cell = lut_cell_for(board.family)
        inner = BistRunner(core, rows, divisor, words=words, memory=bist_memory, lut_cell=rom_cell)
        samples_per_second = None  # one every `words` clocks: set from the clock below
        clocks_per_sample = words
        extra.update(bist_samples=n, bist_expected_correct=expected, bist_words_per_sample=words,
                     bist_memory=bist_memory)
        where = "in a LUT ROM" if bist_memory == "lut" else "in block RAM"
        log(f"BIST: {n} test samples {where}" + (f", {words} words each (one sample every {words} clocks)"
                                                 if words > 1 else "") + f"; the golden model gets {expected} right")
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
    stats = _start_block_synthesis(plan, out / "blocks", board.family, env["YOSYS"]) if want_blocks else None
    log(f"running Yosys, nextpnr and the packer for {final}")
    start = time.perf_counter()
    try:
        with Ticker("synthesis, place and route", lambda: toolchain_status(out, NAME)):
            plan.execute_local(str(out), env=env)
    except subprocess.CalledProcessError:
        _stop(stats)
        _explain_failure(stage, final, board, pipeline_every=int(build.report.get("pipeline_every", 0)))
    except BaseException:
        _stop(stats)
        raise
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
        samples_per_second = clock_mhz * 1e6 / clocks_per_sample
    if stats is not None:
        try:
            with Ticker("synthesis with the blocks kept apart (hw_report.json blocks)"):
                blocks = _finish_block_synthesis(stats, board.family, cells)
        except BoardError as e:  # the bitstream is good: keep it, say what is missing
            log(f"warning: {e}; hw_report.json has no blocks")
            blocks = {"blocks": None, "blocks_error": str(e)}
        else:
            bits = summed_bits(core.group_sum)
            blocks["group_sum_lut4_equivalent_per_summed_bit"] = (
                round(blocks["blocks"]["group_sum"]["lut4_equivalent"] / bits, 3) if bits else None)
        extra.update(blocks)
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
        "popcount": popcount,
        "summed_bits": summed_bits(core.group_sum),
        "blocks": extra.pop("blocks", None),
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
        "routing": nextpnr_routing_from_log(_read_log(out / f"{NAME}.tim")),
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


def summed_bits(group_sum):
    """Bits the group sum adds: the group members of every class (constant members excluded)."""
    return sum(len(g) for g in group_sum._groups)


def _prove_group_sum(build, board, popcount, lut_primitives, workdir, log):
    from dlgn.compile.yosys import YosysError

    from .primitives import prove_group_sum

    group_sum = _group_sum(build, board.family, popcount)
    start = time.perf_counter()
    try:
        with Ticker(f"proving the {popcount} group sum equal to the adder tree"):
            proved = prove_group_sum(group_sum._width, group_sum._groups, group_sum._ones, popcount, board.family,
                                     workdir, lut_primitives=lut_primitives)
    except (YosysError, ValueError) as e:
        raise BoardError(f"the {popcount} group sum on {board.family} is not equal to the adder tree: {e}") from None
    proved["equal_to_adder_tree"] = True
    proved["seconds"] = round(time.perf_counter() - start, 1)
    log(f"  {popcount} group sum == adder tree (plan checked cell by cell, device cells proved with Yosys, "
        f"{proved['seconds']} s)")
    return proved


#: The DlgnCore blocks as Amaranth names their modules in the board top (BoardTop > inner > core).
_BLOCK_MODULES = {"encoder": "top.inner.core.encoder", "core": "top.inner.core.core",
                  "group_sum": "top.inner.core.group_sum", "argmax": "top.inner.core.argmax"}
#: Where a block's module may be instead: the uart top that encodes on arrival has its comparators
#: beside the core (its sample register is ``io``).
_BLOCK_MODULES_ALT = {"encoder": "top.inner.encoder"}
#: family -> synthesis command (as Amaranth's build script runs it) and cell type -> kind.
_BLOCK_SYNTH = {"ecp5": "synth_ecp5 -top top", "ice40": "synth_ice40 -top top"}


def _cell_kind(family, cell):
    if family == "ecp5":
        return {"LUT4": "lut4", "CCU2C": "carry", "TRELLIS_FF": "ff", "PFUMX": "pfumx", "L6MUX21": "l6mux21",
                "DP16KD": "bram"}.get(cell, "other")
    if cell.startswith("SB_DFF"):
        return "ff"
    return {"SB_LUT4": "lut4", "SB_CARRY": "carry", "SB_RAM40_4K": "bram"}.get(cell, "other")


def _start_block_synthesis(plan, work, family, yosys):
    """Start (in the background) a synthesis of the board top that keeps the four DlgnCore blocks
    as modules of their own (``keep_hierarchy``), with the command the build itself runs, and
    ``stat`` per module."""
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{NAME}.il").write_text(plan.files[f"{NAME}.il"] if isinstance(plan.files[f"{NAME}.il"], str)
                                     else plan.files[f"{NAME}.il"].decode())
    keep = " ".join(list(_BLOCK_MODULES.values()) + list(_BLOCK_MODULES_ALT.values()))
    script = (f"read_rtlil {NAME}.il; hierarchy -top {NAME}; setattr -mod -set keep_hierarchy 1 {keep}; "
              f"{_BLOCK_SYNTH[family]}; tee -q -o blocks.stat.json stat -json")
    log = open(work / "blocks.log", "w")
    process = subprocess.Popen([yosys, "-q", "-p", script], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return process, work


def _stop(stats):
    if stats is not None and stats[0].poll() is None:
        stats[0].kill()
        stats[0].wait()


def _finish_block_synthesis(stats, family, flat_cells):
    """``{"blocks": ..., "blocks_method": ...}`` for ``hw_report.json``: per block its LUT4, carry
    cells and flip-flops (ECP5 also PFUMX / L6MUX21 and ``lut4_equivalent``: LUT4 + 2 per CCU2C + half a
    mux) from the hierarchical synthesis. The four DlgnCore blocks are that synthesis' modules, ``io``
    the rest of it (the top module's own cells), so the five add up to its total exactly;
    ``hierarchical_total`` and ``flat_total`` (the build's own synthesis, ``yosys_cells``) show how
    far the two syntheses differ (keeping modules apart stops optimization across their ports)."""
    process, work = stats
    if process.wait() != 0:
        tail = " ".join((work / "blocks.log").read_text(errors="replace").strip().splitlines()[-3:])
        raise BoardError(f"the block statistics synthesis failed: {tail} (log: {work / 'blocks.log'})")
    try:
        text = (work / "blocks.stat.json").read_text()
        modules = json.loads(text[text.index("{"):]).get("modules", {})
    except (OSError, ValueError) as e:
        raise BoardError(f"the block statistics are unreadable ({e})") from None

    def tally(cells):
        kinds = {}
        for cell, n in cells.items():
            if cell.startswith("$") or cell.startswith("top."):
                continue
            kind = _cell_kind(family, cell)
            kinds[kind] = kinds.get(kind, 0) + int(n)
        return kinds

    per_module = {name.lstrip("\\"): tally(m.get("num_cells_by_type", {})) for name, m in modules.items()}
    flat = tally(flat_cells)
    kinds = ("lut4", "carry", "ff") + (("pfumx", "l6mux21") if family == "ecp5" else ())
    blocks = {}
    for block, module in _BLOCK_MODULES.items():
        if module not in per_module and _BLOCK_MODULES_ALT.get(block) in per_module:
            module = _BLOCK_MODULES_ALT[block]
        found = per_module.get(module, {})
        blocks[block] = {k: found.get(k, 0) for k in kinds}
    hierarchical = {k: sum(m.get(k, 0) for m in per_module.values()) for k in kinds}
    blocks["io"] = {k: hierarchical[k] - sum(blocks[b][k] for b in _BLOCK_MODULES) for k in kinds}
    for b in blocks.values():
        b["lut4_equivalent"] = (b["lut4"] + 2 * b["carry"] + 0.5 * (b.get("pfumx", 0) + b.get("l6mux21", 0))
                                if family == "ecp5" else b["lut4"])
    total = sum(b["lut4_equivalent"] for b in blocks.values())
    output = blocks["group_sum"]["lut4_equivalent"] + blocks["argmax"]["lut4_equivalent"]
    return {"blocks": blocks,
            "output_stage_share": round(output / total, 4) if total else None,
            "blocks_method": {"hierarchical_total": hierarchical, "flat_total": {k: flat.get(k, 0) for k in kinds},
                              "how": "a second synthesis of top.il with the encoder, core, group_sum and argmax modules "
                                     "kept (keep_hierarchy), stat per module; io: the rest of it (top module)"}}


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


def _read_log(path):
    """A log's text, ``""`` when it is not there."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _keep_failed(stage, final):
    """Move a failed build's staging directory to ``FINAL-failed`` (its logs), leaving ``final`` as it was."""
    failed = final.with_name(final.name + "-failed")
    if failed.exists():
        shutil.rmtree(failed)
    os.replace(stage.path, failed)
    return failed


def _explain_failure(stage, final, board, pipeline_every=0):
    out = _keep_failed(stage, final)
    logs = {name: _read_log(out / name) for name in (f"{NAME}.rpt", f"{NAME}.tim")}
    pnr = logs[f"{NAME}.tim"]
    utilization = nextpnr_utilization_from_log(pnr)
    over = {k: (u, a) for k, (u, a) in utilization.items() if u > a}
    if not over and "Unable to find legal placement" in pnr:
        # Below 100% of every cell type and still no placement: on ECP5 a slice's two flip-flops
        # share clock enable and reset, so a design heavy in pipeline registers runs out of slices
        # first (the 25F model of 2026-12-03: 68% LUT4 and 59% FF, placed with one stage after the core)
        figures = ", ".join(f"{k} {u}/{a} ({u / a:.0%})" for k, (u, a) in utilization.items()
                            if k in ("TRELLIS_COMB", "TRELLIS_FF", "ICESTORM_LC") and a) or "see the log"
        stages = (f"compile with fewer register stages (dlgn compile RUN --pipeline-every K with K above "
                  f"{pipeline_every}, e.g. the network's depth for one stage after it; make bitstream "
                  f"PIPELINE_EVERY=K), or " if pipeline_every else "")
        raise BoardError(f"nextpnr found no legal placement on {board.name} ({board.device}) with {figures} used: "
                         f"{stages}train a model with more room (dlgn train --fit {board.name} --fit-margin 0.3). "
                         f"Log: {out / (NAME + '.tim')}")
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
