"""Run-directory checkpoints: weights and wiring (safetensors), optimizer state, resolved config.

Files in a run directory:

- ``model.safetensors``: ``layers.{i}.weight``, ``layers.{i}.wiring``, ``encoding.thresholds``;
  metadata ``format``, ``version``, ``epoch``, ``config`` (JSON), ``classes``, ``feature_max``,
  ``quantization`` (JSON).
- ``optimizer.safetensors``: Adam moments per parameter, metadata ``epoch``.
- ``state.json``: epochs done, steps, elapsed seconds and the metrics history.
- ``config.toml``: the full resolved configuration.

Every file is written to a temporary name and renamed, so an interrupted write never leaves a
half-written file behind; ``state.json`` is written last and names the epoch the other files
must carry.
"""

import copy
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ConfigError, dump_toml, merge, validate, DEFAULTS
from .encoding import Thermometer
from .layers import LogicNet

__all__ = ["CheckpointError", "FORMAT", "VERSION", "save_checkpoint", "load_model", "load_training_state",
           "build_model", "atomic_write_text"]

FORMAT = "dlgn-checkpoint"
VERSION = "1"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.toml"


class CheckpointError(Exception):
    """A run directory whose checkpoint is missing, damaged or not a dlgn checkpoint."""


def atomic_write_text(path, text):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_save(tensors, path, metadata):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def build_model(config, in_bits, classes):
    m, t = config["model"], config["train"]
    return LogicNet(
        in_bits, classes, m["width"], m["depth"], gate_inputs=m["gate_inputs"],
        parametrization=m["parametrization"], estimator=m["estimator"], init=m["init"], wiring=m["wiring"],
        tau=m["tau"] or None, seed=t["seed"], gumbel=t["gumbel"], gumbel_tau=t["gumbel_tau"],
        kernels=t["kernels"], window=m["window"], groups=m["groups"],
    )


def save_checkpoint(run_dir, config, net, encoder, optimizer, state, data_meta):
    """Write model, optimizer, config and (last) ``state`` for ``state["epoch"]``."""
    run_dir = Path(run_dir)
    epoch = str(state["epoch"])
    tensors = {k: v for k, v in net.state_dict().items()}
    tensors["encoding.thresholds"] = torch.from_numpy(encoder.thresholds)
    meta = {
        "format": FORMAT, "version": VERSION, "epoch": epoch, "config": json.dumps(config),
        "classes": str(net.classes), "feature_max": str(data_meta["feature_max"]),
        "quantization": json.dumps(data_meta.get("quantization", {})), "dataset": data_meta["dataset"],
    }
    _atomic_save(tensors, run_dir / MODEL_FILE, meta)
    opt_state = optimizer.state_dict()
    opt_tensors = {}
    for index, entry in opt_state["state"].items():
        for name, value in entry.items():
            opt_tensors[f"state.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    _atomic_save(opt_tensors, run_dir / OPTIMIZER_FILE,
                 {"epoch": epoch, "param_groups": json.dumps(opt_state["param_groups"])})
    atomic_write_text(run_dir / CONFIG_FILE, dump_toml(config))
    atomic_write_text(run_dir / STATE_FILE, json.dumps(state, indent=1))


def _read_safetensors(path):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing {path}: not a dlgn run directory (run 'dlgn train' first)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({e}); retrain or restore it") from None


def load_model(run_dir):
    """Load a run's trained network, encoder and metadata (for evaluation and compiling).

    Returns ``(net, encoder, info)`` where ``info`` has ``config``, ``classes``, ``epoch``,
    ``feature_max``, ``quantization``, ``dataset``."""
    run_dir = Path(run_dir)
    tensors, meta = _read_safetensors(run_dir / MODEL_FILE)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{run_dir / MODEL_FILE} is not a dlgn checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{run_dir / MODEL_FILE} has checkpoint version {meta.get('version')!r}; this dlgn reads version {VERSION}"
        )
    try:
        config = validate(merge(copy.deepcopy(DEFAULTS), json.loads(meta["config"]), "checkpoint config"))
        classes = int(meta["classes"])
        info = {"config": config, "classes": classes, "epoch": int(meta["epoch"]),
                "feature_max": int(meta["feature_max"]), "quantization": json.loads(meta["quantization"]),
                "dataset": meta["dataset"]}
        encoder = Thermometer(tensors.pop("encoding.thresholds").numpy())
    except (KeyError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{run_dir / MODEL_FILE} has damaged metadata ({e})") from None
    net = build_model(config, encoder.bits, classes)
    expected = net.state_dict()
    if set(expected) != set(tensors):
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        raise CheckpointError(f"{run_dir / MODEL_FILE} does not match its config: missing {missing}, unexpected {extra}")
    for name, value in tensors.items():
        if value.shape != expected[name].shape or value.dtype != expected[name].dtype:
            raise CheckpointError(
                f"{run_dir / MODEL_FILE}: tensor {name} is {tuple(value.shape)} {value.dtype}, "
                f"the config needs {tuple(expected[name].shape)} {expected[name].dtype}"
            )
        if name.endswith("wiring"):
            layer = net.layers[int(name.split(".")[1])]
            if value.min() < 0 or value.max() >= layer.in_features:
                raise CheckpointError(f"{run_dir / MODEL_FILE}: {name} indexes outside the previous layer")
    net.load_state_dict(tensors)
    net.eval()
    return net, encoder, info


def load_training_state(run_dir, net, optimizer):
    """Restore optimizer state for resuming; returns the ``state.json`` dict."""
    run_dir = Path(run_dir)
    try:
        state = json.loads((run_dir / STATE_FILE).read_text())
        epoch = int(state["epoch"])
    except FileNotFoundError:
        raise CheckpointError(f"missing {run_dir / STATE_FILE}: nothing to resume") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{run_dir / STATE_FILE} is damaged ({e})") from None
    tensors, meta = _read_safetensors(run_dir / OPTIMIZER_FILE)
    if meta.get("epoch") != str(epoch):
        raise CheckpointError(f"{run_dir}: optimizer state is from epoch {meta.get('epoch')}, state.json says {epoch}")
    per_param = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        per_param.setdefault(int(index), {})[name] = value
    saved = optimizer.state_dict()
    try:
        saved["param_groups"] = json.loads(meta["param_groups"])
        saved["state"] = per_param
        optimizer.load_state_dict(saved)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{run_dir / OPTIMIZER_FILE} does not fit this model ({e})") from None
    return state
