"""Benchmark the Triton gate kernels against the PyTorch reference on one CUDA GPU.

    python bench/kernels.py            # the full grid (see --help to cut it into pieces)
    python bench/kernels.py --quick    # a few cases, a few repeats: a smoke run

For every case (parametrization, gate inputs n, gates, batch, activation dtype) it times one
layer, ``tables = make_tables(weight)`` followed by the gate op, in the forward, the backward
(to the layer input and the parameters) and the two together, with CUDA events after warm-up,
the L2 cache flushed before each repeat, median of the repeats; and the peak memory of one
training step above what was allocated before it. Paths:

- ``triton``: :func:`dlgn.train.kernels.gate_forward` with a cached reverse index (deterministic);
  the atomic variant's backward is timed too (``bwd_atomic_ms``);
- ``ref``: :func:`dlgn.train.functional.gate_forward`, the eager PyTorch reference;
- ``compile``: ``torch.compile`` of the plain autograd form (index_select + multilinear), the
  version Inductor can fuse; skipped where it fails to compile;
- ``difflogic`` (OP, float32 only): the ``difflogic_cuda`` extension, if importable or built
  from ``--difflogic-src`` (an unpacked difflogic source tree; nothing is downloaded).

``gbps`` is the achieved bandwidth of the gate kernel alone (tables precomputed), counted as the
minimal traffic of the op: ``(n + 1) * gates * batch`` activations plus the tables and wiring,
against the device's peak from a table of datasheet figures (``peak_bandwidth_gbps``).

Each run writes (or merges its rows into) ``bench/results/kernels-<device>-<date>.json``, after
every case, so a run cut short keeps what it measured. Every case also checks the Triton path
against the reference (``max_err_*``) and that two deterministic backward passes are
bit-identical.
"""

import argparse
import datetime
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from dlgn.train import functional as F
from dlgn.train.wiring import make_wiring

RESULTS = Path(__file__).resolve().parent / "results"

