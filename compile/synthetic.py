"""Random netlists for tests and benchmarks (no training needed)."""

import numpy as np

from .netlist import InputEncoding, Netlist

__all__ = ["random_netlist"]


def random_netlist(in_bits=24, widths=(40, 30, 20), classes=4, arities=(1, 2, 3, 4, 5, 6), seed=0,
                   degenerate=0.2, reach_back=0.2, encoding=False):
    """A layered random netlist.

    Gate ``g`` of layer ``l`` draws its arity from ``arities`` and its inputs from layer
    ``l - 1`` (with probability ``reach_back`` from any earlier signal, constants included, and
    it may read one signal twice). A share ``degenerate`` of gates gets a table that the passes
    can simplify (pass-through, inverter, constant, an ignored input, or a copy of the previous
    gate), so that every pass has work to do. The last layer is split into ``classes``
    contiguous groups (its width must be a multiple of ``classes``). With ``encoding`` the input
    bits get a random thermometer encoding of 8-bit features (3 bits per feature)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    if widths[-1] % classes:
        raise ValueError(f"last width {widths[-1]} is not a multiple of {classes} classes")
    base = 2 + in_bits
    gates = []
    previous = list(range(2, base))
    for width in widths:
        first = base + len(gates)
        for _ in range(width):
            gid = base + len(gates)
            n = int(rng.choice(arities))
            inputs = []
            for _ in range(n):
                if rng.random() < reach_back:
                    inputs.append(int(rng.integers(0, gid)))
                else:
                    inputs.append(int(previous[rng.integers(len(previous))]))
            table = int(rng.integers(0, 1 << min(1 << n, 62))) | (int(rng.integers(0, 1 << 62)) << 62 if n == 6 else 0)
            table &= (1 << (1 << n)) - 1
            if rng.random() < degenerate:
                kind = int(rng.integers(5))
                if kind == 0:  # pass-through of input 0
                    table = sum(1 << a for a in range(1 << n) if a & 1)
                elif kind == 1:  # inverter of input 0
                    table = sum(1 << a for a in range(1 << n) if not a & 1)
                elif kind == 2:  # constant
                    table = int(rng.integers(2)) * ((1 << (1 << n)) - 1)
                elif kind == 3 and n > 1:  # ignores its last input
                    half = 1 << (n - 1)
                    low = table & ((1 << half) - 1)
                    table = low | (low << half)
                elif kind == 4 and gates:  # duplicate the previous gate, inputs permuted
                    p_inputs, p_table = gates[-1]
                    gates.append((tuple(reversed(p_inputs)), _reverse_inputs(p_table, len(p_inputs))))
                    continue
            gates.append((tuple(inputs), table))
        previous = list(range(first, base + len(gates)))
    per_class = widths[-1] // classes
    groups = [previous[c * per_class:(c + 1) * per_class] for c in range(classes)]
    enc = None
    if encoding:
        features = -(-in_bits // 3)
        thresholds = np.sort(rng.choice(255, size=(features, 3), replace=True), axis=1) + np.arange(3)
        enc = InputEncoding.from_thresholds(thresholds, 8)
        enc = InputEncoding(enc.features, 8, enc.bits[:in_bits])
    return Netlist(in_bits, gates, groups, enc, {"synthetic": {"seed": seed, "widths": list(widths)}})


def _reverse_inputs(table, n):
    out = 0
    for a in range(1 << n):
        if (table >> a) & 1:
            b = int(format(a, f"0{n}b")[::-1], 2) if n else 0
            out |= 1 << b
    return out
