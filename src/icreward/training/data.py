"""Training data: manifest records as examples, media or cached-token datasets, and the data order of each epoch.

An `Example` is one image with one video (pointwise) or two (a pair). Datasets return
`{"index", "image", "videos", "label", "targets", "group"}`: pixels `image [3,S,S]`, `videos [V,T,3,S,S]`, or the
backbone tokens of both from the feature cache (`image {"cls": [D], "patch": [N,D]}`, `videos {"cls": [V,T,D],
"patch": [V,T,N,D]}`). The order of an epoch's batches is a function of (seed, epoch) alone, so a resumed run sees
the very batches the interrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from icreward.errors import IcrewardError, MediaError
from icreward.manifest import Manifest, PairRecord, PointRecord
from icreward.transforms import PreprocessConfig, center_crop, resize

if TYPE_CHECKING:
    from icreward.training.cache import FeatureCache

LABEL_VALUES = {"A": 1, "B": -1, "tie": 0}  # pair label -> +1 A preferred, -1 B preferred, 0 tie


@dataclass(frozen=True)
class Example:
    image: Path
    videos: tuple[Path, ...]  # (video_a, video_b) of a pair, (video,) of a pointwise record
    label: int  # +1 A preferred, -1 B preferred, 0 tie (0 for pointwise records)
    targets: tuple[float, ...]  # regression targets of the videos (mse), NaN where the record has no score
    group: str  # the source image: k-fold groups, and same-source videos are no in-batch negatives
    where: str  # "manifest:line (id)", for error messages


def source_of(record: PairRecord | PointRecord) -> str:
    """The source image a record was made from: its `source` field where given, else its image file."""
    source = record.extra.get("source")
    return str(source) if source is not None else str(record.image)


def target_stats(manifest: Manifest) -> tuple[float, float]:
    """Mean and std of the human scores of a manifest (pair scores or pointwise scores), for z-scored targets."""
    scores = [s for r in manifest.records for s in _scores(r) if s is not None]
    if not scores:
        return 0.0, 1.0
    std = float(np.std(scores))
    return float(np.mean(scores)), std if std > 0 else 1.0


def examples_from_manifest(manifest: Manifest, loss: str, target_norm: tuple[float, float]) -> list[Example]:
    """Examples of a manifest for `loss`; raises `IcrewardError` where the manifest cannot train it."""
    mean, std = target_norm
    if manifest.kind == "point" and loss in ("bt", "btt"):
        raise IcrewardError(f"{manifest.path}: --loss {loss} needs a pair manifest (video_a, video_b, label)")
    out = []
    for r in manifest.records:
        scores = _scores(r)
        if loss == "mse" and any(s is None for s in scores):
            what = "score_a and score_b" if isinstance(r, PairRecord) else "score"
            raise IcrewardError(f"{manifest.path}:{r.line} (id {r.id}): --loss mse needs {what} on every record")
        targets = tuple(math.nan if s is None else (s - mean) / std for s in scores)
        where = f"{manifest.path}:{r.line} (id {r.id})"
        if isinstance(r, PairRecord):
            out.append(Example(r.image, (r.video_a, r.video_b), LABEL_VALUES[r.label], targets, source_of(r), where))
        else:
            out.append(Example(r.image, (r.video,), 0, targets, source_of(r), where))
    return out


def _scores(record: PairRecord | PointRecord) -> tuple[float | None, ...]:
    return (record.score_a, record.score_b) if isinstance(record, PairRecord) else (record.score,)


def fit_to_input(x: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Bring `(..., 3, H, W)` in [0, 1] to one size per model, so that items of any size stack into a batch.

    Applies the model's own resize, then a centre crop to a resize x resize square that still holds the model's crop.
    The model's `preprocess` then finds the shorter side already at `resize` and crops and normalises as it would
    have: the same pixels as preprocessing the full-size input (centre crops compose, up to one pixel of rounding).
    """
    if config.resize is not None:
        x = resize(x, config)
        if not config.square_resize and (config.crop is None or config.crop <= config.resize):
            x = center_crop(x, config.resize)
    elif config.crop is not None:
        x = center_crop(x, config.crop)
    return x


