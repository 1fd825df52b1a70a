"""What a simulation is checked against: the build under test, its stimulus and expected results.

A :class:`Build` is a ``dlgn compile`` build directory (``compile_report.json``, ``netlist.json``
and the Verilog). A :class:`Stimulus` is the run's test set (raw features, labels) followed by
random inputs that appear in no dataset, with the golden model's scores and classes for every
sample. :func:`write_vectors` packs a slice of it into one ``.npz`` file, which is what the
cocotb testbench in the simulator process reads (its path travels in ``DLGN_SIM_VECTORS``).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlgn.compile import netlist as ir
from dlgn.compile.golden import GoldenModel, encode_features, predict

from .errors import SimError

__all__ = ["Build", "Stimulus", "load_build", "find_run_dir", "make_stimulus", "port_bytes", "write_vectors",
           "read_vectors", "first_mismatch", "describe_index", "VECTORS_FORMAT"]

VECTORS_FORMAT = "dlgn-sim-vectors-1"


@dataclass
class Build:
    """A ``dlgn compile`` build directory, read and checked."""

    path: Path
    report: dict
    netlist: "ir.Netlist"

    @property
    def top(self):
        return self.report.get("top", "dlgn_core")

    @property
    def verilog(self):
        return self.path / self.report["files"]["verilog"]

    @property
    def rtlil(self):
        return self.path / self.report["files"]["rtlil"]

    @property
    def encoder(self):
        """True when the core takes raw features (``in_features``), False for input bits."""
        return bool(self.report["encoder"])

    @property
    def input_port(self):
        return "in_features" if self.encoder else "in_bits"

    @property
    def latency(self):
        return int(self.report["latency_cycles"])

    @property
    def classes(self):
        return int(self.report["classes"])

    @property
    def score_width(self):
        return int(self.report["score_width"])


def load_build(build_dir):
    """Read ``build_dir``; raise :class:`SimError` with what to do when it is not a usable build."""
    from dlgn.compile.build import REPORT_FILE

    path = Path(build_dir)
    report_path = path / REPORT_FILE
    if not path.is_dir():
        raise SimError(f"{path} is not a directory; pass the build directory that 'dlgn compile RUN_DIR -o "
                       f"BUILD_DIR' wrote")
    if not report_path.is_file():
        raise SimError(f"{path} has no {REPORT_FILE}: not a dlgn build directory (run 'dlgn compile' first)")
    try:
        report = json.loads(report_path.read_text())
        files, ports = report["files"], report["ports"]
        missing = [k for k in ("latency_cycles", "classes", "score_width", "encoder") if k not in report]
        if missing:
            raise KeyError(", ".join(missing))
    except (ValueError, KeyError, TypeError) as e:
        raise SimError(f"{report_path} is damaged (missing or unreadable: {e}); recompile the run") from None
    if not files.get("verilog"):
        raise SimError(f"{path} was compiled with --no-verilog; recompile without it to simulate the Verilog")
    netlist = ir.load(path / files.get("netlist", "netlist.json"))
    build = Build(path, report, netlist)
    for name in ("verilog", "rtlil"):
        if not getattr(build, name).is_file():
            raise SimError(f"{path} lacks {getattr(build, name).name}; recompile the run")
    if netlist.classes != build.classes or netlist.score_width != build.score_width:
        raise SimError(f"{path}: netlist.json and compile_report.json disagree (classes or score width); "
                       f"recompile the run")
    width = ports.get(build.input_port)
    expected = netlist.encoding.features * netlist.encoding.feature_width if build.encoder else netlist.in_bits
    if width != expected:
        raise SimError(f"{path}: port {build.input_port} is {width} bits wide, the netlist needs {expected}; "
                       f"recompile the run")
    return build


def find_run_dir(build, run_dir=None):
    """The trained run the build came from: ``run_dir`` if given, else the one recorded by the
    compiler (absolute, or relative to the current directory or to the build directory).
    ``None`` when the build was compiled from a bare netlist file and no run is given."""
    if run_dir is not None:
        candidates = [Path(run_dir)]
    else:
        recorded = build.netlist.source.get("run_dir") or build.report.get("source")
        if not recorded or Path(recorded).is_file():
            return None
        candidates = [Path(recorded), build.path / recorded]
    for candidate in candidates:
        if (candidate / "summary.json").is_file():
            return candidate.resolve()
    raise SimError(f"cannot find the trained run of {build.path} (looked for summary.json in "
                   f"{', '.join(str(c) for c in dict.fromkeys(candidates))}); pass --run RUN_DIR, or --samples 0 "
                   f"to simulate random inputs only")


@dataclass
class Stimulus:
    """Samples to simulate: ``test_samples`` from the test set, then ``random_samples`` random ones.

    ``features`` (raw, ``[N, F]``) is set when the core has the on-chip encoder, ``bits``
    (``[N, in_bits]``) always; ``labels`` covers the test part only."""

    bits: np.ndarray
    features: "np.ndarray | None"
    labels: np.ndarray
    test_samples: int
    random_samples: int
    expected_scores: np.ndarray
    expected_classes: np.ndarray

    def __len__(self):
        return len(self.bits)


def _test_set(run_dir, samples):
    """Raw test features, labels and the trained discrete accuracy of ``run_dir``."""
    from dlgn.train.config import load_config
    from dlgn.train.data import load_dataset

    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
        trained = float(summary["test_acc_discrete"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SimError(f"{summary_path} is unreadable or lacks test_acc_discrete ({e}); retrain the run") from None
    config = load_config(run_dir / "config.toml")
    data_cfg = config["data"]
    data = load_dataset(data_cfg["name"], data_cfg.get("data_dir") or None, data_cfg["val_fraction"],
                        config["train"]["seed"])
    x, y = data.x_test, data.y_test
    if samples is not None:
        if samples > len(x):
            raise SimError(f"--samples {samples} is more than the {len(x)} samples of {data_cfg['name']}'s test set")
        x, y = x[:samples], y[:samples]
    return np.ascontiguousarray(x), np.asarray(y, dtype=np.int64), trained, len(data.x_test)


def make_stimulus(build, run_dir, samples=None, random_samples=1000, seed=0):
    """The test set of ``run_dir`` (the first ``samples`` of it; all when ``None``; none when
    ``run_dir`` is ``None``) followed by ``random_samples`` random inputs, with the golden model's
    expectations. Returns ``(stimulus, trained_discrete_accuracy, full_test_set_size)``; the
    accuracy and size are ``None`` without a run."""
    netlist = build.netlist
    rng = np.random.Generator(np.random.PCG64(seed))
    trained, full = None, None
    if run_dir is None or samples == 0:
        width = netlist.encoding.features if netlist.encoding is not None else 0
        x, y = np.zeros((0, width), dtype=np.uint8), np.zeros(0, dtype=np.int64)
        if run_dir is not None:
            _x, _y, trained, full = _test_set(run_dir, 0)
    else:
        if netlist.encoding is None:
            raise SimError(f"{build.path}: the netlist has no input encoding, so the test set cannot be encoded; "
                           f"use --samples 0 for random inputs only")
        x, y, trained, full = _test_set(run_dir, samples)
        if x.shape[1] != netlist.encoding.features:
            raise SimError(f"the run's test set has {x.shape[1]} features, the netlist {netlist.encoding.features}; "
                           f"is --run the run this build was compiled from?")
    # Random inputs: raw features over the whole feature range when the encoder is on chip,
    # otherwise uniformly random input bits (patterns no thermometer code produces included).
    if build.encoder:
        enc = netlist.encoding
        random_x = rng.integers(0, 1 << enc.feature_width, size=(random_samples, enc.features), dtype=np.int64)
        features = np.concatenate([x.astype(np.int64), random_x])
        bits = encode_features(enc, features)
    else:
        features = None
        test_bits = encode_features(netlist.encoding, x) if len(x) else np.zeros((0, netlist.in_bits), np.uint8)
        random_bits = (rng.random((random_samples, netlist.in_bits)) < 0.5).astype(np.uint8)
        bits = np.concatenate([test_bits, random_bits])
    scores = GoldenModel(netlist).scores(bits)
    stimulus = Stimulus(bits=bits, features=features, labels=y, test_samples=len(x), random_samples=random_samples,
                        expected_scores=scores, expected_classes=predict(scores))
    return stimulus, trained, full


def port_bytes(build, stimulus):
    """The value of the input port for every sample, as little-endian bytes ``[N, ceil(width/8)]``."""
    if build.encoder:
        width = build.netlist.encoding.feature_width
        x = stimulus.features.astype(np.uint64)
        shifts = np.arange(width, dtype=np.uint64)
        bits = ((x[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8).reshape(len(x), -1)
    else:
        bits = stimulus.bits
    return np.packbits(bits, axis=1, bitorder="little")


def write_vectors(path, build, stimulus, values, start, stop, gaps=None):
    """Write samples ``start:stop`` for the testbench: port values, expected scores and classes,
    idle cycles before each sample (``gaps``, default none) and what the testbench needs to know
    about the core."""
    count = stop - start
    gaps = np.zeros(count, dtype=np.int32) if gaps is None else np.asarray(gaps, dtype=np.int32)[start:stop]
    meta = {
        "format": VECTORS_FORMAT, "input_port": build.input_port, "latency": build.latency,
        "classes": build.classes, "score_width": build.score_width, "first_index": start,
        "test_samples": stimulus.test_samples,
    }
    np.savez(path, meta=np.array(json.dumps(meta)), values=values[start:stop],
             expected_scores=stimulus.expected_scores[start:stop].astype(np.int64),
             expected_classes=stimulus.expected_classes[start:stop].astype(np.int64), gaps=gaps)


def read_vectors(path):
    """``(meta, arrays)`` of a file written by :func:`write_vectors`."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != VECTORS_FORMAT:
        raise ValueError(f"{path} is not a dlgn simulation vector file")
    return meta, arrays


