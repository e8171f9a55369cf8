"""Batch scoring: rewards for (image, video) items with media loaded ahead of the model, and `icreward score`."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from icreward.errors import IcrewardError
from icreward.scorer import Scorer


@dataclass(frozen=True)
class Item:
    """One (image, video) to score; `key` identifies it in the results."""

    key: str
    image: Path
    video: Path


@dataclass
class ItemResult:
    key: str
    reward: float | None = None
    error: str | None = None


def _loaders(scorer: Scorer, num_frames: int | None):
    from icreward.media import load_image, load_video

    frames = num_frames or scorer.num_frames

    @lru_cache(maxsize=64)  # the same conditioning image recurs across pairs and videos
    def image(path: Path) -> torch.Tensor:
        return load_image(path, max_side=scorer.max_side)

    def load(item: Item) -> tuple[Item, torch.Tensor | None, torch.Tensor | None, str | None]:
        try:
            return item, image(item.image), load_video(item.video, num_frames=frames, max_side=scorer.max_side), None
        except IcrewardError as e:
            return item, None, None, str(e)

    return load


def score_items(
    scorer: Scorer,
    items: Sequence[Item],
    *,
    batch_size: int = 8,
    num_frames: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Iterator[ItemResult]:
    """Yield one result per item, in order. Media are decoded in a background thread while the model runs.

    Consecutive items whose image and video tensors have the same shapes are scored as one batch; an item whose
    media cannot be read yields a result with `error` set and the rest go on.
    """
    from tqdm.auto import tqdm

    load = _loaders(scorer, num_frames)
    scorer = scorer.to(device).eval()
    bar = tqdm(
        total=len(items),
        desc=f"scoring ({scorer.name})",
        unit="video",
        disable=None if progress else True,
        file=sys.stderr,
        mininterval=1.0,
    )
    pending: list[tuple[Item, torch.Tensor, torch.Tensor]] = []

    def flush() -> Iterator[ItemResult]:
        if not pending:
            return
        images = torch.stack([p[1] for p in pending]).to(device)  # (B, 3, H, W)
        videos = torch.stack([p[2] for p in pending]).to(device)  # (B, T, 3, H, W)
        with torch.no_grad():
            rewards = scorer(images, videos).float().cpu().tolist()
        for (item, _, _), r in zip(pending, rewards, strict=True):
            yield ItemResult(
                item.key,
                reward=r if math.isfinite(r) else None,
                error=None if math.isfinite(r) else "reward is not finite",
            )
        bar.update(len(pending))
        pending.clear()

    with ThreadPoolExecutor(max_workers=2) as pool:
        for item, image, video, error in pool.map(load, items):
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
    bar.close()


def score_manifest(scorer: Scorer, manifest_path: str | Path, **kwargs) -> list[dict]:
    """One output record per input line of the manifest, in input order.

    Point records give `{"id", "reward"}`, pair records `{"id", "reward_a", "reward_b"}`; a line that is invalid
    or whose media cannot be read gives `{"id", "line", "error"}` and the others go on.
    """
    from icreward.manifest import PairRecord, load_manifest

    manifest = load_manifest(manifest_path, skip_bad=True, check_files=False)
    items: dict[str, Item] = {}
    for rec in manifest.records:
        videos = (("a", rec.video_a), ("b", rec.video_b)) if isinstance(rec, PairRecord) else (("", rec.video),)
        for tag, video in videos:
            items[f"{rec.id}\0{tag}"] = Item(f"{rec.id}\0{tag}", rec.image, video)
    results = {r.key: r for r in score_items(scorer, list(items.values()), **kwargs)}

    out: list[tuple[int, dict]] = [
        (err.line or 0, {"id": err.record_id, "line": err.line, "error": err.reason}) for err in manifest.skipped
    ]
    for rec in manifest.records:
        if isinstance(rec, PairRecord):
            parts = {"reward_a": results[f"{rec.id}\0a"], "reward_b": results[f"{rec.id}\0b"]}
        else:
            parts = {"reward": results[f"{rec.id}\0"]}
        errors = [r.error for r in parts.values() if r.error]
        if errors:
            out.append((rec.line, {"id": rec.id, "line": rec.line, "error": "; ".join(errors)}))
        else:
            out.append((rec.line, {"id": rec.id, **{k: r.reward for k, r in parts.items()}}))
    return [record for _, record in sorted(out, key=lambda x: x[0])]


def run_cli(args) -> int:
    """`icreward score`: one pair (`--image --video`) or a whole manifest (`--manifest --out`)."""
    from icreward import load
    from icreward.atomic import atomic_write

    torch.manual_seed(0)
    single = args.image is not None or args.video is not None
    if single == (args.manifest is not None):
        print("icreward score: give either --image and --video, or --manifest and --out", file=sys.stderr)
        return 2
    scorer = load(args.model)
    if single:
        if args.image is None or args.video is None:
            print("icreward score: --image and --video go together", file=sys.stderr)
            return 2
        item = Item("single", Path(args.image), Path(args.video))
        (result,) = score_items(scorer, [item], num_frames=args.num_frames, device=args.device, progress=False)
        if result.error:
            raise IcrewardError(result.error)
        if args.json:
            print(json.dumps({"image": args.image, "video": args.video, "model": args.model, "reward": result.reward}))
        else:
            print(f"{result.reward:.6f}")
        return 0
    if args.out is None:
        print("icreward score: --manifest needs --out", file=sys.stderr)
        return 2
    records = score_manifest(
        scorer, args.manifest, batch_size=args.batch_size, num_frames=args.num_frames, device=args.device
    )
    with atomic_write(args.out) as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    n_err = sum("error" in r for r in records)
    print(f"scored {len(records) - n_err} of {len(records)} lines of {args.manifest} -> {args.out}", file=sys.stderr)
    for r in records:
        if "error" in r:
            print(f"  line {r['line']} (id {r['id']}): {r['error']}", file=sys.stderr)
    return 0 if n_err == 0 else 1
