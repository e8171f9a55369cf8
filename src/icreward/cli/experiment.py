"""`icreward experiment`: the study (the recipe `icreward_recipes.study`) from the command line."""

from __future__ import annotations

import argparse

from icreward.cli.common import (
    MAX_BOOTSTRAP,
    MAX_FRAMES,
    MIN_FRAMES,
    add_quiet_option,
    int_range,
    positive_int,
    seed_value,
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from icreward_recipes.study import ExperimentConfig

    d = ExperimentConfig()
    p = sub.add_parser(
        "experiment",
        help="the study: MLP baseline and IC-Reward over folds and seeds against every offline metric",
    )
    p.add_argument("--data", help="folder with train/test(/val).jsonl, or a training manifest (default: icbench-synth)")
    p.add_argument("--test", help="test manifest when --data is a manifest")
    p.add_argument("--val", help="validation manifest (tie thresholds); default: DATA/val.jsonl when present")
    p.add_argument(
        "--out",
        default=d.out,
        help=f"report folder (default: {d.out}); its report files and runs/ are replaced, other files kept; "
        "never inside, equal to or holding the --data folder",
    )
    p.add_argument(
        "--holdout-modes",
        default=",".join(d.holdout_modes),
        help=f"embedded benchmark: failure modes kept out of training (default: {','.join(d.holdout_modes)})",
    )
    p.add_argument(
        "--folds",
        type=int_range(2),
        default=d.folds,
        help=f"k of the k-fold cross-validation, >= 2 (default: {d.folds})",
    )
    p.add_argument("--seeds", type=seed_value, nargs="+", default=list(d.seeds), help="one k-fold run per seed")
    p.add_argument(
        "--epochs", type=positive_int, default=d.epochs, help=f"epochs per fold model, >= 1 (default: {d.epochs})"
    )
    p.add_argument(
        "--num-frames",
        type=int_range(MIN_FRAMES, MAX_FRAMES),
        default=d.num_frames,
        help=f"frames per video for the learned models, {MIN_FRAMES}..{MAX_FRAMES} (default: {d.num_frames})",
    )
    p.add_argument("--backbone", default=d.backbone, help=f"backbone of the learned models (default: {d.backbone})")
    p.add_argument("--backbone-policy", default=d.backbone_policy, help="frozen | last-<k> | lora | full")
    p.add_argument("--models", default=",".join(d.models), help="learned model types (default: mlp,icreward)")
    p.add_argument(
        "--bootstrap",
        type=int_range(1, MAX_BOOTSTRAP),
        default=d.bootstrap,
        help=f"bootstrap resamples for the 95%% intervals, 1..{MAX_BOOTSTRAP} (default: {d.bootstrap})",
    )
    add_quiet_option(p)
    return p


def check_paths(args: argparse.Namespace) -> None:
    """Inputs readable and the report folder usable (never an input folder), before any training."""
    from icreward.atomic import check_output_dir
    from icreward.cli.common import check_inputs

    check_inputs(data=args.data, test=args.test, val=args.val)
    inputs = {"--data": args.data, "--test": args.test, "--val": args.val}
    check_output_dir(args.out, flag="--out", inputs=inputs, overwrite=True)


def run(args: argparse.Namespace) -> int:
    from icreward_recipes.study import ExperimentConfig, run_experiment

    check_paths(args)
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
    run_experiment(config, progress=not args.quiet)
    return 0
