"""Calibrate the compiler's board-size estimate (``dlgn.compile.estimate``) against real builds.

Trains a few small digits models (seconds each), compiles them, builds each with ``dlgn bitstream``
for an ECP5 and an iCE40 board with both tops, and fits the per-family coefficients by least
squares on what nextpnr reports (ECP5 ``TRELLIS_COMB``, iCE40 ``ICESTORM_LC``). Writes
``bench/results/estimate-<date>.json`` with every build, the fitted coefficients and each build's
error with the coefficients in force; run it again after changing the output stage. Each board
is built with ``--popcount auto`` (or the ``--popcount`` given), and the group sum's coefficient is
fitted per popcount implementation, on its own cell count (``GroupSum.adder_bits``).

    .venv/bin/python bench/fit_estimate.py [--work build/fit-estimate] [--quick] [--models N] [--popcount auto]
                                           [--tops uart,bist]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from machine import cpu_name  # noqa: E402

#: (name, widths: width x depth, gate inputs, thresholds) of the digits models to build
MODELS = [
    # name, dataset, width, depth, gate inputs, thresholds
    ("digits-w200x2-n2-t3", "digits", 200, 2, 2, 3),
    ("digits-w400x2-n4-t3", "digits", 400, 2, 4, 3),
    ("digits-w800x2-n2-t8", "digits", 800, 2, 2, 8),
    ("digits-w1000x3-n4-t3", "digits", 1000, 3, 4, 3),
    ("digits-w2000x2-n2-t3", "digits", 2000, 2, 2, 3),
    ("fashion-w400x2-n4-t1", "fashion-mnist", 400, 2, 4, 1),
    ("fashion-w2000x2-n4-t3", "fashion-mnist", 2000, 2, 4, 3),
]
BOARDS = {"ecp5": "ulx3s-85f", "ice40": "icebreaker"}
ICE40_MAX_CELLS = 5280


def _quiet(*_args, **_kwargs):
    pass


def train_and_compile(work, name, dataset, width, depth, n, thresholds):
    from dlgn.compile.build import compile_run
    from dlgn.train.config import apply_overrides, load_config
    from dlgn.train.loop import train

    run, build = work / "runs" / name, work / "builds" / name
    if not (run / "summary.json").is_file():
        config = apply_overrides(load_config(), [
            f"data.name={dataset}", f"data.thresholds={thresholds}", f"model.width={width}", f"model.depth={depth}",
            f"model.gate_inputs={n}", "train.epochs=2", "train.lr=0.05", "train.device=cpu",
            "data.train_subset=3000",
        ] + (["model.wiring=windowed", "model.groups=interleaved"] if dataset != "digits" else []))
        train(config, run, force=True)
    if not (build / "compile_report.json").is_file():
        compile_run(run, build, log=_quiet)
    return run, build


def fit(rows, family, minimum=6):
    """Non-negative least-squares coefficients for ``family``'s rows, weighted by 1 / size (the
    relative error is what matters): logic cells per group-sum adder bit, per feature bit an
    encoder comparator reads and per feature bit the UART top buffers (the uart top with per-feature
    thresholds), per comparator and per sample-register bit of the uart top that encodes on arrival,
    per core flip-flop (iCE40: a flip-flop needs a logic cell of its own when its LUT is taken), and
    each top's fixed cost. The core is taken as estimated (one LUT4 per gate) and the argmax with
    its fixed coefficient. A coefficient no row measures keeps its value in force.
    Returns ``(coefficients, {row index: error % with them})``."""
    from scipy.optimize import nnls

    from dlgn.compile.estimate import COEFFICIENTS

    rows = [r for r in rows if r["family"] == family and r.get("cells")]
    if len(rows) < minimum:
        return None, {}
    popcounts = sorted({r.get("popcount", "adder") for r in rows})
    names = [("group_sum", p) for p in popcounts] + [
        ("encoder",), ("uart_feature",), ("flip_flops",), ("io", "uart"), ("io", "bist"),
        ("arrival_comparator",), ("uart_arrival_bit",), ("io_arrival",)]

    def features(r):
        b, uart = r["blocks"], r["top"] == "uart"
        arrival = uart and bool(b.get("arrival_thresholds"))
        raw = uart and not arrival
        group_sum = [b.get("group_sum_cells", b["adder_bits"]) if r.get("popcount", "adder") == p else 0
                     for p in popcounts]
        return group_sum + [b["chain_bits"] if raw else 0, b["feature_bits"] if raw else 0,
                            b["flip_flops"] if family == "ice40" else 0, float(raw), float(not uart),
                            b.get("arrival_thresholds", 0) if arrival else 0, b.get("arrival_bits", 0) if arrival else 0,
                            float(arrival)]

    a = np.array([features(r) for r in rows], dtype=float)
    measured = a.any(axis=0)
    if family == "ice40":
        measured[names.index(("flip_flops",))] = False  # the iCE40 builds' core registers: keep as in force
    old = COEFFICIENTS[family]

    def current(name):
        value = old.get(name[0], 0.0)
        return value[name[1]] if len(name) > 1 else value

    base = np.array([r["estimate"]["core"] + r["estimate"]["argmax"] for r in rows], dtype=float)
    cells = np.array([r["cells"] for r in rows], dtype=float)
    coef = np.array([current(n) for n in names], dtype=float)
    # the columns no row measures keep their coefficients in force, taken out of the fit
    fixed = base + a[:, ~measured] @ coef[~measured]
    solved, _ = nnls(a[:, measured] / cells[:, None], (cells - fixed) / cells)
    coef[measured] = solved
    errors = 100 * (a @ coef + base - cells) / cells
    fitted = {"group_sum": dict(old["group_sum"]), "io": dict(old["io"]), "argmax": old["argmax"]}
    for name, value in zip(names, coef):
        value = round(float(value), 3)
        if len(name) > 1:
            fitted[name[0]][name[1]] = int(round(value)) if name[0] == "io" else value
        else:
            fitted[name[0]] = int(round(value)) if name[0] == "io_arrival" else value
    return fitted, [round(float(e), 1) for e in errors]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "build" / "fit-estimate"))
    parser.add_argument("--quick", action="store_true", help="the first two models only")
    parser.add_argument("--models", type=int, default=None, help="the first N models only")
    parser.add_argument("--popcount", default="auto", help="--popcount of every build (default: auto)")
    parser.add_argument("--skip-ice40-bist", action="store_true", help="build the iCE40 with the uart top only")
    parser.add_argument("--tops", default="uart,bist", help="the tops to build, comma-separated (default: uart,bist)")
    parser.add_argument("--out", default=None, help="result JSON (default bench/results/estimate-<date>.json)")
    args = parser.parse_args()
    from dlgn.boards.bitstream import _group_sum, build_bitstream, resolve_popcount
    from dlgn.boards.errors import BoardError
    from dlgn.compile.builddir import load_build
    from dlgn.compile.estimate import design_estimate, encoder_size

    work = Path(args.work)
    rows = []
    models = MODELS[:2] if args.quick else MODELS[:args.models] if args.models else MODELS
    for name, dataset, width, depth, n, thresholds in models:
        run, build_dir = train_and_compile(work, name, dataset, width, depth, n, thresholds)
        build = load_build(build_dir)
        size = encoder_size(build.netlist)  # from the netlist: a cached build may predate its arrival_* counts
        compiled = dict(build.report, encoder_size=size)
        for family, board in BOARDS.items():
            popcount = resolve_popcount(args.popcount, family)
            group_sum_cells = _group_sum(build, family, popcount).adder_bits
            for top in args.tops.split(","):
                if family == "ice40" and top == "bist" and args.skip_ice40_bist:
                    continue
                estimate = design_estimate(compiled, family, top, popcount=popcount,
                                           group_sum_cells=group_sum_cells)
                if family == "ice40" and estimate["total"] > 1.3 * ICE40_MAX_CELLS:
                    continue
                row = {"model": name, "family": family, "board": board, "top": top, "popcount": popcount,
                       "estimate": estimate,
                       "blocks": {"gates": build.report["gates"], "adder_bits": build.report["group_sum_adder_bits"],
                                  "group_sum_cells": group_sum_cells,
                                  "in_bits": build.report["in_bits"], "classes": build.report["classes"],
                                  "score_width": build.report["score_width"], "flip_flops": build.report["flip_flops"],
                                  **size},
                       "loadavg": os.getloadavg()}
                start = time.perf_counter()
                try:
                    report = build_bitstream(build_dir, board, work / "boards" / f"{name}-{board}-{top}-{popcount}",
                                             top=top, verify=False, popcount=popcount, log=_quiet)
                    row["cells"] = report["lut4"]
                    row["ff"] = report["ff"]
                    row["fmax_mhz"] = report["fmax_mhz"]
                    row["hw_blocks"] = report.get("blocks")
                    row["output_stage_share"] = report.get("output_stage_share")
                except BoardError as e:
                    row["error"] = str(e)[:300]
                row["seconds"] = round(time.perf_counter() - start, 1)
                if row.get("cells"):
                    row["error_pct"] = round(100 * (estimate["total"] - row["cells"]) / row["cells"], 1)
                print(json.dumps({k: row.get(k) for k in ("model", "board", "top", "cells", "error_pct", "seconds",
                                                          "error")}), flush=True)
                rows.append(row)
    import datetime
    import platform

    today = datetime.date.today().isoformat()
    # one top alone gives each family fewer rows (the iCE40 uart builds: 5 of the 7 models fit the UP5K)
    minimum = 4 if len(models) < 3 or len(args.tops.split(",")) == 1 else 6
    result = {"date": today, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine()},
              "rows": rows,
              "fitted": {family: fit(rows, family, minimum)[0] for family in BOARDS},
              "fit_errors_pct": {family: fit(rows, family, minimum)[1] for family in BOARDS}}
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"estimate-{today}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["fitted"], indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
