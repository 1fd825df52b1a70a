"""A model for every board: train, compile and build each board's config, one row per board.

For every board in ``BOARDS`` (or ``--boards``): ``dlgn train configs/<board>.toml``, ``dlgn
compile`` and ``dlgn bitstream --top uart`` (and, on ECP5, ``--top bist`` at ``--bist-freq``),
the steps a user runs (``make train CONFIG=... && make bitstream BOARD=...``). Runs and builds
stay under ``--work``; a step whose result is there already is not repeated, so an interrupted
bench continues.

Writes ``bench/results/boards-<date>.json`` (one row per board and top: ``board``, ``config``,
``test_acc_discrete``, ``lut4``, ``lut4_capacity``, ``blocks``, ``fmax_mhz``, ``target_mhz``,
``timing_met``, ``top``, and the output stage's share, train and build seconds, load average),
``boards-<date>.txt`` (the README table) and ``pareto-<date>.png`` (discrete accuracy against
LUT4 for every model measured: these rows, the width sweep of ``bench/widths.py`` by estimate,
earlier hardware builds; each board's capacity as a vertical line; peers' published
Fashion-MNIST accuracies as horizontal lines, since none publishes an ECP5/iCE40 LUT4 count).

    python bench/boards.py [--boards ulx3s-85f,ulx3s-25f,ulx3s-12f,icebreaker,ulx3s-85f-conv] [--work bench/work/boards]
                           [--no-bist] [--pareto-only]
"""

import argparse
import datetime
import glob
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

sys.path.insert(0, str(ROOT))
from dlgn.boards.toolchain import nextpnr_routing_from_log  # noqa: E402

#: row name -> (board, config, bist clock in MHz or None): each board's own model, and the
#: convolutional model (configs/conv.toml) on the ULX3S-85F beside the dense default
BOARDS = {
    "ulx3s-85f": ("ulx3s-85f", "configs/ulx3s-85f.toml", 150.0),
    "ulx3s-25f": ("ulx3s-25f", "configs/ulx3s-25f.toml", 150.0),
    "ulx3s-12f": ("ulx3s-12f", "configs/ulx3s-12f.toml", 150.0),
    "icebreaker": ("icebreaker", "configs/icebreaker.toml", None),
    "ulx3s-85f-conv": ("ulx3s-85f", "configs/conv.toml", 150.0),
    "ulx3s-85f-narrow": ("ulx3s-85f", "configs/ulx3s-85f-narrow.toml", 150.0),
    "ulx3s-12f-learned": ("ulx3s-12f", "configs/ulx3s-12f-learned.toml", 150.0),
    "ulx3s-25f-learned": ("ulx3s-25f", "configs/ulx3s-25f-learned.toml", 150.0),
    "ulx3s-25f-windowed": ("ulx3s-25f", "configs/ulx3s-25f-windowed.toml", 150.0),
}
#: rows whose bitstream needs another nextpnr router than the default (router2 stalls on the
#: convolutional model's congestion; router1 routes it, docs/conv.md)
ROUTERS = {"ulx3s-85f-conv": "router1", "ulx3s-12f": "router1"}  # the 12F: as `make bitstream BOARD=ulx3s-12f` (Makefile)
#: rows compiled with other register stages than the compiler's default (dlgn compile
#: --pipeline-every K --output-every S): the 25F model finds no legal placement with a register every
#: 2 levels (14,437 FF) and builds with one stage after the core, as `make bitstream BOARD=ulx3s-25f`
#: does (Makefile PIPELINE_EVERY)
PIPELINES = {"ulx3s-25f": (5, 2)}
#: the rows ``--boards`` builds when not told
DEFAULT_ROWS = ("ulx3s-85f", "ulx3s-25f", "ulx3s-12f", "icebreaker")

#: Peers' published Fashion-MNIST accuracies (../shared/reference/anchors-2026-12.md); none gives a
#: LUT4 count on an ECP5 or iCE40, so they are drawn as horizontal lines.
PEERS = [
    ("DWN n=2 (as quoted by BitLogic)", 0.8912),
    ("LILogicNet Top-32, 64K gates", 0.9026),
    ("DLGN fixed-random, 48K gates (Mommen et al.)", 0.8717),
    ("BitLogic 2x4000 fan-in 4", 0.834),
]


def _step(cmd, log):
    print("$", " ".join(map(str, cmd)), flush=True)
    started = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
    return proc.returncode, time.perf_counter() - started


