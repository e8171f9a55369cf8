"""What one training step computes: raw rewards of a batch (from pixels or cached tokens), the loss, and the
statistics of training windows and validation epochs.

`RewardObjective` is the module the accelerator wraps (DDP, autocast), so everything that needs gradients runs
inside its `forward`. Rewards are the model's raw head outputs: normalisation is set only after training (`calibrate`).
`objective_loss` is the one place a configured loss is chosen: training calls it per batch, validation on the
rewards of the whole validation set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from icreward.evaluation.stats import best_tie_threshold, correlations, pair_accuracy
from icreward.losses import bt_loss, btt_loss, contrastive_loss, mse_loss
from icreward.training.config import TrainConfig
from icreward.training.data import Example

Tokens = dict[str, torch.Tensor]


class RewardObjective(nn.Module):
    """Batch -> `{"rewards": [B, V] raw rewards, "matrix": [B, B] in-batch rewards (when contrastive)}`.

    A pair's image is encoded once, in the same backbone batch as the frames of both videos (or read from the
    feature cache); A and B are scored in one head call.
    """

    def __init__(self, model, contrastive: bool):
        super().__init__()
        self.model = model
        self.contrastive = contrastive

    def forward(
        self,
        image: torch.Tensor | Tokens,
        videos: torch.Tensor | Tokens,
        labels: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`image` `[B,3,S,S]` and `videos` `[B,V,T,3,S,S]` pixels, or their token dicts (`[B,...]`, `[B,V,T,...]`),
        or the cached evidence (`image {}`, `videos {"evidence": [B,V,K], "maps": [B,V,T,N,C]}`, no reward matrix).

        The reward matrix needs `labels` (which video of a pair is the image's own) and `groups` (source ids).
        """
        if isinstance(videos, dict) and "evidence" in videos:  # cached evidence (`model.evidence_reader`)
            b, v = videos["evidence"].shape[:2]
            maps = videos["maps"].flatten(0, 1) if "maps" in videos else None  # (B*V, T, N, C)
            rewards = self.model.head_from_evidence(videos["evidence"].flatten(0, 1), maps).view(b, v)  # (B, V)
            return {"rewards": rewards}
        if isinstance(videos, dict):
            img = image
            per_video = [{k: v[:, i] for k, v in videos.items()} for i in range(videos["cls"].shape[1])]
        else:
            img, per_video = self.model.encode_videos(image, *videos.unbind(1))  # each (B, T, ...)
        if len(per_video) == 2:
            rewards = torch.stack(self.model.head_pairs(img, *per_video), dim=1)  # (B, 2)
        else:
            rewards = self.model.head(img, per_video[0])[:, None]  # (B, 1)
        out = {"rewards": rewards}
        if self.contrastive and groups is not None:
            positive = per_video[0]
            if len(per_video) == 2 and labels is not None:  # the preferred video (A on a tie) is the image's own
                pick_b = labels < 0
                positive = {k: torch.where(_expand(pick_b, v), per_video[1][k], v) for k, v in positive.items()}
            out["matrix"] = self.reward_matrix(img, positive, groups)
        return out

    def reward_matrix(self, img: Tokens, vid: Tokens, groups: torch.Tensor) -> torch.Tensor:
        """`[B, B]`: raw reward of image i with video j; videos of i's own source other than its own are masked out
        (-inf), since they are no negatives of it."""
        b = img["cls"].shape[0]
        rows = {k: v.repeat_interleave(b, dim=0) for k, v in img.items()}  # (B*B, ...): i = flat // B
        cols = {k: v.repeat(b, *([1] * (v.dim() - 1))) for k, v in vid.items()}  # (B*B, T, ...): j = flat % B
        matrix = self.model.head(rows, cols).view(b, b)  # (B, B)
        same_source = (groups[:, None] == groups[None, :]) & ~torch.eye(b, dtype=torch.bool, device=groups.device)
        return matrix.masked_fill(same_source, float("-inf"))


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def objective_loss(
    config: TrainConfig,
    rewards: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    matrix: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The configured loss: mse / bt / btt on raw `rewards [n, V]`, plus the weighted contrastive term of the in-batch
    reward `matrix [n, n]` (`RewardObjective`'s outputs for a training batch).

    `labels [n]` are +1 / -1 / 0 (A / B / tie), `targets [n, V]` the regression targets. A whole validation set has
    no `matrix` (in-batch negatives need batches): the term is left out, and the contrastive loss alone gives None.
    """
    if config.loss == "mse":
        loss = mse_loss(rewards.flatten(), targets.flatten())
    elif config.loss == "bt":
        loss = bt_loss(rewards[:, 0], rewards[:, 1], labels)
    elif config.loss == "btt":
        loss = btt_loss(rewards[:, 0], rewards[:, 1], labels, theta=config.theta)
    elif matrix is None:
        return None
    else:
        loss = rewards.sum() * 0.0  # contrastive alone; keeps every reward in the graph
    if matrix is not None and config.contrastive_term > 0:
        term = contrastive_loss(matrix.float(), temperature=config.contrastive_temperature)
        loss = loss + config.contrastive_term * term
    return loss


def dataset_loss(rewards: np.ndarray, examples: Sequence[Example], config: TrainConfig) -> float:
    """`objective_loss` of raw `rewards [n, V]` over a whole set, in float64: NaN for the contrastive loss alone."""
    labels = torch.tensor([ex.label for ex in examples])
    targets = torch.tensor([ex.targets for ex in examples], dtype=torch.float64)
    loss = objective_loss(config, torch.as_tensor(rewards, dtype=torch.float64), labels, targets)
    return math.nan if loss is None else float(loss)


# ---- statistics


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
