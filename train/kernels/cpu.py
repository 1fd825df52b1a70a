"""Fused CPU kernels for one layer of logic gates (``train.kernels = "cpu"``; DESIGN §2.2–2.6).

Same op and semantics as :func:`dlgn.train.functional.gate_forward` (the reference): gate ``g``
reads ``p_j = x[wiring[g, j]]`` and outputs the multilinear extension of its table
``tables[table_index[g]]``; every parametrization (IWP with either estimator, OP's 16-function
mixture written as a ``[16, 4]`` table matrix, Gumbel straight-through, hard evaluation tables)
reaches it as plain ``tables [tables, 2**n]``, made in PyTorch. Several gates may share a table
(``table_index``): the table gradient then sums over those gates.

The kernels are C++ (``gate_cpu.cpp``, OpenMP), compiled with the system ``g++`` on first use
into a per-machine cache (``$DLGN_CACHE_DIR``, else ``$XDG_CACHE_HOME/dlgn`` or
``~/.cache/dlgn``; one ``g++`` call of about 3 s, once) and called through ``ctypes``. Why this
tool: measured on the 2-core development CPU (AMD EPYC, AVX-512) at one 8000-gate layer,
batch 128 (``bench/cpu_kernels.py`` has the whole-step ratios):

- The reference materialises a ``[gates, batch]`` tensor per fold level and direction and uses
  about one core. ``torch.compile`` of its math (gather + fold, backward derived by AOTAutograd)
  ran forward + backward 3x faster than the reference at n = 4 but 2.5x slower than this C++,
  compiled for 33 s per shape, and needs a C++ compiler as well.
- numba (on PyPI; a prototype of the same loop nest, n a runtime value) ran 2x (forward) to 4x
  (backward) slower than the C++ at n = 4, 5x at n = 6, took 10 s to compile on first use, adds
  numba + llvmlite and brings its own thread pool next to Torch's.
- In C++ the loops over table entries are compile-time (a template per n), every fold level
  stays in a small stack array (L1) and vectorises over a tile of samples, and we control the
  summation order. A plain C ABI needs no Torch headers: 3 s of ``g++`` CPU time, where a
  ``torch.utils.cpp_extension`` module spends 23 s compiling ``torch/extension.h`` alone;
  ``ctypes`` releases the GIL and costs microseconds a call. OpenMP resolves to the ``libgomp`` that Torch has already loaded, so both
  share one thread pool.

Determinism: bit-identical results between runs and for any thread count (threads own gates in
the forward and fixed batch blocks in the backward; the table gradient is summed per block in a
fixed tree, then over blocks and over the gates sharing a table in a fixed order; the input
gradient is added in gate order by the one thread owning those columns). See ``gate_cpu.cpp``.

Precision: float32 or float64 activations; tables are computed in ``x``'s dtype and their
gradient returned in ``tables.dtype``.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from .reverse_index import ReverseIndex, build_reverse_index

__all__ = ["gate_forward", "GateFunction", "mix_forward", "MixFunction", "available", "load_library", "build_error", "ACTIVATION_DTYPES",
           "KernelBuildError"]

ACTIVATION_DTYPES = (torch.float32, torch.float64)
MAX_GATE_INPUTS = 6
SOURCE = Path(__file__).with_name("gate_cpu.cpp")
# -march=native: the library is built on the machine that runs it (the cache key holds the CPU);
# -ffp-contract=fast lets the folds use FMA (a compile-time choice: still bit-reproducible).
CXX_FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-fPIC", "-shared", "-std=c++17"]


class KernelBuildError(RuntimeError):
    """The CPU kernels could not be compiled or loaded."""


_lock = threading.Lock()
_library = None
_error = None


def _cache_dirs():
    """Where the library is built, in order of preference (the temporary directory when the
    cache is not writable)."""
    if os.environ.get("DLGN_CACHE_DIR"):
        first = Path(os.environ["DLGN_CACHE_DIR"]) / "kernels"
    else:
        first = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlgn" / "kernels"
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return [first, Path(tempfile.gettempdir()) / f"dlgn-{user}" / "kernels"]


def _cpu_signature():
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return platform.processor() or platform.machine()


def _compiler():
    cxx = os.environ.get("CXX", "g++")
    path = shutil.which(cxx)
    if path is None:
        raise KernelBuildError(f"no C++ compiler {cxx!r} on PATH (install g++, or set CXX)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return path, "".join(version)


def _build(target, cxx):
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build under a unique name and rename: concurrent processes (DDP ranks) never see half a file.
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([cxx, *CXX_FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        if result.returncode:
            raise KernelBuildError(f"compiling {SOURCE.name} failed:\n{result.stderr[-3000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _declare(lib):
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    for suffix in ("f32", "f64"):
        forward = getattr(lib, f"dlgn_gate_forward_{suffix}")
        forward.argtypes = [i32, ptr, i64, i64, ptr, i64, ptr, ptr, ptr, i64, i32]
        forward.restype = i32
        backward = getattr(lib, f"dlgn_gate_backward_{suffix}")
        backward.argtypes = [i32, ptr, i64, i64, ptr, i64, ptr, ptr, ptr, i64, ptr, i64, ptr, i32]
        backward.restype = i32
        reduce = getattr(lib, f"dlgn_table_grad_{suffix}")
        reduce.argtypes = [ptr, i64, i64, i32, i64, ptr, ptr, ptr, i32]
        reduce.restype = None
        mix_forward = getattr(lib, f"dlgn_mix_forward_{suffix}")
        mix_forward.argtypes = [ptr, i64, i64, ptr, ptr, i64, i32, ptr, i64, i32]
        mix_forward.restype = None
        mix_backward = getattr(lib, f"dlgn_mix_backward_{suffix}")
        mix_backward.argtypes = [ptr, i64, i64, ptr, ptr, i64, i32, ptr, i64, ptr, i64, ptr, i32]
        mix_backward.restype = None
    lib.dlgn_block.restype = i32
    return lib


def load_library():
    """The compiled kernels (``ctypes.CDLL``), built on first use; raises
    :class:`KernelBuildError` with the reason when that is impossible."""
    global _library, _error
    with _lock:
        if _library is not None:
            return _library
        if _error is not None:
            raise _error
        try:
            cxx, version = _compiler()
            key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(CXX_FLAGS), platform.machine(),
                                            _cpu_signature()]).encode()).hexdigest()[:16]
            name = f"gate_cpu-{key}.so"
            target = next((d / name for d in _cache_dirs() if (d / name).exists()), None)
            if target is None:
                for directory in _cache_dirs():
                    target = directory / name
                    try:
                        _build(target, cxx)
                        break
                    except PermissionError:
                        continue
                else:
                    raise KernelBuildError(f"no writable cache directory for the CPU kernels "
                                           f"({', '.join(map(str, _cache_dirs()))}); set DLGN_CACHE_DIR")
            _library = _declare(ctypes.CDLL(str(target)))
        except KernelBuildError as e:
            _error = e
        except (OSError, subprocess.SubprocessError) as e:
            _error = KernelBuildError(f"building or loading the CPU gate kernels failed: {e}")
        if _error is not None:
            raise _error
        return _library


def available():
    """Whether the CPU kernels are built (building them now if needed)."""
    try:
        load_library()
    except KernelBuildError:
        return False
    return True


def build_error():
    """Why :func:`available` is false (``None`` when it is true)."""
    try:
        load_library()
    except KernelBuildError as e:
        return str(e)
    return None


def _suffix(dtype):
    return "f32" if dtype == torch.float32 else "f64"


def _ptr(t):
    return t.data_ptr() if t is not None else None


def _threads():
    return max(1, torch.get_num_threads())


def forward_launch(x, wiring, tables, table_index):
    """``x [in, batch]`` (batch contiguous), int64 ``wiring [gates, n]``, ``tables`` in ``x``'s
    dtype (contiguous), int64 ``table_index [gates]`` or ``None`` -> ``[gates, batch]``."""
    gates, n = wiring.shape
    batch = x.shape[1]
    out = torch.empty((gates, batch), dtype=x.dtype)
    if gates and batch:
        fn = getattr(load_library(), f"dlgn_gate_forward_{_suffix(x.dtype)}")
        if fn(n, x.data_ptr(), x.stride(0), batch, wiring.data_ptr(), gates, tables.data_ptr(), _ptr(table_index),
              out.data_ptr(), out.stride(0), _threads()):
            raise ValueError(f"the CPU kernels have no case for {n}-input gates")
    return out


def backward_launch(grad_out, x, wiring, tables, table_index, table_groups, input_grad=True, table_grad=True):
    """Returns ``(grad_x or None, grad_tables or None)`` in ``x``'s dtype."""
    gates, n = wiring.shape
    batch = x.shape[1]
    lib = load_library()
    suffix = _suffix(x.dtype)
    grad_x = torch.zeros_like(x) if input_grad else None
    grad_tables = torch.zeros(tables.shape, dtype=x.dtype) if table_grad else None
    if gates == 0 or batch == 0 or not (input_grad or table_grad):
        return grad_x, grad_tables
    blocks = -(-batch // lib.dlgn_block())
    block_grad = torch.empty((blocks, gates, 1 << n), dtype=x.dtype) if table_grad else None
    if getattr(lib, f"dlgn_gate_backward_{suffix}")(
            n, x.data_ptr(), x.stride(0), batch, wiring.data_ptr(), gates, tables.data_ptr(), _ptr(table_index),
            grad_out.data_ptr(), grad_out.stride(0), _ptr(grad_x), grad_x.stride(0) if grad_x is not None else 0,
            _ptr(block_grad), _threads()):
        raise ValueError(f"the CPU kernels have no case for {n}-input gates")
    if table_grad:
        offsets = edges = None
        if table_index is not None:
            if table_groups is None:
                table_groups = build_reverse_index(table_index[:, None], tables.shape[0])
            offsets, edges = table_groups.offsets, table_groups.edges
        getattr(lib, f"dlgn_table_grad_{suffix}")(
            block_grad.data_ptr(), blocks, gates, 1 << n, tables.shape[0], _ptr(offsets), _ptr(edges),
            grad_tables.data_ptr(), _threads())
    return grad_x, grad_tables


class GateFunction(torch.autograd.Function):
    """Autograd op of :func:`gate_forward`: saves ``x``, the wiring and the tables and refolds in
    the backward (the reference saves ``2**n`` fold levels per sample)."""

    @staticmethod
    def forward(ctx, x, wiring, tables, table_index, table_groups):
        tables_x = tables.to(x.dtype).contiguous()
        out = forward_launch(x, wiring, tables_x, table_index)
        ctx.save_for_backward(x, wiring, tables_x, table_index)
        ctx.table_groups = table_groups
        ctx.tables_dtype = tables.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, wiring, tables_x, table_index = ctx.saved_tensors
        input_grad, _, table_grad = ctx.needs_input_grad[:3]
        grad_out = grad_out.to(x.dtype)
        if grad_out.stride(1) != 1:
            grad_out = grad_out.contiguous()
        grad_x, grad_tables = backward_launch(grad_out, x, wiring, tables_x, table_index, ctx.table_groups,
                                              input_grad=input_grad, table_grad=table_grad)
        if grad_tables is not None:
            grad_tables = grad_tables.to(ctx.tables_dtype)
        return grad_x, None, grad_tables, None, None


def _check(x, wiring, tables, table_index, table_groups):
    if x.device.type != "cpu":
        raise RuntimeError(f"the CPU gate kernels need CPU tensors, x is on {x.device}; use train.kernels = "
                           "'auto' (Triton on CUDA) or 'reference'")
    if x.dim() != 2 or x.dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"x must be [features, batch] in one of {ACTIVATION_DTYPES}, not {x.dtype} {tuple(x.shape)}")
    if wiring.dim() != 2 or wiring.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"wiring must be an integer tensor [gates, n], not {wiring.dtype} {tuple(wiring.shape)}")
    gates, n = wiring.shape
    if not 1 <= n <= MAX_GATE_INPUTS:
        raise ValueError(f"gates must have 1 to {MAX_GATE_INPUTS} inputs, not {n}")
    if tables.dim() != 2 or tables.shape[1] != 1 << n or not tables.is_floating_point():
        raise ValueError(f"tables must be floating point [tables, {1 << n}] for wiring [{gates}, {n}], "
                         f"not {tables.dtype} {tuple(tables.shape)}")
    if wiring.device != x.device or tables.device != x.device:
        raise ValueError(f"x, wiring and tables must be on one device, not {x.device}, {wiring.device}, "
                         f"{tables.device}")
    # Out-of-range indices would read outside the buffers: check them (microseconds a layer).
    if wiring.numel() and (int(wiring.min()) < 0 or int(wiring.max()) >= x.shape[0]):
        raise IndexError(f"wiring reads features outside [0, {x.shape[0]}): min {int(wiring.min())}, "
                         f"max {int(wiring.max())}")
    if table_index is None:
        if tables.shape[0] != gates:
            raise ValueError(f"without table_index, tables must have one row per gate ({gates}), "
                             f"not {tables.shape[0]}")
        return
    if table_index.dim() != 1 or table_index.shape[0] != gates or table_index.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"table_index must be an integer tensor [{gates}], not {table_index.dtype} "
                         f"{tuple(table_index.shape)}")
    if gates and (int(table_index.min()) < 0 or int(table_index.max()) >= tables.shape[0]):
        raise IndexError(f"table_index points outside the {tables.shape[0]} tables: min {int(table_index.min())}, "
                         f"max {int(table_index.max())}")
    if table_groups is not None and (not isinstance(table_groups, ReverseIndex)
                                     or not table_groups.matches(table_index[:, None], tables.shape[0])):
        raise ValueError("table_groups was not built for this table_index; build it with "
                         "build_reverse_index(table_index[:, None], tables)")


