"""A serial line into an Amaranth simulation of a board top, with the interface of a pyserial port.

``SimulatedSerial(top, divisor)`` simulates ``top`` (a component with ``rx`` and/or ``tx``) in
the Amaranth simulator; ``write(bytes)`` queues bytes that a background process shifts into
``rx`` (8N1, ``divisor`` clocks per bit) and ``read(n)`` runs the simulation until ``n`` bytes have
come out of ``tx`` (or ``timeout_cycles`` have passed). Host code such as
:func:`dlgn.boards.infer.classify_stream` runs on it unchanged.
"""

from collections import deque

from amaranth.sim import Simulator

__all__ = ["SimulatedSerial"]

CLOCK_PERIOD = 1e-8  # 100 MHz: simulated time only


class SimulatedSerial:
    def __init__(self, top, divisor, timeout_cycles=None):
        self.top, self.divisor = top, divisor
        self.outgoing, self.incoming = deque(), deque()
        self.cycles = 0
        self.timeout_cycles = timeout_cycles
        self._sim = Simulator(top)
        self._sim.add_clock(CLOCK_PERIOD)
        if hasattr(top, "rx"):
            self._sim.add_testbench(self._drive_rx, background=True)
        if hasattr(top, "tx"):
            self._sim.add_testbench(self._sample_tx, background=True)
        self._now = 0.0

    async def _drive_rx(self, ctx):
        ctx.set(self.top.rx, 1)
        while True:
            if not self.outgoing:
                await ctx.tick()
                continue
            byte = self.outgoing.popleft()
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(self.top.rx, bit)
                await ctx.tick().repeat(self.divisor)

    async def _sample_tx(self, ctx):
        while True:
            await ctx.tick()
            if ctx.get(self.top.tx):
                continue
            await ctx.tick().repeat(self.divisor // 2)  # middle of the start bit
            byte = 0
            for i in range(8):
                await ctx.tick().repeat(self.divisor)
                byte |= ctx.get(self.top.tx) << i
            await ctx.tick().repeat(self.divisor)
            if ctx.get(self.top.tx):  # a valid stop bit
                self.incoming.append(byte)

    def write(self, data):
        self.outgoing.extend(bytes(data))
        return len(data)

    def read(self, n):
        """Up to ``n`` bytes: fewer only when ``timeout_cycles`` passed without enough arriving."""
        limit = self.timeout_cycles or (40 * self.divisor * (n + len(self.outgoing) + 4))
        waited = 0
        chunk = 10 * self.divisor
        while len(self.incoming) < n and waited < limit:
            self._now += chunk * CLOCK_PERIOD
            self._sim.run_until(self._now)
            waited += chunk
            self.cycles += chunk
        return bytes(self.incoming.popleft() for _ in range(min(n, len(self.incoming))))

    def run(self, cycles):
        self._now += cycles * CLOCK_PERIOD
        self._sim.run_until(self._now)
        self.cycles += cycles
