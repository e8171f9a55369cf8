"""What a run leaves on disk to be resumed, and how the finished model is put into the run folder.

`RUN_DIR/last/` (one atomic folder, replaced whole at each save): `model.safetensors` (the model now),
`best.safetensors` (the trainable weights of the best epoch so far), `optimizer.pt`, `scheduler.pt`, `rng.pt`
(python, numpy, torch and CUDA generator states) and `state.json` (epoch, step, best metric, history, ...).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from icreward.atomic import atomic_dir
from icreward.errors import IcrewardError
from icreward.models.base import CONFIG_NAME, WEIGHTS_NAME

STATE_DIR = "last"


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
    with atomic_dir(run_dir / STATE_DIR) as tmp:
        _save_tensors(model.state_dict(), tmp / "model.safetensors")
        if best is not None:
            _save_tensors(best, tmp / "best.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1, allow_nan=True) + "\n")


def read_resume_state(run_dir: Path) -> dict[str, Any]:
    """`state.json` of `run_dir/last/`; raises `IcrewardError` when there is nothing to resume."""
    path = run_dir / STATE_DIR / "state.json"
    if not path.is_file():
        raise IcrewardError(f"{run_dir}: nothing to resume (no {STATE_DIR}/state.json); run without --resume")
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


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    safetensors.torch.save_file({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, str(path))
