"""Board tops: the UART classifier and the built-in self-test, and the wrapper that wires them to a board.

:class:`UartClassifier` and :class:`BistRunner` are plain logic (simulated without a board);
:class:`BoardTop` adds the clock (the board oscillator, or a PLL above it), the UART pins and LEDs.
"""

from amaranth.build import ResourceError
from amaranth.hdl import Cat, ClockDomain, ClockSignal, Const, Module, Mux, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from dlgn.compile.estimate import ARRIVAL_MAX_THRESHOLDS, arrival_thresholds
from dlgn.hdl.encoder import ThermometerEncoder
from dlgn.hdl.uart import UartRx, UartTx

from .protocol import BIST_SYNC, REQUEST_SYNC, RESPONSE_SYNC, SCORE_BYTES

__all__ = ["UartClassifier", "BistRunner", "BoardTop"]


class UartClassifier(wiring.Component):
    """Receives a request frame (sync byte + one byte per raw feature), classifies it with ``core``
    and sends the response frame (see :mod:`dlgn.boards.protocol`). One sample at a time; the
    core's latency is negligible against the serial line.

    Two layouts, chosen by ``core``:

    - ``core`` takes encoded bits (a :class:`~dlgn.hdl.top.DlgnCore` without an encoding): each
      byte is thermometer-encoded as it arrives, against the thresholds the features share
      (:func:`dlgn.compile.estimate.arrival_thresholds`: T comparators in all, in the ``encoder``
      submodule), and the T bits enter a shift register of ``features x T`` encoded bits that the
      core reads. No raw buffer and no per-feature comparators (on the iCEBreaker the raw buffer
      and the core's encoder registers took a logic cell per bit each).
    - ``core`` takes raw features (a ``DlgnCore`` with the on-chip encoder for ``encoding``): the
      raw bytes are buffered and the core compares them (needed when the thresholds are per feature).

    Ports: ``rx`` (In, idle high), ``tx`` (Out), ``busy`` (Out: a sample is being handled).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, core, encoding, divisor):
        if encoding.feature_width > 8:
            raise ValueError(f"the UART top carries features of at most 8 bits, not {encoding.feature_width}")
        if hasattr(core, "in_features"):
            if len(core.in_features) != encoding.features * encoding.feature_width:
                raise ValueError(f"the core takes {len(core.in_features)} feature bits, the encoding describes "
                                 f"{encoding.features} x {encoding.feature_width}")
            self._thresholds = None
        else:
            if len(core.in_bits) != len(encoding.bits):
                raise ValueError(f"the core takes {len(core.in_bits)} input bits, the encoding describes "
                                 f"{len(encoding.bits)}")
            self._thresholds = arrival_thresholds(encoding.bits, encoding.feature_width)
            if self._thresholds is None:
                raise ValueError(f"the features do not share at most {ARRIVAL_MAX_THRESHOLDS} thresholds: encoding on "
                                 f"arrival needs that; give the UART top a core with the on-chip encoder")
        if core.score_width > 8 * SCORE_BYTES:
            raise ValueError(f"scores of {core.score_width} bits do not fit the protocol's {SCORE_BYTES} bytes")
        self._core, self._encoding, self._divisor = core, encoding, divisor
        super().__init__()

    @property
    def encodes_on_arrival(self):
        return self._thresholds is not None

    def elaborate(self, platform):
        m = Module()
        core = self._core
        m.submodules.core = core
        m.submodules.uart_rx = rx = UartRx(self._divisor)
        m.submodules.uart_tx = tx = UartTx(self._divisor)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]

        features, width = self._encoding.features, self._encoding.feature_width
        classes, score_width = core.classes, core.score_width
        frame_bytes = 2 + SCORE_BYTES * classes
        # Bits per feature in the sample register: the raw byte, or its T thresholds' comparisons.
        slot = width if self._thresholds is None else len(self._thresholds)
        sample = Signal(features * slot)
        received = Signal(range(features + 1))
        response = Signal(8 * frame_bytes)
        to_send = Signal(range(frame_bytes + 1))

        m.d.comb += core.in_valid.eq(0)
        # Feature 0 arrives first and ends in the lowest bits; each byte enters at the top. The shift
        # enable of this wide register (6,272 flip-flops for 784 raw features) is itself a register, one
        # cycle behind the received byte: measured on a 3,545-gate Fashion-MNIST-shaped net at 100 MHz,
        # the enable through a LUT was the critical path (12.0 ns, 83.5 MHz), a registered one 10.4 ns
        # (96.5 MHz). Copies of it per chunk do not help as written: Yosys merges identical registers.
        shift = Signal()
        shift_enable = Signal()
        byte = Signal(width)
        m.d.sync += [shift_enable.eq(shift), byte.eq(rx.data[:width])]
        if self._thresholds is None:
            m.d.comb += core.in_features.eq(sample)
            entering = byte
        else:
            # T comparators on the registered byte (bit j: byte > thresholds[j]); input bit i of the
            # core, (f, t), is bit j = thresholds.index(t) of slot f.
            m.submodules.encoder = encoder = ThermometerEncoder(1, width, [(0, t) for t in self._thresholds])
            m.d.comb += [encoder.in_valid.eq(0), encoder.in_features.eq(byte)]
            entering = encoder.out_bits
            column = {t: j for j, t in enumerate(self._thresholds)}
            for i, (f, t) in enumerate(self._encoding.bits):
                m.d.comb += core.in_bits[i].eq(sample[f * slot + column[t]])
        with m.If(shift_enable):
            m.d.sync += sample.eq(Cat(sample[slot:], entering))
        with m.FSM():
            with m.State("SYNC"):
                with m.If(rx.valid & (rx.data == REQUEST_SYNC)):
                    m.d.sync += received.eq(0)
                    m.next = "FEATURES"
            with m.State("FEATURES"):
                m.d.comb += [self.busy.eq(1), shift.eq(rx.valid)]
                with m.If(rx.valid):
                    m.d.sync += received.eq(received + 1)
                    with m.If(received == features - 1):
                        m.next = "SETTLE"
            with m.State("SETTLE"):  # the last shift happens now (one cycle behind the enable)
                m.d.comb += self.busy.eq(1)
                m.next = "START"
            with m.State("START"):
                m.d.comb += [self.busy.eq(1), core.in_valid.eq(1)]
                m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                with m.If(core.out_valid):
                    packed = Const(RESPONSE_SYNC, 8 * frame_bytes) | (core.out_class.as_unsigned() << 8)
                    for c in range(classes):
                        packed = packed | (core.out_scores[c * score_width:(c + 1) * score_width].as_unsigned()
                                           << (16 + 8 * SCORE_BYTES * c))
                    m.d.sync += [response.eq(packed), to_send.eq(frame_bytes)]
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.busy.eq(1), tx.data.eq(response[:8]), tx.valid.eq(to_send != 0)]
                with m.If(tx.ready & (to_send != 0)):
                    m.d.sync += [response.eq(response >> 8), to_send.eq(to_send - 1)]
                with m.If(to_send == 0):
                    m.next = "SYNC"
        return m


class BistRunner(wiring.Component):
    """Built-in self-test: ``rows`` (encoded input bits, label) in block RAM stream through ``core``
    (a :class:`~dlgn.hdl.top.DlgnCore` taking encoded bits) at one sample per clock after reset,
    or, with ``words`` > 1, one sample every ``words`` clocks: each sample is then stored as
    ``words`` consecutive memory words (rows ``words`` times narrower, so a wide sample fits the
    block RAM of a small device) and assembled in a shift register before the core.
    With ``memory="lut"`` the rows are a ROM in logic instead (one LUT per column for up to 16
    samples, about n / 8 LUT4s per column for n samples; device LUT4 cells when ``lut_cell`` is
    given, as for the core's gates), which keeps the block RAM's slow output
    (its clock-to-out is 5.8 ns in nextpnr's ECP5 model) out of the timing: the speed test.
    The number of correct predictions is counted; then ``done`` rises, ``correct`` holds the
    count, and a BIST frame (see :mod:`dlgn.boards.protocol`) is sent every ``repeat`` cycles.

    Ports: ``tx`` (Out), ``done`` (Out), ``correct`` (Out(16)).
    """

    tx: Out(1, init=1)
    done: Out(1)
    correct: Out(16)

    #: Row bits per memory bank (8 ECP5 block RAMs at 36 bits wide), each with its own address counter.
    BANK_BITS = 288
    #: Row bits per bank of the LUT ROM: each bank's address counter drives about
    #: LUT_BANK_BITS * samples / 16 LUT4 inputs per bit.
    LUT_BANK_BITS = 128
    #: Flip-flops between the reset and each bank's address counter.
    RESET_STAGES = 2
    #: Where the samples can be held.
    MEMORIES = ("bram", "lut")

    def __init__(self, core, rows, divisor, repeat=1 << 22, words=1, memory="bram", lut_cell=None):
        rows = [(int(bits), int(label)) for bits, label in rows]
        if not 1 <= len(rows) < (1 << 16):
            raise ValueError(f"the BIST holds 1 to 65535 samples, not {len(rows)}")
        if words < 1:
            raise ValueError(f"a sample takes at least one memory word, not {words}")
        if memory not in self.MEMORIES:
            raise ValueError(f"the BIST memory is one of {', '.join(self.MEMORIES)}, not {memory!r}")
        if memory == "lut" and words != 1:
            raise ValueError("the LUT ROM holds whole samples: words must be 1")
        self._core, self._rows, self._divisor, self._repeat = core, rows, divisor, repeat
        self._words, self._memory, self._lut_cell = int(words), memory, lut_cell
        super().__init__()

    @property
    def samples(self):
        return len(self._rows)

    #: Entries per ROM LUT (a LUT4 on the address's low 4 bits).
    ROM_LUT_ENTRIES = 16

    def _rom_column(self, m, column, depth, index, name):
        """One ROM column (bit ``i`` of ``column`` for address ``i``) read at ``index``: 16-entry
        pieces on the address's low 4 bits, each a device LUT4 from ``lut_cell`` when there is one
        (a cell Yosys leaves alone: from the column's logic, its ``opt`` passes made sync resets,
        a different reset net for each sample flip-flop, and the 25F build could not be placed),
        joined by multiplexers on the high address bits. A constant column is a constant."""
        if column in (0, (1 << depth) - 1):
            return Const(column & 1, 1)
        low = min(len(index), (self.ROM_LUT_ENTRIES - 1).bit_length())
        inputs = [index[j] for j in range(low)]
        pieces = []
        for k, base in enumerate(range(0, depth, self.ROM_LUT_ENTRIES)):
            table = (column >> base) & ((1 << self.ROM_LUT_ENTRIES) - 1)
            out = Signal(name=f"{name}_{k}")
            cell = self._lut_cell(table, inputs, out) if self._lut_cell is not None else None
            if cell is None:
                m.d.comb += out.eq(Const(table, self.ROM_LUT_ENTRIES).bit_select(Cat(*inputs), 1))
            else:
                m.submodules[f"{name}_{k}"] = cell
            pieces.append(out)
        level = low
        while len(pieces) > 1:  # a 2:1 multiplexer tree on the address bits above the LUT's
            pieces = [Mux(index[level], pieces[j + 1], pieces[j]) if j + 1 < len(pieces) else pieces[j]
                      for j in range(0, len(pieces), 2)]
            level += 1
        return pieces[0]

    def elaborate(self, platform):
        m = Module()
        core = self._core
        m.submodules.core = core
        m.submodules.uart_tx = tx = UartTx(self._divisor)
        m.d.comb += self.tx.eq(tx.tx)
        in_bits = len(core.in_bits)
        label_width = core.class_width
        n = len(self._rows)
        # The rows are split into slices of BANK_BITS columns, each its own memory with its own
        # copy of the address counter: one counter driving every block RAM of a wide row (63 on the
        # default model) was the critical path (10 ns of routing across the chip). Nothing shared
        # reaches the copies either: each stops by itself after the last word (one `running` flip-flop enabling
        # every copy was the next critical path at K = S = 1 on the 85F, 9.4 ns of routing) and
        # each takes the reset through its own chain of RESET_STAGES flip-flops (the reset net
        # driving every copy's reset directly came next, 10.55 ns). A chain's first stage also
        # resets its bank when the address leaves its range (never, in operation): that term reads the
        # bank's own counter, so Yosys cannot merge the chains of different banks into one.
        # Bank 0's address says whether a word is being read.
        k = self._words
        row_width = in_bits + label_width
        width = -(-row_width // k)  # bits per memory word; word j of sample i is at address i * k + j
        words = [((bits | (label << in_bits)) >> (j * width)) & ((1 << width) - 1)
                 for bits, label in self._rows for j in range(k)]
        depth = len(words)
        read_valid = Signal()
        slices = []
        # The domain reset reaches every valid flip-flop of the design; one flip-flop of its own
        # passes it on to the banks' chains only (the reset net into bank 0's chain was the
        # critical path of a 25F build, 8.6 ns of routing).
        banks_reset = Signal(init=1, reset_less=True, name="banks_reset")
        m.d.sync += banks_reset.eq(ResetSignal())
        lut = self._memory == "lut"
        bank_bits = self.LUT_BANK_BITS if lut else self.BANK_BITS
        for b, lo in enumerate(range(0, width, bank_bits)):
            hi = min(width, lo + bank_bits)
            bank_address = Signal(range(depth + 2), name=f"address{b}", reset_less=True)
            stages = [Signal(init=1, reset_less=True, name=f"bank{b}_rst{s}") for s in range(self.RESET_STAGES)]
            m.d.sync += stages[0].eq(banks_reset | (bank_address > depth))
            m.d.sync += [later.eq(earlier) for earlier, later in zip(stages, stages[1:])]
            bank_reset = stages[-1]
            if lut:
                # Column c of the bank as a ROM over the address (_rom_column: LUTs and
                # multiplexers), read combinationally, so `read_valid` below is not delayed. The ROM reads
                # a copy of the address of its own, kept inverted: read from the counter itself,
                # ABC shared the ROM's LUTs with the counter's next-state logic, so the counter's
                # loop ran through ROM LUTs placed beside the core (65.6 MHz on the 85F, two
                # 6.7 ns routes) and the 25F did not place. The inverted copy is a different
                # register to Yosys (other data, other reset value) and is not merged back.
                index_bits = max(1, (depth - 1).bit_length())  # depth itself (done) wraps: not read
                index_n = Signal(index_bits, init=(1 << index_bits) - 1, reset_less=True, name=f"rom{b}_index_n")
                next_address = Mux(bank_reset, 0, Mux(bank_address != depth, bank_address + 1, bank_address))
                m.d.sync += index_n.eq(~next_address[:index_bits])
                index = Signal(index_bits, name=f"rom{b}_index")
                m.d.comb += index.eq(~index_n)
                data_b = Signal(hi - lo, name=f"rom{b}")
                for c in range(hi - lo):
                    column = sum(((w >> (lo + c)) & 1) << i for i, w in enumerate(words))
                    m.d.comb += data_b[c].eq(self._rom_column(m, column, depth, index, f"rom{b}_{c}"))
            else:
                mask = (1 << (hi - lo)) - 1
                mem = Memory(shape=hi - lo, depth=depth, init=[(w >> lo) & mask for w in words])
                m.submodules[f"samples{b}"] = mem
                read = mem.read_port()
                m.d.comb += read.addr.eq(bank_address)
                data_b = read.data
            with m.If(bank_reset):
                m.d.sync += bank_address.eq(0)
            with m.Elif(bank_address != depth):
                m.d.sync += bank_address.eq(bank_address + 1)
            slices.append(data_b)
            if b == 0:
                address, address_reset = bank_address, bank_reset
        # The block RAM's data is there a clock after its address, the ROM's at once.
        reading = ~address_reset & (address != depth)
        if lut:
            m.d.comb += read_valid.eq(reading)
        else:
            m.d.sync += read_valid.eq(reading)
        data = Cat(*slices)
        # A register between the block RAM and the core: the RAM's output (clock-to-out ~5.6 ns on
        # ECP5) would otherwise start a path that crosses the chip into the first gate levels.
        # With k words per sample it is a shift register of k words (no enable: the core computes
        # on every clock, and only the clock after a sample's last word is marked valid).
        sample = Signal(k * width, reset_less=True)
        sample_valid = Signal()
        if k == 1:
            m.d.sync += [sample.eq(data), sample_valid.eq(read_valid)]
        else:
            phase = Signal(range(k), name="word_phase")
            with m.If(address_reset):
                m.d.sync += phase.eq(0)
            with m.Elif(read_valid):
                m.d.sync += phase.eq(Mux(phase == k - 1, 0, phase + 1))
            m.d.sync += [sample.eq(Cat(sample[width:], data)), sample_valid.eq(read_valid & (phase == k - 1))]
        m.d.comb += [core.in_bits.eq(sample[:in_bits]), core.in_valid.eq(sample_valid)]

        # The label travels beside the sample through the core's pipeline.
        label = sample[in_bits:in_bits + label_width]
        for stage in range(core.latency):
            delayed = Signal(label_width, name=f"label_p{stage + 1}")
            m.d.sync += delayed.eq(label)
            label = delayed

        checked = Signal(range(n + 1))
        with m.If(core.out_valid & ~self.done):
            m.d.sync += checked.eq(checked + 1)
            with m.If(core.out_class == label):
                m.d.sync += self.correct.eq(self.correct + 1)
        m.d.comb += self.done.eq(checked == n)

        frame = Signal(40)
        to_send = Signal(range(6))
        timer = Signal(range(self._repeat))
        m.d.comb += [tx.data.eq(frame[:8]), tx.valid.eq(to_send != 0)]
        with m.If(to_send != 0):
            with m.If(tx.ready):
                m.d.sync += [frame.eq(frame >> 8), to_send.eq(to_send - 1)]
        with m.Elif(self.done):
            m.d.sync += timer.eq(timer + 1)
            with m.If(timer == 0):
                m.d.sync += [frame.eq(Const(BIST_SYNC, 40) | (self.correct.as_unsigned() << 8) | (Const(n, 16) << 24)),
                             to_send.eq(5)]
        return m


class BoardTop(wiring.Component):
    """``inner`` (a :class:`UartClassifier` or :class:`BistRunner`) on a board: clocked by the
    board oscillator, or by ``pll`` (a function ``pll(m, clk_in) -> (clk_out, locked)``) when given; the
    UART on the board's ``uart`` resource, the BIST count or the busy flag on the LEDs."""

    def __init__(self, inner, *, clock, pll=None, leds=8):
        self._inner, self._clock, self._pll, self._leds = inner, clock, pll, leds
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        inner = self._inner
        m.submodules.inner = inner
        m.domains.sync = ClockDomain("sync")
        clk_pin = platform.request(self._clock, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
        clk = clk_buf.i
        if self._pll is not None:
            clk, locked = self._pll(m, clk)
        else:
            locked = Const(1, 1)
        m.d.comb += ClockSignal("sync").eq(clk)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")

        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        if hasattr(inner, "rx"):
            m.d.comb += inner.rx.eq(rx_buf.i)
        m.d.comb += tx_buf.o.eq(inner.tx)
        leds = []
        for i in range(self._leds):
            try:
                pin = platform.request("led", i, dir="-")
            except ResourceError:
                break
            m.submodules[f"led_buf_{i}"] = buf = io.Buffer("o", pin)
            leds.append(buf.o)
        if hasattr(inner, "correct"):
            shown = inner.correct >> max(0, inner.samples.bit_length() - len(leds))
            m.d.comb += [led.eq(shown[i]) for i, led in enumerate(leds)]
        elif leds:
            m.d.comb += leds[0].eq(inner.busy)
        return m
