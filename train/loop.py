"""``dlgn train``: one training run into a run directory (DESIGN §3)."""

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dlgn.safety import (Interrupted, StagedDirectory, atomic_file, atomic_write_text, latched_interrupts,
                         raise_if_interrupted)

from . import distributed as dist
from . import functional as F
from . import kernels
from .checkpoint import (CONFIG_FILE, RUN_MARKER, STATE_FILE, build_model, is_run_dir, load_model, load_training_state,
                         save_checkpoint, write_run_marker)
from .config import RESUMABLE, ConfigError, describe_layers, flatten, validate
from .data import DATASET_INFO, load_dataset
from .encoding import Thermometer
from .learned import set_wiring_temperature, wiring_temperature

__all__ = ["RunError", "train", "evaluate", "METRIC_COLUMNS"]

METRIC_COLUMNS = ["epoch", "step", "seconds", "train_loss", "val_acc_soft", "val_acc_discrete",
                  "test_acc_soft", "test_acc_discrete", "gap", "undecided"]


class RunError(Exception):
    """A run that cannot start: the message says what to do."""


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"train.device = {name!r} but no CUDA device is available; use --set train.device=cpu")
    return torch.device(name)


def prepare_data(config):
    d = config["data"]
    data = load_dataset(d["name"], d["data_dir"] or None, d["val_fraction"], config["train"]["seed"])
    if d["train_subset"]:
        data.x_train, data.y_train = data.x_train[: d["train_subset"]], data.y_train[: d["train_subset"]]
    return data


def _check_image(config, data):
    """Convolutional layers read the features as the dataset's image: refuse files of another size."""
    image = DATASET_INFO[data.name]["image"]
    if config["model"]["conv"] and data.features != math.prod(image):
        raise RunError(f"model.conv reads {data.name} as {image[0]} x {image[1]} x {image[2]} images "
                       f"({math.prod(image)} features), but the files in {config['data']['data_dir'] or 'the default location'} hold "
                       f"{data.features} features per sample; use {data.name}'s standard files or remove model.conv")


@torch.no_grad()
def evaluate(net, bits, labels, batch_size, device):
    """Soft and discrete accuracy of ``net`` on encoded ``bits`` (``uint8`` ``[N, B]``)."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    soft, discrete = _correct(net, bits, labels, batch_size, device)
    return soft / len(labels), discrete / len(labels)


@torch.no_grad()
def _correct(net, bits, labels, batch_size, device, scores=None):
    """Correct soft and discrete predictions; with ``scores`` (an int tensor ``[len(labels),
    classes]``) also the discrete per-class scores of every sample."""
    was_training = net.training
    net.eval()
    soft = discrete = 0
    for start in range(0, len(labels), batch_size):
        x = bits[start:start + batch_size].to(device, torch.float32)
        y = labels[start:start + batch_size].to(device)
        soft += (F.predict(net(x, "soft")) == y).sum().item()
        sums = net.group_sums(x, "discrete")
        discrete += (F.predict(sums) == y).sum().item()
        if scores is not None:
            scores[start:start + len(y)] = sums.round().long().cpu()
    net.train(was_training)
    return soft, discrete


def _evaluate_split(net, splits, batch_size, device, ctx, scores_of=None):
    """Accuracies on several ``(bits, labels)`` splits, each rank scoring one slice of each; with
    ``scores_of = i``, also the discrete per-class scores of every sample of split ``i`` (all
    ranks' slices put together)."""
    counts, scores = [], None
    for i, (bits, labels) in enumerate(splits):
        part = dist.eval_share(len(labels), ctx)
        if i == scores_of:
            scores = torch.zeros(len(labels), net.classes, dtype=torch.int64)
            counts.extend(_correct(net, bits[part], labels[part], batch_size, device, scores[part]))
        else:
            counts.extend(_correct(net, bits[part], labels[part], batch_size, device))
    counts = ctx.all_reduce_sum(counts, device)
    if scores is not None:
        scores = ctx.all_reduce_tensor(scores, device)  # each rank filled its slice, zeros elsewhere
    out = []
    for i, (_, labels) in enumerate(splits):
        n = len(labels)
        out.append((counts[2 * i] / n, counts[2 * i + 1] / n) if n else (None, None))  # no split (val_fraction 0)
    return out, scores


def batch_loss(model, x, y, global_count, ctx):
    """The loss to backpropagate for this rank's share ``x, y`` of a global batch of
    ``global_count`` samples, and this rank's part of the batch's mean loss (a float).

    DDP averages gradients over the ranks, so each rank scales its *sum* of losses by
    ``world_size / global_count``: the step then follows the global batch's mean loss exactly,
    also when the shares differ in size (or one is empty)."""
    if not ctx.distributed:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        return loss, loss.item()
    loss_sum = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
    return loss_sum * (ctx.world_size / global_count), loss_sum.item() / global_count


def _epoch_generator(seed, epoch, salt):
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 4 + salt)


