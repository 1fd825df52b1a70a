"""Each popcount on real board builds: the output stage's share of the whole design.

For every build directory, board, top and popcount given, runs ``dlgn bitstream`` (the group sum
proved equal to the adder tree unless ``--no-verify``) and records from ``hw_report.json`` the
blocks, the output stage's share, LUT4-equivalents per summed bit, the packed logic cells, FF,
Fmax and build time. Adds the rows to ``bench/results/popcount-ecp5-<date>.json`` under
``"boards"`` (the file of ``bench/popcount.py``; created if missing).

    .venv/bin/python bench/popcount_boards.py build/pc-digits --board ulx3s-85f:bist,uart \\
        --board icebreaker:uart --popcount adder,compressor,chain [--out FILE]
"""

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quiet(*_args, **_kwargs):
    pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="+", help="build directories (dlgn compile)")
    parser.add_argument("--board", action="append", required=True, help="BOARD:top[,top] (repeatable)")
    parser.add_argument("--popcount", default="adder,compressor,chain")
    parser.add_argument("--work", default=str(ROOT / "build" / "popcount-boards"))
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from dlgn.boards.bitstream import build_bitstream
    from dlgn.boards.errors import BoardError

    today = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"popcount-ecp5-{today}.json"
    result = json.loads(out.read_text()) if out.is_file() else {}
    rows = result.setdefault("boards", [])
    for build_dir in args.builds:
        for spec in args.board:
            board, _, tops = spec.partition(":")
            for top in (tops or "bist").split(","):
                for popcount in args.popcount.split(","):
                    name = f"{Path(build_dir).name}-{board}-{top}-{popcount}"
                    row = {"build": str(build_dir), "board": board, "top": top, "popcount": popcount,
                           "loadavg_start": os.getloadavg()}
                    start = time.perf_counter()
                    try:
                        report = build_bitstream(build_dir, board, Path(args.work) / name, top=top, popcount=popcount,
                                                 verify=not args.no_verify, log=_quiet)
                    except BoardError as e:
                        row["error"] = str(e)[:400]
                        report = None
                    row["seconds"] = round(time.perf_counter() - start, 1)
                    if report is not None:
                        bits = report["summed_bits"]
                        gs = report["blocks"]["group_sum"]
                        row.update({k: report.get(k) for k in (
                            "lut4", "ff", "lut4_capacity", "fmax_mhz", "target_mhz", "timing_met", "latency_cycles",
                            "summed_bits", "blocks", "output_stage_share", "group_sum_lut4_equivalent_per_summed_bit",
                            "blocks_method", "estimate", "timings", "pipeline_every", "output_every", "gates")})
                        row["group_sum_ff_per_summed_bit"] = round(gs["ff"] / bits, 3) if bits else None
                        row["proof_seconds"] = (report.get("checks", {}).get("group_sum") or {}).get("seconds")
                        row["estimate_error_pct"] = round(100 * (report["estimate"]["total"] - report["lut4"])
                                                          / report["lut4"], 1)
                    print(json.dumps({k: row.get(k) for k in ("board", "top", "popcount", "lut4", "ff", "fmax_mhz",
                                                              "output_stage_share",
                                                              "group_sum_lut4_equivalent_per_summed_bit",
                                                              "estimate_error_pct", "seconds", "error")}), flush=True)
                    rows.append(row)
                    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
