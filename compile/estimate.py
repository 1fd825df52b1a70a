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

__all__ = ["COEFFICIENTS", "design_estimate"]

#: family -> coefficients: logic cells per adder bit of the group sum, per argmax comparator bit,
#: per encoder comparator (input bit), per flip-flop of the pipeline (iCE40 packs a flip-flop
#: with its LUT only when the LUT feeds nothing else), and the I/O block's fixed cost per top.
COEFFICIENTS = {
    "ecp5": {"group_sum": 1.6, "argmax": 2.0, "encoder": 1.0, "flip_flops": 0.0, "uart_feature": 1.0,
             "io": {"uart": 200, "bist": 150}},
    "ice40": {"group_sum": 1.6, "argmax": 2.0, "encoder": 1.0, "flip_flops": 0.3, "uart_feature": 1.0,
              "io": {"uart": 200, "bist": 150}},
}


def design_estimate(report, family, top):
    """``{"core", "group_sum", "argmax", "encoder", "io", "flip_flops", "total"}`` in logic cells
    (``flip_flops``: the cells that pipeline registers need of their own, iCE40 only) for the build
    whose ``compile_report.json`` is ``report``, on ``family`` with board top ``top``."""
    c = COEFFICIENTS[family]
    classes = int(report["classes"])
    blocks = {
        "core": int(report.get("estimated_luts", report.get("gates", 0))),
        "group_sum": round(c["group_sum"] * int(report.get("group_sum_adder_bits", 0))),
        "argmax": round(c["argmax"] * max(0, classes - 1) * int(report["score_width"])),
        "encoder": round(c["encoder"] * int(report["in_bits"])) if top == "uart" else 0,
        "io": int(c["io"][top]) + (round(c["uart_feature"] * _features(report)) if top == "uart" else 0),
        "flip_flops": round(c["flip_flops"] * int(report.get("flip_flops", 0))),
    }
    blocks["total"] = sum(blocks.values())
    return blocks


def _features(report):
    """Raw features of the design (the UART top buffers them): the encoder's feature count."""
    return int(report.get("in_features") or report.get("features") or 0)
