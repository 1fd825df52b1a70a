"""Popcount plans for the group sum: how each class's bits are compressed, round by round, into its score.

A plan works on *wires*: bits of a known column (weight ``2**column``). A class starts with one
wire in column 0 per group member (plus the binary digits of its constant ``ones``), and every
round replaces some wires by fewer ones of the same total value, until each column holds at most
one wire: those are the score's bits. A round is one level of logic; :class:`~dlgn.hdl.group_sum.GroupSum`
registers every wire still alive after rounds ``S, 2S, ...``. No wire is ever created in a column
at or above the class's score width: a bit there would make the total exceed the largest
possible score, so it is identically 0 and is dropped.

Two kinds of cells:

- :class:`Lut`: one output bit as a truth table of up to four wires (one device LUT4);
- :class:`Chain`: a carry chain of :class:`Position` s, one per column from its first column up,
  with carry-in 0. Position ``k`` computes ``sum = propagate ^ carry`` into its output wire and
  passes on ``carry' = carry if propagate else generate``, where ``propagate`` is a truth table
  of the position's up to four input wires and ``generate`` one of its first two. That is the
  ECP5 ``CCU2C`` half-cell (its ``LUT2`` carry generator reads ``A`` and ``B``; a position with
  four inputs has ``generate(A, B) = propagate(A, B, 0, 0)``, which every table here satisfies),
  and with ``propagate = a ^ b, generate = a`` the full adder of every carry chain. The carry out
  of a chain's last position is identically 0 (the chain ends on an export position or at the score
  width), so chains may follow each other on one physical carry chain.

Kinds of plans (``POPCOUNT_PLANS``):

- ``"compressor"``: a Dadda tree of full adders (sum and carry, one LUT each) and half adders
  until every column holds at most two wires, then one round of carry chains (a ripple add).
  Portable: full-adder positions only (iCE40 ``SB_CARRY``).
- ``"chain"``: one round of full adders on column 0 (for groups of 10 or more), then rounds of
  carry chains; besides full-adder positions, a pair of positions may take four wires of one
  column, or three of one and one (or none) of the next, where the second position reads the
  first one's wires again (the ECP5 cell's four inputs). Each chain starts at the lowest column
  with two wires left and climbs while columns have wires.

Cost. Every cell has one output wire, and a position can add at most two wires of its column to
the carry it receives (its sum and carry out hold at most 3 of its weight); a pair of positions
at most four. Summing ``n`` bits retires ``n - width`` wires, every chain that does not reach the
score width ends on an export position, and column 0 sheds at most three wires per chain. So
these cells cost more than one LUT4-equivalent per summed bit (the "1/3 LUT4 per bit" floor
holds only for a parity): an integer program over the cells of this module (counts per round and
column, carries conserved; ``bench/popcount_bound.py``) finds 1.61 (100 bits, 7 rounds) and 1.70
(800 bits, 10 rounds) per bit at best.
Measured on ECP5, 10 classes x 800 bits, S = 1 (``bench/popcount.py``: LUT4-equivalents per summed
bit from ``synth_ecp5``, then ``TRELLIS_COMB`` per bit after nextpnr's packing, which adds two
``CCU2C`` to every physical carry chain; Fmax at S = 1 / S = 2): the reference adder tree 2.79,
2.87, 232 / 136 MHz; ``"compressor"`` 2.04, 2.04, 246 / 190 MHz, with 2.5 times the adder's
flip-flops (17 levels); ``"chain"`` 1.76, 2.01, 180 / 116 MHz, with 0.9 times its flip-flops
(9 levels, the adder's 10).

:func:`plan_class` builds a class's plan; :func:`evaluate_plan` evaluates one on given bits (the
pure-Python reference the tests compare the hardware against); :func:`check_plan` proves a plan
computes the popcount for every input (cell by cell, exhaustively: what ``dlgn bitstream`` checks
before it builds a plan onto a board).
"""

from collections import deque
from dataclasses import dataclass

from amaranth.hdl import Const, Mux, Signal

from .core import lut_expression

