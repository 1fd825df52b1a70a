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
