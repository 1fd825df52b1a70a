"""PyTorch reference math for logic gates (DESIGN §2.2–2.6).

This module is the portable path (``train.kernels = "reference"``), the test oracle of the
Triton and C++ kernels (:mod:`dlgn.train.kernels`) and the baseline of every benchmark.
Activations of the gate layers are feature-major, ``[features, batch]``.

Truth-table convention (everywhere in dlgn): table bit ``a = sum_j x_j * 2**j`` is the gate
output for input pattern ``a``; input 0 is the least significant address bit.
"""

import math

import torch

__all__ = [
    "ESTIMATORS",
    "estimate",
    "multilinear",
    "gate_forward",
    "op_truth_tables",
    "op_tables",
    "iwp_tables",
    "hard_iwp_bits",
    "hard_op_bits",
    "group_sum",
    "predict",
]

ESTIMATORS = ("sin01", "sigmoid")


def estimate(omega, estimator):
    """Map raw parameters to relaxed table entries in ``[0, 1]`` (the estimator ``rho``)."""
    if estimator == "sin01":
        return 0.5 + 0.5 * torch.sin(omega)
    if estimator == "sigmoid":
        return torch.sigmoid(omega)
    raise ValueError(f"estimator must be one of {ESTIMATORS}, not {estimator!r}")


def decided_bits(omega, estimator):
    """Per-entry rounding of the relaxed table: bit ``a`` is ``rho(omega_a) > 0.5``.

    Computed on the raw parameter so that it is exact (sin01: ``sin(omega) > 0``)."""
    if estimator == "sin01":
        return torch.sin(omega) > 0
    if estimator == "sigmoid":
        return omega > 0
    raise ValueError(f"estimator must be one of {ESTIMATORS}, not {estimator!r}")


def multilinear(inputs, tables):
    """Evaluate the multilinear extension of per-gate truth tables (autograd version).

    ``inputs``: ``[n, gates, batch]`` relaxed inputs in ``[0, 1]``; ``tables``: ``[gates, 2**n]``
    relaxed table entries. Returns ``[gates, batch]``.

    The table is folded one input at a time, most significant address bit first: entries whose
    address has bit ``j`` set are the upper half of the remaining table, so
    ``t <- t_lo + p_j * (t_hi - t_lo)``. On binary inputs this selects exactly entry ``a``.
    """
    n = inputs.shape[0]
    if tables.shape[-1] != 1 << n:
        raise ValueError(f"tables have {tables.shape[-1]} entries, expected 2**{n}")
    t = tables.t()[:, :, None]  # [2**n, gates, 1]: entry-major so that halves are contiguous
    for j in range(n - 1, -1, -1):
        half = 1 << j
        t = torch.lerp(t[:half], t[half:], inputs[j])
    return t[0]


