"""Training runs as a user starts them: the CLI, run-dir artifacts, checkpoints, resume."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlgn.cli import main
from dlgn.train import functional as F
from dlgn.train.checkpoint import CheckpointError, load_model
from dlgn.train.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--set", "model.width=500", "--set", "model.depth=2", "--set", "train.epochs=3",
         "--set", "train.lr=0.05"]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """The shipped digits config, trained once through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", str(ROOT / "configs" / "digits.toml"), "--out", str(out)]) == 0
    return out


def test_digits_run_beats_85_percent_discrete(digits_run):
    summary = json.loads((digits_run / "summary.json").read_text())
    for key in ("test_acc_soft", "test_acc_discrete", "gap", "gates", "params", "train_seconds", "steps", "dataset"):
        assert key in summary
    assert summary["dataset"] == "digits" and summary["gates"] == 4000 and summary["params"] == 4000 * 4
    assert summary["test_acc_discrete"] > 0.85
    assert summary["gap"] == pytest.approx(summary["test_acc_soft"] - summary["test_acc_discrete"])
    for name in ("model.safetensors", "optimizer.safetensors", "config.toml", "metrics.csv", "curves.png",
                 "summary.txt", "state.json"):
        assert (digits_run / name).is_file(), name
    with open(digits_run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and float(rows[-1]["test_acc_discrete"]) == summary["test_acc_discrete"]
    assert (digits_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_round_trip_gives_the_trained_scores(digits_run):
    net, encoder, info = load_model(digits_run)
    assert info["dataset"] == "digits" and info["classes"] == 10 and info["epoch"] == 30
    data = load_dataset("digits", val_fraction=info["config"]["data"]["val_fraction"],
                        seed=info["config"]["train"]["seed"])
    bits = encoder.encode(data.x_test)
    accuracy = (F.predict(net.scores(bits)) == torch.as_tensor(data.y_test)).sum().item() / len(data.y_test)
    summary = json.loads((digits_run / "summary.json").read_text())
    assert accuracy == summary["test_acc_discrete"]


def test_corrupt_checkpoints_are_refused(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    model = run / "model.safetensors"
    raw = model.read_bytes()
    model.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="damaged or not a safetensors file"):
        load_model(run)
    model.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="damaged or not a safetensors file"):
        load_model(run)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(model), metadata={"format": "something-else"})
    with pytest.raises(CheckpointError, match="is not a dlgn checkpoint"):
        load_model(run)
    model.write_bytes(raw)
    net, encoder, _ = load_model(run)
    tensors = dict(net.state_dict())
    tensors["layers.0.weight"] = tensors["layers.0.weight"][:10]
    from safetensors import safe_open

    with safe_open(str(model), "pt") as f:
        meta = f.metadata()
    tensors["encoding.thresholds"] = torch.from_numpy(encoder.thresholds)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(model), metadata=meta)
    with pytest.raises(CheckpointError, match=r"layers.0.weight does not match its recorded SHA-256"):
        load_model(run)
    meta = {k: v for k, v in meta.items() if k != "hashes"}  # a file without hashes is still checked in shape
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(model), metadata=meta)
    with pytest.raises(CheckpointError, match=r"layers.0.weight is \(10, 4\)"):
        load_model(run)
    tensors["encoding.thresholds"] = torch.zeros(64, 3, dtype=torch.int64)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(model), metadata=meta)
    with pytest.raises(CheckpointError, match="damaged metadata .*strictly increasing"):
        load_model(run)
    with pytest.raises(CheckpointError, match="missing .*not a dlgn run directory"):
        load_model(tmp_path / "nothing")


