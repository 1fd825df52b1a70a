"""Logic layers against the DESIGN §2 formulas, written out here independently of the code."""

import itertools
import math

import numpy as np
import pytest
import torch

from dlgn.train import functional as F
from dlgn.train.layers import LogicLayer, LogicNet
from dlgn.train.wiring import make_wiring


def rho(omega, estimator):
    if estimator == "sin01":
        return 0.5 + 0.5 * torch.sin(omega)
    return 1.0 / (1.0 + torch.exp(-omega))


def iwp_formula(p, omega, estimator):
    """DESIGN §2.3: g(p) = sum_a rho(Omega_a) prod_j (p_j if bit j of a else 1 - p_j).

    ``p``: [batch, n] inputs of one gate, ``omega``: [2**n]."""
    n = p.shape[1]
    out = torch.zeros(p.shape[0], dtype=p.dtype)
    for a in range(1 << n):
        term = rho(omega[a], estimator) * torch.ones(p.shape[0], dtype=p.dtype)
        for j in range(n):
            term = term * (p[:, j] if (a >> j) & 1 else 1 - p[:, j])
        out = out + term
    return out


# DESIGN §2.4: the 16 functions of a (first input) and b (second), difflogic's order.
OP_FUNCTIONS = [
    lambda a, b: torch.zeros_like(a),
    lambda a, b: a * b,
    lambda a, b: a - a * b,
    lambda a, b: a,
    lambda a, b: b - a * b,
    lambda a, b: b,
    lambda a, b: a + b - 2 * a * b,
    lambda a, b: a + b - a * b,
    lambda a, b: 1 - (a + b - a * b),
    lambda a, b: 1 - (a + b - 2 * a * b),
    lambda a, b: 1 - b,
    lambda a, b: 1 - b + a * b,
    lambda a, b: 1 - a,
    lambda a, b: 1 - a + a * b,
    lambda a, b: 1 - a * b,
    lambda a, b: torch.ones_like(a),
]


def layer_inputs(layer, x):
    """[batch, gates, n] inputs of every gate, from batch-major x."""
    return x[:, layer.wiring]


