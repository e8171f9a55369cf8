"""Training data: manifest records as examples, media or cached-token datasets, the data order of each epoch, content
hashes of the data, and the feature cache.

An `Example` is one image with one video (pointwise) or two (a pair). Datasets return
`{"index", "image", "videos", "label", "targets", "group"}`: pixels `image [3,S,S]`, `videos [V,T,3,S,S]`, or the
backbone tokens of both from the feature cache (`image {"cls": [D], "patch": [N,D]}`, `videos {"cls": [V,T,D],
"patch": [V,T,N,D]}`). The order of an epoch's batches is a function of (seed, epoch) alone, so a resumed run sees
the very batches the interrupted one would have.

Feature cache (`FeatureCache`): backbone tokens of each image and video, computed once and reused across epochs and
runs. Valid only for a frozen backbone (its tokens then never change). Each file's tokens live in
`<root>/<key[:2]>/<key>.safetensors`, written atomically, where the key is the sha256 of the file's content and of
everything that shapes its tokens: backbone spec, kwargs and a digest of its weights, the preprocessing config,
frame count, decode size, precision and device type. Training then runs `model.head` on cached tokens, which is
exactly `forward` without the backbone. A model whose head reads the tokens through the parameter-free evidence
alone (`head: map` or `none`, `model.evidence_reader()`) has the evidence of each (image, video) cached as well
(`FeatureCache.evidence`, beside the tokens): its datasets return `image {}` and `videos {"evidence": [V,K],
"maps": [V,T,N,C]}` (no maps for `head: none`), and an epoch then costs only the head (`model.head_from_evidence`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from torch.utils.data import DataLoader, Dataset

from icreward.atomic import atomic_write
from icreward.errors import IcrewardError, MediaError
from icreward.manifest import Manifest, PairRecord, PointRecord, format_skipped, load_manifest
from icreward.rules import label_value, source_image
from icreward.training.config import TrainConfig
from icreward.transforms import PreprocessConfig, center_crop, resize

CACHE_FORMAT = 1  # bump when what a cache file holds changes
EVIDENCE_FORMAT = 1  # bump when the evidence distances (`icreward.models.evidence`) are computed differently


@dataclass(frozen=True)
class Example:
    image: Path
    videos: tuple[Path, ...]  # (video_a, video_b) of a pair, (video,) of a pointwise record
    label: int  # +1 A preferred, -1 B preferred, 0 tie (0 for pointwise records)
    targets: tuple[float, ...]  # regression targets of the videos (mse), NaN where the record has no score
    group: str  # the source image: k-fold groups, and same-source videos are no in-batch negatives
    where: str  # "manifest:line (id)", for error messages


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
            out.append(Example(r.image, (r.video_a, r.video_b), label_value(r.label), targets, source_image(r), where))
        else:
            out.append(Example(r.image, (r.video,), 0, targets, source_image(r), where))
    return out


def load_manifests(
    config: TrainConfig, train: Manifest | str | Path | None, val: Manifest | str | Path | None, log
) -> tuple[Manifest, Manifest | None]:
    """The training and validation manifests, as given or read from the config's paths (labels required)."""

    def read(m: Manifest | str | Path | None) -> Manifest | None:
        if m is None or isinstance(m, Manifest):
            return m
        manifest = load_manifest(m, skip_bad=config.skip_bad, tie_margin=config.tie_margin, require_labels=True)
        if manifest.skipped:
            log(format_skipped(manifest))
        return manifest

    train_manifest = read(train if train is not None else config.data)
    if train_manifest is None:
        raise IcrewardError("no training data: give --data (or a manifest to train())")
    return train_manifest, read(val if val is not None else config.val)


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
    """Reads each example's image and video tokens from the feature cache (no decoding, no backbone); with an
    `evidence_reader` (`model.evidence_reader()`), the cached evidence of each (image, video) instead, computed from
    the tokens the first time it is asked for."""

    def __init__(self, examples: Sequence[Example], cache: FeatureCache, evidence_reader: Callable | None = None):
        self.examples = list(examples)
        self.cache = cache
        self.groups = _group_ids(self.examples)
        self.evidence_reader = evidence_reader

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        ex = self.examples[index]
        image_key = self.cache.key("image", ex.image)
        if self.evidence_reader is not None:
            found = [
                self.cache.evidence(image_key, self.cache.key("video", v), self.evidence_reader) for v in ex.videos
            ]
            videos = {k: torch.stack([f[k] for f in found]) for k in found[0]}  # evidence (V, K), maps (V, T, N, C)
            return _item(index, ex, {}, videos, self.groups[index])
        image = self.cache.load(image_key)  # {"cls": (D,), "patch": (N, D)}
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


# ---- the feature cache


