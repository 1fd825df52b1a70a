"""Amaranth components for the logic core, group sum, argmax, encoder and I/O (DESIGN §4).

- :class:`~dlgn.hdl.core.LogicCore`: one LUT function per gate, flat per level, a register
  stage every K levels;
- :class:`~dlgn.hdl.group_sum.GroupSum`: per-class popcount as a pipelined adder tree;
- :class:`~dlgn.hdl.argmax.Argmax`: comparison tree, lowest index wins ties;
- :class:`~dlgn.hdl.encoder.ThermometerEncoder`: raw features -> input bits;
- :class:`~dlgn.hdl.top.DlgnCore`: all of them in a row (the ``dlgn_core`` Verilog top).

The components take plain Python descriptions (gate lists in the netlist id convention) and
know nothing of PyTorch or of the compiler's classes.
"""
