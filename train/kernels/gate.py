"""Fused Triton kernels for one layer of logic gates: gather + relaxed truth table (DESIGN §2.2–2.6).

Same math and semantics as :class:`dlgn.train.functional.GateFunction` (the reference): gate ``g``
reads ``p_j = x[wiring[g, j]]`` and outputs the multilinear extension of its table,
``sum_a tables[g, a] * prod_j (p_j if bit j of a else 1 - p_j)``. Every parametrization (IWP
with any estimator, OP's 16-function mixture, Gumbel straight-through, hard evaluation tables)
reaches this op as plain ``tables [gates, 2**n]``; the per-gate work that makes them stays in
PyTorch, where it costs ``gates * 2**n`` elements against ``gates * batch * (n + 1)`` here.

Layout: activations are feature-major ``[features, batch]`` with the batch contiguous (as in
difflogic's CUDA kernels and the whole trainer). A program owns a tile of ``BLOCK_G`` gates x
``BLOCK_B`` samples; the gather of input ``j`` then loads, for each gate, one contiguous run of
``BLOCK_B`` values from the row ``wiring[g, j]``: full coalesced 32-byte sectors whatever the
(random) wiring. Batch-major activations would turn every gather into scattered 4-byte reads,
one sector each, for 8x the memory traffic of the useful data.

Evaluation order: the table is folded one input at a time, least significant address bit first
(``t <- t_lo + p_j (t_hi - t_lo)`` on the even/odd entries, i.e. ``tl.split`` of the last dim).
The reference folds most significant bit first; the two agree to float rounding, and exactly on
binary inputs with 0/1 tables (every lerp then selects).

Backward (one program per gate tile, looping over the batch so that the table gradient is a
deterministic in-register reduction, no atomics):

- up: refold the table from the saved inputs (recompute instead of saving the ``2**n`` fold levels
  per sample that the reference keeps), keeping the differences ``d_k = t_hi - t_lo`` of each level;
- down: expand the output gradient into the coefficients ``c`` of each level (``tl.join`` of
  ``c (1 - p_k)`` and ``c p_k``); ``dL/dp_k = sum c_{k+1} d_k`` and ``dL/dtables = sum_batch c_0``.

``dL/dp`` goes either to a per-gate-input buffer ``[n * gates, batch]`` that a second kernel sums
per feature through the reverse (CSR) index (deterministic, the default), or straight into ``x``'s
gradient with fp32 ``tl.atomic_add`` (``deterministic=False``).

Shared tables (convolutional layers, :mod:`dlgn.train.conv`): with ``table_index [gates]`` gate
``g`` loads ``tables[table_index[g]]``; the backward writes each gate's table gradient and a
second pass sums them per table through the CSR index of ``table_index`` (the input-gradient
kernel, with tables for features): deterministic, no atomics.

Precision: ``x`` may be float32, bfloat16 or float16; tables, all arithmetic and the table
gradient are float32; the output, the per-gate-input gradients and ``x``'s gradient are in
``x``'s dtype (the per-feature sums accumulate in float32).
"""

import contextlib

import torch
import triton
import triton.language as tl

from .reverse_index import ReverseIndex, build_reverse_index

__all__ = ["GateFunction", "gate_forward", "INTERPRETED", "ACTIVATION_DTYPES"]

ACTIVATION_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_GATE_INPUTS = 6

# Input gradient modes of the backward kernel.
_NO_INPUT_GRAD = 0
_EDGE_INPUT_GRAD = 1  # per gate input rows, summed through the reverse index
_ATOMIC_INPUT_GRAD = 2  # fp32 atomics into x's gradient


