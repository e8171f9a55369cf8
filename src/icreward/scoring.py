"""Batch scoring: rewards for (image, video) items with media loaded ahead of the model, `icreward score` (resumable
manifest runs) and best-of-N ranking of several videos of one image (`icreward rank`)."""

from __future__ import annotations

import json
import math
import os
import sys
from collections import deque
from collections.abc import Callable, Container, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, TypeVar

import torch

from icreward.errors import IcrewardError
from icreward.scorer import Scorer

_In = TypeVar("_In")
_Out = TypeVar("_Out")


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


def batch_rewards(
    scorer: Scorer, images: Sequence[torch.Tensor], videos: Sequence[torch.Tensor], device: str | torch.device = "cpu"
) -> list[float | None]:
    """Rewards of same-shape `[3,H,W]` images and `[T,3,H,W]` videos in one forward pass; None where not finite."""
    with torch.no_grad():
        rewards = scorer(torch.stack(list(images)).to(device), torch.stack(list(videos)).to(device))  # (B,)
    return [r if math.isfinite(r) else None for r in rewards.float().cpu().tolist()]


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
    """Yield one result per item, in order. Media are decoded in background threads while the model runs.

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
        rewards = batch_rewards(scorer, [p[1] for p in pending], [p[2] for p in pending], device)
        for (item, _, _), r in zip(pending, rewards, strict=True):
            yield ItemResult(item.key, reward=r, error=None if r is not None else "reward is not finite")
        bar.update(len(pending))
        pending.clear()

    with ThreadPoolExecutor(max_workers=2) as pool:
        for item, image, video, error in prefetch(load, items, pool, ahead=2 * batch_size):
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


# ---- manifests: `icreward score --manifest`


def _reward_videos(record) -> list[tuple[str, Path]]:
    """(output key, video) of each video of a manifest record: `reward_a`/`reward_b` for pairs, else `reward`."""
    from icreward.manifest import PairRecord

    if isinstance(record, PairRecord):
        return [("reward_a", record.video_a), ("reward_b", record.video_b)]
    return [("reward", record.video)]


def iter_manifest_records(
    scorer: Scorer, manifest, *, skip: Container[str] = frozenset(), **kwargs
) -> Iterator[tuple[int, dict]]:
    """`(line, output record)` of each line of a loaded `Manifest` whose id is not in `skip`, each yielded as soon as
    its videos are scored: the manifest's invalid lines first, then the records in input order.

    Records are `{"id", "reward"}`, `{"id", "reward_a", "reward_b"}` or `{"id", "line", "error"}`; `kwargs` go to
    `score_items`.
    """
    for err in manifest.skipped:
        yield err.line or 0, {"id": err.record_id, "line": err.line, "error": err.reason}
    todo = [rec for rec in manifest.records if rec.id not in skip]
    items = [Item(f"{rec.id}\0{key}", rec.image, video) for rec in todo for key, video in _reward_videos(rec)]
    results = score_items(scorer, items, **kwargs)
    for rec in todo:
        parts = {key: next(results) for key, _ in _reward_videos(rec)}
        errors = [r.error for r in parts.values() if r.error]
        if errors:
            yield rec.line, {"id": rec.id, "line": rec.line, "error": "; ".join(errors)}
        else:
            yield rec.line, {"id": rec.id, **{key: r.reward for key, r in parts.items()}}


def score_manifest(scorer: Scorer, manifest_path: str | Path, **kwargs) -> list[dict]:
    """One output record per input line of the manifest, in input order.

    Point records give `{"id", "reward"}`, pair records `{"id", "reward_a", "reward_b"}`; a line that is invalid
    or whose media cannot be read gives `{"id", "line", "error"}` and the others go on.
    """
    from icreward.manifest import load_manifest

    manifest = load_manifest(manifest_path, skip_bad=True, check_files=False)
    return [record for _, record in sorted(iter_manifest_records(scorer, manifest, **kwargs), key=lambda x: x[0])]


def partial_path(out: str | Path) -> Path:
    """The side file where a manifest run appends finished results while it goes: `rewards.partial.jsonl`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial{out.suffix or '.jsonl'}")


def _finished_lines(path: Path) -> dict[str, tuple[str, dict]]:
    """id -> (line, record) of the result lines of an earlier run that are whole and not errors (a torn last line
    of a killed run's side file does not parse and is left out)."""
    if not path.is_file():
        return {}
    finished = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str) and "error" not in record:
            finished[record["id"]] = (line.strip(), record)
    return finished


