"""`icreward train`: options from the defaults, a config file and flags; one run, one fold, or all k folds."""

from __future__ import annotations

import argparse
import dataclasses
import json

from icreward.training.config import TrainConfig, load_config_file, resolve_config


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The resolved config: defaults, then `--config`'s values, then the flags given (argparse leaves others None)."""
    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    file_values = load_config_file(args.config) if getattr(args, "config", None) else None
    return resolve_config(file_values, flags, source=args.config or "command line")


def run_cli(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    config = config_from_args(args)
    try:
        return _run(config)
    finally:
        if dist.is_available() and dist.is_initialized():  # a clean exit under torchrun needs this
            dist.destroy_process_group()


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