class RunDirectory:
    """Where a run is written, so that nothing a user has is lost.

    A new run trains into a hidden sibling of ``out`` (a :class:`~dlgn.safety.StagedDirectory`)
    that is swapped into place once the first checkpoint exists: until then an existing run in
    ``out`` stays whole, and an interrupted first epoch leaves nothing behind. ``out`` may be
    replaced only when it is a dlgn run (``--force``, or without it when that run never finished
    an epoch); any other non-empty directory is refused whatever the flags. A resumed run writes
    into ``out`` itself (each file atomically)."""

    def __init__(self, out, force, resume):
        self.out = Path(out)
        self.resume = resume
        self.stage = None
        self.replacing = False
        out = self.out
        if out.exists() and not out.is_dir():
            raise RunError(f"{out} is a file, not a directory; choose another --out")
        if resume:
            if not os.access(out, os.W_OK | os.X_OK):
                raise RunError(f"cannot write to {out}: it is read-only; make it writable to resume it")
            return
        if out.is_dir() and any(out.iterdir()):
            if not is_run_dir(out):
                raise RunError(f"{out} is not empty and is not a dlgn run directory (it has no {RUN_MARKER}); dlgn "
                               f"train never replaces it, even with --force: choose another --out")
            finished = (out / STATE_FILE).is_file()
            if finished and not force:
                raise RunError(f"{out} already exists and holds a trained run; pass --force to replace it (it stays whole until "
                               f"the new run's first epoch is checkpointed), or --resume {out} to continue it")
            self.replacing = finished

    @property
    def path(self):
        """The directory the run writes into now."""
        return self.stage.path if self.stage is not None and not self.stage.committed else self.out

    def start(self):
        """Create the staging directory (rank 0 of a new run); fails early when ``out``'s parent
        is not writable."""
        if self.resume:
            return
        self.stage = StagedDirectory(self.out.resolve())
        try:
            self.stage.create()
            write_run_marker(self.stage.path)
            atomic_write_text(self.stage.path / CONFIG_FILE, "")
        except OSError as e:
            self.stage.discard()
            self.stage = None
            raise RunError(f"cannot create the run directory {self.out}: {e.strerror or e}; choose a writable "
                           f"--out") from None

    def checkpointed(self):
        """Called after each checkpoint: the first one puts the new run in place (unless a
        Ctrl-C arrived before it, even one that a C extension swallowed)."""
        if self.stage is not None and not self.stage.committed:
            raise_if_interrupted()
            self.stage.commit()

    def close(self):
        if self.stage is not None:
            self.stage.discard()

    def interrupted_message(self):
        state = self.out / STATE_FILE
        if self.resume or (self.stage is not None and self.stage.committed):
            try:
                epoch = json.loads(state.read_text())["epoch"]
            except (OSError, ValueError, KeyError):
                epoch = "?"
            return (f"interrupted; the run in {self.out} is checkpointed after epoch {epoch}: continue it with "
                    f"'dlgn train --resume {self.out}' (or run 'make train' again)")
        kept = (f"; {self.out} still holds the earlier run, unchanged" if self.replacing else
                "; nothing was written")
        return f"interrupted before the first epoch finished{kept}"


def _model_fingerprints(net, encoder, config):
    wiring = b"".join(buffer.cpu().numpy().tobytes() for name, buffer in net.named_buffers() if name.endswith("wiring"))
    params = b"".join(p.detach().cpu().numpy().tobytes() for p in net.parameters())
    setup = json.dumps(config, sort_keys=True, default=str).encode() + np.asarray(encoder.thresholds).tobytes()
    return wiring, params, setup


def _default_threads(ctx, device):
    """Under torchrun on the CPU, share this node's cores between its ranks (torchrun itself
    sets OMP_NUM_THREADS=1, which leaves most cores idle on a large machine)."""
    if not ctx.distributed or device.type != "cpu":
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // ctx.local_world_size)


