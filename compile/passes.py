"""Function-preserving optimization passes on the netlist IR.

Every pass returns a new :class:`~dlgn.compile.netlist.Netlist` whose class scores equal the
input's on every input vector (the test suite proves it with the golden model); gates keep their
relative order, so ids stay topological.

- :func:`simplify`: constant propagation and input pruning. Constant inputs are folded into the
  table, a signal read twice becomes one input, inputs the table does not depend on are dropped;
  a gate left with no input becomes a constant, a pass-through becomes a wire (so the
  pass-through gates of residual initialization vanish). Constant-0 group members are dropped.
- :func:`remove_dead`: drops gates that reach no class group.
- :func:`strash`: structural hashing; gates with the same table on the same inputs (in any
  order) become one.
- :func:`pack_luts`: merges gates into their readers while the merged function still has at
  most ``k`` inputs, which lowers the LUT count by one per merged gate.
"""

from . import tables as T
from .netlist import CONST0, CONST1, Netlist

__all__ = ["simplify", "remove_dead", "strash", "pack_luts", "optimize", "PASS_NAMES"]

PASS_NAMES = ("simplify", "remove_dead", "strash", "pack_luts")


def _rebuild(netlist, gates, alias, groups=None):
    """New netlist from ``gates`` (a list of ``(inputs, table)`` in old ids, ``None`` for removed
    gates) where ``alias`` maps old ids to old ids of kept signals; renumbers the kept gates."""
    base = netlist.first_gate
    new_id = list(range(base)) + [None] * len(gates)
    kept = []
    for g, gate in enumerate(gates):
        if gate is not None:
            new_id[base + g] = base + len(kept)
            kept.append(gate)

    def resolve(s):
        s = alias.get(s, s)
        return new_id[s]

    new_gates = [(tuple(resolve(i) for i in inputs), table) for inputs, table in kept]
    groups = netlist.groups if groups is None else groups
    new_groups = [[resolve(s) for s in group] for group in groups]
    return Netlist(netlist.in_bits, new_gates, new_groups, netlist.encoding, netlist.source)


def _reduce(inputs, table, const_value):
    """Fold constants and repeated inputs, drop inputs the table ignores.

    ``const_value(s)`` is 0/1 for a constant signal and ``None`` otherwise. Returns
    ``(support, table)`` with distinct, non-constant ``support``."""
    support = []
    for s in inputs:
        if const_value(s) is None and s not in support:
            support.append(s)
    m = len(support)
    if m != len(inputs) or len(set(inputs)) != len(inputs):
        patterns = []
        for s in inputs:
            c = const_value(s)
            patterns.append(T.variable(support.index(s), m) if c is None else (T.full(m) if c else 0))
        table = T.evaluate(table, len(inputs), patterns, m)
    for i in range(m - 1, -1, -1):
        if not T.depends_on(table, m, i):
            table = T.drop_input(table, m, i)
            del support[i]
            m -= 1
    return support, table


def simplify(netlist):
    """Constant propagation and removal of inputs a table does not depend on."""
    base = netlist.first_gate
    alias = {}  # old id -> old id (constants, inputs or kept gates)
    out = []

    def const_value(s):
        return s if s in (CONST0, CONST1) else None

    for g, (inputs, table) in enumerate(netlist.gates):
        gid = base + g
        inputs = [alias.get(s, s) for s in inputs]
        support, table = _reduce(inputs, table, const_value)
        if not support:
            alias[gid] = CONST1 if table & 1 else CONST0
            out.append(None)
        elif len(support) == 1 and table == 0b10:
            alias[gid] = support[0]
            out.append(None)
        else:
            out.append((tuple(support), table))
    groups = [[s for s in (alias.get(s, s) for s in group) if s != CONST0] for group in netlist.groups]
    return _rebuild(netlist, out, alias, groups)


def remove_dead(netlist):
    """Remove gates whose output reaches no class group."""
    base = netlist.first_gate
    live = [False] * netlist.signals
    for group in netlist.groups:
        for s in group:
            live[s] = True
    for g in range(len(netlist.gates) - 1, -1, -1):
        if live[base + g]:
            for s in netlist.gates[g][0]:
                live[s] = True
    gates = [gate if live[base + g] else None for g, gate in enumerate(netlist.gates)]
    return _rebuild(netlist, gates, {})


def _canonical(inputs, table):
    """Inputs sorted by id with the table permuted to match."""
    order = sorted(range(len(inputs)), key=lambda j: inputs[j])
    if order == list(range(len(inputs))):
        return tuple(inputs), table
    n = len(inputs)
    position = {old: new for new, old in enumerate(order)}
    patterns = [T.variable(position[j], n) for j in range(n)]
    return tuple(inputs[j] for j in order), T.evaluate(table, n, patterns, n)


