"""The fused C++ CPU gate kernels (dlgn.train.kernels.cpu) against the PyTorch reference
(dlgn.train.functional): outputs and every gradient over odd shapes, shared tables, each
parametrization, Gumbel on and off; bit-for-bit repeatability, also across thread counts."""

import warnings

import pytest
import torch

from dlgn.train import functional as F
from dlgn.train import kernels as K
from dlgn.train.kernels import build_reverse_index, cpu
from dlgn.train.layers import LogicLayer, LogicNet

FLOAT32 = dict(rtol=1e-5, atol=1e-6)
FLOAT32_GRAD = dict(rtol=1e-4, atol=1e-5)  # sums over up to 129 samples / many gate inputs
FLOAT64 = dict(rtol=1e-12, atol=1e-12)

if not cpu.available():  # e.g. no g++: the trainer then falls back to the reference
    pytest.skip(f"CPU kernels unavailable: {cpu.build_error()}", allow_module_level=True)


def _case(in_features, gates, n, batch, seed, dtype=torch.float32, tables=None):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(in_features, batch, generator=gen, dtype=dtype)
    wiring = torch.randint(0, in_features, (gates, n), generator=gen)
    table_rows = gates if tables is None else tables
    t = torch.rand(table_rows, 1 << n, generator=gen, dtype=dtype)
    grad_out = torch.randn(gates, batch, generator=gen, dtype=dtype)
    return x, wiring, t, grad_out


def _run(fn, x, wiring, tables, grad_out, **kwargs):
    x = x.clone().requires_grad_(True)
    tables = tables.clone().requires_grad_(True)
    y = fn(x, wiring, tables, **kwargs)
    gx, gt = torch.autograd.grad(y, (x, tables), grad_out)
    return y, gx, gt


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("gates", [1, 5, 333])
@pytest.mark.parametrize("batch", [1, 7, 129])
def test_matches_reference(n, gates, batch):
    args = _case(23, gates, n, batch, seed=n * 1000 + gates * 10 + batch)
    y, gx, gt = _run(cpu.gate_forward, *args)
    y_ref, gx_ref, gt_ref = _run(F.gate_forward, *args)
    torch.testing.assert_close(y, y_ref, **FLOAT32)
    torch.testing.assert_close(gx, gx_ref, **FLOAT32_GRAD)
    torch.testing.assert_close(gt, gt_ref, **FLOAT32_GRAD)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_matches_reference_float64(n):
    args = _case(17, 41, n, 70, seed=n, dtype=torch.float64)
    for got, want in zip(_run(cpu.gate_forward, *args), _run(F.gate_forward, *args)):
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, **FLOAT64)


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_shared_tables(n):
    """Several gates share a table: the table gradient sums over them (and unused tables get 0)."""
    x, wiring, tables, grad_out = _case(19, 50, n, 67, seed=3 + n, tables=9)
    gen = torch.Generator().manual_seed(n)
    table_index = torch.randint(0, 8, (50,), generator=gen)  # table 8 is never used
    table_index[:5] = 2
    y, gx, gt = _run(cpu.gate_forward, x, wiring, tables, grad_out, table_index=table_index)
    y_ref, gx_ref, gt_ref = _run(F.gate_forward, x, wiring, tables, grad_out, table_index=table_index)
    torch.testing.assert_close(y, y_ref, **FLOAT32)
    torch.testing.assert_close(gx, gx_ref, **FLOAT32_GRAD)
    torch.testing.assert_close(gt, gt_ref, **FLOAT32_GRAD)
    assert gt[8].abs().max() == 0
    groups = build_reverse_index(table_index[:, None], 9)
    _, _, gt_cached = _run(cpu.gate_forward, x, wiring, tables, grad_out, table_index=table_index,
                           table_groups=groups)
    assert torch.equal(gt_cached, gt)


