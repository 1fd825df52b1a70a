"""Discretize a trained network into the netlist IR.

Each gate's table is the trainer's discrete table (IWP: per-entry rounding, OP: the argmax
function, DESIGN §2.3–2.4), taken from :meth:`LogicNet.discrete_layers`; layer ``l`` becomes
level ``l + 1``. The class groups are the network's (:meth:`LogicNet.class_groups`: contiguous
or interleaved last-layer gates).
"""

from .netlist import InputEncoding, Netlist

__all__ = ["netlist_from_model", "netlist_from_run", "FEATURE_WIDTH"]

#: Raw features are unsigned 8-bit integers (every dataset loader returns ``uint8``).
FEATURE_WIDTH = 8


def netlist_from_model(net, encoder=None, source=None):
    """Netlist of ``net`` (a :class:`dlgn.train.layers.LogicNet`); ``encoder`` (a
    :class:`dlgn.train.encoding.Thermometer`) records how raw features become the input bits."""
    in_bits = int(net.in_bits)
    encoding = None
    if encoder is not None:
        encoding = InputEncoding.from_thresholds(encoder.thresholds, FEATURE_WIDTH)
    gates = []
    previous = [2 + i for i in range(in_bits)]  # ids of the previous layer's outputs
    for wiring, truth_tables in net.discrete_layers():
        wiring = wiring.cpu().tolist()
        n = len(wiring[0]) if wiring else 0
        weights = [1 << a for a in range(1 << n)]
        first = 2 + in_bits + len(gates)
        for inputs, entries in zip(wiring, truth_tables.cpu().tolist()):
            table = sum(w for w, bit in zip(weights, entries) if bit)
            gates.append((tuple(previous[i] for i in inputs), table))
        previous = list(range(first, 2 + in_bits + len(gates)))
    groups = [[previous[g] for g in group] for group in net.class_groups()]
    return Netlist(in_bits, gates, groups, encoding, source)


def netlist_from_run(run_dir):
    """Load a run directory and discretize it. Returns ``(netlist, net, encoder, info)``."""
    from dlgn.train.checkpoint import load_model

    net, encoder, info = load_model(run_dir)
    source = {"run_dir": str(run_dir), "dataset": info["dataset"], "epoch": info["epoch"],
              "feature_max": info["feature_max"],
              "model": dict({k: info["config"]["model"][k] for k in ("width", "depth", "gate_inputs", "parametrization")},
                            widths=list(net.widths))}
    return netlist_from_model(net, encoder, source), net, encoder, info
