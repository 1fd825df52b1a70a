"""Per-class popcount (group sum): a pipelined adder tree, or a compressor / carry-chain plan."""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .core import lut_expression
from .popcount import POPCOUNT_PLANS, Lut, chain_logic, plan_class

__all__ = ["GroupSum", "POPCOUNTS"]

#: Implementations of the popcount: the reference adder tree, then the plans of :mod:`.popcount`.
POPCOUNTS = ("adder",) + POPCOUNT_PLANS


def _check_stage_every(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{name} must be a non-negative integer, not {value!r}")


class GroupSum(wiring.Component):
    """Score of each class: the number of ones among its group's bits, plus a constant.

    ``groups[c]`` lists positions in ``in_bits`` (a position may appear more than once and in
    several groups); ``ones[c]`` counts constant-1 members. All classes share the depth
    ``tree_levels``; with ``stage_every = S > 0`` a register stage follows levels ``S, 2S, ...``.

    ``popcount`` chooses the implementation (all compute the same scores):

    - ``"adder"`` (the reference): every class is an adder tree of small adders written as
      Amaranth ``+``: level 1 adds the bits three at a time (full adders), each further level
      adds pairs of partial sums (widths grow by one bit per level, never wider than the largest
      possible sum). Yosys maps the adders (small ones to LUTs, wider ones to carry chains).
    - ``"compressor"``, ``"chain"``: the plans of :mod:`dlgn.hdl.popcount` (a level is one round
      of LUTs or carry chains). Each LUT goes through ``lut_cell(table, inputs, out)`` (see
      :func:`dlgn.boards.primitives.lut_cell_for`), and each class's carry chains of a round through
      ``carry_chain(chains)`` (:func:`dlgn.boards.primitives.carry_chain_for`), which returns the
      device cells or ``None``; without them (or on ``None``) they are plain logic, which any
      simulator runs. ``"chain"`` is built for the ECP5 ``CCU2C`` (four-input positions).

    Latency: ``tree_levels // S`` cycles for ``"adder"``, ``ceil(tree_levels / S)`` for a plan
    (0 when ``S = 0``): a plan whose last round does not end a stage registers its score bits
    after it, so that its last carry chain (the ripple add) does not join the argmax's first
    stage (measured on a digits net at K = S = 2, compressor: that path, 11.4 ns, set Fmax).

    Ports
    -----
    in_valid : In(1)
    in_bits : In(width)
        The group members (the logic core's outputs).
    out_valid : Out(1)
        ``in_valid`` delayed by the latency (reset to 0).
    out_scores : Out(classes * score_width)
        Class ``c``'s score in bits ``[c*score_width, (c+1)*score_width)`` (class 0 lowest).
    """

    def __init__(self, width, groups, ones=None, stage_every=0, *, popcount="adder", lut_cell=None,
                 carry_chain=None):
        if not isinstance(width, int) or width < 0:
            raise TypeError(f"width must be a non-negative integer, not {width!r}")
        groups = [list(g) for g in groups]
        if not groups:
            raise ValueError("a group sum needs at least one class")
        for c, group in enumerate(groups):
            for p in group:
                if not isinstance(p, int) or not 0 <= p < width:
                    raise ValueError(f"group {c} lists position {p!r}, outside in_bits of width {width}")
        ones = [0] * len(groups) if ones is None else list(ones)
        if len(ones) != len(groups) or not all(isinstance(o, int) and o >= 0 for o in ones):
            raise ValueError(f"ones must be {len(groups)} non-negative integers, not {ones!r}")
        _check_stage_every("stage_every", stage_every)
        if popcount not in POPCOUNTS:
            raise ValueError(f"popcount must be one of {', '.join(map(repr, POPCOUNTS))}, not {popcount!r}")
        self._popcount = popcount
        self._lut_cell = lut_cell
        self._carry_chain = carry_chain
        self._plans = None if popcount == "adder" else [plan_class(popcount, g, o) for g, o in zip(groups, ones)]
        self._width = width
        self._groups = groups
        self._ones = ones
        self._stage_every = stage_every
        self._max_scores = [len(g) + o for g, o in zip(groups, ones)]
        super().__init__({
            "in_valid": In(1),
            "in_bits": In(width),
            "out_valid": Out(1),
            "out_scores": Out(len(groups) * self.score_width),
        })

    @property
    def classes(self):
        return len(self._groups)

    @property
    def score_width(self):
        return max(1, max(self._max_scores).bit_length())

    @property
    def popcount(self):
        return self._popcount

    @property
    def tree_levels(self):
        """Levels of the deepest class: for ``"adder"`` 1 for the full adders, then the pairwise
        sums; for a plan its rounds."""
        if self._plans is not None:
            return max(plan.levels for plan in self._plans)
        deepest = 0
        for group, ones in zip(self._groups, self._ones):
            operands = -(-len(group) // 3) + (1 if ones else 0)
            levels = 0
            while operands > 1:
                operands = -(-operands // 2)
                levels += 1
            deepest = max(deepest, levels)
        return 1 + deepest

    @property
    def latency(self):
        s = self._stage_every
        if not s:
            return 0
        return -(-self.tree_levels // s) if self._plans is not None else self.tree_levels // s

    @property
    def adder_bits(self):
        """Bit-level adder cells of all trees. ``"adder"``: one per full adder of level 1, one per
        result bit of every pairwise sum (a size estimate of the output stage: on ECP5 roughly one
        LUT4, or half a ``CCU2C`` carry cell, each). A plan: its LUTs and carry-chain positions."""
        if self._plans is not None:
            return sum(plan.luts + plan.positions for plan in self._plans)
        total = 0
        for group, ones in zip(self._groups, self._ones):
            operands = [(1, 1)] * len(group)
            # level 1: three bits -> 2 bits
            level = []
            for i in range(0, len(operands), 3):
                chunk = operands[i:i + 3]
                total += 1 if len(chunk) > 1 else 0
                level.append(sum(v for v, _ in chunk))
            if ones:
                level.append(ones)
            while len(level) > 1:
                nxt = []
                for i in range(0, len(level) - 1, 2):
                    total += (level[i] + level[i + 1]).bit_length()
                    nxt.append(level[i] + level[i + 1])
                if len(level) % 2:
                    nxt.append(level[-1])
                level = nxt
        return total

    @property
    def estimated_luts(self):
        """LUT4-equivalents of the output stage (a ``CCU2C`` counts as two LUT4). A plan: exactly
        its cells, a carry-chain position being half a ``CCU2C`` (the ECP5 cells lay a round's
        chains end to end, so few halves stay unused; nextpnr adds two ``CCU2C`` per physical
        chain, see ``dlgn.boards.primitives.ECP5_CHAIN_POSITIONS``).
        ``"adder"``: :attr:`adder_bits` plus one per level-1 full adder (its sum and its carry are
        two LUTs); Yosys maps it to 1.4 to 1.7 times that on ECP5 (``bench/popcount.py``)."""
        if self._plans is not None:
            return self.adder_bits
        return self.adder_bits + sum(len(g) // 3 for g in self._groups)

    @staticmethod
    def _register_stage(m, values, stage, valid, wires):
        """Register stage ``stage`` of a plan: every non-constant wire of ``wires[c]`` (``None``:
        no wire) of each class ``c``, and the valid bit; returns the registered valid."""
        for c, class_wires in enumerate(wires):
            for w in class_wires:
                if w is None or isinstance(values[c][w], Const):
                    continue
                reg = Signal(name=f"c{c}_w{w}_p{stage}", reset_less=True)
                m.d.sync += reg.eq(values[c][w])
                values[c][w] = reg
        next_valid = Signal(name=f"sum_valid_p{stage}")
        m.d.sync += next_valid.eq(valid)
        return next_valid

    def elaborate(self, platform):
        if self._plans is not None:
            return self._elaborate_plans()
        m = Module()
        s = self._stage_every
        stage = 0

        # operands per class: list of (value, max_value)
        trees = []
        for c, group in enumerate(self._groups):
            operands = []
            for i in range(0, len(group), 3):
                chunk = [self.in_bits[p] for p in group[i:i + 3]]
                if len(chunk) == 1:
                    operands.append((chunk[0], 1))
                    continue
                total = Signal(range(len(chunk) + 1), name=f"c{c}_l1_{i // 3}")
                expr = chunk[0] + chunk[1] + (chunk[2] if len(chunk) == 3 else 0)
                m.d.comb += total.eq(expr)
                operands.append((total, len(chunk)))
            trees.append(operands)

        valid = self.in_valid

        def register_stage(level):
            nonlocal valid, stage
            stage += 1
            for c, operands in enumerate(trees):
                for i, (value, top) in enumerate(operands):
                    if isinstance(value, Const):
                        continue
                    reg = Signal(range(top + 1), name=f"c{c}_l{level}_{i}_p{stage}", reset_less=True)
                    m.d.sync += reg.eq(value)
                    operands[i] = (reg, top)
            next_valid = Signal(name=f"sum_valid_p{stage}")
            m.d.sync += next_valid.eq(valid)
            valid = next_valid

        for c, ones in enumerate(self._ones):
            if ones:
                trees[c].append((Const(ones, range(ones + 1)), ones))
        if s and s == 1:
            register_stage(1)
        for level in range(2, self.tree_levels + 1):
            for c, operands in enumerate(trees):
                nxt = []
                for i in range(0, len(operands) - 1, 2):
                    (a, ta), (b, tb) = operands[i], operands[i + 1]
                    total = Signal(range(ta + tb + 1), name=f"c{c}_l{level}_{i // 2}")
                    m.d.comb += total.eq(a + b)
                    nxt.append((total, ta + tb))
                if len(operands) % 2:
                    nxt.append(operands[-1])
                trees[c] = nxt
            if s and level % s == 0:
                register_stage(level)

        width = self.score_width
        scores = []
        for c, operands in enumerate(trees):
            score = Signal(width, name=f"score{c}")
            m.d.comb += score.eq(operands[0][0] if operands else 0)
            scores.append(score)
        m.d.comb += [self.out_valid.eq(valid)]
        for c, score in enumerate(scores):
            m.d.comb += self.out_scores[c * width:(c + 1) * width].eq(score)
        return m

    def _elaborate_plans(self):
        m = Module()
        s = self._stage_every
        values = []
        for plan in self._plans:
            values.append({w: Const(1, 1) if source is None else self.in_bits[source]
                           for w, source in enumerate(plan.sources)})
        valid = self.in_valid
        stage = 0
        for level in range(1, self.tree_levels + 1):
            for c, plan in enumerate(self._plans):
                if level <= plan.levels:
                    self._lower_round(m, f"c{c}", plan.rounds[level - 1], values[c], level)
            if s and level % s == 0:
                stage += 1
                valid = self._register_stage(m, values, stage, valid,
                                             [plan.alive[min(level, plan.levels) - 1] for plan in self._plans])
        if s and self.tree_levels % s:  # the score bits, after the last round
            stage += 1
            valid = self._register_stage(m, values, stage, valid, [plan.result for plan in self._plans])
        width = self.score_width
        m.d.comb += self.out_valid.eq(valid)
        for c, plan in enumerate(self._plans):
            bits = [values[c][w] if w is not None else Const(0, 1) for w in plan.result]
            m.d.comb += self.out_scores[c * width:(c + 1) * width].eq(Cat(*bits) if bits else 0)
        return m

    def _lower_round(self, m, name, cells, value, level):
        """Add one round of a class's plan to ``m``; ``value`` maps wire ids to Amaranth values
        (the round's outputs are added to it)."""
        chains = []
        for k, cell in enumerate(cells):
            if isinstance(cell, Lut):
                out = Signal(name=f"{name}_w{cell.output}")
                inputs = [value[w] for w in cell.inputs]
                lut = self._lut_cell(cell.table, inputs, out) if self._lut_cell else None
                if lut is None:
                    m.d.comb += out.eq(lut_expression(cell.table, inputs))
                else:
                    m.submodules[f"{name}_lut{cell.output}"] = lut
                value[cell.output] = out
                continue
            positions = [([value[w] for w in p.inputs], p.propagate, p.generate, Signal(name=f"{name}_w{p.output}"))
                         for p in cell.positions]
            for p, (_, _, _, out) in zip(cell.positions, positions):
                value[p.output] = out
            chains.append((f"{name}_l{level}_chain{k}", positions))
        # one class at a time: its chains may share physical carry chains, other classes' not
        carry_cells = self._carry_chain([p for _, p in chains]) if self._carry_chain and chains else None
        if carry_cells is None:
            for chain_name, positions in chains:
                chain_logic(m, chain_name, positions)
        else:
            for i, cell in enumerate(carry_cells):
                m.submodules[f"{name}_l{level}_carry{i}"] = cell
