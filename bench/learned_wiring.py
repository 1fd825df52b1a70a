"""Learned connections against fixed windowed wiring at the same gate count, side by side.

Each case trains the same config with ``model.wiring = "windowed"`` and ``"learned"`` (one
process after the other, the load average recorded before each) and reports discrete and soft test
accuracy, seconds per training step and peak memory (RSS of the training process).

    python bench/learned_wiring.py [--config configs/digits.toml] [--set KEY=VALUE ...] [--candidates 4]
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from machine import cpu_name  # noqa: E402

_CHILD = """
import json, resource, sys
from dlgn.cli import main
assert main(sys.argv[1:]) == 0
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run(config, sets, wiring, candidates, out):
    args = ["train", str(config), "--out", str(out), "--force", "--set", f"model.wiring={wiring}",
            "--set", f"model.candidates={candidates}", *[a for s in sets for a in ("--set", s)]]
    load = os.getloadavg()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{wiring} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    steps = summary.get("steps") or json.loads((out / "state.json").read_text())["step"]
    peak = int(re.search(r"^PEAK (\d+)$", proc.stdout, re.M).group(1))
    return {"wiring": wiring, "candidates": candidates if wiring == "learned" else None,
            "test_acc_discrete": summary["test_acc_discrete"], "test_acc_soft": summary["test_acc_soft"],
            "train_seconds": summary["train_seconds"], "steps": steps,
            "seconds_per_step": round(summary["train_seconds"] / steps, 4),
            "peak_rss_mib": round(peak / 1024, 1), "load_average_before": [round(x, 2) for x in load]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "digits.toml")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--tag", default="digits")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for wiring in ("windowed", "learned"):
            rows.append(run(args.config, args.set, wiring, args.candidates, Path(tmp) / wiring))
            r = rows[-1]
            print(f"{wiring:>9}: {100 * r['test_acc_discrete']:.2f}% discrete, {100 * r['test_acc_soft']:.2f}% soft, "
                  f"{1000 * r['seconds_per_step']:.1f} ms/step, {r['peak_rss_mib']:.0f} MiB", flush=True)
    date = datetime.date.today().isoformat()
    out = HERE / "results" / f"learned-wiring-{args.tag}-{date}.json"
    fixed, learned = rows
    result = {"date": date, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine()},
              "config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT) else str(args.config),
              "overrides": args.set, "rows": rows,
              "learned_minus_windowed_pp": round(100 * (learned["test_acc_discrete"] - fixed["test_acc_discrete"]), 2),
              "step_time_ratio": round(learned["seconds_per_step"] / fixed["seconds_per_step"], 2),
              "memory_ratio": round(learned["peak_rss_mib"] / fixed["peak_rss_mib"], 2)}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"learned - windowed: {result['learned_minus_windowed_pp']:+.2f} pp, step time x{result['step_time_ratio']}, "
          f"memory x{result['memory_ratio']}; wrote {out}")


if __name__ == "__main__":
    main()
