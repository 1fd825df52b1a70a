"""dlgn against torchlogix on the same data, encoding and architecture, side by side.

torchlogix (PyPI, pure PyTorch) is installed into ``bench/work/peers/pkgs`` only (``pip download
torchlogix==0.2.2 --no-deps`` + ``pip install --no-deps --target``), never as a project
dependency. Version 0.2.2 declares Python >= 3.10 but does not import on 3.11: its
``circuit.py`` (C export, which this benchmark does not use) nests a triple-quoted f-string in a
triple-quoted f-string, which only Python 3.12 parses. :func:`prepare_torchlogix` patches that one
expression (hoists the inner f-string into a variable before the ``return``) and records the patch
in the result; its imports need only torch and numpy, which the project has.

Both sides: Fashion-MNIST, 3 uniform thermometer thresholds per pixel (dlgn's encoder: 2,352
bits), the same random fixed wiring scheme (every gate reads ``n`` inputs drawn at random),
residual init, group sum with the same ``tau``, Adam (lr 0.01), batch 128, the same shuffled order,
cross-entropy, the same torch build and thread count. dlgn runs its default IWP (``sin01``
estimator, C++ CPU kernels); torchlogix its ``light`` parametrization (sigmoid, the Light DLGN
paper's input-wise basis), ``connections="fixed"``. Each framework and architecture runs in its
own process (so peak memory is its own), one after the other; the load average is recorded
before each. With ``--repeat R`` each architecture runs R times, the two frameworks alternating
(dlgn, torchlogix, dlgn, ...), and the ratios compare the medians: this machine's speed changes
over minutes (another tenant of the host, seen as the same deterministic run taking 2.5 s or 5.3 s
per epoch), and alternating repeats expose both frameworks to the same conditions.

Writes ``bench/results/peers-<date>.json`` and a text table next to it.

    python bench/peers.py [--epochs2 3] [--epochs4 1] [--threads 2] [--subset N] [--cases ...] [--repeat R]
                          [--out PATH]
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work" / "peers"
PKGS = WORK / "pkgs"
sys.path.insert(0, str(HERE))
from machine import cpu_name  # noqa: E402

TORCHLOGIX = "torchlogix==0.2.2"
#: name -> (depth, width, gate inputs)
ARCHS = {"4x4000-n2": (4, 4000, 2), "3x8000-n4": (3, 8000, 4)}
CLASSES = 10

_PATCH_NOTE = ("torchlogix 0.2.2 circuit.py: the triple-quoted f-string nested in the C-export f-string "
               "(circuit_bench_bool, Python 3.12-only syntax) hoisted into a variable before the return; "
               "nothing else changed, and the benchmark does not call the C export")


def prepare_torchlogix():
    """Install torchlogix (no dependencies) under ``bench/work/peers/pkgs`` and patch it for 3.11;
    returns a note of what was done."""
    circuit = PKGS / "torchlogix" / "circuit.py"
    if not circuit.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(WORK), TORCHLOGIX],
                       check=True)
        wheel = sorted(WORK.glob("torchlogix-*.whl"))[-1]
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(PKGS), str(wheel)],
                       check=True)
    text = circuit.read_text()
    if "_dlgn_bench_bool" not in text:
        start = text.index('{"" if pack_bits is None else f"""')
        end = text.index('}"""}"""', start)
        inner = text[start + len('{"" if pack_bits is None else '):end + len('}"""')]
        ret = text.rindex('        return f"""\\', 0, start)
        text = (text[:ret] + f'        _dlgn_bench_bool = "" if pack_bits is None else {inner}\n'
                + text[ret:start] + "{_dlgn_bench_bool}" + '"""' + text[end + len('}"""}"""'):])
        circuit.write_text(text)
    return _PATCH_NOTE


