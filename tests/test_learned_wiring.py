"""Learned connections (model.wiring = "learned"): candidates, the discrete model, gradients, a real run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlgn.cli import main
from dlgn.train.layers import LogicLayer
from dlgn.train.learned import LearnedLogicLayer, candidate_inputs, wiring_temperature
from dlgn.train.wiring import make_wiring

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("in_features, gates, n, c, window", [(50, 20, 3, 5, 16), (37, 11, 2, 4, 6), (9, 13, 4, 3, 64)])
def test_candidates_stay_in_the_window(in_features, gates, n, c, window):
    cand = candidate_inputs(in_features, gates, n, c, window, seed=3)
    assert cand.shape == (gates, n, c)
    assert (cand[:, :, 0] == make_wiring(in_features, gates, n, "windowed", 3, window)).all()
    w = min(window, in_features)
    starts = torch.arange(gates) * in_features // gates - w // 2
    offsets = (torch.from_numpy(cand) - starts[:, None, None]) % in_features
    assert int(offsets.max()) < w  # every candidate is in the gate's window: local, routable
    for g in range(gates):
        if n * c <= w:
            assert len(set(cand[g].ravel().tolist())) == n * c  # all distinct
        for j in range(n):
            assert len(set(cand[g, j].tolist())) == c


def _pair(n, kernels, seed=0):
    torch.manual_seed(seed)
    layer = LearnedLogicLayer(29, 13, n, candidates=4, window=12, seed=seed, kernels=kernels)
    with torch.no_grad():
        layer.connection_logits.normal_(0, 2)
        layer.weight.normal_(0, 1)
    return layer


def test_discrete_mode_is_a_fixed_wiring_layer():
    layer = _pair(4, "reference")
    x = (torch.rand(29, 71) > 0.5).float()
    fixed = LogicLayer(29, 13, 4, wiring="random", seed=0)
    with torch.no_grad():
        fixed.wiring.copy_(layer.chosen_wiring())
        fixed.weight.copy_(layer.weight)
    assert torch.equal(layer(x, "discrete"), fixed(x, "discrete"))
    assert torch.equal(layer.wiring, layer.chosen_wiring())


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_gradients_cpu_kernels_equal_reference(n):
    """Forward and every gradient (tables, connection logits, inputs) of the learned layer on
    the C++ CPU kernels against the PyTorch reference; soft and train mode."""
    from dlgn.train import kernels as K

    if not K.cpu_can_run(torch.empty(1, 1)):
        pytest.skip("the C++ CPU kernels cannot be built here")
    x = torch.rand(29, 37, dtype=torch.float64)
    results = {}
    for kernels in ("reference", "cpu"):
        layer = _pair(n, kernels).double()
        xi = x.clone().requires_grad_()
        out = layer(xi, "soft")
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)).sum().backward()
        results[kernels] = (out, layer.weight.grad, layer.connection_logits.grad, xi.grad)
    for a, b in zip(results["reference"], results["cpu"]):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    assert results["cpu"][2].abs().sum() > 0


def test_logit_gradient_against_finite_differences():
    layer = _pair(2, "reference").double()
    x = torch.rand(29, 5, dtype=torch.float64)
    torch.autograd.gradcheck(lambda logits: _with_logits(layer, logits, x), (layer.connection_logits.detach().clone()
                                                                               .requires_grad_(),))


def _with_logits(layer, logits, x):
    weights = torch.softmax(logits, -1)
    mixed = torch.einsum("gnc,gncb->gnb", weights, x[layer.candidates]).reshape(-1, x.shape[1])
    from dlgn.train import functional as F

    return F.gate_forward(mixed, layer._identity, layer.relaxed_tables())


def test_learned_digits_run_compiles_and_simulates_exactly(tmp_path):
    """train -> compile (golden == trained on every test sample) -> RTL simulation, and the
    checkpoint's wiring is the argmax choice of its logits."""
    from dlgn.train.checkpoint import load_model

    run, build = tmp_path / "r", tmp_path / "b"
    assert main(["train", str(ROOT / "configs" / "digits.toml"), "--set", "model.wiring=learned",
                 "--set", "model.window=16", "--set", "model.candidates=4", "--set", "model.width=600",
                 "--set", "train.epochs=6", "--out", str(run)]) == 0
    net, _encoder, _info = load_model(run)
    for layer in net.layers:
        assert isinstance(layer, LearnedLogicLayer)
        assert torch.equal(layer.wiring, layer.chosen_wiring())
    moved = sum(int((layer.wiring != layer.candidates[:, :, 0]).sum()) for layer in net.layers)
    assert moved > 0  # training changed some choices away from the windowed start
    assert json.loads((run / "summary.json").read_text())["test_acc_discrete"] > 0.3  # learns (chance: 0.1)
    assert main(["compile", str(run), "--out", str(build), "--no-prove"]) == 0
    assert main(["sim", str(build), "--simulator", "icarus", "--random", "100"]) == 0
    report = json.loads((build / "sim_report.json").read_text())
    assert report["mismatches"] == 0 and report["mismatches_vs_trained"] == 0


