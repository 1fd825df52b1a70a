"""Training configuration: defaults, TOML files, ``--set key=value`` overrides, validation.

The dotted keys below are a contract: outside scripts set them. An unknown key is refused with
the nearest valid key.
"""

import copy
import difflib
import math
import tomllib
from pathlib import Path

from .data import DATASET_INFO, DATASETS
from .encoding import ENCODINGS
from .conv import ORDERS
from .functional import ESTIMATORS, GROUP_LAYOUTS
from .layers import INITS, KERNELS, PARAMETRIZATIONS
from .wiring import WIRINGS

__all__ = ["ConfigError", "DEFAULTS", "CONV_DEFAULTS", "load_config", "apply_overrides", "validate", "dump_toml",
           "flatten", "layer_widths", "layer_gate_inputs", "describe_layers", "conv_shapes"]


class ConfigError(Exception):
    """A configuration that cannot be used; the message says what to change."""


DEFAULTS = {
    "data": {
        "name": "fashion-mnist",
        "data_dir": "",  # empty: the dataset's default location
        "thresholds": 3,  # thermometer thresholds per feature
        "encoding": "uniform",
        "val_fraction": 0.1,
        "train_subset": 0,  # use only the first N training samples (0: all)
        "augment_shift": 0,  # image datasets: shift each training image by up to N pixels (exact under thermometer bits)
    },
    "model": {
        "width": 16000,
        "depth": 4,
        "widths": [],  # gates per layer, e.g. [8000, 8000, 2000]; set, it overrides width and depth
        "gate_inputs": 2,  # or a list, one per layer
        "parametrization": "iwp",
        "estimator": "sin01",
        "init": "residual",
        "wiring": "random",
        "window": 64,  # features a gate may read with wiring = "windowed" (or "learned")
        "candidates": 4,  # wiring = "learned": candidate features per gate input, from the window
        # wiring = "learned": the temperature of the wiring's softmax at the end of training, reached
        # exponentially over the second half of the steps (1: constant; 0.05 closes most of the
        # soft-discrete gap, bench/results/recipe-2026-12-04.json)
        "wiring_temperature_end": 1.0,
        "groups": "contiguous",  # class groups: contiguous | interleaved
        "tau": 0.0,  # 0: sqrt(width / classes)
        # convolutional logic layers before the dense ones, e.g.
        # [{channels = 16, kernel = 3, tree_depth = 2, stride = 1, padding = 1, pool = 2}, ...]
        "conv": [],
    },
    "train": {
        "epochs": 10,
        "batch_size": 128,  # the global batch: under torchrun it is split over the ranks
        "lr": 0.01,
        "schedule": "constant",  # learning rate over the run: constant | cosine (to 0 at the last step)
        "weight_decay": 0.0,
        "seed": 0,
        "gumbel": False,
        "gumbel_tau": 1.0,
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "kernels": "auto",  # auto (Triton on CUDA, the C++ kernels on CPU) | triton | cpu | reference
        "eval_batch_size": 2000,
        "threads": 0,  # CPU threads for torch (0: torch's default; under torchrun: cores / local ranks)
    },
}

SCHEDULES = ("constant", "cosine")

CHOICES = {
    "data.name": DATASETS,
    "data.encoding": ENCODINGS,
    "model.parametrization": PARAMETRIZATIONS,
    "model.estimator": ESTIMATORS,
    "model.init": INITS,
    "model.wiring": WIRINGS + ("learned",),
    "model.groups": GROUP_LAYOUTS,
    "train.kernels": KERNELS,
    "train.schedule": SCHEDULES,
}

FLOAT32_MAX = 3.4e38

#: keys that may change when resuming a run
RESUMABLE = {"train.epochs", "train.device", "train.eval_batch_size", "train.threads", "train.kernels"}


def flatten(config):
    return {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}


def _valid_keys():
    return list(flatten(DEFAULTS))


def _unknown(key):
    near = difflib.get_close_matches(key, _valid_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(_valid_keys())}"
    return ConfigError(f"unknown config key {key!r}{hint}")


#: keys that take a list of positive integers (``model.gate_inputs`` also takes a single one)
INT_LIST_KEYS = {"model.widths", "model.gate_inputs"}

#: The fields of one ``model.conv`` entry and their defaults (``channels`` has none). ``pool``: 2
#: for 2 x 2 OR pooling with stride 2, 1 for none; ``leaf_channels``: input channels each tree
#: reads (0: all of them; the paper uses 2, which cost 5 points on digits); ``tree_inputs``: inputs per
#: gate of the tree (2: binary).
CONV_DEFAULTS = {"channels": None, "kernel": 3, "tree_depth": 2, "tree_inputs": 2, "stride": 1, "padding": 0,
                 "pool": 2, "leaf_channels": 0, "order": "channel"}
