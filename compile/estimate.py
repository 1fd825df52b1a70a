"""The compiler's size estimate of a whole board design, before any synthesis.

A board design is the thermometer encoder (``uart`` top: raw features in), the gate network
(one LUT4 per gate after the compiler's passes), the per-class popcount (``group sum``), the
argmax and the I/O block (UART or BIST). Each block's logic cells are estimated from what the
build report counts, with per-family coefficients fitted by least squares to real builds
(``bench/fit_estimate.py`` runs them and prints the fit; the builds and the residuals are in
``bench/results/estimate-*.json``). On ECP5 a logic cell is a ``TRELLIS_COMB`` (a LUT4, or half a
carry cell), on iCE40 an ``ICESTORM_LC`` (a LUT4 with its flip-flop and carry).

:func:`design_estimate` returns the blocks and their total; ``dlgn bitstream`` refuses a design
whose total exceeds the device before spending minutes in synthesis.
"""

__all__ = ["COEFFICIENTS", "ARRIVAL_MAX_THRESHOLDS", "arrival_thresholds", "design_estimate", "encoder_size"]

#: The ``uart`` top encodes each feature as its byte arrives (see :func:`arrival_thresholds`) when
#: the features share at most this many distinct thresholds; with more (a per-feature quantile
#: encoding) it buffers the raw features and the core's encoder compares them.
ARRIVAL_MAX_THRESHOLDS = 16


def arrival_thresholds(bits, feature_width=8):
    """The thresholds the ``uart`` top compares each arriving byte against, sorted, or ``None``.

    ``bits`` are the encoding's ``(feature, threshold)`` pairs (``InputEncoding.bits``). When the
    features share few thresholds (uniform and global-quantile encodings: every feature the same
    T), the top needs no per-feature comparators: T comparators on the received byte, and a shift
    register of ``features x T`` encoded bits instead of the raw features and the core's encoder
    (``dlgn.boards.tops.UartClassifier``). ``None`` when there are more than
    :data:`ARRIVAL_MAX_THRESHOLDS` distinct thresholds."""
    thresholds = sorted({int(t) for _f, t in bits})
    if not thresholds or len(thresholds) > ARRIVAL_MAX_THRESHOLDS:
        return None
    return thresholds

#: family -> coefficients: logic cells per adder bit of the group sum, per argmax comparator bit,
#: per feature bit an encoder comparator reads, per feature bit the UART top buffers (iCE40:
#: a flip-flop takes a logic cell), per core flip-flop, and the I/O block's fixed cost per top.
#: ``uart_arrival_bit`` / ``arrival_comparator``: per bit of the encoded sample register and per
#: comparator of the ``uart`` top that encodes on arrival (:func:`arrival_thresholds`), which then
#: has no per-feature encoder and no raw buffer (``encoder`` / ``uart_feature`` are that older
#: layout's, used when the thresholds are per feature). The arrival coefficients: fitted by
#: ``bench/fit_estimate.py --tops uart`` to 7 ECP5 and 5 iCE40 uart builds of the same models
#: (bench/results/estimate-2026-12-03.json; with the group sum coefficients kept, every build within 1.1%; on iCE40 a register bit takes
#: a logic cell, and the per-comparator figure also absorbs what grows with T in so few builds).
#: Fitted by bench/fit_estimate.py to 20 builds of 6 digits and Fashion-MNIST models (K = S = 2,
#: adder-tree group sum): bench/results/estimate-2026-12-01.json, every build within 8.4% on
#: ECP5 and 1.3% on iCE40. ``group_sum`` is per popcount (cells per ``GroupSum.adder_bits`` of that
#: implementation); the plans' values come from 6 builds of bench/popcount_boards.py (the same
#: file's ``popcount_refit``: ECP5 compressor 1.00-1.03, chain 1.19 (nextpnr's feed-in and
#: feed-out CCU2C per chain), iCE40 compressor 1.49 (its pass-through registers take logic cells
#: of their own); every build within 1% with them). Refit when the hardware of a block changes.
COEFFICIENTS = {
    "ecp5": {"group_sum": {"adder": 1.451, "compressor": 1.02, "chain": 1.19}, "argmax": 2.0, "encoder": 0.289,
             "uart_feature": 0.0, "flip_flops": 0.0, "io": {"uart": 349, "bist": 219},
             "uart_arrival_bit": 0.006, "arrival_comparator": 6.654, "io_arrival": 377},
    "ice40": {"group_sum": {"adder": 1.681, "compressor": 1.49, "chain": 1.49}, "argmax": 2.0, "encoder": 0.121,
              "uart_feature": 2.552, "flip_flops": 0.0, "io": {"uart": 0, "bist": 289},
              "uart_arrival_bit": 0.913, "arrival_comparator": 25.739, "io_arrival": 341},
}


