"""Triton gate kernels against the PyTorch reference (dlgn.train.functional), on CPU through
Triton's interpreter.

``TRITON_INTERPRET=1`` only takes effect for kernels decorated after it is set, and that includes
Triton's own library (``tl.zeros`` and friends are ``@triton.jit`` functions decorated when
``triton`` is imported; parts of Triton imported later also read the flag): one process either
interprets or compiles, for its whole life. So the mode is chosen when this module is collected:

- Triton not imported yet and no GPU (CI): set the flag for this process, import Triton and the
  kernel module now; the kernel tests run in this process (nothing here could compile anyway).
- Triton already imported without the flag (something used compiled kernels), or a GPU present
  (keep this process compiling real kernels): the kernel tests skip here and
  ``test_kernels_in_interpreter_subprocess`` runs this file in a child with the flag set.
"""

import importlib
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from dlgn.train import functional as F
from dlgn.train.kernels import ReverseIndex, ReverseIndexCache, build_reverse_index
from dlgn.train.layers import LogicLayer

FLOAT32 = dict(rtol=1e-5, atol=1e-6)


def _interpreter_mode():
    if importlib.util.find_spec("triton") is None:
        return "no-triton"
    if "triton" in sys.modules:
        import triton.language as tl

        return "in-process" if type(tl.zeros).__name__ == "InterpretedFunction" else "subprocess"
    if os.environ.get("TRITON_INTERPRET") == "1" or not torch.cuda.is_available():
        return "in-process"
    return "subprocess"


def _load_interpreted_kernels():
    os.environ["TRITON_INTERPRET"] = "1"
    module = importlib.import_module("dlgn.train.kernels.gate")
    assert module.INTERPRETED, "dlgn.train.kernels.gate was imported before TRITON_INTERPRET=1 was set"
    return module


MODE = _interpreter_mode()
_KERNELS = _load_interpreted_kernels() if MODE == "in-process" else None


@pytest.fixture
def kernels():
    if MODE == "no-triton":
        pytest.skip("triton is not installed")
    if MODE == "subprocess":
        pytest.skip("Triton was imported with compiled kernels; test_kernels_in_interpreter_subprocess runs these")
    return _KERNELS


@pytest.mark.skipif(MODE != "subprocess", reason="the kernel tests run in this process")
def test_kernels_in_interpreter_subprocess():
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                             "-k", "not test_kernels_in_interpreter_subprocess and not test_cuda_"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " skipped" not in result.stdout.splitlines()[-1], result.stdout[-2000:]


