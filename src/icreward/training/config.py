"""The trainer's configuration: one typed dataclass; a YAML/JSON file over its defaults; command-line flags over that.

Light to import (no torch), so `icreward train --help` stays instant.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icreward.errors import IcrewardError

LOSSES = ("mse", "bt", "btt", "contrastive")
PRECISIONS = ("auto", "bf16", "fp32")
CACHE_DTYPES = ("float32", "float16", "bfloat16")

# Fields that may differ between an interrupted run and its `--resume` without changing what it computes.
RESUME_FREE_FIELDS = frozenset(
    {"data", "val", "out", "resume", "overwrite", "progress", "num_workers", "cache", "cache_dir", "log_every"}
    | {"tensorboard", "save_every"}
)


@dataclass
class TrainConfig:
    # ---- data
    data: str | None = None  # training manifest (pair records; pointwise records for --loss mse)
    val: str | None = None  # validation manifest: early stopping, score normalisation and the tie threshold
    out: str | None = None  # run folder: a checkpoint, plus train_config.json, metrics.csv, events, last/
    tie_margin: float = 0.0  # |score_a - score_b| at or below which a label derived from scores is a tie
    skip_bad: bool = False  # skip invalid manifest lines (they are listed) instead of stopping at the first
    num_workers: int = 0  # DataLoader processes decoding media (0: in the training process)
    # ---- model
    model_type: str = "icreward"  # icreward | mlp
    backbone: str = "tiny-vit"  # backbone registry name, e.g. hf:facebook/dinov2-small
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the backbone factory
    backbone_policy: str = "frozen"  # frozen | last-<k> | lora | lora-r<rank> | full
    model: dict[str, Any] = field(default_factory=dict)  # further model config fields, e.g. {"d_model": 64}
    num_frames: int = 16  # frames sampled per video (stored in the checkpoint)
    # ---- objective
    loss: str = "btt"  # mse | bt | btt | contrastive
    theta: float = 5.0  # Rao-Kupper tie parameter of the BTT loss (> 1)
    contrastive_weight: float | None = None  # weight of the in-batch contrastive term (None: 1 alone for
    #                                           --loss contrastive, else 0); added to bt/btt/mse when > 0
    contrastive_temperature: float = 1.0  # softmax temperature of the contrastive term
    standardize_targets: bool = True  # mse: regress z-scored human scores (training mean/std) instead of raw ones
    # ---- optimisation
    epochs: int = 10
    batch_size: int = 8  # pairs per process and step
    lr: float = 3e-4  # peak learning rate of the head (and of the backbone unless backbone_lr is set)
    backbone_lr: float | None = None  # peak learning rate of trainable backbone parameters (None: lr)
    weight_decay: float = 0.05  # AdamW decay; never applied to biases, norms, embeddings or learned queries
    warmup_ratio: float = 0.1  # fraction of all steps with a linear warm-up, then cosine decay to 0
    grad_clip: float | None = 1.0  # max global gradient norm (None or 0: no clipping)
    seed: int = 0  # model init, data order (a function of seed and epoch), dropout
    patience: int | None = None  # stop after this many epochs without a better val pair accuracy (None: never)
    # ---- hardware and run control
    precision: str = "auto"  # bf16 | fp32 | auto (bf16 where the hardware does it natively)
    cpu: bool = False  # train on the CPU even where a GPU is available
    cache: bool = True  # cache backbone tokens on disk when the backbone is frozen
    cache_dir: str | None = None  # feature cache folder (None: $ICREWARD_CACHE/features or ~/.cache/icreward/features)
    cache_dtype: str = "float32"  # stored token precision; float16 halves the disk but is not bit-exact
    kfold: int | None = None  # k-fold cross-validation split by source image (needs no --val)
    fold: int | None = None  # run only this fold (0-based) of --kfold; None runs all folds and aggregates
    resume: bool = False  # continue the interrupted run in `out` from out/last/
    overwrite: bool = False  # replace the run files of an earlier run in `out`
    save_every: int = 0  # also save the resume state every N optimizer steps (0: at each epoch's end only)
    log_every: int = 10  # write a step row to metrics.csv every N optimizer steps (0: epoch rows only)
    progress: bool = True  # tqdm progress bars (main process only)
    tensorboard: bool = True  # TensorBoard event files in `out`, when tensorboard is installed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a dict of field values; unknown keys raise `IcrewardError` naming them and the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise IcrewardError(
                f"{source}: unknown training option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(names))}"
            )
        return cls(**d).validated()

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes).validated()

    @property
    def contrastive_term(self) -> float:
        """The weight the contrastive term actually gets."""
        if self.contrastive_weight is not None:
            return self.contrastive_weight
        return 1.0 if self.loss == "contrastive" else 0.0

    def validated(self) -> TrainConfig:
        """Check every field's type and range; raises `IcrewardError` saying which option is wrong and why."""

        def bad(name: str, why: str) -> IcrewardError:
            return IcrewardError(f"invalid training option {name}={getattr(self, name)!r}: {why}")

        choices = {"loss": LOSSES, "precision": PRECISIONS, "cache_dtype": CACHE_DTYPES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise bad(name, f"choose one of {', '.join(allowed)}")
        for name in ("epochs", "batch_size", "num_frames"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "must be an integer >= 1")
        for name in ("num_workers", "save_every", "log_every", "seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "must be an integer >= 0")
        for name in ("patience", "kfold"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise bad(name, "must be an integer >= 1, or unset")
        for name in ("lr", "weight_decay", "warmup_ratio", "tie_margin", "contrastive_temperature"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "must be a number >= 0")
        for name in ("backbone_lr", "grad_clip", "contrastive_weight"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or value < 0):
                raise bad(name, "must be a number >= 0, or unset")
        if not self.lr > 0 or not self.contrastive_temperature > 0:
            raise bad("lr" if not self.lr > 0 else "contrastive_temperature", "must be > 0")
        if self.warmup_ratio > 1:
            raise bad("warmup_ratio", "must be in [0, 1]")
        if not _is_number(self.theta) or self.theta <= 1:
            raise bad("theta", "must be > 1 (theta = 1 means ties never happen)")
        if self.loss == "contrastive" and self.contrastive_term <= 0:
            raise bad("contrastive_weight", "--loss contrastive needs a positive weight")
        from icreward.models.backbone_policy import parse_backbone_policy

        try:
            parse_backbone_policy(self.backbone_policy)
        except ValueError as e:
            raise bad("backbone_policy", str(e)) from None
        for name in ("backbone_kwargs", "model"):
            if not isinstance(getattr(self, name), dict):
                raise bad(name, "must be a mapping of field names to values")
        if self.fold is not None:
            if self.kfold is None:
                raise bad("fold", "needs --kfold")
            if not _is_int(self.fold) or not 0 <= self.fold < self.kfold:
                raise bad("fold", f"must be in 0..{self.kfold - 1}")
        if self.kfold is not None and self.kfold < 2:
            raise bad("kfold", "needs at least 2 folds")
        if self.kfold is not None and self.val is not None:
            raise bad("val", "k-fold cross-validation takes its validation folds from --data; drop --val")
        return self


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The field values in a YAML (`.yaml`/`.yml`) or JSON file: one mapping of TrainConfig field -> value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise IcrewardError(f"{path}: cannot read the config file ({e.strerror})") from e
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError: report either the same way
        raise IcrewardError(f"{path}: not valid {'YAML' if path.suffix.lower() != '.json' else 'JSON'}: {e}") from e
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise IcrewardError(f"{path}: a config file must hold one mapping of option -> value")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def resolve_config(file_values: dict[str, Any] | None, flags: dict[str, Any], source: str = "config") -> TrainConfig:
    """Defaults, then the config file's values, then the flags given on the command line (None = not given)."""
    values = dict(file_values or {})
    values.update({k: v for k, v in flags.items() if v is not None})
    return TrainConfig.from_dict(values, source)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
