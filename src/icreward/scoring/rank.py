"""Best-of-N: several candidate videos of one image sorted by reward (`icreward rank`, the server's `/rank`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from icreward.errors import IcrewardError
from icreward.interface import Scorer
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