@pytest.mark.parametrize("overrides, message", [
    (["model.wiring=learned", "model.candidates=1"], "model.candidates must be at least 2"),
    (["model.wiring=learned", "model.candidates=80", "model.window=64"], "must hold model.candidates"),
    (["model.wiring=learned", "model.wiring_temperature_end=0"], "model.wiring_temperature_end must be in (0, 1]"),
    (["model.wiring=learned", "model.wiring_temperature_end=1.5"], "model.wiring_temperature_end must be in (0, 1]"),
    (["model.wiring=windowed", "model.wiring_temperature_end=0.1"], "anneals learned wiring"),
])
def test_learned_wiring_config_errors(tmp_path, overrides, message):
    args = [a for o in overrides for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "dlgn", "train", "--set", "data.name=digits", "--set", "model.width=100",
                           *args, "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr


def test_wiring_temperature_schedule():
    """1 for the first half of the steps, then exponentially down to the end value at the last."""
    assert [wiring_temperature(0.05, step, 100) for step in (0, 25, 50)] == [1.0, 1.0, 1.0]
    assert wiring_temperature(0.05, 75, 100) == pytest.approx(0.05 ** 0.5)
    assert wiring_temperature(0.05, 100, 100) == pytest.approx(0.05)
    assert wiring_temperature(0.05, 200, 100) == pytest.approx(0.05)  # past the end: stays there
    values = [wiring_temperature(0.1, step, 40) for step in range(41)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert wiring_temperature(1.0, 30, 40) == 1.0 and wiring_temperature(0.1, 3, 0) == 1.0


def test_annealed_learned_digits_run(tmp_path):
    """model.wiring_temperature_end: the run trains, ends with the wiring's softmax at that
    temperature (the loaded model's soft mode too: the soft accuracy it reports is reproduced),
    and its discrete model is still a fixed wiring that the compiler's golden model equals on
    every test sample (dlgn compile checks it and fails otherwise)."""
    from dlgn.train.checkpoint import load_model
    from dlgn.train.data import load_dataset
    from dlgn.train import functional as F

    args = [str(ROOT / "configs" / "digits.toml"), "--set", "model.wiring=learned", "--set", "model.window=16",
            "--set", "model.candidates=4", "--set", "model.width=400", "--set", "model.wiring_temperature_end=0.05"]
    run, build = tmp_path / "r", tmp_path / "b"
    assert main(["train", *args, "--set", "train.epochs=4", "--out", str(run)]) == 0
    net, encoder, info = load_model(run)
    assert all(layer.temperature == pytest.approx(0.05) for layer in net.layers)
    summary = json.loads((run / "summary.json").read_text())
    data = load_dataset("digits", None, info["config"]["data"]["val_fraction"], info["config"]["train"]["seed"])
    x = encoder.encode(data.x_test).float()
    with torch.no_grad():
        soft = (F.predict(net(x, "soft")) == torch.as_tensor(data.y_test)).sum().item() / len(data.y_test)
    assert soft == pytest.approx(summary["test_acc_soft"], abs=1e-9)
    assert summary["test_acc_discrete"] > 0.3  # learns (chance: 0.1)
    assert main(["compile", str(run), "--out", str(build), "--no-prove"]) == 0
    report = json.loads((build / "compile_report.json").read_text())
    assert report["gates"] > 0