@pytest.mark.parametrize("estimator", ["sin01", "sigmoid"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_iwp_layer_matches_formula(n, estimator):
    torch.manual_seed(n)
    layer = LogicLayer(11, 7, gate_inputs=n, estimator=estimator, init="gaussian", seed=n).double()
    x = torch.rand(5, 11, dtype=torch.float64)
    got = layer(x.t().contiguous(), "soft").t()
    inputs = layer_inputs(layer, x)
    for g in range(7):
        want = iwp_formula(inputs[:, g], layer.weight[g].detach(), estimator)
        torch.testing.assert_close(got[:, g], want, rtol=1e-12, atol=1e-12)


def test_iwp_two_input_closed_form_and_input_gradient():
    """n = 2 as written in DESIGN §2.3, and its input gradient."""
    layer = LogicLayer(2, 1, gate_inputs=2, init="gaussian", seed=3).double()
    layer.wiring.copy_(torch.tensor([[0, 1]]))
    w = rho(layer.weight[0].detach(), "sin01")
    p = torch.tensor([[0.3, 0.8], [0.9, 0.15]], dtype=torch.float64, requires_grad=True)
    y = layer(p.t(), "soft")[0]
    p0, p1 = p[:, 0].detach(), p[:, 1].detach()
    want = (1 - p0) * (1 - p1) * w[0] + p0 * (1 - p1) * w[1] + (1 - p0) * p1 * w[2] + p0 * p1 * w[3]
    torch.testing.assert_close(y.detach(), want)
    y.sum().backward()
    dp0 = (1 - p1) * (w[1] - w[0]) + p1 * (w[3] - w[2])
    dp1 = (1 - p0) * (w[2] - w[0]) + p0 * (w[3] - w[1])
    torch.testing.assert_close(p.grad, torch.stack([dp0, dp1], 1))


def test_op_layer_matches_softmax_mixture_of_16_functions():
    layer = LogicLayer(9, 6, gate_inputs=2, parametrization="op", init="gaussian", seed=1).double()
    x = torch.rand(4, 9, dtype=torch.float64)
    got = layer(x.t().contiguous(), "soft").t()
    inputs = layer_inputs(layer, x)
    probs = torch.softmax(layer.weight.detach(), -1)
    for g in range(6):
        a, b = inputs[:, g, 0], inputs[:, g, 1]
        want = sum(probs[g, i] * OP_FUNCTIONS[i](a, b) for i in range(16))
        torch.testing.assert_close(got[:, g], want)


def test_op_discrete_is_argmax_function():
    layer = LogicLayer(5, 16, gate_inputs=2, parametrization="op", init="gaussian", seed=2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[torch.arange(16), torch.arange(16)] = 3.0  # gate i is function i
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))  # rows (a, b)
    x = torch.zeros(4, 5)
    for g in range(16):
        layer.wiring[g] = torch.tensor([0, 1])
    x[:, 0], x[:, 1] = bits[:, 0], bits[:, 1]
    got = layer(x.t().contiguous(), "discrete").t()
    for i in range(16):
        torch.testing.assert_close(got[:, i], OP_FUNCTIONS[i](bits[:, 0], bits[:, 1]), rtol=0, atol=0)


@pytest.mark.parametrize("parametrization,n", [("iwp", 1), ("iwp", 2), ("iwp", 3), ("iwp", 6), ("op", 2)])
def test_discrete_forward_equals_table_lookup(parametrization, n):
    layer = LogicLayer(13, 29, gate_inputs=n, parametrization=parametrization, init="gaussian", seed=5)
    x = (torch.rand(17, 13) > 0.5).float()
    got = layer(x.t().contiguous(), "discrete").t()
    tables = layer.truth_tables()
    address = (x[:, layer.wiring].long() * (1 << torch.arange(n))).sum(-1)  # [batch, gates]
    want = tables[torch.arange(29)[None, :], address].float()
    assert torch.equal(got, want)
    # and the relaxed forward with rounded tables is the same function
    soft_rounded = F.gate_forward(x.t().contiguous(), layer.wiring, tables.float()).t()
    assert torch.equal(soft_rounded, want)


@pytest.mark.parametrize("estimator", ["sin01", "sigmoid"])
def test_iwp_rounding_rule(estimator):
    omega = torch.tensor([[-3.0, -0.1, 0.1, 3.0]])
    if estimator == "sin01":  # bit = sin(Omega) > 0, not Omega > 0
        omega = torch.tensor([[-3.0, 3.5, 0.1, 4.0]])
        want = [0, 0, 1, 0]
    else:
        want = [0, 0, 1, 1]
    assert F.hard_iwp_bits(omega, estimator).tolist() == [want]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_gradcheck_gate_function(n):
    torch.manual_seed(10 + n)
    x = torch.rand(9, 5, dtype=torch.float64, requires_grad=True)
    wiring = torch.randint(0, 9, (7, n))
    wiring[0, :] = 0  # a gate reading one input several times
    tables = torch.rand(7, 1 << n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: F.gate_forward(x, wiring, t), (x, tables))


@pytest.mark.parametrize("parametrization,estimator", [("iwp", "sin01"), ("iwp", "sigmoid"), ("op", "sin01")])
def test_gradcheck_layer_parameters(parametrization, estimator):
    layer = LogicLayer(6, 5, gate_inputs=2, parametrization=parametrization, estimator=estimator,
                       init="gaussian", seed=4).double()
    x = torch.rand(6, 3, dtype=torch.float64, requires_grad=True)

    def f(x, weight):
        return torch.func.functional_call(layer, {"weight": weight}, (x, "soft"))

    weight = layer.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x, weight))