def test_gradcheck_float64_shared_tables():
    torch.manual_seed(0)
    x = torch.rand(7, 5, dtype=torch.float64, requires_grad=True)
    wiring = torch.randint(0, 7, (6, 3))
    wiring[0, :] = 0  # a gate reading one input several times
    tables = torch.rand(4, 8, dtype=torch.float64, requires_grad=True)
    table_index = torch.tensor([0, 1, 1, 3, 0, 1])
    assert torch.autograd.gradcheck(lambda x, t: cpu.gate_forward(x, wiring, t, table_index), (x, tables))


def _layer_pair(parametrization, estimator, n, gumbel, in_features=29, gates=45):
    layers = []
    for kernels in ("cpu", "reference"):
        layer = LogicLayer(in_features, gates, n, parametrization, estimator, init="gaussian", seed=5,
                           gumbel=gumbel, kernels=kernels)
        layer.noise_generator = torch.Generator().manual_seed(11)
        layers.append(layer)
    return layers


@pytest.mark.parametrize("parametrization,estimator,n", [
    ("iwp", "sin01", 2), ("iwp", "sin01", 5), ("iwp", "sigmoid", 3), ("iwp", "sigmoid", 6), ("op", "sin01", 2),
])
@pytest.mark.parametrize("gumbel", [False, True])
def test_layer_gradients_match_reference(parametrization, estimator, n, gumbel):
    fast, ref = _layer_pair(parametrization, estimator, n, gumbel)
    x = torch.rand(29, 37, generator=torch.Generator().manual_seed(1))
    grad_out = torch.randn(45, 37, generator=torch.Generator().manual_seed(2))
    results = []
    for layer in (fast, ref):
        xi = x.clone().requires_grad_(True)
        y = layer(xi, "train")
        gx, gw = torch.autograd.grad(y, (xi, layer.weight), grad_out)
        results.append((y, gx, gw))
    (y, gx, gw), (y_ref, gx_ref, gw_ref) = results
    torch.testing.assert_close(y, y_ref, **FLOAT32)
    torch.testing.assert_close(gx, gx_ref, **FLOAT32_GRAD)
    torch.testing.assert_close(gw, gw_ref, **FLOAT32_GRAD)
    if gumbel:  # hard tables in the forward: binary inputs give binary outputs
        bits = (x > 0.5).float()
        assert set(fast(bits, "train").detach().unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("parametrization,n", [("iwp", 1), ("iwp", 4), ("iwp", 6), ("op", 2)])
def test_discrete_mode_is_exact(parametrization, n):
    fast, ref = _layer_pair(parametrization, "sin01", n, False)
    bits = (torch.rand(29, 100, generator=torch.Generator().manual_seed(n)) < 0.5).float()
    assert torch.equal(fast(bits, "discrete"), ref(bits, "discrete"))
    assert torch.equal(fast(bits, "discrete"), F.gate_forward(bits, fast.wiring, fast.truth_tables().float()))


def test_repeats_bit_for_bit_and_across_thread_counts():
    x, wiring, tables, grad_out = _case(300, 333, 4, 200, seed=9, tables=300)
    table_index = torch.randint(0, 300, (333,), generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (threads, threads, 1, 3):
            torch.set_num_threads(count)
            runs.append(_run(cpu.gate_forward, x, wiring, tables, grad_out, table_index=table_index))
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            assert torch.equal(got, first)


def _train_steps(kernels, optimizer=torch.optim.Adam, steps=4):
    torch.manual_seed(0)
    net = LogicNet(64, 4, 48, 3, gate_inputs=4, gumbel=True, kernels=kernels, seed=2)
    net.set_noise_generator(torch.Generator().manual_seed(3))
    optimizer = optimizer(net.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(4)
    for _ in range(steps):
        x = (torch.rand(130, 64, generator=gen) < 0.5).float()
        y = torch.randint(0, 4, (130,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in net.parameters()]


def test_training_is_reproducible_and_follows_the_reference():
    first, second = _train_steps("cpu"), _train_steps("cpu")
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    # Adam divides by the gradient's running size: rounding-level differences of near-zero
    # gradients become visible steps, so follow the reference with plain SGD.
    for a, r in zip(_train_steps("cpu", torch.optim.SGD), _train_steps("reference", torch.optim.SGD)):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_auto_picks_cpu_kernels_on_cpu():
    layer = LogicLayer(10, 6, 2)
    assert layer.kernels == "auto"
    assert layer._kernels_for(torch.rand(10, 3)) == "cpu"
    assert layer._kernels_for(torch.rand(10, 3, dtype=torch.float64)) == "cpu"
    assert layer._kernels_for(torch.rand(10, 3).half()) == "reference"
    layer.kernels = "reference"
    assert layer._kernels_for(torch.rand(10, 3)) == "reference"


def test_auto_falls_back_to_the_reference_when_the_build_fails(monkeypatch):
    monkeypatch.setattr(cpu, "_library", None)
    monkeypatch.setattr(cpu, "_error", cpu.KernelBuildError("no C++ compiler 'g++' on PATH"))
    monkeypatch.setattr(K, "_warned_cpu_build", False)
    layer = LogicLayer(10, 6, 2)
    x = torch.rand(10, 3)
    with pytest.warns(RuntimeWarning, match="falling back"):
        y = layer(x, "soft")
    torch.testing.assert_close(y, F.gate_forward(x, layer.wiring, layer.relaxed_tables()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(x, "soft")  # warns once only
    layer.kernels = "cpu"
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler.*'auto' or 'reference'"):
        layer(x, "soft")


def test_cpu_kernels_reject_what_they_cannot_run():
    layer = LogicLayer(10, 6, 2, kernels="cpu")
    with pytest.raises(RuntimeError, match="float32 or float64"):
        layer(torch.rand(10, 3).half(), "soft")
    assert layer(torch.rand(10, 0), "soft").shape == (6, 0)  # an empty batch takes the reference


def test_strided_inputs_and_gradients():
    x, wiring, tables, grad_out = _case(40, 30, 3, 50, seed=5)
    wide = torch.rand(40, 80)
    wide[:, 10:60] = x
    view = wide[:, 10:60]  # rows 80 apart
    y, gx, gt = _run(cpu.gate_forward, view, wiring, tables, grad_out.t().contiguous().t())
    y_ref, gx_ref, gt_ref = _run(F.gate_forward, x, wiring, tables, grad_out)
    torch.testing.assert_close(y, y_ref, **FLOAT32)
    torch.testing.assert_close(gx, gx_ref, **FLOAT32_GRAD)
    torch.testing.assert_close(gt, gt_ref, **FLOAT32_GRAD)


def test_gradient_to_one_argument_only():
    x, wiring, tables, grad_out = _case(20, 30, 4, 9, seed=6)
    xg = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(cpu.gate_forward(xg, wiring, tables), xg, grad_out)
    tg = tables.clone().requires_grad_(True)
    (gt,) = torch.autograd.grad(cpu.gate_forward(x, wiring, tg), tg, grad_out)
    _, gx_ref, gt_ref = _run(F.gate_forward, x, wiring, tables, grad_out)
    torch.testing.assert_close(gx, gx_ref, **FLOAT32_GRAD)
    torch.testing.assert_close(gt, gt_ref, **FLOAT32_GRAD)


def test_rejects_bad_arguments():
    x, wiring, tables, _ = _case(20, 30, 4, 9, seed=7)
    with pytest.raises(IndexError, match="outside"):
        cpu.gate_forward(x, wiring + 20, tables)
    with pytest.raises(ValueError, match="tables must be"):
        cpu.gate_forward(x, wiring, tables[:, :8])
    with pytest.raises(ValueError, match="one row per gate"):
        cpu.gate_forward(x, wiring, tables[:10])
    with pytest.raises(IndexError, match="table_index points outside"):
        cpu.gate_forward(x, wiring, tables[:10], torch.full((30,), 10))
    with pytest.raises(TypeError, match="x must be"):
        cpu.gate_forward(x.half(), wiring, tables)
    with pytest.raises(ValueError, match="1 to 6 inputs"):
        cpu.gate_forward(x, torch.zeros(30, 7, dtype=torch.long), torch.rand(30, 128))


def _mix_case(features, slots, count, batch, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(features, batch, generator=gen, dtype=dtype)
    candidates = torch.randint(0, features, (slots, count), generator=gen)
    weights = torch.softmax(torch.randn(slots, count, generator=gen, dtype=dtype), -1)
    grad_out = torch.randn(slots, batch, generator=gen, dtype=dtype)
    return x, candidates, weights, grad_out


def _mix_reference(x, candidates, weights):
    slots, count = candidates.shape
    picked = x.index_select(0, candidates.reshape(-1)).reshape(slots, count, x.shape[1])
    return torch.bmm(weights.reshape(slots, 1, count), picked).reshape(slots, x.shape[1])


def _mix_run(fn, x, candidates, weights, grad_out):
    x = x.clone().requires_grad_(True)
    weights = weights.clone().requires_grad_(True)
    y = fn(x, candidates, weights)
    gx, gw = torch.autograd.grad(y, (x, weights), grad_out)
    return y, gx, gw


@pytest.mark.parametrize("count", [1, 3, 8])
@pytest.mark.parametrize("batch", [1, 31, 64, 65, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mix_matches_reference(count, batch, dtype):
    """The fused learned-connection mix: output, input and weight gradients against the gather +
    bmm reference (repeated candidates included: the input gradient then adds up)."""
    args = _mix_case(19, 57, count, batch, seed=count * 100 + batch, dtype=dtype)
    tol = FLOAT64 if dtype == torch.float64 else FLOAT32_GRAD
    for got, want in zip(_mix_run(cpu.mix_forward, *args), _mix_run(_mix_reference, *args)):
        assert got.dtype == dtype
        assert torch.allclose(got, want, **tol)


def test_mix_gradcheck_float64():
    x, candidates, weights, _ = _mix_case(7, 5, 3, 9, seed=2, dtype=torch.float64)
    torch.autograd.gradcheck(lambda xx, ww: cpu.mix_forward(xx, candidates, ww),
                             (x.requires_grad_(), weights.requires_grad_()))


def test_mix_repeats_bit_for_bit_across_thread_counts():
    args = _mix_case(300, 700, 4, 200, seed=5)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (threads, threads, 1, 3):
            torch.set_num_threads(count)
            runs.append(_mix_run(cpu.mix_forward, *args))
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            assert torch.equal(got, first)


def test_mix_gradient_to_one_argument_only_and_empty_batch():
    x, candidates, weights, grad_out = _mix_case(11, 6, 2, 10, seed=3)
    w = weights.clone().requires_grad_(True)
    (gw,) = torch.autograd.grad(cpu.mix_forward(x, candidates, w), (w,), grad_out)
    assert torch.allclose(gw, _mix_run(_mix_reference, x, candidates, weights, grad_out)[2], **FLOAT32_GRAD)
    xx = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(cpu.mix_forward(xx, candidates, weights), (xx,), grad_out)
    assert torch.allclose(gx, _mix_run(_mix_reference, x, candidates, weights, grad_out)[1], **FLOAT32_GRAD)
    assert cpu.mix_forward(x[:, :0], candidates, weights).shape == (6, 0)


def test_mix_rejects_bad_arguments():
    x, candidates, weights, _ = _mix_case(11, 6, 2, 10, seed=3)
    with pytest.raises(IndexError, match=r"candidates read features outside \[0, 11\)"):
        cpu.mix_forward(x, candidates + 11, weights)
    with pytest.raises(ValueError, match="weights must be floating point"):
        cpu.mix_forward(x, candidates, weights[:, :1])
    with pytest.raises(TypeError, match="candidates must be an integer tensor"):
        cpu.mix_forward(x, candidates.float(), weights)
    with pytest.raises(TypeError, match="x must be a CPU"):
        cpu.mix_forward(x.half(), candidates, weights)
