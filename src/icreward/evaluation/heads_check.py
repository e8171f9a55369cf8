"""Checks of the task heads on real I2V outputs and on rendered camera moves (issue 11's goals).

- `static_check`: can a reward be won without moving? Against each real video of `shared/real-i2v` and
  `shared/real-i2v-pia`, three videos a generator could fall back to: a frozen copy of the image (the image for
  every frame), the image jittering in place (small random shifts and turns every frame, no net path), and the real
  video looping back and forth (played forward over its whole length and back, in the same number of frames). Per
  head: how often each beats (or ties) the real video.
- `camera_check`: the text head on videos rendered from real photographs with each of VBench-I2V's seven camera moves
  (`icreward.synth.camera_set`): given one move's prompt, does that move's video outrank each other move's video?
- `prompt_check`: on the PIA folder, whose images each have several prompts: how often a video scores higher under
  its own prompt than under the other prompts of the same image (no goal: the first real-world text check).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from icreward.interface import Scorer

FALLBACKS = ("frozen", "jitter", "loop")
JITTER_SHIFT = 0.03  # std of the per-frame shift, in frame units (the frame spans 2)
JITTER_TURN = 0.02  # std of the per-frame turn, radians


@dataclass
class RealVideo:
    id: str
    folder: str
    image_key: str  # "<folder>/<image file>"
    image: torch.Tensor  # (3, h, w): the input image fitted to the video's frames
    video: torch.Tensor  # (T, 3, h, w)
    prompt: str | None
    split: str  # "select" or "report": the real-video check's halves (`robustness.real_i2v_split`)


def real_videos(roots: Sequence[str | Path], num_frames: int = 16, max_side: int = 256) -> list[RealVideo]:
    """Every (image, video, prompt) of the `manifest.jsonl` of each folder, the image fitted to the frames' size."""
    from icreward.evaluation.robustness import _fit, _image_key, _records, real_i2v_split
    from icreward.media import load_image, load_video

    roots = [Path(r) for r in roots]
    split = real_i2v_split(roots)
    out = []
    for root in roots:
        for r in _records(root):
            video = load_video(r.video, num_frames=num_frames, max_side=max_side)
            image = _fit(load_image(r.image, max_side=max_side)[None], video)[0]
            key = _image_key(root, r)
            out.append(RealVideo(r.id, root.name, key, image, video, r.prompt, split[key]))
    return out


