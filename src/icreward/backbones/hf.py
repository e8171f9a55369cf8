"""`hf:<hub-id-or-local-dir>`: Hugging Face transformers vision encoders as backbones, plus `dreamsim`.

Supported families, by the checkpoint's `config.json` `model_type`:

- dinov2, dinov2_with_registers, dinov3_vit, vit (e.g. facebook/dino-vitb16): `cls` is the final-norm CLS token,
  `patch` the final-norm patch tokens (register tokens skipped).
- clip, clip_vision_model: `cls` is the projected image embedding when the checkpoint has a visual projection (a
  full CLIP checkpoint always has), else the post-layernorm CLS; `patch` the post-layernorm patch tokens, unprojected
  (as open_clip returns them).
- siglip, siglip_vision_model: SigLIP has no CLS token: `cls` is the attention-pooling head's output, `patch` the
  final-norm tokens.

A full CLIP/SigLIP checkpoint (`CLIPConfig`, `SiglipConfig`) loads only its vision tower. Preprocessing comes from
the checkpoint's `preprocessor_config.json`; without one, from the defaults of the model family. `transformers` is
imported only when a backbone is built.

ViT and DINOv2 encoders computing in bf16 on the CPU without gradients (bf16 weights, or `--precision bf16`) run
their layers through `icreward.backbones.fused_vit` (one q/k/v GEMM, packed weights with fused bias, GELU and
residual epilogues, cache-sized chunks: 1.6x transformers' own forward for ViT-B/16); `fused=False` turns it off.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from icreward.backbones import fused_vit
from icreward.backbones.registry import Backbone, register_backbone, register_backbone_prefix
from icreward.errors import BackboneError
from icreward.transforms import PreprocessConfig

# model_type -> (transformers class, family). The family decides how `cls` and `patch` are read off the outputs.
_MODEL_TYPES = {
    "dinov2": ("Dinov2Model", "dino"),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", "dino"),
    "dinov3_vit": ("DINOv3ViTModel", "dino"),
    "vit": ("ViTModel", "dino"),
    "clip": ("CLIPVisionModelWithProjection", "clip"),
    "clip_vision_model": ("CLIPVisionModel", "clip"),
    "siglip": ("SiglipVisionModel", "siglip"),
    "siglip_vision_model": ("SiglipVisionModel", "siglip"),
}
# Keyword arguments of `from_pretrained` that say where files come from (also used to fetch the preprocessor config).
_HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "subfolder")
# PIL resample codes (as stored in preprocessor_config.json) -> torch interpolation mode. Lanczos (1) and hamming
# (5) have no torch equivalent and map to the closest smooth kernel.
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "area", 5: "bilinear"}


class HFBackbone(Backbone):
    """A transformers vision model returning `{"cls": [B, dim], "patch": [B, N, patch_dim]}`.

    `dim` is the width of `cls` and `patch_dim` that of `patch`; they differ only for CLIP with a projection.
    Tokens come back in the input's dtype whatever dtype the model runs in.
    """

    def __init__(
        self,
        model: nn.Module,
        config,
        preprocess_config: PreprocessConfig,
        has_projection: bool = False,
        fused: bool = True,
    ):
        super().__init__()
        self.model = model
        self.family = _MODEL_TYPES[config.model_type][1]
        self.has_projection = has_projection
        self.num_register_tokens = getattr(config, "num_register_tokens", 0) or 0
        self.use_head = getattr(config, "vision_use_head", True)
        self.patch_dim = config.hidden_size
        self.dim = config.projection_dim if has_projection else config.hidden_size
        self.preprocess_config = preprocess_config
        self._blocks = _find_blocks(model, config.num_hidden_layers)
        self.post_layernorm = _find_module(model, "post_layernorm") if self.family == "clip" else None
        # Why the fused bf16 CPU layers cannot run this model (None: they can, where `_fused_layers` allows).
        self.fused_unsupported = fused_vit.unsupported_reason(model, config) if fused else "turned off (fused=False)"
        self._fused: fused_vit.FusedViT | None = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        dtype = next(self.model.parameters()).dtype
        fused = self._fused_layers(x, dtype)
        if fused is not None:
            hidden = fused(x)  # (B, prefix + N, D)
        else:
            out = self.model(pixel_values=x.to(dtype))
            hidden = out.last_hidden_state  # (B, prefix + N, D)
        if self.family == "clip":
            tokens = self.post_layernorm(hidden)  # (B, 1 + N, D); the encoder output is not yet normalised
            cls, patch = (out.image_embeds if self.has_projection else tokens[:, 0]), tokens[:, 1:]
        elif self.family == "siglip":
            cls, patch = (out.pooler_output if self.use_head else hidden.mean(1)), hidden
        else:
            cls, patch = hidden[:, 0], hidden[:, 1 + self.num_register_tokens :]
        return {"cls": cls.to(x.dtype), "patch": patch.to(x.dtype)}

    def __getstate__(self) -> dict:  # copies and pickles leave the packed weights behind: they are rebuilt on use
        return {**super().__getstate__(), "_fused": None}

    def _fused_layers(self, x: torch.Tensor, dtype: torch.dtype) -> fused_vit.FusedViT | None:
        """The fused layers when they compute what the model would: CPU, no gradients, bf16 compute, no hooks."""
        if self.fused_unsupported is not None or x.device.type != "cpu" or torch.is_grad_enabled():
            return None
        autocast_bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        if not (dtype == torch.bfloat16 or (dtype == torch.float32 and autocast_bf16)):
            return None
        if fused_vit.has_hooks(self.model):
            return None
        if self._fused is None or self._fused.stale():
            self._fused = fused_vit.FusedViT(self.model)
        return self._fused

    def blocks(self) -> list[nn.Module]:
        return list(self._blocks)


@register_backbone_prefix("hf")
def build_hf_backbone(
    name_or_path: str, dtype: torch.dtype | str | None = None, fused: bool = True, **kwargs
) -> HFBackbone:
    """Load the vision encoder at a hub id or a local folder written by `save_pretrained`.

    `dtype` (e.g. `torch.bfloat16` or `"bfloat16"`) is the dtype the model runs in; `fused=False` keeps
    transformers' own forward for bf16 CPU inference too (see `fused_vit`); other kwargs go to
    `from_pretrained` (`revision`, `cache_dir`, `token`, `local_files_only`, `attn_implementation`, ...).
    Raises `BackboneError` naming the id when the weights cannot be reached or the model type is unsupported.
    """
    import transformers
    from transformers.utils import logging as hf_logging

    if _looks_like_path(name_or_path) and not Path(name_or_path).expanduser().is_dir():
        raise _load_error(name_or_path, "no such folder")
    try:
        config = transformers.AutoConfig.from_pretrained(name_or_path, **_hub_kwargs(kwargs))
    except Exception as e:  # any failure to reach the files becomes one clear error
        raise _load_error(name_or_path, e) from e
    if config.model_type not in _MODEL_TYPES:
        raise BackboneError(
            f"hf:{name_or_path}: model type {config.model_type!r} is not supported; "
            f"supported: {', '.join(sorted(_MODEL_TYPES))}"
        )
    class_name = _MODEL_TYPES[config.model_type][0]
    vision_config = getattr(config, "vision_config", None) or config  # a full CLIP/SigLIP checkpoint: vision tower
    has_projection = config.model_type == "clip" or "CLIPVisionModelWithProjection" in (config.architectures or [])
    if config.model_type == "clip":
        vision_config.projection_dim = config.projection_dim  # the vision sub-config keeps its own default
    elif has_projection:
        class_name = "CLIPVisionModelWithProjection"
    if config.model_type == "vit":
        kwargs.setdefault("add_pooling_layer", False)

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a vision tower from a full checkpoint lists every text weight as unexpected
    try:
        model, info = getattr(transformers, class_name).from_pretrained(
            name_or_path, config=vision_config, output_loading_info=True, **kwargs
        )
        processor = _read_preprocessor_json(name_or_path, kwargs)
    except Exception as e:
        raise _load_error(name_or_path, e) from e
    finally:
        hf_logging.set_verbosity(verbosity)
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise BackboneError(
            f"hf:{name_or_path}: the checkpoint lacks {len(missing)} weights of {class_name} "
            f"(e.g. {', '.join(missing[:3])}); it would run with random weights"
        )
    if processor is None:
        preprocess_config = _default_preprocess_config(config.model_type, vision_config)
    else:  # a bare int size means a square for the processors of ViT and SigLIP, a shorter side for the others
        square = config.model_type == "vit" or _MODEL_TYPES[config.model_type][1] == "siglip"
        preprocess_config = preprocess_config_from_hf(processor, default_to_square=square)
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return HFBackbone(model.eval(), vision_config, preprocess_config, has_projection, fused=fused)


def preprocess_config_from_hf(d: dict, default_to_square: bool = False) -> PreprocessConfig:
    """Translate a transformers `preprocessor_config.json` dict into a `PreprocessConfig`.

    `size` is `{"shortest_edge": s}` (resize the shorter side), `{"height": s, "width": s}` (square resize) or a
    bare int, read as one or the other per `default_to_square` (as the processor class would). Our inputs are in
    [0, 1]: `rescale_factor` and `do_rescale` are folded into the mean and std.
    """
    from transformers.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    resize, square = None, False
    if d.get("do_resize", True) and d.get("size") is not None:
        size = d["size"]
        if isinstance(size, int):
            resize, square = size, default_to_square
        elif "shortest_edge" in size:
            resize = size["shortest_edge"]
        elif size.get("height") is not None and size.get("height") == size.get("width"):
            resize, square = size["height"], True
        else:
            raise BackboneError(f"unsupported resize {size!r} in preprocessor config (square or shortest edge only)")
    crop = None
    crop_size = d.get("crop_size")
    if crop_size is not None and d.get("do_center_crop", True):
        crop = crop_size if isinstance(crop_size, int) else crop_size["height"]
        if not isinstance(crop_size, int) and crop_size["height"] != crop_size["width"]:
            raise BackboneError(f"unsupported crop {crop_size!r} in preprocessor config (square only)")
    mean, std = tuple(d.get("image_mean", IMAGENET_DEFAULT_MEAN)), tuple(d.get("image_std", IMAGENET_DEFAULT_STD))
    if not d.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    scale = 255.0 * (d.get("rescale_factor", 1 / 255) if d.get("do_rescale", True) else 1.0)  # input value of 1.0
    if abs(scale - 1.0) > 1e-6:
        mean, std = tuple(m / scale for m in mean), tuple(s / scale for s in std)
    resample = d.get("resample", 3)  # a PIL code, or a mode name in some configs
    return PreprocessConfig(
        resize=resize,
        crop=crop,
        square_resize=square,
        interpolation=_RESAMPLE.get(resample, "bicubic") if isinstance(resample, int) else str(resample).lower(),
        mean=mean,
        std=std,
    )


def _default_preprocess_config(model_type: str, vision_config) -> PreprocessConfig:
    """What the family's processor does when a checkpoint ships no preprocessor_config.json.

    DINO models use their hub checkpoints' processor (shorter side 256, centre crop 224: they interpolate position
    embeddings, so any size runs); CLIP, SigLIP and ViT use the model's own `image_size`, which their fixed position
    embeddings require.
    """
    from transformers.utils import constants

    imagenet = {"image_mean": constants.IMAGENET_DEFAULT_MEAN, "image_std": constants.IMAGENET_DEFAULT_STD}
    standard = {"image_mean": constants.IMAGENET_STANDARD_MEAN, "image_std": constants.IMAGENET_STANDARD_STD}
    openai = {"image_mean": constants.OPENAI_CLIP_MEAN, "image_std": constants.OPENAI_CLIP_STD}
    side = vision_config.image_size
    family = _MODEL_TYPES[model_type][1]
    if family == "clip":
        d = {"size": {"shortest_edge": side}, "crop_size": side, "resample": 3, **openai}
    elif family == "siglip":
        d = {"size": {"height": side, "width": side}, "resample": 3, **standard}
    elif model_type == "vit":
        d = {"size": {"height": side, "width": side}, "resample": 2, **standard}
    else:
        d = {"size": {"shortest_edge": 256}, "crop_size": 224, "resample": 3, **imagenet}
    return preprocess_config_from_hf(d)


def _read_preprocessor_json(name_or_path: str, kwargs: dict) -> dict | None:
    """The checkpoint's preprocessor_config.json, or None where it has none."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        path = local / kwargs.get("subfolder", "") / "preprocessor_config.json"
        return json.loads(path.read_text()) if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(name_or_path, "preprocessor_config.json", **_hub_kwargs(kwargs))
    except EntryNotFoundError:
        return None
    return json.loads(Path(path).read_text())