__all__ = ["POPCOUNT_PLANS", "Position", "Chain", "Lut", "ClassPlan", "plan_class", "evaluate_plan",
           "check_plan", "position_value", "chain_logic"]

POPCOUNT_PLANS = ("compressor", "chain")

#: ``"chain"`` starts with a round of full adders on column 0 from this group size on (measured
#: on the plan's cell count: it pays from about 10 wires; 800 wires: 1.76 instead of 1.86 LUT4 per bit).
CHAIN_FULL_ADDERS_FROM = 10


@dataclass(frozen=True)
class Position:
    """One carry-chain position: ``inputs`` (wire ids, at most 4), ``propagate`` (truth table
    over ``inputs``, bit ``a = sum_j x_j 2**j``), ``generate`` (truth table over ``inputs[:2]``)
    and its sum ``output`` wire (``None``: the sum is not used)."""
    inputs: tuple
    propagate: int
    generate: int
    output: int


@dataclass(frozen=True)
class Chain:
    """A carry chain of positions in consecutive columns, carry-in 0, carry out identically 0."""
    positions: tuple


@dataclass(frozen=True)
class Lut:
    """One output wire as a truth table of up to 4 input wires."""
    inputs: tuple
    table: int
    output: int


@dataclass
class ClassPlan:
    """A class's plan: ``columns[w]`` is wire ``w``'s column; wires ``0 .. len(sources) - 1`` are
    the inputs (``sources[w]``: a position in ``in_bits``, or ``None`` for a constant 1);
    ``rounds[r]`` the cells of round ``r + 1``; ``alive[r]`` the wires alive after round ``r + 1``
    (``alive[-1]`` = ``result`` wires); ``result[k]`` the wire of score bit ``k`` (``None``: 0)."""
    width: int
    columns: list
    sources: list
    rounds: list
    alive: list
    result: list

    @property
    def levels(self):
        return len(self.rounds)

    def cells(self):
        for cells in self.rounds:
            yield from cells

    @property
    def positions(self):
        """Carry-chain positions (each half a ``CCU2C``, one LUT4-equivalent)."""
        return sum(len(c.positions) for c in self.cells() if isinstance(c, Chain))

    @property
    def luts(self):
        return sum(1 for c in self.cells() if isinstance(c, Lut))


def _bit(table, address):
    return (table >> address) & 1


def position_value(position, bits, carry):
    """``(sum, carry out)`` of a position for the input values ``bits`` and carry-in ``carry``."""
    address = sum(b << j for j, b in enumerate(bits))
    p = _bit(position.propagate, address)
    g = _bit(position.generate, address & 3)
    return p ^ carry, carry if p else g