def _data(subset):
    import torch

    from dlgn.train.data import DATASET_INFO, load_dataset
    from dlgn.train.encoding import Thermometer

    data = load_dataset("fashion-mnist", val_fraction=0.0)
    enc = Thermometer.fit(data.x_train, 3, "uniform", DATASET_INFO["fashion-mnist"]["feature_max"])
    x_train, y_train = data.x_train, data.y_train
    if subset:
        x_train, y_train = x_train[:subset], y_train[:subset]
    return (enc.encode(x_train).float(), torch.as_tensor(y_train).long(),
            enc.encode(data.x_test).float(), torch.as_tensor(data.y_test).long())


def _dlgn_model(depth, width, n, in_bits, tau):
    from dlgn.train.layers import LogicNet

    net = LogicNet(in_bits, CLASSES, width, depth, gate_inputs=n, wiring="random", tau=tau, seed=0)

    def forward(x, mode):
        return net(x, mode)

    return net, forward


def _torchlogix_model(depth, width, n, in_bits, tau):
    import torch

    sys.path.insert(0, str(PKGS))
    from torchlogix.layers import GroupSum, LogicDense

    layers, features = [], in_bits
    for _ in range(depth):
        layers.append(LogicDense(features, width, lut_rank=n, parametrization="light", connections="fixed"))
        features = width
    net = torch.nn.Sequential(*layers, GroupSum(CLASSES, tau=tau))

    def forward(x, mode):
        net.train(mode == "train" or mode == "soft")
        return net(x)

    return net, forward


