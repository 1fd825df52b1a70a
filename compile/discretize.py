"""Discretize a trained network into the netlist IR.

Each gate's table is the trainer's discrete table (IWP: per-entry rounding, OP: the argmax
function, DESIGN §2.3–2.4), taken from :meth:`LogicNet.discrete_stages`: the dense layers, and
the convolutional layers flattened into ordinary gates (one per position and tree node, each
with its node's shared table; zero padding reads the constant 0; 2 x 2 OR pooling as one
4-input gate with table ``0xfffe`` per output position, DESIGN §2.9). Stage ``s`` becomes level
``s + 1``. The class groups are the network's (:meth:`LogicNet.class_groups`: contiguous or
interleaved last-layer gates). The netlist's source records ``gates_per_kind`` (``conv_tree``,
``pool``, ``dense``).
"""

from .netlist import CONST0, InputEncoding, Netlist

__all__ = ["netlist_from_model", "netlist_from_run", "FEATURE_WIDTH"]

#: Raw features are unsigned 8-bit integers (every dataset loader returns ``uint8``).
FEATURE_WIDTH = 8
#: stage kinds of :meth:`LogicNet.discrete_stages` -> the ``gates_per_kind`` keys of the netlist source
_KINDS = {"conv": "conv_tree", "pool": "pool", "dense": "dense"}


def netlist_from_model(net, encoder=None, source=None):
    """Netlist of ``net`` (a :class:`dlgn.train.layers.LogicNet`); ``encoder`` (a
    :class:`dlgn.train.encoding.Thermometer`) records how raw features become the input bits."""
    in_bits = int(net.in_bits)
    encoding = None
    if encoder is not None:
        encoding = InputEncoding.from_thresholds(encoder.thresholds, FEATURE_WIDTH)
    gates = []
    per_kind = {"conv_tree": 0, "pool": 0, "dense": 0}
    previous = [2 + i for i in range(in_bits)]  # ids of the previous stage's outputs
    for kind, wiring, truth_tables in net.discrete_stages():
        wiring = wiring.cpu().tolist()
        n = len(wiring[0]) if wiring else 0
        weights = [1 << a for a in range(1 << n)]
        first = 2 + in_bits + len(gates)
        for inputs, entries in zip(wiring, truth_tables.cpu().tolist()):
            table = sum(w for w, bit in zip(weights, entries) if bit)
            gates.append((tuple(CONST0 if i < 0 else previous[i] for i in inputs), table))
        previous = list(range(first, 2 + in_bits + len(gates)))
        per_kind[_KINDS[kind]] += len(wiring)
    groups = [[previous[g] for g in group] for group in net.class_groups()]
    source = dict(source or {}, gates_per_kind=per_kind)
    return Netlist(in_bits, gates, groups, encoding, source)


def netlist_from_run(run_dir):
    """Load a run directory and discretize it. Returns ``(netlist, net, encoder, info)``."""
    from dlgn.train.checkpoint import load_model

    net, encoder, info = load_model(run_dir)
    source = {"run_dir": str(run_dir), "dataset": info["dataset"], "epoch": info["epoch"],
              "feature_max": info["feature_max"],
              "model": dict({k: info["config"]["model"][k] for k in ("width", "depth", "gate_inputs", "parametrization")},
                            widths=list(net.widths))}
    if info["config"]["model"].get("conv"):
        source["model"]["conv"] = info["config"]["model"]["conv"]
    return netlist_from_model(net, encoder, source), net, encoder, info
