"""An HDL harness that streams a whole vector file through ``dlgn_core`` (bulk mode).

cocotb stays the entry point (:func:`dlgn.sim.testbench.classify_bulk` starts the clock and
waits), but no Python runs per cycle: the harness reads one input word per cycle from memories
filled by ``$readmemh``, drives ``in_valid`` and the input port, and writes every cycle with
``out_valid`` high to a text file, which the testbench then compares with the golden model.
Driving per cycle from Python cost more than the simulation itself once Verilator simulates
the core (see ``bench/sim_bench.py``).

Cycle numbering: cycle ``t`` is the interval after the ``t``-th rising edge of ``clk``. ``rst``
is high in cycles ``0 .. RESET_CYCLES - 1``; word ``j`` of the vector file is on the inputs in
cycle ``RESET_CYCLES + j``. On every rising edge the harness records the outputs of the cycle
that edge ends (values before the edge's register updates), so a sample on the inputs in cycle
``s`` must be seen with ``out_valid`` in cycle ``s + latency``.

Files, in the simulator's working directory: ``vectors_data.hex`` (one hexadecimal input word per
cycle), ``vectors_valid.hex`` (``0``/``1`` per cycle), ``results.txt`` (written: one line
``cycle class scores`` in hexadecimal per valid output, or ``cycle x`` when ``out_valid`` is
neither 0 nor 1). The number of cycles comes in the plusarg ``+cycles=N``.
"""

from pathlib import Path

import numpy as np

from dlgn.safety import atomic_write_text

__all__ = ["HARNESS_TOP", "RESET_CYCLES", "DATA_FILE", "VALID_FILE", "RESULTS_FILE", "harness_verilog",
           "write_harness_vectors", "read_harness_results"]

HARNESS_TOP = "dlgn_harness"
RESET_CYCLES = 2
DATA_FILE = "vectors_data.hex"
VALID_FILE = "vectors_valid.hex"
RESULTS_FILE = "results.txt"


def harness_verilog(top, input_port, in_width, class_width, scores_width, latency, max_cycles):
    """Verilog text of the harness around module ``top`` (``dlgn_core``'s ports), for at most
    ``max_cycles`` cycles of stimulus. ``clk`` and ``done`` are the only signals cocotb touches
    (marked public for Verilator, which is built without ``--public-flat-rw``)."""
    depth = max(1, int(max_cycles))
    return f"""// dlgn bulk-simulation harness (written by dlgn.sim.harness; see its docstring)
module {HARNESS_TOP}(clk, done);
  input clk /*verilator public_flat_rw*/;
  output done /*verilator public_flat_rw*/;
  wire clk;
  reg done = 1'b0;
  reg rst = 1'b1;
  reg in_valid = 1'b0;
  reg [{in_width - 1}:0] in_data = {in_width}'d0;
  wire out_valid;
  wire [{class_width - 1}:0] out_class;
  wire [{scores_width - 1}:0] out_scores;
  reg [{in_width - 1}:0] data_mem [0:{depth - 1}];
  reg valid_mem [0:{depth - 1}];
  integer cycles = 0;
  integer t = 0;
  integer fd = 0;

  {top} core (.clk(clk), .rst(rst), .in_valid(in_valid), .{input_port}(in_data), .out_valid(out_valid),
    .out_class(out_class), .out_scores(out_scores));

  initial begin
    if (!$value$plusargs("cycles=%d", cycles)) cycles = 0;
    if (cycles > {depth}) cycles = {depth};
    if (cycles > 0) begin
      $readmemh("{DATA_FILE}", data_mem, 0, cycles - 1);
      $readmemh("{VALID_FILE}", valid_mem, 0, cycles - 1);
    end
    fd = $fopen("{RESULTS_FILE}", "w");
  end

  always @(posedge clk) begin
    if (t >= 1 && !done) begin
      if (out_valid === 1'b1)
        $fdisplay(fd, "%0d %h %h", t, out_class, out_scores);
      else if (out_valid !== 1'b0)
        $fdisplay(fd, "%0d x", t);
    end
    t <= t + 1;
    rst <= (t + 1 < {RESET_CYCLES});
    if (t + 1 >= {RESET_CYCLES} && t + 1 - {RESET_CYCLES} < cycles) begin
      in_valid <= valid_mem[t + 1 - {RESET_CYCLES}];
      in_data <= data_mem[t + 1 - {RESET_CYCLES}];
    end else begin
      in_valid <= 1'b0;
    end
    if (t == {RESET_CYCLES} + cycles + {latency} + 2 && !done) begin
      $fclose(fd);
      done <= 1'b1;
    end
  end
endmodule
"""


