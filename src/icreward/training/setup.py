"""Building what a run trains with: the accelerator and its precision, the model, the optimizer and its schedule."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import torch
from torch import nn

from icreward.errors import IcrewardError
from icreward.manifest import Manifest, format_skipped, load_manifest
from icreward.training.config import TrainConfig

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.Embedding)
_EMBEDDING_NAMES = re.compile(r"(embed|embedding|embeddings|token|tokens|queries)$")  # cls_token, pos_embed, ...


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): then bf16 autocast is several times faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: be conservative
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, cpu: bool = False) -> str:
    """`bf16` or `fp32`: `auto` is bf16 on a CUDA GPU that supports it, or on a CPU with native bf16."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and not cpu:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def make_accelerator(precision: str, cpu: bool):
    """An `accelerate.Accelerator` with bf16 autocast or none.

    accelerate keeps one process-wide state whose precision cannot change; in a single process (the library API
    training several models in a row) it is reset when a run asks for another precision.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    mixed = "bf16" if precision == "bf16" else "no"
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != mixed and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed, cpu=cpu)


def load_manifests(
    config: TrainConfig, train: Manifest | str | Path | None, val: Manifest | str | Path | None, log
) -> tuple[Manifest, Manifest | None]:
    """The training and validation manifests, as given or read from the config's paths (labels required)."""

    def read(m: Manifest | str | Path | None) -> Manifest | None:
        if m is None or isinstance(m, Manifest):
            return m
        manifest = load_manifest(m, skip_bad=config.skip_bad, tie_margin=config.tie_margin, require_labels=True)
        if manifest.skipped:
            log(format_skipped(manifest))
        return manifest

    train_manifest = read(train if train is not None else config.data)
    if train_manifest is None:
        raise IcrewardError("no training data: give --data (or a manifest to train())")
    return train_manifest, read(val if val is not None else config.val)


def build_reward_model(config: TrainConfig):
    """A freshly initialised model (seed the generators first: its initial weights come from them)."""
    from icreward.models import build_model

    return build_model(
        config.model_type,
        backbone=config.backbone,
        backbone_kwargs=dict(config.backbone_kwargs),
        backbone_policy=config.backbone_policy,
        num_frames=config.num_frames,
        **config.model,
    )


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups: backbone / head x decay / no decay (x learning-rate scale). Biases, norms, embeddings, tokens and
    learned queries are never decayed; trainable backbone parameters take `backbone_lr` where set; a module with an
    `lr_scale` attribute has its own parameters trained at that multiple of the learning rate."""
    groups: dict[tuple[bool, bool, float], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            in_backbone = f"{module_name}.{name}".startswith("backbone.")
            decay = param.ndim >= 2 and not isinstance(module, _NORMS) and not _EMBEDDING_NAMES.search(name)
            groups.setdefault((in_backbone, decay, float(getattr(module, "lr_scale", 1.0))), []).append(param)
    if not groups:
        raise IcrewardError("the model has no trainable parameters")
    backbone_lr = config.backbone_lr if config.backbone_lr is not None else config.lr
    return [
        {
            "params": params,
            "lr": scale * (backbone_lr if in_backbone else config.lr),
            "weight_decay": config.weight_decay if decay else 0.0,
            "name": f"{'backbone' if in_backbone else 'head'}{'' if decay else '_no_decay'}"
            + ("" if scale == 1.0 else f"_lr_x{scale:g}"),
        }
        for (in_backbone, decay, scale), params in sorted(groups.items())
    ]


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps` (per optimizer step)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def log_main(accelerator, progress: bool = True):
    """A print function that writes from the main process only (around tqdm bars)."""

    def log(message: str) -> None:
        if accelerator.is_main_process and message:
            if progress:
                from tqdm.auto import tqdm

                tqdm.write(message, file=sys.stdout)
            else:
                print(message, flush=True)

    return log
