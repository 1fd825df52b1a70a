"""Config keys, values and their errors."""

import pytest

from dlgn.train.config import (DEFAULTS, ConfigError, apply_overrides, dump_toml, load_config, parse_override,
                               validate)

STABLE_KEYS = ["data.name", "data.thresholds", "model.width", "model.depth", "model.gate_inputs",
               "model.parametrization", "model.estimator", "model.init", "model.tau", "train.epochs",
               "train.batch_size", "train.lr", "train.seed", "train.gumbel", "train.device"]


def test_stable_keys_exist():
    for key in STABLE_KEYS:
        section, name = key.split(".")
        assert name in DEFAULTS[section], key


def test_unknown_key_names_nearest(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'model.widht'; did you mean 'model.width'"):
        apply_overrides(load_config(), ["model.widht=10"])
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        load_config(path)
    path.write_text("[modle]\nwidth = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'model.width'"):
        load_config(path)


def test_types_and_values():
    with pytest.raises(ConfigError, match="model.width must be int, not 'wide'"):
        apply_overrides(load_config(), ["model.width=wide"])
    with pytest.raises(ConfigError, match="train.gumbel must be bool"):
        apply_overrides(load_config(), ["train.gumbel=1"])
    config = apply_overrides(load_config(), ["train.lr=1", "train.gumbel=true", "model.estimator=sigmoid"])
    assert config["train"]["lr"] == 1.0 and isinstance(config["train"]["lr"], float)
    assert config["train"]["gumbel"] is True and config["model"]["estimator"] == "sigmoid"
    for bad, message in [
        ("model.parametrization=xor", "model.parametrization must be one of iwp, op"),
        ("model.gate_inputs=7", "model.gate_inputs must be 1..6"),
        ("model.depth=0", "model.depth must be positive"),
        ("train.device=tpu", "train.device must be auto, cpu, cuda or cuda:N"),
        ("data.name=svhn", "data.name must be one of"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate(apply_overrides(load_config(), [bad]))


def test_cross_checks():
    with pytest.raises(ConfigError, match="two-input gates only"):
        validate(apply_overrides(load_config(), ["model.parametrization=op", "model.gate_inputs=4"]))
    with pytest.raises(ConfigError, match="weight_decay must be 0 with model.parametrization = 'iwp'"):
        validate(apply_overrides(load_config(), ["train.weight_decay=0.01"]))
    validate(apply_overrides(load_config(), ["model.parametrization=op", "train.weight_decay=0.01"]))


def test_override_parsing():
    assert parse_override("data.name=digits") == ("data.name", "digits")
    assert parse_override("train.lr = 0.05") == ("train.lr", 0.05)
    assert parse_override('data.data_dir="/x y"') == ("data.data_dir", "/x y")
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_override("model.width")


def test_bad_toml_and_missing_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model\nwidth = 3")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_dump_round_trip(tmp_path):
    config = apply_overrides(load_config(), ['data.data_dir="a\\"b"', "train.gumbel=true"])
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(config))
    assert load_config(path) == config


def test_shipped_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "configs"
    names = sorted(p.name for p in root.glob("*.toml"))
    assert "default.toml" in names and "fashion_mnist_large.toml" in names
    for path in root.glob("*.toml"):
        validate(load_config(path))


def test_triton_kernels_need_cuda(tmp_path, capsys, monkeypatch):
    from dlgn.cli import main

    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the kernel tests turn the interpreter on for the session
    assert main(["train", "--set", "data.name=digits", "--set", "train.kernels=triton", "--set", "train.device=cpu",
                 "--out", str(tmp_path / "r")]) == 2
    assert "train.kernels = 'triton' needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_window_must_fit_the_gate():
    with pytest.raises(ConfigError, match="model.window must be at least model.gate_inputs"):
        validate(apply_overrides(load_config(), ["model.wiring=windowed", "model.window=3", "model.gate_inputs=4"]))
    validate(apply_overrides(load_config(), ["model.wiring=windowed", "model.groups=interleaved"]))


def test_per_layer_widths_and_gate_inputs(tmp_path):
    from dlgn.train.config import describe_layers, layer_gate_inputs, layer_widths

    config = validate(apply_overrides(load_config(), ["model.widths=[8000, 4000, 1000]", "model.gate_inputs=[4, 4, 2]"]))
    assert layer_widths(config["model"]) == [8000, 4000, 1000]
    assert layer_gate_inputs(config["model"]) == [4, 4, 2]
    assert describe_layers(config["model"]) == ("8000-4000-1000", "4/4/2")
    uniform = validate(load_config())
    assert layer_widths(uniform["model"]) == [16000] * 4 and layer_gate_inputs(uniform["model"]) == [2] * 4
    assert describe_layers(uniform["model"]) == ("4 x 16000", "2")
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(config))
    assert load_config(path) == config
    # gate_inputs as a list follows model.depth when widths is not set
    validate(apply_overrides(load_config(), ["model.depth=2", "model.gate_inputs=[6, 2]"]))


@pytest.mark.parametrize("overrides, message", [
    (["model.widths=[]"], r"model.widths must list at least one layer; remove the key"),
    (["model.widths=[8000, 0, 1000]"], r"model.widths\[1\] must be a positive number of gates, not 0"),
    (["model.widths=[8000, -5, 1000]"], r"model.widths\[1\] must be a positive number of gates"),
    (["model.widths=[8000, 1005]"], r"model.widths\[-1\] = 1005 \(the last layer\) must be a multiple of "
                                    r"fashion-mnist's 10 classes.*try 1000"),
    (["model.widths=8000"], r"model.widths must be a list of integers, one per layer"),
    (["model.widths=[8000, 2.5]"], r"model.widths must be a list of integers"),
    (["model.widths=[true]"], r"model.widths must be a list of integers"),
    (["model.widths=[800, 800]", "model.gate_inputs=[4, 4, 2]"],
     r"model.gate_inputs lists 3 layers but model.widths gives 2"),
    (["model.depth=2", "model.gate_inputs=[4]"], r"model.gate_inputs lists 1 layers but model.depth gives 2"),
    (["model.widths=[800, 800]", "model.gate_inputs=[4, 7]"], r"model.gate_inputs must be 1..6"),
    (["model.widths=[800, 800]", "model.gate_inputs=[]"], r"model.gate_inputs must list at least one layer"),
    (["model.parametrization=op", "model.gate_inputs=[2, 2, 4, 2]"], r"two-input gates only"),
])
def test_bad_widths_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(apply_overrides(load_config(), overrides))


def test_bad_widths_one_line_through_the_command(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dlgn", "train", "--set", "model.widths=[1000, 0]",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "model.widths[1] must be a positive" in proc.stderr
    assert not (tmp_path / "r").exists()


BOARD_CONFIGS = {"ulx3s-85f": "ulx3s-85f.toml", "ulx3s-25f": "ulx3s-25f.toml", "ulx3s-12f": "ulx3s-12f.toml",
                 "icebreaker": "icebreaker.toml"}
#: further models for a board (file -> board)
MORE_BOARD_CONFIGS = {"ulx3s-12f-learned.toml": "ulx3s-12f", "ulx3s-25f-learned.toml": "ulx3s-25f",
                      "ulx3s-25f-windowed.toml": "ulx3s-25f",
                      "ulx3s-85f-narrow.toml": "ulx3s-85f"}


@pytest.mark.parametrize("board,config_file", sorted([*((b, f) for b, f in BOARD_CONFIGS.items()),
                                                      *((b, f) for f, b in MORE_BOARD_CONFIGS.items())]))
def test_board_configs_fit_their_boards(board, config_file):
    """Every board's config fits its board by the estimate --fit uses (the gates that reach an
    output, as LUTs) with the uart top; the 85F's is the default model."""
    from pathlib import Path

    import numpy as np

    from dlgn.boards.targets import get_board
    from dlgn.train.config import layer_gate_inputs, layer_widths
    from dlgn.train.encoding import Thermometer
    from dlgn.train.fit import untrained_estimate

    root = Path(__file__).resolve().parent.parent / "configs"
    config = validate(load_config(root / config_file))
    target = get_board(board)
    d, m = config["data"], config["model"]
    thresholds = Thermometer.fit(np.zeros((1, 784), dtype=np.uint8), d["thresholds"], d["encoding"], 255).thresholds
    estimate = untrained_estimate(layer_widths(m), layer_gate_inputs(m), 10, m["groups"], thresholds, target.family,
                                  "uart")
    assert estimate["total"] < target.lut4, estimate
    if config_file == "ulx3s-85f.toml":
        default = validate(load_config(root / "default.toml"))
        assert config == default


def test_reachable_gates_match_the_measured_sweep():
    """The reachability estimate --fit uses, against the LUT4 the compiler kept of the trained
    width-sweep models (bench/results/widths-2026-12-01.json): within 6%."""
    from dlgn.train.fit import reachable_gates

    for widths, measured in (([8000, 8000, 8000], 22532), ([11000, 11000, 2000], 16594),
                             ([11500, 11500, 1000], 11800)):
        assert sum(reachable_gates(widths, [4, 4, 4])) == pytest.approx(measured, rel=0.06)
    assert reachable_gates([100, 10], [2, 2])[1] == 10


def test_make_picks_the_board_config():
    """`make train BOARD=ulx3s-25f` trains configs/ulx3s-25f.toml into runs/ulx3s-25f and
    `make bitstream BOARD=ulx3s-25f` builds that run; without a board config: the default."""
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parent.parent

    def dry(*args):
        return subprocess.run(["make", "-n", "-C", str(root), *args], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}).stdout

    out = dry("train", "BOARD=ulx3s-25f", "STAMP=/dev/null")
    assert "dlgn train configs/ulx3s-25f.toml --out runs/ulx3s-25f" in out
    out = dry("bitstream", "BOARD=ulx3s-25f", "STAMP=/dev/null")
    assert "dlgn bitstream build/ulx3s-25f --board ulx3s-25f" in out
    assert "--router" not in out  # nextpnr's default unless ROUTER is given
    # the 12F model routes with router1 only (Makefile); ROUTER= still chooses
    assert "--router router1" in dry("bitstream", "BOARD=ulx3s-12f", "STAMP=/dev/null")
    assert "--router router2" in dry("bitstream", "BOARD=ulx3s-12f", "ROUTER=router2", "STAMP=/dev/null")
    out = dry("bitstream", "CONFIG=configs/conv.toml", "ROUTER=router1", "STAMP=/dev/null")
    assert "dlgn bitstream build/conv --board ulx3s --top uart" in out and "--router router1" in out
    out = dry("train", "STAMP=/dev/null")
    assert "dlgn train configs/default.toml --out runs/default" in out


def test_make_compile_recompiles_when_the_register_stages_change(tmp_path):
    """`make compile` keeps a build only when it was compiled with the register stages asked for
    (PIPELINE_EVERY, OUTPUT_EVERY; the ULX3S-25F defaults to one stage after the core) and passes
    them to dlgn compile; run through make with a stand-in dlgn that records its arguments."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import time
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parent.parent
    venv, calls = tmp_path / "venv", tmp_path / "calls.txt"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "bin" / "dlgn").write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    (venv / "bin" / "dlgn").chmod(0o755)
    stamp = tmp_path / "installed"
    stamp.touch()
    run, build = tmp_path / "run", tmp_path / "build"
    run.mkdir()
    build.mkdir()
    for name in ("summary.json", "summary.txt", "model.safetensors"):
        (run / name).write_text("{}\n")
    old = time.time() - 100
    os.utime(run / "model.safetensors", (old, old))

    def make(report, *args):
        (build / "compile_report.json").write_text(json.dumps(report))
        calls.unlink(missing_ok=True)
        proc = subprocess.run(["make", "-C", str(root), "compile", f"VENV={venv}", f"STAMP={stamp}", f"RUN={run}",
                               f"BUILD={build}", *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return calls.read_text().strip() if calls.is_file() else None

    default = {"build_id": "b", "pipeline_every": 2, "output_every": 2}
    assert make(default) is None  # up to date
    assert make(default, "PIPELINE_EVERY=5") == f"compile {run} -o {build} --pipeline-every 5"
    assert make(default, "BOARD=ulx3s-25f") == f"compile {run} -o {build} --pipeline-every 5"
    assert make(dict(default, pipeline_every=5), "BOARD=ulx3s-25f") is None
    assert make(dict(default, pipeline_every=5), "BOARD=ulx3s-25f", "OUTPUT_EVERY=1") == \
        f"compile {run} -o {build} --pipeline-every 5 --output-every 1"
    assert make(dict(default, pipeline_every=5)) == f"compile {run} -o {build}"  # back to the default
    assert make({"build_id": "b", "pipeline_every": 0, "output_every": 0}, "PIPELINE_EVERY=0") is None
    assert make({"pipeline_every": 2, "output_every": 2}) == f"compile {run} -o {build}"  # no build_id: older dlgn


def test_fit_counts_the_convolutional_trees():
    """--fit counts a convolutional layer's trees at every position (a tree of L leaves in
    ceil((L - 1) / 3) LUT4s, one LUT4 per OR pool) on top of the dense layers, so a conv model's
    estimate covers its real builds on the ULX3S-85F: 19,112 logic cells with channel-major features
    (bench/results/conv-ulx3s-85f-2026-12-01.json), 20,416 position-major (the conv row of
    bench/results/boards-2026-12-01.json)."""
    from pathlib import Path

    import numpy as np

    from dlgn.train.config import layer_gate_inputs, layer_widths
    from dlgn.train.encoding import Thermometer
    from dlgn.train.fit import conv_luts, untrained_estimate

    root = Path(__file__).resolve().parent.parent / "configs"
    m = validate(load_config(root / "conv.toml"))["model"]
    # 16 channels x 26 x 26 positions, one LUT4 per depth-2 binary tree, then 16 x 13 x 13 OR pools
    assert conv_luts(m["conv"], (1, 28, 28), 3) == (16 * 26 * 26 + 16 * 13 * 13, 16 * 13 * 13)
    digits = validate(load_config(root / "conv_digits.toml"))["model"]["conv"]
    assert conv_luts(digits, (1, 8, 8), 3) == (16 * 36 + 16 * 9, 16 * 9)
    # depth-3 binary trees: 8 leaves in 3 LUT4s; 6-input gates: 4 LUT4 each, no packing
    layer = dict(m["conv"][0], channels=2, tree_depth=3, pool=1)
    assert conv_luts([layer], (1, 28, 28), 3)[0] == 2 * 26 * 26 * 3
    layer = dict(layer, tree_inputs=6, tree_depth=1)
    assert conv_luts([layer], (1, 28, 28), 3)[0] == 2 * 26 * 26 * 4
    thresholds = Thermometer.fit(np.zeros((1, 784), dtype=np.uint8), 3, "uniform", 255).thresholds
    args = (layer_widths(m), layer_gate_inputs(m), 10, m["groups"], thresholds, "ecp5", "uart")
    dense_only = untrained_estimate(*args)
    with_conv = untrained_estimate(*args, conv=m["conv"], image=(1, 28, 28))
    assert with_conv["core"] - dense_only["core"] == pytest.approx(13520, rel=0.01)
    assert with_conv["total"] >= 19112 > dense_only["total"]


def test_fit_leaves_room_for_the_convolutional_layers():
    """Fitted to a board, a conv model gets narrower dense layers than the same dense layers alone:
    the trees take their share of the budget."""
    import copy
    from pathlib import Path

    from dlgn.train.fit import fit_config

    config = validate(load_config(Path(__file__).resolve().parent.parent / "configs" / "conv_digits.toml"))
    dense = copy.deepcopy(config)
    dense["model"]["conv"] = []
    with_conv, estimate, board = fit_config(config, "icebreaker", log=lambda _: None)
    without, _, _ = fit_config(dense, "icebreaker", log=lambda _: None)
    assert config["model"]["widths"] == with_conv and sum(with_conv) < sum(without)
    assert estimate["total"] <= board.lut4 * 0.8
