"""Golden model (bit-sliced netlist evaluator) against the trained model's evaluation mode."""

import numpy as np
import pytest
import torch

from dlgn.compile.discretize import netlist_from_model, netlist_from_run
from dlgn.compile.golden import GoldenModel, encode_features, pack_bits, predict
from dlgn.compile.netlist import InputEncoding, Netlist, NetlistError
from dlgn.train import functional as F
from dlgn.train.data import load_dataset
from dlgn.train.encoding import Thermometer
from dlgn.train.layers import LogicNet


def random_bits(samples, width, seed=0, p=0.5):
    return (np.random.default_rng(seed).random((samples, width)) < p).astype(np.uint8)


def test_golden_equals_trained_model_on_every_digits_test_sample(digits_run):
    netlist, net, encoder, info = netlist_from_run(digits_run)
    data = load_dataset("digits", seed=info["config"]["train"]["seed"])
    bits = encoder.encode(data.x_test)
    expected = net.scores(bits).numpy()
    golden = GoldenModel(netlist)
    got = golden.scores(bits.numpy())
    assert got.dtype == np.int64 and got.shape == (len(data.x_test), netlist.classes)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(golden.predict(bits.numpy()), F.predict(torch.from_numpy(expected)).numpy())
    # raw features through the netlist's own thermometer encoding give the same scores
    np.testing.assert_array_equal(golden.scores(features=data.x_test), expected)
    # and the discrete accuracy is the trainer's
    accuracy = (golden.predict(features=data.x_test) == data.y_test).mean()
    assert accuracy == pytest.approx((F.predict(torch.from_numpy(expected)).numpy() == data.y_test).mean())


def test_golden_equals_trained_model_on_random_inputs(digits_run):
    netlist, net, _encoder, _info = netlist_from_run(digits_run)
    for seed, p in ((1, 0.5), (2, 0.1), (3, 0.9)):
        bits = random_bits(3000, netlist.in_bits, seed, p)
        np.testing.assert_array_equal(GoldenModel(netlist).scores(bits), net.scores(torch.from_numpy(bits)).numpy())


@pytest.mark.parametrize("gate_inputs", [1, 2, 3, 4, 5, 6])
def test_golden_equals_pytorch_for_every_arity(gate_inputs):
    torch.manual_seed(gate_inputs)
    net = LogicNet(30, 3, 48, 3, gate_inputs=gate_inputs, init="gaussian", seed=gate_inputs).eval()
    netlist = netlist_from_model(net)
    assert set(netlist.arity_histogram()) == {gate_inputs}
    bits = random_bits(777, 30, seed=gate_inputs)
    np.testing.assert_array_equal(GoldenModel(netlist).scores(bits), net.scores(torch.from_numpy(bits)).numpy())


def test_golden_equals_pytorch_for_the_original_parametrization():
    net = LogicNet(40, 4, 64, 3, parametrization="op", init="gaussian", seed=5).eval()
    netlist = netlist_from_model(net)
    bits = random_bits(500, 40, seed=5)
    np.testing.assert_array_equal(GoldenModel(netlist).scores(bits), net.scores(torch.from_numpy(bits)).numpy())


@pytest.mark.parametrize("samples", [1, 63, 64, 65, 130, 2049])
def test_sample_counts_that_are_not_whole_words(samples):
    net = LogicNet(20, 2, 20, 2, init="gaussian", seed=2).eval()
    netlist = netlist_from_model(net)
    bits = random_bits(samples, 20, seed=samples)
    np.testing.assert_array_equal(GoldenModel(netlist, chunk_words=2).scores(bits),
                                  net.scores(torch.from_numpy(bits)).numpy())


def test_chunk_sizes_agree():
    net = LogicNet(30, 5, 50, 3, init="gaussian", seed=9).eval()
    netlist = netlist_from_model(net)
    bits = random_bits(5000, 30, seed=9)
    results = [GoldenModel(netlist, chunk_words=c).scores(bits) for c in (1, 3, 16, 100)]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_bit_packing_layout():
    bits = np.zeros((130, 3), dtype=np.uint8)
    bits[0, 0] = bits[64, 1] = bits[129, 2] = bits[63, 0] = 1
    words = pack_bits(bits)
    assert words.shape == (3, 3) and words.dtype == np.uint64
    assert int(words[0, 0]) == (1 | 1 << 63) and int(words[1, 1]) == 1 and int(words[2, 2]) == 1 << 1


def test_ties_go_to_the_lowest_class():
    # three classes: class 1 and 2 always tie with the top score, class 0 scores lower
    netlist = Netlist(2, [((2, 3), 0x8), ((2, 3), 0xE)], [[4], [5, 4], [4, 5]])
    scores = GoldenModel(netlist).scores(np.array([[1, 1], [0, 1], [0, 0]]))
    np.testing.assert_array_equal(scores, [[1, 2, 2], [0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(predict(scores), [1, 1, 0])


def test_constants_inputs_and_repeated_members_in_groups():
    # ids: 0 const0, 1 const1, 2..3 inputs, 4 = NOT x0
    netlist = Netlist(2, [((2,), 0b01)], [[1, 1, 0, 2], [4, 4, 3]])
    scores = GoldenModel(netlist).scores(np.array([[0, 0], [1, 0], [0, 1], [1, 1]]))
    np.testing.assert_array_equal(scores, [[2, 2], [3, 0], [2, 3], [3, 1]])


def test_features_need_an_encoding_and_fitting_values():
    netlist = Netlist(2, [((2, 3), 0x6)], [[4]])
    with pytest.raises(NetlistError, match="no input encoding"):
        GoldenModel(netlist).scores(features=np.zeros((3, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        GoldenModel(netlist).scores(np.zeros((3, 5), dtype=np.uint8))
    encoding = InputEncoding.from_thresholds([[10, 200]], 8)
    x = np.array([[0], [10], [11], [200], [201], [255]])
    np.testing.assert_array_equal(encode_features(encoding, x), Thermometer([[10, 200]]).encode(x).numpy())
    with pytest.raises(ValueError, match="unsigned 8-bit"):
        encode_features(encoding, np.array([[256]]))


def test_golden_equals_pytorch_for_windowed_wiring_and_interleaved_groups():
    net = LogicNet(40, 4, 48, 3, gate_inputs=3, init="gaussian", wiring="windowed", window=6,
                   groups="interleaved", seed=2).eval()
    netlist = netlist_from_model(net)
    assert netlist.groups[1][:2] != netlist.groups[0][:2]
    bits = random_bits(300, 40, seed=5)
    np.testing.assert_array_equal(GoldenModel(netlist).scores(bits), net.scores(torch.from_numpy(bits)).numpy())
