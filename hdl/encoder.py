"""On-chip thermometer encoder: raw integer features to input bits (DESIGN §2.1)."""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ThermometerEncoder", "greater_than"]


def greater_than(bits, threshold):
    """``x > threshold`` for an unsigned ``x`` given as its ``bits`` (least significant first)
    and a constant ``threshold``: from bit 0 up, ``g_k = x_k | g_(k-1)`` where the threshold has a
    0 and ``g_k = x_k & g_(k-1)`` where it has a 1, starting from ``g = 0`` (equal is not greater).
    Constant-folds as it goes: a threshold ``2**k - 1`` gives an OR of the top bits."""
    g = None  # constant 0
    for k, bit in enumerate(bits):
        if (threshold >> k) & 1:
            g = None if g is None else bit & g
        else:
            g = bit if g is None else bit | g
    return 0 if g is None else g


class ThermometerEncoder(wiring.Component):
    """Compare raw features against integer thresholds: bit ``i`` is ``feature[f_i] > t_i``.

    ``bits`` lists one ``(feature, threshold)`` pair per output bit; features are unsigned
    ``feature_width``-bit integers packed into ``in_features``. Comparators against constants
    are shared between bits asking the same question. Each comparator is plain logic, an
    AND/OR chain from the least significant bit up (see :func:`greater_than`), not a
    subtraction: Yosys then maps it to a few LUTs instead of a carry chain (on the ECP5, digits
    thresholds cost about 7 logic cells per comparator as ``>``). With ``registered`` the bits
    are registered once.

    Latency: 1 cycle when ``registered``, else 0.

    Ports
    -----
    in_valid : In(1)
    in_features : In(features * feature_width)
        Feature ``f`` in bits ``[f*feature_width, (f+1)*feature_width)``.
    out_valid : Out(1)
        ``in_valid`` delayed by the latency (reset to 0).
    out_bits : Out(len(bits))
    """

    def __init__(self, features, feature_width, bits, registered=False):
        if not isinstance(features, int) or isinstance(features, bool) or features < 1:
            raise TypeError(f"features must be a positive integer, not {features!r}")
        if not isinstance(feature_width, int) or isinstance(feature_width, bool) or not 1 <= feature_width <= 32:
            raise TypeError(f"feature_width must be an integer from 1 to 32, not {feature_width!r}")
        bits = [tuple(b) for b in bits]
        if not bits:
            raise ValueError("an encoder needs at least one output bit")
        for i, (f, t) in enumerate(bits):
            if not isinstance(f, int) or not 0 <= f < features:
                raise ValueError(f"bit {i} reads feature {f!r}; there are {features} features")
            if not isinstance(t, int) or not 0 <= t < (1 << feature_width):
                raise ValueError(f"bit {i}: threshold {t!r} is not a {feature_width}-bit unsigned integer")
        if not isinstance(registered, bool):
            raise TypeError(f"registered must be a bool, not {registered!r}")
        self._features = features
        self._feature_width = feature_width
        self._bits = bits
        self._registered = registered
        super().__init__({
            "in_valid": In(1),
            "in_features": In(features * feature_width),
            "out_valid": Out(1),
            "out_bits": Out(len(bits)),
        })

    @property
    def latency(self):
        return 1 if self._registered else 0

    def elaborate(self, platform):
        m = Module()
        w = self._feature_width
        compare = {}
        for f, t in self._bits:
            if (f, t) not in compare:
                bit = Signal(name=f"f{f}_gt_{t}")
                x = self.in_features[f * w:(f + 1) * w]
                m.d.comb += bit.eq(greater_than([x[k] for k in range(w)], t))
                compare[(f, t)] = bit
        outputs = []
        for i, key in enumerate(self._bits):
            if self._registered:
                reg = Signal(name=f"x{i + 2}_enc", reset_less=True)
                m.d.sync += reg.eq(compare[key])
                outputs.append(reg)
            else:
                outputs.append(compare[key])
        for i, bit in enumerate(outputs):
            m.d.comb += self.out_bits[i].eq(bit)
        if self._registered:
            m.d.sync += self.out_valid.eq(self.in_valid)
        else:
            m.d.comb += self.out_valid.eq(self.in_valid)
        return m
