"""The boards ``dlgn bitstream`` knows: amaranth-boards platforms plus what the toolchain needs."""

from dataclasses import dataclass

from .errors import BoardError

__all__ = ["Board", "BOARDS", "ALIASES", "get_board", "board_names"]


@dataclass(frozen=True)
class Board:
    """A target board: its amaranth-boards platform (by module and class name, imported lazily),
    FPGA family, clock, and the device's size (used only to refuse a design that cannot fit
    before spending minutes in synthesis; the report takes the figures from nextpnr)."""

    name: str
    module: str
    platform_class: str
    family: str            # "ecp5" or "ice40"
    device: str
    clock: str             # the oscillator's resource name
    clock_mhz: float
    lut4: int              # LUT4 (logic cells) on the device
    bram_bits: int         # block RAM bits
    leds: int

    def platform(self):
        import importlib

        return getattr(importlib.import_module(self.module), self.platform_class)()


def _ulx3s(size, lut4, brams):
    return Board(f"ulx3s-{size.lower()}", "amaranth_boards.ulx3s", f"ULX3S_{size}_Platform", "ecp5",
                 f"LFE5U-{size}", "clk25", 25.0, lut4, brams * 18432, 8)


BOARDS = {b.name: b for b in [
    _ulx3s("12F", 12288, 32),
    _ulx3s("25F", 24288, 56),
    _ulx3s("45F", 43848, 108),
    _ulx3s("85F", 83640, 208),
    Board("icebreaker", "amaranth_boards.icebreaker", "ICEBreakerPlatform", "ice40", "iCE40UP5K", "clk12", 12.0,
          5280, 30 * 4096, 2),
]}

ALIASES = {"ulx3s": "ulx3s-85f", "icebreaker-up5k": "icebreaker", "up5k": "icebreaker"}


def board_names():
    return sorted(BOARDS) + sorted(ALIASES)


def get_board(name):
    """The :class:`Board` called ``name`` (case-insensitive, aliases allowed)."""
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in BOARDS:
        known = ", ".join(f"{n} (= {ALIASES[n]})" if n in ALIASES else n for n in board_names())
        raise BoardError(f"unknown board {name!r}; known boards: {known}")
    return BOARDS[key]
