"""Logic layers, the group-sum head and the whole network (DESIGN §2).

``LogicLayer`` holds the parameters of one layer of gates and its fixed wiring; the math lives
in :mod:`dlgn.train.functional` (the reference) and in the fused kernels that plug in under
:meth:`LogicLayer.forward`: Triton on CUDA, C++ on the CPU (:mod:`dlgn.train.kernels.cpu`).
"""

import torch
from torch import nn

from . import functional as F
from . import kernels as K
from .conv import ConvLayer
from .gates import INITS, KERNELS, PARAMETRIZATIONS, GateTables
from .wiring import make_wiring

__all__ = ["PARAMETRIZATIONS", "INITS", "KERNELS", "LogicLayer", "LogicNet", "ConvLayer"]

class LogicLayer(GateTables):
    """One layer of ``gates`` logic gates with ``gate_inputs`` inputs each, read through fixed
    wiring from the previous layer (one table per gate).

    Train mode evaluates the relaxed gates (or, with ``gumbel``, hard stochastic tables with
    straight-through gradients); eval mode evaluates the discrete truth tables, which on
    binary inputs gives exactly the discrete network's bits.
    """

    def __init__(self, in_features, gates, gate_inputs=2, parametrization="iwp", estimator="sin01",
                 init="residual", wiring="random", seed=0, gumbel=False, gumbel_tau=1.0, kernels="auto",
                 window=64):
        super().__init__(gates, gate_inputs, parametrization, estimator, init, seed, gumbel, gumbel_tau, kernels)
        self._reverse_index = K.ReverseIndexCache()
        self.in_features = in_features
        self.gates = gates
        self.register_buffer("wiring", torch.from_numpy(make_wiring(in_features, gates, gate_inputs, wiring, seed,
                                                                          window)))

    def forward(self, x, mode=None):
        """``x``: feature-major activations ``[in_features, batch]``; returns ``[gates, batch]``.

        ``mode``: ``"train"`` (relaxed or Gumbel), ``"soft"`` (relaxed, no noise) or
        ``"discrete"``; by default ``"train"`` in training mode and ``"discrete"`` otherwise."""
        mode = mode or ("train" if self.training else "discrete")
        return self.gate_level(x, self.wiring, self.tables_for(mode, x.dtype), reverse_index=self._reverse_index)

    def extra_repr(self):
        return (f"{self.in_features} -> {self.gates}, gate_inputs={self.gate_inputs}, "
                f"parametrization={self.parametrization!r}, estimator={self.estimator!r}, gumbel={self.gumbel}")


