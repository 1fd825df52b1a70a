"""Thermometer encoding with integer thresholds (DESIGN §2.1).

Bit ``f * T + t`` of a sample is ``x_f > thresholds[f, t]``: the bits of one feature are
adjacent. Thresholds are integers, strictly increasing per feature, so that a hardware
comparator gives exactly the software bit.
"""

import numpy as np
import torch

__all__ = ["ENCODINGS", "Thermometer"]

ENCODINGS = ("uniform", "quantile", "feature-quantile")


class Thermometer:
    def __init__(self, thresholds):
        thresholds = np.asarray(thresholds, dtype=np.int64)
        if thresholds.ndim != 2 or thresholds.shape[1] < 1:
            raise ValueError(f"thresholds must be [features, count], not shape {thresholds.shape}")
        if thresholds.shape[1] > 1 and not (np.diff(thresholds, axis=1) > 0).all():
            raise ValueError("thresholds must be strictly increasing for every feature")
        self.thresholds = thresholds

    @property
    def features(self):
        return self.thresholds.shape[0]

    @property
    def count(self):
        return self.thresholds.shape[1]

    @property
    def bits(self):
        return self.thresholds.size

    @classmethod
    def fit(cls, x_train, count, mode="uniform", feature_max=255):
        """Choose ``count`` thresholds per feature: ``uniform`` over ``0..feature_max``,
        ``quantile`` from the pooled training values, ``feature-quantile`` per feature."""
        features = x_train.shape[1]
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"data.thresholds must be a positive integer, not {count!r}")
        if count > feature_max:
            raise ValueError(f"data.thresholds={count} is more than the {feature_max} distinct steps of the features")
        if mode == "uniform":
            row = [(i + 1) * (feature_max + 1) // (count + 1) - 1 for i in range(count)]
            table = np.tile(np.asarray(row, dtype=np.int64), (features, 1))
        elif mode == "quantile":
            levels = np.arange(1, count + 1) / (count + 1)
            sample = x_train.reshape(-1)
            if sample.size > 2_000_000:
                sample = sample[np.random.Generator(np.random.PCG64(0)).choice(sample.size, 2_000_000, replace=False)]
            row = _increasing(np.quantile(sample, levels), feature_max)
            table = np.tile(row, (features, 1))
        elif mode == "feature-quantile":
            levels = np.arange(1, count + 1) / (count + 1)
            table = np.stack([_increasing(np.quantile(x_train[:, f], levels), feature_max) for f in range(features)])
        else:
            raise ValueError(f"data.encoding must be one of {ENCODINGS}, not {mode!r}")
        return cls(table)

    def encode(self, x):
        """``x``: integer features ``[N, F]`` (numpy or torch) -> bits ``[N, F*T]`` as ``uint8``
        torch tensor."""
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
        if x.ndim != 2 or x.shape[1] != self.features:
            raise ValueError(f"expected features of shape [N, {self.features}], got {tuple(x.shape)}")
        thr = torch.as_tensor(self.thresholds, device=x.device)
        return (x.long()[:, :, None] > thr[None]).reshape(len(x), self.bits).to(torch.uint8)


def _increasing(values, feature_max):
    """Round to integers and force strictly increasing within ``0..feature_max - 1``."""
    out = np.floor(values).astype(np.int64)
    count = len(out)
    for i in range(count):
        low = out[i - 1] + 1 if i else 0
        high = feature_max - (count - i)
        out[i] = min(max(out[i], low), high)
    return out
