"""Run-directory checkpoints: weights and wiring (safetensors), optimizer state, resolved config.

Files in a run directory:

- ``model.safetensors``: ``layers.{i}.weight``, ``layers.{i}.wiring``, ``encoding.thresholds``, and
  for convolutional layers ``conv.{i}.weight`` (the shared tables) and ``conv.{i}.leaf_wiring``;
  metadata ``format``, ``version``, ``epoch``, ``config`` (JSON), ``classes``, ``feature_max``,
  ``quantization`` (JSON).
- ``optimizer.safetensors``: Adam moments per parameter, metadata ``epoch``.
- ``test_scores.safetensors``: ``scores``, the discrete network's per-class integer scores on
  every test sample (``[N, classes]``), metadata ``epoch``: what ``dlgn compile`` and ``dlgn sim``
  hold the netlist and the hardware to, sample by sample.
- ``state.json``: epochs done, steps, elapsed seconds, the metrics history and ``files``, the
  SHA-256 of each checkpoint file of that epoch.
- ``config.toml``: the full resolved configuration.
- ``.dlgn-run``: the marker that says the directory is a dlgn run (``--force`` replaces nothing else).

Every tensor file carries the SHA-256 of each of its tensors in its metadata (``hashes``), checked
on loading; weights must be finite. Every file is written to a temporary name and renamed, so an
interrupted write never leaves a half-written file behind; ``state.json`` is written last, and a
set of files whose hashes or epochs disagree with it is refused on resume.
"""

import copy
import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dlgn.safety import atomic_file, atomic_write_text, sha256_file

from .config import ConfigError, dump_toml, merge, validate, DEFAULTS
from .data import DATASET_INFO
from .encoding import Thermometer
from .layers import LogicNet

__all__ = ["CheckpointError", "FORMAT", "VERSION", "save_checkpoint", "load_model", "load_training_state",
           "load_test_scores", "build_model", "is_run_dir", "write_run_marker", "RUN_MARKER",
           "SCORES_FILE"]

FORMAT = "dlgn-checkpoint"
VERSION = "1"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.toml"
SCORES_FILE = "test_scores.safetensors"
RUN_MARKER = ".dlgn-run"
_MARKER_TEXT = '{"format": "dlgn-run", "version": 1}\n'


class CheckpointError(Exception):
    """A run directory whose checkpoint is missing, damaged or not a dlgn checkpoint."""


def write_run_marker(run_dir):
    atomic_write_text(Path(run_dir) / RUN_MARKER, _MARKER_TEXT)


def is_run_dir(path):
    """True when ``path`` is a directory that ``dlgn train`` made: it holds the run marker (or,
    for runs made before the marker existed, a dlgn ``model.safetensors``)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / RUN_MARKER).is_file():
        try:
            return json.loads((path / RUN_MARKER).read_text()).get("format") == "dlgn-run"
        except (OSError, ValueError, AttributeError):
            return False
    try:
        from safetensors import safe_open

        with safe_open(str(path / MODEL_FILE), "pt") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False


def tensor_hash(tensor):
    """SHA-256 of a tensor's dtype, shape and bytes."""
    t = tensor.detach().contiguous().cpu()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _atomic_save(tensors, path, metadata):
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = dict(metadata, hashes=json.dumps({k: tensor_hash(v) for k, v in tensors.items()}, sort_keys=True))
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def build_model(config, in_bits, classes):
    """The network of ``config`` (untrained); convolutional layers (``model.conv``) take the
    dataset's image shape from :data:`~dlgn.train.data.DATASET_INFO`."""
    m, t = config["model"], config["train"]
    conv = m.get("conv") or None
    net = LogicNet(
        in_bits, classes, m["width"], m["depth"], gate_inputs=m["gate_inputs"],
        parametrization=m["parametrization"], estimator=m["estimator"], init=m["init"], wiring=m["wiring"],
        tau=m["tau"] or None, seed=t["seed"], gumbel=t["gumbel"], gumbel_tau=t["gumbel_tau"],
        kernels=t["kernels"], window=m["window"], groups=m["groups"], widths=m.get("widths") or None,
        conv=conv, image=DATASET_INFO[config["data"]["name"]]["image"] if conv else None,
        candidates=m.get("candidates", 4),
    )
    if m.get("wiring_temperature_end", 1.0) != 1.0:  # a trained model's soft mode: the temperature it ended at
        from .learned import set_wiring_temperature

        set_wiring_temperature(net, m["wiring_temperature_end"])
    return net


def save_checkpoint(run_dir, config, net, encoder, optimizer, state, data_meta, test_scores=None):
    """Write model, optimizer, the test scores, config and (last) ``state`` for ``state["epoch"]``;
    ``state["files"]`` is set to the hashes of the files written."""
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
    files = [MODEL_FILE, OPTIMIZER_FILE]
    if test_scores is not None:
        _atomic_save({"scores": test_scores.to(torch.int32)}, run_dir / SCORES_FILE, {"epoch": epoch, "format": FORMAT})
        files.append(SCORES_FILE)
    atomic_write_text(run_dir / CONFIG_FILE, dump_toml(config))
    state["files"] = {name: sha256_file(run_dir / name) for name in files}
    atomic_write_text(run_dir / STATE_FILE, json.dumps(state, indent=1))


