"""Lower a netlist onto the ``hdl/`` components and emit RTLIL and Verilog."""

from pathlib import Path

from amaranth.back import rtlil

from dlgn.hdl.top import DlgnCore, verilog_ports

from .yosys import VERILOG_SCRIPT, run_yosys

__all__ = ["TOP_NAME", "build_core", "emit_rtlil", "emit_verilog", "port_widths", "flip_flops"]

TOP_NAME = "dlgn_core"


def build_core(netlist, *, pipeline_every=0, output_every=0, encoder=False):
    """The :class:`~dlgn.hdl.top.DlgnCore` of ``netlist``; ``encoder`` puts the netlist's
    thermometer encoding on chip (the core then takes raw features)."""
    if encoder and netlist.encoding is None:
        raise ValueError("this netlist has no input encoding, so the core cannot take raw features")
    return DlgnCore(netlist.in_bits, netlist.gates, netlist.groups,
                    encoding=netlist.encoding if encoder else None,
                    pipeline_every=pipeline_every, output_every=output_every)


def port_widths(core):
    """Width of every top-level port, by Verilog name."""
    widths = {"clk": 1, "rst": 1}
    for path, _member, value in core.signature.flatten(core):
        widths["__".join(map(str, path))] = len(value)
    return widths


def emit_rtlil(core, path):
    """Write the core's RTLIL (hierarchical: ``dlgn_core`` and one module per block)."""
    from dlgn.safety import atomic_write_text

    text = rtlil.convert(core, name=TOP_NAME, ports=verilog_ports(core), emit_src=False)
    atomic_write_text(path, text)


def emit_verilog(rtlil_path, verilog_path):
    """Convert RTLIL to flat Verilog with Yosys (see :data:`~dlgn.compile.yosys.VERILOG_SCRIPT`).

    Both files must be in the same folder (Yosys runs there, on bare file names)."""
    rtlil_path, verilog_path = Path(rtlil_path).resolve(), Path(verilog_path).resolve()
    if rtlil_path.parent != verilog_path.parent:
        raise ValueError("emit_verilog writes next to its RTLIL file")
    for name in (rtlil_path.name, verilog_path.name):
        if any(ch in name for ch in ' ";'):
            raise ValueError(f"file names for Yosys must not contain spaces, quotes or semicolons: {name!r}")
    run_yosys(VERILOG_SCRIPT.format(il=rtlil_path.name, top=TOP_NAME, v=verilog_path.name), cwd=verilog_path.parent)


def flip_flops(rtlil_text):
    """Flip-flop bits in RTLIL text: the summed ``WIDTH`` of its ``$dff``-family cells."""
    import re

    total = 0
    for match in re.finditer(r"cell \$(?:a|s|ad|sd|ald|dffsr|)dff(?:e|sr|sre)? \S+\n(?:\s+parameter .*\n)*?"
                             r"\s+parameter \\WIDTH (\d+)", rtlil_text):
        total += int(match.group(1))
    return total
