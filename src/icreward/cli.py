"""The `icreward` command line. Thin: parsing here, work in the library; heavy imports inside subcommands."""

from __future__ import annotations

import argparse
import sys

from icreward.errors import IcrewardError

DEFAULT_MODEL = "default"  # the checkpoint shipped in the package (icreward.scorer.DEFAULT_MODEL)
MODEL_HELP = "model: default (the shipped model), a checkpoint folder, a hub id or metric:<name> (default: default)"


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a labelled failure-case benchmark (videos + split manifests)")
    p.add_argument("--out", required=True, help="output folder (train.jsonl, val.jsonl, test.jsonl, videos/)")
    p.add_argument("--images", help="folder of source images to use instead of procedural scenes")
    p.add_argument("--n", type=int, default=None, help="number of source images (default: 150)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout-modes", default="", help="comma-separated failure modes kept out of train/val")
    p.add_argument("--frames", type=int, default=None, help="frames per video (default: 16)")
    p.add_argument("--size", type=int, default=None, help="video side in pixels (default: 128)")
    p.add_argument("--tie-margin", type=float, default=None, help="|score_a - score_b| at or below this is a tie")
    p.add_argument("--workers", type=int, default=None, help="processes rendering videos (default: min(2, CPU count))")
    p.set_defaults(func=_run_synth)


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score one (image, video) pair or every line of a manifest")
    p.add_argument("--image", help="conditioning image")
    p.add_argument("--video", help="generated video")
    p.add_argument("--manifest", help="JSONL/CSV manifest of pointwise or pair records")
    p.add_argument("--out", help="output JSONL (required with --manifest): one line per input line")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON object instead of the bare reward")
    p.add_argument("--num-frames", type=int, default=None, help="frames sampled per video (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the results already in --out (and in its .partial.jsonl side file) and score only the rest",
    )
    p.add_argument(
        "--flush-every", type=int, default=64, help="fsync finished results to the side file every N (default: 64)"
    )
    p.set_defaults(func=_run_score)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="agreement of one or more models with the labels of a pair manifest")
    p.add_argument("--data", required=True, help="test manifest (pair records)")
    p.add_argument(
        "--model",
        action="append",
        help="model name; repeat for several (default: the shipped model). 'metrics:offline' expands to every metric "
        "that needs no weights",
    )
    p.add_argument("--val", help="validation manifest: the tie threshold of each model is chosen on it")
    p.add_argument("--report", help="folder for results.json and per-pair CSV")
    p.add_argument("--skip-bad", action="store_true", help="skip invalid manifest lines and list them")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_run_eval)


