"""Amaranth components for the logic core, group sum, argmax, encoder and I/O (DESIGN §4)."""
