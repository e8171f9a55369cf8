"""Best-of-N: several candidate videos of one image sorted by reward (`icreward rank`, the server's `/rank`), over
a manifest of many images (`rank_manifest`), and the (best, worst) preference pairs of each (`preference_pairs`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from icreward.errors import IcrewardError
from icreward.interface import Scorer
from icreward.manifest import PointRecord
from icreward.scoring.engine import missing_reward, prefetch


def rank_videos(
    scorer: Scorer,
    image: str | Path | torch.Tensor,
    videos: Sequence[str | Path],
    batch_size: int = 8,
    *,
    num_frames: int | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    prompt: str | None = None,
    head: str | None = None,
) -> list[tuple[str, float | None, str | None]]:
    """Best-of-N: `videos` of one `image` sorted by reward, highest first, as `(video, reward, error)`.

    The image is decoded once (or given as a `[3,H,W]` tensor in [0, 1]) and scored against batches of videos with
    `scorer.rewards_for_image` (a learned model encodes it once for all of them). A video that cannot be read comes
    last with reward None and its error; equal rewards keep input order. An image that cannot be read raises
    `MediaError`. `precision`: fp32 (default, no autocast), bf16 or fp16 autocast on `device` (`icreward.precision`).
    `prompt` is the prompt all the videos were made from (read by the text head and guidance); `head` ranks by that
    head (default: the scorer's selected one), computed with the others in one pass.
    """
    from icreward.media import check_num_frames, load_image, load_video
    from icreward.precision import autocast

    autocast(device, precision)  # refuses an unknown precision, or one the device lacks, before anything is read

    scorer = scorer.to(device).eval()
    own = scorer.selected_head
    if head is not None:
        scorer.check_head(head)
    frames = check_num_frames(scorer.num_frames if num_frames is None else num_frames)
    if not isinstance(image, torch.Tensor):
        image = load_image(image, max_side=scorer.max_side)
    image = image.to(device)
    rewards: list[float | None] = [None] * len(videos)
    errors: list[str | None] = [None] * len(videos)
    pending: dict[tuple, list[tuple[int, torch.Tensor]]] = {}  # video shape -> (index, video) waiting for a batch

    def flush(shape: tuple) -> None:
        batch = pending.pop(shape)
        clips = torch.stack([v for _, v in batch]).to(device)  # (B, T, 3, H, W)
        prompts = [prompt] * len(batch)
        with torch.no_grad(), autocast(device, precision):
            if head is None or head == own:
                out = scorer.rewards_for_image(image, clips, prompts)  # (B,)
            else:
                out = scorer.all_heads(image.expand(len(batch), *image.shape), clips, prompts)[head]
        for (i, _), r in zip(batch, out.float().cpu().tolist(), strict=True):
            rewards[i], errors[i] = (r, None) if math.isfinite(r) else (None, missing_reward(scorer, prompt, head))

    def load(i: int) -> tuple[int, torch.Tensor | None]:
        try:
            return i, load_video(videos[i], num_frames=frames, max_side=scorer.max_side)
        except IcrewardError as e:
            errors[i] = str(e)
            return i, None

    with ThreadPoolExecutor(max_workers=2) as pool:
        for i, video in prefetch(load, range(len(videos)), pool, ahead=2 * batch_size):
            if video is not None:
                pending.setdefault(tuple(video.shape), []).append((i, video))
                if len(pending[tuple(video.shape)]) >= batch_size:
                    flush(tuple(video.shape))
    for shape in list(pending):
        flush(shape)
    order = sorted(range(len(videos)), key=lambda i: (rewards[i] is None, -(rewards[i] or 0.0), i))
    return [(str(videos[i]), rewards[i], errors[i]) for i in order]


@dataclass
class GroupRanking:
    """The candidates of one (image, prompt) in a manifest, best first: `ranking` holds `(record id, video, reward or
    None, error or None)` as `rank_videos` orders them."""

    image: Path
    prompt: str | None
    ranking: list[tuple[str, str, float | None, str | None]]


def candidate_groups(records: Sequence[PointRecord]) -> list[tuple[Path, str | None, list[PointRecord]]]:
    """Pointwise records grouped by what conditioned the generation: the image file and the prompt (videos of one
    image made from different prompts are not candidates of one request). Groups in order of first appearance."""
    groups: dict[tuple[Path, str | None], list[PointRecord]] = {}
    for record in records:
        groups.setdefault((record.image, record.prompt), []).append(record)
    return [(image, prompt, members) for (image, prompt), members in groups.items()]


def rank_manifest(
    scorer: Scorer,
    records: Sequence[PointRecord],
    batch_size: int = 8,
    **kwargs,
) -> list[GroupRanking]:
    """Best-of-N over a manifest: each (image, prompt) group's videos ranked by `rank_videos` (the image decoded and
    encoded once per group; `kwargs` as there: num_frames, device, precision, head)."""
    out = []
    for image, prompt, members in candidate_groups(records):
        ids: dict[str, list[str]] = {}
        for r in members:
            ids.setdefault(str(r.video), []).append(r.id)
        ranking = rank_videos(scorer, image, [r.video for r in members], batch_size, prompt=prompt, **kwargs)
        named = [(ids[video].pop(0), video, reward, error) for video, reward, error in ranking]
        out.append(GroupRanking(image, prompt, named))
    return out


def preference_pairs(
    groups: Sequence[GroupRanking], folder: str | Path, *, min_gap: float = 0.0, head: str, model: str
) -> tuple[list[dict], list[str]]:
    """Each group's (best, worst) scored candidates as a pair record (the project's pair format, paths relative to
    `folder`, where the pair manifest goes) for preference training, and a note for each group left out.

    A record: `id` (`<best id>-vs-<worst id>`, made unique), `image`, `video_a` (the best), `video_b` (the worst),
    `label` "A" (what `icreward train` reads), `prompt` where the group has one, then what DPO trainers read:
    `chosen` / `rejected` (the same two videos) and `label_0` 1.0 (Diffusion-DPO's Pick-a-Pic convention: the first
    video is preferred), and `reward_a`, `reward_b`, `reward_gap`, `n_candidates`, `head`, `model`. Left out: a
    group with fewer than two scored videos, or whose best and worst rewards differ by `min_gap` or less (no
    preference worth learning)."""
    folder = Path(folder).resolve()
    pairs, notes, used = [], [], set()
    for group in groups:
        scored = [(i, v, r) for i, v, r, error in group.ranking if error is None and r is not None]
        where = f"{group.image}" + (f" (prompt {group.prompt!r})" if group.prompt else "")
        if len(scored) < 2:
            notes.append(f"{where}: {len(scored)} scored candidate{'' if len(scored) == 1 else 's'}, no pair")
            continue
        (best_id, best, r_best), (worst_id, worst, r_worst) = scored[0], scored[-1]
        if r_best - r_worst <= min_gap:
            notes.append(f"{where}: best and worst rewards differ by {r_best - r_worst:.4g} <= --min-gap, no pair")
            continue
        a, b = _relative(best, folder), _relative(worst, folder)
        pair_id = f"{best_id}-vs-{worst_id}"
        if pair_id in used:  # ids are unique within a manifest, not across the several a run may read
            pair_id = f"{pair_id}#{sum(1 for u in used if u.startswith(pair_id))}"
        used.add(pair_id)
        record = {"id": pair_id, "image": _relative(group.image, folder), "video_a": a, "video_b": b}
        record["label"] = "A"
        if group.prompt:
            record["prompt"] = group.prompt
        record |= {"chosen": a, "rejected": b, "label_0": 1.0, "reward_a": r_best, "reward_b": r_worst}
        record |= {"reward_gap": r_best - r_worst, "n_candidates": len(scored), "head": head, "model": model}
        pairs.append(record)
    return pairs, notes


def _relative(path: str | Path, folder: Path) -> str:
    """`path` relative to `folder` (how manifests name media), or absolute where no relative path exists."""
    try:
        return os.path.relpath(Path(path).resolve(), folder)
    except ValueError:  # another drive (Windows)
        return str(Path(path).resolve())
