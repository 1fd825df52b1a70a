"""Exceptions of the simulation checks that a user can cause (kept import-light for ``dlgn.errors``)."""

__all__ = ["SimError"]


class SimError(Exception):
    """A simulation check that cannot run (missing build, tool or test set) or that failed
    (a mismatch against the golden model, an accuracy that differs from the trained one)."""
