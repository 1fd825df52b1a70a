"""The logic core: every gate of the network as one LUT function, flat per level."""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["LogicCore", "gate_levels", "check_gates"]

MAX_ARITY = 6


def check_gates(in_bits, gates):
    """Check a gate list in the netlist id convention (``0``/``1`` constants, ``2..in_bits+1``
    input bits, then the gates in order); raise ``ValueError`` naming the first bad gate."""
    base = 2 + in_bits
    for g, gate in enumerate(gates):
        try:
            inputs, table = gate
            inputs = tuple(inputs)
        except (TypeError, ValueError):
            raise TypeError(f"gate {g} must be an (inputs, table) pair, not {gate!r}") from None
        if not 1 <= len(inputs) <= MAX_ARITY:
            raise ValueError(f"gate {g} has {len(inputs)} inputs; a gate has 1 to {MAX_ARITY}")
        for s in inputs:
            if not isinstance(s, int) or not 0 <= s < base + g:
                raise ValueError(f"gate {g} (id {base + g}) reads {s!r}, which is not an earlier signal id")
        if not isinstance(table, int) or not 0 <= table < (1 << (1 << len(inputs))):
            raise ValueError(f"gate {g}: table {table!r} does not fit {1 << len(inputs)} bits")


def gate_levels(in_bits, gates):
    """Level of every id: 0 for constants and input bits, ``1 + max(level of inputs)`` for gates."""
    levels = [0] * (2 + in_bits)
    for inputs, _table in gates:
        levels.append(1 + max(levels[s] for s in inputs))
    return levels


def lut_expression(table, inputs):
    """An Amaranth expression of the truth ``table`` over the 1-bit values ``inputs``.

    One and two-input functions become logic operators; wider ones select bit ``Cat(inputs)`` of
    the table constant (a ``$shift`` cell, i.e. ``table >> {x_{n-1}, ..., x_0}`` in Verilog)."""
    n = len(inputs)
    if n == 1:
        a, = inputs
        return {0b00: Const(0, 1), 0b01: ~a, 0b10: a, 0b11: Const(1, 1)}[table]
    if n == 2:
        a, b = inputs
        return {
            0x0: Const(0, 1), 0x1: ~(a | b), 0x2: a & ~b, 0x3: ~b, 0x4: ~a & b, 0x5: ~a, 0x6: a ^ b, 0x7: ~(a & b),
            0x8: a & b, 0x9: ~(a ^ b), 0xA: a, 0xB: a | ~b, 0xC: b, 0xD: ~a | b, 0xE: a | b, 0xF: Const(1, 1),
        }[table]
    return Const(table, 1 << n).bit_select(Cat(*inputs), 1)


class LogicCore(wiring.Component):
    """A network of truth-table gates, one LUT function per gate, registered every K levels.

    Ids follow the netlist IR: ``0``/``1`` are the constants, ``2 .. in_bits + 1`` the input
    bits, then ``gates`` in order; each gate is ``(inputs, table)`` with table bit
    ``a = sum_j x_j 2**j`` the output for input pattern ``a``. Gates are generated flat, one
    1-bit signal ``g<id>`` per gate. With ``pipeline_every = K > 0`` a register stage follows
    levels ``K, 2K, ...`` (every signal still needed later is registered, input bits included);
    ``K = 0`` is purely combinational.

    Latency: ``depth // K`` cycles (0 when combinational); one sample per clock.

    ``lut_cell`` (optional, for board builds): a function ``lut_cell(table, inputs, out)`` that
    returns an ``Instance`` of a device LUT computing ``table`` over ``inputs`` into ``out``, or
    ``None`` to keep the logic expression for that gate (see ``dlgn.boards.primitives``).

    Ports
    -----
    in_valid : In(1)
        ``in_bits`` holds a sample.
    in_bits : In(in_bits)
        Input bit ``i`` (id ``i + 2``) is ``in_bits[i]``.
    out_valid : Out(1)
        ``in_valid`` delayed by the latency (reset to 0).
    out_bits : Out(len(outputs))
        ``out_bits[j]`` is the signal ``outputs[j]``, ``latency`` cycles after its sample.
    """

    def __init__(self, in_bits, gates, outputs, pipeline_every=0, lut_cell=None):
        if not isinstance(in_bits, int) or in_bits < 1:
            raise TypeError(f"in_bits must be a positive integer, not {in_bits!r}")
        gates = [(tuple(inputs), table) for inputs, table in gates]
        check_gates(in_bits, gates)
        total = 2 + in_bits + len(gates)
        outputs = list(outputs)
        for s in outputs:
            if not isinstance(s, int) or not 0 <= s < total:
                raise ValueError(f"output {s!r} is not a signal id (ids are 0..{total - 1})")
        if not isinstance(pipeline_every, int) or pipeline_every < 0:
            raise TypeError(f"pipeline_every must be a non-negative integer, not {pipeline_every!r}")
        self._in_bits = in_bits
        self._gates = gates
        self._outputs = outputs
        self._pipeline_every = pipeline_every
        self._lut_cell = lut_cell
        self._levels = gate_levels(in_bits, gates)
        super().__init__({
            "in_valid": In(1),
            "in_bits": In(in_bits),
            "out_valid": Out(1),
            "out_bits": Out(len(outputs)),
        })

    @property
    def depth(self):
        return max(self._levels, default=0)

    @property
    def pipeline_every(self):
        return self._pipeline_every

    @property
    def latency(self):
        """Cycles from ``in_bits`` to ``out_bits``."""
        return self.depth // self._pipeline_every if self._pipeline_every else 0

    def elaborate(self, platform):
        m = Module()
        in_bits, gates, levels, k = self._in_bits, self._gates, self._levels, self._pipeline_every
        base = 2 + in_bits
        depth = self.depth

        # The level after which a signal is last needed (outputs are needed after the last level).
        last_use = list(levels)
        for g, (inputs, _table) in enumerate(gates):
            for s in inputs:
                last_use[s] = max(last_use[s], levels[base + g])
        for s in self._outputs:
            last_use[s] = depth + 1

        value = [Const(0, 1), Const(1, 1)] + [self.in_bits[i] for i in range(in_bits)] + [None] * len(gates)
        by_level = [[] for _ in range(depth + 1)]
        for g in range(len(gates)):
            by_level[levels[base + g]].append(g)
        live = [s for s in range(2, base) if last_use[s] > 0]  # non-constant signals still needed
        valid = self.in_valid
        stage = 0
        for level in range(0, depth + 1):
            for g in by_level[level]:
                inputs, table = gates[g]
                out = Signal(name=f"g{base + g}")
                cell = self._lut_cell(table, [value[s] for s in inputs], out) if self._lut_cell else None
                if cell is None:
                    m.d.comb += out.eq(lut_expression(table, [value[s] for s in inputs]))
                else:
                    m.submodules[f"lut{base + g}"] = cell
                value[base + g] = out
                if last_use[base + g] > level:
                    live.append(base + g)
            if k and level and level % k == 0:
                stage += 1
                live = [s for s in live if last_use[s] > level]
                for s in live:
                    reg = Signal(name=f"{'g' if s >= base else 'x'}{s}_p{stage}", reset_less=True)
                    m.d.sync += reg.eq(value[s])
                    value[s] = reg
                next_valid = Signal(name=f"valid_p{stage}")
                m.d.sync += next_valid.eq(valid)
                valid = next_valid
        m.d.comb += [
            self.out_valid.eq(valid),
            self.out_bits.eq(Cat(*(value[s] for s in self._outputs))),
        ]
        return m
