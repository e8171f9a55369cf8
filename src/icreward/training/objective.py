"""What one training step computes: raw rewards of a batch (from pixels or cached tokens), the loss, and statistics.

`RewardObjective` is the module the accelerator wraps (DDP, autocast), so everything that needs gradients runs
inside its `forward`. Rewards are the model's raw head outputs: normalisation is set only after training.
"""

from __future__ import annotations

import torch
from torch import nn

from icreward.losses import bt_loss, btt_loss, contrastive_loss, mse_loss
from icreward.training.config import TrainConfig

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
        """`image` `[B,3,S,S]` and `videos` `[B,V,T,3,S,S]` pixels, or their token dicts (`[B,...]`, `[B,V,T,...]`).

        The reward matrix needs `labels` (which video of a pair is the image's own) and `groups` (source ids).
        """
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


def objective_loss(out: dict[str, torch.Tensor], batch: dict, config: TrainConfig) -> torch.Tensor:
    """The configured loss of one batch: mse / bt / btt on the rewards, plus the weighted contrastive term."""
    rewards = out["rewards"].float()  # (B, V)
    if config.loss == "mse":
        loss = mse_loss(rewards.flatten(), batch["targets"].flatten())
    elif config.loss == "bt":
        loss = bt_loss(rewards[:, 0], rewards[:, 1], batch["label"])
    elif config.loss == "btt":
        loss = btt_loss(rewards[:, 0], rewards[:, 1], batch["label"], theta=config.theta)
    else:
        loss = rewards.sum() * 0.0  # contrastive alone; keeps every reward in the graph
    if config.contrastive_term > 0:
        term = contrastive_loss(out["matrix"].float(), temperature=config.contrastive_temperature)
        loss = loss + config.contrastive_term * term
    return loss