def train(config, out_dir, force=False, resume=False, overrides=None):
    """Train per ``config`` into ``out_dir``; with ``resume``, continue the run in ``out_dir``
    (its own config, updated by ``overrides`` for the keys in ``RESUMABLE``).

    Under ``torchrun`` every rank calls this; rank 0 alone writes files (see
    :mod:`dlgn.train.distributed`). Returns the summary dict (``None`` on the other ranks)."""
    out = Path(out_dir)
    loaded = None
    if resume:
        if not (out / STATE_FILE).is_file():
            raise RunError(f"nothing to resume in {out}: no {STATE_FILE} (start it with 'dlgn train --out {out}')")
        loaded = load_model(out)
        saved = loaded[2]["config"]
        for key, value in flatten(config).items():
            section, name = key.split(".")
            if key in (overrides or set()):
                if key not in RESUMABLE:
                    raise ConfigError(f"{key} cannot change when resuming; only {', '.join(sorted(RESUMABLE))} can")
                saved[section][name] = value
        config = saved
    validate(config)
    run = RunDirectory(out, force, resume)  # every rank checks before any rank writes (init is a rendezvous)
    t = config["train"]
    try:
        ctx, device_name = dist.setup(t["device"])
    except dist.DistributedError as exc:
        raise RunError(str(exc)) from None
    finished = False
    try:
        with latched_interrupts():
            if ctx.is_main:
                run.start()
            result = _train(config, run, resume, loaded, ctx, device_name)
        finished = True
        return result
    except dist.DistributedError as exc:
        raise RunError(str(exc)) from None
    except KeyboardInterrupt:
        raise Interrupted(run.interrupted_message()) from None
    finally:
        run.close()
        ctx.close(wait=finished)


