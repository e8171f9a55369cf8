"""Held-out evaluation of a generator: generate one video per image (fixed seeds), then the reward it is tuned on
and judges it is not tuned on.

- `judges`: weight-free handcrafted metrics, each oriented higher = better (VBench-I2V's formula on pixels and HOG,
  the colour histogram, VBench's dynamic degree);
- `motion`: the mean motion, the largest block displacement per frame pair in pixels of the frames averaged over pairs
  (`icreward.flow` via `metrics.motion.pair_motion`): continuous, so it sees motion too slow for VBench's dynamic
  degree, which is a judge beside it (a soft count in [0, 1] of the pairs above VBench's threshold, 0.75 px at 32 px);
- `static_fraction`: the share of videos VBench would call static (`metrics.motion.is_dynamic` false).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icreward.finetune.data import ConditioningSet
from icreward.finetune.families import PipelineFamily
from icreward.finetune.sampling import sample

DEFAULT_JUDGES = ("metric:vbench-i2v-pixel", "metric:vbench-i2v-hog", "metric:color-hist", "metric:dynamic-degree")


@dataclass
class Evaluation:
    videos: torch.Tensor  # [N, T, 3, H, W] in [0, 1]
    reward: torch.Tensor  # [N]
    judges: dict[str, torch.Tensor]  # name -> [N]
    motion: torch.Tensor  # [N] mean largest block displacement per frame pair, pixels
    static: torch.Tensor  # [N] bool

    def summary(self) -> dict[str, float | dict[str, float]]:
        return {
            "reward": self.reward.mean().item(),
            "judges": {name: v.mean().item() for name, v in self.judges.items()},
            "motion": self.motion.mean().item(),
            "static_fraction": self.static.float().mean().item(),
        }


def load_judges(names=DEFAULT_JUDGES) -> dict[str, torch.nn.Module]:
    from icreward.loading import load

    return {name: load(name).eval().requires_grad_(False) for name in names}


@torch.no_grad()
def generate(
    family: PipelineFamily,
    denoiser,
    cond_set: ConditioningSet,
    *,
    frames: int,
    steps: int,
    seed: int,
    batch_size: int = 4,
) -> torch.Tensor:
    """One video per image `[N, T, 3, H, W]` in [0, 1]; image i always starts from the noise of seed (seed, i)."""
    videos = []
    for start in range(0, len(cond_set), batch_size):
        images = cond_set.images[start : start + batch_size]
        prompts = cond_set.prompts[start : start + batch_size]
        batch = []
        for j in range(len(images)):  # one generator per image: a video does not depend on its batch
            g = torch.Generator().manual_seed(seed * 1_000_003 + start + j)
            cond = family.condition(images[j : j + 1], prompts[j : j + 1], frames, g)
            out = sample(family, denoiser, cond, steps=steps, grad_steps=0, generator=g)
            batch.append(family.decode(out.latents, cond))
        videos.append(((torch.cat(batch) + 1) / 2).clamp(0, 1))
    return torch.cat(videos)


@torch.no_grad()
def judge(videos: torch.Tensor, cond_set: ConditioningSet, reward_fn, judges: dict[str, torch.nn.Module]) -> Evaluation:
    """Score `videos [N, T, 3, H, W]` in [0, 1] of `cond_set`'s images (see the module docstring)."""
    from icreward.metrics.motion import is_dynamic, pair_motion

    images = cond_set.images
    reward = reward_fn(images * 2 - 1, videos * 2 - 1, cond_set.prompts)
    scores = {name: j(images, videos).float() for name, j in judges.items()}
    return Evaluation(videos, reward, scores, pair_motion(videos).mean(1), ~is_dynamic(videos))


def evaluate(family, denoiser, cond_set, reward_fn, judges, *, frames: int, steps: int, seed: int) -> Evaluation:
    """`generate` then `judge`."""
    videos = generate(family, denoiser, cond_set, frames=frames, steps=steps, seed=seed)
    return judge(videos, cond_set, reward_fn, judges)
