"""Size a model for a board before training: ``dlgn train CONFIG --fit BOARD``.

The widths of ``model.widths`` (or ``model.depth`` x ``model.width``) are scaled by one common
factor, the last layer kept a multiple of the classes, until the compiler's board estimate
(:func:`dlgn.compile.estimate.design_estimate`: encoder, gate network, group sum, argmax, I/O,
the coefficients fitted to real builds) of the *untrained* network fills the board's logic
cells up to ``1 - margin``. Of the untrained network it counts the gates that reach an output
(:func:`reachable_gates`: a narrow last layer leaves many gates of the layers before it unread,
and the compiler removes them) as one LUT each and every input bit as read by the encoder. ``dlgn compile`` then reports the trained model's own
estimate, and ``dlgn bitstream`` checks it against the device again before synthesis.

Convolutional layers (``model.conv``) are a fixed cost the fit does not scale: every tree at every
position as the LUTs that hold it (:func:`conv_luts`: a tree of ``L`` leaves in ``ceil((L - 1) / 3)``
LUT4s, one per OR pool), the share that the first dense layer reads. That is the untrained size,
an upper bound: training leaves many trees reading fewer inputs, and the compiler's passes shrink
them (``configs/conv.toml``: 13,520 LUT4 of trees and pools here, 26,304 logic cells for the
design, against 20,416 LUT4 in its trained build on the ULX3S-85F, 19,112 with channel-major
features; counting no trees gave 12,803).
"""

import math

from .config import ConfigError, layer_gate_inputs, layer_widths

__all__ = ["FitError", "fit_config", "untrained_estimate", "conv_luts", "DEFAULT_MARGIN"]

#: share of the device's logic cells left free (placement and routing need room: nextpnr's
#: routing of dense random logic fails well before 100 %)
DEFAULT_MARGIN = 0.2
_LUT_SIZE = {"ecp5": 4, "ice40": 4}


class FitError(ConfigError):
    """No model of this shape fits the board; the message says what to change."""


def untrained_estimate(widths, gate_inputs, classes, groups, thresholds, family, top, feature_width=8, conv=None,
                       image=None):
    """The board estimate of a network of these ``widths`` (see the module doc) as
    :func:`~dlgn.compile.estimate.design_estimate` returns it; ``thresholds`` is the encoder's
    ``[features, T]`` table; ``conv`` the ``model.conv`` list in front of the dense layers, on
    images of shape ``image`` ``(colours, height, width)``."""
    from dlgn.compile.estimate import design_estimate, encoder_size
    from dlgn.compile.netlist import InputEncoding, Netlist
    from dlgn.hdl.group_sum import GroupSum

    from .functional import class_groups

    lut_size = _LUT_SIZE[family]
    alive = reachable_gates(widths, gate_inputs)
    core = sum(a * (1 << max(0, n - lut_size)) for a, n in zip(alive, gate_inputs))
    if conv:
        luts, features = conv_luts(conv, image, thresholds.shape[1], lut_size)
        core += luts * (1.0 - math.exp(-gate_inputs[0] * alive[0] / features))  # the features layer 1 reads
    core = round(core)
    encoding = InputEncoding.from_thresholds(thresholds, feature_width)
    in_bits = len(encoding.bits)
    # every input bit read: a netlist whose one group lists all of them
    reading = Netlist(in_bits, [], [[2 + i for i in range(in_bits)]], encoding)
    group_sum = GroupSum(widths[-1], class_groups(widths[-1], classes, groups))
    group_sum._MustUse__used = True  # built for its size only, never elaborated (as boards/primitives.py does)
    report = {
        "classes": classes,
        "estimated_luts": core,
        "gates": sum(widths),
        "group_sum_adder_bits": group_sum.adder_bits,
        "score_width": group_sum.score_width,
        "in_bits": in_bits,
        "encoder_size": encoder_size(reading),
        "flip_flops": 0,
    }
    return design_estimate(report, family, top)


def reachable_gates(widths, gate_inputs):
    """Expected gates of each layer that reach an output: every gate of the last layer (the group
    sum reads them all), and of each earlier layer the share that the next layer's reachable gates
    read, ``w * (1 - exp(-n * reachable_next / w))`` for reads spread evenly (random or windowed
    wiring). The compiler's dead-gate removal takes the rest; it also drops inputs a table ignores,
    so a trained model comes out a few percent below this (measured on Fashion-MNIST: 22,532 LUT4
    for 23,700 here with an 8,000-wide head; 16,594 for 16,300 with 2,000; 11,800 for 12,330 with
    1,000, bench/results/widths-2026-12-01.json)."""
    alive = [float(widths[-1])]
    for w, n_next in zip(reversed(widths[:-1]), reversed(gate_inputs[1:])):
        alive.append(w * (1.0 - math.exp(-n_next * alive[-1] / w)))
    return list(reversed(alive))