def _hub_kwargs(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def _load_error(name_or_path: str, reason: Exception | str) -> BackboneError:
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    one_line = (lines[0] if lines else type(reason).__name__)[:300]
    return BackboneError(
        f"cannot load backbone hf:{name_or_path}: {one_line}. Without hub access, point at a local folder saved "
        f"with save_pretrained instead: hf:/path/to/folder"
    )


def _find_blocks(model: nn.Module, depth: int) -> nn.ModuleList:
    """The encoder's layer list: the ModuleList holding `depth` layers (its attribute name varies by model)."""
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise BackboneError(f"{type(model).__name__}: no list of {depth} encoder layers found")


def _find_module(model: nn.Module, suffix: str) -> nn.Module:
    for name, module in model.named_modules():
        if name.split(".")[-1] == suffix:
            return module
    raise BackboneError(f"{type(model).__name__}: no {suffix} module found")


class DreamSimBackbone(Backbone):
    """DreamSim (Fu et al. 2023): an ensemble of DINO/CLIP/OpenCLIP ViT-B/16 tuned to human similarity judgements.

    Returns only `{"cls": [B, dim]}` (its embedding); it has no patch tokens. It takes 224x224 inputs in [0, 1]
    (square resize, bicubic, no crop) and normalises inside. `blocks()` is empty: it is used frozen.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.preprocess_config = PreprocessConfig(
            resize=224,
            crop=None,
            square_resize=True,
            interpolation="bicubic",
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
        )
        with torch.no_grad():
            self.dim = model.embed(torch.zeros(1, 3, 224, 224, device=next(model.parameters()).device)).shape[-1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cls": self.model.embed(x)}

    def blocks(self) -> list[nn.Module]:
        return []


@register_backbone("dreamsim")
def build_dreamsim_backbone(dreamsim_type: str = "ensemble", cache_dir: str | None = None) -> DreamSimBackbone:
    """DreamSim from the optional `dreamsim` package; its weights download on first use into `cache_dir`
    (default `~/.cache/dreamsim`)."""
    try:
        from dreamsim import dreamsim
    except ImportError as e:
        raise BackboneError(
            "backbone 'dreamsim' needs the optional dreamsim package: pip install dreamsim "
            "(it downloads its weights on first use, so it needs network access once)"
        ) from e
    cache_dir = cache_dir or str(Path("~/.cache/dreamsim").expanduser())
    try:
        model, _ = dreamsim(pretrained=True, device="cpu", cache_dir=cache_dir, dreamsim_type=dreamsim_type)
    except Exception as e:
        raise BackboneError(f"cannot load dreamsim ({dreamsim_type}) into {cache_dir}: {str(e).splitlines()[0]}") from e
    return DreamSimBackbone(model.eval())
