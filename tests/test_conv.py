"""Convolutional logic trees (DESIGN §2.9): the layer against a direct loop over channels, positions
and tree nodes written out here, its gradients, its discrete form against the flattened gate DAG,
the config checks, and a conv digits run trained, compiled and simulated."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dlgn.cli import main
from dlgn.compile.discretize import netlist_from_model
from dlgn.compile.golden import GoldenModel
from dlgn.train.config import ConfigError, apply_overrides, load_config, validate
from dlgn.train.conv import OR_TABLE, ConvLayer
from dlgn.train.layers import LogicNet

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    """Small shapes: one thread runs them fastest (the CPU kernels give the same bits for any count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rho(omega):
    return 0.5 + 0.5 * torch.sin(omega)


def gate(p, table):
    """DESIGN §2.3: sum_a table[a] prod_j (p_j if bit j of a else 1 - p_j); ``p`` a list of n scalars."""
    out = 0.0
    for a in range(len(table)):
        term = table[a]
        for j, pj in enumerate(p):
            term = term * (pj if (a >> j) & 1 else 1 - pj)
        out = out + term
    return out


def loop_conv(layer, x, tables):
    """The layer's output ``[batch, C_out, H', W']`` by the formula, one sample, channel, position
    and tree node at a time. ``x``: ``[batch, C_in, H, W]``; ``tables``: ``[tables, 2**n]``."""
    c_in, height, width = layer.in_shape
    n, d, k, s, pad = layer.tree_inputs, layer.tree_depth, layer.kernel, layer.stride, layer.padding
    out_h = (height + 2 * pad - k) // s + 1
    out_w = (width + 2 * pad - k) // s + 1
    out = []
    for b in range(x.shape[0]):
        channels = []
        for ch in range(layer.channels):
            rows = []
            for y in range(out_h):
                row = []
                for xx in range(out_w):
                    values = []  # the leaves, then each level's node outputs
                    for c, dy, dx in layer.leaves[ch].tolist():
                        iy, ix = y * s + dy - pad, xx * s + dx - pad
                        inside = 0 <= iy < height and 0 <= ix < width
                        values.append(x[b, c, iy, ix] if inside else torch.zeros((), dtype=x.dtype))
                    offset = 0
                    for level in range(d):
                        nodes = n ** (d - 1 - level)
                        values = [gate(values[j * n:(j + 1) * n], tables[offset + ch * nodes + j])
                                  for j in range(nodes)]
                        offset += layer.channels * nodes
                    row.append(values[0])
                rows.append(torch.stack(row))
            plane = torch.stack(rows)
            if layer.pool == 2:
                plane = torch.stack([torch.stack([plane[2 * i:2 * i + 2, 2 * j:2 * j + 2].max()
                                                  for j in range(out_w // 2)]) for i in range(out_h // 2)])
            channels.append(plane)
        out.append(torch.stack(channels))
    return torch.stack(out)


# (in_shape, channels, kernel, tree_depth, tree_inputs, stride, padding, pool, leaf_channels): odd sizes,
# stride 2, padding, n-ary trees, a tree with more leaves than its field, no pooling
CASES = [
    ((3, 7, 5), 4, 3, 2, 2, 1, 1, 2, 0),
    ((2, 9, 7), 3, 3, 2, 2, 2, 1, 2, 0),
    ((3, 6, 7), 2, 2, 1, 4, 1, 0, 1, 2),
    ((1, 5, 5), 2, 3, 2, 3, 2, 2, 1, 0),
    ((2, 6, 5), 2, 1, 3, 2, 1, 0, 2, 1),
]


def _layer(case, kernels="reference", thermometer=None, seed=3):
    in_shape, channels, kernel, depth, n, stride, padding, pool, leaf_channels = case
    return ConvLayer(in_shape, channels, kernel, depth, n, stride, padding, pool, leaf_channels,
                     thermometer=thermometer, init="gaussian", seed=seed, kernels=kernels)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kernels", ["reference", "cpu"])
def test_layer_matches_the_loop_formula_and_its_gradients(case, kernels):
    layer = _layer(case, kernels).double()
    c_in, height, width = layer.in_shape
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, c_in, height, width, generator=gen, dtype=torch.float64, requires_grad=True)
    y = layer(x.reshape(2, -1).t().contiguous(), "soft")
    assert y.shape == (layer.out_features, 2)
    weight = layer.weight.detach().clone().requires_grad_()
    want = loop_conv(layer, x, rho(weight))
    got = y.t().reshape(want.shape)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn(want.shape, generator=gen, dtype=torch.float64)
    want_x, want_w = torch.autograd.grad(want, (x, weight), grad_out)
    got_x, got_w = torch.autograd.grad(got, (x, layer.weight), grad_out)
    # the tables' gradient sums over every position that shares them
    torch.testing.assert_close(got_w, want_w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_x, want_x, rtol=1e-10, atol=1e-12)


def test_thermometer_input_layout():
    """The first layer reads bit ((colour * H + y) * W + x) * T + t as channel colour * T + t."""
    colours, height, width, t = 2, 5, 6, 3
    layer = ConvLayer((colours * t, height, width), 3, 3, 2, 2, 1, 1, 2, 0, thermometer=t, init="gaussian",
                      seed=5, kernels="reference").double()
    bits = torch.rand(2, colours * height * width * t, generator=torch.Generator().manual_seed(2),
                      dtype=torch.float64)
    planes = bits.reshape(2, colours, height, width, t).permute(0, 1, 4, 2, 3).reshape(2, colours * t, height, width)
    with torch.no_grad():
        got = layer(bits.t().contiguous(), "soft").t().reshape(2, *layer.out_shape)
        want = loop_conv(layer, planes, rho(layer.weight))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernels", ["reference", "cpu"])
def test_gradcheck_float64(kernels):
    layer = _layer(((2, 5, 6), 2, 3, 2, 2, 1, 1, 2, 0), kernels).double()
    x = torch.rand(layer.in_features, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64,
                   requires_grad=True)
    weight = layer.weight.detach().clone().requires_grad_()

    def fn(x, weight):
        return torch.func.functional_call(layer, {"weight": weight}, (x, "soft"))

    assert torch.autograd.gradcheck(fn, (x, weight))


def test_cpu_kernels_follow_the_reference_in_float32():
    results = []
    for kernels in ("reference", "cpu"):
        layer = _layer(((3, 11, 9), 5, 3, 2, 2, 1, 1, 2, 0), kernels, seed=7)
        x = torch.rand(layer.in_features, 37, generator=torch.Generator().manual_seed(4), requires_grad=True)
        y = layer(x, "train")
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(5)))
        results.append((y.detach(), x.grad, layer.weight.grad))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_discrete_mode_is_or_pooled_bits():
    layer = _layer(CASES[1]).eval()
    bits = torch.randint(0, 2, (5, layer.in_features), generator=torch.Generator().manual_seed(6)).float()
    out = layer(bits.t().contiguous())
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    want = loop_conv(layer, bits.reshape(5, *layer.in_shape), layer.truth_tables().float())
    assert torch.equal(out.t().reshape(want.shape), want)


def _position_major(y, layer):
    """``[C * H * W, batch]`` channel-major rows reordered to ``(y * W + x) * C + c``."""
    channels, height, width = layer.out_shape
    return y.reshape(channels, height, width, -1).permute(1, 2, 0, 3).reshape(y.shape)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kernels", ["reference", "cpu"])
def test_position_order_is_the_channel_order_permuted_with_the_same_gradients(case, kernels):
    """``order = "position"`` numbers the output (root level or OR pool) position-major; the layer
    computes the same function, so its outputs are the channel-major ones reordered and its table
    and input gradients equal theirs."""
    in_shape, channels, kernel, depth, n, stride, padding, pool, leaf_channels = case
    args = (in_shape, channels, kernel, depth, n, stride, padding, pool, leaf_channels)
    chan = ConvLayer(*args, init="gaussian", seed=3, kernels=kernels).double()
    pos = ConvLayer(*args, order="position", init="gaussian", seed=3, kernels=kernels).double()
    assert torch.equal(pos.weight, chan.weight)  # the same seed draws the same tables and leaves
    x = torch.rand(chan.in_features, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64,
                   requires_grad=True)
    want = _position_major(chan(x, "soft"), chan)
    got = pos(x, "soft")
    assert torch.equal(got, want)
    grad_out = torch.randn(got.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    want_x, want_w = torch.autograd.grad(want, (x, chan.weight), grad_out)
    got_x, got_w = torch.autograd.grad(got, (x, pos.weight), grad_out)
    torch.testing.assert_close(got_w, want_w, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(got_x, want_x, rtol=1e-12, atol=1e-13)
    bits = torch.randint(0, 2, (chan.in_features, 40), generator=torch.Generator().manual_seed(10)).double()
    assert torch.equal(pos.eval()(bits), _position_major(chan.eval()(bits), chan))


def test_a_layer_reads_a_position_major_input():
    """The second layer finds feature (c, y, x) of a position-major first layer at row
    (y * W + x) * C + c: the stack computes what the channel-major stack computes."""
    first = dict(channels=4, kernel=3, tree_depth=2, tree_inputs=2, stride=1, padding=1, pool=2, leaf_channels=0)
    second = dict(channels=3, kernel=2, tree_depth=2, tree_inputs=2, stride=1, padding=0, pool=1, leaf_channels=0)
    outs = []
    for order in ("channel", "position"):
        net = LogicNet(2 * 9 * 7 * 3, 3, 0, 0, gate_inputs=4, init="gaussian", seed=1, widths=[30],
                       conv=[dict(first, order=order), second], image=(2, 9, 7))
        assert net.conv[1].in_order == order
        bits = torch.randint(0, 2, (net.in_bits, 64), generator=torch.Generator().manual_seed(2)).float()
        with torch.no_grad():
            outs.append(net.conv[1](net.conv[0](bits, "discrete"), "discrete"))
    assert torch.equal(outs[0], outs[1])


def _conv_net(seed=0, order="channel"):
    """Two convolutional layers (odd image, padding, stride 2, 3-input trees, pooling) and a dense layer."""
    conv = [dict(channels=4, kernel=3, tree_depth=2, tree_inputs=2, stride=1, padding=1, pool=2, leaf_channels=0,
                 order=order),
            dict(channels=5, kernel=2, tree_depth=1, tree_inputs=3, stride=2, padding=1, pool=1, leaf_channels=2,
                 order=order)]
    net = LogicNet(2 * 9 * 7 * 3, 3, 0, 0, gate_inputs=[4, 2], init="gaussian", seed=seed, widths=[60, 30],
                   conv=conv, image=(2, 9, 7))
    return net.eval()


@pytest.mark.parametrize("order", ["channel", "position"])
def test_discrete_network_equals_its_flattened_netlist_on_every_sample(order):
    net = _conv_net(order=order)
    netlist = netlist_from_model(net)
    kinds = net.gates_per_kind()
    assert netlist.source["gates_per_kind"] == kinds
    assert len(netlist.gates) == net.gates == sum(kinds.values())
    # conv 0: 4 channels x 3 tree gates x 9 x 7 positions, OR-pooled to 4 x 4 x 3;
    # conv 1: 5 channels x one 3-input gate x 3 x 2 positions (kernel 2, stride 2, padding 1)
    assert kinds == {"conv_tree": 4 * 3 * 63 + 5 * 6, "pool": 4 * 12, "dense": 90}
    pool = netlist.gates[4 * 3 * 63:4 * 3 * 63 + 48]
    assert all(len(inputs) == 4 and table == OR_TABLE == 0xFFFE for inputs, table in pool)
    assert any(0 in inputs for inputs, _ in netlist.gates[:4 * 2 * 63])  # zero padding reads the constant 0
    rng = np.random.default_rng(0)
    bits = (rng.random((3000, net.in_bits)) < 0.5).astype(np.uint8)
    want = net.scores(torch.from_numpy(bits)).numpy()
    got = GoldenModel(netlist).scores(bits)
    assert np.array_equal(got, want)


def test_state_dict_and_rebuild():
    net = _conv_net(seed=4)
    keys = set(net.state_dict())
    assert {"conv.0.weight", "conv.0.leaf_wiring", "conv.1.weight", "conv.1.leaf_wiring", "layers.0.weight"} <= keys
    assert not any("tree_wiring" in k or "table_index" in k or "pool_wiring" in k for k in keys)
    again = _conv_net(seed=4)
    again.load_state_dict(net.state_dict())
    bits = torch.randint(0, 2, (50, net.in_bits), generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.scores(bits), net.scores(bits))


def _validate(*overrides, name="digits"):
    return validate(apply_overrides(load_config(), [f"data.name={name}", "model.width=100", *overrides]))


def test_config_accepts_a_list_of_tables_and_fills_defaults():
    config = _validate("model.conv=[{channels = 8}, {channels = 4, kernel = 2, pool = 1}]")
    first, second = config["model"]["conv"]
    assert first == {"channels": 8, "kernel": 3, "tree_depth": 2, "tree_inputs": 2, "stride": 1, "padding": 0,
                     "pool": 2, "leaf_channels": 0, "order": "channel"}
    assert second["kernel"] == 2 and second["pool"] == 1
    assert _validate("model.conv=[{channels = 8, order = \"position\"}]")["model"]["conv"][0]["order"] == "position"
    from dlgn.train.config import dump_toml
    import tomllib

    assert tomllib.loads(dump_toml(config))["model"]["conv"] == config["model"]["conv"]


@pytest.mark.parametrize("value,message", [
    ("[{channels = 8, kernal = 3}]", r"unknown field model.conv\[0\].kernal; did you mean 'kernel'\?"),
    ("[{kernel = 3}]", r"model.conv\[0\] needs channels"),
    ("[{channels = 8}, {channels = 4, kernel = 0}]", r"model.conv\[1\].kernel must be at least 1, not 0"),
    ("[{channels = 8, pool = 3}]", r"model.conv\[0\].pool must be 2 \(2 x 2 OR pooling, stride 2\) or 1"),
    ("[{channels = 8, tree_inputs = 7}]", r"model.conv\[0\].tree_inputs must be 1..6"),
    ("[{channels = 8, stride = 1.5}]", r"model.conv\[0\].stride must be an integer, not 1.5"),
    ("[{channels = 8, padding = 3}]", r"model.conv\[0\].padding must be smaller than its kernel \(3\)"),
    ("[{channels = 8}, {channels = 8, kernel = 5}]",
     r"model.conv\[1\]: a 5 x 5 kernel with padding 0 does not fit the 3 x 3 input \(the output of model.conv\[0\]\)"),
    ("16", r"model.conv must be a list of tables"),
    ("[{channels = 8, order = \"row\"}]", r"model.conv\[0\].order must be \"channel\" or \"position\""),
    ("[{channels = 8, order = 1}]", r"model.conv\[0\].order must be \"channel\" or \"position\""),
])
def test_bad_conv_entries_are_refused_with_one_line(value, message):
    with pytest.raises(ConfigError, match=message):
        _validate(f"model.conv={value}")


def test_conv_needs_an_image_dataset():
    with pytest.raises(ConfigError, match="model.conv needs an image dataset; breast-cancer has no image shape"):
        _validate("model.conv=[{channels = 8}]", "model.width=100", name="breast-cancer")


def test_bad_conv_entry_through_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dlgn", "train", str(ROOT / "configs" / "conv_digits.toml"),
                             "--set", "model.conv=[{channels = 8}, {channels = 4, kernel = 9}]",
                             "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.conv[1]: a 9 x 9 kernel"), result.stderr
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def conv_digits_run(tmp_path_factory):
    """configs/conv_digits.toml trained through the CLI (one thread: the run's bits do not depend on it)."""
    out = tmp_path_factory.mktemp("conv_digits") / "run"
    assert main(["train", str(ROOT / "configs" / "conv_digits.toml"), "--out", str(out),
                 "--set", "train.threads=1"]) == 0
    return out


def test_conv_digits_beats_the_dense_digits_model_with_fewer_gates(conv_digits_run):
    summary = json.loads((conv_digits_run / "summary.json").read_text())
    # configs/digits.toml: 2 x 2000 two-input gates, 95.26% discrete
    assert summary["gates"] < 4000 and summary["test_acc_discrete"] >= 0.955
    assert summary["gates_per_kind"] == {"conv_tree": 16 * 3 * 36, "pool": 16 * 9, "dense": 2000}


def test_conv_digits_compiled_and_simulated_without_mismatch(conv_digits_run, tmp_path):
    build = tmp_path / "build"
    assert main(["compile", str(conv_digits_run), "-o", str(build), "--no-prove"]) == 0
    report = json.loads((build / "compile_report.json").read_text())
    assert report["gates_per_kind"] == {"conv_tree": 1728, "pool": 144, "dense": 2000}
    assert report["checks"]["trained_model"]["equal"] and report["checks"]["trained_model"]["test_samples"] == 359
    assert main(["sim", str(build), "--simulator", "icarus", "--random", "200"]) == 0
    sim = json.loads((build / "sim_report.json").read_text())
    summary = json.loads((conv_digits_run / "summary.json").read_text())
    assert sim["mismatches"] == 0 and sim["samples"] == 359
    assert sim["sim_accuracy"] == summary["test_acc_discrete"]


def test_resumed_conv_run_equals_an_uninterrupted_one(tmp_path):
    config = str(ROOT / "configs" / "conv_digits.toml")
    short = ["--set", "train.threads=1", "--set", "model.widths=[200, 100]"]
    assert main(["train", config, "--out", str(tmp_path / "whole"), *short, "--set", "train.epochs=2"]) == 0
    assert main(["train", config, "--out", str(tmp_path / "part"), *short, "--set", "train.epochs=1"]) == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--set", "train.epochs=2"]) == 0
    from dlgn.train.checkpoint import load_model

    whole, part = load_model(tmp_path / "whole")[0], load_model(tmp_path / "part")[0]
    for (name, a), (_, b) in zip(whole.state_dict().items(), part.state_dict().items()):
        assert torch.equal(a, b), name
