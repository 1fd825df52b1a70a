"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A small trained digits run (2 x 400 IWP gates, a few epochs): a real run directory for
    the compiler's tests. Accuracy is beside the point; exactness is checked on every sample."""
    from dlgn.train.config import apply_overrides, load_config
    from dlgn.train.loop import train

    out = tmp_path_factory.mktemp("digits_run")
    config = apply_overrides(load_config(), [
        "data.name=digits", "model.width=400", "model.depth=2", "train.epochs=4", "train.lr=0.05",
        "train.device=cpu",
    ])
    train(config, out, force=True)
    return out


@pytest.fixture(scope="session")
def digits_build(digits_run, tmp_path_factory):
    """The digits run compiled by the CLI with a register stage after every gate level: a real
    pipelined build, proved by `dlgn compile`'s last step. Copy it before changing anything."""
    from dlgn.cli import main

    out = tmp_path_factory.mktemp("digits_build")
    assert main(["compile", str(digits_run), "-o", str(out), "--pipeline-every", "1"]) == 0
    return out
