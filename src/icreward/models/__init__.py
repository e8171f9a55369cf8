"""Learned rewards: the study's MLP baseline and IC-Reward, their shared base and their checkpoints.

```python
from icreward.models import build_model, load_checkpoint
model = build_model("icreward", backbone="tiny-vit", backbone_policy="last-1")
model.save_pretrained("run/ckpt", training={"data_sha256": "..."})
model = load_checkpoint("run/ckpt")  # any model type, from config.json's model_type
```
"""

from __future__ import annotations

from typing import Any

from icreward.errors import IcrewardError
from icreward.models.backbone_policy import apply_backbone_policy, lora_target_modules, parse_backbone_policy
from icreward.models.base import RewardModel, RewardModelConfig, load_checkpoint
from icreward.models.icreward_model import ICRewardConfig, ICRewardModel, attention_heatmaps
from icreward.models.mlp import MLPRewardConfig, MLPRewardModel

MODEL_TYPES: dict[str, type[RewardModel]] = RewardModel.types  # {"icreward": ICRewardModel, "mlp": MLPRewardModel}


def build_model(model_type: str, **config: Any) -> RewardModel:
    """A freshly initialised model of `model_type` ("icreward" | "mlp"); keyword arguments are its config's fields."""
    if model_type not in MODEL_TYPES:
        raise IcrewardError(f"unknown model type {model_type!r}; known: {', '.join(MODEL_TYPES)}")
    model_cls = MODEL_TYPES[model_type]
    try:
        return model_cls(model_cls.config_class.from_dict(config))
    except ValueError as e:
        raise IcrewardError(f"invalid {model_type} config: {e}") from e


__all__ = [
    "MODEL_TYPES",
    "ICRewardConfig",
    "ICRewardModel",
    "MLPRewardConfig",
    "MLPRewardModel",
    "RewardModel",
    "RewardModelConfig",
    "apply_backbone_policy",
    "attention_heatmaps",
    "build_model",
    "load_checkpoint",
    "lora_target_modules",
    "parse_backbone_policy",
]
