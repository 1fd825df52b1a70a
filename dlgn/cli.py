"""The ``dlgn`` command line."""

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_train(args):
    from dlgn.train.config import apply_overrides, load_config, parse_override
    from dlgn.train.loop import train

    if args.resume and args.config:
        raise SystemExit("error: --resume continues a run with its own config; do not pass CONFIG as well")
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise SystemExit("error: --resume RUN_DIR writes into RUN_DIR; drop --out")
    if not args.resume and not args.out:
        raise SystemExit("error: pass --out RUN_DIR (where the run is written), or --resume RUN_DIR")
    config = apply_overrides(load_config(args.config), args.set)
    overrides = {parse_override(item)[0] for item in args.set or ()}
    summary = train(config, args.resume or args.out, force=args.force, resume=bool(args.resume), overrides=overrides)
    out = args.resume or args.out
    print(f"wrote {out}: test accuracy {100 * summary['test_acc_discrete']:.2f}% discrete, "
          f"{100 * summary['test_acc_soft']:.2f}% soft, {summary['train_seconds']:.0f} s")


def _cmd_compile(args):
    from dlgn.compile.build import compile_run
    from dlgn.compile.passes import PASS_NAMES

    compile_run(args.run_dir, args.out, lut_size=args.lut_size, pipeline_every=args.pipeline_every,
                output_every=args.output_every, encoder=args.encoder,
                passes=() if args.no_passes else PASS_NAMES, verify=not args.no_verify)


def build_parser():
    parser = argparse.ArgumentParser(prog="dlgn", description="Learn logic-gate networks and put them on FPGAs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a logic-gate network into a run directory")
    p.add_argument("config", nargs="?", help="TOML config (default: built-in defaults, see configs/default.toml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. model.width=8000")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory to create")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing RUN_DIR")
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
    p.set_defaults(func=_cmd_compile)
    return parser


def main(argv=None):
    from dlgn.errors import USER_ERRORS

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last finished epoch is checkpointed (use --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
