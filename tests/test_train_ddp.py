"""Data-parallel training under torchrun (gloo on the CPU): same parameters as one process with
the same global batch, resume across process counts, rank-0-only outputs, loud disagreement."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dlgn.train import distributed as dist
from dlgn.train.config import apply_overrides, load_config
from dlgn.train.loop import RunError, train

# 257 training samples in global batches of 64: the last batch has 1 sample, so one of two
# ranks gets an empty share. Gumbel on: every rank must draw the same noise.
SMALL = ["data.name=digits", "data.train_subset=257", "model.width=200", "model.depth=2", "model.gate_inputs=4",
         "train.batch_size=64", "train.lr=0.05", "train.device=cpu", "train.gumbel=true", "train.epochs=2"]
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo")


def _env():
    env = dict(os.environ)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _torchrun(nproc, *args, check=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _dlgn_train(nproc, out, overrides, resume=False):
    sets = [a for item in overrides for a in ("--set", item)]
    target = ["--resume", str(out)] if resume else ["--out", str(out)]
    return _torchrun(nproc, "-m", "dlgn", "train", *target, *sets)


def _single(out, overrides):
    return train(apply_overrides(load_config(), overrides), out, force=True)


def _params(run):
    return load_file(str(Path(run) / "model.safetensors"))


def _assert_same_model(a, b, lr=0.05):
    """Parameters of two runs that saw the same global batches. The gradients agree to float
    rounding (see test_ddp_gradient_equals_global_batch_gradient), but Adam divides by
    sqrt(v) + 1e-8: where a gradient is rounding noise itself (|g| ~ 1e-10, a cancelling
    sum), that noise becomes a step of up to a few % of lr. So: almost every entry to 1e-5,
    none by more than one learning-rate step."""
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        if "weight" not in key:  # wiring, thresholds: exact
            assert torch.equal(pa[key], pb[key]), key
            continue
        diff = (pa[key] - pb[key]).abs()
        assert (diff <= 1e-5).float().mean().item() >= 0.97, (key, diff.max().item())
        assert diff.max().item() < lr, key


def test_batch_share_splits_global_batch_exactly():
    batch = torch.arange(100, 165)
    for world in (1, 2, 3, 8):
        shares = [dist.batch_share(batch, dist.Context(rank=r, world_size=world)) for r in range(world)]
        assert sorted(torch.cat(shares).tolist()) == batch.tolist()
    # a 1-sample batch leaves the second rank an empty share
    assert len(dist.batch_share(batch[:1], dist.Context(rank=1, world_size=2))) == 0


def test_eval_share_covers_every_sample_once():
    for count in (0, 1, 7, 10):
        for world in (1, 2, 3, 4):
            parts = [dist.eval_share(count, dist.Context(rank=r, world_size=world)) for r in range(world)]
            covered = [i for p in parts for i in range(count)[p]]
            assert covered == list(range(count))


def test_launch_without_rendezvous_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RunError, match="launch with torchrun"):
        train(apply_overrides(load_config(), SMALL), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(RunError, match="WORLD_SIZE='two' is not an integer"):
        train(apply_overrides(load_config(), SMALL), tmp_path / "run")


@pytest.mark.slow
def test_ddp_gradient_equals_global_batch_gradient(tmp_path):
    """One backward through DDP on 2 ranks (shares of 33 and 32 samples, and of 1 and 0) gives
    the gradient of the global batch's mean loss, as one process computes it."""
    script = tmp_path / "grads.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        from dlgn.train import distributed as dist
        from dlgn.train.layers import LogicNet
        from dlgn.train.loop import batch_loss

        ctx, _ = dist.setup("cpu")
        torch.manual_seed(0)
        net = LogicNet(48, 10, 120, 2, gate_inputs=4, gumbel=True)
        x = torch.randint(0, 2, (65, 48)).float()
        y = torch.randint(0, 10, (65,))
        model = dist.wrap(net, torch.device("cpu"))
        for count in (65, 1):
            gen = torch.Generator().manual_seed(3)
            net.set_noise_generator(gen)
            idx = dist.batch_share(torch.arange(count), ctx)
            net.zero_grad()
            loss, part = batch_loss(model, x[idx], y[idx], count, ctx)
            loss.backward()
            grads = [p.grad.clone() for p in net.parameters()]
            total = ctx.all_reduce_sum([part], torch.device("cpu"))[0]
            if ctx.is_main:  # the same step in one process, on the same (synchronised) parameters
                net.set_noise_generator(torch.Generator().manual_seed(3))
                net.zero_grad()
                ref = torch.nn.functional.cross_entropy(net(x[:count]), y[:count])
                ref.backward()
                assert abs(total - ref.item()) < 1e-6, (total, ref.item())
                for g, p in zip(grads, net.parameters()):
                    torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-8)
                print("gradients equal for", count)
        ctx.close()
    """))
    result = _torchrun(2, str(script))
    assert "gradients equal for 65" in result.stdout and "gradients equal for 1" in result.stdout


@pytest.mark.slow
def test_two_processes_equal_one_process_with_same_global_batch(tmp_path):
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    result = _dlgn_train(2, ddp, SMALL)
    _single(one, SMALL)
    _assert_same_model(ddp, one)
    s_ddp, s_one = (json.loads((d / "summary.json").read_text()) for d in (ddp, one))
    assert s_ddp["world_size"] == 2 and s_one["world_size"] == 1
    assert s_ddp["global_batch_size"] == s_one["global_batch_size"] == 64
    assert s_ddp["distributed_backend"] == "gloo"
    assert s_ddp["steps"] == s_one["steps"] == 2 * 5
    # evaluation is sharded over the ranks and summed: the same counts as one process
    for key in ("test_acc_discrete", "val_acc_discrete", "test_acc_soft"):
        assert s_ddp[key] == pytest.approx(s_one[key], abs=1e-9), key
    # rank 0 alone writes and reports
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in one.iterdir())
    assert result.stdout.count("wrote ") == 1
    assert result.stdout.count("epoch 2: loss") == 1
    assert "2 processes (gloo)" in (ddp / "summary.txt").read_text()


@pytest.mark.slow
def test_resume_across_process_counts(tmp_path):
    reference = tmp_path / "reference"
    _single(reference, SMALL)
    first_epoch = [s for s in SMALL if not s.startswith("train.epochs")] + ["train.epochs=1"]

    a = tmp_path / "two_then_one"
    _dlgn_train(2, a, first_epoch)
    cfg = apply_overrides(load_config(), ["train.epochs=2"])
    train(cfg, a, resume=True, overrides={"train.epochs"})
    _assert_same_model(a, reference)

    b = tmp_path / "one_then_two"
    _single(b, first_epoch)
    _dlgn_train(2, b, ["train.epochs=2"], resume=True)
    _assert_same_model(b, reference)
    assert json.loads((b / "summary.json").read_text())["world_size"] == 2
    rows = (b / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + one row per epoch, across both launches


@pytest.mark.slow
def test_ranks_that_disagree_on_the_wiring_fail_loudly(tmp_path):
    script = tmp_path / "skewed.py"
    script.write_text(textwrap.dedent(f"""
        import os
        import dlgn.train.layers as layers
        from dlgn.train.config import apply_overrides, load_config
        from dlgn.train.loop import train

        if os.environ["RANK"] == "1":  # a rank whose wiring generator differs
            original = layers.make_wiring
            layers.make_wiring = lambda *a, **k: original(*a[:4], a[4] + 1, *a[5:], **k)
        train(apply_overrides(load_config(), {SMALL!r}), {str(tmp_path / "run")!r})
    """))
    result = _torchrun(2, str(script), check=False)
    assert result.returncode != 0
    assert "ranks disagree on the wiring" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_empty_batch_share_has_zero_gradients():
    from dlgn.train.layers import LogicNet

    net = LogicNet(20, 5, 50, 2, gate_inputs=4)
    x = torch.zeros(0, 20, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(net(x), torch.zeros(0, dtype=torch.long), reduction="sum")
    loss.backward()
    assert x.grad.shape == (0, 20)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in net.parameters())
    assert np.isfinite(loss.item())