#: ``order`` (one of :data:`~dlgn.train.conv.ORDERS`), the layer's output feature order:
#: ``"channel"`` (each channel's map in turn) or ``"position"`` (the channels of one position
#: together; windowed wiring after it stays local on the chip). The only field that is not an integer.
#: smallest value of each field
_CONV_MIN = {"channels": 1, "kernel": 1, "tree_depth": 1, "tree_inputs": 1, "stride": 1, "padding": 0, "pool": 1,
             "leaf_channels": 0}
_CONV_EXAMPLE = "[{channels = 16, kernel = 3, tree_depth = 2, stride = 1, pool = 2}, ...]"


def _conv_list(value):
    """``model.conv``: a list of tables, each checked field by field and completed with the defaults."""
    key = "model.conv"
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise ConfigError(f"{key} must be a list of tables, one per convolutional layer, e.g. {_CONV_EXAMPLE}; "
                          f"not {value!r:.100}")
    layers = []
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        for field in entry:
            if field not in CONV_DEFAULTS:
                near = difflib.get_close_matches(field, list(CONV_DEFAULTS), n=1, cutoff=0.5)
                hint = f"did you mean {near[0]!r}?" if near else f"fields are {', '.join(CONV_DEFAULTS)}"
                raise ConfigError(f"unknown field {where}.{field}; {hint}")
        if "channels" not in entry:
            raise ConfigError(f"{where} needs channels (the number of output channels, e.g. 16)")
        layer = {}
        for field, default in CONV_DEFAULTS.items():
            v = entry.get(field, default)
            if field == "order":
                if v not in ORDERS:
                    raise ConfigError(f"{where}.order must be \"channel\" or \"position\" (the channels of a "
                                      f"position together), not {v!r}")
                layer[field] = v
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{where}.{field} must be an integer, not {v!r}")
            if v < _CONV_MIN[field]:
                raise ConfigError(f"{where}.{field} must be at least {_CONV_MIN[field]}, not {v!r}")
            layer[field] = v
        if layer["pool"] not in (1, 2):
            raise ConfigError(f"{where}.pool must be 2 (2 x 2 OR pooling, stride 2) or 1 (no pooling), "
                              f"not {layer['pool']!r}")
        if not 1 <= layer["tree_inputs"] <= 6:
            raise ConfigError(f"{where}.tree_inputs must be 1..6 (a native FPGA LUT), not {layer['tree_inputs']!r}")
        if layer["padding"] >= layer["kernel"]:
            raise ConfigError(f"{where}.padding must be smaller than its kernel ({layer['kernel']}), "
                              f"not {layer['padding']!r}")
        if layer["tree_inputs"] ** layer["tree_depth"] > 4096:
            raise ConfigError(f"{where}.tree_depth = {layer['tree_depth']} gives "
                              f"{layer['tree_inputs'] ** layer['tree_depth']} leaves per tree; use at most 4096 "
                              f"(the paper uses depth 3: 8 leaves)")
        layers.append(layer)
    return layers


def _int_list(key, value):
    if not value:
        hint = "; remove the key to use model.width x model.depth" if key == "model.widths" else ""
        raise ConfigError(f"{key} must list at least one layer{hint}")
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise ConfigError(f"{key} must be a list of integers, one per layer, not {value!r}")
    return list(value)


def _coerce(key, value, default):
    if key == "model.conv":
        return _conv_list(value)
    if key in INT_LIST_KEYS and isinstance(value, list):
        return _int_list(key, value)
    if isinstance(default, list):
        raise ConfigError(f"{key} must be a list of integers, one per layer, e.g. [8000, 8000, 2000], not {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, not {value!r}")
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} must be {type(default).__name__}, not {value!r}")


def merge(config, updates, source, stored=False):
    """Merge a nested dict of ``updates`` into ``config`` (in place), checking every key.

    ``stored``: ``updates`` is a config dlgn wrote itself (a checkpoint's), where an empty
    ``model.widths`` means "not set" rather than a user's mistake."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{source}: expected tables [data], [model], [train]")
    for section, values in updates.items():
        if section not in DEFAULTS:
            raise _unknown(section if not isinstance(values, dict) or not values else f"{section}.{next(iter(values))}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {section!r} must be a table ([{section}])")
        for key, value in values.items():
            full = f"{section}.{key}"
            if key not in DEFAULTS[section]:
                raise _unknown(full)
            if stored and value == [] and DEFAULTS[section][key] == []:
                continue
            config[section][key] = _coerce(full, value, DEFAULTS[section][key])
    return config


def load_config(path=None):
    """Defaults, updated from the TOML file at ``path`` if given."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a text (UTF-8) TOML file") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        merge(config, data, str(path))
    return config


