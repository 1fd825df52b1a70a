"""The netlist IR: a DAG of truth-table gates, its input encoding and class groups.

Signals share one id space (``docs/netlist-format.md`` is the normative description):

- ``0`` and ``1``: the constants 0 and 1;
- ``2 .. in_bits + 1``: the input bits (bit ``i`` has id ``i + 2``);
- ``in_bits + 2 ..``: the gates, in topological order (a gate reads only smaller ids).

A gate is ``(inputs, table)``: 1 to 6 input ids (a gate may read one signal twice) and a table of
``2**n`` bits, bit ``a`` being the output for the input pattern ``a = sum_j x_j * 2**j``. The
level of constants and input bits is 0, that of a gate one more than the highest level among
its inputs. Class ``c`` scores the number of ones among the signals listed in ``groups[c]`` (a
signal may be listed more than once); the prediction is the class with the highest score, the
lowest index winning ties.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from . import tables as T

__all__ = ["FORMAT", "VERSION", "CONST0", "CONST1", "NetlistError", "InputEncoding", "Netlist", "load", "save"]

FORMAT = "dlgn-netlist"
VERSION = 1
CONST0 = 0
CONST1 = 1
FIRST_INPUT = 2


class NetlistError(Exception):
    """A netlist file (or in-memory netlist) that is damaged, foreign or inconsistent."""


@dataclass(frozen=True)
class InputEncoding:
    """Thermometer encoding of raw integer features into the input bits.

    Input bit ``i`` is ``feature[bits[i][0]] > bits[i][1]``; features are unsigned integers of
    ``feature_width`` bits."""

    features: int
    feature_width: int
    bits: tuple

    @classmethod
    def from_thresholds(cls, thresholds, feature_width=8):
        """From a ``[features, T]`` threshold table: bit ``f*T + t`` is ``x_f > thresholds[f, t]``."""
        rows = [[int(t) for t in row] for row in thresholds]
        bits = tuple((f, t) for f, row in enumerate(rows) for t in row)
        return cls(len(rows), feature_width, bits)


class Netlist:
    """A combinational network of truth-table gates feeding per-class popcounts.

    ``gates``: list of ``(inputs, table)`` with ``inputs`` a tuple of ids; ``groups``: one list
    of signal ids per class; ``encoding``: an :class:`InputEncoding` or ``None`` (raw bits);
    ``source``: free-form provenance (a JSON-serializable dict)."""

    def __init__(self, in_bits, gates, groups, encoding=None, source=None):
        self.in_bits = int(in_bits)
        self.gates = [(tuple(int(i) for i in inputs), int(table)) for inputs, table in gates]
        self.groups = [[int(s) for s in group] for group in groups]
        self.encoding = encoding
        self.source = dict(source or {})
        self._levels = None
        self.check()

    # ----------------------------------------------------------------- ids

    @property
    def first_gate(self):
        return FIRST_INPUT + self.in_bits

    @property
    def signals(self):
        """Number of ids (constants, input bits and gates)."""
        return self.first_gate + len(self.gates)

    def input_id(self, i):
        return FIRST_INPUT + i

    def gate_id(self, i):
        return self.first_gate + i

    @property
    def classes(self):
        return len(self.groups)

    # ----------------------------------------------------------------- derived facts

    @property
    def levels(self):
        """Level of every id (list indexed by id)."""
        if self._levels is None:
            levels = [0] * self.signals
            base = self.first_gate
            for g, (inputs, _table) in enumerate(self.gates):
                levels[base + g] = 1 + max(levels[i] for i in inputs)
            self._levels = levels
        return self._levels

    @property
    def depth(self):
        """Highest gate level (0 for a netlist without gates)."""
        return max(self.levels[self.first_gate:], default=0)

    @property
    def max_score(self):
        """Highest score any class can reach."""
        return max((sum(1 for s in group if s != CONST0) for group in self.groups), default=0)

    @property
    def score_width(self):
        """Bits of an unsigned score (at least 1)."""
        return max(1, self.max_score.bit_length())

    def arity_histogram(self):
        counts = {}
        for inputs, _ in self.gates:
            counts[len(inputs)] = counts.get(len(inputs), 0) + 1
        return dict(sorted(counts.items()))

    def estimated_luts(self, lut_size):
        """LUTs of ``lut_size`` inputs for the gates: one per gate that fits, ``2**(n - k)``
        (a Shannon split onto the slice multiplexers) for wider ones."""
        return sum(1 << max(0, len(inputs) - lut_size) for inputs, _ in self.gates)

    # ----------------------------------------------------------------- checks

    def check(self):
        """Raise :class:`NetlistError` unless every index, arity, table and group is valid."""
        if self.in_bits < 1:
            raise NetlistError(f"in_bits must be at least 1, not {self.in_bits}")
        enc = self.encoding
        if enc is not None:
            if len(enc.bits) != self.in_bits:
                raise NetlistError(f"in_bits is {self.in_bits}, but the encoding lists {len(enc.bits)} input bits "
                                   f"(one [feature, threshold] pair per input bit)")
            if enc.features < 1 or not 1 <= enc.feature_width <= 32:
                raise NetlistError(f"encoding needs features >= 1 and 1 <= feature_width <= 32, "
                                   f"not {enc.features} and {enc.feature_width}")
            for i, (f, t) in enumerate(enc.bits):
                if not 0 <= f < enc.features or not 0 <= t < (1 << enc.feature_width):
                    raise NetlistError(f"input bit {i}: feature {f} / threshold {t} outside "
                                       f"{enc.features} features of {enc.feature_width} bits")
        base = self.first_gate
        for g, (inputs, table) in enumerate(self.gates):
            _check_gate(g, base + g, inputs, table)
        if not self.groups:
            raise NetlistError("a netlist needs at least one class group")
        total = self.signals
        for c, group in enumerate(self.groups):
            for s in group:
                if not 0 <= s < total:
                    raise NetlistError(f"class group {c} lists id {s}, which does not exist (ids are 0..{total - 1})")


def _check_gate(g, gid, inputs, table):
    n = len(inputs)
    if not 1 <= n <= T.MAX_ARITY:
        raise NetlistError(f"gate {g} (id {gid}) has {n} inputs; a gate has 1 to {T.MAX_ARITY}")
    for i in inputs:
        if not 0 <= i < gid:
            reason = "a negative id" if i < 0 else ("itself or a later gate: the gates form a cycle or are not "
                                                    "in topological order")
            raise NetlistError(f"gate {g} (id {gid}) reads id {i}, {reason}")
    if not 0 <= table < (1 << (1 << n)):
        raise NetlistError(f"gate {g} (id {gid}): table {table:#x} does not fit {1 << n} bits")


# --------------------------------------------------------------------------- file format

def _encode_table(table, n):
    return format(table, f"0{T.hex_digits(n)}x")


def to_json_text(netlist):
    """The netlist as text in the documented format (one gate per line)."""
    levels = netlist.levels
    base = netlist.first_gate
    header = {
        "format": FORMAT,
        "version": VERSION,
        "in_bits": netlist.in_bits,
        "encoding": None,
        "classes": netlist.classes,
        "gate_count": len(netlist.gates),
    }
    enc = netlist.encoding
    if enc is not None:
        header["encoding"] = {"kind": "thermometer", "features": enc.features, "feature_width": enc.feature_width,
                              "bits": [list(b) for b in enc.bits]}
    lines = ["{"]
    for key, value in header.items():
        lines.append(f" {json.dumps(key)}: {json.dumps(value, separators=(',', ':'))},")
    lines.append(' "gates": [')
    gate_lines = []
    for g, (inputs, table) in enumerate(netlist.gates):
        gate_lines.append(f'  {{"inputs":[{",".join(map(str, inputs))}],"table":"{_encode_table(table, len(inputs))}",'
                          f'"level":{levels[base + g]}}}')
    lines.append(",\n".join(gate_lines))
    lines.append(" ],")
    lines.append(' "groups": [')
    lines.append(",\n".join(f"  [{','.join(map(str, group))}]" for group in netlist.groups))
    lines.append(" ],")
    lines.append(f' "source": {json.dumps(netlist.source, separators=(",", ":"))}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def save(netlist, path):
    """Write ``netlist`` to ``path`` (through a temporary file, so a crash leaves no half file)."""
    from dlgn.safety import atomic_write_text

    atomic_write_text(path, to_json_text(netlist))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def from_json_text(text, where="netlist"):
    """Parse and validate netlist text; ``where`` names the file in error messages."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NetlistError(f"{where} is damaged or not a dlgn netlist (not valid JSON: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise NetlistError(f"{where} is not a dlgn netlist (format {found!r}, expected {FORMAT!r})")
    version = doc.get("version")
    if version != VERSION or not _is_int(version):
        raise NetlistError(f"{where} has netlist version {version!r}; this dlgn reads version {VERSION} "
                           f"(recompile the run with this dlgn)")

    def bad(message):
        return NetlistError(f"{where} is damaged: {message}")

    for key in ("in_bits", "encoding", "classes", "gate_count", "gates", "groups"):
        if key not in doc:
            raise bad(f"missing key {key!r}")
    in_bits, classes, gate_count = doc["in_bits"], doc["classes"], doc["gate_count"]
    if not _is_int(in_bits) or in_bits < 1:
        raise bad(f"in_bits must be a positive integer, not {in_bits!r}")
    if not _is_int(classes) or classes < 1:
        raise bad(f"classes must be a positive integer, not {classes!r}")
    gates_doc = doc["gates"]
    if not isinstance(gates_doc, list):
        raise bad("gates must be a list")
    if not _is_int(gate_count) or gate_count != len(gates_doc):
        raise bad(f"gate_count says {gate_count!r}, the file holds {len(gates_doc)} gates (truncated?)")

    encoding = None
    enc = doc["encoding"]
    if enc is not None:
        if not isinstance(enc, dict) or enc.get("kind") != "thermometer":
            raise bad(f"encoding must be null or a thermometer encoding, not {enc!r:.80}")
        features, width, bits = enc.get("features"), enc.get("feature_width"), enc.get("bits")
        if not _is_int(features) or not _is_int(width) or not isinstance(bits, list):
            raise bad("encoding needs integer features and feature_width and a list of bits")
        if not all(isinstance(b, list) and len(b) == 2 and _is_int(b[0]) and _is_int(b[1]) for b in bits):
            raise bad("every encoding bit must be a [feature, threshold] pair of integers")
        if len(bits) != in_bits:
            raise bad(f"in_bits is {in_bits}, but the encoding lists {len(bits)} input bits (one [feature, threshold] "
                      f"pair per input bit)")
        encoding = InputEncoding(features, width, tuple((b[0], b[1]) for b in bits))

    base = FIRST_INPUT + in_bits
    levels = [0] * (base + len(gates_doc))
    gates = []
    for g, gate in enumerate(gates_doc):
        gid = base + g
        if not isinstance(gate, dict):
            raise bad(f"gate {g} (id {gid}) is not an object")
        inputs, table, level = gate.get("inputs"), gate.get("table"), gate.get("level")
        if not isinstance(inputs, list) or not all(_is_int(i) for i in inputs):
            raise bad(f"gate {g} (id {gid}): inputs must be a list of integer ids")
        n = len(inputs)
        if not 1 <= n <= T.MAX_ARITY:
            raise bad(f"gate {g} (id {gid}) has {n} inputs; a gate has 1 to {T.MAX_ARITY}")
        for i in inputs:
            if not 0 <= i < gid:
                if i < 0 or i >= len(levels):
                    raise bad(f"gate {g} (id {gid}) reads id {i}, which does not exist (ids are 0..{len(levels) - 1})")
                raise bad(f"gate {g} (id {gid} = in_bits + 2 + {g}, in_bits = {in_bits}) reads id {i}, itself or a "
                          f"later gate: the gates form a cycle or are not in topological order, or in_bits is wrong")
        digits = T.hex_digits(n)
        if not isinstance(table, str) or len(table) != digits or not all(ch in "0123456789abcdef" for ch in table):
            raise bad(f"gate {g} (id {gid}): table must be {digits} lower-case hex digits for {n} inputs, "
                      f"not {table!r}")
        value = int(table, 16)
        if value >> (1 << n):
            raise bad(f"gate {g} (id {gid}): table {table} has bits beyond the {1 << n} entries of {n} inputs")
        expected = 1 + max(levels[i] for i in inputs)
        if not _is_int(level):
            raise bad(f"gate {g} (id {gid}): level must be an integer, not {level!r}")
        if level != expected:
            raise bad(f"gate {g} (id {gid}) says level {level!r}; its inputs put it at level {expected} (ids below "
                      f"in_bits + 2 = {base} are constants and input bits, level 0)")
        levels[gid] = expected
        gates.append((tuple(inputs), value))

    groups = doc["groups"]
    if not isinstance(groups, list) or len(groups) != classes:
        raise bad(f"groups must be a list of {classes} class groups")
    for c, group in enumerate(groups):
        if not isinstance(group, list) or not all(_is_int(s) for s in group):
            raise bad(f"class group {c} must be a list of integer ids")
    source = doc.get("source", {})
    if not isinstance(source, dict):
        raise bad(f"source must be an object, not {source!r:.40}")
    try:
        netlist = Netlist(in_bits, gates, groups, encoding, source)
    except NetlistError as e:
        raise bad(str(e)) from None
    netlist._levels = levels
    return netlist


def load(path):
    """Read and validate a netlist file; a damaged or foreign file raises :class:`NetlistError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NetlistError(f"cannot read netlist {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NetlistError(f"{path} is damaged or not a dlgn netlist (not UTF-8 text)") from None
    return from_json_text(text, str(path))