class GateFunction(torch.autograd.Function):
    """Fused gather + multilinear gate evaluation with a hand-written backward.

    Layout: activations are feature-major ``[features, batch]`` (as in difflogic's CUDA
    kernels): each gate input is then one contiguous row, the gather is a row copy and the
    backward to the inputs a row-wise ``index_add_``. Measured on the 2-core CPU at 4 x 16k
    gates, batch 128: the batch-major autograd version spent its time in strided multiplies and
    ``index_put_`` (about 310 ms a step); see ``bench/`` for the current ratio.
    """

    @staticmethod
    def forward(ctx, x, wiring, tables):
        n = wiring.shape[1]
        flat = wiring.t().reshape(-1)
        inputs = x.index_select(0, flat).view(n, wiring.shape[0], x.shape[1])
        t = tables.t()[:, :, None]
        levels = []
        for j in range(n - 1, -1, -1):
            half = 1 << j
            levels.append(t)
            t = torch.lerp(t[:half], t[half:], inputs[j])
        ctx.save_for_backward(inputs, flat, tables, *levels)
        ctx.in_features = x.shape[0]
        return t[0]

    @staticmethod
    def backward(ctx, grad_out):
        inputs, flat, tables, *levels = ctx.saved_tensors
        n = inputs.shape[0]
        grad_x = grad_tables = None
        grad_inputs = torch.empty_like(inputs) if ctx.needs_input_grad[0] else None
        g = grad_out[None]  # [1, gates, batch]: gradient of the level being unfolded
        for j in range(n):
            t = levels[n - 1 - j]  # the level that was folded over input j
            half = 1 << j
            p = inputs[j]
            if grad_inputs is not None:
                torch.sum(g * (t[half:] - t[:half]), dim=0, out=grad_inputs[j])
            if j == n - 1:
                break
            # cat-free split into the gradients of the low and high halves
            g_next = torch.empty((2 * half,) + g.shape[1:], dtype=g.dtype, device=g.device)
            torch.mul(g, p, out=g_next[half:])
            torch.sub(g, g_next[half:], out=g_next[:half])
            g = g_next
        if ctx.needs_input_grad[2]:
            # The last split is never materialised: sum over the batch directly.
            p = inputs[n - 1]
            high = torch.einsum("egb,gb->eg", g, p)
            grad_tables = torch.cat([g.sum(-1) - high, high]).t().to(tables.dtype)
        if grad_inputs is not None and inputs.shape[2] == 0:  # an empty batch (a DDP rank's share)
            grad_x = grad_inputs.new_zeros((ctx.in_features, 0))
        elif grad_inputs is not None:
            # Sum the gradients of the gate inputs per feature: a segment sum over the edges
            # sorted by feature (deterministic, multithreaded; index_add_ is about 4x slower on
            # the CPU at 32k edges x batch 128).
            order = torch.argsort(flat, stable=True)
            lengths = torch.bincount(flat, minlength=ctx.in_features)
            edges = grad_inputs.view(n * inputs.shape[1], inputs.shape[2]).index_select(0, order)
            grad_x = torch.segment_reduce(edges, "sum", lengths=lengths, axis=0, unsafe=True)
        return grad_x, None, grad_tables


def gate_forward(x, wiring, tables, table_index=None):
    """One layer of gates: gather each gate's inputs from ``x`` ``[in, batch]`` by ``wiring``
    ``[gates, n]`` and evaluate ``tables`` ``[gates, 2**n]``. Returns ``[gates, batch]``.

    ``table_index`` ``[gates]``: gate ``g`` evaluates ``tables[table_index[g]]`` instead (gates
    sharing a table, as in convolutional layers); the table gradient then sums over them."""
    if table_index is not None:
        tables = tables.index_select(0, table_index)
    return GateFunction.apply(x, wiring, tables)


def op_truth_tables(dtype=torch.float32, device=None):
    """The 16 two-input functions in difflogic's order as a ``[16, 4]`` table matrix.

    difflogic's function id ``i`` encodes ``8*G(0,0) + 4*G(0,1) + 2*G(1,0) + G(1,1)`` with
    ``(A, B)`` = (first input, second input). Our table address is ``a = A + 2*B``.
    """
    rows = []
    for i in range(16):
        g00, g01, g10, g11 = (i >> 3) & 1, (i >> 2) & 1, (i >> 1) & 1, i & 1
        rows.append([g00, g10, g01, g11])  # addresses 0 (A0B0), 1 (A1B0), 2 (A0B1), 3 (A1B1)
    return torch.tensor(rows, dtype=dtype, device=device)


def op_tables(weights):
    """Relaxed OP gate = softmax-mixture of the 16 functions, written as a 4-entry table.

    Every relaxed two-input function is multilinear, so the mixture equals the IWP form with
    ``omega_a = sum_i p_i * G_i(a)``; this is the same value and gradient as difflogic's
    ``bin_op_s`` with one multiply by a ``[16, 4]`` matrix."""
    return weights @ op_truth_tables(weights.dtype, weights.device)


