"""Golden model throughput (samples/s) against the PyTorch evaluation-mode forward.

Usage::

    .venv/bin/python bench/golden.py                  # MNIST-sized random net (6 x 8000 gates)
    .venv/bin/python bench/golden.py --run RUN_DIR    # a trained run instead
    .venv/bin/python bench/golden.py --width 2000 --depth 2 --samples 8192 --no-save

Both sides evaluate the same discrete network on the same random input bits, single-threaded
(``torch.set_num_threads(1)``; numpy is single-threaded) so that the figure is per core; the
PyTorch side is also timed with all threads. The scores are checked to be equal. The result is
written to ``bench/results/golden-<machine>-<date>.json``. For reference, difflogic's compiled
C reaches about a million MNIST images per second per core.
"""

import argparse
import datetime
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dlgn.compile.discretize import netlist_from_model
from dlgn.compile.golden import GoldenModel, pack_bits
from dlgn.compile.passes import optimize

from machine import cpu_name  # bench/machine.py (scripts run with bench/ on sys.path)


def _best_of(fn, repeats):
    """Best wall-clock and best CPU time (this process) of ``repeats`` calls, and the result.

    CPU time is the per-core figure when the machine is shared (wall time then includes
    waiting for a core)."""
    best = best_cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return (best, best_cpu), result


def torch_scores(net, bits, batch):
    out = []
    with torch.no_grad():
        for start in range(0, len(bits), batch):
            out.append(net.scores(bits[start:start + batch]))
    return torch.cat(out).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="trained run directory (default: a random MNIST-sized net)")
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--in-bits", type=int, default=1568, help="input bits (MNIST: 784 pixels x 2 thresholds)")
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=2048, help="PyTorch batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    if args.run:
        from dlgn.train.checkpoint import load_model

        net, encoder, info = load_model(args.run)
        label = f"run {args.run} ({info['dataset']})"
    else:
        from dlgn.train.layers import LogicNet

        net = LogicNet(args.in_bits, 10, args.width, args.depth, init="gaussian", seed=1).eval()
        label = f"random {args.depth} x {args.width} net, {args.in_bits} input bits"
    netlist = netlist_from_model(net)
    rng = np.random.default_rng(0)
    bits = (rng.random((args.samples, net.in_bits)) < 0.5).astype(np.uint8)
    bits_t = torch.from_numpy(bits).float()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    (t_torch_1, c_torch_1), ref = _best_of(lambda: torch_scores(net, bits_t, args.batch), args.repeats)
    torch.set_num_threads(threads)
    (t_torch_n, _), _ = _best_of(lambda: torch_scores(net, bits_t, args.batch), args.repeats)

    golden = GoldenModel(netlist)
    (t_golden, c_golden), got = _best_of(lambda: golden.scores(bits), args.repeats)
    packed = pack_bits(bits)
    (t_golden_packed, c_golden_packed), _ = _best_of(lambda: golden.scores_packed(packed, len(bits)), args.repeats)
    optimized, _records = optimize(netlist, 4)
    golden_opt = GoldenModel(optimized)
    (t_opt, _), got_opt = _best_of(lambda: golden_opt.scores(bits), args.repeats)
    equal = bool((got == ref).all() and (got_opt == ref).all())

    n = args.samples
    result = {
        "benchmark": "golden",
        "net": label,
        "gates": len(netlist.gates),
        "gates_optimized": len(optimized.gates),
        "in_bits": netlist.in_bits,
        "samples": n,
        "scores_equal": equal,
        "torch_eval_1thread_samples_per_s": round(n / t_torch_1),
        f"torch_eval_{threads}threads_samples_per_s": round(n / t_torch_n),
        "golden_samples_per_s": round(n / t_golden),
        "golden_prepacked_samples_per_s": round(n / t_golden_packed),
        "golden_optimized_samples_per_s": round(n / t_opt),
        "speedup_vs_torch_1thread": round(t_torch_1 / t_golden, 2),
        "torch_eval_1thread_samples_per_cpu_s": round(n / c_torch_1),
        "golden_samples_per_cpu_s": round(n / c_golden),
        "golden_prepacked_samples_per_cpu_s": round(n / c_golden_packed),
        "machine": f"cpu-{platform.machine()}",
        "cpu": cpu_name(),
        "host": socket.gethostname(),
        "torch_threads": threads,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    print(json.dumps(result, indent=1))
    if not equal:
        print("error: golden model and PyTorch disagree", file=sys.stderr)
        return 1
    if not args.no_save:
        out = Path(__file__).parent / "results" / f"golden-{result['machine']}-{result['date']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
