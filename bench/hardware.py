"""Hardware table: a trained run on a board for several pipeline settings (DESIGN §4).

    python bench/hardware.py RUN_DIR [--board ulx3s] [--pipeline 0 1 2 4] [--top bist] [--freq 100]
                             [--work DIR] [--verify] [--results FILE] [--timeout SECONDS]

For each K in ``--pipeline`` the run is compiled with ``--pipeline-every K --output-every K``
(K = 0: combinational; ``--output-every S`` sets the adder/argmax stages apart), its core synthesized hierarchically for the board's family to split the
LUT4 count between the gates (``core``) and the group sum + argmax, and a full bitstream built with
``dlgn bitstream`` for the FF count, Fmax and latency. A design that misses timing at ``--freq`` is
still recorded (with its Fmax). The Yosys proof that the LUT-primitive core equals the generic core
(part of every ``dlgn bitstream``) is skipped unless ``--verify``: it does not change the figures
and takes minutes on large nets. Writes ``bench/results/hw-<board>-<run>-<date>.json`` and prints a table.
"""

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK_SCRIPT = ("read_rtlil {il}; synth_{family} -noflatten -top dlgn_core; tee -q -o {stat} stat -json")


def block_luts(build_dir, family, work):
    """LUT4 (and carry cells) per block of the LUT-primitive core: ``{block: {cell: count}}`` and seconds."""
    from amaranth.back import rtlil

    from dlgn.boards.bitstream import _core
    from dlgn.compile.builddir import load_build
    from dlgn.compile.yosys import run_yosys
    from dlgn.hdl.top import verilog_ports

    build = load_build(build_dir)
    core = _core(build, False, True, family)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "core_lut.il").write_text(rtlil.convert(core, name="dlgn_core", ports=verilog_ports(core), emit_src=False))
    start = time.perf_counter()
    run_yosys(BLOCK_SCRIPT.format(il="core_lut.il", family=family, stat="blocks.json"), cwd=work, log_name="blocks.log")
    seconds = time.perf_counter() - start
    text = (work / "blocks.json").read_text()
    stat = json.loads(text[text.index("{"):])
    blocks = {}
    for module, info in stat.get("modules", {}).items():
        name = module.strip("\\").split(".")[-1] if "." in module else "top"
        blocks[name] = {k: int(v) for k, v in info.get("num_cells_by_type", {}).items() if not k.startswith("$")}
    return blocks, seconds, len(build.netlist.gates)


