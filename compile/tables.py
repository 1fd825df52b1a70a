"""Truth-table arithmetic on Python integers (DESIGN §2.2).

A table of a gate with ``n`` inputs is an integer of ``2**n`` bits: bit ``a`` is the output for
the input pattern ``a = sum_j x_j * 2**j`` (input 0 is the least significant address bit).

Every transformation the passes need (fix an input to a constant, merge two identical inputs,
drop an input the table ignores, reorder inputs, substitute one gate into another) is one call
of :func:`evaluate`: the old table is evaluated on *patterns*, the tables of its old inputs
written over the new inputs. The pattern of new input ``i`` out of ``m`` is :func:`variable`.
"""

__all__ = ["MAX_ARITY", "size", "full", "variable", "evaluate", "depends_on", "drop_input", "support",
           "hex_digits"]

MAX_ARITY = 6


def size(n):
    """Number of table bits of an ``n``-input gate."""
    return 1 << n


def full(n):
    """The all-ones table over ``n`` inputs (the constant-1 pattern)."""
    return (1 << (1 << n)) - 1


_VARIABLES = {}


def variable(i, m):
    """Pattern of input ``i`` over ``m`` inputs: bit ``a`` is bit ``i`` of ``a``."""
    key = (i, m)
    pattern = _VARIABLES.get(key)
    if pattern is None:
        pattern = 0
        for a in range(1 << m):
            if (a >> i) & 1:
                pattern |= 1 << a
        _VARIABLES[key] = pattern
    return pattern


def evaluate(table, n, patterns, m):
    """Table of ``table`` (over ``n`` inputs) applied to ``patterns`` (one ``m``-input table per
    old input): the composed function as a table over the ``m`` new inputs.

    A multiplexer fold, most significant old input first; ``2**n - 1`` integer operations."""
    ones = full(m)
    level = [ones if (table >> a) & 1 else 0 for a in range(1 << n)]
    for j in range(n - 1, -1, -1):
        half = 1 << j
        p = patterns[j]
        level = [lo ^ ((lo ^ hi) & p) for lo, hi in zip(level[:half], level[half:])]
    return level[0]


def depends_on(table, n, i):
    """Whether the ``n``-input table changes with input ``i``."""
    shift = 1 << i
    low = full(n) & ~variable(i, n)
    return ((table ^ (table >> shift)) & low) != 0


def drop_input(table, n, i):
    """The table over the other ``n - 1`` inputs with input ``i`` fixed to 0 (the table must not
    depend on it for this to be the same function)."""
    patterns = [variable(j - (j > i), n - 1) if j != i else 0 for j in range(n)]
    return evaluate(table, n, patterns, n - 1)


def support(table, n):
    """Indices of the inputs the table depends on."""
    return [i for i in range(n) if depends_on(table, n, i)]


def hex_digits(n):
    """Hex digits of an ``n``-input table in the netlist file (at least one)."""
    return max(1, (1 << n) // 4)