class MediaDataset(Dataset):
    """Decodes each example's image and videos (in DataLoader workers) and fits them to the model's input size."""

    def __init__(
        self, examples: Sequence[Example], num_frames: int, max_side: int | None, preprocess: PreprocessConfig
    ):
        self.examples = list(examples)
        self.num_frames = num_frames
        self.max_side = max_side
        self.preprocess = preprocess
        self.groups = _group_ids(self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        from icreward.media import load_video

        ex = self.examples[index]
        try:
            image = self._image(ex.image)  # (3, S, S)
            videos = torch.stack(
                [fit_to_input(load_video(v, self.num_frames, self.max_side), self.preprocess) for v in ex.videos]
            )  # (V, T, 3, S, S)
        except MediaError as e:
            raise IcrewardError(f"{ex.where}: {e}") from e
        return _item(index, ex, image, videos, self.groups[index])

    @lru_cache(maxsize=32)  # noqa: B019 - the same conditioning image recurs across pairs; one cache per worker
    def _image(self, path: Path) -> torch.Tensor:
        from icreward.media import load_image

        return fit_to_input(load_image(path, self.max_side), self.preprocess)


class TokenDataset(Dataset):
    """Reads each example's image and video tokens from the feature cache (no decoding, no backbone)."""

    def __init__(self, examples: Sequence[Example], cache: FeatureCache):
        self.examples = list(examples)
        self.cache = cache
        self.groups = _group_ids(self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        ex = self.examples[index]
        image = self.cache.load(self.cache.key("image", ex.image))  # {"cls": (D,), "patch": (N, D)}
        per_video = [self.cache.load(self.cache.key("video", v)) for v in ex.videos]
        videos = {k: torch.stack([t[k] for t in per_video]) for k in per_video[0]}  # (V, T, ...)
        return _item(index, ex, image, videos, self.groups[index])


def _item(index: int, ex: Example, image, videos, group: int) -> dict:
    return {
        "index": index,
        "image": image,
        "videos": videos,
        "label": ex.label,
        "targets": torch.tensor(ex.targets, dtype=torch.float32),
        "group": group,
    }


def _group_ids(examples: Sequence[Example]) -> list[int]:
    ids: dict[str, int] = {}
    return [ids.setdefault(ex.group, len(ids)) for ex in examples]


def epoch_batches(
    n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
) -> list[list[int]]:
    """This process's batches (dataset indices) for one epoch.

    The order is a permutation drawn from (seed, epoch) alone; it is padded by wrapping around to a multiple of the
    world size and cut into global batches of `batch_size * world_size`, each dealt out evenly, so every process
    takes the same number of steps of the same size. Without `shuffle` (evaluation) the order is 0..n-1.
    """
    if n < 1:
        return []
    if shuffle:
        state = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        order = torch.randperm(n, generator=generator).tolist()
    else:
        order = list(range(n))
    total = -(-n // world_size) * world_size
    order = (order * -(-total // n))[:total]
    step = batch_size * world_size
    return [order[i : i + step][rank::world_size] for i in range(0, total, step)]


class FileDigests:
    """sha256 of media files (a folder of frames: of its file names and contents), each file read once per run."""

    def __init__(self):
        self._digests: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        path = Path(path)
        if path not in self._digests:
            h = hashlib.sha256()
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for f in files:
                if path.is_dir():
                    h.update(str(f.relative_to(path)).encode() + b"\0")
                with f.open("rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        h.update(chunk)
            self._digests[path] = h.hexdigest()
        return self._digests[path]


def data_hash(manifest: Manifest, digests: FileDigests) -> str:
    """sha256 of what a manifest trains on: every record's id, labels, scores and the content of its media files.

    Moving the data elsewhere keeps the hash; changing a label or re-encoding a video changes it.
    """
    h = hashlib.sha256()
    for r in manifest.records:
        media = ("image", "video_a", "video_b") if isinstance(r, PairRecord) else ("image", "video")
        row = {
            "id": r.id,
            "label": getattr(r, "label", None),
            "scores": list(_scores(r)),
            "media": {k: digests(getattr(r, k)) for k in media},
        }
        h.update(json.dumps(row, sort_keys=True).encode() + b"\n")
    return h.hexdigest()
