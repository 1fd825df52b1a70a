"""``dlgn sim`` pieces that need no simulator: mismatch messages, port packing, user errors."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from dlgn.cli import main
from dlgn.compile.netlist import InputEncoding
from dlgn.sim import runner
from dlgn.sim.errors import SimError
from dlgn.compile.builddir import BuildDirError, load_build
from dlgn.sim.vectors import describe_index, first_mismatch, port_bytes


def _scores():
    scores = np.array([[3, 1, 0], [0, 2, 2], [1, 1, 4], [5, 0, 0]])
    return scores, scores.argmax(axis=1)


def test_equal_results_have_no_mismatch():
    scores, classes = _scores()
    assert first_mismatch(scores, classes, scores.copy(), classes.copy(), "stage", 2) is None


def test_mismatch_names_the_first_sample_class_and_stage():
    scores, classes = _scores()
    got = scores.copy()
    got[3, 2] += 1
    got[1, 1] -= 1
    message = first_mismatch(scores, classes, got, classes, "RTL simulation (icarus) vs golden model", 2)
    assert message.startswith("RTL simulation (icarus) vs golden model: test sample 1, class 1: score 1, expected 2")
    assert "2 mismatching samples" in message
    got = scores.copy()
    got[3, 0] = 9
    assert "random sample 1, class 0: score 9, expected 5" in first_mismatch(scores, classes, got, classes, "s", 2)
    # an offset shard names the sample by its place in the whole stream
    assert "random sample 5, class 0" in first_mismatch(scores, classes, got, classes, "s", 2, first_index=4)


def test_class_mismatch_with_equal_scores_is_reported():
    scores, classes = _scores()
    wrong = classes.copy()
    wrong[1] = 2  # scores tie 2:2, the lowest class (1) must win
    message = first_mismatch(scores, classes, scores, wrong, "stage", 10)
    assert "test sample 1: class 2, expected class 1 with equal scores" in message


def test_missing_results_are_a_mismatch():
    scores, classes = _scores()
    message = first_mismatch(scores, classes, scores[:3], classes[:3], "stage", 4)
    assert "got 3 results for 4 samples" in message


def test_sample_names():
    assert describe_index(0, 10) == "test sample 0"
    assert describe_index(12, 10) == "random sample 2"
    assert describe_index(0, 0) == "random sample 0"


def test_port_bytes_put_input_bit_i_at_port_bit_i():
    bits = np.zeros((2, 12), dtype=np.uint8)
    bits[0, 0] = bits[0, 9] = bits[1, 11] = 1
    build = SimpleNamespace(encoder=False)
    values = port_bytes(build, SimpleNamespace(bits=bits))
    assert [int.from_bytes(v.tobytes(), "little") for v in values] == [(1 << 0) | (1 << 9), 1 << 11]


@pytest.mark.parametrize("width", [8, 4])
def test_port_bytes_put_feature_f_at_bits_f_times_width(width):
    features = np.array([[1, 2, 3], [(1 << width) - 1, 0, 5]])
    encoding = InputEncoding(3, width, tuple((f, 0) for f in range(3)))
    build = SimpleNamespace(encoder=True, netlist=SimpleNamespace(encoding=encoding))
    values = port_bytes(build, SimpleNamespace(features=features))
    for row, value in zip(features, values):
        assert int.from_bytes(value.tobytes(), "little") == sum(int(x) << (f * width) for f, x in enumerate(row))


def test_verilator_too_old_or_missing_says_so(monkeypatch):
    monkeypatch.setattr(runner, "verilator_version", lambda: (5, 6))
    with pytest.raises(SimError, match=r"Verilator 5\.006 is installed, but cocotb 2 needs 5\.036 or newer"):
        runner.check_simulator("verilator")
    monkeypatch.setattr(runner, "verilator_version", lambda: None)
    with pytest.raises(SimError, match="Verilator is not installed.*--simulator icarus"):
        runner.check_simulator("verilator")
    monkeypatch.setattr(runner, "verilator_version", lambda: (5, 36))
    runner.check_simulator("verilator")
    with pytest.raises(SimError, match="must be one of icarus, verilator"):
        runner.check_simulator("questa")


def test_jobs_follow_cores_and_sample_count(monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 4)
    assert runner.default_jobs(100) == 1
    assert runner.default_jobs(2 * runner.MIN_SAMPLES_PER_JOB) == 2
    assert runner.default_jobs(100_000) == 4


def test_cli_refuses_a_directory_that_is_not_a_build(tmp_path, capsys):
    assert main(["sim", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a dlgn build directory" in err and "Traceback" not in err
    assert main(["sim", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_damaged_or_verilog_less_builds_are_refused(tmp_path):
    (tmp_path / "compile_report.json").write_text("{not json")
    with pytest.raises(BuildDirError, match="compile_report.json is damaged"):
        load_build(tmp_path)
    report = {"files": {"netlist": "netlist.json", "rtlil": "dlgn_core.il", "verilog": None}, "ports": {},
              "latency_cycles": 0, "classes": 2, "score_width": 2, "class_width": 1, "encoder": False}
    (tmp_path / "compile_report.json").write_text(json.dumps(report))
    with pytest.raises(BuildDirError, match="older dlgn .* recompile"):
        load_build(tmp_path)
    report.update(files={"netlist": None, "rtlil": None, "verilog": None}, files_sha256={}, build_id="x")
    (tmp_path / "compile_report.json").write_text(json.dumps(report))
    with pytest.raises(BuildDirError, match="--no-verilog"):
        load_build(tmp_path)


def test_bad_counts_are_user_errors(tmp_path, capsys):
    assert main(["sim", str(tmp_path), "--samples", "-1"]) == 2
    assert "--samples must be a non-negative integer" in capsys.readouterr().err
    assert main(["sim", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs must be a positive integer" in capsys.readouterr().err


def test_post_synthesis_runs_on_icarus_only(tmp_path):
    from dlgn.sim.check import simulate_build

    with pytest.raises(SimError, match="--post-synth runs on Icarus only"):
        simulate_build(tmp_path, simulator="verilator", post_synth=True)

