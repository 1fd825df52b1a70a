"""Training benchmarks, side by side in one process on the same architecture and data.

1. IWP vs OP: steps/s, peak memory, parameter bytes, and training steps to reach the OP's best
   validation accuracy (the Light DLGN paper reports 4x fewer parameters and 8.5x fewer steps).
2. Gumbel + straight-through on vs off (IWP): discretization gap and wall-clock to a target
   validation accuracy (Mind the Gap reports ~98% smaller gap, ~4.5x less wall-clock).

Writes ``bench/results/train-<device>-<date>.{json,txt,png}``.

    python bench/train_bench.py [--width 4000] [--depth 4] [--epochs 3] [--device auto]
"""

import argparse
import copy
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from dlgn.train.checkpoint import build_model
from dlgn.train.config import DEFAULTS, validate
from dlgn.train.encoding import Thermometer
from dlgn.train.loop import evaluate, prepare_data, resolve_device

RESULTS = Path(__file__).resolve().parent / "results"


class SavedBytes:
    """Bytes of the tensors autograd keeps for backward during one forward pass (CPU memory
    proxy: activations dominate; parameters, gradients and Adam moments are added separately)."""

    def __init__(self):
        self.storages = {}

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def total(self):
        return sum(self.storages.values())


def run(name, config, data, encoder, bits, device, eval_every, val_limit):
    torch.manual_seed(config["train"]["seed"])
    net = build_model(config, encoder.bits, data.classes).to(device)
    net.set_noise_generator(torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(net.parameters(), lr=config["train"]["lr"])
    train_bits, y_train, val_bits, y_val, test_bits, y_test = bits
    val_bits, y_val = val_bits[:val_limit], y_val[:val_limit]
    batch = config["train"]["batch_size"]
    curve, step, train_time = [], 0, 0.0
    saved = SavedBytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(config["train"]["epochs"]):
        order = torch.randperm(len(y_train), generator=gen)
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            x, y = train_bits[idx].to(device, torch.float32), y_train[idx].to(device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            net.train()
            if step == 0:
                with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                    loss = torch.nn.functional.cross_entropy(net(x), y)
            else:
                loss = torch.nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_time += time.perf_counter() - t0
            step += 1
            if step % eval_every == 0:
                soft, disc = evaluate(net, val_bits, y_val, 2000, device)
                curve.append({"step": step, "seconds": round(train_time, 3), "val_soft": soft, "val_discrete": disc})
        print(f"  {name}: epoch {epoch + 1} val discrete {curve[-1]['val_discrete']:.4f}", flush=True)
    test_soft, test_disc = evaluate(net, test_bits, y_test, 2000, device)
    param_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        method = "torch.cuda.max_memory_allocated"
    else:
        peak = saved.total + 4 * param_bytes  # parameters, gradients, two Adam moments
        method = "saved-for-backward bytes + 4 x parameter bytes"
    return {
        "name": name, "parametrization": config["model"]["parametrization"], "init": config["model"]["init"],
        "gumbel": config["train"]["gumbel"], "steps": step, "steps_per_second": step / train_time,
        "train_seconds": train_time, "param_bytes": param_bytes, "peak_mem_mb": peak / 2**20,
        "peak_mem_method": method, "test_acc_soft": test_soft, "test_acc_discrete": test_disc,
        "gap": test_soft - test_disc, "best_val_discrete": max(c["val_discrete"] for c in curve), "curve": curve,
    }


def first_reaching(curve, target, key="val_discrete"):
    for point in curve:
        if point[key] >= target:
            return point
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--val-limit", type=int, default=3000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    base = copy.deepcopy(DEFAULTS)
    base["data"]["name"] = args.dataset
    base["model"].update(width=args.width, depth=args.depth, gate_inputs=2)
    base["train"].update(epochs=args.epochs, batch_size=args.batch_size, device=args.device)
    validate(base)
    device = resolve_device(args.device)
    data = prepare_data(base)
    encoder = Thermometer.fit(data.x_train, base["data"]["thresholds"], base["data"]["encoding"], data.feature_max)
    bits = (encoder.encode(data.x_train), torch.as_tensor(data.y_train), encoder.encode(data.x_val),
            torch.as_tensor(data.y_val), encoder.encode(data.x_test), torch.as_tensor(data.y_test))

    def variant(**changes):
        config = copy.deepcopy(base)
        for key, value in changes.items():
            section, name = key.split("__")
            config[section][name] = value
        return validate(config)

    print(f"benchmark on {device}: {args.dataset}, {args.depth} x {args.width} gates, {args.epochs} epochs")
    runs = {
        "op": run("op", variant(model__parametrization="op", model__init="gaussian"), data, encoder, bits, device,
                  args.eval_every, args.val_limit),
        "iwp": run("iwp", variant(), data, encoder, bits, device, args.eval_every, args.val_limit),
        "iwp_gumbel": run("iwp_gumbel", variant(train__gumbel=True), data, encoder, bits, device,
                          args.eval_every, args.val_limit),
    }
    op, iwp, gumbel = runs["op"], runs["iwp"], runs["iwp_gumbel"]
    op_best = op["best_val_discrete"]
    op_at_best = first_reaching(op["curve"], op_best)
    iwp_at = first_reaching(iwp["curve"], op_best)
    target = min(iwp["best_val_discrete"], gumbel["best_val_discrete"])
    plain_at, gumbel_at = first_reaching(iwp["curve"], target), first_reaching(gumbel["curve"], target)
    comparison = {
        "iwp_vs_op": {
            "param_ratio": op["param_bytes"] / iwp["param_bytes"],
            "steps_per_second_ratio": iwp["steps_per_second"] / op["steps_per_second"],
            "peak_mem_ratio": op["peak_mem_mb"] / iwp["peak_mem_mb"],
            "op_best_val_discrete": op_best,
            "op_steps_to_best": op_at_best["step"],
            "iwp_steps_to_op_best": iwp_at["step"] if iwp_at else None,
            "steps_ratio": op_at_best["step"] / iwp_at["step"] if iwp_at else None,
            "paper_claims": {"param_ratio": 4.0, "steps_ratio": 8.5, "backward_speedup": 1.86},
        },
        "gumbel_vs_plain": {
            "gap_plain": iwp["gap"], "gap_gumbel": gumbel["gap"],
            "gap_reduction": 1 - gumbel["gap"] / iwp["gap"] if iwp["gap"] else None,
            "target_val_discrete": target,
            "seconds_to_target_plain": plain_at["seconds"] if plain_at else None,
            "seconds_to_target_gumbel": gumbel_at["seconds"] if gumbel_at else None,
            "paper_claims": {"gap_reduction": 0.98, "wall_clock_speedup": 4.5},
        },
    }
    today = datetime.date.today().isoformat()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    result = {
        "benchmark": "train", "device": device_name, "date": today, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "dataset": args.dataset, "width": args.width, "depth": args.depth,
        "epochs": args.epochs, "batch_size": args.batch_size, "input_bits": encoder.bits,
        "runs": runs, "comparison": comparison,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"train-{device_name.replace(' ', '_')}-{today}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"dlgn training benchmark, {device_name}, {today}: {args.dataset}, {args.depth} x {args.width} gates, "
             f"{args.epochs} epochs, batch {args.batch_size}"]
    for r in runs.values():
        lines.append(f"  {r['name']:<11} {r['steps_per_second']:7.1f} steps/s  peak {r['peak_mem_mb']:8.1f} MB  "
                     f"params {r['param_bytes'] / 2**20:6.2f} MiB  test soft {100 * r['test_acc_soft']:.2f}%  "
                     f"discrete {100 * r['test_acc_discrete']:.2f}%  gap {100 * r['gap']:.2f} pp")
    c = comparison["iwp_vs_op"]
    lines.append(f"IWP vs OP: {c['param_ratio']:.1f}x fewer parameter bytes, {c['steps_per_second_ratio']:.2f}x "
                 f"steps/s, OP best val {100 * op_best:.2f}% at step {c['op_steps_to_best']}, IWP reached it at "
                 + (f"step {c['iwp_steps_to_op_best']} ({c['steps_ratio']:.2f}x fewer steps)" if c["steps_ratio"]
                    else "no step (not reached)"))
    g = comparison["gumbel_vs_plain"]
    lines.append(f"Gumbel vs plain IWP: test gap {100 * g['gap_plain']:.2f} -> {100 * g['gap_gumbel']:.2f} pp; "
                 f"to {100 * target:.2f}% val: {g['seconds_to_target_plain']} s plain, "
                 f"{g['seconds_to_target_gumbel']} s Gumbel")
    text = "\n".join(lines) + "\n"
    stem.with_suffix(".txt").write_text(text)
    print(text)
    plot(stem.with_suffix(".png"), runs)


def plot(path, runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs.values():
        steps = [c["step"] for c in r["curve"]]
        ax.plot(steps, [100 * c["val_discrete"] for c in r["curve"]], label=f"{r['name']} discrete")
        ax.plot(steps, [100 * c["val_soft"] for c in r["curve"]], "--", alpha=0.5, label=f"{r['name']} soft")
    ax.set(xlabel="training step", ylabel="validation accuracy (%)", title="IWP vs OP vs IWP+Gumbel")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
