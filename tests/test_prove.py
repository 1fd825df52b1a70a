"""``dlgn prove``: the emitted core equals netlist.json for every input; a flipped table bit or a
swapped wire (in dlgn_core.v or in netlist.json) fails with a counterexample that ``dlgn sim``
replays; and the checkable claims of docs/hardware-contract.md."""

import json
import re
import shutil

import numpy as np
import pytest

from dlgn.cli import main
from dlgn.compile import netlist as ir
from dlgn.compile import prove as prove_module
from dlgn.compile.build import compile_netlist
from dlgn.compile.builddir import load_build
from dlgn.compile.golden import GoldenModel
from dlgn.compile.netlist import Netlist
from dlgn.compile.prove import ProveError, check_pipeline, prove_build, reference_verilog
from dlgn.compile.synthetic import random_netlist
from dlgn.sim.check import simulate_build
from dlgn.sim.errors import SimError
from dlgn.sim.replay import load_vectors

from buildtools import rehash_build


def _quiet(*_args, **_kwargs):
    pass


def _copy_build(build, dest):
    dest.mkdir()
    for path in build.iterdir():
        if path.is_file():
            shutil.copy(path, dest / path.name)
    return dest


def _random_bits(netlist, count=2000, seed=0):
    return (np.random.default_rng(seed).random((count, netlist.in_bits)) < 0.5).astype(np.uint8)


def _with_gate(netlist, g, gate):
    gates = list(netlist.gates)
    gates[g] = gate
    return Netlist(netlist.in_bits, gates, netlist.groups, netlist.encoding, netlist.source)


def _operand_tokens(line):
    """Netlist id -> its Verilog name in one ``assign`` line of dlgn_core.v."""
    tokens = {}
    for match in re.finditer(r"(\\core\.[gx](\d+)(?:_p\d+)? )|(in_bits\[(\d+)\])", line):
        if match.group(1):
            tokens[int(match.group(2))] = match.group(1).strip() + " "
        else:
            tokens[int(match.group(4)) + 2] = match.group(3)
    return tokens


def _gate_lines(text):
    """Gate id -> (start, end) of its ``assign \\core.g<id> = ...;`` statement in dlgn_core.v."""
    lines = {}
    for match in re.finditer(r"assign \\core\.g(\d+)  = ([^;]*);", text):
        lines[int(match.group(1))] = (match.start(2), match.end(2))
    return lines


def flip_table_bit_in_verilog(build_dir):
    """Rewrite one gate of ``build_dir``'s dlgn_core.v with one truth-table bit flipped (chosen so
    that some class score changes on random inputs); returns the netlist with the same flip."""
    build = load_build(build_dir)
    netlist, text = build.netlist, build.verilog.read_text()
    bits = _random_bits(netlist)
    expected = GoldenModel(netlist).scores(bits)
    lines = _gate_lines(text)
    for g in reversed(range(len(netlist.gates))):  # last-layer gates first: they feed the scores directly
        gid = netlist.gate_id(g)
        if gid not in lines:
            continue
        inputs, table = netlist.gates[g]
        start, end = lines[gid]
        tokens = _operand_tokens(text[start:end])
        if not all(i in tokens for i in inputs):
            continue
        for entry in range(1 << len(inputs)):
            flipped = _with_gate(netlist, g, (inputs, table ^ (1 << entry)))
            if (GoldenModel(flipped).scores(bits) != expected).any():
                operands = ", ".join(tokens[i] for i in reversed(inputs))
                rhs = f"{1 << len(inputs)}'h{table ^ (1 << entry):x} >> {{ {operands} }}"
                build.verilog.write_text(text[:start] + rhs + text[end:])
                rehash_build(build_dir)
                return flipped
    raise AssertionError("no gate of the build could be flipped observably")


def swap_wires_in_netlist(build_dir):
    """Swap two inputs of one gate in ``build_dir``'s netlist.json (observably); returns it."""
    build = load_build(build_dir)
    netlist = build.netlist
    bits = _random_bits(netlist)
    expected = GoldenModel(netlist).scores(bits)
    for g in reversed(range(len(netlist.gates))):
        inputs, table = netlist.gates[g]
        if len(set(inputs)) < 2:
            continue
        swapped = _with_gate(netlist, g, ((inputs[1], inputs[0]) + tuple(inputs[2:]), table))
        if (GoldenModel(swapped).scores(bits) != expected).any():
            ir.save(swapped, build.path / "netlist.json")
            rehash_build(build_dir)
            return swapped
    raise AssertionError("no observable wire swap")


