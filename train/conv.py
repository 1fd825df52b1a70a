"""Convolutional logic layers: logic trees shared over positions, and OR pooling (DESIGN §2.9).

A :class:`ConvLayer` maps ``C_in`` binary channels on an ``H x W`` grid to ``channels`` channels.
Output channel ``k`` is a complete tree of gates with ``n = tree_inputs`` inputs and depth ``d =
tree_depth``: ``n**d`` leaves, ``n**(d-1)`` gates on the first level, one gate at the root. The
leaves read fixed positions ``(c, dy, dx)`` of the ``kernel x kernel`` receptive field, chosen once
from a seed (each tree draws from ``leaf_channels`` input channels, as in the paper, or from all of
them with ``0``); the tree's truth tables are the same at every output position (weight sharing).
Output position ``(y, x)`` reads input ``(c, y * stride + dy - padding, x * stride + dx - padding)``;
positions outside the input read the constant 0 (zero padding). OR pooling (``pool = 2``: 2 x 2
windows, stride 2, a trailing odd row or column dropped) follows; on relaxed values it is the
maximum, whose gradient goes to the first maximal input (the paper's argmax path), and on bits it
is the OR.

Each tree level is one :meth:`~dlgn.train.gates.GateTables.gate_level` call: one gate per position
and tree node, gathering its inputs through a fixed wiring, with ``table_index`` pointing every
position's gate to the node's shared table. The kernels then sum the table gradient over the
positions (a gather with repeated table indices; no loop over positions anywhere), and the
discrete network is literally these gates: :meth:`ConvLayer.discrete_stages` hands them to the
compiler as ordinary gate levels, the pooling as 4-input OR gates.

Activations are feature-major ``[features, batch]`` as in the dense layers. Feature ``(c, y, x)``
of a layer's output is row ``(c * H + y) * W + x``. The first layer reads the thermometer bits
(:mod:`dlgn.train.encoding`: bit ``f * T + t`` is ``pixel_f > threshold_t``, and an image
feature is ``f = (colour * H + y) * W + x``): its channels are ``colour * T + t``, read from row
``((colour * H + y) * W + x) * T + t``, so the trainer's bits need no reordering.
"""

import math

import numpy as np
import torch

from . import kernels as K
from .gates import GateTables, TableGroupsCache

__all__ = ["ConvLayer", "conv_output_shape", "POOLS", "ORDERS", "OR_TABLE"]

POOLS = (1, 2)  # 1: no pooling; 2: 2 x 2 OR pooling, stride 2
#: Output feature orders: ``"channel"``: row ``(c * H + y) * W + x`` (each channel's map in turn);
#: ``"position"``: row ``(y * W + x) * C + c`` (all channels of a position together, so that a
#: window of consecutive features covers a few neighbouring positions: local wiring on the chip).
ORDERS = ("channel", "position")
#: The truth table of a 4-input OR: 0 for the all-zero pattern, 1 for every other.
OR_TABLE = (1 << 16) - 2


def conv_output_shape(in_shape, channels, kernel, stride=1, padding=0, pool=2):
    """``(channels, H, W)`` after the convolution and the pooling; a side shorter than 1 raises
    :class:`ValueError`."""
    _, height, width = in_shape
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {kernel} x {kernel} kernel with padding {padding} does not fit the {height} x {width} "
                         f"input")
    if pool == 2:
        if out_h < 2 or out_w < 2:
            raise ValueError(f"2 x 2 pooling needs at least 2 x 2 positions, the convolution gives {out_h} x {out_w}")
        return channels, out_h // 2, out_w // 2
    return channels, out_h, out_w


