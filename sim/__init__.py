"""cocotb testbenches and runners that check the emitted Verilog against the golden model (DESIGN §5).

- :mod:`dlgn.sim.check`: ``dlgn sim`` (:func:`~dlgn.sim.check.simulate_build`) and ``sim_report.json``;
- :mod:`dlgn.sim.vectors`: the build under test, its stimulus (test set + random inputs) and the
  golden model's expected scores, packed into the file the testbench reads;
- :mod:`dlgn.sim.testbench`: the cocotb testbench (runs inside the simulator);
- :mod:`dlgn.sim.runner`: Icarus/Verilator through ``cocotb_tools.runner``, sharded over processes;
- :mod:`dlgn.sim.post_synth`: the core synthesized for ECP5 and Yosys's cell models.
"""
