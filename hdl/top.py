"""``DlgnCore``: encoder (optional) -> logic core -> group sum -> argmax, one sample per clock."""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .argmax import Argmax
from .core import LogicCore, check_gates
from .encoder import ThermometerEncoder
from .group_sum import GroupSum

__all__ = ["DlgnCore", "verilog_ports"]


class DlgnCore(wiring.Component):
    """A whole classifier: the network's gates, per-class popcounts and the argmax.

    ``gates`` and ``groups`` use the netlist id convention (``0``/``1`` constants,
    ``2 .. in_bits + 1`` input bits, then the gates; see ``docs/netlist-format.md``). With an
    ``encoding`` (an object with ``features``, ``feature_width`` and ``bits``, a list of
    ``(feature, threshold)`` per input bit) the core takes raw features and thermometer-encodes
    them on chip (comparators only for the input bits the gates and groups read).
    ``pipeline_every = K`` puts a register stage after every K gate levels
    (0: combinational core); ``output_every = S`` one after every S levels of the adder and
    argmax trees (0: combinational). When ``K > 0`` the encoder's bits are registered too.
    ``popcount`` chooses the group sum's implementation (see :class:`~dlgn.hdl.group_sum.GroupSum`);
    with a plan (not ``"adder"``) the group sum builds its LUTs with ``lut_cell`` too, and its
    carry chains with ``carry_chain`` (``dlgn.boards.primitives.carry_chain_for``).

    Latency: ``encoder + core + group_sum + argmax`` latencies (see :attr:`latency` and
    :attr:`stage_latencies`), 0 when everything is combinational. ``valid`` travels with each
    sample; one sample per clock.

    Ports
    -----
    in_valid : In(1)
        A sample is presented this cycle.
    in_bits : In(in_bits)
        The encoded input bits (without an ``encoding``), bit ``i`` is netlist id ``i + 2``.
    in_features : In(features * feature_width)
        Raw features (with an ``encoding``), feature ``f`` in bits ``[f*w, (f+1)*w)``.
    out_valid : Out(1)
        ``out_class`` and ``out_scores`` hold the result of the sample presented ``latency``
        cycles earlier.
    out_class : Out(class_width)
        Predicted class: highest score, lowest index on ties.
    out_scores : Out(classes * score_width)
        Class ``c``'s score in bits ``[c*score_width, (c+1)*score_width)`` (class 0 lowest).

    The clock and reset are the ``sync`` domain's (``clk``, ``rst`` in Verilog); reset clears
    only the ``valid`` pipeline.
    """

    def __init__(self, in_bits, gates, groups, *, encoding=None, pipeline_every=0, output_every=0, lut_cell=None,
                 popcount="adder", carry_chain=None):
        if not isinstance(in_bits, int) or isinstance(in_bits, bool) or in_bits < 1:
            raise TypeError(f"in_bits must be a positive integer, not {in_bits!r}")
        gates = [(tuple(inputs), table) for inputs, table in gates]
        check_gates(in_bits, gates)
        for name, value in (("pipeline_every", pipeline_every), ("output_every", output_every)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TypeError(f"{name} must be a non-negative integer, not {value!r}")
        total = 2 + in_bits + len(gates)
        groups = [list(g) for g in groups]
        if not groups:
            raise ValueError("need at least one class group")
        for c, group in enumerate(groups):
            for s in group:
                if not isinstance(s, int) or not 0 <= s < total:
                    raise ValueError(f"group {c} lists {s!r}, which is not a signal id (ids are 0..{total - 1})")
        if encoding is not None and len(encoding.bits) != in_bits:
            raise ValueError(f"the encoding describes {len(encoding.bits)} bits, the core has {in_bits} input bits")

        # Core outputs: each non-constant group member once, in order of first appearance.
        outputs, position = [], {}
        positions, ones = [], []
        for group in groups:
            members = []
            for s in group:
                if s >= 2 and s not in position:
                    position[s] = len(outputs)
                    outputs.append(s)
                if s >= 2:
                    members.append(position[s])
            positions.append(members)
            ones.append(sum(1 for s in group if s == 1))

        self._in_bits = in_bits
        self._encoding = encoding
        self._pipeline_every = pipeline_every
        self._output_every = output_every
        if encoding is not None:
            # Only the bits the network reads get a comparator (the others are 0 into the core), so
            # that the encoder block is what a flat synthesis keeps of it (hw_report.json's blocks).
            read = {s for inputs, _table in gates for s in inputs} | {s for group in groups for s in group}
            self._encoded = [i for i in range(in_bits) if i + 2 in read] or [0]
            self.encoder = ThermometerEncoder(encoding.features, encoding.feature_width,
                                              [encoding.bits[i] for i in self._encoded], registered=pipeline_every > 0)
        else:
            self.encoder = None
        self.core = LogicCore(in_bits, gates, outputs, pipeline_every, lut_cell=lut_cell)
        self.group_sum = GroupSum(len(outputs), positions, ones, output_every, popcount=popcount,
                                  lut_cell=lut_cell, carry_chain=carry_chain)
        self.argmax = Argmax(len(groups), self.group_sum.score_width, output_every)

        ports = {"in_valid": In(1)}
        if encoding is not None:
            ports["in_features"] = In(encoding.features * encoding.feature_width)
        else:
            ports["in_bits"] = In(in_bits)
        ports.update({
            "out_valid": Out(1),
            "out_class": Out(self.argmax.class_width),
            "out_scores": Out(len(groups) * self.group_sum.score_width),
        })
        super().__init__(ports)

    @property
    def classes(self):
        return self.argmax.classes

    @property
    def score_width(self):
        return self.group_sum.score_width

    @property
    def class_width(self):
        return self.argmax.class_width

    @property
    def stage_latencies(self):
        """Latency in cycles of each block, in data-flow order."""
        return {
            "encoder": self.encoder.latency if self.encoder is not None else 0,
            "core": self.core.latency,
            "group_sum": self.group_sum.latency,
            "argmax": self.argmax.latency,
        }

    @property
    def latency(self):
        """Cycles from a sample on the inputs to its result on the outputs."""
        return sum(self.stage_latencies.values())

    @property
    def uses_clock(self):
        return self.latency > 0

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.group_sum = group_sum = self.group_sum
        m.submodules.argmax = argmax = self.argmax
        if self.encoder is not None:
            m.submodules.encoder = encoder = self.encoder
            m.d.comb += [
                encoder.in_valid.eq(self.in_valid),
                encoder.in_features.eq(self.in_features),
                core.in_valid.eq(encoder.out_valid),
            ]
            for k, i in enumerate(self._encoded):
                m.d.comb += core.in_bits[i].eq(encoder.out_bits[k])
        else:
            m.d.comb += [core.in_valid.eq(self.in_valid), core.in_bits.eq(self.in_bits)]
        m.d.comb += [
            group_sum.in_valid.eq(core.out_valid),
            group_sum.in_bits.eq(core.out_bits),
            argmax.in_valid.eq(group_sum.out_valid),
            argmax.in_scores.eq(group_sum.out_scores),
            self.out_valid.eq(argmax.out_valid),
            self.out_class.eq(argmax.out_class),
            self.out_scores.eq(argmax.out_scores),
        ]
        return m


def verilog_ports(top):
    """Top-level ports for :func:`amaranth.back.rtlil.convert`: the signature's ports (named as
    Amaranth names them), plus unused ``clk``/``rst`` inputs when the design is combinational,
    so that every ``dlgn_core`` has the same interface (components without ``uses_clock`` get
    their signature's ports only). Directions are inferred from use."""
    ports = [("__".join(map(str, path)), value, None) for path, _member, value in top.signature.flatten(top)]
    if not getattr(top, "uses_clock", True):
        ports += [("clk", Signal(name="clk"), None), ("rst", Signal(name="rst"), None)]
    return ports
