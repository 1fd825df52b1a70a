"""Netlist IR: round trip through the file format, and refusal of damaged or foreign files."""

import json

import numpy as np
import pytest

from dlgn.compile import netlist as ir
from dlgn.compile import tables as T
from dlgn.compile.golden import GoldenModel
from dlgn.compile.netlist import InputEncoding, Netlist, NetlistError
from dlgn.compile.synthetic import random_netlist


@pytest.fixture
def small():
    return random_netlist(in_bits=9, widths=(12, 8, 6), classes=3, seed=4, encoding=True)


def write(tmp_path, text, name="netlist.json"):
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


def doc_of(netlist):
    return json.loads(ir.to_json_text(netlist))


def test_round_trip_keeps_everything(tmp_path, small):
    path = tmp_path / "n.json"
    ir.save(small, path)
    loaded = ir.load(path)
    assert loaded.in_bits == small.in_bits
    assert loaded.gates == small.gates
    assert loaded.groups == small.groups
    assert loaded.encoding == small.encoding
    assert loaded.source == small.source
    assert loaded.levels == small.levels
    assert ir.to_json_text(loaded) == path.read_text()
    bits = (np.random.default_rng(0).random((300, small.in_bits)) < 0.5).astype(np.uint8)
    np.testing.assert_array_equal(GoldenModel(loaded).scores(bits), GoldenModel(small).scores(bits))


def test_file_layout_matches_the_documentation(small):
    doc = doc_of(small)
    assert doc["format"] == "dlgn-netlist" and doc["version"] == 1
    assert doc["gate_count"] == len(doc["gates"]) == len(small.gates)
    gate = doc["gates"][0]
    assert set(gate) == {"inputs", "table", "level"}
    n = len(gate["inputs"])
    assert len(gate["table"]) == T.hex_digits(n) and int(gate["table"], 16) == small.gates[0][1]
    assert doc["encoding"]["kind"] == "thermometer" and len(doc["encoding"]["bits"]) == small.in_bits
    assert len(doc["groups"]) == doc["classes"] == 3


def test_netlist_without_encoding_round_trips(tmp_path):
    netlist = Netlist(2, [((2, 3), 0x8), ((4,), 0b01)], [[4], [5, 1]])
    ir.save(netlist, tmp_path / "n.json")
    loaded = ir.load(tmp_path / "n.json")
    assert loaded.encoding is None and loaded.gates == netlist.gates and loaded.groups == netlist.groups
    assert '"table":"8"' in (tmp_path / "n.json").read_text()


def test_save_is_atomic(tmp_path, small):
    ir.save(small, tmp_path / "n.json")
    assert [p.name for p in tmp_path.iterdir()] == ["n.json"]


def _mutated(small, mutate):
    doc = doc_of(small)
    mutate(doc)
    return json.dumps(doc)