def strash(netlist):
    """Structural hashing: one gate per (set of inputs, function)."""
    base = netlist.first_gate
    alias = {}
    seen = {}
    out = []
    for g, (inputs, table) in enumerate(netlist.gates):
        key = _canonical([alias.get(s, s) for s in inputs], table)
        first = seen.get(key)
        if first is None:
            seen[key] = base + g
            out.append(key)
        else:
            alias[base + g] = first
            out.append(None)
    return _rebuild(netlist, out, alias)


def _merge(reader_inputs, reader_table, position, inner_inputs, inner_table):
    """Substitute the gate ``(inner_inputs, inner_table)`` for input ``position`` of the reader.

    Returns ``(inputs, table)`` of the merged function over the union of both supports."""
    support = [s for j, s in enumerate(reader_inputs) if j != position]
    for s in inner_inputs:
        if s not in support:
            support.append(s)
    m = len(support)
    inner = T.evaluate(inner_table, len(inner_inputs), [T.variable(support.index(s), m) for s in inner_inputs], m)
    patterns = [inner if j == position else T.variable(support.index(s), m) for j, s in enumerate(reader_inputs)]
    table = T.evaluate(reader_table, len(reader_inputs), patterns, m)
    return _reduce(support, table, lambda s: s if s in (CONST0, CONST1) else None)


def pack_luts(netlist, k):
    """Merge gates into their readers where every merged function has at most ``k`` inputs.

    A gate is merged when it feeds no class group and *all* its readers can absorb it (each
    reader then computes the gate's function itself); the gate disappears, so each merge lowers
    the LUT count by one. Gates are visited from the inputs to the outputs; the pass repeats
    until no merge is possible. Levels can only fall: a reader's new inputs are older signals."""
    if not isinstance(k, int) or not 2 <= k <= T.MAX_ARITY:
        raise ValueError(f"LUT size must be an integer from 2 to {T.MAX_ARITY}, not {k!r}")
    base = netlist.first_gate
    gates = [list(g) for g in netlist.gates]  # [inputs tuple, table] per gate; None once merged
    readers = [set() for _ in range(netlist.signals)]
    for g, (inputs, _table) in enumerate(gates):
        for s in inputs:
            readers[s].add(base + g)
    in_group = set(s for group in netlist.groups for s in group)

    changed = True
    while changed:
        changed = False
        for g in range(len(gates)):
            gate = gates[g]
            gid = base + g
            if gate is None or gid in in_group or not readers[gid]:
                continue
            inner_inputs, inner_table = gate
            if len(inner_inputs) > k:
                continue
            merged = {}
            for r in readers[gid]:
                r_inputs, r_table = gates[r - base]
                union = set(r_inputs) | set(inner_inputs)
                union.discard(gid)
                if len(union) > k:
                    break
                result = (r_inputs, r_table)
                while gid in result[0]:  # a reader may read the gate more than once
                    result = _merge(result[0], result[1], result[0].index(gid), inner_inputs, inner_table)
                if not result[0]:  # the reader would become a constant: left to simplify
                    break
                merged[r] = result
            else:
                for r, (inputs, table) in merged.items():
                    for s in gates[r - base][0]:
                        readers[s].discard(r)
                    gates[r - base] = [tuple(inputs), table]
                    for s in inputs:
                        readers[s].add(r)
                for s in inner_inputs:
                    readers[s].discard(gid)
                gates[g] = None
                readers[gid].clear()
                changed = True
    out = [None if gate is None else tuple(gate) for gate in gates]
    return _rebuild(netlist, out, {})


def optimize(netlist, lut_size=4, passes=PASS_NAMES, check=None):
    """Run the pass pipeline; returns ``(netlist, records)`` with one record per pass:
    ``{"name", "gates", "depth", "estimated_luts"}`` (the first record describes the input).

    Passes that can leave gates unread are followed by :func:`remove_dead`. ``check(name,
    netlist)``, if given, is called after every pass (the compiler verifies each one there)."""
    records = [_record("discretized", netlist, lut_size)]
    steps = {
        "simplify": simplify,
        "remove_dead": remove_dead,
        "strash": strash,
        "pack_luts": lambda n: pack_luts(n, lut_size),
    }
    for name in passes:
        if name not in steps:
            raise ValueError(f"unknown pass {name!r}; passes are {', '.join(PASS_NAMES)}")
        netlist = steps[name](netlist)
        if name in ("simplify", "strash", "pack_luts"):
            netlist = remove_dead(netlist)
        if check is not None:
            check(name, netlist)
        records.append(_record(name, netlist, lut_size))
    return netlist, records


def _record(name, netlist, lut_size):
    return {"name": name, "gates": len(netlist.gates), "depth": netlist.depth,
            "estimated_luts": netlist.estimated_luts(lut_size)}
