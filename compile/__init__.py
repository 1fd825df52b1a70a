"""Compiler: discretized netlist IR, optimization passes, golden model, lowering (DESIGN §3, §5)."""