def design_estimate(report, family, top, popcount="adder", group_sum_cells=None):
    """``{"core", "group_sum", "argmax", "encoder", "io", "flip_flops", "total"}`` in logic cells
    (``flip_flops``: the cells that pipeline registers need of their own, iCE40 only) for the build
    whose ``compile_report.json`` is ``report``, on ``family`` with board top ``top``.

    The group sum is its ``popcount`` implementation's cells: ``group_sum_cells`` (the
    ``GroupSum.adder_bits`` of that implementation: adder-tree bits, or a plan's LUTs and
    carry-chain positions; default the report's ``group_sum_adder_bits``, the adder tree's) times
    that implementation's coefficient."""
    c = COEFFICIENTS[family]
    if popcount not in c["group_sum"]:
        raise ValueError(f"no estimate for popcount {popcount!r}; known: {', '.join(c['group_sum'])}")
    if group_sum_cells is None:
        if popcount != "adder":
            raise ValueError(f"the estimate of a {popcount!r} group sum needs its cell count (group_sum_cells)")
        group_sum_cells = int(report.get("group_sum_adder_bits", 0))
    classes = int(report["classes"])
    enc = _encoder(report)
    if top != "uart":
        encoder, io = 0, int(c["io"][top])
    elif enc.get("arrival_thresholds"):  # encoded as each byte arrives: T comparators, features x T bits
        encoder = round(c["arrival_comparator"] * enc["arrival_thresholds"])
        io = int(c["io_arrival"]) + round(c["uart_arrival_bit"] * enc["arrival_bits"])
    else:  # raw features buffered, compared by the core's encoder
        encoder = round(c["encoder"] * enc["chain_bits"])
        io = int(c["io"]["uart"]) + round(c["uart_feature"] * enc["feature_bits"])
    blocks = {
        "core": int(report.get("estimated_luts", report.get("gates", 0))),
        "group_sum": round(c["group_sum"][popcount] * int(group_sum_cells)),
        "argmax": round(c["argmax"] * max(0, classes - 1) * int(report["score_width"])),
        "encoder": encoder,
        "io": io,
        "flip_flops": round(c["flip_flops"] * int(report.get("flip_flops", 0))),
    }
    blocks["total"] = sum(blocks.values())
    return blocks


def _encoder(report):
    return report.get("encoder_size") or {"comparators": int(report["in_bits"]),
                                          "chain_bits": 8 * int(report["in_bits"]), "feature_bits": 0}


def encoder_size(netlist):
    """What the on-chip encoder of ``netlist`` costs: ``comparators`` (distinct feature > threshold
    tests the gates or groups read), ``chain_bits`` (feature bits those comparators read: the
    AND/OR chain of :func:`dlgn.hdl.encoder.greater_than` starts at the threshold's lowest 0 bit)
    and ``feature_bits`` (distinct feature bits read at all: what the UART top must buffer;
    Yosys removes the rest), for a top that buffers raw features; and for the ``uart`` top that
    encodes on arrival (:func:`arrival_thresholds`) ``arrival_thresholds`` (its comparators, the
    distinct thresholds read; 0 when the thresholds are per feature and it buffers raw features)
    and ``arrival_bits`` (its sample register, ``features x arrival_thresholds``)."""
    if netlist.encoding is None:
        return {"comparators": 0, "chain_bits": 0, "feature_bits": 0, "arrival_thresholds": 0, "arrival_bits": 0}
    used = {i for inputs, _table in netlist.gates for i in inputs}
    used.update(s for group in netlist.groups for s in group)
    width = netlist.encoding.feature_width
    comparators, read = set(), set()
    chain_bits = 0
    for index, (feature, threshold) in enumerate(netlist.encoding.bits):
        if netlist.input_id(index) not in used or (feature, threshold) in comparators:
            continue
        comparators.add((feature, threshold))
        lowest_zero = next((k for k in range(width) if not (threshold >> k) & 1), width)
        chain_bits += width - lowest_zero
        read.update((feature, k) for k in range(lowest_zero, width))
    # the layout follows all the encoding's thresholds (as the top does); the columns of thresholds
    # that no read bit compares against feed nothing, and Yosys removes them
    shared = arrival_thresholds(netlist.encoding.bits, width) is not None
    columns = len({t for _f, t in comparators}) if shared else 0
    return {"comparators": len(comparators), "chain_bits": chain_bits, "feature_bits": len(read),
            "arrival_thresholds": columns, "arrival_bits": netlist.encoding.features * columns}
