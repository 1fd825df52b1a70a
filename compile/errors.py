"""Exceptions of the compiler that a user can cause (kept import-light for ``dlgn.errors``)."""

__all__ = ["CompileError"]


class CompileError(Exception):
    """A compile that cannot proceed (bad option, failed check, missing tool)."""
