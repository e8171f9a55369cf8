"""`icreward experiment`: the study (the recipe `icreward_recipes.study`) from the command line."""

from __future__ import annotations

import argparse


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
    return p


def run(args: argparse.Namespace) -> int:
    from icreward_recipes.study import ExperimentConfig, run_experiment

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
