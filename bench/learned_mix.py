"""One learned-wiring layer's forward + backward on the CPU kernels: the fused mix op against the
gather + batched matrix product it replaced, and a fixed-wiring layer of the same size, side by side.

The three run in alternating rounds in one process (batch 128, train mode); the medians are the
result. Writes ``bench/results/learned-mix-<date>.json``.

    python bench/learned_mix.py [--rounds 4] [--steps 10] [--threads 2]
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

#: (features, gates, gate inputs, candidates)
CASES = ((8000, 8000, 4, 4), (4000, 4000, 2, 4), (8000, 8000, 4, 8))


def _gather_mix(x, candidates, weights):
    slots, count = candidates.shape
    picked = x.index_select(0, candidates.reshape(-1)).reshape(slots, count, x.shape[1])
    return torch.bmm(weights.reshape(slots, 1, count), picked).reshape(slots, x.shape[1])


def main(argv=None):
    from dlgn.train import kernels as K
    from dlgn.train.layers import LogicLayer
    from dlgn.train.learned import LearnedLogicLayer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fused = K.cpu_mix_forward
    rows = []
    try:
        for features, gates, n, count in CASES:
            gen = torch.Generator().manual_seed(0)
            x = torch.rand(features, 128, generator=gen)
            grad = torch.randn(gates, 128, generator=gen)
            layers = {"fused mix": LearnedLogicLayer(features, gates, n, candidates=count, window=64, seed=0),
                      "gather + bmm": LearnedLogicLayer(features, gates, n, candidates=count, window=64, seed=0),
                      "fixed windowed": LogicLayer(features, gates, n, wiring="windowed", window=64, seed=0)}
            times = {name: [] for name in layers}
            load = os.getloadavg()
            for _ in range(args.rounds):
                for name, layer in layers.items():
                    K.cpu_mix_forward = _gather_mix if name == "gather + bmm" else fused
                    for step in range(args.steps + 1):
                        if step == 1:
                            start = time.perf_counter()
                        xi = x.clone().requires_grad_()
                        layer(xi, "train").backward(grad)
                    times[name].append((time.perf_counter() - start) / args.steps * 1000)
            med = {name: round(statistics.median(t), 2) for name, t in times.items()}
            rows.append({"features": features, "gates": gates, "gate_inputs": n, "candidates": count,
                         "ms_per_forward_backward": med, "gather_over_fused": round(med["gather + bmm"] / med["fused mix"], 2),
                         "fused_over_fixed": round(med["fused mix"] / med["fixed windowed"], 2),
                         "load_average_before": [round(v, 2) for v in load]})
            print(f"{gates} gates x {n} inputs, {count} candidates: {med}", flush=True)
    finally:
        K.cpu_mix_forward = fused
    date = datetime.date.today().isoformat()
    out = HERE / "results" / f"learned-mix-{date}.json"
    out.write_text(json.dumps({"date": date, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                                                         "arch": platform.machine()},
                               "threads": args.threads, "batch": 128, "rows": rows,
                               "load_average_after": [round(v, 2) for v in os.getloadavg()]}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
