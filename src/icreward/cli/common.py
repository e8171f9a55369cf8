"""What every subcommand shares: the model option's help, argument types that bound numbers at parse time, JSON-object
arguments, and the checks run before any work (device, input files). Imports nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import json
import math

from icreward.errors import IcrewardError
from icreward.rules import DEFAULT_MODEL, MAX_FRAMES, MIN_FRAMES

MODEL_HELP = "model: default (the shipped model), a checkpoint folder, a hub id or metric:<name> (default: default)"
MAX_BOOTSTRAP = 100_000  # bootstrap resamples: ~1 ms each per model, so this bound is minutes, not days
QUIET_HELP = "no progress bar or progress lines on stderr (results and errors still print)"


def add_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)


HEAD_CHOICES = ("consistency", "motion", "text", "guidance")  # icreward.interface.HEAD_NAMES (no torch import here)


def add_head_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--head",
        default=None,
        choices=HEAD_CHOICES,
        help="which head is `reward` (default: the model's own, consistency; a handcrafted metric answers its own "
        "dimension). guidance combines consistency, motion and text for fine-tuning and best-of-N; text needs a prompt",
    )


def add_precision_option(p: argparse.ArgumentParser) -> None:
    from icreward.precision import PRECISION_HELP, PRECISIONS

    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help=PRECISION_HELP)


def check_precision(device: str, precision: str) -> None:
    """Refuse a precision the device cannot autocast to, naming what it supports (imports torch)."""
    from icreward.precision import autocast

    autocast(device, precision)


def add_quiet_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def json_object(text: str) -> dict:
    """argparse type: a JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _range_text(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"between {lo:g} and {hi:g}"
    if lo is not None:
        return f"greater than {lo:g}" if lo_open else f"at least {lo:g}"
    return f"at most {hi:g}"


def int_range(lo: int | None = None, hi: int | None = None):
    """argparse type: an integer in [lo, hi] (either end may be open); the error names the range and the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_range_text(lo, hi)}, got {value}")
        return value

    return parse


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """argparse type: a finite number in [lo, hi] (or (lo, hi] with `lo_open`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        low = lo is not None and (value <= lo if lo_open else value < lo)
        if not math.isfinite(value) or low or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be a number {_range_text(lo, hi, lo_open)}, got {text}")
        return value

    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)
frame_count = int_range(MIN_FRAMES, MAX_FRAMES)
seed_value = int_range(0, 2**32 - 1)  # numpy's generators take non-negative seeds
FRAMES_HELP = f"frames sampled per video, {MIN_FRAMES}..{MAX_FRAMES}"


def check_device(device: str, flag: str = "--device") -> None:
    """Refuse a device this machine does not have, naming the ones it does (imports torch)."""
    import torch

    available = ["cpu"]
    if torch.cuda.is_available():
        available += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        available.append("mps")
    where = f"{flag} {device}"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise IcrewardError(f"{where}: not a device name; available here: {', '.join(available)}") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU found"
            raise IcrewardError(f"{where}: no CUDA device (torch {torch.__version__}, {build}); available: cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise IcrewardError(f"{where}: there are {count} CUDA device(s); available: {', '.join(available)}")
        return
    if dev.type == "mps" and "mps" in available:
        return
    raise IcrewardError(f"{where}: not available here; available: {', '.join(available)}")


def check_inputs(**inputs: str | list[str] | None) -> None:
    """Refuse inputs that exist but are not regular files or folders (a FIFO would block the reader forever).

    Keyword names are flags without dashes (`video="..."` is `--video`); missing files are left to the readers,
    which name them."""
    from icreward.atomic import check_readable_input

    for name, value in inputs.items():
        flag = "--" + name.replace("_", "-")
        for path in [value] if isinstance(value, str) else value or []:
            check_readable_input(path, flag)


def check_pair_or_manifest(args: argparse.Namespace) -> bool:
    """The `--image --video` or `--manifest` choice of `score` and `explain`: True for a single pair; raises
    `IcrewardError` for neither, both, half a pair, or `--prompt` with a manifest (each record gives its own)."""
    single = args.image is not None or args.video is not None
    if single == (args.manifest is not None):
        raise IcrewardError("give either --image and --video, or --manifest")
    if single and (args.image is None or args.video is None):
        raise IcrewardError("--image and --video go together")
    if not single and args.prompt is not None:
        raise IcrewardError("--prompt is for a single pair; a manifest gives each record's `prompt`")
    return single
