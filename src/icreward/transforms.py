"""Differentiable preprocessing: torch ops on `[0, 1]` float tensors, driven by a config stored with each scorer.

Training, scoring and guidance all call `preprocess(x, config)`, so they cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "area", "nearest")  # torch.nn.functional.interpolate modes resize accepts


@dataclass(frozen=True)
class PreprocessConfig:
    resize: int | None = 224  # shorter side is resized to this (None: no resize)
    crop: int | None = 224  # centre crop to crop x crop after resizing (None: no crop)
    square_resize: bool = False  # resize straight to resize x resize, ignoring aspect (DreamSim-style)
    interpolation: str = "bicubic"  # "bilinear" | "bicubic" | "area" | "nearest"
    antialias: bool = True  # antialias when shrinking (matches PIL's resize)
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)  # per-channel mean subtracted
    std: tuple[float, float, float] = field(default=IMAGENET_STD)  # per-channel std divided by

    def __post_init__(self) -> None:
        """Check every field (raises ValueError `"<field>: <problem>"`): a bad checkpoint config is refused at load."""
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: must be an integer >= 1 or null, got {value!r}")
        for name in ("square_resize", "antialias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation: must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.square_resize and self.resize is None:
            raise ValueError("square_resize: needs a resize size")
        for name in ("mean", "std"):
            value = getattr(self, name)
            numbers = isinstance(value, tuple | list) and len(value) == 3
            numbers = numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            if not numbers or not all(math.isfinite(v) for v in value) or (name == "std" and min(value) <= 0):
                want = "three positive finite numbers" if name == "std" else "three finite numbers"
                raise ValueError(f"{name}: must be {want}, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        """Build from `to_dict()` output (mean and std as lists); an unknown or ill-typed field raises ValueError."""
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown preprocessing fields: {', '.join(sorted(unknown))}")
        for k in ("mean", "std"):
            if isinstance(d.get(k), list | tuple):
                d[k] = tuple(d[k])
        return cls(**d)


def resize(x: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Resize `(..., 3, H, W)` as the config says; values are clamped back into [0, 1] (bicubic overshoots)."""
    if config.resize is None:
        return x
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    if config.square_resize:
        size = (config.resize, config.resize)
    else:
        scale = config.resize / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return x
    flat = x.reshape(-1, c, h, w)  # (B*, 3, H, W)
    kwargs = {}
    if config.interpolation in ("bilinear", "bicubic"):
        kwargs = {"align_corners": False, "antialias": config.antialias}
    out = F.interpolate(flat, size=size, mode=config.interpolation, **kwargs).clamp(0, 1)
    return out.reshape(*lead, c, *size)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop `(..., H, W)` to `size x size` (pads with zeros where the input is smaller)."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def normalize(x: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Subtract the mean and divide by the std, per channel, on `(..., 3, H, W)`."""
    mean = torch.tensor(config.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(config.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def preprocess(x: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Resize, centre-crop and normalise `(..., 3, H, W)` in [0, 1]; differentiable with respect to `x`."""
    if x.shape[-3] != 3:
        raise ValueError(f"expected 3 channels in dim -3, got shape {tuple(x.shape)}")
    x = resize(x, config)
    if config.crop is not None:
        x = center_crop(x, config.crop)
    return normalize(x, config)