def gate_forward(x, wiring, tables, table_index=None, table_groups=None):
    """One layer of gates on the CPU: the fused version of
    :func:`dlgn.train.functional.gate_forward`.

    ``x``: ``[in_features, batch]`` float32 or float64; ``wiring``: ``[gates, n]`` integer indices
    into ``x``'s rows, ``1 <= n <= 6``; ``tables``: ``[tables, 2**n]`` relaxed or hard entries;
    ``table_index``: ``[gates]`` integers, the table of each gate (default: gate ``g`` has table
    ``g``). Returns ``[gates, batch]`` in ``x``'s dtype; differentiable in ``x`` and ``tables``.

    ``table_groups``: ``build_reverse_index(table_index[:, None], len(tables))``, the gates of
    each table (built once per layer and cached by the caller; without it each backward builds
    one).
    """
    _check(x, wiring, tables, table_index, table_groups)
    if x.stride(1) != 1:
        x = x.contiguous()
    wiring = wiring.to(torch.int64).contiguous()
    if table_index is not None:
        table_index = table_index.to(torch.int64).contiguous()
    return GateFunction.apply(x, wiring, tables, table_index, table_groups)


class MixFunction(torch.autograd.Function):
    """Autograd op of :func:`mix_forward`."""

    @staticmethod
    def forward(ctx, x, candidates, weights):
        slots, count = candidates.shape
        batch = x.shape[1]
        out = torch.empty((slots, batch), dtype=x.dtype)
        if slots and batch:
            getattr(load_library(), f"dlgn_mix_forward_{_suffix(x.dtype)}")(
                x.data_ptr(), x.stride(0), batch, candidates.data_ptr(), weights.data_ptr(), slots, count,
                out.data_ptr(), out.stride(0), _threads())
        ctx.save_for_backward(x, candidates, weights)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, candidates, weights = ctx.saved_tensors
        input_grad, _, weight_grad = ctx.needs_input_grad[:3]
        slots, count = candidates.shape
        batch = x.shape[1]
        grad_out = grad_out.to(x.dtype)
        if grad_out.stride(1) != 1:
            grad_out = grad_out.contiguous()
        lib = load_library()
        grad_x = torch.zeros_like(x) if input_grad else None
        blocks = -(-batch // lib.dlgn_block())
        # every (block, slot, candidate) entry is written by the kernel
        block_grad = torch.empty((blocks, slots, count), dtype=x.dtype) if weight_grad else None
        if slots and batch and (input_grad or weight_grad):
            getattr(lib, f"dlgn_mix_backward_{_suffix(x.dtype)}")(
                x.data_ptr(), x.stride(0), batch, candidates.data_ptr(), weights.data_ptr(), slots, count,
                grad_out.data_ptr(), grad_out.stride(0), _ptr(grad_x), grad_x.stride(0) if grad_x is not None else 0,
                _ptr(block_grad), _threads())
        grad_weights = None
        if weight_grad:
            grad_weights = block_grad[0].clone() if blocks else torch.zeros((slots, count), dtype=x.dtype)
            for k in range(1, blocks):  # the blocks in order: the same bits for any thread count
                grad_weights += block_grad[k]
        return grad_x, None, grad_weights


def mix_forward(x, candidates, weights):
    """Learned connections on the CPU: ``out[s] = sum_c weights[s, c] * x[candidates[s, c]]``,
    ``[slots, batch]`` in ``x``'s dtype, differentiable in ``x`` and ``weights``; the fused
    version of ``bmm(weights[:, None], x[candidates])`` (which materialises ``[slots, count,
    batch]``). ``x``: ``[features, batch]`` float32/float64; ``candidates``: integer
    ``[slots, count]`` rows of ``x``; ``weights``: ``[slots, count]`` (computed in ``x``'s dtype)."""
    if x.device.type != "cpu" or x.dim() != 2 or x.dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"x must be a CPU [features, batch] tensor in one of {ACTIVATION_DTYPES}, not {x.dtype} "
                        f"{tuple(x.shape)} on {x.device}")
    if candidates.dim() != 2 or candidates.dtype not in (torch.int32, torch.int64) or candidates.shape[1] < 1:
        raise TypeError(f"candidates must be an integer tensor [slots, count >= 1], not {candidates.dtype} "
                        f"{tuple(candidates.shape)}")
    if tuple(weights.shape) != tuple(candidates.shape) or not weights.is_floating_point():
        raise ValueError(f"weights must be floating point {tuple(candidates.shape)}, not {weights.dtype} "
                         f"{tuple(weights.shape)}")
    if candidates.numel() and (int(candidates.min()) < 0 or int(candidates.max()) >= x.shape[0]):
        raise IndexError(f"candidates read features outside [0, {x.shape[0]}): min {int(candidates.min())}, "
                         f"max {int(candidates.max())}")
    if x.stride(1) != 1:
        x = x.contiguous()
    weights_x = weights.to(x.dtype).contiguous()
    out = MixFunction.apply(x, candidates.to(torch.int64).contiguous(), weights_x)
    return out
