"""Conditioning images (and prompts) for fine-tuning: a folder of images or a manifest, resized to the generator's
frame size."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from icreward.errors import IcrewardError, ManifestError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


@dataclass
class ConditioningSet:
    """`images [N, 3, H, W]` in [0, 1] at the generator's size, one prompt (or None) and one name per image."""

    images: torch.Tensor
    prompts: list[str | None]
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


def fit_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`[3, h, w]` -> `[3, height, width]`: resized to cover the frame (aspect kept), centre-cropped."""
    _, h, w = image.shape
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    resized = F.interpolate(image[None], size=size, mode="bicubic", align_corners=False, antialias=True)[0]
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return resized[:, top : top + height, left : left + width].clamp(0, 1)


def _manifest_entries(path: Path) -> list[tuple[Path, str | None, str]]:
    """(image path, prompt, name) of each line of a JSONL manifest with an `image` key, images deduplicated (the
    first line's prompt kept), paths relative to the manifest's folder."""
    entries, seen = [], set()
    for line, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ManifestError(path, line, f"malformed JSON: {e.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise ManifestError(path, line, 'each line needs an "image" path')
        image = Path(record["image"])
        image = image if image.is_absolute() else path.parent / image
        if image in seen:
            continue
        seen.add(image)
        prompt = record.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise ManifestError(path, line, '"prompt" must be a string')
        entries.append((image, prompt, str(record.get("id", image.stem))))
    return entries


def load_conditioning(
    source: str | Path,
    height: int,
    width: int,
    prompts: list[str] | None = None,
    flag: str = "--images",
    limit: int | None = None,
) -> ConditioningSet:
    """Images from a folder (every image file, in name order) or a JSONL manifest (`image`, optional `prompt`).

    `prompts`: one prompt for all images (a list of one) or one per image, overriding the manifest's.
    """
    from icreward.media import load_image

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        entries = [(p, None, p.stem) for p in files]
    elif source.is_file() and source.suffix.lower() == ".jsonl":
        entries = _manifest_entries(source)
    elif source.exists():
        raise IcrewardError(f'{flag} {source}: give a folder of images or a .jsonl manifest with "image" keys')
    else:
        raise IcrewardError(f"{flag} {source}: no such file or folder")
    if limit is not None:
        entries = entries[:limit]
    if not entries:
        raise IcrewardError(f"{flag} {source}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    if prompts:
        if len(prompts) not in (1, len(entries)):
            raise IcrewardError(
                f"--prompts: give one prompt for all images or one per image ({len(entries)}), got {len(prompts)}"
            )
        chosen = prompts * len(entries) if len(prompts) == 1 else prompts
        entries = [(p, text, name) for (p, _, name), text in zip(entries, chosen, strict=True)]
    images = torch.stack(
        [fit_image(load_image(p, max_side=4 * max(height, width)), height, width) for p, _, _ in entries]
    )
    return ConditioningSet(images, [e[1] for e in entries], [e[2] for e in entries])
