"""Logic layers, the group-sum head and the whole network (DESIGN §2).

``LogicLayer`` holds the parameters of one layer of gates and its fixed wiring; the math lives
in :mod:`dlgn.train.functional` (the reference) and in the fused kernels that plug in under
:meth:`LogicLayer.forward`: Triton on CUDA, C++ on the CPU (:mod:`dlgn.train.kernels.cpu`).
"""

import torch
from torch import nn

from . import functional as F
from . import kernels as K
from .wiring import make_wiring

__all__ = ["PARAMETRIZATIONS", "INITS", "KERNELS", "LogicLayer", "LogicNet"]

PARAMETRIZATIONS = ("iwp", "op")
INITS = ("residual", "gaussian")
#: ``auto``: Triton on CUDA tensors, the C++ kernels on float32/float64 CPU tensors (the PyTorch
#: reference if they cannot be built), the reference elsewhere.
KERNELS = ("auto", "triton", "cpu", "reference")

# Residual init: (mu, sigma) of the raw parameter per estimator (DESIGN §2.5).
_RESIDUAL_INIT = {"sin01": (1.2, 0.25), "sigmoid": (3.0, 0.5)}
_OP_RESIDUAL_LOGIT = 5.0
_OP_PASS_THROUGH = 3  # difflogic function id of "A" (first input)


class LogicLayer(nn.Module):
    """One layer of ``gates`` logic gates with ``gate_inputs`` inputs each.

    Train mode evaluates the relaxed gates (or, with ``gumbel``, hard stochastic tables with
    straight-through gradients); eval mode evaluates the discrete truth tables, which on
    binary inputs gives exactly the discrete network's bits.
    """

    def __init__(self, in_features, gates, gate_inputs=2, parametrization="iwp", estimator="sin01",
                 init="residual", wiring="random", seed=0, gumbel=False, gumbel_tau=1.0, kernels="auto",
                 window=64):
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, not {parametrization!r}")
        if parametrization == "op" and gate_inputs != 2:
            raise ValueError(f"the 'op' parametrization has two-input gates only, not gate_inputs={gate_inputs!r}")
        if estimator not in F.ESTIMATORS:
            raise ValueError(f"estimator must be one of {F.ESTIMATORS}, not {estimator!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, not {init!r}")
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, not {kernels!r}")
        self.kernels = kernels
        self._reverse_index = K.ReverseIndexCache()
        self.in_features = in_features
        self.gates = gates
        self.gate_inputs = gate_inputs
        self.parametrization = parametrization
        self.estimator = estimator
        self.gumbel = gumbel
        self.gumbel_tau = gumbel_tau
        self.noise_generator = None
        self.register_buffer("wiring", torch.from_numpy(make_wiring(in_features, gates, gate_inputs, wiring, seed,
                                                                          window)))
        entries = 16 if parametrization == "op" else 1 << gate_inputs
        self.weight = nn.Parameter(torch.empty(gates, entries))
        self.reset_parameters(init, seed)

    def reset_parameters(self, init, seed):
        gen = torch.Generator().manual_seed(seed + 1)
        w = torch.empty(self.weight.shape)
        if init == "gaussian":
            w.normal_(0.0, 1.0, generator=gen)
        elif self.parametrization == "op":
            w.zero_()
            w[:, _OP_PASS_THROUGH] = _OP_RESIDUAL_LOGIT
        else:
            mu, sigma = _RESIDUAL_INIT[self.estimator]
            # Pass-through of input 0: table bit a is bit 0 of the address.
            sign = torch.tensor([1.0 if a & 1 else -1.0 for a in range(w.shape[1])])
            w.normal_(0.0, sigma, generator=gen).add_(sign * mu)
        with torch.no_grad():
            self.weight.copy_(w)

    def relaxed_tables(self):
        """Relaxed table entries ``[gates, 2**n]`` in ``[0, 1]`` (no noise)."""
        if self.parametrization == "op":
            return F.op_tables(torch.softmax(self.weight, dim=-1))
        return F.iwp_tables(self.weight, self.estimator)

    def truth_tables(self):
        """Discrete tables ``[gates, 2**n]`` of 0/1 ``uint8``."""
        if self.parametrization == "op":
            return F.hard_op_bits(self.weight.detach())
        return F.hard_iwp_bits(self.weight.detach(), self.estimator)

    def training_tables(self):
        if not self.gumbel:
            return self.relaxed_tables()
        if self.parametrization == "op":
            return F.gumbel_op_tables(self.weight, self.gumbel_tau, self.noise_generator)
        return F.gumbel_iwp_tables(self.weight, self.estimator, self.gumbel_tau, self.noise_generator)

    def forward(self, x, mode=None):
        """``x``: feature-major activations ``[in_features, batch]``; returns ``[gates, batch]``.

        ``mode``: ``"train"`` (relaxed or Gumbel), ``"soft"`` (relaxed, no noise) or
        ``"discrete"``; by default ``"train"`` in training mode and ``"discrete"`` otherwise."""
        mode = mode or ("train" if self.training else "discrete")
        if mode == "train":
            tables = self.training_tables()
        elif mode == "soft":
            tables = self.relaxed_tables()
        elif mode == "discrete":
            tables = self.truth_tables().to(x.dtype)
        else:
            raise ValueError(f"mode must be 'train', 'soft' or 'discrete', not {mode!r}")
        kernels = self._kernels_for(x) if x.shape[1] else "reference"  # an empty batch takes the reference
        if kernels == "triton":
            return K.gate_forward(x, self.wiring, tables, self._reverse_index.get(self.wiring, self.in_features))
        if kernels == "cpu":
            return K.cpu_gate_forward(x, self.wiring, tables)
        return F.gate_forward(x, self.wiring, tables)

    def _kernels_for(self, x):
        """Which implementation runs ``x``: ``"triton"``, ``"cpu"`` or ``"reference"``."""
        if self.kernels == "reference":
            return "reference"
        if self.kernels == "auto":
            if x.is_cuda:
                return "triton" if K.triton_available() else "reference"
            return "cpu" if K.cpu_can_run(x, warn=True) else "reference"
        if self.kernels == "cpu":
            if not K.cpu_can_run(x):
                raise RuntimeError(K.cpu_cannot_run_reason(x) + "; use train.kernels = 'auto' or 'reference'")
            return "cpu"
        if not K.can_run(x):
            raise RuntimeError(
                f"train.kernels = 'triton' needs a CUDA tensor and Triton installed (got a {x.device.type} tensor, "
                f"Triton {'installed' if K.triton_available() else 'missing'}); use train.kernels = 'auto' or 'reference'"
            )
        return "triton"

    def extra_repr(self):
        return (f"{self.in_features} -> {self.gates}, gate_inputs={self.gate_inputs}, "
                f"parametrization={self.parametrization!r}, estimator={self.estimator!r}, gumbel={self.gumbel}")