def jitter(image: torch.Tensor, frames: int, seed: int) -> torch.Tensor:
    """`image (3, h, w)` shaken in place for `frames` frames `(T, 3, h, w)`: frame 0 is the image, every other frame
    a small random shift and turn of it (border pixels repeated), no net path."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randn(frames, 2, generator=g) * JITTER_SHIFT
    turn = torch.randn(frames, generator=g) * JITTER_TURN
    shift[0], turn[0] = 0, 0
    cos, sin = turn.cos(), turn.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], -1), torch.stack([sin, cos, shift[:, 1]], -1)], 1)
    grid = F.affine_grid(theta, [frames, 3, *image.shape[-2:]], align_corners=False)
    return F.grid_sample(image.expand(frames, -1, -1, -1), grid, padding_mode="border", align_corners=False)


def loop(video: torch.Tensor) -> torch.Tensor:
    """`video (T, 3, h, w)` played forward over its whole length and back in T frames (a triangle wave of frame
    indices: 0 ... T-1 ... 0, at about twice the speed; frame T // 2 shows the input's last)."""
    t = video.shape[0]
    peak = t // 2
    k = torch.arange(t, dtype=torch.float32)
    up = (t - 1) * k / max(peak, 1)
    down = (t - 1) * (t - 1 - k) / max(t - 1 - peak, 1)
    index = torch.where(k <= peak, up, down).round().long().clamp(0, t - 1)
    return video[index]


def fallbacks(item: RealVideo, seed: int = 0) -> dict[str, torch.Tensor]:
    """The frozen copy, the jitter and the loop of one real video (see the module docstring)."""
    t = item.video.shape[0]
    return {
        "frozen": item.image[None].expand(t, -1, -1, -1).contiguous(),
        "jitter": jitter(item.image, t, seed),
        "loop": loop(item.video),
    }


def _heads(scorer: Scorer, image: torch.Tensor, videos: list[torch.Tensor], prompt: str | None) -> dict[str, list]:
    """Every head of `scorer` for videos of one image (NaN where a head has no value)."""
    with torch.no_grad():
        out = scorer.all_heads(image[None].expand(len(videos), -1, -1, -1), torch.stack(videos), [prompt] * len(videos))
    return {name: value.float().tolist() for name, value in out.items()}


def static_check(scorer: Scorer, items: Sequence[RealVideo], seed: int = 0) -> dict:
    """Per head and fallback: `{"wins": rate at which the fallback scores >= the real video, "n"}`, over `items`,
    plus the same per folder (`per_folder`) and per half of the real-video check's split (`per_split`: `select`,
    the images recipes may be chosen on, and `report`; `icreward.evaluation.robustness.real_i2v_split`)."""
    counts: dict[tuple[str, str, tuple[str, str]], list[int]] = {}
    for i, item in enumerate(items):
        others = fallbacks(item, seed=seed + i)
        values = _heads(scorer, item.image, [item.video, *others.values()], item.prompt)
        for head, v in values.items():
            if not math.isfinite(v[0]):
                continue
            for k, name in enumerate(others, start=1):
                for group in (("all", ""), ("per_folder", item.folder), ("per_split", item.split)):
                    c = counts.setdefault((head, name, group), [0, 0])
                    c[0] += v[k] >= v[0]
                    c[1] += 1
    out: dict = {}
    for (head, name, (kind, key)), (wins, n) in sorted(counts.items()):
        parent = out if kind == "all" else out.setdefault(kind, {}).setdefault(key, {})
        parent.setdefault(head, {})[name] = {"wins": wins / n, "n": n}
    return out


def camera_check(scorers: dict[str, Scorer], camera_dir: str | Path, head: str = "text") -> dict:
    """Accuracy of each scorer's `head` (a metric: its own reward) on the camera set's pairs (prompt of move P; A =
    P's video, B = another move's video: A should score higher), overall and per prompted move."""
    from icreward.evaluation.evaluate import head_reward_pairs
    from icreward.manifest import load_manifest

    manifest = load_manifest(Path(camera_dir) / "pairs.jsonl")
    moves = [r.extra.get("camera_a") or _move_of(r.prompt) for r in manifest.records]
    out = {}
    for name, scorer in scorers.items():
        rewards, _ = head_reward_pairs(scorer, manifest, batch_size=8, device="cpu")
        values = rewards[head if head in rewards else scorer.dimension]
        correct = values[:, 0] > values[:, 1]
        per_move = {}
        for move in dict.fromkeys(moves):
            mask = np.array([m == move for m in moves])
            per_move[move] = float(correct[mask].mean())
        out[name] = {"accuracy": float(correct.mean()), "n_pairs": int(len(correct)), "per_move": per_move}
    return out


def _move_of(prompt: str | None) -> str | None:
    from icreward.prompts import camera_move

    return camera_move(prompt)


def prompt_check(scorer: Scorer, items: Sequence[RealVideo], head: str = "text") -> dict:
    """How often a video's `head` value under its own prompt beats its value under each other prompt of the same
    image (images with one prompt, and videos without one, are left out): `{"rate", "n", "per_image"}`."""
    prompts: dict[str, list[str]] = {}
    for item in items:
        if item.prompt:
            prompts.setdefault(item.image_key, [])
            if item.prompt not in prompts[item.image_key]:
                prompts[item.image_key].append(item.prompt)
    wins, n, per_image = 0, 0, {}
    for item in items:
        others = [p for p in prompts.get(item.image_key, []) if p != item.prompt]
        if not item.prompt or not others:
            continue
        with torch.no_grad():
            b = 1 + len(others)
            values = scorer.all_heads(
                item.image[None].expand(b, -1, -1, -1),
                item.video[None].expand(b, -1, -1, -1, -1),
                [item.prompt, *others],
            )[head].tolist()
        won = sum(values[0] > v for v in values[1:])
        wins, n = wins + won, n + len(others)
        stats = per_image.setdefault(item.image_key, [0, 0])
        stats[0], stats[1] = stats[0] + won, stats[1] + len(others)
    return {
        "rate": wins / n if n else None,
        "n": n,
        "per_image": {k: {"rate": w / m, "n": m} for k, (w, m) in per_image.items()},
    }