def _case(in_features, gates, n, batch, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(in_features, batch, generator=gen).to(dtype)
    wiring = torch.randint(0, in_features, (gates, n), generator=gen)
    tables = torch.rand(gates, 1 << n, generator=gen)
    grad_out = torch.randn(gates, batch, generator=gen).to(dtype)
    return x, wiring, tables, grad_out


def _run(fn, x, wiring, tables, grad_out, **kwargs):
    x = x.detach().clone().requires_grad_()
    tables = tables.detach().clone().requires_grad_()
    y = fn(x, wiring, tables, **kwargs)
    grad_x, grad_tables = torch.autograd.grad(y, (x, tables), grad_out)
    return y.detach(), grad_x, grad_tables


# Odd shapes: gates and batch not powers of two, a layer of width 1 (every gate reads feature 0,
# so every gate reads one input n times), single gates and single samples.
SHAPES = [(1, 1, 1), (1, 7, 5), (13, 33, 19), (5, 1, 19)]  # (in_features, gates, batch)


@pytest.mark.parametrize("n", range(1, 7))
@pytest.mark.parametrize("in_features,gates,batch", SHAPES)
@pytest.mark.parametrize("deterministic", [True, False], ids=["csr", "atomic"])
def test_matches_reference(kernels, n, in_features, gates, batch, deterministic):
    x, wiring, tables, grad_out = _case(in_features, gates, n, batch, seed=n * 100 + gates)
    want = _run(F.gate_forward, x, wiring, tables, grad_out)
    reverse_index = build_reverse_index(wiring, in_features) if deterministic else None
    got = _run(kernels.gate_forward, x, wiring, tables, grad_out, reverse_index=reverse_index,
               deterministic=deterministic)
    for name, g, w in zip(("output", "grad_x", "grad_tables"), got, want):
        torch.testing.assert_close(g, w, **FLOAT32, msg=lambda m: f"{name}: {m}")


def test_builds_reverse_index_when_missing(kernels):
    x, wiring, tables, grad_out = _case(9, 21, 3, 6, seed=1)
    want = _run(F.gate_forward, x, wiring, tables, grad_out)
    got = _run(kernels.gate_forward, x, wiring, tables, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **FLOAT32)


def test_deterministic_backward_repeats_bit_for_bit(kernels):
    x, wiring, tables, grad_out = _case(17, 45, 4, 23, seed=2)
    reverse_index = build_reverse_index(wiring, 17)
    first = _run(kernels.gate_forward, x, wiring, tables, grad_out, reverse_index=reverse_index)
    second = _run(kernels.gate_forward, x, wiring, tables, grad_out, reverse_index=reverse_index)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("parametrization,estimator,n", [
    ("iwp", "sin01", 1), ("iwp", "sin01", 2), ("iwp", "sigmoid", 3), ("iwp", "sin01", 6), ("op", "sin01", 2),
])
@pytest.mark.parametrize("gumbel", [False, True], ids=["relaxed", "gumbel"])
def test_layer_parameter_gradients(kernels, parametrization, estimator, n, gumbel):
    """The whole chain parameters -> tables -> gates: equal outputs and parameter gradients
    with the same noise draw (fixed seed) on both paths."""
    layer = LogicLayer(11, 27, n, parametrization, estimator, init="gaussian", seed=3, gumbel=gumbel)
    x = torch.rand(11, 13, generator=torch.Generator().manual_seed(4))
    grad_out = torch.randn(27, 13, generator=torch.Generator().manual_seed(5))
    results = []
    for fn in (F.gate_forward, kernels.gate_forward):
        layer.noise_generator = torch.Generator().manual_seed(6)
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        y = fn(xi, layer.wiring, layer.training_tables())
        y.backward(grad_out)
        results.append((y.detach(), xi.grad, layer.weight.grad.clone()))
    for name, got, want in zip(("output", "grad_x", "grad_weight"), results[1], results[0]):
        torch.testing.assert_close(got, want, **FLOAT32, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("n", range(1, 7))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_eval_mode_is_exact(kernels, n, dtype):
    """Binary inputs and hard 0/1 tables: every lerp selects, so the bits are identical."""
    layer = LogicLayer(10, 37, n, "iwp", "sin01", init="gaussian", seed=n).eval()
    bits = torch.randint(0, 2, (10, 29), generator=torch.Generator().manual_seed(n)).to(dtype)
    tables = layer.truth_tables().to(dtype)
    with torch.no_grad():
        want = F.gate_forward(bits.float(), layer.wiring, tables.float())
        got = kernels.gate_forward(bits, layer.wiring, tables)
    assert got.dtype == dtype
    assert torch.equal(got.float(), want)
    assert set(got.unique().tolist()) <= {0.0, 1.0}


def test_eval_mode_op_is_exact(kernels):
    layer = LogicLayer(10, 37, 2, "op", init="gaussian", seed=7).eval()
    bits = torch.randint(0, 2, (10, 29), generator=torch.Generator().manual_seed(7)).float()
    with torch.no_grad():
        want = layer(bits)
        got = kernels.gate_forward(bits, layer.wiring, layer.truth_tables().float())
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("deterministic", [True, False], ids=["csr", "atomic"])
def test_half_activations(kernels, dtype, tol, deterministic):
    """Half-precision activations, fp32 tables and accumulation: compare against the fp32
    reference on the same rounded inputs."""
    x, wiring, tables, grad_out = _case(15, 41, 4, 21, seed=8, dtype=dtype)
    want = _run(F.gate_forward, x.float(), wiring, tables, grad_out.float())
    got = _run(kernels.gate_forward, x, wiring, tables, grad_out, deterministic=deterministic)
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == torch.float32
    for g, w in zip(got, want):
        torch.testing.assert_close(g.float(), w, rtol=tol, atol=tol)


def test_gradient_to_one_argument_only(kernels):
    x, wiring, tables, grad_out = _case(8, 19, 2, 7, seed=9)
    want = _run(F.gate_forward, x, wiring, tables, grad_out)
    xi = x.clone().requires_grad_()
    (grad_x,) = torch.autograd.grad(kernels.gate_forward(xi, wiring, tables), xi, grad_out)
    torch.testing.assert_close(grad_x, want[1], **FLOAT32)
    ti = tables.clone().requires_grad_()
    (grad_tables,) = torch.autograd.grad(kernels.gate_forward(x, wiring, ti), ti, grad_out)
    torch.testing.assert_close(grad_tables, want[2], **FLOAT32)


def test_non_contiguous_gradient(kernels):
    """The group-sum head hands back a transposed gradient."""
    x, wiring, tables, _ = _case(12, 20, 3, 9, seed=10)
    results = []
    for fn in (F.gate_forward, kernels.gate_forward):
        xi = x.clone().requires_grad_()
        scores = F.group_sum(fn(xi, wiring, tables), 4)
        (scores * torch.arange(1.0, 5.0)).sum().backward()
        results.append(xi.grad)
    torch.testing.assert_close(results[1], results[0], **FLOAT32)


def test_rejects_bad_arguments(kernels):
    x, wiring, tables, _ = _case(8, 5, 2, 3, seed=11)
    with pytest.raises(ValueError, match=r"tables must be floating point \[5, 4\]"):
        kernels.gate_forward(x, wiring, tables[:, :3])
    with pytest.raises(ValueError, match="gates must have 1 to 6 inputs"):
        kernels.gate_forward(x, torch.zeros(5, 7, dtype=torch.int64), torch.rand(5, 128))
    with pytest.raises(TypeError, match="x must be"):
        kernels.gate_forward(x.double(), wiring, tables)
    with pytest.raises(ValueError, match="reverse_index was not built for this wiring"):
        kernels.gate_forward(x, wiring, tables, reverse_index=build_reverse_index(wiring[:4], 8))


@pytest.mark.parametrize("n", [1, 2, 4, 6])
@pytest.mark.parametrize("deterministic", [True, False], ids=["csr", "atomic"])
def test_shared_tables_match_reference(kernels, n, deterministic):
    """Gates sharing tables (a gather with repeated table indices, as in convolutional layers):
    the table gradient sums over the gates of each table; an unused table gets zero."""
    x, wiring, _, grad_out = _case(13, 37, n, 19, seed=20 + n)
    gen = torch.Generator().manual_seed(n)
    tables = torch.rand(6, 1 << n, generator=gen)
    table_index = torch.randint(0, 5, (37,), generator=gen)  # table 5 is never used
    want = _run(F.gate_forward, x, wiring, tables, grad_out, table_index=table_index)
    groups = build_reverse_index(table_index[:, None], 6)
    for kwargs in ({}, {"table_groups": groups}):
        got = _run(kernels.gate_forward, x, wiring, tables, grad_out, deterministic=deterministic,
                   table_index=table_index, **kwargs)
        for name, g, w in zip(("output", "grad_x", "grad_tables"), got, want):
            torch.testing.assert_close(g, w, **FLOAT32, msg=lambda m: f"{name}: {m}")
        assert torch.equal(got[2][5], torch.zeros(1 << n))
    again = _run(kernels.gate_forward, x, wiring, tables, grad_out, table_index=table_index, table_groups=groups)
    first = _run(kernels.gate_forward, x, wiring, tables, grad_out, table_index=table_index, table_groups=groups)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_conv_layer_through_the_kernels(kernels):
    """A convolutional layer (trees shared over positions, padding, stride 2, OR pooling) on the
    Triton kernels: output and parameter and input gradients equal to the reference path's."""
    from dlgn.train.conv import ConvLayer

    results = []
    for name in ("reference", "triton"):
        layer = ConvLayer((3, 9, 7), 4, 3, 2, 2, 2, 1, 2, 0, init="gaussian", seed=3, kernels=name)
        x = torch.rand(layer.in_features, 11, generator=torch.Generator().manual_seed(2), requires_grad=True)
        y = layer(x, "soft")
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(3)))
        results.append((y.detach(), x.grad, layer.weight.grad))
        with torch.no_grad():
            bits = (x > 0.5).float()
            results[-1] += (layer(bits, "discrete"),)
    for got, want in zip(results[1][:3], results[0][:3]):
        torch.testing.assert_close(got, want, **FLOAT32)
    assert torch.equal(results[1][3], results[0][3])


