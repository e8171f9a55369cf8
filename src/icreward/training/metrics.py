"""Training statistics: accuracy, margin and reward statistics of training windows and validation epochs, and the
calibration stored in the checkpoint at the end of training."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from icreward.evaluation.stats import best_tie_threshold, correlations, pair_accuracy
from icreward.losses import bt_loss, btt_loss, mse_loss
from icreward.training.config import TrainConfig
from icreward.training.data import Example


def reward_statistics(rewards: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """Accuracy (pairs humans did not tie), margin = mean |r_A - r_B|, and the mean/std of all rewards.

    `rewards` is `[n, V]` (V = 2 for pairs); pair statistics are NaN for pointwise data.
    """
    stats = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std())}
    if rewards.shape[1] == 2 and labels is not None:
        delta = rewards[:, 0] - rewards[:, 1]
        stats["pair_accuracy"] = pair_accuracy(delta, labels)  # NaN when every pair is a human tie
        stats["margin"] = float(np.abs(delta).mean())
    else:
        stats["pair_accuracy"] = stats["margin"] = float("nan")
    return stats


def window_metrics(window: dict[str, list], examples: Sequence[Example], pairs: bool) -> dict[str, float]:
    """`loss`, `grad_norm` and `train_*` statistics of the steps in `window` (`{"index", "rewards", "loss",
    "grad_norm"}` lists, rewards as each batch had them when it was trained on)."""
    rewards = np.array(window["rewards"], dtype=np.float64).reshape(len(window["index"]), -1)
    labels = np.array([examples[i].label for i in window["index"]]) if pairs else None
    stats = reward_statistics(rewards, labels) if len(rewards) else {}
    return {
        "loss": float(np.mean(window["loss"])) if window["loss"] else math.nan,
        **{f"train_{k}": v for k, v in stats.items()},
        "grad_norm": float(np.mean(window["grad_norm"])) if window["grad_norm"] else math.nan,
    }


def dataset_loss(rewards: np.ndarray, examples: Sequence[Example], config: TrainConfig) -> float:
    """The configured pairwise / pointwise loss over a whole set (NaN for contrastive, which depends on batches)."""
    r = torch.as_tensor(rewards, dtype=torch.float64)
    labels = torch.tensor([ex.label for ex in examples])
    if config.loss == "mse":
        return float(
            mse_loss(r.flatten(), torch.tensor([ex.targets for ex in examples], dtype=torch.float64).flatten())
        )
    if config.loss == "bt":
        return float(bt_loss(r[:, 0], r[:, 1], labels))
    if config.loss == "btt":
        return float(btt_loss(r[:, 0], r[:, 1], labels, theta=config.theta))
    return math.nan


def validation_metrics(
    rewards: np.ndarray, examples: Sequence[Example], config: TrainConfig, pairs: bool
) -> dict[str, Any]:
    """`val_*` columns of an epoch row, and `monitor`: the number early stopping and best-epoch selection maximise
    (pair accuracy; accuracy with ties when every validation pair is a tie; Spearman for pointwise data)."""
    labels = np.array([ex.label for ex in examples])
    stats = reward_statistics(rewards, labels if pairs else None)
    row: dict[str, Any] = {f"val_{k}": v for k, v in stats.items()}
    row["val_loss"] = dataset_loss(rewards, examples, config)
    if pairs:
        eps, accuracy = best_tie_threshold(rewards[:, 0] - rewards[:, 1], labels)
        row |= {"val_pair_accuracy_ties": accuracy, "val_tie_threshold": eps}
        monitor = row["val_pair_accuracy"] if math.isfinite(row["val_pair_accuracy"]) else accuracy
    else:
        targets = np.array([ex.targets[0] for ex in examples])
        finite = np.isfinite(targets)
        row["val_spearman"] = (
            correlations(rewards[finite, 0], targets[finite])["spearman"] if finite.sum() > 2 else math.nan
        )
        monitor = row["val_spearman"]
    row["monitor"] = monitor if math.isfinite(monitor) else -math.inf
    return row


def calibrate(rewards: np.ndarray, examples: Sequence[Example], pairs: bool) -> dict[str, Any]:
    """Normalisation and tie threshold for the checkpoint, from the raw rewards `[n, V]` of `examples`.

    `score_mean`/`score_std`: over the distinct (image, video) items (a video in several pairs counts once).
    `tie_threshold`: the |r_A - r_B| of normalised rewards maximising accuracy with ties on these pairs (None for
    pointwise data), and `pair_accuracy_ties`, that accuracy.
    """
    distinct: dict[tuple, float] = {}
    for ex, row in zip(examples, rewards, strict=True):
        for video, reward in zip(ex.videos, row, strict=True):
            distinct.setdefault((ex.image, video), float(reward))
    values = np.array(list(distinct.values()))
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    std = std if math.isfinite(std) and std > 1e-8 else 1.0
    out: dict[str, Any] = {"score_mean": mean, "score_std": std, "tie_threshold": None, "pair_accuracy_ties": None}
    if pairs:
        labels = np.array([ex.label for ex in examples])
        eps, accuracy = best_tie_threshold((rewards[:, 0] - rewards[:, 1]) / std, labels)
        out |= {"tie_threshold": eps, "pair_accuracy_ties": accuracy}
    return out