class LogicNet(nn.Module):
    """Thermometer bits -> logic layers -> group sum.

    The layers are ``depth`` layers of ``width`` gates, or one layer per entry of ``widths``
    (which then overrides both); ``gate_inputs`` is one number or one per layer. ``forward``
    returns class logits (group sums divided by ``tau``, by default ``sqrt(last width /
    classes)``); :meth:`scores` returns the discrete integer popcounts per class that the
    hardware computes.
    """

    def __init__(self, in_bits, classes, width, depth, gate_inputs=2, parametrization="iwp",
                 estimator="sin01", init="residual", wiring="random", tau=None, seed=0,
                 gumbel=False, gumbel_tau=1.0, kernels="auto", window=64, groups="contiguous", widths=None):
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
        layers = []
        features = in_bits
        for i, (gates, n) in enumerate(zip(widths, inputs)):
            layers.append(LogicLayer(features, gates, n, parametrization, estimator, init,
                                     wiring, seed=seed * 1000 + i, gumbel=gumbel, gumbel_tau=gumbel_tau,
                                     kernels=kernels, window=window))
            features = gates
        self.layers = nn.ModuleList(layers)

    def set_noise_generator(self, generator):
        for layer in self.layers:
            layer.noise_generator = generator

    def group_sums(self, bits, mode=None):
        """``bits``: ``[batch, in_bits]`` -> per-class sums ``[batch, classes]``."""
        x = bits.t().contiguous()
        for layer in self.layers:
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
        return sum(layer.gates for layer in self.layers)

    @property
    def params(self):
        return sum(p.numel() for p in self.parameters())

    def undecided_share(self, margin=0.1):
        with torch.no_grad():
            values = torch.cat([(layer.relaxed_tables() - 0.5).abs().flatten() for layer in self.layers])
        return values.lt(margin).float().mean().item()

    def class_groups(self):
        """Last-layer gate indices of each class's group."""
        return F.class_groups(self.layers[-1].gates, self.classes, self.group_layout)

    def discrete_layers(self):
        """``[(wiring [G, n] int64, truth_tables [G, 2**n] uint8), ...]`` for the compiler."""
        return [(layer.wiring.clone(), layer.truth_tables().cpu()) for layer in self.layers]

