"""8N1 UART receiver and transmitter for the board tops (one start bit, 8 data bits LSB first, one stop bit)."""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx"]


class _Uart(wiring.Component):
    """What the receiver and the transmitter share: ``divisor`` clock cycles per bit."""

    def __init__(self, divisor):
        if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
            raise ValueError(f"divisor (clock cycles per bit) must be an integer of at least 4, not {divisor!r}")
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        return self._divisor


class UartRx(_Uart):
    """Receives 8N1 bytes on ``rx`` (idle high); ``divisor`` clock cycles per bit.

    The line is synchronized through two flip-flops and sampled in the middle of each bit. A
    byte whose stop bit is low is dropped (a framing error).

    Ports
    -----
    rx : In(1)
        The serial line.
    data : Out(8)
        The last byte received; valid while ``valid`` is high.
    valid : Out(1)
        High for one cycle when a byte has been received.
    """

    rx: In(1, init=1)
    data: Out(8)
    valid: Out(1)

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        meta = Signal(init=1)
        line = Signal(init=1)
        m.d.sync += [meta.eq(self.rx), line.eq(meta)]
        timer = Signal(range(div * 2))
        bit = Signal(range(10))
        shift = Signal(8)
        m.d.sync += self.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(line):
                        m.next = "IDLE"  # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(shift[1:] | (line << 7)), timer.eq(div - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(line):
                        m.d.sync += [self.data.eq(shift), self.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
        return m


class UartTx(_Uart):
    """Sends 8N1 bytes on ``tx``; ``divisor`` clock cycles per bit.

    Ports
    -----
    data : In(8)
        The byte to send, taken when ``valid`` and ``ready`` are both high.
    valid : In(1)
        ``data`` holds a byte to send.
    ready : Out(1)
        The transmitter is idle and takes a byte this cycle.
    tx : Out(1)
        The serial line (idle high).
    """

    data: In(8)
    valid: In(1)
    ready: Out(1)
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        frame = Signal(10, init=0x3FF)  # stop, data[7:0], start: shifted out LSB first
        bits_left = Signal(range(11))
        m.d.comb += [self.ready.eq(bits_left == 0), self.tx.eq(frame[0])]
        with m.If(bits_left == 0):
            with m.If(self.valid):
                m.d.sync += [frame.eq((1 << 9) | (self.data << 1)), bits_left.eq(10), timer.eq(div - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [frame.eq((frame >> 1) | (1 << 9)), bits_left.eq(bits_left - 1), timer.eq(div - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m
