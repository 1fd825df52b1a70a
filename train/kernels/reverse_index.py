"""The reverse (CSR) index of a layer's fixed wiring: which gate inputs read feature ``i``.

The backward to the inputs of a gate layer is a scatter: every gate input ``(j, g)`` adds its
gradient row to the row of the feature it reads, ``wiring[g, j]``. Done with atomics the sum
order changes from run to run. Because the wiring never changes after construction, we instead
sort the gate inputs by the feature they read once, and the backward becomes a gather: feature
``i`` sums the rows ``edges[offsets[i]:offsets[i + 1]]`` in a fixed order, so results are
bit-identical between runs on the same GPU. This is the index difflogic's CUDA extension builds
(``given_x_indices_of_y`` / ``given_x_indices_of_y_start``), generalised to ``n`` inputs.

Pure PyTorch, no Triton: a layer can build and cache it on any device.
"""

from typing import NamedTuple

import torch

__all__ = ["ReverseIndex", "ReverseIndexCache", "build_reverse_index"]


class ReverseIndex(NamedTuple):
    """CSR index from features to the gate inputs that read them.

    Gate input ``(j, g)`` (input ``j`` of gate ``g``) has the edge id ``e = j * gates + g``,
    its row in the ``[n * gates, batch]`` per-input gradient. ``edges[offsets[i]:offsets[i+1]]``
    lists, in increasing edge id, the edges that read feature ``i``.
    """

    offsets: torch.Tensor  #: ``int64 [in_features + 1]``, ``offsets[0] = 0``
    edges: torch.Tensor  #: ``int64 [gates * gate_inputs]``
    in_features: int
    gates: int
    gate_inputs: int

    def to(self, device):
        """The same index on ``device``."""
        return self._replace(offsets=self.offsets.to(device), edges=self.edges.to(device))

    def matches(self, wiring, in_features):
        """Cheap shape check that this index was built for a wiring of this shape."""
        return (self.in_features == in_features and self.gates == wiring.shape[0]
                and self.gate_inputs == wiring.shape[1])


def build_reverse_index(wiring, in_features):
    """Build the :class:`ReverseIndex` of ``wiring`` (``int64 [gates, n]``, values in
    ``[0, in_features)``) on the wiring's device. Build it once per layer and reuse it: the
    wiring is fixed, and the build (one stable sort) costs more than a small layer's backward.
    """
    if wiring.dim() != 2 or wiring.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"wiring must be an integer tensor [gates, n], not {wiring.dtype} {tuple(wiring.shape)}")
    gates, gate_inputs = wiring.shape
    flat = wiring.t().reshape(-1).long()  # edge id e = j * gates + g
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= in_features):
        raise ValueError(f"wiring reads features outside [0, {in_features}): "
                         f"min {int(flat.min())}, max {int(flat.max())}")
    edges = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=in_features)
    offsets = torch.zeros(in_features + 1, dtype=torch.int64, device=wiring.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    return ReverseIndex(offsets, edges, int(in_features), int(gates), int(gate_inputs))


class ReverseIndexCache:
    """Holds one layer's :class:`ReverseIndex`, rebuilt only when the wiring tensor changes:
    another tensor or device, or the same tensor written in place (``load_state_dict`` copies
    into the buffer, which bumps its version counter).

    ``index = cache.get(self.wiring, self.in_features)`` in the layer's forward costs a tuple
    compare when nothing changed.
    """

    def __init__(self):
        self._key = None
        self._index = None

    def get(self, wiring, in_features):
        key = (wiring.device, wiring.data_ptr(), wiring._version, tuple(wiring.shape), in_features)
        if key != self._key:
            self._index = build_reverse_index(wiring, in_features)
            self._key = key
        return self._index
