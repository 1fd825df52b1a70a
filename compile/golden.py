"""Golden model: a bit-sliced evaluator of the netlist IR (DESIGN §5, rung 2).

Samples are packed 64 to a ``uint64`` word (sample ``64*w + j`` is bit ``j`` of word ``w``), so
one bitwise numpy operation evaluates a gate on 64 samples. Gates are evaluated level by level;
within a level they are sorted by arity and table so that each two-input function is one numpy
call over a contiguous block, and wider gates are folded as multiplexer trees over their table.
Class scores are per-sample popcounts computed with bit-sliced carry-save adders, then unpacked
to integers. Predictions take the highest score, the lowest class index winning ties.
"""

import numpy as np

from .netlist import CONST0, CONST1, NetlistError

__all__ = ["GoldenModel", "predict", "pack_bits", "encode_features"]

_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_BATCH_WORDS = 1024  # words (64 samples each) whose group members are counted together

# Two-input tables (bit a = output for a = x0 + 2*x1) as numpy ufunc recipes on (x0, x1).
_NOT = np.invert


def _two_input(table, a, b, out):
    if table == 0x8:
        np.bitwise_and(a, b, out=out)
    elif table == 0x6:
        np.bitwise_xor(a, b, out=out)
    elif table == 0xE:
        np.bitwise_or(a, b, out=out)
    elif table == 0x7:
        np.bitwise_and(a, b, out=out)
        _NOT(out, out=out)
    elif table == 0x9:
        np.bitwise_xor(a, b, out=out)
        _NOT(out, out=out)
    elif table == 0x1:
        np.bitwise_or(a, b, out=out)
        _NOT(out, out=out)
    elif table == 0x2:  # x0 and not x1
        np.bitwise_and(a, _NOT(b), out=out)
    elif table == 0x4:  # x1 and not x0
        np.bitwise_and(b, _NOT(a), out=out)
    elif table == 0xB:  # x0 or not x1
        np.bitwise_or(a, _NOT(b), out=out)
    elif table == 0xD:  # x1 or not x0
        np.bitwise_or(b, _NOT(a), out=out)
    elif table == 0xA:
        out[...] = a
    elif table == 0xC:
        out[...] = b
    elif table == 0x5:
        _NOT(a, out=out)
    elif table == 0x3:
        _NOT(b, out=out)
    elif table == 0x0:
        out[...] = 0
    else:  # 0xF
        out[...] = _ONES


def pack_bits(bits):
    """``[N, B]`` 0/1 array -> ``[B, ceil(N/64)]`` ``uint64`` words, sample-sliced.

    Sample ``64*w + j`` is bit ``j`` of word ``w``. Eight samples are shifted into a byte along
    the sample axis first, so that only the eight times smaller byte array is transposed."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"expected bits of shape [N, B], got {bits.shape}")
    if bits.dtype != np.uint8:
        bits = (bits != 0).astype(np.uint8)
    elif bits.size and bits.max() > 1:
        raise ValueError("input bits must be 0 or 1")
    n, b = bits.shape
    words = -(-n // 64)
    if n != words * 64:
        bits = np.concatenate([bits, np.zeros((words * 64 - n, b), dtype=np.uint8)])
    eights = bits.reshape(words * 8, 8, b)
    packed = eights[:, 0].copy()
    for k in range(1, 8):
        packed |= eights[:, k] << np.uint8(k)
    return np.ascontiguousarray(packed.T).view("<u8").reshape(b, words)


def encode_features(encoding, features):
    """Input bits ``[N, in_bits]`` (``uint8``) of raw integer features ``[N, F]`` under the
    netlist's thermometer ``encoding``."""
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[1] != encoding.features:
        raise ValueError(f"expected features of shape [N, {encoding.features}], got {x.shape}")
    if x.size and (x.min() < 0 or x.max() >= (1 << encoding.feature_width)):
        raise ValueError(f"features must be unsigned {encoding.feature_width}-bit integers")
    feature = np.array([f for f, _ in encoding.bits], dtype=np.int64)
    threshold = np.array([t for _, t in encoding.bits], dtype=np.int64)
    return (x.astype(np.int64)[:, feature] > threshold).astype(np.uint8)


def predict(scores):
    """Class with the highest score per row; the lowest index wins ties (DESIGN §2.8)."""
    return np.asarray(scores).argmax(axis=1)


