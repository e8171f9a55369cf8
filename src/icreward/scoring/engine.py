"""The scoring engine: rewards for (image, video) items given as files (`score_items`) or as tensors
(`score_tensors`), by one scorer or by several at once (an ensemble decodes each video once for all its members).

Every caller scores through here: `icreward score` and `rank`, `eval`, the study, the robustness check and the server.
Media are decoded in background threads while the model runs, a bounded number ahead, and items whose tensors have
equal shapes share a forward pass.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import torch

from icreward.errors import IcrewardError
from icreward.interface import Scorer
from icreward.rules import DECODE_WORKERS

_In = TypeVar("_In")
_Out = TypeVar("_Out")
NOT_FINITE = "reward is not finite"


@dataclass(frozen=True)
class Item:
    """One (image, video) to score; `key` identifies it in the results."""

    key: str
    image: Path
    video: Path
    prompt: str | None = None  # read by the text head (and guidance through it); other heads ignore it


@dataclass
class ItemResult:
    """The rewards of one item, one per scorer in the order given (None where not finite), or why there are none;
    with `heads=True` scoring, also every head of each scorer (`heads[i]`: name -> value, None where it has none)."""

    key: str
    rewards: tuple[float | None, ...] = ()
    error: str | None = None
    heads: tuple[dict[str, float | None], ...] = ()

    @property
    def reward(self) -> float | None:
        """The reward of the first (with one scorer: the) scorer."""
        return self.rewards[0] if self.rewards else None


def prefetch(fn: Callable[[_In], _Out], inputs: Iterable[_In], pool: ThreadPoolExecutor, ahead: int) -> Iterator[_Out]:
    """`map(fn, inputs)` run in `pool`, in order, with at most `ahead` calls in flight or finished and not yet taken,
    so decoded media never pile up in memory when the model is slower than the decoders."""
    queued: deque = deque()
    for x in inputs:
        queued.append(pool.submit(fn, x))
        if len(queued) >= ahead:
            yield queued.popleft().result()
    while queued:
        yield queued.popleft().result()


def shape_batches(shapes: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Indices of `shapes` grouped into batches of at most `batch_size` equal shapes, groups in first-seen order."""
    groups: dict[Hashable, list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    return [idx[i : i + batch_size] for idx in groups.values() for i in range(0, len(idx), batch_size)]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def batch_rewards(
    scorer: Scorer,
    images: Sequence[torch.Tensor],
    videos: Sequence[torch.Tensor],
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    prompts: Sequence[str | None] | None = None,
) -> list[float | None]:
    """Rewards of same-shape `[3,H,W]` images and `[T,3,H,W]` videos in one forward pass; None where not finite.

    `precision`: fp32 (no autocast), bf16 or fp16 (autocast on `device`, see `icreward.precision`); `prompts`: one
    per item (or None), for the text head."""
    from icreward.precision import autocast

    with torch.no_grad(), autocast(device, precision):
        rewards = scorer(torch.stack(list(images)).to(device), torch.stack(list(videos)).to(device), prompts)  # (B,)
    return [_finite(r) for r in rewards.float().cpu().tolist()]


def batch_heads(
    scorer: Scorer,
    images: Sequence[torch.Tensor],
    videos: Sequence[torch.Tensor],
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    prompts: Sequence[str | None] | None = None,
) -> list[dict[str, float | None]]:
    """Every head of `scorer` for same-shape items in one pass: one `{head: value or None}` per item."""
    from icreward.precision import autocast

    with torch.no_grad(), autocast(device, precision):
        heads = scorer.all_heads(torch.stack(list(images)).to(device), torch.stack(list(videos)).to(device), prompts)
    values = {name: v.float().cpu().tolist() for name, v in heads.items()}
    return [{name: _finite(v[i]) for name, v in values.items()} for i in range(len(images))]


def missing_reward(scorer: Scorer, prompt: str | None, head: str | None = None) -> str:
    """Why an item has no reward: the text head (or a prompt-judged metric) without a prompt, or not finite."""
    head = head or scorer.selected_head
    if head == "text" and not prompt:
        return "no prompt: the text head has no value without one (give --prompt, or a prompt in the manifest)"
    return NOT_FINITE


def score_tensors(
    scorer: Scorer,
    images: Sequence[torch.Tensor],
    videos: Sequence[torch.Tensor],
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> list[float | None]:
    """Rewards of in-memory pairs (`images[i]` `[3,H,W]` with `videos[i]` `[T,3,H,W]`, in [0, 1]), in order.

    Pairs of equal shapes share batches of up to `batch_size`; `device` defaults to the scorer's own; `precision`
    is fp32, bf16 or fp16 (`icreward.precision`).
    """
    from icreward.precision import check_precision

    check_precision(precision)
    if len(images) != len(videos):
        raise ValueError(f"{len(images)} images for {len(videos)} videos")
    if device is None:
        device = next((p.device for p in scorer.parameters()), torch.device("cpu"))
    rewards: list[float | None] = [None] * len(images)
    shapes = [(tuple(i.shape), tuple(v.shape)) for i, v in zip(images, videos, strict=True)]
    for batch in shape_batches(shapes, batch_size):
        out = batch_rewards(scorer, [images[i] for i in batch], [videos[i] for i in batch], device, precision)
        for i, r in zip(batch, out, strict=True):
            rewards[i] = r
    return rewards


def _media_loader(num_frames: int, max_side: int | None):
    from icreward.media import load_image, load_video

    @lru_cache(maxsize=64)  # the same conditioning image recurs across pairs and videos
    def image(path: Path) -> torch.Tensor:
        return load_image(path, max_side=max_side)

    def load(item: Item) -> tuple[Item, torch.Tensor | None, torch.Tensor | None, str | None]:
        try:
            return item, image(item.image), load_video(item.video, num_frames=num_frames, max_side=max_side), None
        except IcrewardError as e:
            return item, None, None, str(e)

    return load


def _sampling(scorers: Sequence[Scorer], num_frames: int | None) -> tuple[int, int | None]:
    """The frame count and decode size that every scorer of an ensemble reads its videos at."""
    frames = {s.num_frames if num_frames is None else num_frames for s in scorers}
    sides = {s.max_side for s in scorers}
    if len(frames) > 1 or len(sides) > 1:
        raise ValueError(
            f"the scorers sample videos differently (frames {sorted(frames)}, sizes {sides}); "
            "score them separately or give num_frames"
        )
    from icreward.media import check_num_frames  # refuses 0, -1 or 5000 before any item is read

    return check_num_frames(frames.pop()), sides.pop()


def score_items(
    scorers: Scorer | Sequence[Scorer],
    items: Sequence[Item],
    *,
    batch_size: int = 8,
    num_frames: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    precision: str = "fp32",
    heads: bool = False,
    decode_workers: int = DECODE_WORKERS,
) -> Iterator[ItemResult]:
    """Yield one result per item, in order, with one reward per scorer (several scorers: each video decoded once).
    With `heads`, each result also holds every head of every scorer (`ItemResult.heads`), from the same pass; the
    reward is then the selected head's value among them.

    Consecutive items whose image and video tensors have the same shapes are scored as one batch; an item whose
    media cannot be read, or whose reward is not finite, yields a result with `error` set and the rest go on.
    `precision`: fp32 (default, no autocast), bf16 or fp16 autocast on `device` (`icreward.precision`).
    `decode_workers` threads decode up to two batches ahead while the model runs; 0 decodes each item in the calling
    thread when the batch needs it (one thread in all, e.g. for several processes per machine).
    """
    from icreward.precision import autocast
    from icreward.progress import progress_bar

    autocast(device, precision)  # refuses an unknown precision, or one the device lacks, before any item is read
    if isinstance(decode_workers, bool) or not isinstance(decode_workers, int) or decode_workers < 0:
        raise ValueError(f"decode_workers must be an integer >= 0, got {decode_workers!r}")

    scorers = [scorers] if isinstance(scorers, Scorer) else list(scorers)
    load = _media_loader(*_sampling(scorers, num_frames))
    scorers = [s.to(device).eval() for s in scorers]
    bar = progress_bar(  # a bar on a terminal, a line now and then in a log, nothing when not `progress`
        total=len(items),
        desc=f"scoring ({', '.join(dict.fromkeys(s.name for s in scorers))})",
        unit="video",
        enabled=progress,
        mininterval=1.0,
    )
    pending: list[tuple[Item, torch.Tensor, torch.Tensor]] = []

    def flush() -> Iterator[ItemResult]:
        if not pending:
            return
        batch = list(pending)
        pending.clear()
        images, videos = [p[1] for p in batch], [p[2] for p in batch]
        prompts = [p[0].prompt for p in batch]
        if heads:
            per_heads = [batch_heads(s, images, videos, device, precision, prompts) for s in scorers]  # (S, B)
            per_scorer = [[h[s.selected_head] for h in hs] for s, hs in zip(scorers, per_heads, strict=True)]
        else:
            per_scorer = [batch_rewards(s, images, videos, device, precision, prompts) for s in scorers]  # (S, B)
        bar.update(len(batch))  # before the results go out: a caller may stop taking them at its last one
        for b, ((item, _, _), rewards) in enumerate(zip(batch, zip(*per_scorer, strict=True), strict=True)):
            missing = next((i for i, r in enumerate(rewards) if r is None), None)
            error = None if missing is None else missing_reward(scorers[missing], item.prompt)
            item_heads = tuple(hs[b] for hs in per_heads) if heads else ()
            yield ItemResult(item.key, rewards, error, item_heads)

    try:
        with ThreadPoolExecutor(max_workers=max(1, decode_workers)) as pool:  # no thread starts until a submit
            loaded = prefetch(load, items, pool, ahead=2 * batch_size) if decode_workers else map(load, items)
            for item, image, video, error in loaded:
                if error is not None:
                    yield from flush()
                    bar.update(1)
                    yield ItemResult(item.key, error=error)
                    continue
                if pending and (pending[0][1].shape != image.shape or pending[0][2].shape != video.shape):
                    yield from flush()
                pending.append((item, image, video))
                if len(pending) >= batch_size:
                    yield from flush()
            yield from flush()
    finally:
        bar.close()