def _hex_lines(values, width):
    """One hexadecimal line per row of little-endian ``values`` bytes, ``ceil(width / 4)`` digits."""
    values = np.ascontiguousarray(np.asarray(values, dtype=np.uint8)[:, ::-1])
    nbytes = values.shape[1]
    digits = max(1, -(-width // 4))
    text = values.tobytes().hex()
    step = 2 * nbytes
    skip = step - digits
    return "\n".join(text[i + skip:i + step] for i in range(0, len(text), step)) + "\n"


def write_harness_vectors(directory, values, gaps, width, seed):
    """Write the cycle-by-cycle stimulus of samples ``values`` (``[N, bytes]``, little-endian port
    values), with ``gaps[i]`` idle cycles (``in_valid`` low, random data) before sample ``i``.
    Returns ``(cycles, sample_cycles)``: the number of cycles and the cycle index (from the first
    word) of every sample."""
    values = np.asarray(values, dtype=np.uint8)
    gaps = np.asarray(gaps, dtype=np.int64)
    count = len(values)
    sample_cycles = np.arange(count, dtype=np.int64) + np.cumsum(gaps)
    cycles = int(sample_cycles[-1]) + 1 if count else 0
    words = np.zeros((cycles, values.shape[1] if values.ndim == 2 else 0), dtype=np.uint8)
    valid = np.zeros(cycles, dtype=np.uint8)
    idle = np.ones(cycles, dtype=bool)
    if count:
        idle[sample_cycles] = False
        words[sample_cycles] = values
        valid[sample_cycles] = 1
        rng = np.random.Generator(np.random.PCG64(seed))
        noise = rng.integers(0, 256, size=(int(idle.sum()), words.shape[1]), dtype=np.uint8)
        if words.shape[1] and width % 8:
            noise[:, -1] &= (1 << (width % 8)) - 1
        words[idle] = noise
    directory = Path(directory)
    atomic_write_text(directory / DATA_FILE, _hex_lines(words, width) if cycles else "")
    atomic_write_text(directory / VALID_FILE, "".join("1\n" if v else "0\n" for v in valid))
    return cycles, sample_cycles


def read_harness_results(path, classes, score_width):
    """``(cycles, classes, scores, unknown)`` from a harness ``results.txt``: the cycle of every
    valid output, its class and per-class scores, and a description of the first output that held
    X or Z (``None`` if none did)."""
    cycles, out_classes, scores, unknown = [], [], [], None
    mask = (1 << score_width) - 1
    shifts = [c * score_width for c in range(classes)]
    text = Path(path).read_text() if Path(path).is_file() else ""
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        try:
            cycle = int(fields[0])
        except ValueError:
            unknown = unknown or f"unreadable harness output line {line[:60]!r}"
            continue
        if len(fields) != 3:
            unknown = unknown or f"out_valid is X or Z at cycle {cycle}"
            continue
        try:
            cls, packed = int(fields[1], 16), int(fields[2], 16)
        except ValueError:
            unknown = unknown or f"out_class/out_scores hold X or Z at cycle {cycle}"
            continue
        cycles.append(cycle)
        out_classes.append(cls)
        scores.append([(packed >> s) & mask for s in shifts])
    return (np.asarray(cycles, dtype=np.int64), np.asarray(out_classes, dtype=np.int64),
            np.asarray(scores, dtype=np.int64).reshape(-1, classes), unknown)
