"""Exceptions of board builds a user can cause (kept import-light for ``dlgn.errors``)."""

__all__ = ["BoardError"]


class BoardError(Exception):
    """A board build that cannot run or did not succeed: unknown board, missing tool, a design
    that does not fit the device or misses timing, a serial port that does not answer."""
