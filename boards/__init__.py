"""Board targets, top-levels and the yowasp toolchain (DESIGN §4).

- :mod:`dlgn.boards.targets`: the known boards (ULX3S 12F/25F/45F/85F via amaranth-boards, iCEBreaker UP5K);
- :mod:`dlgn.boards.bitstream`: ``dlgn bitstream`` (``platform.prepare`` + ``BuildPlan.execute_local`` with
  the yowasp tools) -> ``top.bit`` (``top.bin`` on iCE40) and ``hw_report.json``;
- :mod:`dlgn.boards.primitives`: one device LUT4 cell per gate (ECP5 ``LUT4``, iCE40 ``SB_LUT4``) and the
  Yosys proof that this core equals the generic one;
- :mod:`dlgn.boards.tops`: the ``uart`` classifier and ``bist`` self-test tops and the board wrapper (clock, PLL, pins);
- :mod:`dlgn.boards.protocol`: the host <-> board serial frames;
- :mod:`dlgn.boards.infer`: ``dlgn infer`` (the host side, over pyserial);
- :mod:`dlgn.boards.simserial`: a simulated serial line into the Amaranth simulator, so the host code is
  tested against the ``uart`` top without a board;
- :mod:`dlgn.boards.toolchain`: tool paths and versions, the ECP5 PLL (``ecppll``), the tools' reports.
"""
