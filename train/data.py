"""Datasets as integer features, and their train/validation/test splits.

Every loader returns raw features as ``uint8`` (8-bit pixels for images; tabular features are
quantized to 0..255 with a per-feature affine map fitted on the training split and stored with
the data so that new samples can be encoded the same way). A missing or malformed file ends in
:class:`DatasetError` naming the expected path and format.
"""

import gzip
import pickle
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DATASETS", "DATASET_INFO", "DatasetError", "Dataset", "load_dataset", "read_idx", "write_idx"]

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "digits", "breast-cancer")
#: What is known of each dataset before loading it (the config is checked against it first):
#: classes, the largest raw feature value, and for images ``(colours, height, width)``: feature
#: ``f = (colour * height + y) * width + x`` (row-major pixels; CIFAR's colour planes one after
#: the other, as its batches store them).
DATASET_INFO = {
    "fashion-mnist": {"classes": 10, "feature_max": 255, "image": (1, 28, 28)},
    "mnist": {"classes": 10, "feature_max": 255, "image": (1, 28, 28)},
    "cifar10": {"classes": 10, "feature_max": 255, "image": (3, 32, 32)},
    "cifar100": {"classes": 100, "feature_max": 255, "image": (3, 32, 32)},
    "digits": {"classes": 10, "feature_max": 16, "image": (1, 8, 8)},
    "breast-cancer": {"classes": 2, "feature_max": 255, "image": None},
}

DEFAULT_DIRS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "data/mnist",
    "cifar10": "data/cifar-10-batches-py",
    "cifar100": "data/cifar-100-python",
}


class DatasetError(Exception):
    """A dataset that is missing or not in the expected format."""


@dataclass
class Dataset:
    name: str
    classes: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_max: int = 255
    #: For tabular data: raw value -> uint8 is ``clip(round((v - offset) * scale), 0, 255)``.
    quantization: dict = field(default_factory=dict)

    @property
    def features(self):
        return self.x_train.shape[1]


# --------------------------------------------------------------------------- IDX (MNIST family)

_IDX_TYPES = {0x08: np.uint8}