def conv_luts(conv, image, thresholds, lut_size=4):
    """``(luts, features)``: the LUTs of the untrained convolutional layers ``conv`` (every tree at
    every position, each OR pool one LUT) and the features the last one outputs, on images of
    shape ``image`` with ``thresholds`` planes per colour."""
    from .conv import conv_output_shape

    colours, height, width = image
    shape = (colours * thresholds, height, width)
    luts = 0
    for layer in conv:
        n, d, k, pad, stride = (layer[f] for f in ("tree_inputs", "tree_depth", "kernel", "padding", "stride"))
        _, out_h, out_w = conv_output_shape(shape, layer["channels"], k, stride, pad, pool=1)  # the positions
        if n > lut_size:  # wider gates than the LUT: each in 2**(n - k) LUTs, no packing
            per_tree = sum(n ** level for level in range(d)) * (1 << (n - lut_size))
        else:  # a tree of L leaves packs into ceil((L - 1) / (k - 1)) LUTs
            per_tree = max(1, -(-(n ** d - 1) // (lut_size - 1)))
        out = conv_output_shape(shape, layer["channels"], k, stride, pad, layer["pool"])
        luts += layer["channels"] * out_h * out_w * per_tree + (math.prod(out) if layer["pool"] == 2 else 0)
        shape = out
    return luts, math.prod(shape)


def _scaled(widths, factor, classes):
    out = [max(1, round(w * factor)) for w in widths[:-1]]
    out.append(max(classes, round(widths[-1] * factor / classes) * classes))
    return out


def fit_config(config, board_name, *, top="uart", margin=DEFAULT_MARGIN, thresholds=None, log=print):
    """Set ``config["model"]["widths"]`` so the design fills ``board_name`` up to ``1 - margin``;
    returns ``(widths, estimate, board)``. ``thresholds``: the encoder's table (by default the
    uniform thresholds of the config; pass the fitted ones for quantile encodings)."""
    import numpy as np

    from dlgn.boards.targets import get_board
    from dlgn.compile.estimate import COEFFICIENTS

    from .data import DATASET_INFO
    from .encoding import Thermometer

    board = get_board(board_name)
    if board.family not in COEFFICIENTS:
        raise FitError(f"the board estimate knows no {board.family} devices")
    if not 0 <= margin < 1:
        raise FitError(f"--fit-margin must be in [0, 1), not {margin!r}")
    m, d = config["model"], config["data"]
    info = DATASET_INFO[d["name"]]
    classes = info["classes"]
    if thresholds is None:
        features = _features(d["name"])
        thresholds = Thermometer.fit(np.zeros((1, features), dtype=np.uint8), d["thresholds"], "uniform",
                                     info["feature_max"]).thresholds
    base, inputs = layer_widths(m), layer_gate_inputs(m)
    budget = board.lut4 * (1 - margin)

    def total(factor):
        widths = _scaled(base, factor, classes)
        return widths, untrained_estimate(widths, inputs, classes, m["groups"], thresholds, board.family, top,
                                          conv=m.get("conv"), image=info["image"] if m.get("conv") else None)

    widths, estimate = total(1e-9)  # the smallest network of this shape: one gate per layer, one per class
    if estimate["total"] > budget:
        fixed = {k: v for k, v in estimate.items() if k not in ("total", "core")}
        raise FitError(
            f"no {'-'.join(map(str, base))} network fits {board.name} ({board.lut4} logic cells, margin "
            f"{margin:.0%}): the smallest one needs ~{estimate['total']} ({', '.join(f'{k} {v}' for k, v in fixed.items())}); "
            f"use fewer data.thresholds, the bist top, or a larger board")
    low, high = 1e-9, 1.0
    while total(high)[1]["total"] <= budget:  # grow until it no longer fits
        low, high = high, high * 2
    for _ in range(40):
        mid = math.sqrt(low * high) if low > 1e-6 else (low + high) / 2
        if total(mid)[1]["total"] <= budget:
            low = mid
        else:
            high = mid
    widths, estimate = total(low)
    m["widths"] = widths
    if isinstance(m["gate_inputs"], list):
        m["gate_inputs"] = inputs
    log(f"fit to {board.name} ({board.lut4} logic cells, {top} top, margin {margin:.0%}): model.widths = {widths}, "
        f"estimated {estimate['total']} cells before training (core {estimate['core']}, group sum "
        f"{estimate['group_sum']}, encoder {estimate['encoder']}, I/O {estimate['io']}, argmax {estimate['argmax']})")
    return widths, estimate, board


def _features(name):
    """Raw features of a dataset (known without loading it)."""
    known = {"fashion-mnist": 784, "mnist": 784, "cifar10": 3072, "cifar100": 3072, "digits": 64, "breast-cancer": 30}
    return known[name]
