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