# Peak DRAM bandwidth, GB/s (10^9 bytes/s), vendor datasheets. First match on the device name
# wins, so the more specific names come first.
PEAK_BANDWIDTH_GBPS = [
    ("GH200", 4000.0),
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5, HBM3 ("NVIDIA H100 80GB HBM3")
    ("H800", 3350.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # 40 GB, SXM4 or PCIe
    ("A800", 2039.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
    ("RTX A6000", 768.0),
    ("V100", 900.0),
    ("T4", 320.0),
]

FULL_GRID = dict(gates=[16384, 65536, 262144], batch=[128, 1024], gate_inputs=[2, 4, 6],
                 parametrizations=["iwp", "op"], dtypes=["float32", "bfloat16"])
QUICK_GRID = dict(gates=[16384], batch=[128, 1024], gate_inputs=[2, 6],
                  parametrizations=["iwp", "op"], dtypes=["float32", "bfloat16"])
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def peak_bandwidth(name):
    for key, gbps in PEAK_BANDWIDTH_GBPS:
        if key.lower() in name.lower():
            return gbps, f"datasheet table in bench/kernels.py, {name!r} matched {key!r}"
    return None, f"device {name!r} is not in the table in bench/kernels.py; add its datasheet figure"


def device_slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-")


# --- timing ---------------------------------------------------------------------------------

class Timer:
    def __init__(self, warmup, repeats):
        self.warmup = warmup
        self.repeats = repeats
        self._flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")

    def _median(self, prepare, timed):
        for _ in range(self.warmup):
            timed(prepare())
        times = []
        for _ in range(self.repeats):
            state = prepare()
            self._flush.zero_()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            timed(state)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def forward(self, forward):
        return self._median(lambda: None, lambda _: forward())

    def backward(self, forward, backward):
        return self._median(forward, backward)

    def step(self, forward, backward):
        return self._median(lambda: None, lambda _: backward(forward()))


def peak_step_mb(forward, backward):
    """Peak memory of one forward + backward above what was allocated before it, MiB."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    backward(forward())
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def guarded(fn, errors, label):
    """Run ``fn``; on out-of-memory or a failure record why and return None."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        errors[label] = "out of memory"
    except Exception as exc:  # a baseline that does not run must not end the benchmark
        errors[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    torch.cuda.empty_cache()
    return None


# --- the layer under test, per path ----------------------------------------------------------

def make_tables(parametrization, weight):
    if parametrization == "op":
        return F.op_tables(torch.softmax(weight, dim=-1))
    return F.iwp_tables(weight, "sin01")


def reference_autograd(x, wiring, tables):
    """Plain autograd form of the op (gather + multilinear): what torch.compile gets."""
    inputs = x.index_select(0, wiring.t().reshape(-1)).view(wiring.shape[1], wiring.shape[0], x.shape[1])
    return F.multilinear(inputs, tables)


class DifflogicFunction(torch.autograd.Function):
    """difflogic's CUDA extension as an autograd op on feature-major activations (OP only)."""

    @staticmethod
    def forward(ctx, x, a, b, w, start, readers, ext):
        ctx.save_for_backward(x, a, b, w, start, readers)
        ctx.ext = ext
        return ext.forward(x, a, b, w)

    @staticmethod
    def backward(ctx, grad_y):
        x, a, b, w, start, readers = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_x = ctx.ext.backward_x(x, a, b, w, grad_y, start, readers)
        grad_w = ctx.ext.backward_w(x, a, b, grad_y)
        return grad_x, None, None, grad_w, None, None, None


def load_difflogic(source):
    try:
        import difflogic_cuda

        return difflogic_cuda, "imported difflogic_cuda"
    except ImportError:
        pass
    if not source:
        return None, "difflogic_cuda is not installed (pass --difflogic-src DIR to build it)"
    from torch.utils.cpp_extension import load

    cuda_dir = Path(source) / "difflogic" / "cuda"
    sources = [str(cuda_dir / "difflogic.cpp"), str(cuda_dir / "difflogic_kernel.cu")]
    try:
        ext = load("difflogic_cuda", sources, extra_cuda_cflags=["-lineinfo"], verbose=False)
    except Exception as exc:
        return None, f"building difflogic_cuda from {source} failed: {str(exc).splitlines()[0][:300]}"
    return ext, f"built difflogic_cuda from {source}"


class Case:
    def __init__(self, parametrization, n, gates, batch, dtype, seed=0, device="cuda"):
        from dlgn.train.kernels import build_reverse_index

        self.parametrization, self.n, self.gates, self.batch, self.dtype = parametrization, n, gates, batch, dtype
        self.in_features = gates  # a hidden layer: the previous layer is as wide
        gen = torch.Generator(device=device).manual_seed(seed)
        self.wiring = torch.from_numpy(make_wiring(self.in_features, gates, n, "random", seed)).to(device)
        self.reverse_index = build_reverse_index(self.wiring, self.in_features)
        entries = 16 if parametrization == "op" else 1 << n
        self.weight = torch.randn(gates, entries, device=device, generator=gen).requires_grad_()
        self.x = torch.rand(self.in_features, batch, device=device, generator=gen).to(dtype).requires_grad_()
        self.grad_out = torch.randn(gates, batch, device=device, generator=gen).to(dtype)
        self.tables = make_tables(parametrization, self.weight).detach().requires_grad_()

    # layer = tables from parameters + op; the backward goes to x and the parameters
    def layer_forward(self, op):
        return lambda: op(self.x, self.wiring, make_tables(self.parametrization, self.weight))

    def backward(self, inputs):
        return lambda y: torch.autograd.grad(y, inputs, self.grad_out)

    def activation_bytes(self):
        return torch.finfo(self.dtype).bits // 8

    def fwd_bytes(self):
        s = self.activation_bytes()
        return (self.n + 1) * self.gates * self.batch * s + self.tables.numel() * 4 + self.wiring.numel() * 8

    def bwd_bytes(self):
        """Traffic of the deterministic backward as implemented: gathers + grad_out + per-input
        gradient rows written and read back + x's gradient + the table gradient."""
        s = self.activation_bytes()
        return ((3 * self.n + 1) * self.gates * self.batch * s + self.in_features * self.batch * s
                + 2 * self.tables.numel() * 4 + self.wiring.numel() * 16)


def run_case(case, timer, with_reference, compiled, difflogic):
    from dlgn.train.kernels import gate_forward

    row = dict(parametrization=case.parametrization, gate_inputs=case.n, gates=case.gates, batch=case.batch,
               dtype=str(case.dtype).removeprefix("torch."))
    errors = {}
    params = (case.x, case.weight)

    def triton_op(x, wiring, tables, deterministic=True):
        return gate_forward(x, wiring, tables, case.reverse_index if deterministic else None, deterministic)

    fwd = case.layer_forward(triton_op)
    bwd = case.backward(params)
    row["fwd_ms"] = guarded(lambda: timer.forward(fwd), errors, "fwd")
    row["bwd_ms"] = guarded(lambda: timer.backward(fwd, bwd), errors, "bwd")
    row["fwd_bwd_ms"] = guarded(lambda: timer.step(fwd, bwd), errors, "fwd_bwd")
    row["peak_mem_mb"] = guarded(lambda: peak_step_mb(fwd, bwd), errors, "peak_mem")
    atomic_fwd = case.layer_forward(lambda x, w, t: triton_op(x, w, t, deterministic=False))
    row["bwd_atomic_ms"] = guarded(lambda: timer.backward(atomic_fwd, bwd), errors, "bwd_atomic")

    # The gate kernels alone (tables precomputed): the bandwidth figures.
    kernel_fwd = lambda: triton_op(case.x, case.wiring, case.tables)  # noqa: E731
    kernel_bwd = case.backward((case.x, case.tables))
    row["kernel_fwd_ms"] = guarded(lambda: timer.forward(kernel_fwd), errors, "kernel_fwd")
    row["kernel_bwd_ms"] = guarded(lambda: timer.backward(kernel_fwd, kernel_bwd), errors, "kernel_bwd")
    row["gbps"] = case.fwd_bytes() / row["kernel_fwd_ms"] / 1e6 if row["kernel_fwd_ms"] else None
    row["bwd_gbps"] = case.bwd_bytes() / row["kernel_bwd_ms"] / 1e6 if row["kernel_bwd_ms"] else None

    # Deterministic backward: bit-identical twice.
    def repeat_equal():
        first = bwd(fwd())
        second = bwd(fwd())
        return all(torch.equal(a, b) for a, b in zip(first, second))

    row["bwd_bitwise_repeatable"] = guarded(repeat_equal, errors, "repeatable")

    if with_reference:
        ref_op = lambda x, w, t: F.gate_forward(x, w, t.to(x.dtype))  # noqa: E731
        ref_fwd = case.layer_forward(ref_op)
        row["ref_fwd_ms"] = guarded(lambda: timer.forward(ref_fwd), errors, "ref_fwd")
        row["ref_bwd_ms"] = guarded(lambda: timer.backward(ref_fwd, bwd), errors, "ref_bwd")
        row["ref_fwd_bwd_ms"] = guarded(lambda: timer.step(ref_fwd, bwd), errors, "ref_fwd_bwd")
        row["ref_peak_mem_mb"] = guarded(lambda: peak_step_mb(ref_fwd, bwd), errors, "ref_peak_mem")

        def check():
            got = (fwd(),) + tuple(bwd(fwd()))
            want = (ref_fwd(),) + tuple(bwd(ref_fwd()))
            return {name: float((g.detach().float() - w.detach().float()).abs().max()
                                / w.detach().float().abs().max().clamp_min(1e-30))
                    for name, g, w in zip(("out", "grad_x", "grad_weight"), got, want)}

        rel = guarded(check, errors, "check")
        if rel:
            for name, value in rel.items():
                row[f"max_rel_err_{name}"] = value
    else:
        row.update(ref_fwd_ms=None, ref_bwd_ms=None, ref_fwd_bwd_ms=None, ref_peak_mem_mb=None)

    if compiled is not None:
        comp_op = lambda x, w, t: compiled(x, w, t.to(x.dtype))  # noqa: E731
        comp_fwd = case.layer_forward(comp_op)
        if guarded(lambda: bwd(comp_fwd()), errors, "compile") is not None:
            row["compile_fwd_ms"] = guarded(lambda: timer.forward(comp_fwd), errors, "compile_fwd")
            row["compile_bwd_ms"] = guarded(lambda: timer.backward(comp_fwd, bwd), errors, "compile_bwd")
            row["compile_fwd_bwd_ms"] = guarded(lambda: timer.step(comp_fwd, bwd), errors, "compile_fwd_bwd")
            row["compile_peak_mem_mb"] = guarded(lambda: peak_step_mb(comp_fwd, bwd), errors, "compile_peak_mem")

    if difflogic is not None and case.parametrization == "op" and case.dtype == torch.float32:
        edges = case.reverse_index.edges
        readers = (edges % case.gates).contiguous()
        a, b = case.wiring[:, 0].contiguous(), case.wiring[:, 1].contiguous()

        def dl_fwd():
            w = torch.softmax(case.weight, dim=-1)
            return DifflogicFunction.apply(case.x, a, b, w, case.reverse_index.offsets, readers, difflogic)

        row["difflogic_fwd_ms"] = guarded(lambda: timer.forward(dl_fwd), errors, "difflogic_fwd")
        row["difflogic_bwd_ms"] = guarded(lambda: timer.backward(dl_fwd, bwd), errors, "difflogic_bwd")
        row["difflogic_fwd_bwd_ms"] = guarded(lambda: timer.step(dl_fwd, bwd), errors, "difflogic_fwd_bwd")
        row["difflogic_peak_mem_mb"] = guarded(lambda: peak_step_mb(dl_fwd, bwd), errors, "difflogic_peak_mem")
    if errors:
        row["errors"] = errors
    return row


def sweep_tiles(grid, timer):
    """Time the gate kernels alone for each tile budget (gates x samples per program)."""
    from dlgn.train.kernels import gate

    results = []
    saved = dict(gate.FORWARD_TILE), dict(gate.BACKWARD_TILE)
    try:
        for n in sorted({2} | set(grid["gate_inputs"])):
            for dtype in grid["dtypes"]:
                for batch in grid["batch"]:
                    case = Case("iwp", n, max(grid["gates"]), batch, DTYPES[dtype])
                    fwd = lambda: gate.gate_forward(case.x, case.wiring, case.tables, case.reverse_index)  # noqa: E731
                    bwd = case.backward((case.x, case.tables))
                    for budget in (128, 256, 512, 1024, 2048):
                        gate.FORWARD_TILE[n] = gate.BACKWARD_TILE[n] = budget
                        errors = {}
                        entry = dict(gate_inputs=n, dtype=dtype, gates=case.gates, batch=batch, tile=budget,
                                     fwd_ms=guarded(lambda: timer.forward(fwd), errors, "fwd"),
                                     bwd_ms=guarded(lambda: timer.backward(fwd, bwd), errors, "bwd"))
                        if errors:
                            entry["errors"] = errors
                        results.append(entry)
                        print(f"tiles n={n} {dtype} B={batch} tile {budget}: "
                              f"fwd {entry['fwd_ms']} bwd {entry['bwd_ms']} ms", flush=True)
                    gate.FORWARD_TILE.update(saved[0])
                    gate.BACKWARD_TILE.update(saved[1])
                    del case
    finally:
        gate.FORWARD_TILE.update(saved[0])
        gate.BACKWARD_TILE.update(saved[1])
    return results


def row_key(row):
    return (row["parametrization"], row["gate_inputs"], row["gates"], row["batch"], row["dtype"])


def write(path, header, rows):
    existing, old = {}, {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
            existing = {row_key(r): r for r in old["rows"]}
        except (ValueError, KeyError):
            existing, old = {}, {}
    existing.update({row_key(r): r for r in rows})
    if "tile_sweep" in old and "tile_sweep" not in header:
        header = dict(header, tile_sweep=old["tile_sweep"])
    data = dict(header, rows=sorted(existing.values(), key=row_key))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few cases and repeats (smoke run)")
    parser.add_argument("--gates", type=int, nargs="+", help="gate counts (default: 16384 65536 262144)")
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: 128 1024)")
    parser.add_argument("--gate-inputs", type=int, nargs="+", help="n for IWP (default: 2 4 6); OP is n=2")
    parser.add_argument("--parametrizations", nargs="+", choices=["iwp", "op"])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement (default 20, quick 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    parser.add_argument("--no-reference", action="store_true", help="skip the eager PyTorch reference")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--difflogic-src", help="unpacked difflogic source tree to build difflogic_cuda from")
    parser.add_argument("--tiles", action="store_true",
                        help="also sweep the kernels' tile sizes (gates x samples per program) at the largest "
                             "gate count of the grid; stored under tile_sweep")
    parser.add_argument("--out", type=Path, help="result file (default bench/results/kernels-<device>-<date>.json)")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench/kernels.py needs a CUDA GPU and none is visible to PyTorch here "
              f"(torch {torch.__version__}); run it on a GPU machine.", file=sys.stderr)
        return 2
    try:
        import triton
    except ImportError:
        print("bench/kernels.py needs Triton (pip install triton).", file=sys.stderr)
        return 2

    grid = dict(QUICK_GRID if args.quick else FULL_GRID)
    for key in ("gates", "batch", "gate_inputs", "parametrizations", "dtypes"):
        if getattr(args, key):
            grid[key] = getattr(args, key)
    repeats = args.repeats or (5 if args.quick else 20)

    name = torch.cuda.get_device_name()
    peak, peak_source = peak_bandwidth(name)
    date = datetime.date.today().isoformat()
    out = args.out or RESULTS / f"kernels-{device_slug(name)}-{date}.json"
    difflogic, difflogic_note = load_difflogic(args.difflogic_src)
    header = dict(
        device=name, date=date, torch=torch.__version__, triton=triton.__version__,
        cuda=torch.version.cuda, peak_bandwidth_gbps=peak, peak_bandwidth_source=peak_source,
        difflogic=difflogic_note, repeats=repeats, warmup=args.warmup,
        notes=("times in ms, median of repeats, CUDA events, L2 flushed before each repeat; "
               "fwd/bwd/fwd_bwd: one layer (tables from parameters + gate op), backward to x and the "
               "parameters; kernel_*: the gate op alone on precomputed tables; gbps: minimal forward "
               "traffic / kernel_fwd_ms; bwd_gbps: traffic of the implemented deterministic backward / "
               "kernel_bwd_ms; peak_mem_mb: peak allocated during one fwd+bwd step above the memory "
               "allocated before it; ref = dlgn.train.functional (eager), compile = torch.compile of "
               "the autograd gather + multilinear form; the in_features of every layer = gates"),
    )
    print(f"{name}: peak {peak} GB/s ({peak_source}); {difflogic_note}; writing {out}")

    torch.backends.cuda.matmul.allow_tf32 = False
    # One compiled graph per (parametrization, n, dtype) and shape: keep Dynamo from falling back
    # to eager once its default recompile limit (8) is reached.
    for limit in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, 256)
    compiled_fns = {}
    rows = []
    cases = []
    for parametrization in grid["parametrizations"]:
        for n in ([2] if parametrization == "op" else grid["gate_inputs"]):
            for dtype in grid["dtypes"]:
                for gates in grid["gates"]:
                    for batch in grid["batch"]:
                        cases.append((parametrization, n, dtype, gates, batch))
    timer = Timer(args.warmup, repeats)
    if args.tiles:
        header["tile_sweep"] = sweep_tiles(grid, timer)
        write(out, header, [])
    started = time.time()
    for i, (parametrization, n, dtype, gates, batch) in enumerate(cases):
        compiled = None
        if not args.no_compile:
            key = (parametrization, n, dtype)
            if key not in compiled_fns:
                compiled_fns[key] = torch.compile(reference_autograd)
            compiled = compiled_fns[key]
        case = Case(parametrization, n, gates, batch, DTYPES[dtype])
        row = run_case(case, timer, not args.no_reference, compiled, difflogic)
        del case
        torch.cuda.empty_cache()
        rows.append(row)
        write(out, header, rows)
        speedup = (row.get("ref_fwd_bwd_ms") or math.nan) / (row.get("fwd_bwd_ms") or math.nan)
        print(f"[{i + 1}/{len(cases)} {time.time() - started:.0f}s] {parametrization} n={n} {dtype} "
              f"G={gates} B={batch}: fwd {row.get('fwd_ms')} bwd {row.get('bwd_ms')} ms, "
              f"{(row.get('gbps') or 0):.0f} GB/s, x{speedup:.2f} vs ref"
              + (f"  errors: {row['errors']}" if row.get("errors") else ""), flush=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
