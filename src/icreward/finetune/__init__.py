"""Reward fine-tuning of diffusers image-to-video pipelines (`icreward finetune`): DRaFT-K / VADER-style reward
backpropagation into a LoRA on the denoiser.

```python
from icreward.finetune import FinetuneConfig, Finetuner, load_conditioning, load_lora, load_pipeline
pipe = load_pipeline("stabilityai/stable-video-diffusion-img2vid-xt")
config = FinetuneConfig(frames=14, height=320, width=512, sample_steps=25, k=1, steps=200, precision="bf16",
                        gradient_checkpointing=True, reward_frames=8)
train = load_conditioning("my_images/", config.height, config.width)
Finetuner(pipe, config, train, "runs/svd-lora").run()          # runs/svd-lora/lora/ holds the LoRA
load_lora(pipe, "runs/svd-lora/lora")                           # pipe(...) now samples with it
```

Modules: `families` (how to sample from each pipeline's parts), `sampling` (the truncated-backprop loop and the
reference term), `lora` (attach, switch off, save, load), `data` (conditioning images), `judges` (held-out
evaluation), `config`, `trainer` (the loop, run folder, logs, resume, the guard); pipelines load with
`icreward.generation.pipelines.load_pipeline` (re-exported here).
diffusers and peft are optional dependencies, imported when these modules are.
"""

from icreward.finetune.config import FinetuneConfig
from icreward.finetune.data import ConditioningSet, load_conditioning
from icreward.finetune.families import FAMILIES, family_for
from icreward.finetune.lora import load_lora, set_lora_enabled
from icreward.finetune.trainer import Finetuner, guard_check
from icreward.generation.pipelines import load_pipeline

__all__ = [
    "FAMILIES",
    "ConditioningSet",
    "FinetuneConfig",
    "Finetuner",
    "family_for",
    "guard_check",
    "load_conditioning",
    "load_lora",
    "load_pipeline",
    "set_lora_enabled",
]