def default_cache_dir() -> Path:
    """`$ICREWARD_CACHE/features`, else `~/.cache/icreward/features` (where the synthetic benchmark lives too)."""
    return Path(os.environ.get("ICREWARD_CACHE") or Path.home() / ".cache" / "icreward") / "features"


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """Tokens keyed by file content and model fingerprint. `hits`/`misses` count distinct files found / computed."""

    def __init__(
        self,
        root: str | Path,
        model,
        *,
        precision: str,
        device_type: str,
        dtype: str = "float32",
        digests: FileDigests | None = None,
    ):
        self.root = Path(root)
        self.dtype = getattr(torch, dtype)
        self.digests = digests or FileDigests()
        self.hits = 0
        self.misses = 0
        spec = {
            "format": CACHE_FORMAT,
            "backbone": model.config.backbone,
            "backbone_kwargs": model.config.backbone_kwargs,
            "backbone_weights": weights_digest(model.backbone),
            "preprocess": model.config.preprocess,
            "num_frames": model.num_frames,
            "max_side": model.max_side,
            "precision": precision,
            "device_type": device_type,
            "dtype": dtype,
        }
        self.fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()

    def key(self, kind: str, path: Path) -> str:
        """Key of the tokens of an image (`kind="image"`) or video file."""
        return hashlib.sha256(f"{self.fingerprint}:{kind}:{self.digests(path)}".encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def load(self, key: str) -> dict[str, torch.Tensor]:
        """`{"cls": [D] or [T,D], "patch": [N,D] or [T,N,D]}` in float32."""
        tensors = safetensors.torch.load_file(str(self.path(key)))
        return {k: v.float() for k, v in tensors.items()}

    def evidence(self, image_key: str, video_key: str, reader: Callable) -> dict[str, torch.Tensor]:
        """`{"evidence": [K], "maps": [T, N, C]}` (no maps where `reader` gives none) of the (image, video) whose token
        keys are given: `reader(image tokens, video tokens)` (`model.evidence_reader()`) on the cached tokens, stored
        beside them under a key of both token keys and of the reader's groups and measures, and read back after."""
        spec = getattr(reader, "keywords", None) or repr(reader)
        key = hashlib.sha256(f"evidence{EVIDENCE_FORMAT}:{spec}:{image_key}:{video_key}".encode()).hexdigest()
        path = self.path(key)
        if path.exists():
            return safetensors.torch.load_file(str(path))
        image, video = self.load(image_key), self.load(video_key)
        with torch.no_grad():
            evidence, maps = reader({k: v[None] for k, v in image.items()}, {k: v[None] for k, v in video.items()})
        found = {"evidence": evidence[0]} | ({"maps": maps[0]} if maps is not None else {})
        data = safetensors.torch.save({k: v.float().contiguous() for k, v in found.items()})
        with atomic_write(path, "wb") as f:
            f.write(data)
        return found

    def store(self, key: str, tokens: dict[str, torch.Tensor]) -> None:
        data = safetensors.torch.save({k: v.detach().to(self.dtype).cpu().contiguous() for k, v in tokens.items()})
        with atomic_write(self.path(key), "wb") as f:
            f.write(data)

    def build(self, examples: list[Example], model, accelerator, *, batch_size: int, num_workers: int) -> None:
        """Compute and store the tokens of every image and video of `examples` that the cache lacks.

        The work is split over the processes; a process that then still misses files (no shared file system)
        computes them itself. Counts distinct files in `hits` (found) and `misses` (computed here or by a peer).
        """
        first: dict[tuple[str, Path], str] = {}  # each distinct (kind, file) -> the first example naming it
        for ex in examples:
            for kind_path in [("image", ex.image), *(("video", v) for v in ex.videos)]:
                first.setdefault(kind_path, ex.where)
        wanted = {self.key(kind, path): (kind, path, where) for (kind, path), where in first.items()}
        missing = sorted(k for k in wanted if not self.path(k).exists())
        self.hits += len(wanted) - len(missing)
        self.misses += len(missing)
        rank, world = accelerator.process_index, accelerator.num_processes
        self._compute([wanted[k] + (k,) for k in missing[rank::world]], model, accelerator, batch_size, num_workers)
        accelerator.wait_for_everyone()
        still = [wanted[k] + (k,) for k in missing if not self.path(k).exists()]
        self._compute(still, model, accelerator, batch_size, num_workers)

    @torch.no_grad()
    def _compute(self, work: list[tuple], model, accelerator, batch_size: int, num_workers: int) -> None:
        """Encode `(kind, path, where, key)` items, images and videos in separate batches, and store their tokens."""
        model.eval()
        for kind in ("image", "video"):
            items = [w for w in work if w[0] == kind]
            if not items:
                continue
            loader = DataLoader(
                _FileDataset(items, model, kind),
                batch_size=batch_size if kind == "video" else 4 * batch_size,
                num_workers=num_workers,
                generator=torch.Generator(),  # leaves the global generator (init, dropout) untouched
            )
            for pixels, keys in loader:
                pixels = pixels.to(accelerator.device)
                with accelerator.autocast():
                    if kind == "image":  # (B, 3, S, S): encode with the image as a one-frame video
                        tokens, _ = model.encode(pixels, pixels[:, None])
                    else:  # (B, T, 3, S, S): a dummy image (frame 0) alongside
                        _, tokens = model.encode(pixels[:, 0], pixels)
                for i, key in enumerate(keys):
                    self.store(key, {k: v[i] for k, v in tokens.items()})


class _FileDataset(Dataset):
    def __init__(self, items: list[tuple], model, kind: str):
        self.items = items
        self.kind = kind
        self.num_frames = model.num_frames
        self.max_side = model.max_side
        self.preprocess = model.preprocess_config

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        from icreward.media import load_image, load_video

        _, path, where, key = self.items[i]
        try:
            x = (
                load_image(path, self.max_side)
                if self.kind == "image"
                else load_video(path, self.num_frames, self.max_side)
            )
        except MediaError as e:
            raise IcrewardError(f"{where}: {e}") from e
        return fit_to_input(x, self.preprocess), key
