"""Run records: metrics.csv, TensorBoard events, the one-line epoch summary, and where the code came from."""

from __future__ import annotations

import csv
import math
import subprocess
from pathlib import Path
from typing import Any

from icreward.atomic import atomic_write

METRICS_NAME = "metrics.csv"
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


def finite_or_none(value) -> float | None:
    return float(value) if isinstance(value, float | int) and math.isfinite(value) else None


def json_safe(value):
    """`value` with NaN and infinities as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value
