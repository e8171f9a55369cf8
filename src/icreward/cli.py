"""The `icreward` command line. Thin: parsing here, work in the library; heavy imports inside subcommands."""

from __future__ import annotations

import argparse
import sys

from icreward.errors import IcrewardError

DEFAULT_METRIC_MODEL = "metric:vbench-i2v-pixel"


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a labelled failure-case benchmark (videos + split manifests)")
    p.add_argument("--out", required=True, help="output folder (train.jsonl, val.jsonl, test.jsonl, videos/)")
    p.add_argument("--images", help="folder of source images to use instead of procedural scenes")
    p.add_argument("--n", type=int, default=None, help="number of source images (default: 120)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout-modes", default="", help="comma-separated failure modes kept out of train/val")
    p.add_argument("--frames", type=int, default=None, help="frames per video (default: 16)")
    p.add_argument("--size", type=int, default=None, help="video side in pixels (default: 128)")
    p.add_argument("--tie-margin", type=float, default=None, help="|score_a - score_b| at or below this is a tie")
    p.add_argument("--workers", type=int, default=None, help="processes rendering videos (default: CPU count)")
    p.set_defaults(func=_run_synth)


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score one (image, video) pair or every line of a manifest")
    p.add_argument("--image", help="conditioning image")
    p.add_argument("--video", help="generated video")
    p.add_argument("--manifest", help="JSONL/CSV manifest of pointwise or pair records")
    p.add_argument("--out", help="output JSONL (required with --manifest): one line per input line")
    p.add_argument("--model", default=DEFAULT_METRIC_MODEL, help=f"model name (default: {DEFAULT_METRIC_MODEL})")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of the bare reward")
    p.add_argument("--num-frames", type=int, default=None, help="frames sampled per video (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_run_score)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="agreement of one or more models with the labels of a pair manifest")
    p.add_argument("--data", required=True, help="test manifest (pair records)")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="model name; repeat for several. 'metrics:offline' expands to every metric that needs no weights",
    )
    p.add_argument("--val", help="validation manifest: the tie threshold of each model is chosen on it")
    p.add_argument("--report", help="folder for results.json and per-pair CSV")
    p.add_argument("--skip-bad", action="store_true", help="skip invalid manifest lines and list them")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_run_eval)


def _run_synth(args: argparse.Namespace) -> int:
    from icreward.synth.dataset import run_cli

    return run_cli(args)


def _run_score(args: argparse.Namespace) -> int:
    from icreward.scoring import run_cli

    return run_cli(args)


def _run_eval(args: argparse.Namespace) -> int:
    from icreward.evaluation.run import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    from icreward import __version__

    parser = argparse.ArgumentParser(prog="icreward", description="Image-to-video consistency rewards.")
    parser.add_argument("--version", action="version", version=f"icreward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_score, _add_eval, _add_synth):
        add(sub)
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