def run_one(framework, arch, epochs, threads, subset):
    """Train one framework on one architecture; returns the row (run in its own process)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    depth, width, n = ARCHS[arch]
    x_train, y_train, x_test, y_test = _data(subset)
    tau = (width / CLASSES) ** 0.5
    make = _dlgn_model if framework == "dlgn" else _torchlogix_model
    net, forward = make(depth, width, n, x_train.shape[1], tau)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    epoch_seconds = []
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=gen)
        started = time.perf_counter()
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            loss = torch.nn.functional.cross_entropy(forward(x_train[idx], "train"), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epoch_seconds.append(time.perf_counter() - started)

    def accuracy(mode):
        started = time.perf_counter()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x_test), 2000):
                correct += (forward(x_test[i:i + 2000], mode).argmax(1) == y_test[i:i + 2000]).sum().item()
        return correct / len(x_test), time.perf_counter() - started

    discrete, eval_seconds = accuracy("discrete")
    soft, _ = accuracy("soft")
    return {"framework": framework, "arch": arch, "depth": depth, "width": width, "gate_inputs": n,
            "parametrization": "iwp (sin01)" if framework == "dlgn" else "light (sigmoid)",
            "epochs": epochs, "threads": threads, "train_samples": len(x_train),
            "seconds_per_epoch": round(sum(epoch_seconds) / len(epoch_seconds), 2),
            "epoch_seconds": [round(s, 2) for s in epoch_seconds],
            "test_acc_discrete": discrete, "test_acc_soft": soft,
            "eval_seconds_discrete": round(eval_seconds, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _ratios(rows):
    """Per architecture with both frameworks: torchlogix / dlgn of the median seconds per epoch
    and of the median evaluation time, the ratio of each repeat's pair, and the accuracy difference
    (the runs are deterministic: every repeat has the same accuracy)."""
    ratios = {}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        runs = {f: [r for r in rows if r["arch"] == arch and r["framework"] == f] for f in ("dlgn", "torchlogix")}
        pairs = [(d, t) for d in runs["dlgn"] for t in runs["torchlogix"] if d.get("repeat") == t.get("repeat")]
        if not pairs:
            continue
        med = {f: statistics.median([r["seconds_per_epoch"] for r in runs[f]]) for f in runs}
        ev = {f: statistics.median([r["eval_seconds_discrete"] for r in runs[f]]) for f in runs}
        ratios[arch] = {"epoch_speedup": round(med["torchlogix"] / med["dlgn"], 2),
                        "epoch_speedup_per_run": [round(t["seconds_per_epoch"] / d["seconds_per_epoch"], 2)
                                                  for d, t in pairs],
                        "runs": len(pairs),
                        "median_seconds_per_epoch": {f: round(v, 2) for f, v in med.items()},
                        "eval_speedup": round(ev["torchlogix"] / max(ev["dlgn"], 1e-3), 2),
                        "discrete_acc_difference_pp": round(100 * (pairs[0][0]["test_acc_discrete"]
                                                                   - pairs[0][1]["test_acc_discrete"]), 2)}
    return ratios


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs2", type=int, default=3, help="epochs of the two-input case")
    parser.add_argument("--epochs4", type=int, default=1, help="epochs of the four-input case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--subset", type=int, default=0, help="first N training samples (0: all 60,000)")
    parser.add_argument("--cases", default="4x4000-n2,3x8000-n4")
    parser.add_argument("--repeat", type=int, default=1, help="runs per framework and architecture, alternating")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/peers-<date>.json)")
    parser.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "ARCH"), help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one, args.epochs, args.threads, args.subset)), flush=True)
        return
    note = prepare_torchlogix()
    date = datetime.date.today().isoformat()
    out = args.out or HERE / "results" / f"peers-{date}.json"
    rows = []
    for arch, repeat in ((a, k) for a in args.cases.split(",") for k in range(max(1, args.repeat))):
        epochs = args.epochs2 if ARCHS[arch][2] == 2 else args.epochs4
        for framework in ("dlgn", "torchlogix"):
            load = os.getloadavg()
            proc = subprocess.run([sys.executable, __file__, "--one", framework, arch, "--epochs", str(epochs),
                                   "--threads", str(args.threads), "--subset", str(args.subset)],
                                  capture_output=True, text=True)
            match = re.search(r"^RESULT (.*)$", proc.stdout, re.M)
            if proc.returncode or not match:
                raise SystemExit(f"{framework} {arch} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(match.group(1))
            row["repeat"] = repeat
            row["load_average_before"] = [round(x, 2) for x in load]
            row["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            rows.append(row)
            print(f"{framework:>10} {arch}: {row['seconds_per_epoch']:.1f} s/epoch, discrete "
                  f"{100 * row['test_acc_discrete']:.2f}%, soft {100 * row['test_acc_soft']:.2f}%, "
                  f"{row['peak_rss_mib']:.0f} MiB (load {load[0]:.2f})", flush=True)
            ratios = _ratios(rows)
            result = {"date": date, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine()},
                      "torch": __import__("torch").__version__, "torchlogix": TORCHLOGIX, "torchlogix_patch": note,
                      "rows": rows, "ratios": ratios}
            out.write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"dlgn vs torchlogix, Fashion-MNIST, 3 thresholds, {args.threads} threads ({date}, {cpu_name()})",
             f"{'arch':<12}{'framework':>11}{'s/epoch':>9}{'discrete':>10}{'soft':>8}{'MiB':>7}{'load':>6}"]
    for r in rows:
        r = {**r, "arch": r["arch"] + (f" #{r['repeat'] + 1}" if args.repeat > 1 else "")}
        lines.append(f"{r['arch']:<12}{r['framework']:>11}{r['seconds_per_epoch']:>9.1f}"
                     f"{100 * r['test_acc_discrete']:>9.2f}%{100 * r['test_acc_soft']:>7.2f}%{r['peak_rss_mib']:>7.0f}"
                     f"{r['load_average_before'][0]:>6.2f}")
    for a, r in result["ratios"].items():
        spread = (f" (medians of {r['runs']} runs each; per run {min(r['epoch_speedup_per_run'])}x to "
                  f"{max(r['epoch_speedup_per_run'])}x)" if r["runs"] > 1 else "")
        lines.append(f"{a}: dlgn {r['epoch_speedup']}x faster per epoch{spread}, {r['eval_speedup']}x in evaluation, "
                     f"{r['discrete_acc_difference_pp']:+.2f} pp discrete")
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
