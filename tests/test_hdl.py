# amaranth: UnusedElaboratable=no
"""Amaranth components in the simulator against the golden model (DESIGN §5, rung 3)."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from dlgn.compile import passes as P
from dlgn.compile.build import compile_netlist
from dlgn.compile.discretize import netlist_from_run
from dlgn.compile.golden import GoldenModel, predict
from dlgn.compile.lower import build_core
from dlgn.compile.synthetic import random_netlist
from dlgn.hdl.argmax import Argmax
from dlgn.hdl.core import LogicCore
from dlgn.hdl.encoder import ThermometerEncoder
from dlgn.hdl.group_sum import GroupSum
from dlgn.hdl.top import DlgnCore
from dlgn.train.data import load_dataset
from dlgn.train.encoding import Thermometer


def pack(rows, width):
    """Rows of small integers -> one integer per row, element ``i`` in bits ``[i*width, (i+1)*width)``."""
    return [sum(int(v) << (i * width) for i, v in enumerate(row)) for row in rows]


def unpack(words, count, width):
    mask = (1 << width) - 1
    return np.array([[(w >> (i * width)) & mask for i in range(count)] for w in words], dtype=np.int64)


def stream(top, in_port, out_ports, words, *, bubble_every=0, latency=None, seed=0):
    """Present ``words`` on ``in_port`` one per clock (with ``in_valid``), with a bubble cycle
    (``in_valid = 0`` and junk data) every ``bubble_every`` cycles; collect ``out_ports`` of every
    cycle with ``out_valid`` high. Returns ``(outputs, latencies)`` where ``latencies`` holds,
    per sample, the cycles between presenting it and its ``out_valid``."""
    latency = top.latency if latency is None else latency
    rng = np.random.default_rng(seed)
    width = len(in_port)
    outputs, in_cycles, out_cycles = [], [], []

    async def bench(ctx):
        cycle = sent = 0
        while len(outputs) < len(words):
            bubble = bubble_every and cycle % bubble_every == bubble_every - 1
            if sent < len(words) and not bubble:
                ctx.set(top.in_valid, 1)
                ctx.set(in_port, words[sent])
                in_cycles.append(cycle)
                sent += 1
            else:
                ctx.set(top.in_valid, 0)
                ctx.set(in_port, int(rng.integers(0, 1 << min(width, 62))))
            if latency == 0:
                await ctx.delay(1e-6)
                sampled = [ctx.get(top.out_valid)] + [ctx.get(p) for p in out_ports]
            else:
                _clk, _rst, *sampled = await ctx.tick().sample(top.out_valid, *out_ports)
            if sampled[0]:
                outputs.append(tuple(sampled[1:]))
                out_cycles.append(cycle)
            cycle += 1
            assert cycle < len(words) * 3 + 100, "out_valid never came"

    sim = Simulator(top)
    if latency:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return outputs, [o - i for i, o in zip(in_cycles, out_cycles)]


def check_core_against_golden(netlist, top, *, samples=48, encoder=False, seed=0, bubble_every=0, features=None):
    rng = np.random.default_rng(seed)
    golden = GoldenModel(netlist)
    if encoder:
        x = rng.integers(0, 256, (samples, netlist.encoding.features)) if features is None else features
        expected = golden.scores(features=x)
        words = pack(x, netlist.encoding.feature_width)
        in_port = top.in_features
    else:
        bits = (rng.random((samples, netlist.in_bits)) < rng.choice([0.2, 0.5, 0.8], (samples, 1))).astype(np.uint8)
        expected = golden.scores(bits)
        words = pack(bits, 1)
        in_port = top.in_bits
    outputs, latencies = stream(top, in_port, [top.out_class, top.out_scores], words, bubble_every=bubble_every,
                                seed=seed)
    scores = unpack([s for _, s in outputs], netlist.classes, top.score_width)
    np.testing.assert_array_equal(scores, expected)
    np.testing.assert_array_equal([c for c, _ in outputs], predict(expected))
    assert set(latencies) == {top.latency}
    return top.latency


@pytest.fixture(scope="module")
def mixed_netlist():
    netlist = random_netlist(in_bits=14, widths=(30, 24, 20, 15), classes=5, arities=(1, 2, 3, 4, 5, 6), seed=11,
                             degenerate=0.2, reach_back=0.3, encoding=True)
    return netlist


@pytest.mark.parametrize("pipeline_every,output_every", [(0, 0), (1, 1), (2, 2), (3, 1), (5, 0), (0, 3)])
def test_core_matches_golden_on_random_vectors(mixed_netlist, pipeline_every, output_every):
    optimized, _ = P.optimize(mixed_netlist, 4)
    for netlist in (mixed_netlist, optimized):
        top = build_core(netlist, pipeline_every=pipeline_every, output_every=output_every)
        check_core_against_golden(netlist, top, seed=pipeline_every, bubble_every=3 if pipeline_every else 0)


@pytest.mark.parametrize("pipeline_every", [0, 1, 2])
def test_core_with_encoder_matches_golden(mixed_netlist, pipeline_every):
    netlist, _ = P.optimize(mixed_netlist, 6)
    top = build_core(netlist, pipeline_every=pipeline_every, output_every=pipeline_every, encoder=True)
    assert top.stage_latencies["encoder"] == (1 if pipeline_every else 0)
    check_core_against_golden(netlist, top, encoder=True, seed=3 + pipeline_every, bubble_every=4)


def test_compiled_digits_net_in_the_simulator(digits_run, tmp_path):
    netlist, _net, _encoder, info = netlist_from_run(digits_run)
    report = compile_netlist(netlist, tmp_path, pipeline_every=1, output_every=2, encoder=True, verilog=False,
                             log=lambda *a: None)
    from dlgn.compile.netlist import load

    compiled = load(tmp_path / "netlist.json")
    top = build_core(compiled, pipeline_every=1, output_every=2, encoder=True)
    data = load_dataset("digits", seed=info["config"]["train"]["seed"])
    x = np.concatenate([data.x_test[:24], np.random.default_rng(0).integers(0, 17, (8, data.features))])
    latency = check_core_against_golden(compiled, top, encoder=True, features=x, bubble_every=5)
    assert report["latency_cycles"] == latency
    np.testing.assert_array_equal(GoldenModel(compiled).scores(features=x), GoldenModel(netlist).scores(features=x))


@pytest.mark.parametrize("pipeline_every,output_every,encoder", [(0, 0, False), (1, 1, True), (2, 3, False),
                                                                 (4, 2, True)])
def test_report_latency_is_the_simulated_latency(mixed_netlist, tmp_path, pipeline_every, output_every, encoder):
    report = compile_netlist(mixed_netlist, tmp_path, pipeline_every=pipeline_every, output_every=output_every,
                             encoder=encoder, verilog=False, log=lambda *a: None)
    from dlgn.compile.netlist import load

    compiled = load(tmp_path / "netlist.json")
    top = build_core(compiled, pipeline_every=pipeline_every, output_every=output_every, encoder=encoder)
    # count cycles in the simulation without trusting the component's own latency
    rng = np.random.default_rng(1)
    if encoder:
        words, port = pack(rng.integers(0, 256, (6, compiled.encoding.features)), 8), top.in_features
    else:
        words, port = pack(rng.integers(0, 2, (6, compiled.in_bits)), 1), top.in_bits
    uses_clock = report["latency_cycles"] > 0
    _, latencies = stream(top, port, [top.out_class], words, latency=1 if uses_clock else 0, bubble_every=2)
    assert set(latencies) == {report["latency_cycles"]}
    assert report["pipeline_stages"] == report["latency_cycles"] == sum(report["stage_latency"].values())
    assert report["ports"]["out_scores"] == report["classes"] * report["score_width"]
    assert report["ports"]["in_features" if encoder else "in_bits"] == len(port)


def test_degenerate_nets_in_the_simulator():
    from dlgn.compile.discretize import netlist_from_model
    from dlgn.compile.netlist import Netlist
    from dlgn.train.layers import LogicNet

    # an untrained residual net: every gate is a pass-through, so no gate is left at all
    residual, _ = P.optimize(netlist_from_model(LogicNet(12, 3, 9, 2, init="residual", seed=0).eval()))
    assert len(residual.gates) == 0
    # only constants in the groups: the core has no output bits
    constant = Netlist(2, [], [[1, 1], [0], []])
    for netlist in (residual, constant):
        for k in (0, 1):
            check_core_against_golden(netlist, build_core(netlist, pipeline_every=k, output_every=k), samples=10)


def test_reset_clears_the_valid_pipeline(mixed_netlist):
    from amaranth.hdl import ClockDomain

    top = build_core(mixed_netlist, pipeline_every=1, output_every=1)
    latency = top.latency
    m = Module()
    m.domains.sync = domain = ClockDomain("sync")
    m.submodules.top = top
    valid = []

    async def bench(ctx):
        ctx.set(top.in_valid, 1)
        for cycle in range(2 * latency + 4):
            ctx.set(domain.rst, cycle == latency + 1)
            _clk, _rst, out_valid = await ctx.tick().sample(top.out_valid)
            valid.append(out_valid)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # valid from cycle `latency` on, except the samples in flight when reset was asserted
    expected = [int(latency <= c <= latency + 1 or c > 2 * latency + 1) for c in range(2 * latency + 4)]
    assert valid == expected


# --------------------------------------------------------------------------- components


def test_group_sum_counts_duplicates_and_constant_ones():
    groups = [[0, 1, 2, 3, 4, 5, 6], [0, 0, 7], [], [8]]
    ones = [0, 2, 3, 0]
    for stage_every in (0, 1, 2):
        dut = GroupSum(9, groups, ones, stage_every)
        assert dut.score_width == 3 and dut.classes == 4
        bits = np.random.default_rng(stage_every).integers(0, 2, (40, 9))
        expected = np.array([[sum(row[p] for p in g) + o for g, o in zip(groups, ones)] for row in bits])
        outputs, latencies = stream(dut, dut.in_bits, [dut.out_scores], pack(bits, 1), bubble_every=3)
        np.testing.assert_array_equal(unpack([o for o, in outputs], 4, 3), expected)
        assert set(latencies) == {dut.latency} and dut.latency == (dut.tree_levels // stage_every if stage_every else 0)


def test_argmax_tie_rule_exhaustive_for_three_classes():
    rows = [(a, b, c) for a in range(4) for b in range(4) for c in range(4)]
    for stage_every in (0, 1):
        dut = Argmax(3, 2, stage_every)
        outputs, _ = stream(dut, dut.in_scores, [dut.out_class, dut.out_scores], pack(rows, 2))
        assert [c for c, _ in outputs] == [int(np.argmax(r)) for r in rows]
        assert [s for _, s in outputs] == pack(rows, 2)


@pytest.mark.parametrize("classes", [1, 2, 5, 10])
def test_argmax_random_scores_with_many_ties(classes):
    rows = np.random.default_rng(classes).integers(0, 3, (60, classes))
    dut = Argmax(classes, 2, 1)
    outputs, latencies = stream(dut, dut.in_scores, [dut.out_class], pack(rows, 2), bubble_every=4)
    assert [c for c, in outputs] == list(predict(rows))
    assert set(latencies) == {dut.latency}


def test_encoder_matches_the_trainer_thermometer():
    thresholds = np.array([[0, 100, 254], [5, 6, 7]])
    bits = [(f, int(t)) for f in range(2) for t in thresholds[f]]
    x = np.array([[0, 5], [1, 6], [100, 7], [101, 8], [254, 255], [255, 0]])
    expected = Thermometer(thresholds).encode(x).numpy()
    for registered in (False, True):
        dut = ThermometerEncoder(2, 8, bits, registered)
        outputs, latencies = stream(dut, dut.in_features, [dut.out_bits], pack(x, 8))
        np.testing.assert_array_equal(unpack([o for o, in outputs], 6, 1), expected)
        assert set(latencies) == {1 if registered else 0}


def test_logic_core_outputs_every_gate(mixed_netlist):
    netlist = mixed_netlist
    outputs = list(range(2, netlist.signals))  # every input bit and gate, constants excluded
    core = LogicCore(netlist.in_bits, netlist.gates, outputs, pipeline_every=2)
    bits = np.random.default_rng(5).integers(0, 2, (20, netlist.in_bits))
    got, latencies = stream(core, core.in_bits, [core.out_bits], pack(bits, 1))
    got = unpack([g for g, in got], len(outputs), 1)
    # reference: evaluate each gate by its table, in order
    values = np.zeros((20, netlist.signals), dtype=np.int64)
    values[:, 1] = 1
    values[:, 2:2 + netlist.in_bits] = bits
    for g, (inputs, table) in enumerate(netlist.gates):
        address = sum(values[:, s] << j for j, s in enumerate(inputs))
        values[:, netlist.gate_id(g)] = [(table >> int(a)) & 1 for a in address]
    np.testing.assert_array_equal(got, values[:, 2:])
    assert set(latencies) == {netlist.depth // 2}


def test_unused_clock_ports_exist_in_a_combinational_core(mixed_netlist):
    from amaranth.back import rtlil

    from dlgn.hdl.top import verilog_ports

    for k in (0, 2):
        top = build_core(mixed_netlist, pipeline_every=k, output_every=k)
        text = rtlil.convert(top, name="dlgn_core", ports=verilog_ports(top), emit_src=False)
        header = text[text.index("module \\dlgn_core"):text.index("cell") if "cell" in text else None]
        for port in ("clk", "rst", "in_valid", "in_bits", "out_valid", "out_class", "out_scores"):
            assert f"\\{port}\n" in header


def test_constructor_errors_are_exact():
    with pytest.raises(TypeError, match="in_bits must be a positive integer, not 0"):
        LogicCore(0, [], [2])
    with pytest.raises(ValueError, match="gate 0 has 7 inputs; a gate has 1 to 6"):
        LogicCore(2, [((2,) * 7, 0)], [4])
    with pytest.raises(ValueError, match=r"gate 0 \(id 4\) reads 4, which is not an earlier signal id"):
        LogicCore(2, [((4,), 1)], [4])
    with pytest.raises(ValueError, match="gate 0: table 16 does not fit 4 bits"):
        LogicCore(2, [((2, 3), 16)], [4])
    with pytest.raises(ValueError, match="output 9 is not a signal id"):
        LogicCore(2, [((2, 3), 8)], [9])
    with pytest.raises(TypeError, match="pipeline_every must be a non-negative integer, not -1"):
        LogicCore(2, [((2, 3), 8)], [4], pipeline_every=-1)
    with pytest.raises(ValueError, match="group 1 lists position 5, outside in_bits of width 3"):
        GroupSum(3, [[0], [5]])
    with pytest.raises(ValueError, match=r"ones must be 1 non-negative integers, not \[-1\]"):
        GroupSum(3, [[0]], [-1])
    with pytest.raises(TypeError, match="stage_every must be a non-negative integer, not 1.5"):
        GroupSum(3, [[0]], None, 1.5)
    with pytest.raises(TypeError, match="classes must be a positive integer, not 0"):
        Argmax(0, 4)
    with pytest.raises(TypeError, match="score_width must be a positive integer, not True"):
        Argmax(3, True)
    with pytest.raises(ValueError, match="bit 0: threshold 256 is not a 8-bit unsigned integer"):
        ThermometerEncoder(1, 8, [(0, 256)])
    with pytest.raises(ValueError, match="bit 0 reads feature 3; there are 1 features"):
        ThermometerEncoder(1, 8, [(3, 1)])
    with pytest.raises(ValueError, match="group 0 lists 99, which is not a signal id"):
        DlgnCore(2, [], [[99]])
    with pytest.raises(TypeError, match="output_every must be a non-negative integer, not None"):
        DlgnCore(2, [], [[2]], output_every=None)
