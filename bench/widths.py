"""Accuracy against the last layer's width at a fixed total number of gates (issue: narrow heads).

Each case is the default config (configs/default.toml) with ``model.widths`` set; it is trained
with ``dlgn train`` (one process after the other, so each sees the same machine), compiled with
``dlgn compile`` and sized with the compiler's board estimate (:func:`dlgn.compile.estimate.
design_estimate`, ECP5, ``uart`` top: encoder, gate network, group sum, argmax, UART). The runs and
builds stay under ``--work`` so that a chosen one can go on to ``dlgn bitstream``.

Writes ``bench/results/widths-<date>.json`` (one row per case: widths, gates, discrete and soft
test accuracy, train seconds, load average, estimated blocks) and a text summary next to it.

    python bench/widths.py [--cases 8000,2000,1000,500] [--total 24000] [--epochs 10]
                           [--work bench/work/widths] [--set KEY=VALUE ...]
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from machine import cpu_name  # noqa: E402


def _run(cmd):
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def case_widths(last, total, depth):
    """``depth`` layers, the last of ``last`` gates, the others sharing the rest equally (rounded
    down to a multiple of 10, so every layer's width reads cleanly)."""
    if last >= total:
        raise SystemExit(f"the last layer ({last}) must have fewer gates than the total ({total})")
    body = (total - last) // (depth - 1) // 10 * 10
    return [body] * (depth - 1) + [last]


def measure(widths, args, work):
    from dlgn.compile.estimate import design_estimate

    name = "w" + "-".join(map(str, widths))
    run, build = work / name, work / f"{name}-build"
    load_before = os.getloadavg()
    if not (run / "summary.json").is_file():
        _run([sys.executable, "-m", "dlgn", "train", str(args.config), "--out", str(run), "--force",
              "--set", f"model.widths={widths}", "--set", f"train.epochs={args.epochs}", *sum((["--set", s] for s in args.set), [])])
    if not (build / "compile_report.json").is_file():
        _run([sys.executable, "-m", "dlgn", "compile", str(run), "--out", str(build), "--encoder", "--no-verilog"])
    summary = json.loads((run / "summary.json").read_text())
    report = json.loads((build / "compile_report.json").read_text())
    estimate = design_estimate(report, "ecp5", "uart")
    return {
        "widths": widths,
        "gates": sum(widths),
        "last_width": widths[-1],
        "test_acc_discrete": summary["test_acc_discrete"],
        "test_acc_soft": summary["test_acc_soft"],
        "train_seconds": summary["train_seconds"],
        "epochs": summary["epochs"],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "core_luts": report["estimated_luts"],
        "group_sum_adder_bits": report.get("group_sum_adder_bits"),
        "estimate_ecp5_uart": estimate,
        "run_dir": str(run),
        "build_dir": str(build),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="8000,2000,1000,500", help="last-layer widths, comma-separated")
    parser.add_argument("--total", type=int, default=24000, help="total gates of every case")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "widths")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    date = datetime.date.today().isoformat()
    out = HERE / "results" / f"widths{'-' + args.tag if args.tag else ''}-{date}.json"
    for last in (int(x) for x in args.cases.split(",")):
        widths = case_widths(last, args.total, args.depth)
        started = time.perf_counter()
        row = measure(widths, args, args.work)
        row["wall_seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(f"{'-'.join(map(str, widths)):>20}: {100 * row['test_acc_discrete']:.2f}% discrete, "
              f"core {row['core_luts']} LUT4, group sum {row['estimate_ecp5_uart']['group_sum']}, "
              f"design ~{row['estimate_ecp5_uart']['total']} (train {row['train_seconds']:.0f} s, "
              f"load {row['load_average_before'][0]})", flush=True)
        result = {"date": date, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine()},
                  "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
                  "overrides": args.set, "total_gates": args.total, "rows": rows}
        out.write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"accuracy against last-layer width, {args.total} gates in {args.depth} layers, {args.epochs} epochs "
             f"({date}, {cpu_name()})", f"{'widths':>22} {'discrete':>9} {'soft':>7} {'core':>7} {'group sum':>10} "
             f"{'design':>7} {'train s':>8}"]
    for r in rows:
        e = r["estimate_ecp5_uart"]
        lines.append(f"{'-'.join(map(str, r['widths'])):>22} {100 * r['test_acc_discrete']:>8.2f}% "
                     f"{100 * r['test_acc_soft']:>6.2f}% {r['core_luts']:>7} {e['group_sum']:>10} {e['total']:>7} "
                     f"{r['train_seconds']:>8.0f}")
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
