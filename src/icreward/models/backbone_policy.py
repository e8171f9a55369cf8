"""Which backbone parameters train: `apply_backbone_policy(backbone, "frozen" | "full" | "last-k" | "lora[-r<rank>]")`.

- `frozen`: nothing trains and the backbone stays in eval mode (the reward model's `train()` keeps it there).
- `full`: every parameter trains.
- `last-k` (e.g. `last-2`): the last k of `backbone.blocks()` and the norm layers after them (the final norm).
- `lora` / `lora-r16`: peft LoRA adapters (rank 8 unless given, alpha = rank) on the attention projections of
  Hugging Face towers and the MLP of torch transformer layers, found by module type and name (`lora_target_modules`);
  the backbone's own weights stay frozen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from icreward.backbones import Backbone
from icreward.errors import BackboneError

DEFAULT_LORA_RANK = 8
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
# Leaf names of the attention projections LoRA adapts in Hugging Face vision towers, in the order they are tried.
_HF_LORA_TARGETS = (("query", "value"), ("q_proj", "v_proj"))


@dataclass(frozen=True)
class BackbonePolicy:
    kind: str  # "frozen" | "full" | "last" | "lora"
    k: int | None = None  # blocks trained for "last", LoRA rank for "lora"


def parse_backbone_policy(policy: str) -> BackbonePolicy:
    """Parse a policy string; raises ValueError naming the accepted forms."""
    if policy in ("frozen", "full"):
        return BackbonePolicy(policy)
    if policy == "lora":
        return BackbonePolicy("lora", DEFAULT_LORA_RANK)
    if m := re.fullmatch(r"lora-r(\d+)", policy):
        return BackbonePolicy("lora", int(m.group(1)))
    if m := re.fullmatch(r"last-(\d+)", policy):
        return BackbonePolicy("last", int(m.group(1)))
    raise ValueError(f"unknown backbone policy {policy!r}; use frozen, full, last-<k>, lora or lora-r<rank>")


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def apply_backbone_policy(backbone: Backbone, policy: str) -> int:
    """Set `requires_grad` (and, for `frozen`, eval mode) on `backbone` in place; returns its trainable parameter count.

    LoRA changes the module tree (each adapted layer wraps its base layer), so a LoRA model's state dict only loads
    into a backbone that had the same policy applied: checkpoints store the policy and reapply it before loading.
    """
    parsed = parse_backbone_policy(policy)
    backbone.requires_grad_(parsed.kind == "full")
    if parsed.kind == "frozen":
        backbone.eval()
    elif parsed.kind == "last":
        blocks = backbone.blocks()
        if not 1 <= parsed.k <= len(blocks):
            raise ValueError(f"policy {policy!r}: {backbone.spec} has {len(blocks)} blocks")
        for module in blocks[-parsed.k :] + final_norms(backbone):
            module.requires_grad_(True)
    elif parsed.kind == "lora":
        _inject_lora(backbone, parsed.k)
    return count_trainable(backbone)


def final_norms(backbone: Backbone) -> list[nn.Module]:
    """Norm layers registered after the last block and outside every block (tiny-vit `norm`, DINOv2 `layernorm`,
    CLIP `post_layernorm`); norms before the blocks (CLIP `pre_layrnorm`) are not among them."""
    blocks = backbone.blocks()
    inside = {id(m) for block in blocks for m in block.modules()}
    last, seen_last, norms = blocks[-1], False, []
    for module in backbone.modules():
        seen_last = seen_last or module is last
        if seen_last and id(module) not in inside and isinstance(module, _NORM_TYPES):
            norms.append(module)
    return norms


def lora_target_modules(backbone: nn.Module) -> list[str]:
    """Names (as peft matches them: the last dotted component) of the modules LoRA adapts in this backbone.

    Hugging Face ViT/DINOv2: `query`, `value`; CLIP/SigLIP: `q_proj`, `v_proj`. torch `nn.TransformerEncoderLayer`
    blocks (tiny-vit): only the MLP, `linear1` and `linear2`. Its `nn.MultiheadAttention` cannot be adapted cleanly
    with peft: it reads `in_proj_weight` and `out_proj.weight` as tensors instead of calling modules, so a LoRA
    wrapper on `out_proj` is never used; peft's `nn.MultiheadAttention` support merges and unmerges the adapter into
    the frozen weights on every forward, which drifts them by rounding and re-registers them as new parameters; and
    its parameter-level LoRA (`target_parameters`) breaks the layer's eval-mode checks.
    """
    if any(isinstance(m, nn.TransformerEncoderLayer) for m in backbone.modules()):
        return ["linear1", "linear2"]
    linear_names = {name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    for targets in _HF_LORA_TARGETS:
        if set(targets) <= linear_names:
            return list(targets)
    raise BackboneError(
        f"cannot find attention projections for LoRA in {getattr(backbone, 'spec', type(backbone).__name__)}: "
        f"looked for nn.TransformerEncoderLayer or linear layers named {_HF_LORA_TARGETS}"
    )


def _inject_lora(backbone: Backbone, rank: int) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=lora_target_modules(backbone))
    inject_adapter_in_model(config, backbone)
    for name, param in backbone.named_parameters():
        param.requires_grad_("lora_" in name)
    for module in backbone.modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            module.register_forward_pre_hook(_keep_module_path)


def _keep_module_path(module: nn.Module, args: tuple) -> None:
    """A no-op hook whose presence turns off `nn.TransformerEncoderLayer`'s fused inference path.

    In eval mode without gradients that path reads the base weights directly and would silently skip the LoRA
    deltas, so a LoRA model would score differently under `torch.no_grad()` than in training. torch takes the
    ordinary module path whenever a layer carries hooks.
    """
    return None