class ConvLayer(GateTables):
    """A convolutional logic layer (trees of gates shared over positions) with OR pooling.

    ``in_shape``: ``(C_in, H, W)``; ``thermometer``: the count ``T`` of thresholds when the input
    is the trainer's thermometer bits (channels ``colour * T + t``, see the module docstring),
    ``None`` when it is another layer's output, in that layer's ``order`` (``in_order``: row
    ``(c * H + y) * W + x`` for ``"channel"``, ``(y * W + x) * C + c`` for ``"position"``).
    ``order`` is this layer's output order (:data:`ORDERS`). ``forward`` maps
    ``[C_in * H * W, batch]`` to ``[prod(out_shape), batch]``.

    Tree layout: node ``j`` of level ``l`` (level 0 reads the leaves, level ``d - 1`` is the root;
    ``n**(d-1-l)`` nodes per level) reads nodes ``j * n .. j * n + n - 1`` of the level below, or on
    level 0 the leaves ``j * n + i``, as its inputs ``i``. Its table is ``weight`` row
    ``offset_l + k * n**(d-1-l) + j`` for output channel ``k``, where ``offset_l`` counts the tables
    of the levels below (``channels * n**(d-1-l')`` each). Gate ``(k, node, position)`` of a level
    is its gate number ``(k * nodes + node) * positions + position``, except the last gates (the
    output: the root level, or the OR pool) with ``order = "position"``, which are numbered
    ``position * channels + k``. ``leaves [channels, n**d, 3]`` holds the
    ``(c, dy, dx)`` that each leaf reads; the leaf wiring (``leaf_wiring``, in checkpoints) is
    those leaves at every position.
    """

    def __init__(self, in_shape, channels, kernel=3, tree_depth=2, tree_inputs=2, stride=1, padding=0, pool=2,
                 leaf_channels=0, order="channel", in_order="channel", thermometer=None, parametrization="iwp",
                 estimator="sin01", init="residual", seed=0, gumbel=False, gumbel_tau=1.0, kernels="auto"):
        in_shape = tuple(int(v) for v in in_shape)
        for name, value, low in (("channels", channels, 1), ("kernel", kernel, 1), ("tree_depth", tree_depth, 1),
                                 ("tree_inputs", tree_inputs, 1), ("stride", stride, 1), ("padding", padding, 0),
                                 ("leaf_channels", leaf_channels, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, not {value!r}")
        for name, value in (("order", order), ("in_order", in_order)):
            if value not in ORDERS:
                raise ValueError(f"{name} must be one of {ORDERS}, not {value!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be 2 (2 x 2 OR pooling) or 1 (none), not {pool!r}")
        if padding >= kernel:
            raise ValueError(f"padding must be smaller than the kernel ({kernel}), not {padding!r}")
        if len(in_shape) != 3 or min(in_shape) < 1:
            raise ValueError(f"in_shape must be (channels, height, width), not {in_shape!r}")
        self.out_shape = conv_output_shape(in_shape, channels, kernel, stride, padding, pool)
        n, d = tree_inputs, tree_depth
        self.level_nodes = [n ** (d - 1 - level) for level in range(d)]  # tree gates per channel on each level
        super().__init__(channels * sum(self.level_nodes), n, parametrization, estimator, init, seed, gumbel,
                         gumbel_tau, kernels)
        self.in_shape = in_shape
        self.channels, self.kernel, self.stride, self.padding, self.pool = channels, kernel, stride, padding, pool
        self.tree_depth, self.tree_inputs, self.thermometer = d, n, thermometer
        self.leaf_channels, self.order, self.in_order = leaf_channels, order, in_order
        c_in, height, width = in_shape
        self.in_features = c_in * height * width
        out_h = (height + 2 * padding - kernel) // stride + 1
        out_w = (width + 2 * padding - kernel) // stride + 1
        self.positions_shape = (out_h, out_w)
        positions = out_h * out_w
        # The leaf wiring is the layer's only random choice (and the only wiring in checkpoints).
        leaves, leaf_wiring = self._leaf_wiring(seed)
        self.register_buffer("leaves", torch.from_numpy(leaves), persistent=False)
        offsets = np.cumsum([0] + [channels * m for m in self.level_nodes])
        indices, wirings = [], []
        for level, nodes in enumerate(self.level_nodes):
            # gate (k, node, position) of this level is number (k * nodes + node) * positions + position
            tree = np.arange(channels * nodes, dtype=np.int64)
            indices.append(np.repeat(offsets[level] + tree, positions))
            if level:
                below = self.level_nodes[level - 1]  # = nodes * n
                k, node = np.divmod(tree, nodes)
                first = (k * below + node * n)[:, None] + np.arange(n)  # [channels * nodes, n] gates below
                wirings.append((first[:, None, :] * positions + np.arange(positions)[None, :, None]).reshape(-1, n))
        root_order = np.arange(channels * positions)  # root gate number -> (k * positions + position)
        if order == "position" and pool == 1:
            # the root level is the output: number its gates position-major
            root_order = (np.arange(channels)[None, :] * positions + np.arange(positions)[:, None]).reshape(-1)
            indices[-1] = indices[-1][root_order]
            if d == 1:
                leaf_wiring = leaf_wiring[root_order]
            else:
                wirings[-1] = wirings[-1][root_order]
        root_gate = np.argsort(root_order)  # (k * positions + position) -> root gate number
        self.register_buffer("leaf_wiring", torch.from_numpy(np.ascontiguousarray(leaf_wiring)))
        self.register_buffer("table_index", torch.from_numpy(np.concatenate(indices)), persistent=False)
        self.level_gates = [channels * nodes * positions for nodes in self.level_nodes]
        self._level_bounds = np.cumsum([0] + self.level_gates).tolist()
        for level, wiring in enumerate(wirings, start=1):
            self.register_buffer(f"tree_wiring{level}", torch.from_numpy(wiring), persistent=False)
        self.pool_gates = 0
        if pool == 2:
            _, pool_h, pool_w = self.out_shape
            if order == "position":
                y, x, k = np.meshgrid(np.arange(pool_h), np.arange(pool_w), np.arange(channels), indexing="ij")
            else:
                k, y, x = np.meshgrid(np.arange(channels), np.arange(pool_h), np.arange(pool_w), indexing="ij")
            corners = [root_gate[((k * out_h + 2 * y + a) * out_w + 2 * x + b).reshape(-1)]
                       for a in (0, 1) for b in (0, 1)]
            self.register_buffer("pool_wiring", torch.from_numpy(np.stack(corners, 1)), persistent=False)
            self.pool_gates = channels * pool_h * pool_w
        self._reverse_index = [K.ReverseIndexCache() for _ in range(d)]
        self._table_groups = [TableGroupsCache(self.weight.shape[0]) for _ in range(d)]

    # ----------------------------------------------------------------- wiring

    def _input_row(self, c, y, x):
        """Row of input feature ``(c, y, x)`` in the ``[features, batch]`` activations."""
        c_in, height, width = self.in_shape
        if self.thermometer:
            colour, t = np.divmod(c, self.thermometer)
            return ((colour * height + y) * width + x) * self.thermometer + t
        if self.in_order == "position":
            return (y * width + x) * c_in + c
        return (c * height + y) * width + x

    def _leaf_wiring(self, seed):
        """``(leaves, wiring)``: the ``(c, dy, dx)`` of every leaf ``[channels, n**d, 3]``, and the
        ``[channels * n**(d-1) * positions, n]`` input rows the first tree level reads, where
        ``in_features`` (one row past the input) is the constant 0 of the zero padding."""
        c_in, height, width = self.in_shape
        n, k = self.tree_inputs, self.kernel
        leaves = n ** self.tree_depth
        rng = np.random.Generator(np.random.PCG64(seed))
        chosen = np.empty((self.channels, leaves, 3), dtype=np.int64)  # (c, dy, dx) of every leaf
        for out in range(self.channels):
            if self.leaf_channels and self.leaf_channels < c_in:
                from_channels = np.sort(rng.choice(c_in, self.leaf_channels, replace=False))
            else:
                from_channels = np.arange(c_in)
            field = np.stack(np.meshgrid(from_channels, np.arange(k), np.arange(k), indexing="ij"), -1).reshape(-1, 3)
            # distinct receptive-field positions while there are enough of them
            copies = -(-leaves // len(field))
            picks = np.concatenate([rng.permutation(len(field)) for _ in range(copies)])[:leaves]
            chosen[out] = field[picks]
        out_h = (height + 2 * self.padding - k) // self.stride + 1
        out_w = (width + 2 * self.padding - k) // self.stride + 1
        ys = np.arange(out_h)[:, None] * self.stride - self.padding  # [out_h, 1]
        xs = np.arange(out_w)[None, :] * self.stride - self.padding  # [1, out_w]
        # leaf gate (out, node, y, x), input j reads leaf node * n + j
        c = chosen[:, :, 0].reshape(self.channels, leaves // n, n)[:, :, None, None, :]
        y = ys[None, None, :, :, None] + chosen[:, :, 1].reshape(self.channels, leaves // n, n)[:, :, None, None, :]
        x = xs[None, None, :, :, None] + chosen[:, :, 2].reshape(self.channels, leaves // n, n)[:, :, None, None, :]
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        rows = self._input_row(c, np.clip(y, 0, height - 1), np.clip(x, 0, width - 1))
        rows = np.where(inside, rows, self.in_features)
        return chosen, np.ascontiguousarray(np.broadcast_to(rows, inside.shape).reshape(-1, n)).astype(np.int64)

    def level_wiring(self, level):
        """``[gates of the level, n]`` rows read by tree level ``level`` (0: the leaf gates)."""
        return self.leaf_wiring if level == 0 else getattr(self, f"tree_wiring{level}")

    def level_table_index(self, level):
        lo, hi = self._level_bounds[level], self._level_bounds[level + 1]
        return self.table_index[lo:hi]

    # ----------------------------------------------------------------- evaluation

    def forward(self, x, mode=None):
        """``x``: ``[C_in * H * W, batch]`` -> ``[prod(out_shape), batch]``."""
        mode = mode or ("train" if self.training else "discrete")
        tables = self.tables_for(mode, x.dtype)
        if self.padding:
            x = torch.cat([x, x.new_zeros((1, x.shape[1]))])  # the row that padding reads
        for level in range(self.tree_depth):
            x = self.gate_level(x, self.level_wiring(level), tables, self.level_table_index(level),
                                self._reverse_index[level], self._table_groups[level])
        if self.pool == 2:
            window = x.index_select(0, self.pool_wiring.t().reshape(-1)).view(4, self.pool_gates, x.shape[1])
            x = window.max(0).values  # OR on bits; the gradient takes the first maximal input
        return x

    @property
    def gates(self):
        """Gates of the discrete network: one per position and tree node, plus the OR gates."""
        return self.tree_gates + self.pool_gates

    @property
    def tree_gates(self):
        return sum(self.level_gates)

    @property
    def out_features(self):
        return math.prod(self.out_shape)

    def discrete_stages(self):
        """``[(kind, wiring, truth_tables), ...]``, one per tree level (kind ``"conv"``) and the
        pooling (``"pool"``): ``wiring [G, n]`` reads the previous stage's outputs (the first: this
        layer's input rows), ``-1`` the constant 0; ``truth_tables [G, 2**n]`` of 0/1 ``uint8``."""
        tables = self.truth_tables().cpu()
        stages = []
        for level in range(self.tree_depth):
            wiring = self.level_wiring(level).cpu().clone()
            if level == 0:
                wiring[wiring == self.in_features] = -1
            stages.append(("conv", wiring, tables.index_select(0, self.level_table_index(level).cpu())))
        if self.pool == 2:
            or_bits = torch.tensor([(OR_TABLE >> a) & 1 for a in range(16)], dtype=torch.uint8)
            stages.append(("pool", self.pool_wiring.cpu().clone(), or_bits.repeat(self.pool_gates, 1)))
        return stages

    def extra_repr(self):
        c_in, h, w = self.in_shape
        return (f"{c_in} x {h} x {w} -> {' x '.join(map(str, self.out_shape))}, kernel={self.kernel}, "
                f"stride={self.stride}, padding={self.padding}, tree_depth={self.tree_depth}, "
                f"tree_inputs={self.tree_inputs}, pool={self.pool}, leaf_channels={self.leaf_channels}, order={self.order}")
