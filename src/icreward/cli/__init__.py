"""The `icreward` command line: one module per subcommand, each with its parser (`add_parser`) and a handler (`run`)
that calls typed library functions. Heavy imports happen inside the handlers, so `icreward --help` and
`icreward <command> --help` never import torch.

Every user error ends the command with one line on stderr, `icreward <command>: error: <what, naming the flag or
file>`, and exit code 2: a bad flag value (numbers are bounded where they are parsed), an input or output path that
cannot work (checked before any work starts), or an `IcrewardError` from the library.

Every command keeps freed heap memory in the process (`icreward.allocator.retain_freed_memory`: up to 512 MiB on
glibc, unless `MALLOC_TOP_PAD_` is set).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from icreward.errors import IcrewardError

SUBCOMMANDS = (
    "score", "eval", "synth", "train", "experiment", "rank", "serve", "import", "finetune", "explain", "best-of-n"
)
# subcommand -> module name where they differ
_MODULES = {"eval": "evaluate", "import": "importing", "best-of-n": "best_of_n"}


class UsageError(Exception):
    """A command line argparse refuses; `prog` is `icreward` or `icreward <command>`."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`main` prints it) instead of the usage text and an exit."""

    def error(self, message: str):
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    from icreward.version import __version__

    parser = Parser(prog="icreward", description="Image-to-video consistency rewards.")
    parser.add_argument("--version", action="version", version=f"icreward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"icreward.cli.{_MODULES.get(name, name)}")
        module.add_parser(sub).set_defaults(func=module.run)
    return parser


def _one_line(text) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:  # named after the command they were given to, not the top-level parser
            raise UsageError(f"icreward {args.command}", f"unrecognized arguments: {' '.join(extra)}")
    except UsageError as e:
        print(f"{e.prog}: error: {_one_line(e)} (see {e.prog} --help)", file=sys.stderr)
        return 2
    from icreward.allocator import retain_freed_memory
    from icreward.progress import silenced

    retain_freed_memory()  # batch after batch of same-sized tensors: keep their pages instead of faulting them in

    def one_line_warning(message, category, filename, lineno, line=None) -> str:
        return f"icreward {args.command}: warning: {_one_line(message)}\n"

    default_format, warnings.formatwarning = warnings.formatwarning, one_line_warning  # library warnings: one line
    try:
        with silenced(getattr(args, "quiet", False)):
            return args.func(args)
    except IcrewardError as e:
        print(f"icreward {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # the system refused a read or write the checks could not foresee (disk full, permissions)
        where = f"{e.filename}: " if e.filename else ""
        print(f"icreward {args.command}: error: {where}{_one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = default_format  # main() may be called in-process (tests, notebooks)


if __name__ == "__main__":
    sys.exit(main())
