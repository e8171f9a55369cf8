"""LoRA on a pipeline's denoiser (peft's `inject_adapter_in_model`, which works on any torch module: SVD's U-Net has
no diffusers adapter mixin): attach, switch off and on, save, load.

A LoRA folder holds `lora.safetensors` (the adapter weights, keyed by the denoiser's parameter names) and
`lora_config.json` (rank, alpha, target modules, the pipeline family, and the fine-tuning run's provenance), written
into a temporary folder renamed into place (`icreward.atomic`), so a half-written folder is never taken for a LoRA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from icreward.errors import IcrewardError

LORA_WEIGHTS = "lora.safetensors"
LORA_CONFIG = "lora_config.json"
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER = "icreward"


def add_lora(
    denoiser: torch.nn.Module, rank: int, alpha: float | None = None, target_modules=TARGET_MODULES, seed: int = 0
) -> list[torch.nn.Parameter]:
    """Freeze `denoiser` and add a LoRA of `rank` to its attention projections; returns the LoRA parameters (the
    only ones that require gradients). The A matrices are drawn from a generator seeded with `seed`; B starts at 0, so
    the adapted denoiser starts equal to the base one."""
    from peft import LoraConfig, inject_adapter_in_model

    denoiser.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        init_lora_weights=True,
        target_modules=list(target_modules),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, denoiser, adapter_name=ADAPTER)
    params = [p for n, p in denoiser.named_parameters() if is_lora_name(n)]
    if not params:
        raise IcrewardError(f"the denoiser has none of the LoRA target modules {', '.join(target_modules)}")
    for p in params:
        p.requires_grad_(True)
    return params


def is_lora_name(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def lora_layers(denoiser: torch.nn.Module) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in denoiser.modules() if isinstance(m, BaseTunerLayer)]


def set_lora_enabled(denoiser: torch.nn.Module, enabled: bool) -> None:
    """Switch the LoRA off (the base denoiser) or back on."""
    for layer in lora_layers(denoiser):
        layer.enable_adapters(enabled)


def lora_state(denoiser: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights keyed by parameter name, detached copies on the CPU."""
    return {n: p.detach().cpu().clone().contiguous() for n, p in denoiser.named_parameters() if is_lora_name(n)}


def set_lora_state(denoiser: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the denoiser's LoRA parameters; every key must match, and every LoRA parameter be given."""
    params = {n: p for n, p in denoiser.named_parameters() if is_lora_name(n)}
    if set(params) != set(state):
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        raise IcrewardError(
            f"the LoRA weights do not fit this denoiser (missing {missing[:2]}, "
            f"unexpected {unexpected[:2]}); was it trained on another pipeline or rank?"
        )
    with torch.no_grad():
        for name, p in params.items():
            if p.shape != state[name].shape:
                raise IcrewardError(
                    f"the LoRA weight {name} has shape {list(state[name].shape)}, the denoiser's "
                    f"{list(p.shape)}: another rank or pipeline"
                )
            p.copy_(state[name].to(p.device, p.dtype))


def write_lora(folder: Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write `state` and `config` into `folder` (already a temporary folder of `atomic_dir`)."""
    import safetensors.torch

    safetensors.torch.save_file(state, str(folder / LORA_WEIGHTS))
    (folder / LORA_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def read_lora(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, config) of a LoRA folder; `IcrewardError` naming the folder when it is not a whole one."""
    import safetensors.torch

    folder = Path(folder)
    for name in (LORA_CONFIG, LORA_WEIGHTS):
        if not (folder / name).is_file():
            raise IcrewardError(f"{folder}: not a LoRA folder (no {name})")
    try:
        config = json.loads((folder / LORA_CONFIG).read_text())
        state = safetensors.torch.load_file(str(folder / LORA_WEIGHTS))
    except (ValueError, OSError) as e:
        raise IcrewardError(f"{folder}: cannot read the LoRA ({e})") from e
    return state, config


def load_lora(pipe, folder: str | Path) -> Any:
    """Add the LoRA of `folder` (written by `icreward finetune`) to `pipe`'s denoiser; returns `pipe`.

    After it, `pipe(...)` samples with the fine-tuned denoiser; `set_lora_enabled(pipe.unet, False)` (SVD) or
    `set_lora_enabled(pipe.transformer, False)` (Wan) goes back to the base model.
    """
    from icreward.finetune.families import family_for

    state, config = read_lora(folder)
    family = family_for(pipe)
    if config.get("family") not in (None, family.name):
        raise IcrewardError(f"{folder}: the LoRA is for a {config['family']} pipeline, not {family.name}")
    add_lora(family.denoiser, config["rank"], config.get("alpha"), config.get("target_modules", TARGET_MODULES))
    family.denoiser.requires_grad_(False)
    set_lora_state(family.denoiser, state)
    return pipe
