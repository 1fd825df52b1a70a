"""``dlgn compile``: build directory, report, Verilog, and one-line user errors."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from dlgn.cli import main
from dlgn.compile import netlist as ir
from dlgn.compile.build import compile_netlist, compile_run, first_mismatch
from dlgn.compile.errors import CompileError
from dlgn.compile.golden import GoldenModel
from dlgn.compile.synthetic import random_netlist
from dlgn.train.checkpoint import load_model
from dlgn.train.data import load_dataset

REPORT_KEYS = {"passes", "gates", "depth", "estimated_luts", "lut_size", "pipeline_every", "output_every",
               "pipeline_stages", "latency_cycles", "score_width", "class_width", "classes", "in_bits", "encoder",
               "ports", "stage_latency", "checks", "timings", "files"}


@pytest.fixture(scope="module")
def digits_build(digits_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    assert main(["compile", str(digits_run), "-o", str(out), "--encoder", "--pipeline-every", "1"]) == 0
    return out


def test_cli_writes_the_build_directory(digits_build, digits_run):
    names = {p.name for p in digits_build.iterdir()}
    assert names == {"netlist.json", "dlgn_core.v", "dlgn_core.il", "compile_report.json", "compile_summary.txt",
                     "prove_report.json"}
    report = json.loads((digits_build / "compile_report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["encoder"] is True and report["in_features"] == 64 and report["feature_width"] == 8
    assert report["pipeline_every"] == 1 and report["output_every"] == 2 and report["lut_size"] == 4
    assert [p["name"] for p in report["passes"]] == ["discretized", "simplify", "remove_dead", "strash", "pack_luts"]
    assert report["passes"][0]["gates"] == 800 and report["gates"] == report["passes"][-1]["gates"]
    assert report["checks"]["trained_model"]["test_samples"] == 359
    assert report["ports"] == {"clk": 1, "rst": 1, "in_valid": 1, "in_features": 512, "out_valid": 1,
                               "out_class": 4, "out_scores": 10 * report["score_width"]}
    summary = (digits_build / "compile_summary.txt").read_text()
    assert "latency" in summary and "pack_luts" in summary


def test_built_netlist_reproduces_the_trained_model(digits_build, digits_run):
    net, encoder, info = load_model(digits_run)
    data = load_dataset("digits", seed=info["config"]["train"]["seed"])
    netlist = ir.load(digits_build / "netlist.json")
    expected = net.scores(encoder.encode(data.x_test)).numpy()
    np.testing.assert_array_equal(GoldenModel(netlist).scores(features=data.x_test), expected)


def test_verilog_has_the_documented_interface(digits_build):
    report = json.loads((digits_build / "compile_report.json").read_text())
    verilog = (digits_build / "dlgn_core.v").read_text()
    header = re.search(r"module dlgn_core\(([^)]*)\);", verilog)
    assert header and set(p.strip() for p in header.group(1).split(",")) == set(report["ports"])
    for port, width in report["ports"].items():
        direction = "output" if port.startswith("out_") else "input"
        declared = f"{direction} [{width - 1}:0] {port};" if width > 1 else f"{direction} {port};"
        assert declared in verilog
    # flat: one module, one scalar net per gate, no wide vectors besides the ports
    assert verilog.count("endmodule") == 1
    assert re.search(r"wire \\core\.g\d+ ;", verilog)
    rtlil = (digits_build / "dlgn_core.il").read_text()
    assert "module \\dlgn_core\n" in rtlil and "module \\dlgn_core.core\n" in rtlil


def _icarus_run(build, vectors, netlist, report, tmp_path):
    """Simulate the emitted Verilog with Icarus on ``vectors`` (one input word per sample)."""
    port = "in_features" if report["encoder"] else "in_bits"
    width, latency = report["ports"][port], report["latency_cycles"]
    out_w = report["ports"]["out_scores"]
    (tmp_path / "vectors.hex").write_text("".join(f"{v:x}\n" for v in vectors))
    bench = f"""
