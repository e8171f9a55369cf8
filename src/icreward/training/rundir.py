"""The run folder: everything a run reads and writes there besides the model code.

- Before training: refuse to clobber an earlier run (or clear it with `overwrite`), check a `--resume` matches the
  interrupted run, and write `train_config.json` (the full resolved config, git revision, data hashes, versions).
  A run stopped before its first save leaves only files that hold nothing to resume (`train_config.json`,
  `metrics.csv`, TensorBoard events): a new run in that folder, with or without `--resume`, starts from step 0 and
  replaces them.
- The resume state `RUN_DIR/last/` (one atomic folder, replaced whole at each save): `model.safetensors` (the model
  now), `best.safetensors` (the trainable weights of the best epoch so far), `optimizer.pt`, `scheduler.pt`, `rng.pt`
  (python, numpy, torch and CUDA generator states) and `state.json` (epoch, step, best metric, history, ...).
- The checkpoint: `model.safetensors` and `config.json` published into the folder at the end, with the training
  provenance (hashes, git revision, hyper-parameters; no paths) in `config.json`'s "training" entry.
- The log: `metrics.csv`, TensorBoard events, and the console's run header and one-line epoch summaries.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from icreward.atomic import atomic_dir, atomic_write
from icreward.errors import IcrewardError
from icreward.manifest import Manifest
from icreward.models.base import CONFIG_NAME, WEIGHTS_NAME
from icreward.training.config import RESUME_FREE_FIELDS, TrainConfig
from icreward.training.data import FileDigests, data_hash

TRAIN_CONFIG_NAME = "train_config.json"
METRICS_NAME = "metrics.csv"
STATE_DIR = "last"
RUN_FILES = (CONFIG_NAME, WEIGHTS_NAME, TRAIN_CONFIG_NAME, METRICS_NAME, STATE_DIR)
UNSAVED_RUN_FILES = (TRAIN_CONFIG_NAME, METRICS_NAME)  # written before the first save: nothing to resume from
STATE_NAME = "state.json"  # in STATE_DIR, written with the rest of the resume state: its presence means one was saved


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
    log=None,
) -> dict[str, Any]:
    """Check and set up `run_dir` (main process writes); returns the provenance stored in the checkpoint too.

    With `config.resume` and a saved resume state, the run must match it (`check_resumable`); with `config.resume`
    but nothing saved yet, the run starts from step 0 (`has_resume_state` then says False on every process).
    """
    import accelerate

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
        if config.resume and has_resume_state(run_dir):
            check_resumable(run_dir, config, provenance)
        else:
            note = clear_run_files(run_dir, config.overwrite, resume=config.resume)
            if note and log is not None:
                log(note)
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


def has_resume_state(run_dir: Path) -> bool:
    """Whether `run_dir` holds a saved resume state (`last/state.json`)."""
    return (run_dir / STATE_DIR / STATE_NAME).is_file()


def clear_run_files(run_dir: Path, overwrite: bool, resume: bool = False) -> str | None:
    """Make way for a new run in `run_dir`, removing run files only (other files in the folder are kept).

    - nothing of a run there: nothing to do;
    - only the files of a run stopped before its first save (nothing to resume): they are removed;
    - an earlier run with a resume state or a checkpoint: refused, unless `overwrite` (its run files are removed).
    Returns a line to show when files were removed, else None. `resume` (asked for, but nothing was saved) only
    words the refusal and the line.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise IcrewardError(f"--out {run_dir}: is a file, not a folder")
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    events = list(run_dir.glob("events.out.tfevents.*")) if run_dir.is_dir() else []
    if not present and not events:
        return "nothing to resume (no run in the folder yet): starting from step 0" if resume else None
    unsaved = set(present) <= set(UNSAVED_RUN_FILES)
    if not overwrite and not unsaved:
        if resume:
            raise IcrewardError(
                f"{run_dir}: nothing to resume (no {STATE_DIR}/{STATE_NAME}) but it holds an earlier run's "
                f"{', '.join(present)}; replace them with --overwrite (without --resume), or use another --out"
            )
        raise IcrewardError(
            f"{run_dir} already holds a run ({', '.join(present or ['TensorBoard events'])}); "
            "continue it with --resume or replace it with --overwrite"
        )
    for name in present:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in events:
        path.unlink()
    if overwrite and not unsaved:
        return f"--overwrite: removed the earlier run's files in {run_dir} ({', '.join(present)})"
    why = "the earlier run there stopped before its first save"
    return f"nothing to resume ({why}): starting from step 0" if resume else f"starting afresh in {run_dir} ({why})"


