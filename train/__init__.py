"""Trainer: datasets, encoding, logic layers, training runs (DESIGN §2, §3)."""
