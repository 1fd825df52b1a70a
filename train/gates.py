"""What every layer of trained gates shares: relaxed truth tables made from parameters, and the
choice of kernel that evaluates them (DESIGN §2.2–2.6).

:class:`GateTables` holds the parameters of ``tables`` truth tables of ``gate_inputs`` inputs
(IWP: ``2**n`` raw entries per table, OP: 16 logits) and turns them into the ``[tables, 2**n]``
table entries of a step (relaxed, Gumbel straight-through or discrete). :meth:`GateTables.gate_level`
evaluates one level of gates that read their inputs by a fixed wiring, each with the table
``table_index[g]`` (one table per gate for dense layers, one table shared by every position in
convolutional ones), through the PyTorch reference, the C++ CPU kernels or the Triton kernels.
"""

import torch
from torch import nn

from . import functional as F
from . import kernels as K

__all__ = ["PARAMETRIZATIONS", "INITS", "KERNELS", "MODES", "GateTables", "TableGroupsCache"]

PARAMETRIZATIONS = ("iwp", "op")
INITS = ("residual", "gaussian")
#: ``auto``: Triton on CUDA tensors, the C++ kernels on float32/float64 CPU tensors (the PyTorch
#: reference if they cannot be built), the reference elsewhere.
KERNELS = ("auto", "triton", "cpu", "reference")
MODES = ("train", "soft", "discrete")

# Residual init: (mu, sigma) of the raw parameter per estimator (DESIGN §2.5).
_RESIDUAL_INIT = {"sin01": (1.2, 0.25), "sigmoid": (3.0, 0.5)}
_OP_RESIDUAL_LOGIT = 5.0
_OP_PASS_THROUGH = 3  # difflogic function id of "A" (first input)


class TableGroupsCache:
    """The gates of each table (:func:`~dlgn.train.kernels.build_reverse_index` of
    ``table_index[:, None]``), built once per device: the kernels sum the table gradient over
    them in a fixed order."""

    def __init__(self, tables):
        self.tables = tables
        self._index = {}

    def get(self, table_index):
        key = (table_index.device, table_index.data_ptr(), table_index._version)
        if key not in self._index:
            self._index = {key: K.build_reverse_index(table_index[:, None], self.tables)}
        return self._index[key]


class GateTables(nn.Module):
    """``tables`` learned truth tables of ``gate_inputs`` inputs and how they are evaluated.

    Train mode evaluates the relaxed tables (or, with ``gumbel``, hard stochastic tables with
    straight-through gradients); eval mode the discrete truth tables, which on binary inputs
    give exactly the discrete network's bits."""

    def __init__(self, tables, gate_inputs=2, parametrization="iwp", estimator="sin01", init="residual", seed=0,
                 gumbel=False, gumbel_tau=1.0, kernels="auto"):
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
        if not 1 <= gate_inputs <= 6:
            raise ValueError(f"gates have 1 to 6 inputs, not gate_inputs={gate_inputs!r}")
        self.kernels = kernels
        self.gate_inputs = gate_inputs
        self.parametrization = parametrization
        self.estimator = estimator
        self.gumbel = gumbel
        self.gumbel_tau = gumbel_tau
        self.noise_generator = None
        entries = 16 if parametrization == "op" else 1 << gate_inputs
        self.weight = nn.Parameter(torch.empty(tables, entries))
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
        """Relaxed table entries ``[tables, 2**n]`` in ``[0, 1]`` (no noise)."""
        if self.parametrization == "op":
            return F.op_tables(torch.softmax(self.weight, dim=-1))
        return F.iwp_tables(self.weight, self.estimator)

    def truth_tables(self):
        """Discrete tables ``[tables, 2**n]`` of 0/1 ``uint8``."""
        if self.parametrization == "op":
            return F.hard_op_bits(self.weight.detach())
        return F.hard_iwp_bits(self.weight.detach(), self.estimator)

    def training_tables(self):
        if not self.gumbel:
            return self.relaxed_tables()
        if self.parametrization == "op":
            return F.gumbel_op_tables(self.weight, self.gumbel_tau, self.noise_generator)
        return F.gumbel_iwp_tables(self.weight, self.estimator, self.gumbel_tau, self.noise_generator)

    def tables_for(self, mode, dtype):
        """The tables of one forward pass in ``mode`` (``"train"``, ``"soft"`` or ``"discrete"``)."""
        if mode == "train":
            return self.training_tables()
        if mode == "soft":
            return self.relaxed_tables()
        if mode == "discrete":
            return self.truth_tables().to(dtype)
        raise ValueError(f"mode must be 'train', 'soft' or 'discrete', not {mode!r}")

    def gate_level(self, x, wiring, tables, table_index=None, reverse_index=None, table_groups=None):
        """One level of gates: gate ``g`` reads ``x[wiring[g]]`` (``x``: ``[features, batch]``) and
        evaluates ``tables[table_index[g]]`` (``tables[g]`` without an index). ``reverse_index``
        and ``table_groups`` (caches with a ``get``) save the kernels rebuilding their indices."""
        kernels = self._kernels_for(x) if x.shape[1] else "reference"  # an empty batch takes the reference
        if kernels == "triton":
            return K.gate_forward(x, wiring, tables, reverse_index.get(wiring, x.shape[0]) if reverse_index else None,
                                  table_index=table_index,
                                  table_groups=table_groups.get(table_index) if table_groups and table_index is not None
                                  else None)
        if kernels == "cpu":
            if table_index is None:
                return K.cpu_gate_forward(x, wiring, tables)
            return K.cpu_gate_forward(x, wiring, tables, table_index,
                                      table_groups.get(table_index) if table_groups else None)
        return F.gate_forward(x, wiring, tables, table_index)

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
