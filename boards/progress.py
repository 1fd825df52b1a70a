"""What a long board build is doing: elapsed time per phase and where Yosys and nextpnr are.

:class:`Ticker` runs a block while a background thread shows ``label``, the elapsed time and a
status line: on a terminal one line rewritten every second, elsewhere (CI logs) one line every
``PLAIN_EVERY`` seconds. :func:`toolchain_status` reads the Yosys log (``top.rpt``) and the
nextpnr log (``top.tim``) of a running build and says which pass, placer iteration or routing
pass (with its overused wires) it is in.
"""

import re
import sys
import threading
import time
from pathlib import Path

__all__ = ["Ticker", "toolchain_status", "yosys_status", "nextpnr_status"]

PLAIN_EVERY = 30.0

_YOSYS_PASS = re.compile(r"^\s*(\d+(?:\.\d+)*)\.\s+Executing (.+?)(?: pass)?[.\s]*(?:\(.*)?$")
_PLACER_ITER = re.compile(r"at (?:initial placer iter|iteration) #?(\d+).*?wirelen(?: solved)? = (\d+)")
_ROUTER2_ITER = re.compile(r"iter=(\d+)\s+wires=(\d+)\s+overused=(\d+)")
_ROUTER1_ITER = re.compile(r"^\s*Info:\s+(\d+)\s*\|\s*\d+\s+\d+\s*\|\s*\d+\s+\d+\s*\|\s*(\d+)")


def _tail_lines(path, size=65536):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            end = f.tell()
            f.seek(max(0, end - size))
            return f.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def yosys_status(path):
    """``"synthesis: PASS"`` for the pass Yosys's log shows last, or ``None``."""
    for line in reversed(_tail_lines(path)):
        match = _YOSYS_PASS.match(line)
        if match:
            return f"synthesis: {match.group(2).strip()}"
    return None


def nextpnr_status(path):
    """Where nextpnr's log says it is (placement iteration and wirelength, routing pass and
    overused wires), or ``None`` before it has written anything."""
    lines = _tail_lines(path)
    if not lines:
        return None
    for line in reversed(lines):
        if "Program finished normally" in line:
            return "place and route: done, writing the bitstream"
        match = _ROUTER2_ITER.search(line)
        if match:
            return f"routing: router2 pass {match.group(1)}, {match.group(3)} overused wires"
        match = _ROUTER1_ITER.match(line)
        if match:
            return f"routing: router1, {match.group(1)} iterations, {match.group(2)} wires to route"
        if "Routing.." in line or "Running router" in line or "Routing globals" in line:
            return "routing: starting"
        match = _PLACER_ITER.search(line)
        if match:
            return f"placement: iteration {match.group(1)}, wirelength {int(match.group(2)):,}"
        if "Running main analytical placer" in line or "Running placer" in line or "Placing" in line:
            return "placement: starting"
        if "Packing" in line or "Reading" in line:
            return "place and route: packing the design"
    return "place and route: starting"


def toolchain_status(build_dir, name="top"):
    """The status of a running board build in ``build_dir`` (nextpnr once it has started, else Yosys)."""
    build_dir = Path(build_dir)
    tim = build_dir / f"{name}.tim"
    if tim.is_file():
        return nextpnr_status(tim)
    return yosys_status(build_dir / f"{name}.rpt") or "synthesis: starting"


def _clock(seconds):
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class Ticker:
    """Show ``label``, the elapsed time and ``status()`` while the ``with`` block runs."""

    def __init__(self, label, status=None, stream=None, interval=1.0):
        self.label = label
        self.status = status
        self.stream = stream or sys.stderr
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval
        self.start = None
        self._stop = threading.Event()
        self._thread = None

    def line(self):
        detail = ""
        if self.status is not None:
            try:
                detail = self.status() or ""
            except Exception:  # noqa: BLE001 - a status that cannot be read must not stop the build
                detail = ""
        return f"  {self.label}: {_clock(time.monotonic() - self.start)}" + (f"  {detail}" if detail else "")

    def _run(self):
        last_plain = time.monotonic()
        while not self._stop.wait(self.interval):
            if self.interactive:
                self.stream.write("\r" + self.line()[:160].ljust(100))
                self.stream.flush()
            elif time.monotonic() - last_plain >= PLAIN_EVERY:
                last_plain = time.monotonic()
                print(self.line(), file=self.stream, flush=True)

    def __enter__(self):
        self.start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        self._thread.join()
        if self.interactive:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()
        return False

    @property
    def seconds(self):
        return time.monotonic() - self.start
