"""Collect training experiments (run directories) into one results file.

Each run directory's resolved config, per-epoch history (``metrics.csv``) and summary (or, for a
run stopped before its end, its last finished epoch) become one row of
``bench/results/recipe-<date>.json``, so that a choice of recipe (schedule, augmentation,
widths, thresholds) can be checked against the runs behind it.

    python bench/recipe_log.py RUN_DIR [RUN_DIR ...] [--note TEXT] [--out PATH] [--extra ROWS.json]
"""

import argparse
import csv
import datetime
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_name  # noqa: E402

#: the config keys a recipe experiment varies
KEYS = [("data", "thresholds"), ("data", "encoding"), ("data", "augment_shift"), ("model", "widths"), ("model", "width"), ("model", "depth"),
        ("model", "gate_inputs"), ("model", "wiring"), ("model", "window"), ("model", "tau"), ("data", "val_fraction"), ("train", "epochs"), ("train", "lr"),
        ("train", "schedule"), ("train", "weight_decay"), ("train", "gumbel"), ("train", "gumbel_tau")]


def row(run):
    from dlgn.train.config import load_config

    run = Path(run)
    config = load_config(run / "config.toml")
    with open(run / "metrics.csv") as f:
        # an empty cell: no validation split (data.val_fraction = 0)
        history = [{k: float(v) if v != "" else None for k, v in r.items()} for r in csv.DictReader(f)]
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else None
    last = history[-1] if history else {}
    return {
        "run": run.name,
        "config": {f"{s}.{k}": config[s][k] for s, k in KEYS},
        "finished": summary is not None,
        "epochs_done": int(last.get("epoch", 0)),
        "test_acc_discrete": summary["test_acc_discrete"] if summary else last.get("test_acc_discrete"),
        "test_acc_soft": summary["test_acc_soft"] if summary else last.get("test_acc_soft"),
        "train_seconds": summary["train_seconds"] if summary else last.get("seconds"),
        "history": [{k: r[k] for k in ("epoch", "seconds", "test_acc_discrete", "test_acc_soft", "val_acc_discrete")}
                    for r in history],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--extra", type=Path, help="a JSON list of rows measured earlier whose run directories are "
                        "gone (each with a 'source' saying where it was measured); kept after the runs' rows")
    args = parser.parse_args(argv)
    date = datetime.date.today().isoformat()
    out = args.out or HERE / "results" / f"recipe-{date}.json"
    rows = [row(r) for r in args.runs]
    if args.extra:
        rows += json.loads(args.extra.read_text())
    result = {"date": date, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine()},
              "load_average_now": [round(x, 2) for x in os.getloadavg()], "note": args.note, "rows": rows}
    out.write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        state = "" if r["finished"] else f" (stopped after epoch {r['epochs_done']})"
        seconds = f", {r['train_seconds']:.0f} s" if r.get("train_seconds") else ""
        print(f"{r['run']:<40} {100 * r['test_acc_discrete']:.2f}% discrete{seconds}{state}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
