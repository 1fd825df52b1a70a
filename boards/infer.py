"""``dlgn infer``: stream test samples to the ``uart`` top over a serial port and check its answers.

:func:`classify_stream` speaks the protocol over any ``link`` with ``write(bytes)`` and
``read(n) -> bytes`` (a pyserial port on a board, or the simulated serial line in the tests), so
the board and the simulation run the same host code.
"""

import time

import numpy as np

from .errors import BoardError
from .protocol import BAUD, ProtocolError, decode_response, encode_request, response_length

__all__ = ["classify_stream", "infer_on_port"]


def classify_stream(link, features, classes, feature_width=8):
    """Send each row of ``features`` (raw, ``[N, F]``) and read its answer; returns
    ``(classes [N], scores [N, classes])``. Raises :class:`ProtocolError` on a bad or missing answer."""
    length = response_length(classes)
    predicted = np.zeros(len(features), dtype=np.int64)
    scores = np.zeros((len(features), classes), dtype=np.int64)
    for i, row in enumerate(features):
        link.write(encode_request(row, feature_width))
        frame = link.read(length)
        if len(frame) != length:
            raise ProtocolError(f"sample {i}: the board answered {len(frame)} of {length} bytes (timeout)")
        predicted[i], scores[i] = decode_response(frame, classes)
    return predicted, scores


def infer_on_port(port, build_dir, samples=None, baud=BAUD, timeout=2.0, log=print):
    """Stream the build's test samples to the board on ``port``; compare with the labels and the
    golden model; returns a summary dict."""
    from dlgn.compile.golden import GoldenModel, encode_features, predict

    from dlgn.compile.builddir import load_build

    from .bitstream import load_test_set

    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise BoardError(f"--samples must be a positive integer (test samples to send), not {samples!r}")
    try:
        import serial
    except ImportError:
        raise BoardError("dlgn infer needs pyserial: pip install pyserial") from None
    build = load_build(build_dir)
    x, y = load_test_set(build, samples)
    expected_scores = GoldenModel(build.netlist).scores(encode_features(build.netlist.encoding, x))
    expected = predict(expected_scores)
    try:
        link = serial.serial_for_url(port, baudrate=baud, timeout=timeout)  # a device, or a pyserial URL
    except (serial.SerialException, OSError) as e:
        raise BoardError(f"cannot open serial port {port}: {e}") from None
    with link:
        link.reset_input_buffer()
        start = time.perf_counter()
        try:
            got, scores = classify_stream(link, x, build.netlist.classes, build.netlist.encoding.feature_width)
        except ProtocolError as e:
            raise BoardError(f"{port}: {e}; is the uart top (dlgn bitstream --top uart) loaded?") from None
        seconds = time.perf_counter() - start
    mismatches = int((scores != expected_scores).any(axis=1).sum())
    summary = {"samples": len(x), "accuracy": float((got == y).mean()) if len(x) else None,
               "golden_accuracy": float((expected == y).mean()) if len(x) else None,
               "mismatches_vs_golden": mismatches, "samples_per_second": len(x) / seconds if seconds else None}
    log(f"{len(x)} samples: accuracy {summary['accuracy']:.2%} (golden model {summary['golden_accuracy']:.2%}), "
        f"{mismatches} answers differ from the golden model, {summary['samples_per_second']:.1f} samples/s")
    if mismatches:
        raise BoardError(f"{mismatches} of {len(x)} answers differ from the golden model; check timing "
                         f"(hw_report.json timing_met) and that the bitstream matches {build_dir}")
    return summary