def describe_index(index, test_samples):
    """How sample ``index`` is named in messages: its place in the test set or among the random inputs."""
    if index < test_samples:
        return f"test sample {index}"
    return f"random sample {index - test_samples}"


def first_mismatch(expected_scores, expected_classes, scores, classes, stage, test_samples, first_index=0):
    """``None`` when scores and classes are equal; else a message naming the first differing
    sample, class and ``stage``. A score mismatch names the class whose score differs; a class
    mismatch with equal scores names the predicted classes."""
    expected_scores, scores = np.asarray(expected_scores), np.asarray(scores)
    expected_classes, classes = np.asarray(expected_classes), np.asarray(classes)
    if expected_scores.shape != scores.shape or expected_classes.shape != classes.shape:
        return (f"{stage}: got {len(scores)} results for {len(expected_scores)} samples "
                f"(scores shaped {scores.shape}, expected {expected_scores.shape})")
    bad_score = (expected_scores != scores).any(axis=1)
    bad_class = expected_classes != classes
    bad = np.flatnonzero(bad_score | bad_class)
    if not len(bad):
        return None
    i = int(bad[0])
    name = describe_index(first_index + i, test_samples)
    if bad_score[i]:
        c = int(np.flatnonzero(expected_scores[i] != scores[i])[0])
        return (f"{stage}: {name}, class {c}: score {int(scores[i, c])}, expected {int(expected_scores[i, c])} "
                f"({len(bad)} mismatching samples)")
    return (f"{stage}: {name}: class {int(classes[i])}, expected class {int(expected_classes[i])} with equal scores "
            f"({len(bad)} mismatching samples)")