class _SideFile:
    """Appends result lines to the side file, flushed to the OS at once (a killed process loses none) and fsynced
    every `fsync_every` lines (a machine crash loses at most that many)."""

    def __init__(self, path: Path, fsync_every: int):
        self.path, self.fsync_every, self.unsynced = path, max(1, fsync_every), 0
        self.file: IO[str] | None = None

    def append(self, line: str) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a", encoding="utf-8")
            torn = False
            if self.file.tell():
                with self.path.open("rb") as f:
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
            if torn:  # end the torn line of a killed run, so the next line parses
                self.file.write("\n")
        self.file.write(line + "\n")
        self.file.flush()
        self.unsynced += 1
        if self.unsynced >= self.fsync_every:
            self.sync()

    def sync(self) -> None:
        if self.file is not None and self.unsynced:
            os.fsync(self.file.fileno())
            self.unsynced = 0

    def close(self) -> None:
        if self.file is not None:
            self.sync()
            self.file.close()
            self.file = None


def score_manifest_to_file(
    scorer: Scorer,
    manifest_path: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    flush_every: int = 64,
    log: Callable[[str], None] | None = None,
    **kwargs,
) -> list[dict]:
    """Score a manifest into the JSONL file `out` (one line per input line, in input order) and return the records.

    `out` is written atomically at the end. Meanwhile each finished result is appended to `partial_path(out)`
    (fsynced every `flush_every` results), which is removed once `out` is written. With `resume`, the ids that
    already have a result (not an error) in `out` or in the side file keep that line and are not scored again;
    the rest are. Resume with the same model: the lines kept are not checked against it.
    """
    from icreward.atomic import atomic_write
    from icreward.manifest import load_manifest

    out = Path(out)
    side = partial_path(out)
    manifest = load_manifest(manifest_path, skip_bad=True, check_files=False)
    rows: list[tuple[int, dict, str]] = []  # (manifest line, record, output line)
    if resume:
        finished = {**_finished_lines(out), **_finished_lines(side)}
        for rec in manifest.records:
            line, record = finished.get(rec.id, ("", {}))
            if all(key in record for key, _ in _reward_videos(rec)):
                rows.append((rec.line, record, line))
        if log is not None:
            log(f"resuming: {len(rows)} of {len(manifest.records)} records already scored in {out} / {side.name}")
    else:
        side.unlink(missing_ok=True)
    sidefile = _SideFile(side, flush_every)
    try:
        kept = {record["id"] for _, record, _ in rows}
        for line_no, record in iter_manifest_records(scorer, manifest, skip=kept, **kwargs):
            line = json.dumps(record)
            if "error" not in record:
                sidefile.append(line)
            rows.append((line_no, record, line))
    finally:
        sidefile.close()
    rows.sort(key=lambda row: row[0])
    with atomic_write(out) as f:
        for _, _, line in rows:
            f.write(line + "\n")
    side.unlink(missing_ok=True)
    return [record for _, record, _ in rows]


# ---- best-of-N: `icreward rank`