def measure(name, board, config, bist_freq, work, tops, prove=True, verify=True):
    run, build = work / name / "run", work / name / "build"
    log = work / f"{name}.log"
    (work / name).mkdir(parents=True, exist_ok=True)
    if not (run / "summary.json").is_file():
        rc, _ = _step([sys.executable, "-m", "dlgn", "train", ROOT / config, "--out", run, "--force"], log)
        if rc:
            raise SystemExit(f"training {name} failed, see {log}")
    if not (build / "compile_report.json").is_file():
        stages = PIPELINES.get(name)
        rc, _ = _step([sys.executable, "-m", "dlgn", "compile", run, "--out", build, "--encoder",
                       *([] if stages is None else ["--pipeline-every", stages[0], "--output-every", stages[1]]),
                       *([] if prove else ["--no-prove"])], log)
        if rc:
            raise SystemExit(f"compiling {name} failed, see {log}")
    summary = json.loads((run / "summary.json").read_text())
    compile_report = json.loads((build / "compile_report.json").read_text())
    rows = []
    for top in tops:
        if top == "bist" and bist_freq is None:
            continue
        out = work / name / f"bitstream-{top}"
        if not (out / "hw_report.json").is_file():
            cmd = [sys.executable, "-m", "dlgn", "bitstream", build, "--board", board, "--top", top, "--out", out]
            if top == "bist":
                cmd += ["--freq", str(bist_freq)]
            if name in ROUTERS:
                cmd += ["--router", ROUTERS[name]]
            if not verify:
                cmd.append("--no-verify")
            load = os.getloadavg()
            rc, seconds = _step(cmd, log)
            failed = Path(f"{out}-failed") / "hw_report.json"
            if rc and not failed.is_file() and not (out / "hw_report.json").is_file():
                rows.append({"name": name, "board": board, "config": config, "top": top, "error": f"bitstream failed (exit {rc}), see {log}",
                             "load_average": [round(x, 2) for x in load]})
                continue
        report_path = out / "hw_report.json" if (out / "hw_report.json").is_file() else Path(f"{out}-failed") / "hw_report.json"
        hw = json.loads(report_path.read_text())
        blocks = hw.get("blocks") or {}
        output = sum((blocks.get(k) or {}).get("lut4", 0) for k in ("group_sum", "argmax"))
        routing = hw.get("routing")
        if routing is None:  # a build from before hw_report.json had it
            routing = _routing(report_path)
        rows.append({
            "name": name, "board": board, "config": config, "top": top,
            "test_acc_discrete": summary["test_acc_discrete"], "test_acc_soft": summary["test_acc_soft"],
            # the board's LUT4 (the ULX3S-12F's LFE5U-12F is a 25F die that nextpnr reports in full)
            "lut4": hw["lut4"], "lut4_capacity": _capacity(board), "lut4_capacity_nextpnr": hw["lut4_capacity"],
            "lut4_share": round(hw["lut4"] / _capacity(board), 4),
            "blocks": blocks, "summed_bits": hw.get("summed_bits"),
            "output_stage_share": round(output / hw["lut4"], 4) if blocks and hw["lut4"] else None,
            "fmax_mhz": hw["fmax_mhz"], "target_mhz": hw["target_mhz"], "timing_met": hw["timing_met"],
            "routing": routing,
            "popcount": hw.get("popcount"), "gates": compile_report["gates"],
            "pipeline_every": compile_report.get("pipeline_every"), "output_every": compile_report.get("output_every"),
            "compile_proof": _prove_result(build), "checks": hw.get("checks"), "widths": (json.loads((build / "netlist.json").read_text()).get("source") or {}).get("model", {}).get("widths"),
            "train_seconds": summary["train_seconds"], "epochs": summary["epochs"],
            "build_seconds": (hw.get("timings") or {}).get("build_seconds"),
            "error": hw.get("error"), "hw_report": str(report_path),
        })
    return rows


def _prove_result(build):
    """The compile-time proof's verdict for ``build`` (prove_report.json): passed, failed,
    unfinished, or None when it was not run."""
    try:
        report = json.loads((build / "prove_report.json").read_text())
    except (OSError, ValueError):
        return None
    return "passed" if report.get("passed") else report.get("result") or "failed"


def _routing(report_path):
    """nextpnr's routing figures from the log beside ``hw_report.json`` ({} when it is gone)."""
    tim = Path(report_path).parent / "top.tim"
    return nextpnr_routing_from_log(tim.read_text(errors="replace")) if tim.is_file() else {}


def _capacity(board):
    from dlgn.boards.targets import get_board

    return get_board(board).lut4


