"""Argmax over class scores as a pipelined comparison tree (lowest index wins ties)."""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Argmax"]


class Argmax(wiring.Component):
    """Index of the highest of ``classes`` unsigned scores; on a tie the lowest index wins.

    A binary tree: each node compares a left candidate (lower class indices) with a right one
    and keeps the right only when its score is strictly greater, which is the tie rule of
    DESIGN §2.8. The tree has ``tree_levels = ceil(log2(classes))`` levels; with
    ``stage_every = S > 0`` a register stage follows levels ``S, 2S, ...``. The scores travel
    alongside so that ``out_scores`` belongs to the same sample as ``out_class``.

    Latency: ``tree_levels // S`` cycles (0 when ``S = 0``).

    Ports
    -----
    in_valid : In(1)
    in_scores : In(classes * score_width)
        Class ``c``'s score in bits ``[c*score_width, (c+1)*score_width)``.
    out_valid : Out(1)
        ``in_valid`` delayed by the latency (reset to 0).
    out_class : Out(class_width)
        The winning class index; ``class_width = max(1, ceil(log2(classes)))``.
    out_scores : Out(classes * score_width)
        ``in_scores`` of the same sample.
    """

    def __init__(self, classes, score_width, stage_every=0):
        if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
            raise TypeError(f"classes must be a positive integer, not {classes!r}")
        if not isinstance(score_width, int) or isinstance(score_width, bool) or score_width < 1:
            raise TypeError(f"score_width must be a positive integer, not {score_width!r}")
        if not isinstance(stage_every, int) or isinstance(stage_every, bool) or stage_every < 0:
            raise TypeError(f"stage_every must be a non-negative integer, not {stage_every!r}")
        self._classes = classes
        self._score_width = score_width
        self._stage_every = stage_every
        super().__init__({
            "in_valid": In(1),
            "in_scores": In(classes * score_width),
            "out_valid": Out(1),
            "out_class": Out(self.class_width),
            "out_scores": Out(classes * score_width),
        })

    @property
    def classes(self):
        return self._classes

    @property
    def class_width(self):
        return max(1, (self._classes - 1).bit_length())

    @property
    def tree_levels(self):
        return (self._classes - 1).bit_length()

    @property
    def latency(self):
        return self.tree_levels // self._stage_every if self._stage_every else 0

    def elaborate(self, platform):
        m = Module()
        w, cw, s = self._score_width, self.class_width, self._stage_every
        candidates = [(self.in_scores[c * w:(c + 1) * w], Const(c, cw)) for c in range(self._classes)]
        scores = self.in_scores
        valid = self.in_valid
        stage = 0
        for level in range(1, self.tree_levels + 1):
            nxt = []
            for i in range(0, len(candidates) - 1, 2):
                (ls, li), (rs, ri) = candidates[i], candidates[i + 1]
                take_right = Signal(name=f"right_l{level}_{i // 2}")
                m.d.comb += take_right.eq(rs > ls)
                score = Signal(w, name=f"max_l{level}_{i // 2}")
                index = Signal(cw, name=f"arg_l{level}_{i // 2}")
                m.d.comb += [score.eq(Mux(take_right, rs, ls)), index.eq(Mux(take_right, ri, li))]
                nxt.append((score, index))
            if len(candidates) % 2:
                nxt.append(candidates[-1])
            candidates = nxt
            if s and level % s == 0:
                stage += 1
                registered = []
                for i, (score, index) in enumerate(candidates):
                    rs = Signal(w, name=f"max_l{level}_{i}_p{stage}", reset_less=True)
                    ri = Signal(cw, name=f"arg_l{level}_{i}_p{stage}", reset_less=True)
                    m.d.sync += [rs.eq(score), ri.eq(index)]
                    registered.append((rs, ri))
                candidates = registered
                delayed = Signal(len(scores), name=f"scores_p{stage}", reset_less=True)
                m.d.sync += delayed.eq(scores)
                scores = delayed
                next_valid = Signal(name=f"argmax_valid_p{stage}")
                m.d.sync += next_valid.eq(valid)
                valid = next_valid
        m.d.comb += [
            self.out_valid.eq(valid),
            self.out_class.eq(candidates[0][1]),
            self.out_scores.eq(scores),
        ]
        return m