# Position tables. Single positions: (inputs, propagate, generate).
_XOR2, _A = 0x6, 0xA            # a ^ b; generate a (a == b when not propagating)
_BUF = 0x2                      # one wire: propagate a, generate 0 (a half adder with the carry)
# Pairs of positions in columns j, j + 1 (derived by exhaustive search, checked by the tests):
# (wires of column j, wires of column j + 1) -> (propagate, generate) of position j over its
# wires x, and (input order, propagate, generate) of position j + 1 over x + y.
_PAIRS = {
    (4, 0): ((0x6996, 0x6), ((0, 1, 2, 3), 0x7888, 0x8)),
    (3, 1): ((0x96, 0x0), ((0, 3, 1, 2), 0x366C, 0xC)),
    (3, 0): ((0x96, 0x0), ((0, 1, 2), 0xE8, 0x0)),
}
_DADDA = [2]
while _DADDA[-1] < 1 << 20:
    _DADDA.append(_DADDA[-1] * 3 // 2)


class _Builder:
    """Wires are taken from each column in the order of their *key*, the lowest group index
    they depend on, so that a cell adds up neighbouring parts of the group: a tree-like netlist
    that places locally. (Which wires a cell takes changes no count.)"""

    def __init__(self, members, ones):
        self.width = (len(members) + ones).bit_length()
        self.columns, self.sources, self.keys = [], [], []
        for k, p in enumerate(members):
            self.columns.append(0)
            self.sources.append(p)
            self.keys.append(k)
        for k in range(ones.bit_length()):
            if ones >> k & 1:
                self.columns.append(k)
                self.sources.append(None)
                self.keys.append(len(members))
        self.rounds, self.alive = [], []
        self.heights = [deque() for _ in range(self.width)]
        for w, col in enumerate(self.columns):
            self.heights[col].append(w)
        self.key = 0  # key of the wires the cell being built makes

    def wire(self, column):
        self.columns.append(column)
        self.keys.append(self.key)
        return len(self.columns) - 1

    def start_round(self):
        self.heights = [deque(sorted(h, key=self.keys.__getitem__)) for h in self.heights]

    def done(self):
        return all(len(h) <= 1 for h in self.heights)

    def finish_round(self, cells, produced):
        for col, wires in enumerate(produced):
            self.heights[col].extend(wires)
        self.rounds.append(cells)
        self.alive.append([w for h in self.heights for w in h])

    def plan(self):
        if not self.alive:
            self.alive.append([w for h in self.heights for w in h])
        result = [h[0] if h else None for h in self.heights]
        return ClassPlan(self.width, self.columns, self.sources, self.rounds, self.alive, result)

    # ------------------------------------------------------------------ carry chains

    def chain_round(self, pairs):
        """One round of carry chains: each starts at the lowest column that still has two wires
        and takes as many wires per column as its positions can, up the columns, until a column
        has none (an export position passes the carry out as a wire) or the score width."""
        self.start_round()
        avail, width = self.heights, self.width
        produced = [[] for _ in range(width)]
        cells = []

        def take(col, n):
            return tuple(avail[col].popleft() for _ in range(n))

        while True:
            start = next((j for j in range(width) if len(avail[j]) >= 2), None)
            if start is None:
                break
            self.key = self.keys[avail[start][0]]
            positions, j = [], start
            while j < width:
                a, n = len(avail[j]), (len(avail[j + 1]) if j + 1 < width else 0)
                pair = None
                if pairs and j + 1 < width:  # thresholds tuned on the plan's cell count (31..8000 wires)
                    if a >= 4 and a >= n + 2:
                        pair = (4, 0)
                    elif a >= 3 and a >= 2 * n - 1:
                        pair = (3, min(n, 1))
                if pair is not None:
                    xs, ys = take(j, pair[0]), take(j + 1, pair[1])
                    (p0, g0), (order, p1, g1) = _PAIRS[pair]
                    ins = xs + ys
                    out0, out1 = self.wire(j), self.wire(j + 1)
                    positions += [Position(xs, p0, g0, out0), Position(tuple(ins[k] for k in order), p1, g1, out1)]
                    produced[j].append(out0)
                    produced[j + 1].append(out1)
                    j += 2
                    continue
                k = min(a, 2)
                if k == 0:
                    out = self.wire(j)
                    positions.append(Position((), 0, 0, out))
                    produced[j].append(out)
                    break
                xs = take(j, k)
                out = self.wire(j)
                table = {1: (_BUF, 0), 2: (_XOR2, _A)}[k]
                positions.append(Position(xs, *table, out))
                produced[j].append(out)
                j += 1
            cells.append(Chain(tuple(positions)))
        self.finish_round(cells, produced)

    # ------------------------------------------------------------------ LUT compressors

    def full_adder(self, xs, j, cells, produced):
        self.key = min(self.keys[w] for w in xs)
        s = self.wire(j)
        cells.append(Lut(xs, 0x96 if len(xs) == 3 else 0x6, s))
        produced[j].append(s)
        if j + 1 < self.width:
            c = self.wire(j + 1)
            cells.append(Lut(xs, 0xE8 if len(xs) == 3 else 0x8, c))
            produced[j + 1].append(c)

    def column0_round(self):
        """Full adders on column 0, three wires at a time."""
        self.start_round()
        produced = [[] for _ in range(self.width)]
        cells = []
        while len(self.heights[0]) >= 3:
            self.full_adder(tuple(self.heights[0].popleft() for _ in range(3)), 0, cells, produced)
        self.finish_round(cells, produced)

    def dadda_round(self, target):
        """One round of full and half adders (one LUT per sum and per carry bit) that brings every
        column to at most ``target`` wires (Dadda's schedule: carries land in the next round)."""
        self.start_round()
        avail, width = self.heights, self.width
        produced = [[] for _ in range(width)]
        cells = []
        for j in range(width):
            while len(avail[j]) + len(produced[j]) > target:
                excess = len(avail[j]) + len(produced[j]) - target
                if len(avail[j]) < 2:
                    break
                k = 3 if excess >= 2 and len(avail[j]) >= 3 else 2
                self.full_adder(tuple(avail[j].popleft() for _ in range(k)), j, cells, produced)
        self.finish_round(cells, produced)


def plan_class(kind, members, ones=0):
    """The :class:`ClassPlan` of a class with group ``members`` (positions in ``in_bits``,
    repeats allowed) and ``ones`` constant-1 members, for plan kind ``kind``."""
    if kind not in POPCOUNT_PLANS:
        raise ValueError(f"unknown popcount plan {kind!r}; known: {', '.join(POPCOUNT_PLANS)}")
    b = _Builder(list(members), ones)
    if kind == "compressor":
        while max((len(h) for h in b.heights), default=0) > 2:
            height = max(len(h) for h in b.heights)
            b.dadda_round(max(d for d in _DADDA if d < height))
    elif b.heights and len(b.heights[0]) >= CHAIN_FULL_ADDERS_FROM:
        b.column0_round()
    while not b.done():
        b.chain_round(pairs=kind == "chain")
    return b.plan()


def evaluate_plan(plan, bits):
    """The score the plan computes for the input values ``bits`` (indexed by ``in_bits``
    position), evaluating every cell as the hardware does."""
    value = {}
    for w, source in enumerate(plan.sources):
        value[w] = 1 if source is None else int(bits[source])
    for cells in plan.rounds:
        for cell in cells:
            if isinstance(cell, Lut):
                address = sum(value[w] << j for j, w in enumerate(cell.inputs))
                value[cell.output] = _bit(cell.table, address)
            else:
                carry = 0
                for position in cell.positions:
                    s, carry = position_value(position, [value[w] for w in position.inputs], carry)
                    if position.output is not None:
                        value[position.output] = s
                assert carry == 0, "a chain's carry out must be 0"
    return sum(value[w] << k for k, w in enumerate(plan.result) if w is not None)


def check_plan(plan):
    """Prove that ``plan`` computes the number of ones among its input wires (plus its constant
    wires) for every input, or raise ``ValueError`` naming the first wrong cell. Returns the number
    of cells checked.

    The proof is arithmetic, so it does not grow with the group: the *weighted sum* of the wires
    alive (``sum value(w) * 2**column(w)``) starts as the score and must be kept by every round.
    The LUTs of a round that read the same wires form one compressor, checked over all ``2**k``
    values of its ``k <= 4`` inputs: its outputs must hold the weighted sum of its inputs. A chain
    is checked position by position over its inputs and carry in (``sum + 2 carry_out`` = inputs
    + carry in, in the position's weight), and its last carry out must be 0 for every input. A
    bit a cell would put at or above the score width (a dropped carry) is 0 because the weighted
    sum of all wires never exceeds the largest score, which is below ``2**width``. Then every
    round keeps the weighted sum, and after the last one it is the score bits'. Wires are checked
    to be made before they are read, read once, and the result to be one wire per column."""
    columns, width = plan.columns, plan.width
    alive = {w for w, _s in enumerate(plan.sources)}
    checked = 0

    def fail(message):
        raise ValueError(f"popcount plan: {message}")

    for r, cells in enumerate(plan.rounds, start=1):
        read, made = [], []
        luts = {}
        for cell in cells:
            if isinstance(cell, Lut):
                luts.setdefault(tuple(cell.inputs), []).append(cell)
        for inputs, group in luts.items():
            read += inputs
            if len(inputs) > 4:
                fail(f"round {r}: a LUT reads {len(inputs)} wires")
            for a in range(1 << len(inputs)):
                value_in = sum(((a >> j) & 1) << columns[w] for j, w in enumerate(inputs))
                value_out = sum(((c.table >> a) & 1) << columns[c.output] for c in group)
                if value_in != value_out and value_in < (1 << width):
                    fail(f"round {r}: the LUTs reading wires {inputs} give {value_out} for inputs worth {value_in}")
            made += [c.output for c in group]
            checked += len(group)
        for cell in cells:
            if isinstance(cell, Lut):
                continue
            positions = cell.positions
            for k in range(1, len(positions)):
                if columns[positions[k].output] != columns[positions[k - 1].output] + 1:
                    fail(f"round {r}: carry-chain positions {k - 1} and {k} are not in consecutive columns")
            # Blocks of positions: a position that reads wires of a lower column than its own (the
            # second of a pair) is checked together with the ones before it.
            blocks = []
            for position in positions:
                col = columns[position.output]
                if blocks and any(columns[w] < col for w in position.inputs):
                    blocks[-1].append(position)
                else:
                    blocks.append([position])
            carries = {0}
            for block in blocks:
                base = columns[block[0].output]
                wires = list(dict.fromkeys(w for p in block for w in p.inputs))
                if len(wires) > 8 or any(columns[w] < base for w in wires):
                    fail(f"round {r}: a carry-chain block in column {base} reads {len(wires)} wires or a lower column")
                nxt = set()
                for a in range(1 << len(wires)):
                    value = {w: (a >> j) & 1 for j, w in enumerate(wires)}
                    value_in = sum(v << (columns[w] - base) for w, v in value.items())
                    for carry_in in carries:
                        carry, value_out = carry_in, 0
                        for i, position in enumerate(block):
                            bit, carry = position_value(position, [value[w] for w in position.inputs], carry)
                            value_out += bit << i
                        value_out += carry << len(block)
                        if value_out != value_in + carry_in:
                            fail(f"round {r}: the carry-chain positions in columns {base}..{base + len(block) - 1} "
                                 f"give {value_out} for inputs worth {value_in} and carry in {carry_in}")
                        nxt.add(carry)
                carries = nxt
                read += wires
                made += [p.output for p in block]
                checked += len(block)
            # The chain's last carry out is 0: an export position (no inputs, generate 0) makes none;
            # at the score width it would be worth 2**width, more than any score (see above).
            if carries != {0} and columns[positions[-1].output] + 1 < width:
                fail(f"round {r}: a chain ends in column {columns[positions[-1].output]} with a carry out that "
                     "can be 1")
        if len(read) != len(set(read)) or not set(read) <= alive:
            fail(f"round {r} reads a wire twice, or one that is not alive")
        alive = (alive - set(read)) | set(made)
        if r - 1 < len(plan.alive) and set(plan.alive[r - 1]) != alive:
            fail(f"round {r}: the wires alive after it are not the ones the plan registers")
    result = [w for w in plan.result if w is not None]
    if set(result) != alive or any(columns[w] != k for k, w in enumerate(plan.result) if w is not None):
        fail("the score bits are not one alive wire per column")
    if len(plan.result) != width:
        fail(f"the score has {len(plan.result)} bits, not {width}")
    return checked


def chain_logic(m, name, positions):
    """Add a carry chain to module ``m`` as plain logic (no device cells): ``positions`` lists
    ``(inputs, propagate, generate, out)`` with Amaranth values as inputs and a 1-bit ``out``
    signal each, carry-in 0 (the semantics of :class:`Position`)."""
    carry = Const(0, 1)
    for k, (inputs, propagate, generate, out) in enumerate(positions):
        if inputs:
            p = Signal(name=f"{name}_p{k}")
            m.d.comb += p.eq(lut_expression(propagate, list(inputs)))
        else:
            p = Const(propagate & 1, 1)
        m.d.comb += out.eq(p ^ carry)
        if k + 1 < len(positions):
            g = lut_expression(generate, list(inputs[:2])) if generate and inputs else Const(0, 1)
            nxt = Signal(name=f"{out.name}_co")  # the device cells name their carries the same
            m.d.comb += nxt.eq(Mux(p, carry, g))
            carry = nxt
