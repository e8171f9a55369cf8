"""The training loop: `train(config, train_manifest, val_manifest) -> TrainResult`, and the run's setup (accelerator,
precision, model, optimizer and schedule).

One training step passes through four files of this package:
- `trainer.py` (here): `Trainer._train_epoch` takes the next batch, runs the objective, the loss, backward, clipping
  and the optimizer and scheduler steps, and records the step's rewards and loss;
- `data.py`: the epoch's batch order (`epoch_batches`) and the batch itself (`MediaDataset` decodes pixels,
  `TokenDataset` reads cached backbone tokens);
- `step.py`: `RewardObjective` (the batch's raw rewards, and the in-batch reward matrix of the contrastive term),
  `objective_loss` (the one loss dispatch, validation uses it too) and the training / validation statistics;
- `config.py`: the options (`TrainConfig`) that decide all of the above.
The model itself (`icreward.models`, whose `param_groups` shape the optimizer) and the losses (`icreward.losses`) are
the library's; `rundir.py` holds what is written to the run folder (resume state, metrics, the checkpoint).

One process or many: `torchrun --nproc_per_node N -m icreward.cli train ...` (CPU processes talk over gloo; on GPUs
`accelerate launch --multi_gpu` works too). Every process builds the same model from the same seed and takes its
share of each batch (the order is a function of seed and epoch); metrics are gathered and the main process writes
the files. With validation data the weights of the best epoch (validation pair accuracy, then loss) are kept, and
`patience` stops training early. At the end the raw-reward mean/std and the tie threshold are measured (on the
validation data, else the training data) and stored in the checkpoint.

Test hook: with `ICREWARD_FAULT_AFTER_STEPS=N` in the environment, every process exits abruptly (`os._exit(1)`)
after N optimizer steps of its own life, to test `--resume` after a crash.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from icreward.errors import IcrewardError
from icreward.manifest import Manifest
from icreward.training.config import TrainConfig
from icreward.training.data import (
    FeatureCache,
    FileDigests,
    MediaDataset,
    TokenDataset,
    default_cache_dir,
    epoch_batches,
    examples_from_manifest,
    load_manifests,
    target_stats,
)
from icreward.training.rundir import (
    STATE_DIR,
    MetricsLog,
    epoch_summary,
    finite_or_none,
    fresh_state,
    has_resume_state,
    hyperparameters,
    json_safe,
    load_resume_state,
    log_main,
    new_window,
    prepare_run_dir,
    publish_checkpoint,
    read_resume_state,
    run_header,
    save_resume_state,
    trainable_state,
)
from icreward.training.step import RewardObjective, calibrate, objective_loss, validation_metrics, window_metrics

FAULT_ENV = "ICREWARD_FAULT_AFTER_STEPS"


@dataclass
class TrainResult:
    out_dir: Path  # the run folder, a checkpoint
    best_val_accuracy: float | None  # validation pair accuracy of the kept weights (None without validation data)
    best_epoch: int  # 1-based epoch whose weights were kept
    val_accuracy_ties: float | None  # validation accuracy with ties at the chosen tie threshold
    tie_threshold: float | None  # in normalised reward units, as stored in the checkpoint
    score_mean: float  # raw-reward normalisation stored in the checkpoint
    score_std: float
    epochs_run: int
    steps: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)  # every metrics.csv row
    cache_hits: int = 0  # distinct files whose tokens were found in the feature cache
    cache_misses: int = 0  # ... and computed

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return [row for row in self.history if row["kind"] == "epoch"]


def train(
    config: TrainConfig,
    train_manifest: Manifest | str | Path | None = None,
    val_manifest: Manifest | str | Path | None = None,
) -> TrainResult:
    """Train a reward model as `config` says and save it to `config.out`.

    Manifests may be `Manifest` objects or paths; left out, they are read from `config.data` / `config.val`.
    """
    return Trainer(config, train_manifest, val_manifest).run()


class Trainer:
    def __init__(self, config: TrainConfig, train_manifest=None, val_manifest=None):
        from accelerate.utils import set_seed

        if config.out is None:
            raise IcrewardError("no run folder: give --out (config.out)")
        self.config = config.validated()
        self.run_dir = Path(config.out)
        self.precision = resolve_precision(config.precision, config.cpu)
        self.accelerator = make_accelerator(self.precision, config.cpu)
        self.log = log_main(self.accelerator, config.progress)
        train_m, val_m = load_manifests(config, train_manifest, val_manifest, self.log)
        self.pairs = train_m.kind == "pair"
        if val_m is not None and val_m.kind != train_m.kind:
            raise IcrewardError(f"{val_m.path}: validation records must be of the training manifest's kind")
        if not self.pairs and config.contrastive_term > 0:
            raise IcrewardError(
                f"{train_m.path}: the contrastive term needs pairs (the preferred video is the positive)"
            )
        norm = target_stats(train_m) if config.loss == "mse" and config.standardize_targets else (0.0, 1.0)
        self.target_norm = norm
        self.train_examples = examples_from_manifest(train_m, config.loss, norm)
        self.val_examples = examples_from_manifest(val_m, config.loss, norm) if val_m is not None else None
        digests = FileDigests()

        set_seed(config.seed)
        self.model = build_reward_model(config).to(self.accelerator.device)
        self.cache = None
        if config.cache and self.model.config.backbone_policy == "frozen":
            self.cache = FeatureCache(
                config.cache_dir or default_cache_dir(),
                self.model,
                precision=self.precision,
                device_type=self.accelerator.device.type,
                dtype=config.cache_dtype,
                digests=digests,
            )
        self.provenance = prepare_run_dir(
            self.run_dir,
            config,
            self.accelerator,
            train=train_m,
            val=val_m,
            digests=digests,
            precision=self.precision,
            extra={
                "parameters": self.model.parameter_counts(),
                "feature_cache": str(self.cache.root) if self.cache else None,
                "target_mean_std": list(norm),
            },
            log=self.log,
        )
        if self.cache is not None:
            self.cache.build(
                self.train_examples + (self.val_examples or []),
                self.model,
                self.accelerator,
                batch_size=config.batch_size,
                num_workers=config.num_workers,
            )
        self.train_set = self._dataset(self.train_examples)
        self.val_set = self._dataset(self.val_examples) if self.val_examples else None

        objective = RewardObjective(self.model, contrastive=config.contrastive_term > 0)
        groups = self.model.param_groups(config.lr, config.weight_decay, config.backbone_lr)
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
        world = self.accelerator.num_processes
        self.steps_per_epoch = len(
            epoch_batches(len(self.train_set), config.batch_size, seed=0, epoch=0, world_size=world)
        )
        total = self.steps_per_epoch * config.epochs
        self.scheduler = warmup_cosine_schedule(optimizer, round(config.warmup_ratio * total), total)
        self.objective, self.optimizer = self.accelerator.prepare(objective, optimizer)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.state = fresh_state()
        self.best_weights: dict[str, torch.Tensor] | None = None
        set_seed(config.seed)  # again: whatever setup drew (cache building, hashing) must not shift training
        if config.resume and has_resume_state(self.run_dir):  # nothing saved yet: prepare_run_dir said so, step 0
            self.state = read_resume_state(self.run_dir)
            self.best_weights = load_resume_state(
                self.run_dir, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
            )
            epoch = min(self.state["epoch"] + 1, config.epochs)
            self.log(f"resumed from step {self.state['global_step']} (epoch {epoch}/{config.epochs}) in {self.run_dir}")
        self.fault_after = int(os.environ.get(FAULT_ENV, "0") or 0)
        self.steps_here = 0
        self.metrics = MetricsLog(
            self.run_dir,
            enabled=self.accelerator.is_main_process,
            tensorboard=config.tensorboard,
            history=self.state["history"],
            purge_step=self.state["global_step"],
        )

    def _dataset(self, examples):
        if self.cache is not None:  # the evidence is cached too where the head reads only it (not the matrix's pairs)
            evidence_reader = getattr(self.model, "evidence_reader", None)  # IC-Reward with head 'map' or 'none'
            reader = evidence_reader() if evidence_reader and self.config.contrastive_term == 0 else None
            return TokenDataset(examples, self.cache, reader)
        return MediaDataset(examples, self.model.num_frames, self.model.max_side, self.model.preprocess_config)

    # ---- the loop

    def run(self) -> TrainResult:
        config, state = self.config, self.state
        self.log(run_header(config, self.model.parameter_counts(), len(self.train_set), self.pairs, self.accelerator))
        if self.cache:
            self.log(f"feature cache {self.cache.root}: {self.cache.hits} files found, {self.cache.misses} computed")
        while not state["finished"] and not state["stopped_early"] and state["epoch"] < config.epochs:
            started = time.monotonic() - state.get("epoch_seconds", 0.0)
            self._train_epoch(state["epoch"], state["step_in_epoch"], started)
            row = self._epoch_row(state["epoch"], time.monotonic() - started)
            improved = self._update_best(row)
            self.metrics.add(row)
            self.log(epoch_summary(row, config.epochs, improved and self.val_set is not None))
            state |= {"epoch": state["epoch"] + 1, "step_in_epoch": 0, "epoch_acc": new_window(), "epoch_seconds": 0.0}
            if config.patience is not None and self.val_set is not None and state["bad_epochs"] >= config.patience:
                state["stopped_early"] = True
                self.log(f"early stopping: no better validation accuracy for {config.patience} epochs")
            self._save_state()
        result = self._finalize()
        self.metrics.close()
        self.accelerator.wait_for_everyone()
        return result

    def _train_epoch(self, epoch: int, skip: int, started: float) -> None:
        from icreward.progress import progress_bar

        config, state, acc = self.config, self.state, self.accelerator
        world, rank = acc.num_processes, acc.process_index
        batches = epoch_batches(
            len(self.train_set), config.batch_size, seed=config.seed, epoch=epoch, rank=rank, world_size=world
        )
        loader = self._loader(self.train_set, batches[skip:], generator_seed=config.seed * 100_003 + epoch)
        bar = progress_bar(
            loader,
            total=len(batches),
            initial=skip,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="step",
            leave=False,
            enabled=acc.is_main_process and config.progress,
        )
        self.objective.train()
        for batch in bar:
            batch = _to_device(batch, acc.device)
            out = self.objective(batch["image"], batch["videos"], batch["label"], batch["group"])
            loss = objective_loss(config, out["rewards"].float(), batch["label"], batch["targets"], out.get("matrix"))
            acc.backward(loss)
            grad_norm = acc.clip_grad_norm_(self.trainable, config.grad_clip or math.inf)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            state["global_step"] += 1
            state["step_in_epoch"] += 1
            self.steps_here += 1
            record = {
                "index": acc.gather(batch["index"]).tolist(),
                "rewards": acc.gather(out["rewards"].detach().float()).tolist(),
                "loss": [acc.reduce(loss.detach(), "mean").item()],
                "grad_norm": [float(grad_norm)],
            }
            for window in (state["epoch_acc"], state["window_acc"]):
                for key, values in record.items():
                    window[key] += values
            bar.set_postfix(loss=f"{record['loss'][0]:.4f}")
            if config.log_every and state["global_step"] % config.log_every == 0:
                self.metrics.add(self._window_row(epoch, state["window_acc"], time.monotonic() - started))
                state["window_acc"] = new_window()
            if (
                config.save_every
                and state["global_step"] % config.save_every == 0
                and state["step_in_epoch"] < len(batches)
            ):
                state["epoch_seconds"] = time.monotonic() - started
                self._save_state()
            if self.fault_after and self.steps_here >= self.fault_after:
                os._exit(1)  # test hook: a crash mid-epoch (see the module docstring)
        bar.close()

    def _loader(self, dataset, batches: list[list[int]], generator_seed: int = 0) -> DataLoader:
        """Batches as given; a private generator keeps the global RNG (dropout) untouched by the loader."""
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(generator_seed),
            pin_memory=self.accelerator.device.type == "cuda",
        )

    @torch.no_grad()
    def predict(self, dataset) -> np.ndarray:
        """Raw rewards `[n, V]` of every example of `dataset`, in order, gathered from all processes."""
        acc = self.accelerator
        module = acc.unwrap_model(self.objective)
        module.eval()
        rank, world = acc.process_index, acc.num_processes
        batches = epoch_batches(
            len(dataset), self.config.batch_size, seed=0, epoch=0, rank=rank, world_size=world, shuffle=False
        )
        indices, rewards = [], []
        for batch in self._loader(dataset, batches):
            batch = _to_device(batch, acc.device)
            with acc.autocast():
                out = module(batch["image"], batch["videos"])
            indices.append(acc.gather(batch["index"]).cpu())
            rewards.append(acc.gather(out["rewards"].float()).cpu())
        module.train()
        index, reward = torch.cat(indices).numpy(), torch.cat(rewards).numpy()
        _, first = np.unique(index, return_index=True)  # padding repeats a few examples; keep each once, in order
        return reward[first]

    # ---- metrics, best weights, state

    def _window_row(self, epoch: int, window: dict, seconds: float) -> dict[str, Any]:
        return {
            "kind": "step",
            "epoch": epoch + 1,
            "step": self.state["global_step"],
            "lr": float(self.scheduler.get_last_lr()[0]),  # the head's
            **window_metrics(window, self.train_examples, self.pairs),
            "seconds": seconds,
        }

    def _epoch_row(self, epoch: int, seconds: float) -> dict[str, Any]:
        row = self._window_row(epoch, self.state["epoch_acc"], seconds) | {"kind": "epoch"}
        if self.val_set is not None:
            rewards = self.predict(self.val_set)
            row |= validation_metrics(rewards, self.val_examples, self.config, self.pairs)
        return row

    def _update_best(self, row: dict[str, Any]) -> bool:
        """Keep the weights of the best validation epoch (higher monitored metric, then lower validation loss)."""
        state = self.state
        if self.val_set is None:
            state["best_epoch"] = row["epoch"]
            return False
        metric, loss = row["monitor"], row.get("val_loss", math.nan)
        best, best_loss = state["best_metric"], state["best_val_loss"]
        improved = best is None or metric > best or (metric == best and _less(loss, best_loss))
        if improved:
            state |= {"best_metric": metric, "best_val_loss": loss, "best_epoch": row["epoch"], "bad_epochs": 0}
            self.best_weights = trainable_state(self.model)
        else:
            state["bad_epochs"] += 1
        return improved

    def _save_state(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            save_resume_state(
                self.run_dir,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                state=self.state,
                best=self.best_weights,
            )
        self.accelerator.wait_for_everyone()

    def _finalize(self) -> TrainResult:
        """Best weights back in; score normalisation and tie threshold measured; the checkpoint written."""
        state, config = self.state, self.config
        state["finished"] = True  # a crash from here on resumes straight into finalising again
        self._save_state()
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights, strict=False)
        calibration_examples = self.val_examples or self.train_examples
        rewards = self.predict(self.val_set if self.val_set is not None else self.train_set)
        calib = calibrate(rewards, calibration_examples, self.pairs)
        self.model.set_score_normalization(calib["score_mean"], calib["score_std"])
        self.model.config.tie_threshold = calib["tie_threshold"]
        best_row = next((r for r in state["history"] if r["kind"] == "epoch" and r["epoch"] == state["best_epoch"]), {})
        training = {
            **self.provenance,
            "loss": config.loss,
            "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"],
            "steps": state["global_step"],
            "stopped_early": state["stopped_early"],
            "best_val_pair_accuracy": best_row.get("val_pair_accuracy"),
            "calibrated_on": "validation" if self.val_set is not None else "training",
            "calibration_pair_accuracy_ties": calib["pair_accuracy_ties"],
            "target_mean_std": list(self.target_norm),
            "hyperparameters": hyperparameters(config),
        }
        if self.accelerator.is_main_process:
            publish_checkpoint(self.model, self.run_dir, json_safe(training))
        self.log(f"saved {self.run_dir} (best epoch {state['best_epoch']}; {STATE_DIR}/ holds the resume state)")
        return TrainResult(
            out_dir=self.run_dir,
            best_val_accuracy=finite_or_none(best_row.get("val_pair_accuracy")) if self.val_set is not None else None,
            best_epoch=state["best_epoch"],
            val_accuracy_ties=calib["pair_accuracy_ties"] if self.val_set is not None else None,
            tie_threshold=calib["tie_threshold"],
            score_mean=calib["score_mean"],
            score_std=calib["score_std"],
            epochs_run=state["epoch"],
            steps=state["global_step"],
            stopped_early=state["stopped_early"],
            history=list(state["history"]),
            cache_hits=self.cache.hits if self.cache else 0,
            cache_misses=self.cache.misses if self.cache else 0,
        )


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _less(a: float, b: float | None) -> bool:
    return b is None or (math.isfinite(a) and (not math.isfinite(b) or a < b))


# ---- setup: accelerator and precision, model, schedule


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): then bf16 autocast is several times faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: be conservative
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, cpu: bool = False) -> str:
    """`bf16` or `fp32`: `auto` is bf16 on a CUDA GPU that supports it, or on a CPU with native bf16."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and not cpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def make_accelerator(precision: str, cpu: bool):
    """An `accelerate.Accelerator` with bf16 autocast or none.

    accelerate keeps one process-wide state whose precision cannot change; in a single process (the library API
    training several models in a row) it is reset when a run asks for another precision.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    mixed = "bf16" if precision == "bf16" else "no"
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != mixed and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed, cpu=cpu)


def close_process_group(finished: bool) -> None:
    """Leave torch.distributed at the end of a launched run (`torchrun`; a no-op in a single process).

    A process that `finished` first waits at a barrier until every process has finished, so none tears its group down
    (and exits) while another still talks to it; a failed one does not wait (the launcher ends the others). The group
    is destroyed either way. gloo keeps its worker threads until the group itself is freed, which DDP's hold on it
    delays to the exit: the barrier retires every earlier collective (and the tensors it holds) before that.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def build_reward_model(config: TrainConfig):
    """A freshly initialised model (seed the generators first: its initial weights come from them)."""
    from icreward.models import build_model

    return build_model(
        config.model_type,
        backbone=config.backbone,
        backbone_kwargs=dict(config.backbone_kwargs),
        backbone_policy=config.backbone_policy,
        num_frames=config.num_frames,
        **config.model,
    )


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps` (per optimizer step)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