def check_resumable(run_dir: Path, config: TrainConfig, provenance: dict[str, Any]) -> None:
    """The interrupted run must have had the same config (up to fields that do not change results) and data."""
    path = run_dir / TRAIN_CONFIG_NAME
    if not has_resume_state(run_dir) or not path.is_file():
        missing = f"{STATE_DIR}/{STATE_NAME}" if not has_resume_state(run_dir) else TRAIN_CONFIG_NAME
        raise IcrewardError(f"{run_dir}: cannot resume without {missing}; start over with --overwrite")
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


def git_revision(path: Path | None = None) -> tuple[str, bool | None]:
    """(commit SHA, whether tracked files differ from it) of the git checkout holding the icreward code, or
    ("unknown", None) outside git (an installed wheel)."""
    import icreward

    where = str(path or Path(icreward.__file__).resolve().parent)
    try:
        sha = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return sha or "unknown", bool(status.strip())


# ---- resume state


def fresh_state() -> dict[str, Any]:
    """The progress of a run that has not started (`state.json`): position, best epoch so far, metrics history,
    and the per-pair records of the epoch and of the step window in progress."""
    return {
        "epoch": 0,  # epochs finished
        "step_in_epoch": 0,  # batches of the current epoch done
        "global_step": 0,
        "best_metric": None,
        "best_val_loss": None,
        "best_epoch": 0,
        "bad_epochs": 0,  # epochs since the best one (early stopping)
        "stopped_early": False,
        "finished": False,
        "history": [],
        "epoch_acc": new_window(),
        "window_acc": new_window(),
    }


def new_window() -> dict[str, list]:
    return {"index": [], "rewards": [], "loss": [], "grad_norm": []}


def rng_state() -> dict[str, Any]:
    """The global generators' states (the same on every process: all are seeded alike)."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": np_state["state"]["pos"]}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.array(np_state["state"]["key"], dtype=np.uint32), "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of what training changes: the parameters that require gradients, and all buffers."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable | buffers}


def save_resume_state(
    run_dir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: dict[str, Any],
    best: dict[str, torch.Tensor] | None,
) -> None:
    """Write `run_dir/last/` atomically: a crash leaves the previous state whole."""
    with atomic_dir(run_dir / STATE_DIR, marker=(STATE_NAME,), overwrite=True, what="resume state") as tmp:
        _save_tensors(model.state_dict(), tmp / "model.safetensors")
        if best is not None:
            _save_tensors(best, tmp / "best.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / STATE_NAME).write_text(json.dumps(state, indent=1, allow_nan=True) + "\n")


def read_resume_state(run_dir: Path) -> dict[str, Any]:
    """`state.json` of `run_dir/last/`; raises `IcrewardError` when there is nothing to resume."""
    path = run_dir / STATE_DIR / STATE_NAME
    if not path.is_file():
        raise IcrewardError(f"{run_dir}: nothing to resume (no {STATE_DIR}/{STATE_NAME})")
    return json.loads(path.read_text())


def load_resume_state(
    run_dir: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler
) -> dict[str, torch.Tensor] | None:
    """Restore model, optimizer, scheduler and generators from `run_dir/last/`; returns the best weights, if any."""
    folder = run_dir / STATE_DIR
    model.load_state_dict(safetensors.torch.load_file(str(folder / "model.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(folder / "rng.pt", weights_only=True))
    best = folder / "best.safetensors"
    return safetensors.torch.load_file(str(best)) if best.is_file() else None


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    safetensors.torch.save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(path))


# ---- the checkpoint

# Config fields that shaped the weights: the checkpoint's "training" entry records them (no paths, no run control).
HYPERPARAMETERS = (
    *("model_type", "backbone", "backbone_kwargs", "backbone_policy", "model", "num_frames"),
    *("loss", "theta", "contrastive_weight", "contrastive_temperature", "standardize_targets", "tie_margin"),
    *("epochs", "batch_size", "lr", "backbone_lr", "weight_decay", "warmup_ratio", "grad_clip", "patience"),
    "cache_dtype",
)


def hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The training options that shaped the weights (seed and precision are recorded beside them)."""
    values = config.to_dict()
    return {name: values[name] for name in HYPERPARAMETERS}


