# amaranth: UnusedElaboratable=no
"""The group sum's popcount implementations against the reference adder tree (DESIGN §4, §5)."""

import itertools
import shutil
import subprocess

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.sim import Simulator

from dlgn.boards.primitives import carry_chain_for, ccu2c_init, check_group_sum_equivalence, lut4_init, lut_cell_for
from dlgn.hdl import popcount as P
from dlgn.hdl.group_sum import POPCOUNTS, GroupSum
from dlgn.hdl.top import DlgnCore, verilog_ports
from dlgn.compile.yosys import YosysError

SIZES = (1, 2, 3, 7, 31, 100)
PLANS = [k for k in POPCOUNTS if k != "adder"]


def run(dut, rows, bubble_every=3):
    """Present ``rows`` (0/1 arrays of ``in_bits``) one per clock with a bubble every
    ``bubble_every`` cycles; return ``(scores per sample, latency per sample)``."""
    width = dut.score_width
    words = [sum(int(v) << i for i, v in enumerate(row)) for row in rows]
    outputs, sent_at, seen_at = [], [], []

    async def bench(ctx):
        cycle = sent = 0
        while len(outputs) < len(words):
            if sent < len(words) and not (bubble_every and cycle % bubble_every == bubble_every - 1):
                ctx.set(dut.in_valid, 1)
                ctx.set(dut.in_bits, words[sent])
                sent_at.append(cycle)
                sent += 1
            else:
                ctx.set(dut.in_valid, 0)
                ctx.set(dut.in_bits, (cycle * 0x9E3779B97F4A7C15) & ((1 << len(dut.in_bits)) - 1))
            if dut.latency == 0:
                await ctx.delay(1e-6)
                valid, scores = ctx.get(dut.out_valid), ctx.get(dut.out_scores)
            else:
                _clk, _rst, valid, scores = await ctx.tick().sample(dut.out_valid, dut.out_scores)
            if valid:
                outputs.append([(scores >> (c * width)) & ((1 << width) - 1) for c in range(dut.classes)])
                seen_at.append(cycle)
            cycle += 1
            assert cycle < 3 * len(words) + 100, "out_valid never came"

    sim = Simulator(dut)
    if dut.latency:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(outputs), [o - i for i, o in zip(sent_at, seen_at)]


def random_rows(width, samples, seed):
    rng = np.random.default_rng(seed)
    density = rng.choice([0.05, 0.5, 0.95], (samples, 1))
    return (rng.random((samples, width)) < density).astype(np.uint8)


