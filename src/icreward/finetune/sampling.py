"""The sampling loop with truncated backpropagation (DRaFT-K / VADER): no gradients before the last K steps,
gradients through the last K denoiser calls, the pipeline's own scheduler throughout.

`sample` returns the final latents and, for the steps with gradients, the reference term: the mean squared difference
between the LoRA denoiser's output and the frozen base denoiser's output at the same input (the base output has no
gradient). It is the KL regulariser of reward fine-tuning toward the reference model: for Gaussian transitions with a
shared variance, the KL divergence between the two models' steps is proportional to this squared difference.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch

from icreward.finetune.families import Conditioning, PipelineFamily
from icreward.finetune.lora import set_lora_enabled


@dataclass
class Sample:
    latents: torch.Tensor  # final latents in the family's layout; with a graph through the last K steps
    reference: torch.Tensor | None  # mean squared (LoRA - base) denoiser output over the gradient steps; None when off


@contextlib.contextmanager
def adapters_disabled(denoiser: torch.nn.Module):
    """The denoiser without its LoRA, restored after."""
    set_lora_enabled(denoiser, False)
    try:
        yield
    finally:
        set_lora_enabled(denoiser, True)


def fresh_scheduler(scheduler, steps: int, device):
    """A copy of the pipeline's scheduler set to `steps` steps (schedulers keep a step index and past outputs)."""
    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(steps, device=device)
    return sched


def sample(
    family: PipelineFamily,
    denoiser: torch.nn.Module,
    cond: Conditioning,
    *,
    steps: int,
    grad_steps: int,
    generator: torch.Generator,
    reference: bool = False,
    base_denoiser: torch.nn.Module | None = None,
) -> Sample:
    """Run `steps` sampling steps from seeded noise; the last `grad_steps` (K) keep gradients (0: none at all).

    `reference`: also compute the frozen model's output at the gradient steps (with the LoRA disabled on
    `base_denoiser`, the unwrapped denoiser that owns the adapters; default `denoiser`).
    """
    device = cond.tensors[next(iter(cond.tensors))].device
    sched = fresh_scheduler(family.pipe.scheduler, steps, device)
    latents = family.initial_latents(cond, sched, generator)
    timesteps = sched.timesteps
    first_grad = len(timesteps) - grad_steps
    terms = []
    for i, t in enumerate(timesteps):
        with torch.set_grad_enabled(i >= first_grad and torch.is_grad_enabled()):
            out = family.predict(denoiser, latents, t, sched, cond)
            if reference and i >= first_grad:
                with torch.no_grad(), adapters_disabled(base_denoiser or denoiser):
                    base = family.predict(base_denoiser or denoiser, latents, t, sched, cond)
                terms.append((out.float() - base.float()).pow(2).mean())
            latents = sched.step(out, t, latents, return_dict=False)[0]
    return Sample(latents, torch.stack(terms).mean() if terms else None)