def parse_override(item):
    """``"model.width=8000"`` -> ``("model.width", 8000)``; values are TOML literals, and a bare
    word is taken as a string."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, not {item!r}")
    key, raw = (s.strip() for s in item.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(config, items):
    for item in items or ():
        key, value = parse_override(item)
        if key.count(".") != 1:
            raise _unknown(key)
        section, name = key.split(".")
        merge(config, {section: {name: value}}, "--set")
    return config


def layer_widths(model):
    """Gates per layer of a ``[model]`` table: ``model.widths``, or ``model.depth`` times ``model.width``."""
    widths = model.get("widths") or []
    return list(widths) if widths else [model["width"]] * model["depth"]


def layer_gate_inputs(model):
    """Inputs per gate of each layer: ``model.gate_inputs`` repeated, or its list."""
    n = model["gate_inputs"]
    return list(n) if isinstance(n, list) else [n] * len(layer_widths(model))


def describe_layers(model):
    """``"3 x 8000"`` for uniform layers, ``"8000-8000-2000"`` otherwise, with the gate inputs;
    convolutional layers first (``"conv 16k3d2p2 + ..."``: channels, kernel, tree depth, pool)."""
    widths, inputs = layer_widths(model), layer_gate_inputs(model)
    shape = f"{len(widths)} x {widths[0]}" if len(set(widths)) == 1 else "-".join(map(str, widths))
    if model.get("conv"):
        convs = ", ".join(f"{c['channels']}k{c['kernel']}d{c['tree_depth']}" + (f"s{c['stride']}" if c["stride"] > 1
                                                                                  else "") + (" pool" if c["pool"] == 2
                                                                                              else "")
                          + (" position-major" if c.get("order") == "position" else "")
                          for c in model["conv"])
        shape = f"conv [{convs}] + {shape}"
    n = f"{inputs[0]}" if len(set(inputs)) == 1 else "/".join(map(str, inputs))
    return shape, n


def validate(config):
    """Check values against each other; returns ``config``."""
    _validate_layers(config["model"])
    flat = flatten(config)
    for key, choices in CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, not {flat[key]!r}")
    positive = ["data.thresholds", "model.width", "model.window", "model.depth", "train.epochs", "train.batch_size",
                "train.eval_batch_size", "train.lr", "train.gumbel_tau"]
    for key in positive:
        if flat[key] <= 0:
            raise ConfigError(f"{key} must be positive, not {flat[key]!r}")
    for key in ("data.train_subset", "data.augment_shift", "train.threads", "model.tau", "train.weight_decay", "train.seed"):
        if flat[key] < 0:
            raise ConfigError(f"{key} must not be negative, not {flat[key]!r}")
    inputs = layer_gate_inputs(config["model"])
    for n in inputs:
        if not 1 <= n <= 6:
            raise ConfigError(f"model.gate_inputs must be 1..6 (a native FPGA LUT), not {flat['model.gate_inputs']!r}")
    if flat["model.parametrization"] == "op" and set(inputs) != {2}:
        raise ConfigError("model.parametrization = 'op' has two-input gates only: set model.gate_inputs = 2")
    if flat["model.wiring"] == "windowed" and flat["model.window"] < max(inputs):
        raise ConfigError(f"model.window must be at least model.gate_inputs ({max(inputs)}) "
                          f"with model.wiring = 'windowed', not {flat['model.window']}")
    if flat["model.wiring"] == "learned":
        if flat["model.candidates"] < 2:
            raise ConfigError(f"model.candidates must be at least 2 with model.wiring = 'learned' (1 is fixed "
                              f"windowed wiring), not {flat['model.candidates']!r}")
        if flat["model.window"] < max(flat["model.candidates"], max(inputs)):
            raise ConfigError(f"model.window ({flat['model.window']}) must hold model.candidates "
                              f"({flat['model.candidates']}) features with model.wiring = 'learned'")
    if not 0 < flat["model.wiring_temperature_end"] <= 1:
        raise ConfigError(f"model.wiring_temperature_end must be in (0, 1], not {flat['model.wiring_temperature_end']!r}")
    if flat["model.wiring_temperature_end"] != 1 and flat["model.wiring"] != "learned":
        raise ConfigError("model.wiring_temperature_end anneals learned wiring: set model.wiring = 'learned' or "
                          "leave it at 1")
    if flat["model.parametrization"] == "iwp" and flat["train.weight_decay"] > 0:
        raise ConfigError(
            "train.weight_decay must be 0 with model.parametrization = 'iwp': decay pulls every table "
            "entry toward 0.5, the most undecided value (DESIGN §2.3)"
        )
    if not 0 <= flat["data.val_fraction"] < 1:
        raise ConfigError(f"data.val_fraction must be in [0, 1), not {flat['data.val_fraction']!r}")
    device = flat["train.device"]
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, not {device!r}")
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, not {value!r}")
        if isinstance(value, float) and abs(value) > FLOAT32_MAX:
            raise ConfigError(f"{key} = {value!r} does not fit a float32 (training computes in float32); "
                              f"use a value below {FLOAT32_MAX:.1e}")
    if flat["train.lr"] > 1.0:
        raise ConfigError(f"train.lr = {flat['train.lr']!r} is more than 1: Adam steps every table entry by about "
                          f"lr each step, so training cannot converge; use e.g. 0.01")
    _check_against_dataset(flat)
    return config


def _check_against_dataset(flat):
    """What the dataset's known size allows, checked before any data is loaded."""
    info = DATASET_INFO[flat["data.name"]]
    shift = flat["data.augment_shift"]
    if shift:
        image = info.get("image")
        if image is None:
            raise ConfigError(f"data.augment_shift shifts images; {flat['data.name']} has no image layout: set it to 0")
        if shift >= min(image[1:]):
            raise ConfigError(f"data.augment_shift = {shift} moves a {image[1]} x {image[2]} image out of its frame; "
                              f"use at most {min(image[1:]) // 4}")
    classes, feature_max = info["classes"], info["feature_max"]
    if flat["data.thresholds"] > feature_max:
        raise ConfigError(f"data.thresholds = {flat['data.thresholds']} is more than {flat['data.name']}'s features "
                          f"allow (values 0..{feature_max}: at most {feature_max} distinct integer thresholds); "
                          f"use data.thresholds <= {feature_max}")
    if flat["model.conv"]:
        conv_shapes(flat["model.conv"], flat["data.name"], flat["data.thresholds"])
        if flat["model.parametrization"] == "op" and any(c["tree_inputs"] != 2 for c in flat["model.conv"]):
            raise ConfigError("model.parametrization = 'op' has two-input gates only: set tree_inputs = 2 in every "
                              "model.conv entry")
    widths = flat["model.widths"]
    width = widths[-1] if widths else flat["model.width"]
    key = "model.widths[-1]" if widths else "model.width"
    if width % classes:
        lower = max(classes, width // classes * classes)
        raise ConfigError(f"{key} = {width} (the last layer) must be a multiple of {flat['data.name']}'s "
                          f"{classes} classes, one equal group of gates per class: try {lower}")


def conv_shapes(conv, dataset, thresholds):
    """``[(channels, height, width), ...]``: the input of the first ``model.conv`` layer and the
    output of each; a layer that does not fit its input is refused naming its index."""
    from .conv import conv_output_shape

    image = DATASET_INFO[dataset].get("image")
    if image is None:
        raise ConfigError(f"model.conv needs an image dataset; {dataset} has no image shape (use data.name = digits, "
                          f"mnist, fashion-mnist, cifar10 or cifar100, or remove model.conv)")
    colours, height, width = image
    shapes = [(colours * thresholds, height, width)]
    for i, layer in enumerate(conv):
        try:
            shapes.append(conv_output_shape(shapes[-1], layer["channels"], layer["kernel"], layer["stride"],
                                            layer["padding"], layer["pool"]))
        except ValueError as e:
            raise ConfigError(f"model.conv[{i}]: {e} ({'the image' if i == 0 else f'the output of model.conv[{i - 1}]'}"
                              f"); use a smaller kernel, more padding, or fewer layers / pooling") from None
    return shapes


def _validate_layers(model):
    widths = model.get("widths") or []
    if widths:
        if isinstance(widths, list):
            _int_list("model.widths", widths)
        for i, w in enumerate(widths):
            if w <= 0:
                raise ConfigError(f"model.widths[{i}] must be a positive number of gates, not {w!r}")
    n = model["gate_inputs"]
    if isinstance(n, list):
        _int_list("model.gate_inputs", n)
        layers = len(layer_widths(model))
        if len(n) != layers:
            source = "model.widths" if widths else "model.depth"
            raise ConfigError(f"model.gate_inputs lists {len(n)} layers but {source} gives {layers}: "
                              f"list one value per layer, or give a single number")


def _toml_value(value):
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def dump_toml(config):
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        # an empty list (model.widths unset) is left out: TOML has no "unset", and [] is refused
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items() if value != [])
        lines.append("")
    return "\n".join(lines)
