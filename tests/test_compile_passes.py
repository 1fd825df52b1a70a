"""Optimization passes keep the function identical (golden model on dataset and random inputs)."""

import numpy as np
import pytest
import torch

from dlgn.compile import passes as P
from dlgn.compile import tables as T
from dlgn.compile.discretize import netlist_from_model, netlist_from_run
from dlgn.compile.golden import GoldenModel
from dlgn.compile.netlist import CONST0, CONST1, Netlist
from dlgn.compile.synthetic import random_netlist
from dlgn.train.data import load_dataset
from dlgn.train.layers import LogicNet

SEEDS = range(6)


def random_inputs(netlist, samples=2000, seed=0):
    rng = np.random.default_rng(seed)
    # dense, sparse and balanced inputs, so that constant-ish paths are exercised too
    p = rng.choice([0.05, 0.5, 0.95], size=(samples, 1))
    return (rng.random((samples, netlist.in_bits)) < p).astype(np.uint8)


def assert_same_function(before, after, bits):
    np.testing.assert_array_equal(GoldenModel(after).scores(bits), GoldenModel(before).scores(bits))


def mixed(seed):
    return random_netlist(in_bits=20, widths=(60, 50, 40, 30), classes=5, arities=(1, 2, 3, 4, 5, 6), seed=seed,
                          degenerate=0.3, reach_back=0.3)


PASSES = {
    "simplify": P.simplify,
    "remove_dead": P.remove_dead,
    "strash": P.strash,
    "pack_luts_4": lambda n: P.pack_luts(n, 4),
    "pack_luts_6": lambda n: P.pack_luts(n, 6),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(PASSES))
def test_each_pass_keeps_the_function_on_random_netlists(name, seed):
    netlist = mixed(seed)
    bits = random_inputs(netlist, seed=seed)
    assert_same_function(netlist, PASSES[name](netlist), bits)
    # also after the earlier passes have run (the order of the pipeline)
    assert_same_function(netlist, PASSES[name](P.strash(P.simplify(netlist))), bits)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("lut_size", [4, 6])
def test_pipeline_keeps_the_function_and_never_grows(seed, lut_size):
    netlist = mixed(seed)
    optimized, records = P.optimize(netlist, lut_size)
    assert_same_function(netlist, optimized, random_inputs(netlist, seed=seed + 100))
    assert [r["name"] for r in records] == ["discretized", *P.PASS_NAMES]
    gates = [r["gates"] for r in records]
    assert gates == sorted(gates, reverse=True)
    assert records[-1]["estimated_luts"] <= records[0]["estimated_luts"]
    assert all(r["depth"] <= records[0]["depth"] for r in records)


def test_simplify_folds_constants_and_unused_inputs():
    for seed in SEEDS:
        simplified = P.simplify(mixed(seed))
        for inputs, table in simplified.gates:
            n = len(inputs)
            assert CONST0 not in inputs and CONST1 not in inputs
            assert len(set(inputs)) == n
            assert T.support(table, n) == list(range(n))
            assert not (n == 1 and table == 0b10)
        assert all(CONST0 not in group for group in simplified.groups)


def test_simplify_examples():
    # ids: 2, 3 inputs; 4 = x0 AND 1 (-> wire x0); 5 = x1 XOR x1 (-> 0); 6 = g4 OR g5 (-> x0);
    # 7 = NOT x1 ignoring a second input; group 0 = [6, 5, 7], group 1 = [1]
    netlist = Netlist(2, [((2, 1), 0x8), ((3, 3), 0x6), ((4, 5), 0xE), ((3, 2), 0b0101)], [[6, 5, 7], [1]])
    simplified = P.simplify(netlist)
    assert simplified.gates == [((3,), 0b01)]
    assert simplified.groups == [[2, 4], [1]]


def test_residual_initialized_layers_vanish():
    net = LogicNet(40, 4, 80, 3, init="residual", seed=3).eval()
    netlist = netlist_from_model(net)
    optimized, records = P.optimize(netlist)
    pass_through = sum(1 for _, table in netlist.gates if table == 0b1010)
    assert pass_through > 0.9 * len(netlist.gates)
    assert records[1]["gates"] == len(netlist.gates) - pass_through
    assert_same_function(netlist, optimized, random_inputs(netlist))