def _read_safetensors(path):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing {path}: not a dlgn run directory (run 'dlgn train' first)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({e}); retrain or restore it") from None
    if "hashes" in metadata:
        try:
            hashes = json.loads(metadata["hashes"])
        except ValueError:
            raise CheckpointError(f"{path} has damaged metadata (hashes); retrain or restore it") from None
        if set(hashes) != set(tensors):
            raise CheckpointError(f"{path} holds tensors {sorted(set(tensors) ^ set(hashes))} that its hashes do not "
                                  f"list (or the reverse): the file was altered; retrain or restore it")
        for name, value in tensors.items():
            if tensor_hash(value) != hashes[name]:
                raise CheckpointError(f"{path}: tensor {name} does not match its recorded SHA-256: the file is damaged "
                                      f"or was altered; retrain or restore it")
    return tensors, metadata


def _check_finite(path, tensors):
    for name, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{path}: tensor {name} holds {bad} non-finite values (NaN or inf): the training "
                                  f"diverged before this checkpoint; retrain with a lower train.lr")


def load_model(run_dir):
    """Load a run's trained network, encoder and metadata (for evaluation and compiling).

    Returns ``(net, encoder, info)`` where ``info`` has ``config``, ``classes``, ``epoch``,
    ``feature_max``, ``quantization``, ``dataset``."""
    run_dir = Path(run_dir)
    tensors, meta = _read_safetensors(run_dir / MODEL_FILE)
    _check_finite(run_dir / MODEL_FILE, tensors)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{run_dir / MODEL_FILE} is not a dlgn checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{run_dir / MODEL_FILE} has checkpoint version {meta.get('version')!r}; this dlgn reads version {VERSION}"
        )
    try:
        config = validate(merge(copy.deepcopy(DEFAULTS), json.loads(meta["config"]), "checkpoint config", stored=True))
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
            layer = net.get_submodule(name.rsplit(".", 1)[0])
            # a convolutional layer's leaves may read one row past its input: the zero padding
            limit = layer.in_features + (1 if name.endswith("leaf_wiring") and layer.padding else 0)
            if value.numel() and (value.min() < 0 or value.max() >= limit):
                raise CheckpointError(f"{run_dir / MODEL_FILE}: {name} indexes outside the previous layer")
    net.load_state_dict(tensors)
    net.eval()
    return net, encoder, info


def load_training_state(run_dir, net, optimizer):
    """Restore optimizer state for resuming; returns the ``state.json`` dict.

    The model (already loaded by the caller), optimizer and score files must be the ones
    ``state.json`` lists: same epoch, same SHA-256."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    epoch = state["epoch"]
    check_run_files(run_dir, state)
    tensors, meta = _read_safetensors(run_dir / OPTIMIZER_FILE)
    _check_finite(run_dir / OPTIMIZER_FILE, tensors)
    if meta.get("epoch") != str(epoch):
        raise CheckpointError(f"{run_dir}: optimizer state is from epoch {meta.get('epoch')}, state.json says {epoch}; "
                              f"the files come from different epochs: restore the run or retrain")
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


def read_state(run_dir):
    """``state.json`` of ``run_dir``, checked."""
    path = Path(run_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
        state["epoch"] = int(state["epoch"])
        if not isinstance(state.get("history"), list) or not isinstance(state.get("files", {}), dict):
            raise ValueError("history or files has the wrong type")
        if not math.isfinite(float(state["seconds"])):
            raise ValueError("seconds is not finite")
    except FileNotFoundError:
        raise CheckpointError(f"missing {path}: nothing to resume") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); restore the run or retrain") from None
    return state


def check_run_files(run_dir, state):
    """Refuse a run whose checkpoint files are not the ones ``state.json`` recorded (a mixed set
    from different epochs, or an altered file)."""
    run_dir = Path(run_dir)
    for name, digest in state.get("files", {}).items():
        path = run_dir / name
        if not path.is_file():
            raise CheckpointError(f"{run_dir}: {name} is missing but state.json lists it for epoch {state['epoch']}; "
                                  f"restore the run or retrain")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{run_dir}: {name} is not the file state.json recorded for epoch {state['epoch']} "
                                  f"(SHA-256 differs): the run's files come from different epochs or were altered; "
                                  f"restore the run or retrain")


def load_test_scores(run_dir, epoch):
    """The discrete per-class test scores that ``dlgn train`` recorded for ``epoch`` (an int
    tensor ``[N, classes]``), or ``None`` for a run that recorded none (made before they were
    recorded). Raises :class:`CheckpointError` when they belong to another epoch."""
    path = Path(run_dir) / SCORES_FILE
    if not path.exists():
        return None
    tensors, meta = _read_safetensors(path)
    if meta.get("epoch") != str(epoch) or "scores" not in tensors:
        raise CheckpointError(f"{path} is from epoch {meta.get('epoch')}, the model from epoch {epoch}: the run's files "
                              f"come from different epochs; restore the run or retrain")
    return tensors["scores"]
