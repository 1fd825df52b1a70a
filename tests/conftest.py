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