def _add_rank(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rank", help="best-of-N: rank several videos of one image by reward")
    p.add_argument("--image", required=True, help="conditioning image (decoded and encoded once)")
    p.add_argument("--videos", nargs="+", required=True, help="candidate videos of that image")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help='print {"image", "model", "ranking": [...]} instead of a table')
    p.add_argument("--top", type=int, default=None, help="show only the K best")
    p.add_argument("--num-frames", type=int, default=None, help="frames sampled per video (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_run_rank)


def _run_rank(args: argparse.Namespace) -> int:
    from icreward.scoring import run_rank_cli

    return run_rank_cli(args)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP API: POST /score and /rank (uploads or allowed paths), docs at /docs")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        help="folder whose files JSON requests may name by path; repeat for several (default: uploads only)",
    )
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest request body in MiB (default: 200)")
    p.add_argument("--max-frames", type=int, default=64, help="largest num_frames a request may ask for (default: 64)")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds before a 504 answer (default: 60)")
    p.add_argument("--batch-size", type=int, default=8, help="most videos scored in one forward pass (default: 8)")
    p.add_argument(
        "--batch-wait-ms", type=float, default=10.0, help="how long a request waits for others to join (default: 10)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import importlib.util

    needed = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python-multipart": "python_multipart"}
    missing = [package for package, module in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise IcrewardError(f"serving needs {', '.join(missing)}: pip install {' '.join(missing)}")
    from icreward.server import run_cli

    return run_cli(args)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from icreward.training.config import CACHE_DTYPES, LOSSES, PRECISIONS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a learned reward (IC-Reward or the MLP baseline); the run folder is a checkpoint",
        description="Train a reward model. Options come from the defaults, then --config, then these flags. "
        "Runs on one CPU or GPU, or many under `torchrun --nproc_per_node N -m icreward.cli train ...` "
        "or `accelerate launch`.",
    )
    p.add_argument("--config", help="YAML or JSON file of training options (field names as below, with _)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="training manifest: pair records (pointwise records with --loss mse)")
    g.add_argument("--val", help="validation manifest: early stopping, score normalisation, tie threshold")
    g.add_argument("--out", help="run folder (a checkpoint, with train_config.json, metrics.csv, last/)")
    g.add_argument("--tie-margin", type=float, help=f"|score_a - score_b| that is a tie (default: {d.tie_margin})")
    g.add_argument("--skip-bad", action="store_true", default=None, help="skip invalid manifest lines, listed")
    g.add_argument("--num-workers", type=int, help=f"DataLoader processes decoding media (default: {d.num_workers})")
    g.add_argument("--kfold", type=int, help="k-fold cross-validation by source image: RUN_DIR/fold-<i>/, kfold.json")
    g.add_argument("--fold", type=int, help="with --kfold: run only this fold (0-based)")
    g = p.add_argument_group("model")
    g.add_argument("--model-type", choices=["icreward", "mlp"], help=f"(default: {d.model_type})")
    g.add_argument("--backbone", help=f"backbone registry name, e.g. hf:facebook/dinov2-small (default: {d.backbone})")
    g.add_argument("--backbone-kwargs", type=_json_object, help="JSON object of backbone factory arguments")
    g.add_argument(
        "--backbone-policy", help=f"frozen | last-<k> | lora | lora-r<rank> | full (default: {d.backbone_policy})"
    )
    g.add_argument("--model-kwargs", dest="model", type=_json_object, help='JSON model config fields: {"d_model": 64}')
    g.add_argument("--num-frames", type=int, help=f"frames sampled per video (default: {d.num_frames})")
    g = p.add_argument_group("objective")
    g.add_argument("--loss", choices=LOSSES, help=f"(default: {d.loss})")
    g.add_argument("--theta", type=float, help=f"tie parameter of the BTT loss (default: {d.theta})")
    g.add_argument(
        "--contrastive-weight",
        type=float,
        help="in-batch contrastive term added to the loss (default: 0; 1 alone for --loss contrastive)",
    )
    g.add_argument("--contrastive-temperature", type=float, help=f"(default: {d.contrastive_temperature})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help=f"(default: {d.epochs})")
    g.add_argument("--batch-size", type=int, help=f"pairs per process and step (default: {d.batch_size})")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default: {d.lr})")
    g.add_argument(
        "--backbone-lr", type=float, help="peak learning rate of trainable backbone parameters (default: --lr)"
    )
    g.add_argument(
        "--weight-decay", type=float, help=f"AdamW decay, not on biases/norms/embeddings (default: {d.weight_decay})"
    )
    g.add_argument(
        "--warmup-ratio", type=float, help=f"linear warm-up fraction, then cosine decay (default: {d.warmup_ratio})"
    )
    g.add_argument("--grad-clip", type=float, help=f"max gradient norm, 0 for none (default: {d.grad_clip})")
    g.add_argument("--seed", type=int, help=f"(default: {d.seed})")
    g.add_argument(
        "--patience", type=int, help="early stopping: epochs without a better val pair accuracy (default: off)"
    )
    g = p.add_argument_group("hardware and run control")
    g.add_argument(
        "--precision", choices=PRECISIONS, help=f"auto = bf16 where the hardware has it (default: {d.precision})"
    )
    g.add_argument("--cpu", action="store_true", default=None, help="train on the CPU even where a GPU is available")
    g.add_argument(
        "--cache-dir", help="feature cache folder (default: $ICREWARD_CACHE/features or ~/.cache/icreward/features)"
    )
    g.add_argument(
        "--no-cache", dest="cache", action="store_false", default=None, help="no feature cache (frozen backbone)"
    )
    g.add_argument("--cache-dtype", choices=CACHE_DTYPES, help=f"stored token precision (default: {d.cache_dtype})")
    g.add_argument("--resume", action="store_true", default=None, help="continue the interrupted run in --out")
    g.add_argument("--overwrite", action="store_true", default=None, help="replace an earlier run's files in --out")
    g.add_argument("--save-every", type=int, help="also save the resume state every N steps (default: each epoch)")
    g.add_argument(
        "--log-every", type=int, help=f"metrics.csv step row every N steps, 0 = epochs only (default: {d.log_every})"
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    g.add_argument(
        "--no-tensorboard", dest="tensorboard", action="store_false", default=None, help="no TensorBoard events"
    )
    p.set_defaults(func=_run_train)


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _run_synth(args: argparse.Namespace) -> int:
    from icreward.synth.dataset import run_cli

    return run_cli(args)


def _run_score(args: argparse.Namespace) -> int:
    from icreward.scoring import run_cli

    return run_cli(args)


def _run_eval(args: argparse.Namespace) -> int:
    from icreward.evaluation.run import run_cli

    return run_cli(args)


def _run_train(args: argparse.Namespace) -> int:
    from icreward.training.cli import run_cli

    return run_cli(args)


def _add_experiment(sub: argparse._SubParsersAction) -> None:
    from icreward.training.experiment import ExperimentConfig

    d = ExperimentConfig()
    p = sub.add_parser(
        "experiment",
        help="the study: MLP baseline and IC-Reward over folds and seeds against every offline metric",
    )
    p.add_argument("--data", help="folder with train/test(/val).jsonl, or a training manifest (default: icbench-synth)")
    p.add_argument("--test", help="test manifest when --data is a manifest")
    p.add_argument("--val", help="validation manifest (tie thresholds); default: DATA/val.jsonl when present")
    p.add_argument("--out", default=d.out, help=f"report folder (default: {d.out})")
    p.add_argument(
        "--holdout-modes",
        default=",".join(d.holdout_modes),
        help=f"embedded benchmark: failure modes kept out of training (default: {','.join(d.holdout_modes)})",
    )
    p.add_argument("--folds", type=int, default=d.folds, help=f"k of the k-fold cross-validation (default: {d.folds})")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds), help="one k-fold run per seed")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs per fold model (default: {d.epochs})")
    p.add_argument("--num-frames", type=int, default=d.num_frames, help="frames per video for the learned models")
    p.add_argument("--backbone", default=d.backbone, help=f"backbone of the learned models (default: {d.backbone})")
    p.add_argument("--backbone-policy", default=d.backbone_policy, help="frozen | last-<k> | lora | full")
    p.add_argument("--models", default=",".join(d.models), help="learned model types (default: mlp,icreward)")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap, help="bootstrap resamples for 95%% intervals")
    p.set_defaults(func=_run_experiment)


def _run_experiment(args: argparse.Namespace) -> int:
    from icreward.training.experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig(
        data=args.data,
        test=args.test,
        val=args.val,
        out=args.out,
        holdout_modes=tuple(m for m in args.holdout_modes.split(",") if m),
        folds=args.folds,
        seeds=tuple(args.seeds),
        epochs=args.epochs,
        num_frames=args.num_frames,
        backbone=args.backbone,
        backbone_policy=args.backbone_policy,
        models=tuple(m for m in args.models.split(",") if m),
        bootstrap=args.bootstrap,
    )
    run_experiment(config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from icreward import __version__

    parser = argparse.ArgumentParser(prog="icreward", description="Image-to-video consistency rewards.")
    parser.add_argument("--version", action="version", version=f"icreward {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_score, _add_eval, _add_synth, _add_train, _add_experiment, _add_rank, _add_serve):
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
