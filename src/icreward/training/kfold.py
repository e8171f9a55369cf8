"""k-fold cross-validation split by source image, for small data sets (the study's 300 samples).

Every pair made from one source image lands in the same fold, so a model is never validated on an image it was
trained on. Folds are balanced by record count.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from icreward.atomic import atomic_write
from icreward.errors import IcrewardError
from icreward.manifest import Manifest, load_manifest
from icreward.rules import source_image
from icreward.training.config import TrainConfig
from icreward.training.rundir import STATE_DIR
from icreward.training.trainer import TrainResult, train

KFOLD_NAME = "kfold.json"
AGGREGATED = ("best_val_accuracy", "val_accuracy_ties", "tie_threshold", "best_epoch", "epochs_run")


def kfold_split(manifest: Manifest, k: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """`k` (train indices, validation indices) splits of the manifest's records, grouped by source image.

    Source groups are shuffled by `seed`, then, largest first, each goes to the fold holding the fewest records.
    """
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(manifest.records):
        groups.setdefault(source_image(record), []).append(i)
    if len(groups) < k:
        raise IcrewardError(f"{manifest.path}: {len(groups)} source images cannot make {k} folds")
    names = sorted(groups)
    shuffled = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    shuffled.sort(key=lambda name: -len(groups[name]))  # stable: equal sizes keep the shuffled order
    folds: list[list[int]] = [[] for _ in range(k)]
    for name in shuffled:
        min(folds, key=len).extend(groups[name])
    everything = range(len(manifest.records))
    return [(sorted(set(everything) - set(fold)), sorted(fold)) for fold in folds]


def subset(manifest: Manifest, indices: list[int], keep_skipped: bool = False) -> Manifest:
    return dataclasses.replace(
        manifest, records=[manifest.records[i] for i in indices], skipped=manifest.skipped if keep_skipped else []
    )


def train_kfold(
    config: TrainConfig, manifest: Manifest | str | Path | None = None, k: int | None = None
) -> list[TrainResult]:
    """Train on each fold (or only `config.fold`) into `config.out/fold-<i>/`; returns the results in fold order.

    With `config.resume`, folds with a resume state continue, finished ones are only re-finalised, the rest start.

    Running every fold also writes `config.out/kfold.json`: the per-fold results and their mean and std.
    """
    k = k or config.kfold
    if not k:
        raise IcrewardError("k-fold cross-validation needs k >= 2 (--kfold)")
    if manifest is None:
        manifest = config.data
    if not isinstance(manifest, Manifest):
        if manifest is None:
            raise IcrewardError("no training data: give --data (or a manifest to train_kfold())")
        manifest = load_manifest(manifest, skip_bad=config.skip_bad, tie_margin=config.tie_margin, require_labels=True)
    if config.out is None:
        raise IcrewardError("no run folder: give --out (config.out)")
    splits = kfold_split(manifest, k, config.seed)
    folds = range(k) if config.fold is None else [config.fold]
    results = []
    for i in folds:
        train_idx, val_idx = splits[i]
        out = Path(config.out) / f"fold-{i}"
        resume = config.resume and (out / STATE_DIR / "state.json").is_file()  # folds not begun start afresh
        fold_config = config.replace(out=str(out), kfold=k, fold=i, val=None, resume=resume)
        results.append(train(fold_config, subset(manifest, train_idx, keep_skipped=True), subset(manifest, val_idx)))
    if config.fold is None and _is_main_process():
        summary = {
            "k": k,
            "seed": config.seed,
            "aggregate": aggregate_folds(results),
            "folds": [_row(r) for r in results],
        }
        with atomic_write(Path(config.out) / KFOLD_NAME) as f:
            f.write(json.dumps(summary, indent=2) + "\n")
    return results


def aggregate_folds(results: list[TrainResult]) -> dict[str, dict[str, Any]]:
    """`{metric: {"mean", "std", "values"}}` over the folds (std with ddof=1; 0 for one fold; NaN-free values only)."""
    out = {}
    for name in AGGREGATED:
        values = [float(v) for r in results if (v := getattr(r, name)) is not None and math.isfinite(v)]
        if values:
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out[name] = {"mean": float(np.mean(values)), "std": std, "values": values}
    return out


def format_aggregate(aggregate: dict[str, dict[str, Any]]) -> str:
    """`best_val_accuracy 0.812 ± 0.034 (5 folds)`, one metric per line."""
    return "\n".join(
        f"{name} {a['mean']:.4g} ± {a['std']:.2g} ({len(a['values'])} folds)" for name, a in aggregate.items()
    )


def _row(result: TrainResult) -> dict[str, Any]:
    return {"out_dir": str(result.out_dir), **{name: getattr(result, name) for name in AGGREGATED}}


def _is_main_process() -> bool:
    from accelerate.state import PartialState

    return PartialState().is_main_process
