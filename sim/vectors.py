"""What a simulation is checked against: its stimulus and expected results.

The build under test is a :class:`dlgn.compile.builddir.Build`. A :class:`Stimulus` is the run's
test set (raw features, labels, and the scores the trained model recorded) followed by random
inputs that appear in no dataset, with the golden model's scores and classes for every sample.
:func:`write_vectors` packs a slice of it into one ``.npz`` file, which is what the cocotb testbench
in the simulator process reads (its path travels in ``DLGN_SIM_VECTORS``).
"""

import json
from dataclasses import dataclass

import numpy as np

from dlgn.compile.builddir import load_test_set
from dlgn.compile.golden import GoldenModel, encode_features, predict

from .errors import SimError

__all__ = ["Stimulus", "make_stimulus", "port_bytes", "write_vectors", "read_vectors", "first_mismatch",
           "describe_index", "VECTORS_FORMAT"]

VECTORS_FORMAT = "dlgn-sim-vectors-2"


@dataclass
class Stimulus:
    """Samples to simulate: ``test_samples`` from the test set, then ``random_samples`` random ones.

    ``features`` (raw, ``[N, F]``) is set when the core has the on-chip encoder, ``bits``
    (``[N, in_bits]``) always; ``labels`` covers the test part only, and so does ``trained_scores``
    (the trained model's recorded discrete scores; ``None`` when the run recorded none)."""

    bits: np.ndarray
    features: "np.ndarray | None"
    labels: np.ndarray
    test_samples: int
    random_samples: int
    expected_scores: np.ndarray
    expected_classes: np.ndarray
    trained_scores: "np.ndarray | None" = None
    #: how the first ``test_samples`` samples are named in messages ("vector" for a ``--vectors`` file)
    first_label: str = "test sample"

    def __len__(self):
        return len(self.bits)


def make_stimulus(build, run_dir, samples=None, random_samples=1000, seed=0):
    """The test set of ``run_dir`` (the first ``samples`` of it; all when ``None``; none when
    ``run_dir`` is ``None``) followed by ``random_samples`` random inputs, with the golden model's
    expectations. Returns ``(stimulus, trained_discrete_accuracy, full_test_set_size)``; the
    accuracy and size are ``None`` without a run."""
    netlist = build.netlist
    rng = np.random.Generator(np.random.PCG64(seed))
    trained, full, trained_scores = None, None, None
    if run_dir is None or samples == 0:
        width = netlist.encoding.features if netlist.encoding is not None else 0
        x, y = np.zeros((0, width), dtype=np.uint8), np.zeros(0, dtype=np.int64)
        if run_dir is not None:
            test = load_test_set(run_dir, 0)
            trained, full = test.trained_accuracy, test.size
    else:
        if netlist.encoding is None:
            raise SimError(f"{build.path}: the netlist has no input encoding, so the test set cannot be encoded; "
                           f"use --samples 0 for random inputs only")
        test = load_test_set(run_dir, samples)
        x, y, trained, full, trained_scores = test.x, test.y, test.trained_accuracy, test.size, test.trained_scores
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
                        expected_scores=scores, expected_classes=predict(scores), trained_scores=trained_scores)
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


#: where the simulated core's latency comes from, unless the caller says otherwise
BUILD_LATENCY = "compile_report latency_cycles"


def write_vectors(path, build, stimulus, start, stop, sample_cycles, latency=None, latency_source=BUILD_LATENCY):
    """Write what the testbench checks samples ``start:stop`` against: expected scores and
    classes, the cycle (from the first stimulus word) each sample is presented in
    (``sample_cycles``, from :func:`dlgn.sim.harness.write_harness_vectors`) and what the
    testbench needs to know about the core (``latency``: the simulated core's, by default the
    build's; ``latency_source`` says where it comes from in the testbench's messages)."""
    meta = {
        "format": VECTORS_FORMAT, "input_port": build.input_port,
        "latency": build.latency if latency is None else int(latency), "latency_source": latency_source,
        "classes": build.classes, "score_width": build.score_width, "first_index": start,
        "test_samples": stimulus.test_samples, "first_label": stimulus.first_label,
    }
    np.savez(path, meta=np.array(json.dumps(meta)),
             expected_scores=stimulus.expected_scores[start:stop].astype(np.int64),
             expected_classes=stimulus.expected_classes[start:stop].astype(np.int64),
             sample_cycles=np.asarray(sample_cycles, dtype=np.int64))


def read_vectors(path):
    """``(meta, arrays)`` of a file written by :func:`write_vectors`."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != VECTORS_FORMAT:
        raise ValueError(f"{path} is not a dlgn simulation vector file")
    return meta, arrays


def describe_index(index, test_samples, first_label="test sample"):
    """How sample ``index`` is named in messages: its place in the test set (or, with
    ``first_label``, among the vectors of a ``--vectors`` file) or among the random inputs."""
    if index < test_samples:
        return f"{first_label} {index}"
    return f"random sample {index - test_samples}"


def first_mismatch(expected_scores, expected_classes, scores, classes, stage, test_samples, first_index=0,
                   first_label=None):
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
    name = describe_index(first_index + i, test_samples, first_label or "test sample")
    if bad_score[i]:
        c = int(np.flatnonzero(expected_scores[i] != scores[i])[0])
        return (f"{stage}: {name}, class {c}: score {int(scores[i, c])}, expected {int(expected_scores[i, c])} "
                f"({len(bad)} mismatching samples)")
    return (f"{stage}: {name}: class {int(classes[i])}, expected class {int(expected_classes[i])} with equal scores "
            f"({len(bad)} mismatching samples)")
