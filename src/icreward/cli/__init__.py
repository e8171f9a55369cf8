"""The `icreward` command line: one module per subcommand, each with its parser (`add_parser`) and a handler (`run`)
that calls typed library functions. Heavy imports happen inside the handlers, so `icreward --help` and
`icreward <command> --help` never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from icreward.errors import IcrewardError

SUBCOMMANDS = ("score", "eval", "synth", "train", "experiment", "rank", "serve")
_MODULES = {"eval": "evaluate"}  # subcommand -> module name where they differ


def build_parser() -> argparse.ArgumentParser:
    from icreward.version import __version__

    parser = argparse.ArgumentParser(prog="icreward", description="Image-to-video consistency rewards.")
    parser.add_argument("--version", action="version", version=f"icreward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"icreward.cli.{_MODULES.get(name, name)}")
        module.add_parser(sub).set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except IcrewardError as e:
        print(f"icreward {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