def layered_netlist(features=784, thresholds=3, widths=(1200, 1200, 1200), classes=10, arity=4, window=None,
                    seed=0):
    """A synthetic net shaped like a trained Fashion-MNIST one, for routability experiments: input
    bit ``f*T + t`` is ``feature f > threshold t``; every gate of a layer reads ``arity`` signals of
    the previous layer, anywhere (``window=None``, random wiring) or from a ``window``-wide slice
    centred on its own relative position (local wiring); the last layer's gates are dealt to the
    classes in turn (class ``c`` owns gates ``c, c + classes, ...``)."""
    import numpy as np

    from dlgn.compile.netlist import InputEncoding, Netlist

    rng = np.random.default_rng(seed)
    in_bits = features * thresholds
    steps = [int(256 * (t + 1) / (thresholds + 1)) for t in range(thresholds)]
    encoding = InputEncoding.from_thresholds([steps] * features)
    previous = list(range(2, 2 + in_bits))
    gates = []
    for width in widths:
        layer = []
        for g in range(width):
            if window is None:
                picks = rng.choice(len(previous), size=arity, replace=False)
            else:
                centre = int((g + 0.5) * len(previous) / width)
                lo = min(max(0, centre - window // 2), len(previous) - window)
                picks = lo + rng.choice(window, size=arity, replace=False)
            layer.append(2 + in_bits + len(gates))
            gates.append((tuple(previous[int(i)] for i in picks), int(rng.integers(1, (1 << (1 << arity)) - 1))))
        previous = layer
    groups = [previous[c::classes] for c in range(classes)]
    return Netlist(in_bits, gates, groups, encoding=encoding, source={"synthetic": "layered", "window": window})


def _board_build(build, board, args):
    """``dlgn bitstream`` for one build in a child process (its own process group, so a place and
    route that runs past ``--timeout`` is stopped with its nextpnr). Returns ``(report, error)``;
    for a stopped build the report holds what nextpnr's log says (utilization, placed Fmax estimate)."""
    import os
    import re
    import signal
    import subprocess

    from dlgn.boards.toolchain import nextpnr_utilization_from_log

    out = build / board.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "hw_report.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "dlgn", "bitstream", str(build), "--board", board.name, "-o", str(out),
           "--top", args.top, "--freq", f"{args.freq:g}"] + ([] if args.verify else ["--no-verify"])
    log_path = out / "bench-build.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=args.timeout or None)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = round(time.perf_counter() - start, 1)
    report_path = out / "hw_report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        error = None if proc.returncode == 0 else log_path.read_text().strip().splitlines()[-1]
        return report, error
    tim = (out / "top.tim").read_text(errors="replace") if (out / "top.tim").is_file() else ""
    utilization = nextpnr_utilization_from_log(tim)
    placed = re.findall(r"Max frequency for clock '[^']*': ([0-9.]+) MHz", tim)
    overuse = re.findall(r"iter=(\d+) wires=\d+ overused=(\d+)", tim)
    report = {"lut4": utilization.get("TRELLIS_COMB", utilization.get("ICESTORM_LC", (None, None)))[0],
              "ff": utilization.get("TRELLIS_FF", (None, None))[0], "bram": utilization.get("DP16KD", (None, None))[0],
              "lut4_capacity": board.lut4, "target_mhz": args.freq, "timing_met": False,
              "placed_fmax_estimate_mhz": float(placed[0]) if placed else None, "timings": {"build_seconds": seconds}}
    if proc.returncode == -signal.SIGKILL:
        last = f"; router2 iteration {overuse[-1][0]} still had {overuse[-1][1]} overused wires" if overuse else ""
        error = f"did not finish within --timeout {args.timeout:g} s{last} (log: {out / 'top.tim'})"
    else:
        error = log_path.read_text().strip().splitlines()[-1] if log_path.stat().st_size else "the build failed"
    return report, error


def _lut4(cells):
    # A CCU2C (ECP5) is two LUT4s with carry logic; SB_CARRY (iCE40) shares the LUT it sits beside.
    return cells.get("LUT4", 0) + cells.get("SB_LUT4", 0) + 2 * cells.get("CCU2C", 0)


def main(argv=None):
    from dlgn.boards.targets import get_board
    from dlgn.compile.build import compile_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--board", default="ulx3s")
    parser.add_argument("--pipeline", type=int, nargs="+", default=[0, 1, 2, 4], metavar="K")
    parser.add_argument("--output-every", type=int, default=None, metavar="S",
                        help="register every S adder/argmax levels (default: the same K as the gates)")
    parser.add_argument("--top", choices=("uart", "bist"), default="bist")
    parser.add_argument("--freq", type=float, default=100.0, help="target clock in MHz (default 100)")
    parser.add_argument("--work", default=None, help="build directories (default: RUN_DIR/hw-bench)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds one board build may take before it is stopped and recorded as unfinished "
                             "(default 3600; 0: no limit)")
    parser.add_argument("--verify", action="store_true", help="also run the LUT-primitive equivalence proof")
    parser.add_argument("--results", default=None, help="result file (default: bench/results/hw-<board>-<run>-<date>.json)")
    args = parser.parse_args(argv)
    board = get_board(args.board)
    work = Path(args.work) if args.work else Path(args.run_dir) / "hw-bench"
    rows = []
    for k in args.pipeline:
        s_out = k if args.output_every is None else args.output_every
        build = work / (f"k{k}" if s_out == k else f"k{k}s{s_out}")
        start = time.perf_counter()
        compile_run(args.run_dir, build, pipeline_every=k, output_every=s_out, verify=False, log=lambda *a: None)
        compile_seconds = time.perf_counter() - start
        blocks, block_seconds, gates = block_luts(build, board.family, build / "blocks")
        core_lut4 = _lut4(blocks.get("core", {}))
        output_lut4 = _lut4(blocks.get("group_sum", {})) + _lut4(blocks.get("argmax", {}))
        row = {"pipeline_every": k, "output_every": s_out, "gates": gates, "core_lut4": core_lut4,
               "group_sum_argmax_lut4": output_lut4, "lut4_per_gate": round(core_lut4 / gates, 3) if gates else None,
               "blocks": blocks, "compile_seconds": round(compile_seconds, 1),
               "block_synth_seconds": round(block_seconds, 1)}
        report, row["error"] = _board_build(build, board, args)
        for key in ("lut4", "ff", "bram", "lut4_capacity", "fmax_mhz", "target_mhz", "timing_met", "latency_cycles",
                    "samples_per_second", "timings"):
            row[key] = report.get(key)
        if report.get("placed_fmax_estimate_mhz") is not None:
            row["placed_fmax_estimate_mhz"] = report["placed_fmax_estimate_mhz"]
        row["max_samples_per_second"] = round(report["fmax_mhz"] * 1e6) if report.get("fmax_mhz") else None
        rows.append(row)
        print(f"K={k}: {row['core_lut4']} core LUT4 ({row['lut4_per_gate']}/gate), {output_lut4} group sum+argmax, "
              f"{row['lut4']} LUT4 total, {row['ff']} FF, Fmax {row['fmax_mhz']} MHz, latency {row['latency_cycles']}"
              f"{'' if not row['error'] else ' -- ' + row['error'][:120]}", flush=True)
    best = max((r for r in rows if r.get("fmax_mhz")), key=lambda r: r["fmax_mhz"], default=None)
    result = {"run_dir": str(args.run_dir), "board": board.name, "device": board.device, "top": args.top,
              "target_mhz": args.freq, "rows": rows,
              "best_fmax_mhz": best["fmax_mhz"] if best else None,
              "best_pipeline_every": best["pipeline_every"] if best else None,
              "date": datetime.date.today().isoformat()}
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.results) if args.results else \
        RESULTS / f"hw-{board.name}-{Path(args.run_dir).resolve().name}-{result['date']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'K':>2} {'S':>2} {'gates':>6} {'core':>7} {'/gate':>6} {'sum+max':>8} {'LUT4':>7} {'FF':>7} {'Fmax':>7} "
          f"{'lat':>4} {'samples/s':>11}")
    for r in rows:
        print(f"{r['pipeline_every']:>2} {r['output_every']:>2} {r['gates']:>6} {r['core_lut4']:>7} {r['lut4_per_gate']:>6} "
              f"{r['group_sum_argmax_lut4']:>8} {r['lut4'] or '-':>7} {r['ff'] or '-':>7} {r['fmax_mhz'] or '-':>7} "
              f"{r['latency_cycles'] if r['latency_cycles'] is not None else '-':>4} {r['max_samples_per_second'] or '-':>11}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
