"""CPU gate kernels against the PyTorch reference, side by side in one process.

For each model (the default config: 3 x 8000 four-input IWP gates, windowed wiring; and 4 x 4000
two-input gates), two identical networks, one with ``train.kernels = "reference"`` and one with
``"cpu"``, take training steps (Adam, batch 128, random input bits of the default data's shape,
784 features x 3 thresholds = 2352 bits) in alternating rounds, so that both see the same load on a
shared machine; the ratio of medians is the result. Then the same for the forward pass alone in
eval mode (discrete tables) at the evaluation batch size.

Writes ``bench/results/cpu-kernels-<machine>-<date>.json`` with the load average before each case
and at the end. On a machine that other jobs keep busy, every multithreaded region (Torch's and
ours) waits for whichever of its threads the OS has preempted, and both paths slow down several
times at 2 threads; ``--threads 2 1`` measures both counts.

    python bench/cpu_kernels.py [--rounds 5] [--steps 3] [--threads N [N ...]] [--no-save]
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_name  # noqa: E402

from dlgn.train.checkpoint import build_model  # noqa: E402
from dlgn.train.config import apply_overrides, load_config, validate  # noqa: E402
from dlgn.train.kernels import cpu  # noqa: E402

CONFIG = HERE.parent / "configs" / "default.toml"
IN_BITS, CLASSES = 784 * 3, 10
CASES = {
    "default (3 x 8000, n=4)": [],
    "4 x 4000, n=2": ["model.width=4000", "model.depth=4", "model.gate_inputs=2"],
}
KERNELS = ("reference", "cpu")


def _models(overrides):
    config = validate(apply_overrides(load_config(CONFIG), overrides))
    nets = {}
    for kernels in KERNELS:
        config["train"]["kernels"] = kernels
        torch.manual_seed(0)
        nets[kernels] = build_model(config, IN_BITS, CLASSES)
    return config, nets


def _timed(fn, steps):
    """Wall-clock and process CPU seconds per call (CPU time includes every thread's, spinning
    included, but not the time the process waits for a core)."""
    wall, cpu_time = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu_time) / steps


def bench_case(name, overrides, rounds, steps):
    config, nets = _models(overrides)
    batch, eval_batch = config["train"]["batch_size"], config["train"]["eval_batch_size"]
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, IN_BITS, generator=gen) < 0.5).float()
    y = torch.randint(0, CLASSES, (batch,), generator=gen)
    x_eval = (torch.rand(eval_batch, IN_BITS, generator=gen) < 0.5).float()
    optimizers = {k: torch.optim.Adam(net.parameters(), lr=config["train"]["lr"]) for k, net in nets.items()}

    def train_step(kernels):
        net, optimizer = nets[kernels], optimizers[kernels]
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def eval_forward(kernels):
        with torch.no_grad():
            nets[kernels](x_eval, "discrete")

    first_loss = {k: train_step(k) for k in KERNELS}  # also warms up (and builds the kernels)
    train_s = {k: [] for k in KERNELS}
    eval_s = {k: [] for k in KERNELS}
    for _ in range(rounds):
        for k in KERNELS:
            nets[k].train()
            train_s[k].append(_timed(lambda: train_step(k), steps))
    for k in KERNELS:
        eval_forward(k)
    for _ in range(rounds):
        for k in KERNELS:
            eval_s[k].append(_timed(lambda: eval_forward(k), steps))
    row = {"case": name, "overrides": overrides, "width": config["model"]["width"], "depth": config["model"]["depth"],
           "gate_inputs": config["model"]["gate_inputs"], "parametrization": config["model"]["parametrization"],
           "wiring": config["model"]["wiring"], "batch": batch, "eval_batch": eval_batch,
           "first_loss": first_loss}
    for k in KERNELS:
        step = statistics.median(wall for wall, _ in train_s[k])
        row[k] = {"train_step_ms": step * 1e3, "train_steps_per_s": 1 / step,
                  "train_step_cpu_ms": statistics.median(c for _, c in train_s[k]) * 1e3,
                  "eval_forward_ms": statistics.median(wall for wall, _ in eval_s[k]) * 1e3,
                  "eval_forward_cpu_ms": statistics.median(c for _, c in eval_s[k]) * 1e3,
                  "train_step_ms_all": [wall * 1e3 for wall, _ in train_s[k]],
                  "eval_forward_ms_all": [wall * 1e3 for wall, _ in eval_s[k]]}
    row["train_speedup"] = row["cpu"]["train_steps_per_s"] / row["reference"]["train_steps_per_s"]
    row["eval_speedup"] = row["reference"]["eval_forward_ms"] / row["cpu"]["eval_forward_ms"]
    row["train_cpu_time_ratio"] = row["reference"]["train_step_cpu_ms"] / row["cpu"]["train_step_cpu_ms"]
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="alternating timing rounds per kernel (median taken)")
    p.add_argument("--steps", type=int, default=3, help="steps per round")
    p.add_argument("--threads", type=int, nargs="+", default=[0],
                   help="torch thread counts to measure, one after the other (0: torch's default)")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    default_threads = torch.get_num_threads()
    if not cpu.available():
        raise SystemExit(f"the CPU kernels are unavailable: {cpu.build_error()}")
    load_before = os.getloadavg()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        for name, overrides in CASES.items():
            load = os.getloadavg()
            row = dict(threads=torch.get_num_threads(), loadavg_before=load,
                       **bench_case(name, overrides, args.rounds, args.steps))
            rows.append(row)
            ref, fast = row["reference"], row["cpu"]
            print(f"{name}, {row['threads']} threads: train {ref['train_steps_per_s']:.2f} -> "
                  f"{fast['train_steps_per_s']:.2f} steps/s "
                  f"({row['train_speedup']:.2f}x); eval forward (batch {row['eval_batch']}) "
                  f"{ref['eval_forward_ms']:.1f} -> {fast['eval_forward_ms']:.1f} ms ({row['eval_speedup']:.2f}x); "
                  f"CPU time per step {ref['train_step_cpu_ms']:.0f} -> {fast['train_step_cpu_ms']:.0f} ms "
                  f"({row['train_cpu_time_ratio']:.2f}x); load {load[0]:.2f}", flush=True)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores)")
    date = datetime.date.today().isoformat()
    result = {"benchmark": "cpu-kernels", "date": date, "cpu": cpu_name(), "machine": platform.machine(),
              "cores": os.cpu_count(), "default_threads": default_threads, "torch": torch.__version__,
              "loadavg_before": load_before, "loadavg_after": load_after,
              "rounds": args.rounds, "steps_per_round": args.steps, "cases": rows}
    if not args.no_save:
        out = HERE / "results" / f"cpu-kernels-{platform.machine()}-{date}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