def iwp_tables(omega, estimator):
    return estimate(omega, estimator)


def gumbel_iwp_tables(omega, estimator, tau, generator=None):
    """Stochastic hard tables with straight-through gradients (DESIGN §2.6, IWP analogue).

    One draw per gate and table entry, shared by the batch. ``sin01``: bit ~ Bernoulli(rho),
    gradient of rho. ``sigmoid``: logistic noise on the logit at temperature ``tau`` (binary
    Gumbel-softmax): hard bit ``omega + L > 0``, gradient of ``sigmoid((omega + L) / tau)``.
    """
    u = torch.rand(omega.shape, generator=generator, dtype=omega.dtype, device="cpu").to(omega.device)
    if estimator == "sin01":
        soft = estimate(omega, estimator)
        hard = (u < soft.detach()).to(omega.dtype)
    elif estimator == "sigmoid":
        u = u.clamp(1e-7, 1 - 1e-7)
        logistic = torch.log(u) - torch.log1p(-u)
        soft = torch.sigmoid((omega + logistic) / tau)
        hard = (omega.detach() + logistic > 0).to(omega.dtype)
    else:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, not {estimator!r}")
    return hard - soft.detach() + soft


def gumbel_op_tables(logits, tau, generator=None):
    """OP Gumbel-softmax straight-through: forward uses the one function
    ``argmax(z + g)``, backward the gradient of ``softmax((z + g) / tau)``; one Gumbel vector per
    gate per step, shared by the batch (Mind the Gap)."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device="cpu").to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))
    soft = torch.softmax((logits + gumbel) / tau, dim=-1)
    hard = torch.nn.functional.one_hot(soft.argmax(-1), 16).to(logits.dtype)
    return op_tables(hard - soft.detach() + soft)


def hard_iwp_bits(omega, estimator):
    """Discrete IWP tables ``[gates, 2**n]`` of 0/1 (per-entry rounding, DESIGN §2.3)."""
    return decided_bits(omega, estimator).to(torch.uint8)


def hard_op_bits(logits):
    """Discrete OP tables ``[gates, 4]``: the argmax function's truth table."""
    tables = op_truth_tables(torch.float32, logits.device)[logits.argmax(-1)]
    return tables.to(torch.uint8)


GROUP_LAYOUTS = ("contiguous", "interleaved")


def group_sum(x, classes, layout="contiguous"):
    """Sum the last layer ``[gates, batch]`` per class; returns ``[batch, classes]``.

    ``contiguous``: class ``c`` owns gates ``[c*G/k, (c+1)*G/k)``; ``interleaved``: class ``c``
    owns gates ``c, c + k, c + 2k, ...`` (with local wiring, every class then sees every region
    of the input)."""
    width, batch = x.shape
    if width % classes:
        raise ValueError(f"last layer width {width} is not divisible by {classes} classes")
    if layout == "contiguous":
        return x.reshape(classes, width // classes, batch).sum(1).t()
    if layout == "interleaved":
        return x.reshape(width // classes, classes, batch).sum(0).t()
    raise ValueError(f"group layout must be one of {GROUP_LAYOUTS}, not {layout!r}")


def class_groups(width, classes, layout="contiguous"):
    """Gate indices of each class's group, as :func:`group_sum` sums them."""
    per_class = width // classes
    if layout == "interleaved":
        return [list(range(c, width, classes)) for c in range(classes)]
    return [list(range(c * per_class, (c + 1) * per_class)) for c in range(classes)]


def predict(scores):
    """Class with the highest score; the lowest class index wins ties (DESIGN §2.8).

    ``torch.argmax`` documents that it returns the first maximal index; this is the one
    place the rule lives in the trainer."""
    return scores.argmax(dim=-1)


def default_tau(width, classes):
    """Rule of thumb ``tau ~ sqrt(G / k)``."""
    return math.sqrt(width / classes)