def test_gate_function_equals_autograd_multilinear():
    torch.manual_seed(0)
    x = torch.rand(10, 6, dtype=torch.float64, requires_grad=True)
    wiring = torch.randint(0, 10, (8, 3))
    tables = torch.rand(8, 8, dtype=torch.float64, requires_grad=True)
    y1 = F.gate_forward(x, wiring, tables)
    g1 = torch.autograd.grad(y1.square().sum(), (x, tables))
    y2 = F.multilinear(x[wiring.t()], tables)
    g2 = torch.autograd.grad(y2.square().sum(), (x, tables))
    torch.testing.assert_close(y1, y2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("estimator", ["sin01", "sigmoid"])
@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_residual_init_is_pass_through(n, estimator):
    layer = LogicLayer(50, 400, gate_inputs=n, estimator=estimator, init="residual", seed=7)
    pass_through = torch.tensor([a & 1 for a in range(1 << n)], dtype=torch.uint8)
    assert (layer.truth_tables() == pass_through).all()
    mu, sigma = (1.2, 0.25) if estimator == "sin01" else (3.0, 0.5)
    w = layer.weight.detach()
    signs = pass_through.float() * 2 - 1
    centred = w - signs * mu
    tolerance = 4 * sigma / math.sqrt(centred.numel())  # four standard errors
    assert abs(centred.mean().item()) < tolerance and abs(centred.std().item() - sigma) < 2 * tolerance
    x = (torch.rand(8, 50) > 0.5).float()
    assert torch.equal(layer(x.t().contiguous(), "discrete"), x[:, layer.wiring[:, 0]].t())


def test_op_residual_init():
    layer = LogicLayer(10, 20, parametrization="op", init="residual")
    assert (layer.weight[:, 3] == 5.0).all() and layer.weight.detach().abs().sum() == 5.0 * 20
    assert (layer.truth_tables() == torch.tensor([0, 1, 0, 1], dtype=torch.uint8)).all()


def test_group_sum_contiguous_groups_and_tau():
    x = torch.arange(12, dtype=torch.float32)[:, None].repeat(1, 2)  # [gates=12, batch=2]
    sums = F.group_sum(x, 3)
    assert sums.tolist() == [[6.0, 22.0, 38.0]] * 2
    net = LogicNet(8, 3, width=12, depth=1, tau=2.0)
    assert net.tau == 2.0
    assert LogicNet(8, 3, width=12, depth=1).tau == pytest.approx(math.sqrt(4))


def test_prediction_tie_rule_lowest_index_wins():
    scores = torch.tensor([[3, 5, 5, 1], [7, 7, 7, 7], [0, 0, 0, 1], [2, 9, 1, 9]])
    assert F.predict(scores).tolist() == [1, 0, 3, 1]


def test_width_must_divide_into_classes():
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        LogicNet(8, 10, width=25, depth=1)


def test_scores_are_integer_popcounts():
    net = LogicNet(20, 4, width=40, depth=2, gate_inputs=3, init="gaussian", seed=3)
    x = (torch.rand(9, 20) > 0.5).float()
    scores = net.scores(x)
    last = x.t().contiguous()
    for layer in net.layers:
        last = layer(last, "discrete")
    assert torch.equal(scores, last.t().reshape(9, 4, 10).sum(-1).long())


# ----------------------------------------------------------------------------- Gumbel / ST

def test_op_gumbel_forward_uses_one_function_per_gate_shared_by_batch():
    layer = LogicLayer(6, 9, parametrization="op", init="gaussian", gumbel=True, gumbel_tau=0.5, seed=1)
    layer.noise_generator = torch.Generator().manual_seed(0)
    tables = layer.training_tables()
    functions = F.op_truth_tables()
    for row in tables.detach():
        assert any(torch.allclose(row, f) for f in functions)
    x = torch.rand(6, 4)
    layer.noise_generator = torch.Generator().manual_seed(0)
    y = layer(x, "train")
    torch.testing.assert_close(y, F.gate_forward(x, layer.wiring, tables.detach()))


@pytest.mark.parametrize("estimator", ["sin01", "sigmoid"])
def test_iwp_gumbel_hard_forward_straight_through_backward(estimator):
    layer = LogicLayer(6, 9, gate_inputs=3, estimator=estimator, init="gaussian", gumbel=True,
                       gumbel_tau=1.0, seed=1).double()
    layer.noise_generator = torch.Generator().manual_seed(0)
    tables = layer.training_tables()
    assert set(tables.detach().unique().tolist()) <= {0.0, 1.0}
    tables.sum().backward()
    if estimator == "sin01":  # gradient of the relaxed entries: d rho / d Omega
        torch.testing.assert_close(layer.weight.grad, 0.5 * torch.cos(layer.weight.detach()))
    else:
        assert (layer.weight.grad > 0).all()


def test_gumbel_bernoulli_rate_matches_rho():
    omega = torch.full((25000, 4), 0.6)
    gen = torch.Generator().manual_seed(1)
    hard = F.gumbel_iwp_tables(omega, "sin01", 1.0, gen).detach()
    assert hard.mean().item() == pytest.approx(0.5 + 0.5 * math.sin(0.6), abs=0.01)
    hard = F.gumbel_iwp_tables(omega, "sigmoid", 1.0, gen).detach()
    assert hard.mean().item() == pytest.approx(1 / (1 + math.exp(-0.6)), abs=0.01)


def test_gumbel_is_deterministic_with_a_seeded_generator():
    layer = LogicLayer(6, 9, gate_inputs=2, init="gaussian", gumbel=True, seed=1)
    layer.noise_generator = torch.Generator().manual_seed(3)
    a = layer.training_tables()
    layer.noise_generator = torch.Generator().manual_seed(3)
    assert torch.equal(a, layer.training_tables())


# ----------------------------------------------------------------------------- wiring

def test_random_wiring_balances_inputs():
    w = make_wiring(100, 130, 2, "random", seed=0)
    counts = np.bincount(w.ravel(), minlength=100)
    assert counts.min() >= 2 and counts.max() <= 3


@pytest.mark.parametrize("n", [2, 3, 6])
def test_unique_wiring_distinct_and_covering(n):
    w = make_wiring(97, 50, n, "unique", seed=4)
    assert all(len(set(row)) == n for row in w.tolist())
    assert set(w.ravel().tolist()) == set(range(97))


def test_wiring_is_seeded_and_checked():
    assert np.array_equal(make_wiring(40, 30, 3, "random", 5), make_wiring(40, 30, 3, "random", 5))
    assert not np.array_equal(make_wiring(40, 30, 3, "random", 5), make_wiring(40, 30, 3, "random", 6))
    with pytest.raises(ValueError, match="wiring must be one of"):
        make_wiring(4, 4, 2, "grid")
    with pytest.raises(ValueError, match="needs at least 3 inputs"):
        make_wiring(2, 4, 3, "unique")


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="two-input gates only"):
        LogicLayer(4, 4, gate_inputs=3, parametrization="op")
    with pytest.raises(ValueError, match="estimator must be one of"):
        LogicLayer(4, 4, estimator="tanh")
    with pytest.raises(ValueError, match="init must be one of"):
        LogicLayer(4, 4, init="zeros")


