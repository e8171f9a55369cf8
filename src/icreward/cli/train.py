"""`icreward train`: options from the defaults, a config file and flags; one run, one fold, or all k folds."""

from __future__ import annotations

import argparse
import dataclasses
import json

from icreward.cli.common import FRAMES_HELP, MAX_FRAMES, MIN_FRAMES, frame_count, json_object
from icreward.errors import IcrewardError
from icreward.training.config import CACHE_DTYPES, LOSSES, PRECISIONS, TrainConfig, load_config_file, resolve_config


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    g.add_argument(
        "--out",
        help="run folder (a checkpoint, with train_config.json, metrics.csv, last/); other files in it are kept",
    )
    g.add_argument("--tie-margin", type=float, help=f"|score_a - score_b| that is a tie (default: {d.tie_margin})")
    g.add_argument("--skip-bad", action="store_true", default=None, help="skip invalid manifest lines, listed")
    g.add_argument("--num-workers", type=int, help=f"DataLoader processes decoding media (default: {d.num_workers})")
    g.add_argument("--kfold", type=int, help="k-fold cross-validation by source image: RUN_DIR/fold-<i>/, kfold.json")
    g.add_argument("--fold", type=int, help="with --kfold: run only this fold (0-based)")
    g = p.add_argument_group("model")
    g.add_argument("--model-type", choices=["icreward", "mlp"], help=f"(default: {d.model_type})")
    g.add_argument("--backbone", help=f"backbone registry name, e.g. hf:facebook/dinov2-small (default: {d.backbone})")
    g.add_argument("--backbone-kwargs", type=json_object, help="JSON object of backbone factory arguments")
    g.add_argument(
        "--backbone-policy", help=f"frozen | last-<k> | lora | lora-r<rank> | full (default: {d.backbone_policy})"
    )
    g.add_argument("--model-kwargs", dest="model", type=json_object, help='JSON model config fields: {"d_model": 64}')
    g.add_argument("--num-frames", type=frame_count, help=f"{FRAMES_HELP} (default: {d.num_frames})")
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
    g.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the interrupted run in --out from its last save (with none saved yet: start from step 0)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace an earlier run's files in --out (only those: other files are kept)",
    )
    g.add_argument("--save-every", type=int, help="also save the resume state every N steps (default: each epoch)")
    g.add_argument(
        "--log-every", type=int, help=f"metrics.csv step row every N steps, 0 = epochs only (default: {d.log_every})"
    )
    g.add_argument(
        "--no-progress",
        "--quiet",
        dest="progress",
        action="store_false",
        default=None,
        help="no progress bars or progress lines (epoch summaries still print)",
    )
    g.add_argument(
        "--no-tensorboard", dest="tensorboard", action="store_false", default=None, help="no TensorBoard events"
    )
    g = p.add_argument_group(
        "task heads (motion, text, guidance) on an existing model: icreward train --heads ... --init CKPT --data "
        "TRAIN --val VAL --out DIR"
    )
    g.add_argument(
        "--heads",
        help="comma-separated task heads to train on the pairs' labels.motion / labels.text / labels.overall "
        "(motion,text,guidance); the --init model's consistency head is kept as it is",
    )
    g.add_argument("--init", help="with --heads: the model (checkpoint folder or `default`) that gets the heads")
    g.add_argument("--text-encoder", default="minilm", help="with --heads: minilm (offline default) or hf:<id>")
    g.add_argument(
        "--text-fusion", default="film", choices=["film", "cross", "gate"], help="with --heads (default: film)"
    )
    g.add_argument("--head-epochs", type=int, default=400, help="with --heads: full-batch steps (default: 400)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The resolved config: defaults, then `--config`'s values, then the flags given (argparse leaves others None)."""
    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    file_values = load_config_file(args.config) if getattr(args, "config", None) else None
    return resolve_config(file_values, flags, source=args.config or "command line")


def check_model_kwargs(model_type: str, fields: dict) -> None:
    """Each `--model-kwargs` field is one the model's config has, with a value of its type: a one-line error naming
    the field, before a model is built (a wrong type would otherwise fail deep inside torch)."""
    import typing

    from icreward.models import MODEL_TYPES

    if model_type not in MODEL_TYPES:
        return  # TrainConfig / build_model name the unknown type
    config_class = MODEL_TYPES[model_type].config_class
    hints = typing.get_type_hints(config_class)
    for name, value in fields.items():
        if name not in hints:
            known = ", ".join(sorted(hints))
            raise IcrewardError(f"--model-kwargs: {model_type} has no field {name!r}; its fields: {known}")
        if not _has_type(value, hints[name]):
            raise IcrewardError(
                f"--model-kwargs: field {name!r} must be {_type_name(hints[name])}, got {json.dumps(value)}"
            )


def _has_type(value, hint) -> bool:
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (dict, list, tuple) or hint in (dict, list, tuple):
        return isinstance(value, dict if (origin or hint) is dict else list | tuple)
    return True  # Any and anything else: the model config checks it


def _type_name(hint) -> str:
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return names.get(hint, "a JSON " + ("object" if (typing.get_origin(hint) or hint) is dict else "list"))


def check_run(config: TrainConfig) -> None:
    """Inputs readable, the run folder a folder (never an input), the frame count in range: before anything loads."""
    from icreward.atomic import check_not_an_input, check_readable_input

    if not MIN_FRAMES <= config.num_frames <= MAX_FRAMES:  # also when it came from --config
        raise IcrewardError(f"num_frames {config.num_frames}: must be between {MIN_FRAMES} and {MAX_FRAMES}")

    for flag, path in (("--data", config.data), ("--val", config.val)):
        if path:
            check_readable_input(path, flag)
    if config.out:
        from pathlib import Path

        out = Path(config.out)
        check_not_an_input(out, {"--data": config.data, "--val": config.val}, "--out", folder=True)
        if out.exists() and not out.is_dir():
            raise IcrewardError(f"--out {out}: is a file, not a folder")


def run(args: argparse.Namespace) -> int:
    if args.heads is not None:
        return _run_heads(args)
    from icreward.training.trainer import close_process_group

    config = config_from_args(args)
    check_run(config)
    check_model_kwargs(config.model_type, config.model)
    finished = False
    try:
        code = _run(config)
        finished = True
        return code
    finally:
        close_process_group(finished)


def _run_heads(args: argparse.Namespace) -> int:
    """`--heads`: task heads trained on an existing model's frozen encoder pass (`icreward.training.heads`)."""
    from icreward.atomic import check_not_an_input, check_readable_input

    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    unknown = sorted(set(heads) - {"motion", "text", "guidance"})
    if unknown or not heads:
        raise IcrewardError(f"--heads: choose from motion, text, guidance (got {args.heads!r})")
    for flag in ("init", "data", "val", "out"):
        if getattr(args, flag) is None:
            raise IcrewardError(f"--heads needs --{flag}")
    for flag in ("data", "val"):
        check_readable_input(getattr(args, flag), f"--{flag}")
    from pathlib import Path

    check_not_an_input(Path(args.out), {"--data": args.data, "--val": args.val}, "--out", folder=True)
    from icreward.training.heads import HeadTrainConfig, train_heads_run

    config = HeadTrainConfig(
        heads=heads,
        text_encoder=args.text_encoder,
        text_fusion=args.text_fusion,
        epochs=args.head_epochs,
        seed=args.seed if args.seed is not None else 0,
    )
    summary = train_heads_run(args.init, args.data, args.val, args.out, config)
    print(json.dumps({"out": args.out, **summary}))
    return 0


def _run(config: TrainConfig) -> int:
    from accelerate.state import PartialState

    if config.kfold:
        from icreward.training.kfold import aggregate_folds, format_aggregate, train_kfold

        results = train_kfold(config)
        if PartialState().is_main_process:
            print(format_aggregate(aggregate_folds(results)))
        return 0
    from icreward.training.trainer import train

    result = train(config)
    if PartialState().is_main_process:
        summary = {
            "out": str(result.out_dir),
            "best_epoch": result.best_epoch,
            "best_val_pair_accuracy": result.best_val_accuracy,
            "val_pair_accuracy_ties": result.val_accuracy_ties,
            "tie_threshold": result.tie_threshold,
            "steps": result.steps,
            "stopped_early": result.stopped_early,
        }
        print(json.dumps(summary))
    return 0
