"""The run folder before training: refuse to clobber an earlier run, check a resume matches it, and write
`train_config.json` (the resolved config, git SHA, data hashes, versions)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from icreward.atomic import atomic_write
from icreward.errors import IcrewardError
from icreward.manifest import Manifest
from icreward.models.base import CONFIG_NAME, WEIGHTS_NAME
from icreward.training.config import RESUME_FREE_FIELDS, TrainConfig
from icreward.training.data import FileDigests, data_hash
from icreward.training.logs import METRICS_NAME, git_revision
from icreward.training.state import STATE_DIR

TRAIN_CONFIG_NAME = "train_config.json"
RUN_FILES = (CONFIG_NAME, WEIGHTS_NAME, TRAIN_CONFIG_NAME, METRICS_NAME, STATE_DIR)


def prepare_run_dir(
    run_dir: Path,
    config: TrainConfig,
    accelerator,
    *,
    train: Manifest,
    val: Manifest | None,
    digests: FileDigests,
    precision: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Check and set up `run_dir` (main process writes); returns the provenance stored in the checkpoint too."""
    import accelerate
    import torch

    from icreward import __version__

    sha, dirty = git_revision()
    provenance = {
        "git_sha": sha,
        "git_dirty": dirty,
        "icreward_version": __version__,
        "data_sha256": data_hash(train, digests),
        "val_sha256": data_hash(val, digests) if val is not None else None,
        "seed": config.seed,
        "precision": precision,
        "world_size": accelerator.num_processes,
    }
    if accelerator.is_main_process:
        if config.resume:
            check_resumable(run_dir, config, provenance)
        else:
            clear_run_files(run_dir, config.overwrite)
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            **provenance,
            "config": config.to_dict(),
            "data": {name: _describe(m) for name, m in (("train", train), ("val", val))},
            "versions": {"torch": torch.__version__, "accelerate": accelerate.__version__},
            **extra,
        }
        with atomic_write(run_dir / TRAIN_CONFIG_NAME) as f:
            f.write(json.dumps(record, indent=2, default=str) + "\n")
    accelerator.wait_for_everyone()
    return provenance


def _describe(manifest: Manifest | None) -> dict[str, Any] | None:
    if manifest is None:
        return None
    return {
        "path": str(manifest.path),
        "kind": manifest.kind,
        "records": len(manifest),
        "skipped": [str(err) for err in manifest.skipped],
    }


def clear_run_files(run_dir: Path, overwrite: bool) -> None:
    """Refuse a folder holding an earlier run, or with `overwrite` remove that run's files (and only those)."""
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    events = list(run_dir.glob("events.out.tfevents.*")) if run_dir.is_dir() else []
    if not present and not events:
        return
    if not overwrite:
        raise IcrewardError(
            f"{run_dir} already holds a run ({', '.join(present or ['TensorBoard events'])}); "
            "continue it with --resume or replace it with --overwrite"
        )
    for name in present:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in events:
        path.unlink()


def check_resumable(run_dir: Path, config: TrainConfig, provenance: dict[str, Any]) -> None:
    """The interrupted run must have had the same config (up to fields that do not change results) and data."""
    path = run_dir / TRAIN_CONFIG_NAME
    if not (run_dir / STATE_DIR / "state.json").is_file() or not path.is_file():
        raise IcrewardError(f"{run_dir}: nothing to resume (no {STATE_DIR}/state.json); run without --resume")
    saved = json.loads(path.read_text())
    before, now = saved.get("config", {}), config.to_dict()
    changed = [k for k in now if k not in RESUME_FREE_FIELDS and before.get(k) != now[k]]
    for key in ("data_sha256", "val_sha256"):
        if saved.get(key) != provenance[key]:
            changed.append(f"{'training' if key == 'data_sha256' else 'validation'} data (content hash)")
    for key in ("precision", "world_size"):
        if saved.get(key) != provenance[key]:
            changed.append(f"{key} ({saved.get(key)} -> {provenance[key]})")
    if changed:
        raise IcrewardError(
            f"{run_dir}: cannot resume, the run was started with other settings: {', '.join(changed)}; "
            "resume with the same options, or start a new run"
        )
