"""Data-parallel scaling: training steps/s with 1 process against N processes under torchrun.

Usage::

    .venv/bin/python bench/ddp.py                       # CPU: 1 process vs 2 (gloo), default model
    .venv/bin/python bench/ddp.py --nproc 1 2 4 --device cuda   # GPUs (NCCL): 1 GPU is the baseline
    .venv/bin/python bench/ddp.py --width 2000 --steps 10 --no-save

Each configuration is a separate ``torchrun --standalone`` launch of this script in worker mode:
the model of ``configs/default.toml`` (3 x 8000 four-input IWP gates on 2,352 Fashion-MNIST-sized
input bits, unless overridden), wrapped in DistributedDataParallel exactly as ``dlgn train``
wraps it, trains on random bits with the trainer's own per-rank loss (``loop.batch_loss``) and
Adam; the global batch is the same for every process count. Timed: ``--steps`` steps after
``--warmup`` steps, median of the per-step wall times of rank 0 (a DDP step ends with the
gradient all-reduce, so every rank's step takes the same time).

On the CPU the processes share the machine's cores (``cores // nproc`` threads each, as
``dlgn train`` sets them), so the figures answer "does splitting this machine into ranks pay?":
``speedup_vs_1`` compares against one process using all cores, and ``efficiency`` divides by
the process count with one process restricted to ``cores // nproc`` threads (the classic
per-worker scaling efficiency). Results: ``bench/results/ddp-<machine>-<date>.json`` and ``.txt``.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_name  # noqa: E402


def worker(args):
    from dlgn.train import distributed as dist
    from dlgn.train.layers import LogicNet
    from dlgn.train.loop import batch_loss

    ctx, device_name = dist.setup(args.device)
    device = torch.device(device_name if device_name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = LogicNet(args.in_bits, 10, args.width, args.depth, gate_inputs=args.gate_inputs).to(device)
    model = dist.wrap(net, device) if ctx.distributed else net
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1)
    x_all = torch.randint(0, 2, (args.batch * 4, args.in_bits), generator=gen, dtype=torch.uint8)
    y_all = torch.randint(0, 10, (args.batch * 4,), generator=gen)
    times = []
    for step in range(args.warmup + args.steps):
        batch = torch.arange(args.batch) + (step % 4) * args.batch
        idx = dist.batch_share(batch, ctx)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        x = x_all[idx].to(device, torch.float32)
        y = y_all[idx].to(device)
        loss, _ = batch_loss(model, x, y, len(batch), ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    if ctx.is_main:
        print("RESULT " + json.dumps({"step_s": statistics.median(times), "world_size": ctx.world_size,
                                      "device": str(device)}), flush=True)
    ctx.close()


def launch(args, nproc, threads):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(Path(__file__).resolve()), "--worker", "--threads", str(threads), "--device", args.device,
           "--width", str(args.width), "--depth", str(args.depth), "--gate-inputs", str(args.gate_inputs),
           "--in-bits", str(args.in_bits), "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"worker launch failed ({' '.join(cmd)}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts (first is the baseline)")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    p.add_argument("--width", type=int, default=8000)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--gate-inputs", type=int, default=4)
    p.add_argument("--in-bits", type=int, default=784 * 3)
    p.add_argument("--batch", type=int, nargs="+", default=[128, 512], help="global batch sizes")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    if args.worker:
        args.batch = args.batch[0]
        return worker(args)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    batches = args.batch
    for batch in batches:
        args.batch = batch
        base_all = base_split = None
        for nproc in args.nproc:
            threads = max(1, cores // nproc) if args.device == "cpu" else 1
            r = launch(args, nproc, threads)
            row = {"batch": batch, "nproc": nproc, "threads_per_process": threads, "step_ms": 1e3 * r["step_s"],
                   "steps_per_s": 1 / r["step_s"], "samples_per_s": batch / r["step_s"], "device": r["device"]}
            if base_all is None:
                base_all = r["step_s"]
            row["speedup_vs_1"] = base_all / r["step_s"]
            if args.device == "cpu" and nproc > 1:
                # one process restricted to this configuration's per-process threads
                base_split = launch(args, 1, threads)["step_s"]
                row["one_process_same_threads_step_ms"] = 1e3 * base_split
                row["efficiency"] = base_split / (nproc * r["step_s"])
            elif nproc > 1:
                row["efficiency"] = base_all / (nproc * r["step_s"])
            rows.append(row)
            print(f"batch {batch:5d}  nproc {nproc}  threads {threads}  {row['step_ms']:8.1f} ms/step  "
                  f"{row['samples_per_s']:8.0f} samples/s  speedup {row['speedup_vs_1']:.2f}"
                  + (f"  efficiency {row['efficiency']:.2f}" if "efficiency" in row else ""), flush=True)

    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu_name()
    result = {
        "benchmark": "ddp", "date": datetime.date.today().isoformat(), "device": device_name,
        "cores": cores, "torch": torch.__version__,
        "backend": "nccl" if args.device.startswith("cuda") else "gloo",
        "model": {"width": args.width, "depth": args.depth, "gate_inputs": args.gate_inputs,
                  "in_bits": args.in_bits, "parametrization": "iwp"},
        "steps": args.steps, "warmup": args.warmup, "rows": rows,
    }
    lines = [f"DDP scaling, {device_name} ({cores} cores), torch {torch.__version__}, {result['backend']}",
             f"model: {args.depth} x {args.width} IWP gates, {args.gate_inputs} inputs, {args.in_bits} input bits; "
             f"median of {args.steps} steps"]
    for r in rows:
        lines.append(f"  global batch {r['batch']:5d}, {r['nproc']} process(es) x {r['threads_per_process']} threads: "
                     f"{r['step_ms']:.1f} ms/step, {r['samples_per_s']:.0f} samples/s, "
                     f"{r['speedup_vs_1']:.2f}x vs 1 process"
                     + (f", scaling efficiency {r['efficiency']:.2f}" if "efficiency" in r else ""))
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        kind = "cpu-" + platform.machine() if args.device == "cpu" else device_name.replace(" ", "-")
        stem = HERE / "results" / f"ddp-{kind}-{result['date']}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        stem.with_suffix(".txt").write_text(text)
        print(f"wrote {stem}.json and .txt")


if __name__ == "__main__":
    main()
