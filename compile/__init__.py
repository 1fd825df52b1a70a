"""Compiler: discretized netlist IR, optimization passes, golden model, lowering (DESIGN §3, §5).

- :mod:`~dlgn.compile.netlist`: the IR and its file format (``docs/netlist-format.md``);
- :mod:`~dlgn.compile.discretize`: trained run -> netlist;
- :mod:`~dlgn.compile.golden`: the bit-sliced golden evaluator;
- :mod:`~dlgn.compile.passes`: function-preserving optimizations (constants, dead gates,
  structural hashing, LUT packing);
- :mod:`~dlgn.compile.lower`: netlist -> :class:`dlgn.hdl.top.DlgnCore` -> RTLIL and Verilog;
- :mod:`~dlgn.compile.build`: ``dlgn compile`` (build directory and ``compile_report.json``).

Nothing is imported here, so that ``dlgn.errors`` stays cheap to import.
"""