def test_rejects_bad_table_index(kernels):
    x, wiring, tables, _ = _case(8, 5, 2, 3, seed=11)
    with pytest.raises(IndexError, match="table_index points outside the 5 tables"):
        kernels.gate_forward(x, wiring, tables, table_index=torch.tensor([0, 1, 2, 3, 5]))
    with pytest.raises(ValueError, match=r"table_index must be an integer tensor \[5\]"):
        kernels.gate_forward(x, wiring, tables, table_index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="table_groups was not built for this table_index"):
        kernels.gate_forward(x, wiring, tables, table_index=torch.zeros(5, dtype=torch.int64),
                             table_groups=build_reverse_index(torch.zeros(5, 1, dtype=torch.int64), 4))


def test_reverse_index():
    wiring = torch.tensor([[2, 0], [2, 2], [1, 0]])  # gate 1 reads feature 2 twice; feature 3 unread
    index = build_reverse_index(wiring, 4)
    assert isinstance(index, ReverseIndex)
    # edge id e = j * gates + g
    assert index.offsets.tolist() == [0, 2, 3, 6, 6]
    assert index.edges.tolist() == [3, 5, 2, 0, 1, 4]
    flat = wiring.t().reshape(-1)
    for feature in range(4):
        edges = index.edges[index.offsets[feature]:index.offsets[feature + 1]]
        assert (flat[edges] == feature).all()
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        build_reverse_index(wiring, 2)


