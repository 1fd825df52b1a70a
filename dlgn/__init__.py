"""dlgn: learn logic-gate networks and put them on FPGAs."""

__version__ = "0.1.0"