def publish_checkpoint(model, run_dir: Path, training: dict[str, Any]) -> None:
    """Put the model's checkpoint files into `run_dir` (which holds other run files too) without a loadable mix.

    `save_pretrained` writes a whole folder; its two files are then moved in, `config.json` removed first and put
    back last, so a crash in between leaves a folder without `config.json`, which does not load.
    """
    staging = run_dir / ".checkpoint-new"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, training=training)
    (run_dir / CONFIG_NAME).unlink(missing_ok=True)
    os.replace(staging / WEIGHTS_NAME, run_dir / WEIGHTS_NAME)
    os.replace(staging / CONFIG_NAME, run_dir / CONFIG_NAME)
    shutil.rmtree(staging, ignore_errors=True)


# ---- the log

COLUMNS = (
    "kind",  # "step" (a window of steps) or "epoch"
    "epoch",  # 1-based
    "step",  # optimizer steps so far
    "lr",
    "loss",  # mean training loss over the window / epoch
    "train_pair_accuracy",  # on the pairs humans did not tie, with the rewards each batch had when it was trained on
    "train_margin",  # mean |r_A - r_B| (raw rewards)
    "train_reward_mean",
    "train_reward_std",
    "grad_norm",  # mean global gradient norm before clipping
    "val_loss",
    "val_pair_accuracy",
    "val_pair_accuracy_ties",  # with the tie threshold that is best on the validation pairs themselves
    "val_tie_threshold",  # that threshold, in raw reward units
    "val_margin",
    "val_reward_mean",
    "val_reward_std",
    "val_spearman",  # pointwise validation data: rank correlation with the human scores
    "seconds",  # wall time of the epoch / window
)


class MetricsLog:
    """Appends rows to `metrics.csv` and TensorBoard; `history` holds every row (it is saved for `--resume`)."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, history: list[dict], purge_step: int):
        self.path = run_dir / METRICS_NAME
        self.enabled = enabled
        self.history = history
        self.writer = None
        if not enabled:
            return
        with atomic_write(self.path) as f:  # the rows up to the resumed state; later ones are written again
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(_csv_row(r) for r in history)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                return
            self.writer = SummaryWriter(str(run_dir), purge_step=purge_step or None)

    def add(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(_csv_row(row))
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("kind", "epoch", "step") and isinstance(value, float) and math.isfinite(value):
                    self.writer.add_scalar(f"{row['kind']}/{key}", value, row["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: "" if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items() if k in COLUMNS}


def run_header(config, counts: dict[str, int], n: int, pairs: bool, accelerator) -> str:
    """`training icreward (tiny-vit, frozen; 37,120 of 117,696 parameters trainable) with btt on 12 pairs, ...`."""
    return (
        f"training {config.model_type} ({config.backbone}, {config.backbone_policy}; {counts['trainable']:,} of "
        f"{counts['total']:,} parameters trainable) with {config.loss} on {n} {'pairs' if pairs else 'items'}, "
        f"{accelerator.num_processes} process(es) on {accelerator.device.type}, "
        f"{'bf16' if accelerator.mixed_precision == 'bf16' else 'fp32'}"
    )


def epoch_summary(row: dict[str, Any], epochs: int, best: bool) -> str:
    """One line per epoch: `epoch 3/10  loss 0.512  acc 0.781  val acc 0.812 (ties 0.700)  margin 1.24 ...`."""

    def num(key: str, fmt: str = ".3f") -> str:
        value = row.get(key, math.nan)
        return "-" if not isinstance(value, float) or not math.isfinite(value) else format(value, fmt)

    parts = [
        f"epoch {row['epoch']}/{epochs}",
        f"loss {num('loss', '.4f')}",
        f"acc {num('train_pair_accuracy')}",
        f"margin {num('train_margin')}",
        f"reward {num('train_reward_mean', '+.2f')}±{num('train_reward_std', '.2f')}",
    ]
    if isinstance(row.get("val_loss"), float):
        parts.append(f"val acc {num('val_pair_accuracy')} (ties {num('val_pair_accuracy_ties')})")
        parts.append(f"val margin {num('val_margin')}")
        if math.isfinite(row.get("val_spearman", math.nan)):
            parts.append(f"val spearman {num('val_spearman')}")
    parts += [f"lr {num('lr', '.2e')}", f"{num('seconds', '.1f')} s"]
    return "  ".join(parts) + ("  *best" if best else "")


def log_main(accelerator, progress: bool = True):
    """A print function that writes from the main process only (around tqdm bars)."""

    def log(message: str) -> None:
        if accelerator.is_main_process and message:
            if progress:
                from tqdm.auto import tqdm

                tqdm.write(message, file=sys.stdout)
            else:
                print(message, flush=True)

    return log


def finite_or_none(value) -> float | None:
    return float(value) if isinstance(value, float | int) and math.isfinite(value) else None


def json_safe(value):
    """`value` with NaN and infinities as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value