@pytest.mark.parametrize("popcount", PLANS)
@pytest.mark.parametrize("stage_every", [0, 1, 2])
def test_plans_equal_the_adder_tree(popcount, stage_every):
    """Odd group sizes, repeated positions, constant-one members: the same scores as the
    reference adder tree, with the latency each reports."""
    rng = np.random.default_rng(stage_every)
    groups = [list(range(n)) for n in SIZES]
    groups += [[int(p) for p in rng.integers(0, 40, 23)], [5, 5, 5, 5, 5], []]  # repeats (and an empty group)
    ones = [0, 1, 0, 3, 0, 2, 5, 1, 4]
    width = max(SIZES)
    rows = random_rows(width, 40, seed=stage_every)
    expected = np.array([[int(row[g].sum()) + o for g, o in zip(groups, ones)] for row in rows])
    reference = GroupSum(width, groups, ones, stage_every)
    got_reference, _ = run(reference, rows)
    np.testing.assert_array_equal(got_reference, expected)
    dut = GroupSum(width, groups, ones, stage_every, popcount=popcount)
    got, latencies = run(dut, rows)
    np.testing.assert_array_equal(got, expected)
    assert set(latencies) == {dut.latency}
    assert dut.latency == (-(-dut.tree_levels // stage_every) if stage_every else 0)
    assert dut.score_width == reference.score_width


@pytest.mark.parametrize("popcount", PLANS)
def test_device_cells_equal_the_plain_logic_in_the_simulator(popcount):
    """Device LUT and carry cells, simulated through a Python model of their INITs, give the
    plain-logic scores (the Yosys proof below checks the vendor models themselves)."""
    groups, ones = [list(range(31)), list(range(7, 40)) + [3, 3], list(range(100))], [0, 2, 1]
    dut = GroupSum(100, groups, ones, 1, popcount=popcount, lut_cell=_model_lut, carry_chain=_model_chain)
    rows = random_rows(100, 30, seed=7)
    got, latencies = run(dut, rows)
    np.testing.assert_array_equal(got, [[int(row[g].sum()) + o for g, o in zip(groups, ones)] for row in rows])
    assert set(latencies) == {dut.latency}


def _model_lut(table, inputs, out):
    """A LUT4 from the INIT that ``lut_cell_for`` would give it."""
    m = Module()
    m.d.comb += out.eq(Const(lut4_init(table, len(inputs)), 16).bit_select(Cat(*inputs, Const(0, 4 - len(inputs))), 1))
    return m


def _model_chain(chains):
    """The ECP5 ``CCU2C`` half as its simulation model computes it, from the INIT that
    :func:`ccu2c_init` makes (propagate: the LUT4 on A..D; generate: INIT[3:0] on A, B)."""
    m = Module()
    for chain in chains:
        carry = Const(0, 1)
        for inputs, propagate, generate, out in chain:
            init = ccu2c_init(len(inputs), propagate, generate)
            pins = list(inputs) + [Const(0, 1)] * (3 - len(inputs)) + ([Const(1, 1)] if len(inputs) < 4 else [])
            p, nxt = Signal(), Signal()
            m.d.comb += [
                p.eq(Const(init, 16).bit_select(Cat(*pins), 1)),
                out.eq(p ^ carry),
                nxt.eq(Mux(p, carry, Const(init & 0xF, 4).bit_select(Cat(*pins[:2]), 1))),
            ]
            carry = nxt
    return [m]


def test_pair_tables_are_exact():
    """Every pair of positions adds its wires exactly, for either carry in."""
    for (alpha, beta), ((p0, g0), (order, p1, g1)) in P._PAIRS.items():
        for values in itertools.product((0, 1), repeat=alpha + beta):
            xs, ys = values[:alpha], values[alpha:]
            for carry in (0, 1):
                s0, c0 = P.position_value(P.Position((), p0, g0, None), xs, carry)
                s1, c1 = P.position_value(P.Position((), p1, g1, None), [values[k] for k in order], c0)
                assert s0 + 2 * s1 + 4 * c1 == sum(xs) + carry + 2 * sum(ys)
        ccu2c_init(alpha, p0, g0)  # fits one CCU2C half
        ccu2c_init(alpha + beta, p1, g1)


@pytest.mark.parametrize("popcount", PLANS)
def test_plans_are_exact_and_their_size_is_counted(popcount):
    for n, ones in [(0, 0), (0, 6), (1, 0), (4, 1), (10, 0), (63, 0), (64, 0), (65, 2), (300, 0)]:
        plan = P.plan_class(popcount, list(range(n)), ones)
        assert plan.width == (n + ones).bit_length()
        for row in random_rows(max(n, 1), 20, seed=n)[:, :n]:
            assert P.evaluate_plan(plan, row) == int(row.sum()) + ones
        for cells in plan.rounds:  # a round reads only wires made before it
            made = {c.output for c in cells if isinstance(c, P.Lut)}
            made |= {p.output for c in cells if isinstance(c, P.Chain) for p in c.positions}
            for c in cells:
                reads = c.inputs if isinstance(c, P.Lut) else [w for p in c.positions for w in p.inputs]
                assert not made & set(reads)
    dut = GroupSum(300, [list(range(300)), list(range(100))], None, 1, popcount=popcount)
    assert dut.estimated_luts == dut.adder_bits == sum(p.luts + p.positions for p in dut._plans)
    assert dut.estimated_luts < 2.1 * 400


def test_dlgn_core_passes_the_popcount_on():
    gates = [((2, 3), 0x6), ((3, 4), 0x8), ((2, 4), 0xE)]
    groups = [[5, 6, 7, 2, 1], [7, 7, 3]]
    for popcount in POPCOUNTS:
        core = DlgnCore(3, gates, groups, output_every=1, popcount=popcount)
        assert core.group_sum.popcount == popcount
        for part in (core, core.core, core.group_sum, core.argmax):
            part._MustUse__used = True
    with pytest.raises(ValueError, match="popcount must be one of 'adder', 'compressor', 'chain', not 'tree'"):
        GroupSum(3, [[0]], popcount="tree")


def test_carry_cells_are_emitted():
    for family, cells in (("ecp5", {"CCU2C"}), ("ice40", {"SB_LUT4", "SB_CARRY"})):
        dut = GroupSum(31, [list(range(31))], None, 1, popcount="compressor", lut_cell=lut_cell_for(family),
                       carry_chain=carry_chain_for(family))
        text = rtlil.convert(dut, ports=verilog_ports(dut), emit_src=False)
        for cell in cells:
            assert f"cell \\{cell} " in text
    with pytest.raises(ValueError, match="no carry-chain primitive for family 'gowin'"):
        carry_chain_for("gowin")


@pytest.mark.parametrize("family,popcount", [("ecp5", "chain"), ("ecp5", "compressor"), ("ice40", "compressor")])
def test_device_primitives_proved_equal_to_the_adder_tree(family, popcount, tmp_path):
    """Yosys proof (vendor cell models) of the primitive group sum against the reference. SAT on a
    tree of XOR LUTs ("compressor") is far harder than on carry chains: 31 bits took 60 s, so it
    gets 15."""
    n = 31 if popcount == "chain" else 15
    groups, ones = [list(range(n)), [0, 0, 4, 9, 9, n - 1] + list(range(3, 8)), [7]], [0, 3, 1]
    gold = GroupSum(n, groups, ones)
    gate = GroupSum(n, groups, ones, popcount=popcount, lut_cell=lut_cell_for(family),
                    carry_chain=carry_chain_for(family))
    assert "SAT proof finished - no model found: SUCCESS!" in check_group_sum_equivalence(gold, gate, family, tmp_path)


@pytest.mark.parametrize("popcount", PLANS)
def test_generic_plans_are_plain_logic(popcount):
    """Without device hooks a plan is Yosys-internal cells only, so ``dlgn_core.v`` needs no cell models."""
    dut = GroupSum(40, [list(range(40)), list(range(0, 40, 3))], [0, 2], 1, popcount=popcount)
    text = rtlil.convert(dut, ports=verilog_ports(dut), emit_src=False)
    cells = {line.split()[1] for line in text.splitlines() if line.strip().startswith("cell ")}
    assert cells and all(c.startswith("$") for c in cells), cells


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")
def test_generic_chain_simulates_in_icarus(tmp_path):
    """The generic Verilog of a ``"chain"`` group sum (the ``dlgn compile`` script) runs in Icarus
    with no cell models and gives the scores."""
    from dlgn.compile.yosys import VERILOG_SCRIPT, run_yosys

    groups, ones = [list(range(40)), list(range(0, 40, 3)) + [5, 5]], [0, 2]
    dut = GroupSum(40, groups, ones, 1, popcount="chain")
    (tmp_path / "gs.il").write_text(rtlil.convert(dut, name="gs", ports=verilog_ports(dut), emit_src=False))
    run_yosys(VERILOG_SCRIPT.format(il="gs.il", top="gs", v="gs.v"), cwd=tmp_path)
    rows = random_rows(40, 24, seed=5)
    width = dut.score_width
    expected = [sum((int(row[g].sum()) + o) << (c * width) for c, (g, o) in enumerate(zip(groups, ones)))
                for row in rows]
    words = [sum(int(v) << i for i, v in enumerate(row)) for row in rows]
    n = len(words)
    vectors = " ".join(f"stim[{k}] = 40'h{w:x}; want[{k}] = {2 * width}'h{e:x};"
                       for k, (w, e) in enumerate(zip(words, expected)))
    tb = f"""module tb;
  reg clk = 0, rst = 0, in_valid = 0; reg [39:0] in_bits = 0; wire out_valid; wire [{2 * width - 1}:0] out_scores;
  reg [39:0] stim [0:{n - 1}]; reg [{2 * width - 1}:0] want [0:{n - 1}]; integer i = 0, got = 0;
  gs dut(.clk(clk), .rst(rst), .in_valid(in_valid), .in_bits(in_bits), .out_valid(out_valid), .out_scores(out_scores));
  initial begin
    {vectors}
    repeat (3 * {n} + 20) begin
      in_valid = i < {n}; in_bits = i < {n} ? stim[i] : 0; i = i + 1;
      #1 clk = 1; #1 clk = 0;
      if (out_valid) begin
        if (out_scores !== want[got]) begin $display("MISMATCH %0d %h %h", got, out_scores, want[got]); $finish; end
        got = got + 1;
      end
    end
    $display("CHECKED %0d", got); $finish;
  end
endmodule
"""
    (tmp_path / "tb.v").write_text(tb)
    subprocess.run(["iverilog", "-o", "tb.vvp", "tb.v", "gs.v"], cwd=tmp_path, check=True)
    out = subprocess.run(["vvp", "tb.vvp"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert f"CHECKED {n}" in out, out


# ------------------------------------------------------------------ the proofs the bitstream build runs

@pytest.mark.parametrize("popcount", PLANS)
def test_check_plan_proves_the_plans_and_catches_a_wrong_cell(popcount):
    for n, ones in [(0, 0), (0, 6), (1, 0), (4, 1), (10, 0), (31, 2), (64, 0), (300, 3), (800, 0)]:
        plan = P.plan_class(popcount, list(range(n)), ones)
        assert P.check_plan(plan) == plan.luts + plan.positions
    plan = P.plan_class(popcount, list(range(40)), 1)
    # one wrong truth table, in a LUT or in a carry-chain position, is found
    for r, cells in enumerate(plan.rounds):
        for k, cell in enumerate(cells):
            if isinstance(cell, P.Lut):
                broken = P.Lut(cell.inputs, cell.table ^ 1 << (len(cell.inputs) and 1), cell.output)
            else:
                first = cell.positions[0]
                broken = P.Chain((P.Position(first.inputs, first.propagate ^ 1, first.generate, first.output),)
                                 + cell.positions[1:])
            rounds = [list(c) for c in plan.rounds]
            rounds[r][k] = broken
            with pytest.raises(ValueError, match=f"popcount plan: round {r + 1}"):
                P.check_plan(P.ClassPlan(plan.width, plan.columns, plan.sources, rounds, plan.alive, plan.result))
            break


@pytest.mark.parametrize("family,popcount", [("ecp5", "compressor"), ("ecp5", "chain"), ("ice40", "compressor")])
def test_prove_group_sum_proves_the_build_and_finds_a_wrong_cell(family, popcount, tmp_path, monkeypatch):
    """What ``dlgn bitstream`` proves: the plans cell by cell, and the device cells (on a stand-in
    that shows every cell configuration of the group sum) with Yosys; a wrong INIT is found."""
    from dlgn.boards import primitives

    groups, ones = [list(range(0, 120, 2)), list(range(1, 120, 2)) + [3, 3], list(range(17))], [0, 2, 1]
    proved = primitives.prove_group_sum(120, groups, ones, popcount, family, tmp_path / "ok")
    assert proved["plan_equal_to_popcount"] and proved["device_cells_equal_to_plan"]
    assert sum(proved["cells_proved_on"]["bits_per_class"]) < sum(map(len, groups)) or popcount == "chain"
    right = primitives.lut_cell_for(family)

    def wrong_lut(table, inputs, out):  # a full adder's sum with one INIT bit flipped
        return right(table ^ 0x80 if table == 0x96 else table, inputs, out)

    monkeypatch.setattr(primitives, "lut_cell_for", lambda fam: wrong_lut)
    with pytest.raises(YosysError, match="unproven"):
        primitives.prove_group_sum(120, groups, ones, popcount, family, tmp_path / "bad")