CORRUPTIONS = [
    ("missing key", lambda d: d.pop("groups"), "damaged: missing key 'groups'"),
    ("gate count", lambda d: d.update(gate_count=d["gate_count"] + 1), "gate_count says"),
    ("truncated gate list", lambda d: d["gates"].pop(), "gate_count says"),
    ("arity 0", lambda d: d["gates"][0].update(inputs=[]), "has 0 inputs; a gate has 1 to 6"),
    ("arity 7", lambda d: d["gates"][0].update(inputs=[2] * 7, table="0" * 32), "has 7 inputs"),
    ("index out of range", lambda d: d["gates"][3]["inputs"].__setitem__(0, 99999), "reads id 99999, which does not exist"),
    ("negative index", lambda d: d["gates"][3]["inputs"].__setitem__(0, -1), "reads id -1, which does not exist"),
    ("cycle", lambda d: d["gates"][0]["inputs"].__setitem__(0, 11 + 5), "form a cycle or are not in topological order"),
    ("self loop", lambda d: d["gates"][0]["inputs"].__setitem__(0, 11), "form a cycle"),
    ("table digits", lambda d: d["gates"][0].update(table=d["gates"][0]["table"] + "0"), "lower-case hex digits"),
    ("table not hex", lambda d: d["gates"][0].update(table="z" * len(d["gates"][0]["table"])), "lower-case hex digits"),
    ("table type", lambda d: d["gates"][0].update(table=8), "lower-case hex digits"),
    ("wrong level", lambda d: d["gates"][5].update(level=d["gates"][5]["level"] + 1), "its inputs put it at level"),
    ("group id", lambda d: d["groups"][1].append(10 ** 6), "class group 1 lists id 1000000, which does not exist"),
    ("group count", lambda d: d["groups"].pop(), "groups must be a list of 3 class groups"),
    ("group member type", lambda d: d["groups"][0].append("x"), "class group 0 must be a list of integer ids"),
    ("in_bits", lambda d: d.update(in_bits=0), "in_bits must be a positive integer"),
    ("encoding bit count", lambda d: d["encoding"]["bits"].pop(), "in_bits is 9, but the encoding lists 8 input bits"),
    ("encoding feature", lambda d: d["encoding"]["bits"][0].__setitem__(0, 99), "feature 99 / threshold"),
    ("encoding threshold", lambda d: d["encoding"]["bits"][0].__setitem__(1, 256), "threshold 256 outside"),
    ("encoding kind", lambda d: d["encoding"].update(kind="onehot"), "thermometer encoding"),
    ("gate not an object", lambda d: d["gates"].__setitem__(0, [1, 2]), "gate 0 (id 11) is not an object"),
    # the format says "level: integer"; True == 1 and 1.0 == 1 in Python, so they must be refused explicitly
    ("boolean level", lambda d: d["gates"][0].update(level=True), "gate 0 (id 11): level must be an integer, not True"),
    ("float level", lambda d: d["gates"][0].update(level=1.0), "gate 0 (id 11): level must be an integer, not 1.0"),
    ("in_bits larger than the encoding", lambda d: d.update(in_bits=10), "in_bits is 10, but the encoding lists 9"),
    ("source null", lambda d: d.update(source=None), "source must be an object, not None"),
]


def test_an_in_bits_inconsistent_with_the_gates_names_in_bits(tmp_path):
    """Without an encoding, a wrong in_bits shifts every gate id; the message says so."""
    netlist = Netlist(2, [((2, 3), 0x8), ((4, 2), 0x6)], [[5]])
    doc = doc_of(netlist)
    doc["in_bits"] = 1
    with pytest.raises(NetlistError, match=r"gate 0 \(id 3 = in_bits \+ 2 \+ 0, in_bits = 1\) reads id 3.*or in_bits "
                                           r"is wrong"):
        ir.load(write(tmp_path, json.dumps(doc)))
    doc["in_bits"] = 3
    with pytest.raises(NetlistError, match=r"level.*in_bits \+ 2 = 5"):
        ir.load(write(tmp_path, json.dumps(doc)))