def pareto(rows, path, date):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlgn.boards.targets import BOARDS as TARGETS

    fig, ax = plt.subplots(figsize=(9, 5.5))
    hw = [r for r in rows if r.get("lut4") and r.get("test_acc_discrete") is not None]
    for top, marker in (("uart", "o"), ("bist", "s")):
        pts = [r for r in hw if r["top"] == top]
        if pts:
            ax.scatter([r["lut4"] for r in pts], [100 * r["test_acc_discrete"] for r in pts], marker=marker, s=50,
                       label=f"dlgn board builds ({top} top, measured LUT4)", zorder=3)
            for r in pts:
                ax.annotate(r.get("name", r["board"]), (r["lut4"], 100 * r["test_acc_discrete"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
    sweep = []
    for f in sorted(glob.glob(str(HERE / "results" / "widths*.json"))):
        for r in json.loads(Path(f).read_text())["rows"]:
            sweep.append(r)
    if sweep:
        ax.scatter([r["estimate_ecp5_uart"]["total"] for r in sweep], [100 * r["test_acc_discrete"] for r in sweep],
                   marker="x", color="gray", label="dlgn width sweep (ECP5 uart estimate)", zorder=2)
    old = HERE / "results" / "hw-ulx3s-85f-default-2026-11-22.json"
    if old.is_file():
        r = json.loads(old.read_text())["rows"][0]
        ax.scatter([r["lut4"]], [86.86], marker="^", color="black", label="previous default (8000-wide head, bist)")
    ymin = min([100 * r["test_acc_discrete"] for r in hw + sweep] + [83]) - 1
    for name, b in TARGETS.items():
        if name in BOARDS or name == "ulx3s-45f":
            ax.axvline(b.lut4, color="tab:red", alpha=0.35, lw=1)
            ax.text(b.lut4, ymin + 0.2, f" {name}\n {b.lut4}", fontsize=7, color="tab:red", va="bottom")
    for name, acc in PEERS:
        ax.axhline(100 * acc, color="tab:green", alpha=0.35, lw=1, ls="--")
        ax.text(0.01, 100 * acc + 0.05, name + " (no LUT4 count)", fontsize=7, color="tab:green",
                transform=ax.get_yaxis_transform())
    ax.set_xscale("log")
    ax.set(xlabel="LUT4 / logic cells (log)", ylabel="Fashion-MNIST discrete test accuracy (%)",
           title=f"dlgn accuracy per LUT, {date}")
    ax.set_ylim(bottom=ymin)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows):
    lines = ["| model | board | top | accuracy | LUT4 (% of device) | output stage | Fmax / target | routed wires "
             "| build |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        model = r.get("name") or Path(r["config"]).stem
        if r.get("lut4") is None:
            lines.append(f"| {model} | {r['board']} | {r['top']} | | | | | | {r.get('error')} |")
            continue
        wires = (r.get("routing") or {}).get("routed_wires") or (r.get("routing") or {}).get("routed_arcs")
        wires = f"{wires:,}" + ("" if (r.get("routing") or {}).get("routed_wires") else " arcs") if wires else ""
        share = f"{100 * r['output_stage_share']:.1f}%" if r.get("output_stage_share") is not None else "n/a"
        met = "met" if r["timing_met"] else "NOT met"
        build = f"{r['build_seconds'] / 60:.1f} min" if r.get("build_seconds") else ""
        lines.append(f"| {model} | {r['board']} | {r['top']} | {100 * r['test_acc_discrete']:.2f}% | {r['lut4']:,} "
                     f"({100 * r['lut4_share']:.0f}%) | {share} | {r['fmax_mhz']} / {r['target_mhz']:g} MHz ({met}) "
                     f"| {wires} | {build} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boards", default=",".join(DEFAULT_ROWS),
                        help=f"rows to build, from {', '.join(BOARDS)}; rows of today's JSON that are not rebuilt "
                             f"are kept")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "boards")
    parser.add_argument("--no-bist", action="store_true", help="only the uart top")
    parser.add_argument("--no-prove", action="store_true", help="compile without the formal proof (saves CPU time)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the bitstream's Yosys proof of the LUT primitives (saves CPU time)")
    parser.add_argument("--pareto-only", action="store_true", help="redraw the plot from the newest boards JSON")
    args = parser.parse_args(argv)
    date = datetime.date.today().isoformat()
    out = HERE / "results" / f"boards-{date}.json"
    result = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    for r in result["rows"]:  # rows from before these keys existed
        r.setdefault("name", r["board"])
        if "routing" not in r and r.get("hw_report"):
            r["routing"] = _routing(Path(r["hw_report"]))
    if args.pareto_only:
        rows = result["rows"]
        if rows:
            out.write_text(json.dumps(result, indent=1) + "\n")
    else:
        names = args.boards.split(",")
        for name in names:
            if name not in BOARDS:
                raise SystemExit(f"unknown row {name!r}; known: {', '.join(BOARDS)}")
        rows = [r for r in result["rows"] if r["name"] not in names]
        for name in names:
            board, config, freq = BOARDS[name]
            load = os.getloadavg()
            new = measure(name, board, config, freq, args.work, ("uart",) if args.no_bist else ("uart", "bist"),
                          prove=not args.no_prove, verify=not args.no_verify)
            for r in new:
                r.setdefault("load_average", [round(x, 2) for x in load])
            rows.extend(new)
            result = {"date": date, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine()},
                      "note": "dlgn train/compile/bitstream as a user runs them, one after the other on a shared 2-core machine",
                      "rows": rows}
            out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".txt").write_text(table(rows) + "\n")
    pareto(rows, HERE / "results" / f"pareto-{date}.png", date)
    print(table(rows))
    print(f"wrote {out}, {out.with_suffix('.txt')} and {HERE / 'results' / f'pareto-{date}.png'}")


if __name__ == "__main__":
    main()
