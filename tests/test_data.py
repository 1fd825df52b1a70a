"""Dataset loaders on small files written here, and the thermometer encoding."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from dlgn.train.data import DatasetError, load_dataset, read_idx, write_idx
from dlgn.train.encoding import Thermometer


def write_idx_set(directory, n_train=30, n_test=12, gz=False, rows=4, cols=5):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    directory.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        data[prefix] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_loader(tmp_path, name, gz):
    written = write_idx_set(tmp_path, gz=gz)
    ds = load_dataset(name, tmp_path, val_fraction=0.2, seed=1)
    assert ds.classes == 10 and ds.features == 20
    assert len(ds.x_train) == 24 and len(ds.x_val) == 6
    assert np.array_equal(ds.x_test, written["t10k"][0].reshape(12, 20))
    assert np.array_equal(ds.y_test, written["t10k"][1])
    # the split is a seeded permutation of the training file
    all_train = {tuple(r) for r in written["train"][0].reshape(30, 20).tolist()}
    assert {tuple(r) for r in np.concatenate([ds.x_train, ds.x_val]).tolist()} == all_train
    again = load_dataset(name, tmp_path, val_fraction=0.2, seed=1)
    assert np.array_equal(again.x_val, ds.x_val)
    other = load_dataset(name, tmp_path, val_fraction=0.2, seed=2)
    assert not np.array_equal(other.x_val, ds.x_val)


def test_idx_round_trip(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", a)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), a)


def test_idx_missing_file_names_path(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.*IDX files"):
        load_dataset("mnist", tmp_path)


def test_idx_bad_magic_and_truncation(tmp_path):
    write_idx_set(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(DatasetError, match="not an unsigned-byte IDX file"):
        load_dataset("mnist", tmp_path)
    path.write_bytes(raw[:-7])
    with pytest.raises(DatasetError, match="promises 600 bytes"):
        load_dataset("mnist", tmp_path)


def test_idx_mismatched_counts(tmp_path):
    write_idx_set(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29, dtype=np.uint8))
    with pytest.raises(DatasetError, match="do not match"):
        load_dataset("mnist", tmp_path)


def test_idx_labels_out_of_range(tmp_path):
    write_idx_set(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(12, 10, dtype=np.uint8))
    with pytest.raises(DatasetError, match="labels outside 0..9"):
        load_dataset("mnist", tmp_path)


def write_cifar(directory, hundred=False, n=6):
    rng = np.random.default_rng(1)
    directory.mkdir(parents=True)
    key = b"fine_labels" if hundred else b"labels"
    classes = 100 if hundred else 10
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for name in names:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 key: rng.integers(0, classes, n).tolist()}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f)
        written[name] = batch
    return written


def test_cifar10_loader(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path, val_fraction=0.0)  # parent folder works too
    assert ds.classes == 10 and ds.features == 3072 and len(ds.x_train) == 30
    assert np.array_equal(ds.x_test, written["test_batch"][b"data"])
    assert ds.y_test.tolist() == written["test_batch"][b"labels"]


def test_cifar100_loader(tmp_path):
    written = write_cifar(tmp_path / "c100", hundred=True, n=20)
    ds = load_dataset("cifar100", tmp_path / "c100", val_fraction=0.25)
    assert ds.classes == 100 and len(ds.x_train) == 15 and len(ds.x_val) == 5
    assert ds.y_test.tolist() == written["test"][b"fine_labels"]


def test_cifar_errors(tmp_path):
    with pytest.raises(DatasetError, match="CIFAR python version"):
        load_dataset("cifar10", tmp_path / "nowhere")
    write_cifar(tmp_path / "c10")
    (tmp_path / "c10" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_3: not a CIFAR python pickle batch"):
        load_dataset("cifar10", tmp_path / "c10")
    with open(tmp_path / "c10" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match=r"expected data \[N, 3072\]"):
        load_dataset("cifar10", tmp_path / "c10")
    (tmp_path / "c10" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="missing .*data_batch_3"):
        load_dataset("cifar10", tmp_path / "c10")


def test_sklearn_sets():
    digits = load_dataset("digits", val_fraction=0.1)
    assert digits.classes == 10 and digits.features == 64 and digits.feature_max == 16
    assert len(digits.x_train) + len(digits.x_val) + len(digits.x_test) == 1797
    assert digits.x_train.max() <= 16
    cancer = load_dataset("breast-cancer", val_fraction=0.1)
    assert cancer.classes == 2 and cancer.features == 30 and cancer.x_train.dtype == np.uint8
    assert len(cancer.quantization["scale"]) == 30
    assert cancer.x_train.max() == 255  # fitted on the training split, which contains the max


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'; choose one of"):
        load_dataset("svhn")


# ----------------------------------------------------------------------------- encoding

def test_uniform_thresholds_and_bit_layout():
    enc = Thermometer.fit(np.zeros((1, 2), np.uint8), 3)
    assert enc.thresholds.tolist() == [[63, 127, 191]] * 2
    bits = enc.encode(np.array([[0, 200], [64, 127]], np.uint8))
    # bit f*T + t = x_f > thresholds[f, t]
    assert bits.tolist() == [[0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0]]
    assert bits.dtype == torch.uint8


def test_quantile_thresholds_strictly_increasing():
    x = np.zeros((100, 3), np.uint8)
    x[:10] = 200  # 90% zeros: raw quantiles collapse
    enc = Thermometer.fit(x, 4, "quantile")
    row = enc.thresholds[0].tolist()
    assert all(b > a for a, b in zip(row, row[1:])) and row[0] == 0
    enc = Thermometer.fit(np.tile(np.arange(256, dtype=np.uint8)[:, None], (1, 2)), 3, "feature-quantile")
    assert enc.thresholds.tolist() == [[63, 127, 191]] * 2


def test_digits_uniform_thresholds_use_feature_max():
    enc = Thermometer.fit(np.zeros((1, 1), np.uint8), 3, feature_max=16)
    assert enc.thresholds.tolist() == [[3, 7, 11]]


def test_encoding_errors():
    with pytest.raises(ValueError, match="data.thresholds must be a positive integer"):
        Thermometer.fit(np.zeros((1, 1), np.uint8), 0)
    with pytest.raises(ValueError, match="more than the 16 distinct steps"):
        Thermometer.fit(np.zeros((1, 1), np.uint8), 17, feature_max=16)
    with pytest.raises(ValueError, match="strictly increasing"):
        Thermometer([[5, 5]])
    with pytest.raises(ValueError, match=r"expected features of shape \[N, 2\]"):
        Thermometer([[1], [2]]).encode(np.zeros((3, 5), np.uint8))


def test_gzip_detection_by_content(tmp_path):
    write_idx(tmp_path / "a", np.ones((2, 2), np.uint8))
    with open(tmp_path / "a", "rb") as f, gzip.open(tmp_path / "b", "wb") as g:
        g.write(f.read())
    assert np.array_equal(read_idx(tmp_path / "b"), np.ones((2, 2)))
