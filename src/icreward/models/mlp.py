"""The study's MLP baseline: an MLP on the image's cls features and the video's mean-pooled frame cls features.

features = [img_cls, mean_t(frame_cls), img_cls * mean_frame_cls, |img_cls - mean_frame_cls|] -> MLP -> reward.
The backbone is frozen by default (as in the study), so a trainer can cache tokens once and train only the MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from icreward.models.base import RewardModel, RewardModelConfig, Tokens, check_bool, check_float, check_int


@dataclass
class MLPRewardConfig(RewardModelConfig):
    hidden: int = 256  # width of the MLP's hidden layers
    depth: int = 2  # number of hidden layers (Linear + GELU + Dropout each) before the output layer
    dropout: float = 0.1  # dropout after each hidden layer
    l2_normalize: bool = True  # unit-normalise the image and each frame's cls first (the product then sums to cos)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self, "hidden", minimum=1)
        check_int(self, "depth", minimum=0)
        check_float(self, "dropout", minimum=0, below=1)
        check_bool(self, "l2_normalize")


class MLPRewardModel(RewardModel):
    model_type = "mlp"
    config_class = MLPRewardConfig

    def __init__(self, config: MLPRewardConfig):
        super().__init__(config)
        d_in = 4 * self.backbone.dim
        layers: list[nn.Module] = [nn.LayerNorm(d_in)]
        for i in range(config.depth):
            width = d_in if i == 0 else config.hidden
            layers += [nn.Linear(width, config.hidden), nn.GELU(), nn.Dropout(config.dropout)]
        # No output bias: pairwise losses cannot see a constant offset (it would never get a gradient), and the
        # offset of the served reward is the stored score_mean (regress centred scores with MSE).
        layers.append(nn.Linear(config.hidden if config.depth else d_in, 1, bias=False))
        self.mlp = nn.Sequential(*layers)

    def features(self, img_tokens: Tokens, vid_tokens: Tokens) -> torch.Tensor:
        """The baseline's input features `[B, 4D]` from the cls tokens."""
        img, frames = img_tokens["cls"], vid_tokens["cls"]  # (B, D), (B, T, D)
        if self.config.l2_normalize:
            img, frames = F.normalize(img, dim=-1), F.normalize(frames, dim=-1)
        vid = frames.mean(1)  # (B, D)
        return torch.cat([img, vid, img * vid, (img - vid).abs()], dim=-1)  # (B, 4D)

    def head(self, img_tokens: Tokens, vid_tokens: Tokens, return_attention: bool = False) -> torch.Tensor:
        if return_attention:
            raise ValueError("the MLP baseline has no attention maps; use an IC-Reward model")
        return self.mlp(self.features(img_tokens, vid_tokens)).squeeze(-1)  # (B,)