class GoldenModel:
    """Bit-exact evaluator of a :class:`~dlgn.compile.netlist.Netlist`.

    ``scores(bits)`` / ``scores(features=x)`` return ``int64 [N, classes]``; ``predict`` the
    classes. ``chunk_words`` words (64 samples each) are evaluated at a time so that one level's
    working set stays in cache."""

    def __init__(self, netlist, chunk_words=16):
        self.netlist = netlist
        self.chunk_words = int(chunk_words)
        levels = netlist.levels
        base = netlist.first_gate
        order = sorted(range(len(netlist.gates)),
                       key=lambda g: (levels[base + g], len(netlist.gates[g][0]),
                                      netlist.gates[g][1] if len(netlist.gates[g][0]) <= 2 else 0))
        row = list(range(base)) + [0] * len(netlist.gates)  # row of every id in the value array
        for r, g in enumerate(order):
            row[base + g] = base + r
        self.rows = base + len(netlist.gates)
        self.plan = []
        start = 0
        while start < len(order):
            level = levels[base + order[start]]
            stop = start
            while stop < len(order) and levels[base + order[stop]] == level:
                stop += 1
            self.plan.append(self._plan_level(order[start:stop], base + start, row))
            start = stop
        self._group_rows = self._plan_groups(row)

    def _plan_level(self, gates, first_row, row):
        """Blocks of one level: rows sharing an arity (and, for n <= 2, a table), each
        ``(start_row, stop_row, n, table or None, input_rows [n, G], masks [2**n, G, 1] or None)``."""
        blocks = []
        netlist = self.netlist
        i = 0
        while i < len(gates):
            inputs, table = netlist.gates[gates[i]]
            n = len(inputs)
            key = table if n <= 2 else None
            j = i
            while j < len(gates):
                inputs_j, table_j = netlist.gates[gates[j]]
                if len(inputs_j) != n or (key is not None and table_j != key):
                    break
                j += 1
            input_rows = np.array([[row[s] for s in netlist.gates[g][0]] for g in gates[i:j]], dtype=np.intp).T
            masks = None
            if key is None:
                tables = np.array([netlist.gates[g][1] for g in gates[i:j]], dtype=np.uint64)
                entries = (tables[None, :] >> np.arange(1 << n, dtype=np.uint64)[:, None]) & np.uint64(1)
                masks = (np.uint64(0) - entries)[:, :, None]  # [2**n, G, 1]: all-ones where the entry is 1
            blocks.append((first_row + i, first_row + j, n, key, np.ascontiguousarray(input_rows), masks))
            i = j
        return blocks

    def _plan_groups(self, row):
        groups = self.netlist.groups
        width = max((len(g) for g in groups), default=0)
        rows = np.zeros((len(groups), max(width, 1)), dtype=np.intp)  # padded with the constant-0 row
        for c, group in enumerate(groups):
            rows[c, :len(group)] = [row[s] for s in group]
        return rows

    # ----------------------------------------------------------------- evaluation

    def _evaluate_chunk(self, values, scratch):
        """Evaluate every gate for the words in ``values`` (rows = ids in plan order); ``scratch``
        is a preallocated ``[max_gates_per_block, words]`` buffer per input position."""
        words = values.shape[1]
        for blocks in self.plan:
            for start, stop, n, table, input_rows, masks in blocks:
                out = values[start:stop]
                count = stop - start
                x = []
                for j in range(n):
                    buf = scratch[j][:count, :words]
                    np.take(values, input_rows[j], axis=0, out=buf, mode="clip")  # "raise" would buffer
                    x.append(buf)
                if n == 1:
                    if table == 0b10:
                        out[...] = x[0]
                    elif table == 0b01:
                        _NOT(x[0], out=out)
                    else:
                        out[...] = _ONES if table == 0b11 else 0
                elif n == 2:
                    _two_input(table, x[0], x[1], out)
                else:
                    t = masks
                    for j in range(n - 1, -1, -1):
                        half = 1 << j
                        lo, hi = t[:half], t[half:]
                        t = lo ^ ((lo ^ hi) & x[j])
                    out[...] = t[0]

    @staticmethod
    def _popcount(terms):
        """Bit-sliced per-class counts of ``terms`` ``[classes, m, ...]`` (carry-save adders over
        axis 1, computed in place: ``terms`` is overwritten): list of planes ``[classes, ...]``,
        plane ``b`` of weight ``2**b``.

        Each step adds the last ``3t`` terms three at a time and writes the sums over the first
        of those thirds, so the remaining terms stay one prefix of the array (no copies)."""
        planes = []
        while terms.shape[1]:
            carries = []
            while terms.shape[1] > 1:
                m = terms.shape[1]
                t = m // 3
                if t:
                    r = m - 3 * t
                    a, b, c = terms[:, r:r + t], terms[:, r + t:r + 2 * t], terms[:, r + 2 * t:]
                    ab = a ^ b
                    carry = a & b
                    np.bitwise_and(ab, c, out=b)
                    carry |= b
                    np.bitwise_xor(ab, c, out=a)
                    carries.append(carry)
                    terms = terms[:, :r + t]
                else:  # two terms left: a half adder
                    carries.append(terms[:, :1] & terms[:, 1:2])
                    terms = terms[:, :1] ^ terms[:, 1:2]
            planes.append(terms[:, 0])
            terms = np.concatenate(carries, axis=1) if carries else terms[:, :0]
        return planes

    def _scores_from_words(self, inputs, samples):
        """Evaluate ``chunk_words`` words at a time (so a level's working set stays in cache),
        collect the group members of up to ``_BATCH_WORDS`` words, then count them at once."""
        step = self.chunk_words
        words = inputs.shape[1]
        classes, members = self._group_rows.shape
        base = self.netlist.first_gate
        values = np.empty((self.rows, step), dtype=np.uint64)
        values[CONST0] = 0
        values[CONST1] = _ONES
        widest = max((stop - start for blocks in self.plan for start, stop, *_ in blocks), default=0)
        arity = max((n for blocks in self.plan for _s, _e, n, *_ in blocks), default=0)
        scratch = [np.empty((widest, step), dtype=np.uint64) for _ in range(arity)]
        chunks_per_batch = max(1, _BATCH_WORDS // step)
        scores = np.zeros((classes, words * 64), dtype=np.int64)
        for b0 in range(0, words, chunks_per_batch * step):
            b1 = min(words, b0 + chunks_per_batch * step)
            chunks = -(-(b1 - b0) // step)
            collected = np.empty((chunks, classes, members, step), dtype=np.uint64)
            for i in range(chunks):
                w0 = b0 + i * step
                w1 = min(b1, w0 + step)
                values[2:base, :w1 - w0] = inputs[:, w0:w1]
                values[2:base, w1 - w0:] = 0
                self._evaluate_chunk(values, scratch)
                np.take(values, self._group_rows, axis=0, out=collected[i], mode="clip")
            planes = self._popcount(collected.transpose(1, 2, 0, 3))
            for bit, plane in enumerate(planes):
                flat = np.ascontiguousarray(plane).reshape(classes, chunks * step)[:, :b1 - b0]
                unpacked = np.unpackbits(flat.view(np.uint8), axis=1, bitorder="little")
                scores[:, b0 * 64:b1 * 64] += unpacked.astype(np.int64) << bit
        return np.ascontiguousarray(scores[:, :samples].T)

    def scores(self, bits=None, *, features=None):
        """Per-class integer scores ``[N, classes]`` of input ``bits`` ``[N, in_bits]`` (0/1) or of
        raw ``features`` ``[N, F]`` (encoded with the netlist's thermometer encoding)."""
        if (bits is None) == (features is None):
            raise TypeError("pass exactly one of bits or features=")
        if features is not None:
            if self.netlist.encoding is None:
                raise NetlistError("this netlist has no input encoding; pass encoded bits")
            bits = encode_features(self.netlist.encoding, features)
        if hasattr(bits, "numpy"):
            bits = bits.detach().cpu().numpy()
        bits = np.asarray(bits)
        if bits.ndim != 2 or bits.shape[1] != self.netlist.in_bits:
            raise ValueError(f"expected bits of shape [N, {self.netlist.in_bits}], got {bits.shape}")
        return self.scores_packed(pack_bits(bits), len(bits))

    def scores_packed(self, words, samples):
        """Scores of pre-packed input words ``[in_bits, ceil(samples/64)]`` (see :func:`pack_bits`)."""
        return self._scores_from_words(words, samples)

    def predict(self, bits=None, *, features=None):
        return predict(self.scores(bits, features=features))
