"""Board targets, top-levels and the yowasp toolchain (DESIGN §4)."""