def _train(config, run, resume, loaded, ctx, device_name):
    t = config["train"]
    device = resolve_device(device_name)
    threads = t["threads"] or _default_threads(ctx, device)
    if threads:
        torch.set_num_threads(threads)
    if t["kernels"] == "triton" and not kernels.can_run(torch.empty(0, device=device)):
        raise RunError(f"train.kernels = 'triton' needs a CUDA device with Triton installed (device is {device}); "
                       f"use --set train.kernels=auto")
    if t["kernels"] == "cpu":
        reason = kernels.cpu_cannot_run_reason(torch.empty(0, device=device))
        if reason:
            raise RunError(f"{reason}; use --set train.kernels=auto")
    torch.manual_seed(t["seed"])

    data = prepare_data(config)
    _check_image(config, data)
    if loaded:
        encoder = loaded[1]
    else:
        encoder = Thermometer.fit(data.x_train, config["data"]["thresholds"], config["data"]["encoding"],
                                  data.feature_max)
    shift = config["data"]["augment_shift"]
    # shifted batches are encoded as they are drawn; otherwise the training set once
    train_bits = None if shift else encoder.encode(data.x_train)
    val_bits, test_bits = encoder.encode(data.x_val), encoder.encode(data.x_test)
    y_train, y_val, y_test = (torch.as_tensor(y) for y in (data.y_train, data.y_val, data.y_test))
    data_meta = {"feature_max": data.feature_max, "quantization": data.quantization, "dataset": data.name}

    net = loaded[0] if loaded else build_model(config, encoder.bits, data.classes)
    net.set_kernels(t["kernels"])  # resumable: may differ from the checkpoint's config
    net.to(device)
    model = net
    if ctx.distributed:
        wiring, params, setup = _model_fingerprints(net, encoder, config)
        ctx.agree("the run's config and input encoding", setup, device)
        ctx.agree("the wiring", wiring, device)
        ctx.agree("the initial (or resumed) parameters", params, device)
        model = dist.wrap(net, device)
    optimizer = torch.optim.Adam(net.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    if resume:
        state = load_training_state(run.out, net, optimizer)
        if ctx.is_main and state["epoch"] < t["epochs"]:
            for name in ("summary.json", "summary.txt"):  # written again when the run finishes
                (run.out / name).unlink(missing_ok=True)
    else:
        state = {"epoch": 0, "step": 0, "seconds": 0.0, "history": []}
    ctx.barrier()

    batch_size = t["batch_size"]  # global: split over the ranks
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    total_steps = steps_per_epoch * t["epochs"]
    image = DATASET_INFO[data.name]["image"]
    start_epoch = state["epoch"]
    anneal = config["model"].get("wiring_temperature_end", 1.0)
    eta = _RunClock(steps_per_epoch * (t["epochs"] - start_epoch))
    for epoch in range(start_epoch, t["epochs"]):
        started = time.perf_counter()
        net.train()
        net.set_noise_generator(_epoch_generator(t["seed"], epoch, 1))
        order = torch.randperm(len(y_train), generator=_epoch_generator(t["seed"], epoch, 0))
        total_loss = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{t['epochs']}", unit="step",
                   leave=False, dynamic_ncols=True, mininterval=1.0, disable=not ctx.is_main)
        shifts = _epoch_generator(t["seed"], epoch, 2)
        for i in _closing(bar):
            raise_if_interrupted()
            batch = order[i * batch_size:(i + 1) * batch_size]
            idx = dist.batch_share(batch, ctx)
            if shift:  # the batch's images shifted, then encoded (the same bits as shifting the encoded image)
                x = encoder.encode(shift_images(data.x_train[idx.numpy()], image, shift, shifts))
                x = x.to(device, torch.float32, non_blocking=True)
            else:
                x = train_bits[idx].to(device, torch.float32, non_blocking=True)
            lr = learning_rate(t, state["step"] + i, total_steps)
            if anneal != 1.0:
                set_wiring_temperature(net, wiring_temperature(anneal, state["step"] + i, total_steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            y = y_train[idx].to(device, non_blocking=True)
            loss, step_loss = batch_loss(model, x, y, len(batch), ctx)
            _check_loss(step_loss, epoch, i, state, ctx, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += step_loss
            eta.step()
            if i % 20 == 0:
                bar.set_postfix(loss=f"{step_loss * ctx.world_size:.4f}", run_left=eta.left())
        bar.close()
        total_loss = ctx.all_reduce_sum([total_loss], device)[0]
        if not all(torch.isfinite(p).all() for p in net.parameters()):
            raise RunError(_diverged(f"the weights became non-finite in epoch {epoch + 1}", state))
        ((val_soft, val_disc), (test_soft, test_disc)), test_scores = _evaluate_split(
            net, [(val_bits, y_val), (test_bits, y_test)], t["eval_batch_size"], device, ctx, scores_of=1)
        state["seconds"] += time.perf_counter() - started
        state["epoch"] = epoch + 1
        state["step"] += steps_per_epoch
        row = {
            "epoch": epoch + 1, "step": state["step"], "seconds": round(state["seconds"], 3),
            "train_loss": total_loss / steps_per_epoch, "val_acc_soft": val_soft, "val_acc_discrete": val_disc,
            "test_acc_soft": test_soft, "test_acc_discrete": test_disc, "gap": test_soft - test_disc,
            "undecided": net.undecided_share(),
        }
        state["history"].append(row)
        if ctx.is_main:
            left = t["epochs"] - epoch - 1
            val = f"{val_soft:.4f}/{val_disc:.4f}" if val_soft is not None else "-"
            tqdm.write(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  val {val}  "
                       f"test {test_soft:.4f}/{test_disc:.4f} (soft/discrete)  undecided {row['undecided']:.3f}  "
                       f"{state['seconds']:.0f}s" + (f"  (about {eta.left()} left for {left} more epochs)"
                                                    if left else ""))
            save_checkpoint(run.path, config, net, encoder, optimizer, state, data_meta, test_scores)
            write_metrics(run.path, state["history"])
            run.checkpointed()
        ctx.barrier()

    if not ctx.is_main:
        return None
    summary = write_summary(run.out, config, net, state, data, device, ctx)
    plot_curves(run.out / "curves.png", state["history"], config)
    return summary


def learning_rate(t, step, total_steps):
    """``train.lr`` at ``step`` (0-based) of ``total_steps`` under ``train.schedule``."""
    if t.get("schedule", "constant") == "cosine" and total_steps > 0:
        return t["lr"] * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return t["lr"]


def shift_images(x, image, shift, generator):
    """Each row of ``x`` (``[N, C*H*W]`` raw features of ``image = (C, H, W)``) shifted by its own
    random ``(dy, dx)`` in ``[-shift, shift]``, zero-filled: a pixel of 0 is below every threshold,
    so the thermometer bits of the shifted image are the shifted bits of the image."""
    c, h, w = image
    x = torch.as_tensor(x).reshape(len(x), c, h, w)
    padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
    dy, dx = (torch.randint(0, 2 * shift + 1, (2, len(x)), generator=generator))
    rows = (torch.arange(h)[None, :] + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, None, :]
    out = padded[torch.arange(len(x))[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    return out.reshape(len(x), -1)


def _closing(bar):
    """Iterate ``bar``, closing it (clearing its line) also when the loop ends in an error."""
    try:
        yield from bar
    finally:
        bar.close()


class _RunClock:
    """Estimate of the run's remaining time from the steps (and evaluations) so far."""

    def __init__(self, steps):
        self.steps, self.done, self.start = steps, 0, time.perf_counter()

    def step(self):
        self.done += 1

    def left(self):
        if not self.done:
            return "?"
        seconds = (time.perf_counter() - self.start) / self.done * max(0, self.steps - self.done)
        minutes, secs = divmod(int(round(seconds)), 60)
        return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def _diverged(what, state):
    kept = (f"the checkpoint of epoch {state['epoch']} is kept" if state["epoch"] else "no epoch was checkpointed")
    return (f"training diverged: {what}; {kept}. Lower train.lr (or change the init) and train again")


def _check_loss(loss, epoch, step, state, ctx, device):
    """Stop on a non-finite loss (on every rank at the same step under torchrun)."""
    bad = not math.isfinite(loss)
    if ctx.distributed:
        bad = ctx.all_reduce_sum([float(bad)], device)[0] > 0
    if bad:
        raise RunError(_diverged(f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}", state))


def write_metrics(out, history):
    with atomic_file(Path(out) / "metrics.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(history)


def write_summary(out, config, net, state, data, device, ctx):
    last = state["history"][-1] if state["history"] else {}
    summary = {
        "dataset": data.name,
        "test_acc_soft": last.get("test_acc_soft"),
        "test_acc_discrete": last.get("test_acc_discrete"),
        "gap": last.get("gap"),
        "val_acc_soft": last.get("val_acc_soft"),
        "val_acc_discrete": last.get("val_acc_discrete"),
        "undecided": last.get("undecided"),
        "gates": net.gates,
        "gates_per_kind": net.gates_per_kind(),
        "params": net.params,
        "param_bytes": sum(p.numel() * p.element_size() for p in net.parameters()),
        "train_seconds": round(state["seconds"], 3),
        "steps": state["step"],
        "epochs": state["epoch"],
        "classes": data.classes,
        "input_bits": net.in_bits,
        "train_samples": int(len(data.y_train)),
        "test_samples": int(len(data.y_test)),
        "device": str(device),
        "world_size": ctx.world_size,
        "global_batch_size": config["train"]["batch_size"],
        "distributed_backend": ctx.backend if ctx.distributed else None,
        "torch": torch.__version__,
    }
    atomic_write_text(Path(out) / "summary.json", json.dumps(summary, indent=1) + "\n")
    m = config["model"]
    shape, n_inputs = describe_layers(m)
    procs = f" x {summary['world_size']} processes ({summary['distributed_backend']})" if summary["world_size"] > 1 else ""
    text = (
        f"dlgn run: {data.name}, {shape} {m['parametrization'].upper()} gates "
        f"({n_inputs} inputs, {m['estimator']}, {m['init']} init), {net.in_bits} input bits\n"
        f"epochs {state['epoch']}, steps {state['step']}, {state['seconds']:.0f} s on {device}"
        f"{procs}, "
        f"batch {summary['global_batch_size']}\n"
        f"test accuracy: soft {_pct(summary['test_acc_soft'])}, discrete {_pct(summary['test_acc_discrete'])}, "
        f"gap {_pct(summary['gap'])}\n"
        f"undecided table entries: {_pct(summary['undecided'])}\n"
    )
    atomic_write_text(Path(out) / "summary.txt", text)
    return summary


def _pct(value):
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.2f}%"


def plot_curves(path, history, config):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="loss")
    for key, style in (("val_acc_soft", "--"), ("val_acc_discrete", "-"), ("test_acc_soft", "--"),
                       ("test_acc_discrete", "-")):
        if any(r.get(key) is None for r in history):  # no validation split (data.val_fraction = 0)
            continue
        ax_acc.plot(epochs, [100 * r[key] for r in history], style, marker="o", label=key.replace("_acc", ""))
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="soft vs discrete accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    shape, n_inputs = describe_layers(config["model"])
    fig.suptitle(f"{config['data']['name']}: {shape} {config['model']['parametrization']} n={n_inputs}")
    fig.tight_layout()
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)