def test_existing_run_dir_needs_force(digits_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = (run / "summary.json").read_bytes()
    assert main(["train", "--set", "data.name=digits", *SMALL, "--out", str(run)]) == 2
    assert "already exists" in capsys.readouterr().err and "--force" in capsys.readouterr().err + "--force"
    assert (run / "summary.json").read_bytes() == before
    # a bad key with --force still leaves the old run alone
    assert main(["train", "--set", "model.widht=3", "--out", str(run), "--force"]) == 2
    assert "did you mean 'model.width'" in capsys.readouterr().err
    assert (run / "summary.json").read_bytes() == before
    assert main(["train", "--set", "data.name=digits", *SMALL, "--out", str(run), "--force"]) == 0
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3


def test_resume_equals_uninterrupted_run(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["train", "--set", "data.name=digits", *SMALL, "--set", "train.gumbel=true"]
    assert main([*common, "--out", str(straight)]) == 0
    assert main([*common, "--set", "train.epochs=1", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--set", "train.epochs=3"]) == 0
    a, _, _ = load_model(straight)
    b, _, _ = load_model(split)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    rows = [json.loads((d / "state.json").read_text())["history"] for d in (straight, split)]
    assert [r["test_acc_discrete"] for r in rows[0]] == [r["test_acc_discrete"] for r in rows[1]]


def test_resume_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    run = tmp_path / "r"
    assert main(["train", "--set", "data.name=digits", *SMALL, "--set", "train.epochs=1", "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--set", "model.width=100"]) == 2
    assert "model.width cannot change when resuming" in capsys.readouterr().err


def test_same_seed_same_result(tmp_path):
    for name in ("a", "b"):
        assert main(["train", "--set", "data.name=digits", *SMALL, "--set", "train.epochs=1",
                     "--out", str(tmp_path / name)]) == 0
    a, _, _ = load_model(tmp_path / "a")
    b, _, _ = load_model(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_cli_errors_are_one_line(tmp_path):
    for args, message in [
        (["train"], "pass --out RUN_DIR"),
        (["train", "--set", "data.name=mnist", "--set", f"data.data_dir={tmp_path}", "--out", str(tmp_path / "x")],
         "train-images-idx3-ubyte"),
        (["train", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "y")], "cannot read config"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "dlgn", *args], capture_output=True, text=True)
        assert proc.returncode != 0
        assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_op_and_gumbel_runs(tmp_path):
    for extra in (["--set", "model.parametrization=op", "--set", "model.init=gaussian"], ["--set", "model.gate_inputs=4"],
                  ["--set", "train.gumbel=true"], ["--set", "model.estimator=sigmoid", "--set", "model.init=gaussian"]):
        out = tmp_path / "_".join(extra[1::2]).replace("=", "-")
        assert main(["train", "--set", "data.name=digits", *SMALL, *extra, "--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["test_acc_discrete"] > 0.3, extra  # chance is 0.1


def test_per_layer_widths_train_compile_golden_sim(tmp_path):
    """A narrow head (600-300-100 gates, 4/2/2 inputs, windowed wiring) through the real commands:
    the layers have the configured shapes, the wiring stays local between layers of different
    widths, and compile's golden model and the simulated RTL equal the trained model per sample."""
    from dlgn.compile.builddir import load_build

    run, build = tmp_path / "r", tmp_path / "b"
    assert main(["train", str(ROOT / "configs" / "digits.toml"), "--set", "model.widths=[600, 300, 100]",
                 "--set", "model.gate_inputs=[4, 2, 2]", "--set", "model.wiring=windowed", "--set", "model.window=16",
                 "--set", "train.epochs=6", "--out", str(run)]) == 0
    net, _encoder, info = load_model(run)
    assert [(layer.in_features, layer.gates, layer.gate_inputs) for layer in net.layers] == [
        (192, 600, 4), (600, 300, 2), (300, 100, 2)]
    assert net.tau == pytest.approx((100 / 10) ** 0.5)
    for layer in net.layers:  # gate g reads within the window around g * in / gates
        centre = torch.arange(layer.gates)[:, None] * layer.in_features // layer.gates
        offset = (layer.wiring - centre + 8) % layer.in_features
        assert int(offset.max()) < 16
    assert "600-300-100 IWP gates (4/2/2 inputs" in (run / "summary.txt").read_text()
    assert main(["compile", str(run), "--out", str(build)]) == 0
    assert load_build(build).netlist.source["model"]["widths"] == [600, 300, 100]
    assert main(["sim", str(build), "--simulator", "icarus", "--random", "200"]) == 0
    report = json.loads((build / "sim_report.json").read_text())
    assert report["mismatches"] == 0 and report["mismatches_vs_trained"] == 0
    summary = json.loads((run / "summary.json").read_text())
    assert report["passed"] and report["sim_accuracy"] == pytest.approx(summary["test_acc_discrete"])


def test_fit_sizes_the_model_for_a_board(tmp_path, capsys):
    """`dlgn train --fit BOARD` scales the widths to the board; the trained model's compiled
    estimate stays below the untrained one that the fit used (every gate counted)."""
    from dlgn.boards.targets import get_board
    from dlgn.compile.estimate import design_estimate
    from dlgn.train.config import load_config

    run, build = tmp_path / "r", tmp_path / "b"
    assert main(["train", str(ROOT / "configs" / "digits.toml"), "--fit", "icebreaker", "--fit-margin", "0.3",
                 "--set", "model.widths=[400, 400, 100]", "--set", "train.epochs=2", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "fit to icebreaker (5280 logic cells, uart top, margin 30%): model.widths = [" in out
    widths = load_config(run / "config.toml")["model"]["widths"]
    assert len(widths) == 3 and widths[-1] % 10 == 0 and widths[0] == widths[1]
    assert widths[0] / widths[2] == pytest.approx(4, rel=0.05)  # the shape is kept, the scale fitted
    fitted = int(out.split("estimated ")[1].split()[0])
    capacity = get_board("icebreaker").lut4
    assert 0.6 * capacity < fitted <= 0.7 * capacity
    assert main(["compile", str(run), "--out", str(build), "--encoder", "--no-verilog"]) == 0
    report = json.loads((build / "compile_report.json").read_text())
    assert design_estimate(report, "ice40", "uart")["total"] <= 1.1 * fitted  # an estimate, not a bound


@pytest.mark.parametrize("args, message", [
    (["--fit", "ulx3s-99f"], "unknown board 'ulx3s-99f'"),
    (["--fit", "icebreaker", "--fit-margin", "1.5"], "--fit-margin must be in [0, 1)"),
    (["--fit-top", "bist"], "--fit-top and --fit-margin go with --fit BOARD"),
    (["--fit", "icebreaker", "--set", "data.name=fashion-mnist", "--set", "data.thresholds=200"],
     "no 1000-1000 network fits icebreaker"),
])
def test_fit_errors_are_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "dlgn", "train", "--set", "data.name=digits", "--set",
                           "data.thresholds=3", "--set", "model.width=1000", "--set", "model.depth=2", *args,
                           "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (tmp_path / "r").exists()


def test_shift_augmentation_is_exact_under_thermometer_bits():
    """Shifting an image and encoding it gives the encoded image shifted (zero fill = all bits 0),
    and every row moves by its own offset, checked against a loop over pixels."""
    import numpy as np

    from dlgn.train.encoding import Thermometer
    from dlgn.train.loop import shift_images

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (7, 2 * 5 * 6), dtype=np.uint8)
    out = shift_images(x, (2, 5, 6), 2, torch.Generator().manual_seed(3))
    dy, dx = torch.randint(0, 5, (2, 7), generator=torch.Generator().manual_seed(3))
    img = x.reshape(7, 2, 5, 6)
    for n in range(7):
        ref = np.zeros((2, 5, 6), dtype=np.uint8)
        for r in range(5):
            for q in range(6):
                rr, qq = r + int(dy[n]) - 2, q + int(dx[n]) - 2
                if 0 <= rr < 5 and 0 <= qq < 6:
                    ref[:, r, q] = img[n, :, rr, qq]
        assert np.array_equal(out[n].numpy(), ref.reshape(-1))
    enc = Thermometer.fit(x, 3, "uniform", 255)
    bits = enc.encode(x).reshape(7, 2 * 5 * 6, 3)  # feature-major: [N, F, T]
    for t in range(3):  # each threshold's bit plane, shifted like the image
        plane = bits[:, :, t].numpy()
        shifted = shift_images(plane, (2, 5, 6), 2, torch.Generator().manual_seed(3))
        assert torch.equal(enc.encode(out.numpy()).reshape(7, -1, 3)[:, :, t], shifted)


def test_cosine_schedule():
    from dlgn.train.loop import learning_rate

    t = {"lr": 0.02, "schedule": "cosine"}
    assert learning_rate(t, 0, 100) == pytest.approx(0.02)
    assert learning_rate(t, 50, 100) == pytest.approx(0.01)
    assert learning_rate(t, 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate({"lr": 0.02, "schedule": "constant"}, 70, 100) == 0.02


def test_digits_run_with_shift_and_cosine_compiles_exactly(tmp_path):
    run, build = tmp_path / "r", tmp_path / "b"
    assert main(["train", str(ROOT / "configs" / "digits.toml"), "--set", "data.augment_shift=1",
                 "--set", "train.schedule=cosine", "--set", "train.epochs=8", "--set", "model.width=500",
                 "--out", str(run)]) == 0
    history = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(history) == 8
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc_discrete"] > 0.3  # it learns (chance: 0.1); shifts of 1 px of 8 slow digits down
    # the same seed gives the same run (the shifts come from the run's seed)
    again = tmp_path / "r2"
    assert main(["train", str(ROOT / "configs" / "digits.toml"), "--set", "data.augment_shift=1",
                 "--set", "train.schedule=cosine", "--set", "train.epochs=8", "--set", "model.width=500",
                 "--out", str(again)]) == 0
    assert json.loads((again / "summary.json").read_text())["test_acc_discrete"] == summary["test_acc_discrete"]
    assert main(["compile", str(run), "--out", str(build), "--no-verilog"]) == 0  # golden == trained, per sample


@pytest.mark.parametrize("overrides, message", [
    (["data.name=breast-cancer", "data.augment_shift=1", "model.width=1000"], "breast-cancer has no image layout"),
    (["data.augment_shift=28"], "moves a 28 x 28 image out of its frame"),
    (["data.augment_shift=-1"], "data.augment_shift must not be negative"),
    (["train.schedule=linear"], "train.schedule must be one of constant, cosine"),
])
def test_bad_augment_and_schedule(overrides, message):
    from dlgn.train.config import ConfigError, apply_overrides, load_config, validate

    with pytest.raises(ConfigError, match=message):
        validate(apply_overrides(load_config(), overrides))


def test_run_without_a_validation_split(tmp_path):
    """``data.val_fraction = 0`` trains on every training sample (it once failed in the encoder on the
    empty split); the validation columns are empty, the summary's are null, the run resumes."""
    out = tmp_path / "noval"
    common = ["--set", "data.name=digits", *SMALL, "--set", "data.val_fraction=0"]
    assert main(["train", *common, "--set", "train.epochs=2", "--out", str(out)]) == 0
    def no_nan(name):
        raise AssertionError(f"summary.json holds {name}")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=no_nan)
    assert summary["val_acc_soft"] is None and summary["val_acc_discrete"] is None
    assert summary["train_samples"] == len(load_dataset("digits", val_fraction=0.0).y_train)
    assert summary["test_acc_discrete"] > 0.3
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["val_acc_discrete"] for r in rows] == ["", ""] and all(r["test_acc_discrete"] for r in rows)
    assert (out / "curves.png").stat().st_size > 0
    assert main(["train", "--resume", str(out), "--set", "train.epochs=3"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3
