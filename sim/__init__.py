"""cocotb testbenches and runners that check the emitted Verilog against the golden model (DESIGN §5)."""