def test_reverse_index_cache_follows_the_wiring():
    layer = LogicLayer(6, 9, 2, seed=1)
    cache = ReverseIndexCache()
    first = cache.get(layer.wiring, 6)
    assert cache.get(layer.wiring, 6) is first
    other = LogicLayer(6, 9, 2, seed=2)
    layer.load_state_dict(other.state_dict())  # same shape, new values, written in place
    rebuilt = cache.get(layer.wiring, 6)
    assert rebuilt is not first
    assert torch.equal(rebuilt.edges, build_reverse_index(other.wiring, 6).edges)


def test_importing_the_trainer_does_not_import_triton():
    code = ("import sys, torch, dlgn.train, dlgn.train.layers, dlgn.train.loop, dlgn.train.kernels; "
            "dlgn.train.kernels.build_reverse_index(torch.zeros(3, 2, dtype=torch.int64), 1); "
            "assert not dlgn.train.kernels.can_run(torch.zeros(1)); "
            "assert 'triton' not in sys.modules, 'triton was imported'")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.skipif(MODE != "subprocess" or not torch.cuda.is_available(), reason="needs a GPU and compiled kernels")
@pytest.mark.parametrize("n", range(1, 7))
@pytest.mark.parametrize("deterministic", [True, False], ids=["csr", "atomic"])
def test_cuda_matches_reference(n, deterministic):
    """The compiled kernels on the GPU (runs only where one is present)."""
    from dlgn.train.kernels import gate_forward

    x, wiring, tables, grad_out = (t.cuda() for t in _case(301, 1001, n, 259, seed=n))
    reverse_index = build_reverse_index(wiring, 301)
    want = _run(F.gate_forward, x, wiring, tables, grad_out)
    got = _run(gate_forward, x, wiring, tables, grad_out, reverse_index=reverse_index, deterministic=deterministic)
    for name, g, w in zip(("output", "grad_x", "grad_tables"), got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
    if deterministic:
        again = _run(gate_forward, x, wiring, tables, grad_out, reverse_index=reverse_index)
        assert all(torch.equal(a, b) for a, b in zip(got, again))