@pytest.mark.parametrize("name,mutate,message", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_damaged_files_are_refused_with_a_clear_message(tmp_path, small, name, mutate, message):
    path = write(tmp_path, _mutated(small, mutate))
    with pytest.raises(NetlistError) as info:
        ir.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_table_bits_beyond_the_entries_are_refused(tmp_path):
    netlist = Netlist(2, [((2,), 0b01)], [[4]])
    text = ir.to_json_text(netlist).replace('"table":"1"', '"table":"5"')
    with pytest.raises(NetlistError, match="has bits beyond the 2 entries of 1 inputs"):
        ir.load(write(tmp_path, text))


def test_truncated_file_is_refused(tmp_path, small):
    text = ir.to_json_text(small)
    with pytest.raises(NetlistError, match="damaged or not a dlgn netlist \\(not valid JSON"):
        ir.load(write(tmp_path, text[: len(text) // 2]))


def test_foreign_files_are_refused(tmp_path):
    with pytest.raises(NetlistError, match="is not a dlgn netlist \\(format 'yosys'"):
        ir.load(write(tmp_path, json.dumps({"format": "yosys", "modules": {}})))
    with pytest.raises(NetlistError, match="is not a dlgn netlist \\(format 'list'"):
        ir.load(write(tmp_path, "[1, 2, 3]"))
    with pytest.raises(NetlistError, match="not UTF-8"):
        ir.load(write(tmp_path, b"\x89PNG\r\n\x1a\n\xff\xfe"))
    with pytest.raises(NetlistError, match="not valid JSON"):
        ir.load(write(tmp_path, "module dlgn_core(clk);\nendmodule\n"))


def test_other_versions_are_refused(tmp_path, small):
    path = write(tmp_path, _mutated(small, lambda d: d.update(version=2)))
    with pytest.raises(NetlistError, match="has netlist version 2; this dlgn reads version 1"):
        ir.load(path)
    path = write(tmp_path, _mutated(small, lambda d: d.update(version="1")))
    with pytest.raises(NetlistError, match="version '1'"):
        ir.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(NetlistError, match="cannot read netlist"):
        ir.load(tmp_path / "nope.json")


def test_in_memory_checks():
    with pytest.raises(NetlistError, match="reads id 5, itself or a later gate"):
        Netlist(2, [((5,), 0b01)], [[4]])
    with pytest.raises(NetlistError, match="table 0x10 does not fit 4 bits"):
        Netlist(2, [((2, 3), 0x10)], [[4]])
    with pytest.raises(NetlistError, match="at least one class group"):
        Netlist(2, [((2, 3), 0x8)], [])
    with pytest.raises(NetlistError, match="in_bits is 2, but the encoding lists 1 input bits"):
        Netlist(2, [((2, 3), 0x8)], [[4]], InputEncoding(1, 8, ((0, 3),)))


def test_levels_depth_and_score_width():
    netlist = Netlist(3, [((2, 3), 0x8), ((5, 4), 0x6), ((6,), 0b01)], [[5, 6, 7, 1, 0], [2]])
    assert netlist.levels == [0, 0, 0, 0, 0, 1, 2, 3]
    assert netlist.depth == 3
    assert netlist.max_score == 4 and netlist.score_width == 3
    assert netlist.estimated_luts(4) == 3


def test_table_helpers():
    and2, n = 0x8, 2
    assert T.support(and2, n) == [0, 1]
    assert T.depends_on(0b1010, 2, 0) and not T.depends_on(0b1010, 2, 1)
    assert T.drop_input(0b1010, 2, 1) == 0b10
    # AND of (x0, NOT x0) is constant 0; a table evaluated on its own variables is itself
    assert T.evaluate(and2, 2, [T.variable(0, 1), T.full(1) & ~T.variable(0, 1)], 1) == 0
    for n in range(1, 7):
        table = (0x9E3779B97F4A7C15 * n) & T.full(n)
        assert T.evaluate(table, n, [T.variable(i, n) for i in range(n)], n) == table


def test_the_format_document_example_and_reference_evaluator(tmp_path):
    """docs/netlist-format.md: its example file loads and scores as the text says, and its
    reference evaluator agrees with the golden model."""
    from pathlib import Path
    import re

    doc = (Path(__file__).parent.parent / "docs" / "netlist-format.md").read_text()
    example = re.search(r"## 8\..*?```json\n(.*?)```", doc, re.S).group(1)
    netlist = ir.from_json_text(example)
    np.testing.assert_array_equal(GoldenModel(netlist).scores(np.array([[1, 0], [0, 0], [1, 1]])),
                                  [[1, 2], [0, 1], [2, 1]])
    namespace = {}
    exec(re.search(r"## 9\..*?```python\n(.*?)```", doc, re.S).group(1), namespace)
    netlist = random_netlist(in_bits=12, widths=(20, 16, 12), classes=4, seed=3, encoding=True)
    ir.save(netlist, tmp_path / "n.json")
    raw = json.loads((tmp_path / "n.json").read_text())
    x = np.random.default_rng(0).integers(0, 256, (40, netlist.encoding.features))
    expected = GoldenModel(netlist).scores(features=x)
    for row, scores in zip(x, expected):
        got, predicted = namespace["evaluate"](tmp_path / "n.json", namespace["encode"](raw, row))
        assert got == list(scores) and predicted == int(np.argmax(scores))