def _shared_image_rewards(model: Scorer, image: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
    """Rewards `[B]` of one image `[3,H,W]` against `videos [B,T,3,H,W]` for a learned model, the image through the
    backbone once: the B videos go in as one clip of B*T frames (the backbone sees frames one by one) and the
    image tokens are shared by every video in the head."""
    b, t = videos.shape[:2]
    img_tokens, vid_tokens = model.encode(image[None], videos.flatten(0, 1)[None])  # (1, ...), (1, B*T, ...)
    img_tokens = {k: v.expand(b, *v.shape[1:]) for k, v in img_tokens.items()}  # (B, ...)
    vid_tokens = {k: v[0].unflatten(0, (b, t)) for k, v in vid_tokens.items()}  # (B, T, ...)
    return model.normalize(model.head(img_tokens, vid_tokens))


def rank_videos(
    scorer: Scorer,
    image: str | Path | torch.Tensor,
    videos: Sequence[str | Path],
    batch_size: int = 8,
    *,
    num_frames: int | None = None,
    device: str | torch.device = "cpu",
) -> list[tuple[str, float | None, str | None]]:
    """Best-of-N: `videos` of one `image` sorted by reward, highest first, as `(video, reward, error)`.

    The image is decoded once (or given as a `[3,H,W]` tensor in [0, 1]); a learned model (one with `encode` and
    `head`) also encodes it once for all videos, a metric scores the videos in batches against it. A video that
    cannot be read comes last with reward None and its error; equal rewards keep input order. An image that
    cannot be read raises `MediaError`.
    """
    from icreward.media import load_image, load_video

    scorer = scorer.to(device).eval()
    frames = num_frames or scorer.num_frames
    if not isinstance(image, torch.Tensor):
        image = load_image(image, max_side=scorer.max_side)
    image = image.to(device)
    learned = all(hasattr(scorer, name) for name in ("encode", "head", "normalize"))
    rewards: list[float | None] = [None] * len(videos)
    errors: list[str | None] = [None] * len(videos)
    pending: dict[tuple, list[tuple[int, torch.Tensor]]] = {}  # video shape -> (index, video) waiting for a batch

    def flush(shape: tuple) -> None:
        batch = pending.pop(shape)
        clips = torch.stack([v for _, v in batch]).to(device)  # (B, T, 3, H, W)
        with torch.no_grad():
            if learned:
                out = _shared_image_rewards(scorer, image, clips)
            else:
                out = scorer(image.expand(len(batch), *image.shape), clips)  # the one image, broadcast: (B, 3, H, W)
        for (i, _), r in zip(batch, out.float().cpu().tolist(), strict=True):
            rewards[i], errors[i] = (r, None) if math.isfinite(r) else (None, "reward is not finite")

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


# ---- command line


def run_cli(args) -> int:
    """`icreward score`: one pair (`--image --video`) or a whole manifest (`--manifest --out`, `--resume`)."""
    from icreward import load

    torch.manual_seed(0)
    single = args.image is not None or args.video is not None
    if single == (args.manifest is not None):
        print("icreward score: give either --image and --video, or --manifest and --out", file=sys.stderr)
        return 2
    if single and (args.image is None or args.video is None):
        print("icreward score: --image and --video go together", file=sys.stderr)
        return 2
    if not single and args.out is None:
        print("icreward score: --manifest needs --out", file=sys.stderr)
        return 2
    scorer = load(args.model)
    if single:
        item = Item("single", Path(args.image), Path(args.video))
        (result,) = score_items(scorer, [item], num_frames=args.num_frames, device=args.device, progress=False)
        if result.error:
            raise IcrewardError(result.error)
        if args.json:
            print(json.dumps({"image": args.image, "video": args.video, "model": args.model, "reward": result.reward}))
        else:
            print(f"{result.reward:.6f}")
        return 0
    try:
        records = score_manifest_to_file(
            scorer,
            args.manifest,
            args.out,
            resume=args.resume,
            flush_every=args.flush_every,
            log=lambda msg: print(msg, file=sys.stderr),
            batch_size=args.batch_size,
            num_frames=args.num_frames,
            device=args.device,
        )
    except KeyboardInterrupt:
        side = partial_path(args.out)
        if side.is_file():
            print(f"finished results are in {side}; run again with --resume to go on", file=sys.stderr)
        raise
    n_err = sum("error" in r for r in records)
    print(f"scored {len(records) - n_err} of {len(records)} lines of {args.manifest} -> {args.out}", file=sys.stderr)
    for r in records:
        if "error" in r:
            print(f"  line {r['line']} (id {r['id']}): {r['error']}", file=sys.stderr)
    return 0 if n_err == 0 else 1


def run_rank_cli(args) -> int:
    """`icreward rank`: the videos of one image sorted by reward; unreadable videos last, with their error."""
    from icreward import load

    for flag, value in (("--top", args.top), ("--num-frames", args.num_frames), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            print(f"icreward rank: {flag} must be at least 1, got {value}", file=sys.stderr)
            return 2
    torch.manual_seed(0)
    scorer = load(args.model)
    ranking = rank_videos(
        scorer, args.image, args.videos, args.batch_size, num_frames=args.num_frames, device=args.device
    )
    shown = ranking[: args.top] if args.top else ranking
    if args.json:
        entries = [
            {"video": video, "reward": reward, "rank": rank, **({"error": error} if error else {})}
            for rank, (video, reward, error) in enumerate(shown, start=1)
        ]
        print(json.dumps({"image": args.image, "model": args.model, "ranking": entries}))
    else:
        for rank, (video, reward, error) in enumerate(shown, start=1):
            print(f"{rank:>4}  {reward:>10.6f}  {video}" if error is None else f"{rank:>4}  {'error':>10}  {error}")
    for _, _, error in ranking[len(shown) :]:  # failures that --top left out of the table
        if error:
            print(f"icreward rank: could not score {error}", file=sys.stderr)
    return 1 if any(error for _, _, error in ranking) else 0