def _open_maybe_gz(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_idx(path):
    """Read an IDX file (optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    try:
        with _open_maybe_gz(path) as f:
            header = f.read(4)
            if len(header) != 4 or header[0] != 0 or header[1] != 0 or header[2] not in _IDX_TYPES:
                raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic number {header.hex()})")
            ndim = header[3]
            dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            count = int(np.prod(dims))
            data = f.read()
    except (OSError, EOFError, struct.error, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read IDX file ({e}); the file is damaged or not IDX: "
                           f"download or copy it again") from None
    if len(data) != count:
        raise DatasetError(f"{path}: IDX header promises {count} bytes of data, file holds {len(data)}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims).copy()


def write_idx(path, array):
    """Write a ``uint8`` array as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def _find(directory, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(
        f"missing {directory / stem}[.gz]: expected the four IDX files train-images-idx3-ubyte, "
        f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
        f"(gzip allowed) in {directory}; set data.data_dir or --set data.data_dir=PATH"
    )


def _load_idx_set(directory):
    directory = Path(directory)
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"{directory}: {prefix} images {images.shape} and labels {labels.shape} do not match "
                f"(expected [N, rows, cols] and [N])"
            )
        parts[split] = (images.reshape(len(images), -1), labels.astype(np.int64))
        if split == "test" and images.shape[1:] != shape:
            raise DatasetError(f"{directory}: test images are {images.shape[1]} x {images.shape[2]}, training images "
                               f"{shape[0]} x {shape[1]}; both splits must come from the same dataset")
        shape = images.shape[1:]
    return parts, 10


# --------------------------------------------------------------------------- CIFAR pickles

def _unpickle(path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise DatasetError(f"missing {path}") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise DatasetError(f"{path}: not a CIFAR python pickle batch ({e.__class__.__name__}: {e})") from None


def _cifar_batch(path, label_key):
    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DatasetError(f"{path}: CIFAR batch must be a dict with b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DatasetError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} and {labels.shape}")
    return data, labels


def _load_cifar(directory, hundred):
    directory = Path(directory)
    sub = "cifar-100-python" if hundred else "cifar-10-batches-py"
    if not directory.is_dir() or (directory / sub).is_dir():
        directory = directory / sub if (directory / sub).is_dir() else directory
    if not directory.is_dir():
        raise DatasetError(
            f"missing {directory}: expected the CIFAR python version ({sub}/ with "
            + ("train and test" if hundred else "data_batch_1..5 and test_batch")
            + ") there; set data.data_dir"
        )
    if hundred:
        label_key = b"fine_labels"
        train = [_cifar_batch(directory / "train", label_key)]
        test = _cifar_batch(directory / "test", label_key)
    else:
        label_key = b"labels"
        train = [_cifar_batch(directory / f"data_batch_{i}", label_key) for i in range(1, 6)]
        test = _cifar_batch(directory / "test_batch", label_key)
    x_train = np.concatenate([d for d, _ in train])
    y_train = np.concatenate([l for _, l in train])
    return {"train": (x_train, y_train), "test": test}, 100 if hundred else 10


# --------------------------------------------------------------------------- scikit-learn sets

def _split(x, y, fraction, seed):
    """Stratification-free seeded split: returns (x_a, y_a, x_b, y_b) with ``fraction`` in b."""
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(x))
    cut = len(x) - int(round(len(x) * fraction))
    a, b = order[:cut], order[cut:]
    return x[a], y[a], x[b], y[b]


def _load_sklearn(name, seed):
    from sklearn import datasets as skd

    bunch = skd.load_digits() if name == "digits" else skd.load_breast_cancer()
    x, y = bunch.data, bunch.target.astype(np.int64)
    x_train, y_train, x_test, y_test = _split(x, y, 0.2, seed + 7919)
    return {"train": (x_train, y_train), "test": (x_test, y_test)}, int(y.max()) + 1


def _quantize(parts):
    """Per-feature affine map to 0..255 fitted on the training split."""
    x_train = parts["train"][0].astype(np.float64)
    lo = x_train.min(axis=0)
    span = x_train.max(axis=0) - lo
    scale = np.where(span > 0, 255.0 / np.where(span > 0, span, 1.0), 0.0)

    def q(x):
        return np.clip(np.round((x - lo) * scale), 0, 255).astype(np.uint8)

    out = {k: (q(x), y) for k, (x, y) in parts.items()}
    return out, {"offset": lo.tolist(), "scale": scale.tolist()}


# --------------------------------------------------------------------------- entry point

def load_dataset(name, data_dir=None, val_fraction=0.1, seed=0):
    """Load ``name`` and split a seeded validation set off its training split."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"data.val_fraction must be in [0, 1), not {val_fraction!r}")
    quantization = {}
    feature_max = DATASET_INFO[name]["feature_max"]
    if name in ("fashion-mnist", "mnist"):
        parts, classes = _load_idx_set(data_dir or DEFAULT_DIRS[name])
    elif name in ("cifar10", "cifar100"):
        parts, classes = _load_cifar(data_dir or DEFAULT_DIRS[name], name == "cifar100")
    elif name == "digits":
        parts, classes = _load_sklearn(name, seed)
        parts = {k: (x.astype(np.uint8), y) for k, (x, y) in parts.items()}
    else:
        parts, classes = _load_sklearn(name, seed)
        parts, quantization = _quantize(parts)
    x_train, y_train = parts["train"]
    x_test, y_test = parts["test"]
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise DatasetError(f"{name}: {split} labels outside 0..{classes - 1}")
    x_train, y_train, x_val, y_val = _split(x_train, y_train, val_fraction, seed)
    return Dataset(name, classes, x_train, y_train, x_val, y_val, x_test, y_test, feature_max, quantization)
