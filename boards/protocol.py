"""The serial protocol between the host and the board tops (shared by ``dlgn infer`` and the simulations).

Host to ``uart`` top: ``REQUEST_SYNC`` then one byte per raw feature (feature 0 first).
``uart`` top to host: ``RESPONSE_SYNC``, the class byte, then each class's score as 2 bytes,
little-endian (class 0 first). ``bist`` top to host, repeated: ``BIST_SYNC``, correct
predictions and samples as 2 bytes each, little-endian. 8N1 at :data:`BAUD` baud.
"""

__all__ = ["BAUD", "REQUEST_SYNC", "RESPONSE_SYNC", "BIST_SYNC", "ProtocolError", "encode_request",
           "response_length", "decode_response", "decode_bist", "BIST_FRAME_LENGTH"]

BAUD = 1_000_000
REQUEST_SYNC = 0xA5
RESPONSE_SYNC = 0x5A
BIST_SYNC = 0x5B
BIST_FRAME_LENGTH = 5
SCORE_BYTES = 2


class ProtocolError(Exception):
    """A frame that does not follow the protocol (wrong sync byte, wrong length, bad value)."""


def encode_request(features, feature_width=8):
    """The request frame for one sample of raw features (unsigned, ``feature_width <= 8`` bits)."""
    if feature_width > 8:
        raise ProtocolError(f"the UART protocol carries features of at most 8 bits, not {feature_width}")
    values = [int(v) for v in features]
    for f, v in enumerate(values):
        if not 0 <= v < (1 << feature_width):
            raise ProtocolError(f"feature {f} is {v}, outside 0..{(1 << feature_width) - 1}")
    return bytes([REQUEST_SYNC, *values])


def response_length(classes):
    return 2 + SCORE_BYTES * classes


def decode_response(frame, classes):
    """``(predicted_class, [score per class])`` from a response frame."""
    frame = bytes(frame)
    if len(frame) != response_length(classes):
        raise ProtocolError(f"a response has {response_length(classes)} bytes, got {len(frame)}")
    if frame[0] != RESPONSE_SYNC:
        raise ProtocolError(f"a response starts with 0x{RESPONSE_SYNC:02X}, not 0x{frame[0]:02X}")
    scores = [int.from_bytes(frame[2 + SCORE_BYTES * c:2 + SCORE_BYTES * (c + 1)], "little") for c in range(classes)]
    if frame[1] >= classes:
        raise ProtocolError(f"class {frame[1]} out of range (the net has {classes} classes)")
    return frame[1], scores


def decode_bist(frame):
    """``(correct, samples)`` from a BIST result frame."""
    frame = bytes(frame)
    if len(frame) != BIST_FRAME_LENGTH or frame[0] != BIST_SYNC:
        raise ProtocolError(f"not a BIST frame: {frame.hex()}")
    return int.from_bytes(frame[1:3], "little"), int.from_bytes(frame[3:5], "little")