def test_windowed_wiring_is_local_distinct_and_seeded():
    w = make_wiring(100, 40, 3, "windowed", seed=1, window=8)
    starts = np.arange(40) * 100 // 40 - 4
    assert (((w - starts[:, None]) % 100) < 8).all()
    assert all(len(set(row)) == 3 for row in w.tolist())
    assert np.array_equal(w, make_wiring(100, 40, 3, "windowed", seed=1, window=8))
    with pytest.raises(ValueError, match="window of at least 4"):
        make_wiring(100, 40, 4, "windowed", window=3)


def test_interleaved_groups():
    x = torch.arange(12, dtype=torch.float32)[:, None]  # [gates=12, batch=1]
    assert F.group_sum(x, 3, "interleaved").tolist() == [[0 + 3 + 6 + 9, 1 + 4 + 7 + 10, 2 + 5 + 8 + 11]]
    assert F.class_groups(12, 3, "interleaved")[1] == [1, 4, 7, 10]
    assert F.class_groups(12, 3)[1] == [4, 5, 6, 7]
    net = LogicNet(20, 4, width=40, depth=2, gate_inputs=2, init="gaussian", groups="interleaved", seed=3)
    bits = (torch.rand(9, 20) > 0.5).float()
    last = bits.t().contiguous()
    for layer in net.layers:
        last = layer(last, "discrete")
    want = torch.stack([last[g].sum(0) for g in net.class_groups()], 1).long()
    assert torch.equal(net.scores(bits), want)
    with pytest.raises(ValueError, match="groups must be one of"):
        LogicNet(20, 4, width=40, depth=1, groups="striped")
