"""Feature cache: backbone tokens of each image and video, computed once and reused across epochs and runs.

Valid only for a frozen backbone (its tokens then never change). Each file's tokens live in
`<root>/<key[:2]>/<key>.safetensors`, written atomically, where the key is the sha256 of the file's content and of
everything that shapes its tokens: backbone spec, kwargs and a digest of its weights, the preprocessing config,
frame count, decode size, precision and device type. Training then runs `model.head` on cached tokens, which is
exactly `forward` without the backbone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import safetensors.torch
import torch
from torch.utils.data import DataLoader, Dataset

from icreward.atomic import atomic_write
from icreward.errors import IcrewardError, MediaError
from icreward.training.data import Example, FileDigests, fit_to_input

CACHE_FORMAT = 1  # bump when what a cache file holds changes


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