class LogicNet(nn.Module):
    """Thermometer bits -> convolutional logic layers (optional) -> logic layers -> group sum.

    ``conv``: a list of dicts of :class:`~dlgn.train.conv.ConvLayer` arguments (``channels``,
    ``kernel``, ``tree_depth``, ``tree_inputs``, ``stride``, ``padding``, ``pool``,
    ``leaf_channels``), applied first; they need ``image = (colours, height, width)`` of the
    dataset (``in_bits`` is then ``colours * height * width * T`` thermometer bits, and the first
    layer's channels are the ``colours * T`` threshold planes).
    The dense layers are ``depth`` layers of ``width`` gates, or one layer per entry of ``widths``
    (which then overrides both); ``gate_inputs`` is one number or one per layer. ``forward``
    returns class logits (group sums divided by ``tau``, by default ``sqrt(last width /
    classes)``); :meth:`scores` returns the discrete integer popcounts per class that the
    hardware computes.
    """

    def __init__(self, in_bits, classes, width, depth, gate_inputs=2, parametrization="iwp",
                 estimator="sin01", init="residual", wiring="random", tau=None, seed=0,
                 gumbel=False, gumbel_tau=1.0, kernels="auto", window=64, groups="contiguous", widths=None, conv=None, image=None,
                 candidates=4):
        super().__init__()
        if groups not in F.GROUP_LAYOUTS:
            raise ValueError(f"groups must be one of {F.GROUP_LAYOUTS}, not {groups!r}")
        if widths:
            widths = [int(w) for w in widths]
            if min(widths) < 1:
                raise ValueError(f"every layer needs at least one gate, not widths={widths!r}")
        else:
            if depth < 1:
                raise ValueError(f"depth must be at least 1, not {depth!r}")
            widths = [width] * depth
        inputs = list(gate_inputs) if isinstance(gate_inputs, (list, tuple)) else [gate_inputs] * len(widths)
        if len(inputs) != len(widths):
            raise ValueError(f"gate_inputs lists {len(inputs)} layers, the network has {len(widths)}")
        if widths[-1] % classes:
            raise ValueError(
                f"the last layer's {widths[-1]} gates must be a multiple of the {classes} classes "
                f"(try {max(classes, widths[-1] // classes * classes)})"
            )
        self.in_bits = in_bits
        self.classes = classes
        self.group_layout = groups
        self.widths = widths
        self.tau = float(tau) if tau else F.default_tau(widths[-1], classes)
        common = dict(parametrization=parametrization, estimator=estimator, init=init, gumbel=gumbel,
                      gumbel_tau=gumbel_tau, kernels=kernels)
        self.conv = nn.ModuleList(_conv_layers(conv or [], in_bits, image, seed, common))
        self.image = tuple(image) if image else None
        layers = []
        features = self.conv[-1].out_features if len(self.conv) else in_bits
        for i, (gates, n) in enumerate(zip(widths, inputs)):
            if wiring == "learned":  # inputs chosen by training among candidates of the window
                from .learned import LearnedLogicLayer

                layers.append(LearnedLogicLayer(features, gates, n, parametrization, estimator, init,
                                                seed=seed * 1000 + i, gumbel=gumbel, gumbel_tau=gumbel_tau,
                                                kernels=kernels, window=window, candidates=candidates))
            else:
                layers.append(LogicLayer(features, gates, n, parametrization, estimator, init,
                                         wiring, seed=seed * 1000 + i, gumbel=gumbel, gumbel_tau=gumbel_tau,
                                         kernels=kernels, window=window))
            features = gates
        self.layers = nn.ModuleList(layers)

    def set_noise_generator(self, generator):
        for layer in self.gate_layers():
            layer.noise_generator = generator

    def set_kernels(self, kernels):
        """Choose the kernels of every layer (``train.kernels``; it may change on resume)."""
        for layer in self.gate_layers():
            layer.kernels = kernels

    def gate_layers(self):
        """Every layer with trained tables: the convolutional ones, then the dense ones."""
        return [*self.conv, *self.layers]

    def group_sums(self, bits, mode=None):
        """``bits``: ``[batch, in_bits]`` -> per-class sums ``[batch, classes]``."""
        x = bits.t().contiguous()
        for layer in self.gate_layers():
            x = layer(x, mode)
        return F.group_sum(x, self.classes, self.group_layout)

    def forward(self, bits, mode=None):
        return self.group_sums(bits, mode) / self.tau

    @torch.no_grad()
    def scores(self, bits):
        """Discrete per-class popcounts (``int64``) for binary inputs."""
        return self.group_sums(bits.float(), "discrete").round().long()

    @property
    def gates(self):
        """Gates of the discrete network (a convolutional layer has one per position and tree
        node, and its OR-pooling gates)."""
        return sum(layer.gates for layer in self.gate_layers())

    def gates_per_kind(self):
        """``{"conv_tree": ..., "pool": ..., "dense": ...}``: the gates of :attr:`gates` by layer kind."""
        return {"conv_tree": sum(layer.tree_gates for layer in self.conv),
                "pool": sum(layer.pool_gates for layer in self.conv),
                "dense": sum(layer.gates for layer in self.layers)}

    @property
    def params(self):
        return sum(p.numel() for p in self.parameters())

    def undecided_share(self, margin=0.1):
        """Share of the trained table entries within ``margin`` of 0.5 (every shared table once)."""
        with torch.no_grad():
            values = torch.cat([(layer.relaxed_tables() - 0.5).abs().flatten() for layer in self.gate_layers()])
        return values.lt(margin).float().mean().item()

    def class_groups(self):
        """Last-layer gate indices of each class's group."""
        return F.class_groups(self.layers[-1].gates, self.classes, self.group_layout)

    def discrete_stages(self):
        """The discrete network for the compiler, as levels of gates:
        ``[(kind, wiring [G, n] int64, truth_tables [G, 2**n] uint8), ...]`` with ``kind`` one of
        ``"conv"`` (a tree level of a convolutional layer, one gate per position and node),
        ``"pool"`` (4-input OR gates) and ``"dense"``. Each wiring indexes the previous stage's
        outputs (the first: the input bits); ``-1`` is the constant 0 (zero padding)."""
        stages = [stage for layer in self.conv for stage in layer.discrete_stages()]
        stages += [("dense", layer.wiring.cpu().clone(), layer.truth_tables().cpu()) for layer in self.layers]
        return stages

    def discrete_layers(self):
        """``[(wiring, truth_tables), ...]``: :meth:`discrete_stages` without the kinds."""
        return [(wiring, tables) for _kind, wiring, tables in self.discrete_stages()]


def _conv_layers(specs, in_bits, image, seed, common):
    """The :class:`ConvLayer` of each spec, each reading the previous one's output."""
    if not specs:
        return []
    if not image:
        raise ValueError("convolutional layers need the dataset's image shape (colours, height, width)")
    colours, height, width = (int(v) for v in image)
    pixels = colours * height * width
    if in_bits % pixels:
        raise ValueError(f"{in_bits} input bits are not a whole number of thermometer bits per pixel of a "
                         f"{colours} x {height} x {width} image")
    thresholds = in_bits // pixels
    shape = (colours * thresholds, height, width)
    layers = []
    for i, spec in enumerate(specs):
        in_order = layers[-1].order if layers else "channel"  # the thermometer bits have their own rows
        layer = ConvLayer(shape, **spec, thermometer=thresholds if i == 0 else None, in_order=in_order,
                          seed=seed * 1000 + 500 + i, **common)
        layers.append(layer)
        shape = layer.out_shape
    return layers
