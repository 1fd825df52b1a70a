"""Vector files: input samples for ``dlgn sim --vectors FILE`` (e.g. the counterexample of ``dlgn prove``).

A vector file is UTF-8 JSON holding one object::

    {"format": "dlgn-vectors", "version": 1, "port": "in_bits", "width": 2352,
     "vectors": ["0110...", ...], "build_id": "...", ...}

- ``port``: the core's input port the vectors drive, ``in_bits`` (encoded input bits) or
  ``in_features`` (raw features, with the on-chip encoder); it must be the build's.
- ``width``: the port's width in bits.
- ``vectors``: one string of ``width`` characters ``0``/``1`` per sample, **character ``i`` is
  port bit ``i``** (input bit ``i``, netlist id ``i + 2``, for ``in_bits``; bit ``k`` of feature
  ``f`` is port bit ``f * feature_width + k`` for ``in_features``).
- Other keys (``build_id``, ``expected_scores``, ``core_scores``, ...) are informational.

``dlgn sim BUILD --vectors FILE`` simulates these samples in place of the test set (followed by
``--random`` random inputs) and checks each against the golden model of ``netlist.json``.
"""

import json
from pathlib import Path

import numpy as np

from dlgn.compile.golden import GoldenModel, encode_features, predict
from dlgn.safety import atomic_write_text

from .errors import SimError
from .vectors import Stimulus

__all__ = ["VECTORS_FORMAT", "VECTORS_VERSION", "write_vector_file", "load_vectors", "prepend_vectors",
           "bits_to_string"]

VECTORS_FORMAT = "dlgn-vectors"
VECTORS_VERSION = 1


def bits_to_string(bits):
    """``"0110..."`` with character ``i`` = ``bits[i]``."""
    return "".join("1" if int(b) else "0" for b in bits)


def write_vector_file(path, port, vectors, **info):
    """Write ``vectors`` (``[N, width]`` of 0/1, port bit ``i`` in column ``i``) for ``port``."""
    vectors = np.asarray(vectors, dtype=np.uint8).reshape(len(vectors), -1)
    doc = {"format": VECTORS_FORMAT, "version": VECTORS_VERSION, "port": port, "width": int(vectors.shape[1]),
           "vectors": [bits_to_string(v) for v in vectors], **info}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def load_vectors(path, build):
    """The port bits ``[N, width]`` (``uint8``) of vector file ``path`` for ``build``; a file that
    is not a vector file, or not for this build's input port, raises :class:`SimError`."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise SimError(f"cannot read vector file {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise SimError(f"{path} is not a dlgn vector file (not JSON: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != VECTORS_FORMAT:
        raise SimError(f"{path} is not a dlgn vector file (format must be {VECTORS_FORMAT!r})")
    if doc.get("version") != VECTORS_VERSION:
        raise SimError(f"{path} has vector-file version {doc.get('version')!r}; this dlgn reads {VECTORS_VERSION}")
    width = build.report["ports"][build.input_port]
    if doc.get("port") != build.input_port:
        raise SimError(f"{path} holds vectors for port {doc.get('port')!r}, but this build's input port is "
                       f"{build.input_port}")
    vectors = doc.get("vectors")
    if not isinstance(vectors, list) or not vectors:
        raise SimError(f"{path}: vectors must be a non-empty list of bit strings")
    rows = []
    for i, v in enumerate(vectors):
        if not isinstance(v, str) or len(v) != width or set(v) - {"0", "1"}:
            raise SimError(f"{path}: vector {i} must be a string of {width} characters 0/1 ({build.input_port} "
                           f"is {width} bits wide), not {str(v)[:40]!r}")
        rows.append(np.frombuffer(v.encode(), dtype=np.uint8) - ord("0"))
    return np.stack(rows).astype(np.uint8)


def prepend_vectors(build, stimulus, port_bits):
    """``stimulus`` (random inputs only) with the vectors ``port_bits`` in front, named "vector i"
    in messages, and the golden model's expectations for them."""
    netlist = build.netlist
    if build.encoder:
        w = netlist.encoding.feature_width
        weights = (1 << np.arange(w, dtype=np.int64))
        features = (port_bits.reshape(len(port_bits), -1, w).astype(np.int64) * weights).sum(axis=2)
        bits = encode_features(netlist.encoding, features)
        all_features = np.concatenate([features, stimulus.features.astype(np.int64)])
    else:
        bits, all_features = port_bits, None
    scores = GoldenModel(netlist).scores(bits)
    return Stimulus(bits=np.concatenate([bits, stimulus.bits]), features=all_features,
                    labels=np.zeros(0, dtype=np.int64), test_samples=len(bits),
                    random_samples=stimulus.random_samples,
                    expected_scores=np.concatenate([scores, stimulus.expected_scores]),
                    expected_classes=np.concatenate([predict(scores), stimulus.expected_classes]),
                    trained_scores=None, first_label="vector")