def test_remove_dead_keeps_only_gates_that_reach_a_group():
    for seed in SEEDS:
        netlist = P.remove_dead(mixed(seed))
        reaches = {s for group in netlist.groups for s in group}
        for g in range(len(netlist.gates) - 1, -1, -1):
            if netlist.gate_id(g) in reaches:
                reaches.update(netlist.gates[g][0])
        assert all(netlist.gate_id(g) in reaches for g in range(len(netlist.gates)))


def test_strash_merges_equal_gates_in_any_input_order():
    # 4 = x0 AND NOT x1; 5 = the same function with its inputs swapped; 6 = a true duplicate of 4
    netlist = Netlist(2, [((2, 3), 0x2), ((3, 2), 0x4), ((2, 3), 0x2)], [[4, 5], [6]])
    hashed = P.strash(netlist)
    assert len(hashed.gates) == 1 and hashed.groups == [[4, 4], [4]]
    for seed in SEEDS:
        hashed = P.strash(P.simplify(mixed(seed)))
        keys = [P._canonical(list(inputs), table) for inputs, table in hashed.gates]
        assert len(keys) == len(set(keys))


@pytest.mark.parametrize("lut_size", [2, 3, 4, 6])
def test_pack_luts_respects_the_lut_size(lut_size):
    for seed in SEEDS:
        netlist = P.remove_dead(P.strash(P.simplify(mixed(seed))))
        packed = P.remove_dead(P.pack_luts(netlist, lut_size))
        # merged gates never exceed k inputs; wider gates of the input are kept as they were
        # (or become dead when a merge makes a reader independent of them)
        wide_before = {gate for gate in netlist.gates if len(gate[0]) > lut_size}
        wide_after = {gate for gate in packed.gates if len(gate[0]) > lut_size}
        assert len(wide_after) == sum(1 for gate in packed.gates if len(gate[0]) > lut_size)
        assert {(len(i), t) for i, t in wide_after} <= {(len(i), t) for i, t in wide_before}
        assert packed.estimated_luts(lut_size) <= netlist.estimated_luts(lut_size)
        assert packed.depth <= netlist.depth
        assert_same_function(netlist, packed, random_inputs(netlist, seed=seed))


def test_pack_luts_merges_a_two_input_tree_into_one_lut4():
    # (x0 AND x1) XOR (x2 OR x3): three two-input gates, one LUT4
    netlist = Netlist(4, [((2, 3), 0x8), ((4, 5), 0xE), ((6, 7), 0x6)], [[8]])
    packed = P.remove_dead(P.pack_luts(netlist, 4))
    assert len(packed.gates) == 1 and len(packed.gates[0][0]) == 4
    bits = np.array([[a, b, c, d] for a in (0, 1) for b in (0, 1) for c in (0, 1) for d in (0, 1)])
    assert_same_function(netlist, packed, bits)
    assert len(P.pack_luts(netlist, 3).gates) == 3 - 1


def test_pack_luts_rejects_bad_sizes():
    with pytest.raises(ValueError, match="LUT size must be an integer from 2 to 6, not 7"):
        P.pack_luts(mixed(0), 7)
    with pytest.raises(ValueError, match="unknown pass 'fold'"):
        P.optimize(mixed(0), 4, passes=("fold",))


def test_passes_keep_the_trained_digits_net_exact_on_the_test_set(digits_run):
    netlist, net, encoder, info = netlist_from_run(digits_run)
    data = load_dataset("digits", seed=info["config"]["train"]["seed"])
    bits = np.concatenate([encoder.encode(data.x_test).numpy(), random_inputs(netlist, 2000, seed=7)])
    expected = net.scores(torch.from_numpy(bits)).numpy()
    current = netlist
    for name in P.PASS_NAMES:
        current = PASSES.get(name, PASSES["pack_luts_4"])(current)
        np.testing.assert_array_equal(GoldenModel(current).scores(bits), expected, err_msg=f"after {name}")
    assert len(current.gates) < len(netlist.gates)