@pytest.fixture(scope="module")
def proved_build(digits_build):
    """The session's digits build: `dlgn compile` proved it as its last step."""
    return digits_build


def test_compile_proves_the_build_it_writes(proved_build):
    report = json.loads((proved_build / "prove_report.json").read_text())
    compile_report = json.loads((proved_build / "compile_report.json").read_text())
    assert report["format"] == "dlgn-prove-report" and report["passed"] and report["result"] == "proved"
    assert report["build_id"] == compile_report["build_id"]
    assert report["verilog_sha256"] == compile_report["files_sha256"]["dlgn_core.v"]
    assert report["latency_cycles"] == compile_report["latency_cycles"] > 0
    assert report["build_dir"] == str(proved_build.resolve())
    assert len(report["covered"]) == 3 and report["seconds"] > 0
    assert report["covered"][0].startswith("pipeline structure")
    assert report["covered"][1].startswith("function") and "2^" in report["covered"][1]
    assert report["covered"][2].startswith("valid protocol")
    assert not (proved_build / "counterexample.json").exists()
    # a pipelined core proves stage by stage, without the whole-core miter
    assert "shown stage by stage" in report["covered"][1]
    assert report["timings"]["function_cut_parts"] >= 2


@pytest.mark.parametrize("pipeline_every", [1, 2])
def test_stage_by_stage_proof_in_several_parts(tmp_path, monkeypatch, pipeline_every):
    """Registers checked a few per part (as the default model's 7,835 are, 2,048 per part):
    every part and the outputs' part prove, and the whole-core miter never runs."""
    monkeypatch.setattr(prove_module, "CUT_PART", 7)
    netlist = random_netlist(in_bits=20, widths=(24, 16, 12), classes=3, seed=4)
    messages = []
    compile_netlist(netlist, tmp_path / "b", pipeline_every=pipeline_every, output_every=1, verify=False,
                    prove=True, log=lambda *a, **k: messages.append(" ".join(map(str, a))))
    report = json.loads((tmp_path / "b" / "prove_report.json").read_text())
    assert report["passed"] and "shown stage by stage" in report["covered"][1]
    registers = int(re.search(r"cut at its (\d+) pipeline registers", report["covered"][1]).group(1))
    # the registers 7 at a time, then each class's score, then the class
    assert report["timings"]["function_cut_parts"] == -(-registers // 7) + 3 + 1 >= 6
    assert not any("whole core at once" in m for m in messages)


def test_each_register_part_hands_abc_only_its_own_cones(tmp_path, monkeypatch):
    """A part of registers reads only its own bits of the cut: the n-th part's miter once kept the
    whole ``d ^ r`` of every register below it (Yosys trims only a wide cell's unread high bits),
    so the last parts held nearly the whole core and ran ABC out of memory on the narrow 85F
    model. Registered every level, each register's one-stage cone reads at most 4 registers of
    the stage before (or input bits), so a part of 7 hands ABC at most 28 inputs, whatever its place."""
    monkeypatch.setattr(prove_module, "CUT_PART", 7)
    real = prove_module._yosys_parts
    logs = []

    def keep_log(script, cwd, log_name, indices, timeout, shown):
        verdicts = real(script, cwd, log_name, indices, timeout, shown)
        logs.append((log_name, (cwd / log_name).read_text()))
        return verdicts

    monkeypatch.setattr(prove_module, "_yosys_parts", keep_log)
    netlist = random_netlist(in_bits=40, widths=(60, 48, 36), classes=3, seed=5)
    compile_netlist(netlist, tmp_path / "b", pipeline_every=1, output_every=1, verify=False, prove=True, log=_quiet)
    report = json.loads((tmp_path / "b" / "prove_report.json").read_text())
    assert report["passed"] and "shown stage by stage" in report["covered"][1]
    registers = int(re.search(r"cut at its (\d+) pipeline registers", report["covered"][1]).group(1))
    name, text = logs[0]
    assert name == "function_cut_0.log"
    inputs = [int(n) for n in re.findall(r"Extracted \d+ gates and \d+ wires to a netlist network with (\d+) inputs", text)]
    assert len(inputs) == -(-registers // 7) >= 15
    assert max(inputs) <= 28, inputs


def _prove_staged(tmp_path):
    """Compile (with the proof) a small 3-layer netlist pipelined every 2 levels; asserts that it
    proved stage by stage and returns ``(prove_report, log messages)``."""
    netlist = random_netlist(in_bits=20, widths=(24, 16, 12), classes=3, seed=4)
    messages = []
    compile_netlist(netlist, tmp_path / "b", pipeline_every=2, output_every=1, verify=False, prove=True,
                    log=lambda *a, **k: messages.append(" ".join(map(str, a))))
    report = json.loads((tmp_path / "b" / "prove_report.json").read_text())
    assert report["passed"] and "shown stage by stage" in report["covered"][1]
    return report, messages


def test_parts_that_yosys_left_without_a_verdict_get_a_run_of_their_own(tmp_path, monkeypatch):
    """A Yosys run of several parts that stops after the first (as WebAssembly Yosys did, out of
    memory, on the 25F model's third part): the parts without a verdict are proved one per run,
    and the proof still goes through stage by stage."""
    monkeypatch.setattr(prove_module, "CUT_PART", 7)
    real = prove_module._parts_script

    def stops_after_the_first_part(top, ref, indices):
        script = real(top, ref, indices)
        if len(indices) < 2:
            return script
        cut = script.index(f"design -load cut\nread_verilog miter_cut_{indices[1]}.v")
        return script[:cut] + "this_is_not_a_yosys_command\n" + script[cut:]

    monkeypatch.setattr(prove_module, "_parts_script", stops_after_the_first_part)
    report, messages = _prove_staged(tmp_path)
    again = [m for m in messages if "again in a Yosys run of its own" in m]
    assert len(again) == report["timings"]["function_cut_parts"] - 2  # all but the first of each run
    assert not any("not shown equal" in m or "whole core at once" in m for m in messages), messages


def test_a_run_past_the_step_limit_keeps_its_verdicts_and_goes_on_in_a_new_run(tmp_path, monkeypatch):
    """The step limit (``dlgn compile``'s 600 s) stops a Yosys run of many parts after it proved
    some: those verdicts stand and the parts left are proved in a new run (the narrow 85F
    model's 12 register parts take longer than the limit in one run); only a run that shows
    nothing in time is a timeout."""
    monkeypatch.setattr(prove_module, "CUT_PART", 7)
    real = prove_module._yosys_parts
    calls = []

    def limit_after_two_parts(script, cwd, log_name, indices, timeout, shown):
        calls.append((log_name, list(indices)))
        if len(calls) > 1 or len(indices) < 3:
            return real(script, cwd, log_name, indices, timeout, shown)
        # the run as if the limit struck after its second part
        cut = script.index(f"design -load cut\nread_verilog miter_cut_{indices[2]}.v")
        verdicts = real(script[:cut], cwd, log_name, indices, timeout, shown)
        assert verdicts[:2] == [True, True] and verdicts[2:] == [None] * (len(indices) - 2)
        error = prove_module.ProveTimeout("a Yosys step of the proof took longer than 600 s")
        error.verdicts = verdicts
        raise error

    monkeypatch.setattr(prove_module, "_yosys_parts", limit_after_two_parts)
    report, messages = _prove_staged(tmp_path)
    first = calls[0][1]
    assert calls[1] == ("function_cut_0_continued_1.log", first[2:])  # the rest, in one new run
    assert calls[2][0] == "function_cut_1.log" and len(calls) == 3
    assert any(f"passed the {prove_module.COMPILE_STEP_TIMEOUT} s step limit after 2 of its {len(first)} parts" in m for m in messages), messages
    assert not any("not shown equal" in m or "whole core at once" in m or "run of its own" in m for m in messages)


def test_a_part_without_a_verdict_even_alone_is_proved_in_halves(tmp_path, monkeypatch):
    """A part of registers that Yosys cannot finish even in a run of its own (as the narrow 85F
    model's last-layer parts ran ABC out of memory) is split in halves, each proved alone."""
    monkeypatch.setattr(prove_module, "CUT_PART", 7)
    monkeypatch.setattr(prove_module, "MIN_CUT_PART", 2)
    real = prove_module._parts_script
    whole = []

    def whole_parts_stop(top, ref, indices):
        if not whole:
            whole.extend(indices)  # the first run: every register part at its full size
        script = real(top, ref, indices)
        return ("this_is_not_a_yosys_command\n" + script) if set(indices) & set(whole) else script

    monkeypatch.setattr(prove_module, "_parts_script", whole_parts_stop)
    report, messages = _prove_staged(tmp_path)
    halved = [m for m in messages if "no verdict alone either, in two halves" in m]
    assert len(halved) == len(whole) >= 2
    assert report["timings"]["function_cut_parts"] == 3 * len(whole) + 3 + 1  # the halves, the scores, the class
    assert not any("not shown equal" in m or "whole core at once" in m for m in messages), messages


def test_stage_by_stage_proof_when_the_last_score_stage_holds_two_partial_sums(tmp_path):
    """Two classes of 115 members registered every 2 adder levels, as the ULX3S-25F model's are:
    the last register stage (level 6) holds two partial sums, ``_l6_0`` and ``_l6_1``, and the
    root's addition follows it under the argmax's name. The scores are then proved without a cut
    there: stage by stage still, never "not shown equal" (the proof used to take ``_l6_0_p3`` for
    the score, fail every class and fall back to the whole-core miter, which runs large models out
    of memory)."""
    rng = np.random.default_rng(5)
    in_bits, w1, w2 = 20, 40, 230
    base = 2 + in_bits
    both = [1, 2, 4, 6, 7, 8, 9, 11, 13, 14]  # two-input tables that read both inputs
    gates = [(tuple(int(v) for v in 2 + rng.choice(in_bits, 2, replace=False)), int(rng.choice(both)))
             for _ in range(w1)]
    gates += [(tuple(int(v) for v in base + rng.choice(w1, 2, replace=False)), int(rng.choice(both)))
              for _ in range(w2)]
    last = [base + w1 + i for i in range(w2)]
    netlist = Netlist(in_bits, gates, [last[c::2] for c in range(2)])
    messages = []
    compile_netlist(netlist, tmp_path / "b", pipeline_every=1, output_every=2, verify=False, prove=True, passes=(),
                    log=lambda *a, **k: messages.append(" ".join(map(str, a))))
    core = (tmp_path / "b" / "dlgn_core.v").read_text()
    assert "group_sum.c0_l6_1_p3" in core and "group_sum.c0_l7_" not in core  # the shape described above
    report = json.loads((tmp_path / "b" / "prove_report.json").read_text())
    assert report["passed"] and "shown stage by stage" in report["covered"][1]
    assert not any("not shown equal" in m or "whole core at once" in m for m in messages), messages


def test_stage_reference_refuses_a_stage_the_registers_do_not_carry():
    """A register whose value needs an input bit that the previous stage does not register:
    no stage-by-stage reference (the whole-core proof runs instead)."""
    netlist = Netlist(2, [((2, 3), 0x8), ((4, 2), 0x6)], [[5]])
    assert "cut_in" in reference_verilog(netlist, cut=[(2, 1), (3, 1), (4, 1), (5, 2)])
    with pytest.raises(prove_module._NoCut, match="input bit id 2 has no register in stage 1"):
        reference_verilog(netlist, cut=[(4, 1), (5, 2)])


def test_a_flipped_table_bit_in_the_verilog_fails_with_a_replayable_counterexample(proved_build, tmp_path, capsys):
    build = _copy_build(proved_build, tmp_path / "b")
    flipped = flip_table_bit_in_verilog(build)
    assert main(["prove", str(build)]) == 2
    captured = capsys.readouterr()
    # the stage-by-stage proof finds the register the flipped gate loads wrongly, the whole-core
    # miter then gives an input that shows it
    assert "not shown equal" in captured.out and "proving the whole core at once" in captured.out
    err = captured.err.strip()
    assert err.startswith("error: proof failed: dlgn_core.v differs from netlist.json") and "\n" not in err
    assert f"'dlgn sim {build.resolve()} --vectors {build.resolve() / 'counterexample.json'}'" in err
    report = json.loads((build / "prove_report.json").read_text())
    assert not report["passed"] and report["result"] == "failed" and report["counterexample"] == "counterexample.json"
    # the counterexample really separates the two: the Verilog computes the flipped netlist
    port_bits = load_vectors(build / "counterexample.json", load_build(build))
    original = GoldenModel(load_build(build).netlist).scores(port_bits)
    assert (GoldenModel(flipped).scores(port_bits) != original).any()
    cex = json.loads((build / "counterexample.json").read_text())
    assert cex["netlist_scores"] == original[0].tolist() and cex["build_id"] == report["build_id"]
    with pytest.raises(SimError, match=r"vs golden model: vector 0, class \d+: score \d+, expected \d+"):
        simulate_build(build, vectors=build / "counterexample.json", random_samples=0, simulator="icarus",
                       log=_quiet)
    sim_report = json.loads((build / "sim_report.json").read_text())
    assert sim_report["samples"] == 1 and sim_report["mismatches"] == 1
    assert sim_report["vectors_file"] == str(build / "counterexample.json")


def test_a_swapped_wire_in_the_netlist_fails_with_a_replayable_counterexample(proved_build, tmp_path):
    build = _copy_build(proved_build, tmp_path / "b")
    swapped = swap_wires_in_netlist(build)
    original = load_build(proved_build).netlist
    with pytest.raises(ProveError, match=r"proof failed: .*counterexample"):
        prove_build(build, log=_quiet)
    port_bits = load_vectors(build / "counterexample.json", load_build(build))
    assert (GoldenModel(swapped).scores(port_bits) != GoldenModel(original).scores(port_bits)).any()
    with pytest.raises(SimError, match="vector 0"):
        simulate_build(build, vectors=build / "counterexample.json", random_samples=0, simulator="icarus",
                       log=_quiet)


def test_an_unbalanced_pipeline_is_refused(tmp_path):
    """A register bypassed in dlgn_core.v computes the same function once the registers are
    collapsed, so only the structural check can see it (outputs would mix samples)."""
    netlist = random_netlist(in_bits=10, widths=(12, 8), classes=2, arities=(2, 3), seed=5)
    compile_netlist(netlist, tmp_path / "b", pipeline_every=1, output_every=0, verify=False, log=_quiet)
    build = tmp_path / "b"
    text = (build / "dlgn_core.v").read_text()
    match = re.search(r"(assign \\core\.g\d+  = [^;]*?)\\core\.g(\d+)_p1 ", text)
    assert match, "no gate reads a registered gate"
    start = match.end(1)
    text = text[:start] + f"\\core.g{match.group(2)} " + text[match.end():]
    (build / "dlgn_core.v").write_text(text)
    rehash_build(build)
    with pytest.raises(ProveError, match=r"combines signals from \[\d+, \d+\] register stages: the pipeline is "
                                         r"unbalanced|register stages after the input"):
        prove_build(build, log=_quiet)


def test_a_valid_stage_that_ignores_rst_fails(tmp_path):
    netlist = random_netlist(in_bits=10, widths=(12, 8), classes=2, arities=(2, 3), seed=5)
    compile_netlist(netlist, tmp_path / "b", pipeline_every=1, output_every=1, verify=False, log=_quiet)
    build = tmp_path / "b"
    text = (build / "dlgn_core.v").read_text()
    edited, count = re.subn(r"= rst \? 1'h0 : in_valid;", "= in_valid;", text)
    assert count == 1
    (build / "dlgn_core.v").write_text(edited)
    rehash_build(build)
    with pytest.raises(ProveError, match=r"proof failed: out_valid is not in_valid delayed by \d+ cycles with rst "
                                         r"clearing the pipeline"):
        prove_build(build, log=_quiet)


@pytest.mark.parametrize("pipeline_every,output_every", [(0, 0), (1, 1)])
def test_cores_with_the_on_chip_encoder_are_proved_over_the_raw_features(tmp_path, pipeline_every, output_every):
    netlist = random_netlist(in_bits=18, widths=(20, 12), classes=3, seed=2, encoding=True)
    netlist = Netlist(netlist.in_bits, netlist.gates, [netlist.groups[0] + [1, 1, 0], netlist.groups[1], []],
                      netlist.encoding, netlist.source)  # constant members and an empty group
    report = compile_netlist(netlist, tmp_path / "b", pipeline_every=pipeline_every, output_every=output_every,
                             encoder=True, verify=False, prove=True, log=_quiet)
    proof = json.loads((tmp_path / "b" / "prove_report.json").read_text())
    assert proof["passed"] and proof["input_port"] == "in_features"
    assert proof["input_width"] == netlist.encoding.features * 8 == report["ports"]["in_features"]
    assert proof["latency_cycles"] == report["latency_cycles"]


def test_compile_can_skip_the_proof_and_keeps_a_failed_one_aside(tmp_path, monkeypatch, capsys):
    netlist = random_netlist(in_bits=8, widths=(10, 6), classes=2, seed=1)
    ir.save(netlist, tmp_path / "n.json")
    assert main(["compile", str(tmp_path / "n.json"), "-o", str(tmp_path / "quick"), "--no-prove"]) == 0
    assert not (tmp_path / "quick" / "prove_report.json").exists()

    real = prove_module.reference_verilog

    def wrong_reference(n, **kwargs):  # a reference with one table bit flipped: the proof must fail
        inputs, table = n.gates[-1]
        return real(_with_gate(n, len(n.gates) - 1, (inputs, table ^ 1)), **kwargs)

    monkeypatch.setattr(prove_module, "reference_verilog", wrong_reference)
    out = tmp_path / "proved"
    assert main(["compile", str(tmp_path / "n.json"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "proof failed" in err and f"the unproved build is kept in {out.resolve()}-failed" in err
    assert not out.exists()
    failed = tmp_path / "proved-failed"
    assert json.loads((failed / "prove_report.json").read_text())["result"] == "failed"
    assert (failed / "counterexample.json").is_file()


def test_a_proof_that_runs_past_the_compile_limit_does_not_hold_up_the_compile(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prove_module, "COMPILE_STEP_TIMEOUT", 0.01)
    netlist = random_netlist(in_bits=8, widths=(10, 6), classes=2, seed=1)
    compile_netlist(netlist, tmp_path / "b", prove=True, verify=False)
    report = json.loads((tmp_path / "b" / "prove_report.json").read_text())
    assert report["result"] == "timeout" and not report["passed"] and "run 'dlgn prove" in report["note"]
    assert "proof not finished: a Yosys step of the proof took longer than 0.01 s" in capsys.readouterr().out
    assert not (tmp_path / "b" / "prove").exists()
    assert main(["prove", str(tmp_path / "b")]) == 0  # without the limit it proves
    assert json.loads((tmp_path / "b" / "prove_report.json").read_text())["result"] == "proved"


def test_a_proof_without_a_verdict_does_not_fail_the_compile(tmp_path, monkeypatch, capsys):
    """Yosys stopping without a verdict (the whole-core miter of a huge core ran it out of memory):
    nothing was shown either way, so the build is written with "result": "unfinished"; 'dlgn prove'
    says so in one line."""
    monkeypatch.setattr(prove_module, "_cut_points", lambda core_text, netlist: [])  # the whole-core miter
    monkeypatch.setattr(prove_module, "_function_script", lambda top, ref, miter: "read_verilog core.v\n")
    netlist = random_netlist(in_bits=8, widths=(10, 6), classes=2, seed=1)
    compile_netlist(netlist, tmp_path / "b", prove=True, verify=False)
    report = json.loads((tmp_path / "b" / "prove_report.json").read_text())
    assert report["result"] == "unfinished" and not report["passed"] and "without a verdict" in report["note"]
    assert not (tmp_path / "b" / "prove").exists() and (tmp_path / "b" / "dlgn_core.v").is_file()
    assert main(["prove", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the proof did not finish (Yosys stopped without a verdict") and "\n" not in err


def test_prove_user_errors_are_one_line(tmp_path, capsys):
    assert main(["prove", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a dlgn build directory" in err and "Traceback" not in err
    assert main(["prove", str(tmp_path), "--timeout", "0"]) == 2
    assert "--timeout must be a positive number" in capsys.readouterr().err


def test_pipeline_check_refuses_outputs_that_depend_on_rst():
    """A hand-made Yosys JSON: out_scores = in_bits & rst (no registers)."""
    doc = {"modules": {"dlgn_core": {
        "ports": {"in_bits": {"direction": "input", "bits": [2]}, "rst": {"direction": "input", "bits": [3]},
                  "out_scores": {"direction": "output", "bits": [4]}, "out_class": {"direction": "output",
                                                                                    "bits": ["0"]}},
        "cells": {"and": {"type": "$and", "port_directions": {"A": "input", "B": "input", "Y": "output"},
                          "connections": {"A": [2], "B": [3], "Y": [4]}}}}}}
    with pytest.raises(ProveError, match="depend on its input 'rst'"):
        check_pipeline(json.dumps(doc), "in_bits", 0)
    doc["modules"]["dlgn_core"]["cells"]["and"]["connections"]["B"] = ["1"]
    assert check_pipeline(json.dumps(doc), "in_bits", 0)["data_registers"] == 0


# --------------------------------------------------------------------------- docs/hardware-contract.md

def test_reference_writer_computes_the_documented_function(tmp_path):
    """The reference, simulated by Yosys's own evaluator (``eval``), gives the golden model's scores
    and class on the example of netlist-format.md §8."""
    from dlgn.compile.yosys import run_yosys

    netlist = Netlist(2, [((2, 3), 0x8), ((2, 3), 0x6), ((4, 5), 0xE)], [[4, 6], [5, 1]])
    (tmp_path / "ref.v").write_text(reference_verilog(netlist))
    for x, expected in ((0b01, (1, 2, 1)), (0b00, (0, 1, 1)), (0b11, (2, 1, 0))):
        run_yosys(f"read_verilog ref.v; hierarchy -top dlgn_ref; proc; flatten; "
                  f"tee -q -o out.txt eval -set in_bits {x} -show out_scores -show out_class", cwd=tmp_path)
        text = (tmp_path / "out.txt").read_text()
        scores = int(re.search(r"\\out_scores = \d+'([01]+)", text).group(1), 2)
        cls = int(re.search(r"\\out_class = \d+'([01]+)", text).group(1), 2)
        width = netlist.score_width
        assert (scores & ((1 << width) - 1), scores >> width, cls) == expected


def test_score_and_class_widths_follow_the_contract(tmp_path):
    """score_width counts constant-1 members and not constant-0 ones; class_width = bit_length(classes - 1)."""
    base = random_netlist(in_bits=6, widths=(6, 5), classes=5, arities=(2,), seed=0)
    members = [base.gate_id(g) for g in range(len(base.gates))][-5:]
    groups = [[members[0], 1, 1, 1], [members[1], 0, 0, 0, 0, 0, 0], [members[2]], [members[3]], [members[4], 1]]
    netlist = Netlist(base.in_bits, base.gates, groups, None, {})
    report = compile_netlist(netlist, tmp_path / "b", pipeline_every=0, output_every=0, verify=False, verilog=False,
                             passes=(), log=_quiet)
    assert report["score_width"] == (4).bit_length() == 3  # group 0: one gate and three constant-1 members
    assert report["class_width"] == (5 - 1).bit_length() == 3
    assert report["ports"]["out_scores"] == 5 * 3 and report["ports"]["out_class"] == 3
    assert report["ports"]["in_bits"] == 6


@pytest.mark.parametrize("k,s", [(0, 0), (1, 1), (2, 1), (3, 2), (1, 0)])
def test_latency_is_the_documented_sum(tmp_path, k, s):
    netlist = random_netlist(in_bits=12, widths=(16, 12, 10), classes=5, seed=4, encoding=True)
    report = compile_netlist(netlist, tmp_path / "b", pipeline_every=k, output_every=s, encoder=True, verify=False,
                             verilog=False, passes=(), log=_quiet)
    stages = report["stage_latency"]
    assert stages["encoder"] == (1 if k else 0)
    assert stages["core"] == (netlist.depth // k if k else 0)
    assert stages["argmax"] == ((5 - 1).bit_length() // s if s else 0)
    assert report["latency_cycles"] == sum(stages.values())
    assert report["ports"]["in_features"] == report["in_features"] * report["feature_width"]


def test_tabular_quantization_is_the_documented_map():
    from dlgn.train.data import _quantize

    x_train = np.array([[0.0, 5.0, 2.0], [127.5, 5.0, 4.0], [50.0, 5.0, 3.0]])
    x_test = np.array([[1.25, 7.0, 2.5], [200.0, 5.0, -100.0], [-3.0, 0.0, 3.0]])
    parts, quantization = _quantize({"train": (x_train, None), "test": (x_test, None)})
    assert quantization["offset"] == [0.0, 5.0, 2.0]  # the training minimum
    assert quantization["scale"] == [2.0, 0.0, 127.5]  # 255 / span, 0 for a constant feature
    # 1.25 * 2 = 2.5 rounds to even (2); clipped to 0..255; a constant feature is always 0
    assert parts["test"][0].tolist() == [[2, 0, 64], [255, 0, 0], [0, 0, 128]]
    assert parts["test"][0].dtype == np.uint8