@triton.jit
def _gate_forward_kernel(x_ptr, wiring_ptr, tables_ptr, table_index_ptr, out_ptr, gates, batch, stride_x, stride_out,
                         N: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_B: tl.constexpr, SHARED: tl.constexpr):
    ENTRIES: tl.constexpr = 1 << N
    gate = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    col = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    gate_ok = gate < gates
    ok = gate_ok[:, None] & (col < batch)[None, :]
    gate = gate.to(tl.int64)
    entry = tl.arange(0, ENTRIES)
    if SHARED:
        table_row = tl.load(table_index_ptr + gate, mask=gate_ok, other=0).to(tl.int64)
    else:
        table_row = gate
    table = tl.load(tables_ptr + table_row[:, None] * ENTRIES + entry[None, :], mask=gate_ok[:, None], other=0.0)
    t = tl.expand_dims(table, 1)  # [BLOCK_G, 1, ENTRIES]; the batch dim appears at the first fold
    for j in tl.static_range(N):
        src = tl.load(wiring_ptr + gate * N + j, mask=gate_ok, other=0).to(tl.int64)
        p = tl.load(x_ptr + src[:, None] * stride_x + col[None, :], mask=ok, other=0.0).to(tl.float32)
        lo, hi = tl.split(tl.reshape(t, (BLOCK_G, t.shape[1], ENTRIES >> (j + 1), 2)))
        t = lo + tl.expand_dims(p, 2) * (hi - lo)
    y = tl.reshape(t, (BLOCK_G, BLOCK_B))
    tl.store(out_ptr + gate[:, None] * stride_out + col[None, :], y.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _gate_backward_kernel(x_ptr, wiring_ptr, tables_ptr, table_index_ptr, grad_out_ptr, grad_edge_ptr, grad_x_ptr,
                          grad_tables_ptr, gates, batch, stride_x, stride_grad_out, stride_edge, stride_grad_x,
                          N: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_B: tl.constexpr,
                          INPUT_GRAD: tl.constexpr, TABLE_GRAD: tl.constexpr, SHARED: tl.constexpr):
    """``grad_tables_ptr``: ``[gates, 2**n]``, the table gradient of each gate (with shared tables
    :func:`_table_grad_reduce` then sums it over the gates of each table)."""
    ENTRIES: tl.constexpr = 1 << N
    gate = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    gate_ok = gate < gates
    gate = gate.to(tl.int64)
    entry = tl.arange(0, ENTRIES)
    if SHARED:
        table_row = tl.load(table_index_ptr + gate, mask=gate_ok, other=0).to(tl.int64)
    else:
        table_row = gate
    table = tl.load(tables_ptr + table_row[:, None] * ENTRIES + entry[None, :], mask=gate_ok[:, None], other=0.0)
    table = tl.expand_dims(table, 1)
    srcs = ()
    for j in tl.static_range(N):
        srcs = srcs + (tl.load(wiring_ptr + gate * N + j, mask=gate_ok, other=0).to(tl.int64),)
    grad_table = tl.zeros((BLOCK_G, ENTRIES), dtype=tl.float32)
    for start in range(0, batch, BLOCK_B):
        col = start + tl.arange(0, BLOCK_B)
        ok = gate_ok[:, None] & (col < batch)[None, :]
        # Masked lanes carry a zero gradient, so they add nothing to the table gradient.
        g = tl.load(grad_out_ptr + gate[:, None] * stride_grad_out + col[None, :], mask=ok, other=0.0)
        g = g.to(tl.float32)
        ps = ()
        for j in tl.static_range(N):
            p = tl.load(x_ptr + srcs[j][:, None] * stride_x + col[None, :], mask=ok, other=0.0)
            ps = ps + (tl.expand_dims(p.to(tl.float32), 2),)
        # Up: refold the table, keeping each level's differences (t_hi - t_lo).
        diffs = ()
        t = table
        for k in tl.static_range(N):
            lo, hi = tl.split(tl.reshape(t, (BLOCK_G, t.shape[1], ENTRIES >> (k + 1), 2)))
            d = hi - lo
            diffs = diffs + (d,)
            t = lo + ps[k] * d
        # Down: c holds dL/d(level k+1 entries); dL/dp_k = sum(c * d_k), then split c over bit k.
        c = tl.expand_dims(g, 2)
        for bit in tl.static_range(N - 1, -1, -1):
            if INPUT_GRAD != 0:
                grad_p = tl.sum(c * diffs[bit], axis=2)
                if INPUT_GRAD == 1:
                    row = gate + bit * gates
                    tl.store(grad_edge_ptr + row[:, None] * stride_edge + col[None, :],
                             grad_p.to(grad_edge_ptr.dtype.element_ty), mask=ok)
                else:
                    tl.atomic_add(grad_x_ptr + srcs[bit][:, None] * stride_grad_x + col[None, :], grad_p,
                                  mask=ok, sem="relaxed")
            if bit > 0:
                c = tl.reshape(tl.join(c * (1.0 - ps[bit]), c * ps[bit]), (BLOCK_G, BLOCK_B, ENTRIES >> bit))
            elif TABLE_GRAD:
                c = tl.reshape(tl.join(c * (1.0 - ps[bit]), c * ps[bit]), (BLOCK_G, BLOCK_B, ENTRIES))
                grad_table += tl.sum(c, axis=1)
    if TABLE_GRAD:
        tl.store(grad_tables_ptr + gate[:, None] * ENTRIES + entry[None, :], grad_table, mask=gate_ok[:, None])


@triton.jit
def _gate_input_grad_kernel(grad_edge_ptr, offsets_ptr, edges_ptr, grad_x_ptr, batch, stride_edge, stride_grad_x,
                            BLOCK_B: tl.constexpr):
    """Feature ``i`` sums the gradient rows of the gate inputs that read it, in CSR order."""
    feature = tl.program_id(0).to(tl.int64)
    col = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    col_ok = col < batch
    first = tl.load(offsets_ptr + feature)
    last = tl.load(offsets_ptr + feature + 1)
    acc = tl.zeros((BLOCK_B,), dtype=tl.float32)
    for e in range(first, last):
        row = tl.load(edges_ptr + e)
        acc += tl.load(grad_edge_ptr + row * stride_edge + col, mask=col_ok, other=0.0).to(tl.float32)
    tl.store(grad_x_ptr + feature * stride_grad_x + col, acc.to(grad_x_ptr.dtype.element_ty), mask=col_ok)


INTERPRETED = type(_gate_forward_kernel).__name__ == "InterpretedFunction"
"""Whether the kernels were decorated under ``TRITON_INTERPRET=1`` (they then run on CPU tensors)."""

# Tile sizes (gates x samples per program) by gate inputs n. The fold keeps 2**(n-1) values per
# sample live after the first input (forward) and about 2**(n+1) in the backward (differences +
# coefficients). Chosen from ptxas register counts for sm_90 (compiled offline, no GPU): the
# largest tile that stays at or under ~128 registers per thread without spills at 4 warps
# (backward n=6: 168 at one sample per thread, the floor of this algorithm). Not yet timed:
# bench/kernels.py --tiles sweeps them on a GPU.
FORWARD_TILE = {1: 1024, 2: 1024, 3: 512, 4: 256, 5: 256, 6: 256}
BACKWARD_TILE = {1: 1024, 2: 512, 3: 256, 4: 128, 5: 128, 6: 128}
_NUM_WARPS = 4
_MAX_BLOCK_B = 128  # 512 contiguous bytes per gathered row in fp32
_MIN_BLOCK_B = 16


def _tile(gates, batch, elements):
    block_b = min(max(triton.next_power_of_2(batch), _MIN_BLOCK_B), _MAX_BLOCK_B)
    block_g = max(1, min(elements // block_b, triton.next_power_of_2(gates)))
    return block_g, block_b


def _device_context(x):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def gate_forward_launch(x, wiring, tables, table_index=None):
    """Launch the forward kernel: ``x [in, batch]``, ``wiring [gates, n]``, fp32 ``tables
    [gates, 2**n]`` (or ``[tables, 2**n]`` with ``table_index [gates]``; all contiguous) ->
    ``[gates, batch]`` in ``x``'s dtype."""
    gates, n = wiring.shape
    batch = x.shape[1]
    out = torch.empty((gates, batch), dtype=x.dtype, device=x.device)
    if gates == 0 or batch == 0:
        return out
    block_g, block_b = _tile(gates, batch, FORWARD_TILE[n])
    grid = (triton.cdiv(gates, block_g), triton.cdiv(batch, block_b))
    with _device_context(x):
        _gate_forward_kernel[grid](x, wiring, tables, table_index if table_index is not None else wiring, out, gates,
                                   batch, x.stride(0), out.stride(0), N=n, BLOCK_G=block_g, BLOCK_B=block_b,
                                   SHARED=table_index is not None, num_warps=_NUM_WARPS)
    return out


def gate_backward_launch(grad_out, x, wiring, tables, reverse_index=None, deterministic=True,
                         input_grad=True, table_grad=True, table_index=None, table_groups=None):
    """Launch the backward kernels. Returns ``(grad_x or None, grad_tables or None)``;
    ``grad_x`` is in ``x``'s dtype, ``grad_tables`` (shaped like ``tables``) in float32.

    With ``table_index``, the per-gate table gradients are summed over the gates of each table
    through ``table_groups`` (the CSR index of ``table_index[:, None]``, built when missing), in
    a fixed order: deterministic like the rest of the backward."""
    gates, n = wiring.shape
    in_features, batch = x.shape
    grad_x = grad_tables = None
    if table_grad and table_index is not None and gates and batch:
        grad_tables = torch.empty((gates, 1 << n), dtype=torch.float32, device=x.device)
        if table_groups is None:
            table_groups = build_reverse_index(table_index[:, None], tables.shape[0])
    elif table_grad:
        grad_tables = torch.empty(tuple(tables.shape), dtype=torch.float32, device=x.device)
    if input_grad:
        # The reverse-index kernel writes every element; the atomics add into zeros.
        grad_x = torch.empty_like(x) if deterministic and gates and batch else torch.zeros_like(x)
    if gates == 0 or batch == 0 or not (input_grad or table_grad):
        if grad_tables is not None:
            grad_tables.zero_()
        return grad_x, grad_tables
    mode = _NO_INPUT_GRAD
    grad_edge = grad_x_acc = None
    if input_grad and deterministic:
        mode = _EDGE_INPUT_GRAD
        grad_edge = torch.empty((n * gates, batch), dtype=x.dtype, device=x.device)
        if reverse_index is None:
            reverse_index = build_reverse_index(wiring, in_features)
    elif input_grad:
        mode = _ATOMIC_INPUT_GRAD
        grad_x_acc = grad_x if x.dtype == torch.float32 else torch.zeros(x.shape, dtype=torch.float32,
                                                                        device=x.device)
    block_g, block_b = _tile(gates, batch, BACKWARD_TILE[n])
    grid = (triton.cdiv(gates, block_g),)
    with _device_context(x):
        # Pointer arguments of a disabled output still need a tensor; any will do.
        _gate_backward_kernel[grid](
            x, wiring, tables, table_index if table_index is not None else wiring, grad_out,
            grad_edge if grad_edge is not None else x,
            grad_x_acc if grad_x_acc is not None else x,
            grad_tables if grad_tables is not None else tables,
            gates, batch, x.stride(0), grad_out.stride(0),
            grad_edge.stride(0) if grad_edge is not None else 0,
            grad_x_acc.stride(0) if grad_x_acc is not None else 0,
            N=n, BLOCK_G=block_g, BLOCK_B=block_b, INPUT_GRAD=mode, TABLE_GRAD=table_grad,
            SHARED=table_index is not None, num_warps=_NUM_WARPS)
        if mode == _EDGE_INPUT_GRAD:
            block_b = min(max(triton.next_power_of_2(batch), _MIN_BLOCK_B), _MAX_BLOCK_B)
            grid = (in_features, triton.cdiv(batch, block_b))
            _gate_input_grad_kernel[grid](grad_edge, reverse_index.offsets, reverse_index.edges, grad_x, batch,
                                          grad_edge.stride(0), grad_x.stride(0), BLOCK_B=block_b,
                                          num_warps=_NUM_WARPS)
        if table_grad and table_index is not None:
            per_gate, grad_tables = grad_tables, torch.empty(tuple(tables.shape), dtype=torch.float32, device=x.device)
            _table_grad_reduce(per_gate, table_groups, grad_tables)
    if mode == _ATOMIC_INPUT_GRAD and grad_x_acc is not grad_x:
        grad_x.copy_(grad_x_acc)
    return grad_x, grad_tables


def _table_grad_reduce(per_gate, table_groups, grad_tables):
    """``grad_tables[t] = sum of per_gate[g]`` over the gates ``g`` of table ``t``, in CSR order:
    the per-feature sum of the input gradient, with tables for features and table entries for
    samples."""
    entries = per_gate.shape[1]
    _gate_input_grad_kernel[(grad_tables.shape[0], 1)](
        per_gate, table_groups.offsets, table_groups.edges, grad_tables, entries, per_gate.stride(0),
        grad_tables.stride(0), BLOCK_B=max(_MIN_BLOCK_B, triton.next_power_of_2(entries)), num_warps=_NUM_WARPS)


class GateFunction(torch.autograd.Function):
    """Autograd op of :func:`gate_forward`: saves ``x``, the wiring and the fp32 tables and
    recomputes the fold in the backward (the reference saves ``2**n`` levels per sample)."""

    @staticmethod
    def forward(ctx, x, wiring, tables, reverse_index, deterministic, table_index, table_groups):
        tables32 = tables.to(torch.float32).contiguous()
        out = gate_forward_launch(x, wiring, tables32, table_index)
        ctx.save_for_backward(x, wiring, tables32, table_index)
        ctx.reverse_index = reverse_index
        ctx.table_groups = table_groups
        ctx.deterministic = deterministic
        ctx.tables_dtype = tables.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, wiring, tables32, table_index = ctx.saved_tensors
        input_grad, _, table_grad = ctx.needs_input_grad[:3]
        grad_x, grad_tables = gate_backward_launch(
            grad_out.to(x.dtype).contiguous(), x, wiring, tables32, ctx.reverse_index, ctx.deterministic,
            input_grad=input_grad, table_grad=table_grad, table_index=table_index, table_groups=ctx.table_groups)
        if grad_tables is not None:
            grad_tables = grad_tables.to(ctx.tables_dtype)
        return grad_x, None, grad_tables, None, None, None, None


def _check(x, wiring, tables, reverse_index, table_index=None, table_groups=None):
    if not (x.is_cuda or INTERPRETED):
        raise RuntimeError(
            f"the Triton gate kernels need CUDA tensors, x is on {x.device}; use "
            "dlgn.train.functional.gate_forward (the PyTorch reference) there, or set TRITON_INTERPRET=1 "
            "before dlgn.train.kernels.gate is first imported to run them in Triton's interpreter")
    if x.dim() != 2 or x.dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"x must be [features, batch] in one of {ACTIVATION_DTYPES}, not "
                        f"{x.dtype} {tuple(x.shape)}")
    if wiring.dim() != 2 or wiring.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"wiring must be an integer tensor [gates, n], not {wiring.dtype} {tuple(wiring.shape)}")
    gates, n = wiring.shape
    if not 1 <= n <= MAX_GATE_INPUTS:
        raise ValueError(f"gates must have 1 to {MAX_GATE_INPUTS} inputs, not {n}")
    rows = gates if table_index is None else "tables"
    if (tables.dim() != 2 or tables.shape[1] != 1 << n or (table_index is None and tables.shape[0] != gates)
            or not tables.is_floating_point()):
        raise ValueError(f"tables must be floating point [{rows}, {1 << n}] for wiring [{gates}, {n}], "
                         f"not {tables.dtype} {tuple(tables.shape)}")
    if table_index is not None:
        if (table_index.dim() != 1 or table_index.shape[0] != gates
                or table_index.dtype not in (torch.int32, torch.int64)):
            raise ValueError(f"table_index must be an integer tensor [{gates}], not {table_index.dtype} "
                             f"{tuple(table_index.shape)}")
        if table_index.device != x.device:
            raise ValueError(f"table_index is on {table_index.device}, x on {x.device}")
        if gates and (int(table_index.min()) < 0 or int(table_index.max()) >= tables.shape[0]):
            raise IndexError(f"table_index points outside the {tables.shape[0]} tables: min "
                             f"{int(table_index.min())}, max {int(table_index.max())}")
        if table_groups is not None and (not isinstance(table_groups, ReverseIndex)
                                         or not table_groups.matches(table_index[:, None], tables.shape[0])):
            raise ValueError("table_groups was not built for this table_index; build it with "
                             "build_reverse_index(table_index[:, None], tables)")
    if wiring.device != x.device or tables.device != x.device:
        raise ValueError(f"x, wiring and tables must be on one device, not {x.device}, {wiring.device}, "
                         f"{tables.device}")
    if reverse_index is not None:
        if not isinstance(reverse_index, ReverseIndex) or not reverse_index.matches(wiring, x.shape[0]):
            raise ValueError("reverse_index was not built for this wiring; build it with "
                             "build_reverse_index(wiring, in_features)")
        if reverse_index.edges.device != x.device:
            raise ValueError(f"reverse_index is on {reverse_index.edges.device}, x on {x.device}; "
                             "move it with reverse_index.to(device)")


def gate_forward(x, wiring, tables, reverse_index=None, deterministic=True, table_index=None, table_groups=None):
    """One layer of gates on the GPU: the Triton version of
    :func:`dlgn.train.functional.gate_forward`.

    ``x``: ``[in_features, batch]`` (float32, bfloat16 or float16); ``wiring``: ``[gates, n]``
    integer indices into ``x``'s rows, ``1 <= n <= 6``; ``tables``: ``[gates, 2**n]`` relaxed or
    hard table entries (computed in float32). Returns ``[gates, batch]`` in ``x``'s dtype;
    differentiable in ``x`` and ``tables``.

    ``reverse_index``: the layer's :class:`ReverseIndex` (``build_reverse_index(wiring,
    in_features)``, built once and cached); without it each backward builds one.
    ``deterministic=False`` uses fp32 atomics for the input gradient instead (no index, no
    ``[n * gates, batch]`` buffer, run-to-run sum order varies).

    ``table_index`` ``[gates]``: gate ``g`` evaluates ``tables[table_index[g]]`` (``tables`` is then
    ``[tables, 2**n]``; convolutional layers share a table over positions); the table gradient sums
    over the gates of each table, deterministically through ``table_groups``
    (``build_reverse_index(table_index[:, None], len(tables))``, built once and cached by the
    caller; without it each backward builds one).
    """
    _check(x, wiring, tables, reverse_index, table_index, table_groups)
    if x.stride(1) != 1:
        x = x.contiguous()
    if table_index is not None:
        table_index = table_index.contiguous()
    return GateFunction.apply(x, wiring.contiguous(), tables, reverse_index, deterministic, table_index, table_groups)