`timescale 1ns/1ps
module bench;
  reg clk = 0, rst = 0, in_valid = 0;
  reg [{width - 1}:0] data;
  reg [{width - 1}:0] mem [0:{len(vectors) - 1}];
  wire out_valid; wire [{report['ports']['out_class'] - 1}:0] out_class; wire [{out_w - 1}:0] out_scores;
  dlgn_core dut(.clk(clk), .rst(rst), .in_valid(in_valid), .{port}(data), .out_valid(out_valid),
                .out_class(out_class), .out_scores(out_scores));
  integer i;
  initial begin
    $readmemh("vectors.hex", mem);
    for (i = 0; i < {len(vectors) + latency + 1}; i = i + 1) begin
      in_valid = i < {len(vectors)};
      data = i < {len(vectors)} ? mem[i] : 0;
      #1;
      if (out_valid) $display("%0d %0d %h", i, out_class, out_scores);
      clk = 1; #1; clk = 0;
    end
    $finish;
  end
endmodule
"""
    (tmp_path / "bench.v").write_text(bench)
    subprocess.run(["iverilog", "-g2012", "-o", "sim.vvp", "bench.v", str(build / "dlgn_core.v")], cwd=tmp_path,
                   check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines() if re.match(r"^\d+ \d+ [0-9a-f]+$", line)]
    w = report["score_width"]
    cycles = [int(r[0]) for r in rows]
    classes = [int(r[1]) for r in rows]
    scores = np.array([[(int(r[2], 16) >> (c * w)) & ((1 << w) - 1) for c in range(netlist.classes)] for r in rows])
    return cycles, classes, scores


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog (apt install iverilog) is not installed")
@pytest.mark.parametrize("pipeline_every,encoder", [(0, False), (2, True)])
def test_emitted_verilog_matches_golden_in_icarus(tmp_path, pipeline_every, encoder):
    netlist = random_netlist(in_bits=21, widths=(40, 30, 24), classes=4, seed=21, encoding=True)
    build = tmp_path / "build"
    report = compile_netlist(netlist, build, pipeline_every=pipeline_every, encoder=encoder, log=lambda *a: None)
    compiled = ir.load(build / "netlist.json")
    rng = np.random.default_rng(pipeline_every)
    if encoder:
        x = rng.integers(0, 256, (64, compiled.encoding.features))
        vectors = [sum(int(v) << (8 * f) for f, v in enumerate(row)) for row in x]
        expected = GoldenModel(compiled).scores(features=x)
    else:
        bits = rng.integers(0, 2, (64, compiled.in_bits))
        vectors = [sum(int(v) << i for i, v in enumerate(row)) for row in bits]
        expected = GoldenModel(compiled).scores(bits)
    cycles, classes, scores = _icarus_run(build, vectors, compiled, report, tmp_path)
    np.testing.assert_array_equal(scores, expected)
    assert classes == list(expected.argmax(axis=1))
    assert cycles == [i + report["latency_cycles"] for i in range(len(vectors))]


def test_compile_from_a_netlist_file(tmp_path):
    netlist = random_netlist(in_bits=10, widths=(20, 12), classes=3, seed=2)
    ir.save(netlist, tmp_path / "in.json")
    report = compile_run(tmp_path / "in.json", tmp_path / "b", lut_size=6, pipeline_every=0, verilog=False,
                         log=lambda *a: None)
    assert report["latency_cycles"] == 0 and report["lut_size"] == 6 and report["output_every"] == 0
    assert not (tmp_path / "b" / "dlgn_core.v").exists() and (tmp_path / "b" / "dlgn_core.il").exists()
    bits = np.random.default_rng(0).integers(0, 2, (500, 10))
    np.testing.assert_array_equal(GoldenModel(ir.load(tmp_path / "b" / "netlist.json")).scores(bits),
                                  GoldenModel(netlist).scores(bits))


def test_first_mismatch_names_sample_class_and_stage():
    a = np.array([[1, 2], [3, 4]])
    assert first_mismatch(a, a.copy(), "x") is None
    b = a.copy()
    b[1, 0] = 9
    assert first_mismatch(a, b, "after strash") == "after strash: sample 1, class 0: score 9, expected 3"


def _cli_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    err = _cli_error(capsys, ["compile", str(tmp_path / "missing"), "-o", str(tmp_path / "b")])
    assert "neither a run directory nor a netlist file" in err
    err = _cli_error(capsys, ["compile", str(tmp_path), "-o", str(tmp_path / "b")])
    assert "not a dlgn run directory" in err
    (tmp_path / "bad.json").write_text('{"format": "dlgn-netlist", "version": 1, "in_bits": 2')
    err = _cli_error(capsys, ["compile", str(tmp_path / "bad.json"), "-o", str(tmp_path / "b")])
    assert "damaged or not a dlgn netlist" in err
    netlist = random_netlist(in_bits=6, widths=(8,), classes=2, seed=1)
    ir.save(netlist, tmp_path / "n.json")
    err = _cli_error(capsys, ["compile", str(tmp_path / "n.json"), "-o", str(tmp_path / "b"), "--lut-size", "5"])
    assert "--lut-size must be one of 4, 6" in err
    err = _cli_error(capsys, ["compile", str(tmp_path / "n.json"), "-o", str(tmp_path / "b"), "--encoder"])
    assert "--encoder needs a netlist with a thermometer input encoding" in err
    err = _cli_error(capsys, ["compile", str(tmp_path / "n.json"), "-o", str(tmp_path / "b"), "--pipeline-every", "-1"])
    assert "--pipeline-every must be a non-negative integer" in err
    (tmp_path / "file").write_text("x")
    err = _cli_error(capsys, ["compile", str(tmp_path / "n.json"), "-o", str(tmp_path / "file")])
    assert "exists and is not a directory" in err


def test_yosys_failure_is_a_compile_error(tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", "false")
    netlist = random_netlist(in_bits=6, widths=(8,), classes=2, seed=1)
    with pytest.raises(CompileError, match="Yosys .* failed with exit code 1"):
        compile_netlist(netlist, tmp_path, log=lambda *a: None)
    monkeypatch.setenv("YOSYS", str(tmp_path / "no-such-yosys"))
    with pytest.raises(CompileError, match="is not an executable"):
        compile_netlist(netlist, tmp_path, log=lambda *a: None)


def test_verification_failure_names_the_stage(digits_run, tmp_path, monkeypatch):
    from dlgn.train.layers import LogicNet

    original = LogicNet.scores

    def off_by_one(self, bits):
        scores = original(self, bits)
        scores[3, 2] += 1
        return scores

    monkeypatch.setattr(LogicNet, "scores", off_by_one)
    with pytest.raises(CompileError, match=r"verification failed: golden model of the discretized netlist vs "
                                           r"trained model \(eval mode\): sample 3, class 2"):
        compile_run(digits_run, tmp_path, verilog=False, log=lambda *a: None)


def test_a_broken_pass_is_caught_and_named(tmp_path, monkeypatch):
    from dlgn.compile import passes as P
    from dlgn.compile.netlist import Netlist

    original = P.strash

    def broken_strash(netlist):
        out = original(netlist)
        (inputs, table), *rest = out.gates
        return Netlist(out.in_bits, [(inputs, table ^ 1), *rest], out.groups, out.encoding, out.source)

    monkeypatch.setattr(P, "strash", broken_strash)
    netlist = random_netlist(in_bits=10, widths=(20, 12), classes=3, seed=2, degenerate=0.0)
    with pytest.raises(CompileError, match=r"verification failed: golden model after pass strash: sample \d+, class"):
        compile_netlist(netlist, tmp_path, verilog=False, log=lambda *a: None)
