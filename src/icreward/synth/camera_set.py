"""A camera-motion test set: real photos, each filmed with the seven VBench-I2V camera moves.

`build_camera_set(out)` picks photos of one split of the real-imagery library (`real_sources.photo_library()`, a
seeded choice; or the given `photos`), crops each to a square canvas at random (seeded) and renders, for every move
of `prompts.CAMERA_MOVES`, a video of the photo under the canonical camera path `describe.canonical_camera(move)`:
0.3 frame units of pan / tilt (the frame spans [-1, 1], so 15% of its width) or 0.25 of log zoom (x1.28) over the
clip, along a smoothstep, no roll, no subject, no light change, no grain; the photo is a background at depth 1, so
the content moves exactly that much. Frame 0 of every video is the image.

Output folder (paths relative to it):
- `images/<id>.png` (the conditioning image), `videos/<id>_<move>.mp4` (H.264);
- `videos.jsonl`: `{"id", "image", "video", "prompt", "camera", "source", "split", "photo"}` with `prompt` =
  `prompts.with_camera(caption, move)` and `camera` = move;
- `pairs.jsonl`: for every photo, prompt move P and other move Q (7 x 6 = 42 per photo) `{"id", "image", "prompt"
  (P's), "video_a" (P's video), "video_b" (Q's), "label": "A", "labels": {"text": "A"}, "camera_a", "camera_b",
  "source", "split"}`: both videos are faithful to the image, only A follows the prompt;
- `camera_set.json` (written last): the settings and counts.
Written through `atomic_dir` (a temporary folder renamed into place). The same arguments give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from icreward.atomic import atomic_dir
from icreward.errors import IcrewardError
from icreward.media import write_video
from icreward.prompts import CAMERA_MOVES, with_camera
from icreward.synth import real_sources
from icreward.synth.describe import CANONICAL_PAN, CANONICAL_ZOOM, canonical_camera
from icreward.synth.motion import Trajectory, fit_camera, render_consistent
from icreward.synth.scenes import MARGIN, Scene, Sprite, canvas_side, photo_canvas

MARKER = "camera_set.json"
OUTPUT_FILES = ("images", "videos", "videos.jsonl", "pairs.jsonl", MARKER)
CAMERA_SET_VERSION = 1


def photo_camera_scene(image: torch.Tensor, size: int, rng: np.random.Generator) -> Scene:
    """A scene that is only the photo `(3, H, W)`: a seeded crop as the background at depth 1, an invisible
    subject, no objects."""
    canvas = photo_canvas(rng, image, canvas_side(size))
    nothing = Sprite(torch.zeros(4, 8, 8), 0.0, 0.0, 0.1, 0.0, 1.0, mobility=0.0)
    return Scene(canvas, MARGIN, 1.0, nothing, [], size, (0.0, 0.0, 1.0))


def camera_trajectory(scene: Scene, move: str, frames: int) -> Trajectory:
    """The canonical trajectory of `move` (camera only; `fit_camera` leaves it whole at depth 1)."""
    camera = fit_camera(canonical_camera(move, frames), scene)
    zeros = np.zeros((frames, 4))
    return Trajectory(camera, zeros, np.zeros((frames, 0, 2)), np.ones((frames, 4)), np.zeros(frames), 0.0, 0)


def _choose_photos(n_photos: int, seed: int, split: str) -> list[str]:
    library = real_sources.photo_library()
    if split not in library:
        raise IcrewardError(f"unknown split {split!r}; one of {', '.join(library)}")
    pool = library[split]
    if not pool:
        raise IcrewardError(f"the real-imagery library has no {split} photos; install: {real_sources.INSTALL_COMMAND}")
    order = np.random.default_rng([seed, 31]).permutation(len(pool))[:n_photos]
    return [pool[i] for i in sorted(order)]


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).numpy()


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def build_camera_set(
    out: str | Path,
    n_photos: int = 12,
    seed: int = 0,
    size: int = 128,
    frames: int = 16,
    split: str = "test",
    photos: list[str] | None = None,
    fps: int = 8,
    overwrite: bool = False,
) -> Path:
    """Render the camera test set (module docstring) into the folder `out`; returns it. `photos` (image files)
    replace the library's; otherwise `n_photos` of `split`'s library photos are chosen by `seed` (all of them when
    fewer). `out` may be new, empty or an earlier camera set; another non-empty folder is refused unless
    `overwrite`."""
    from icreward.media import load_image

    if size < 16 or size % 2:
        raise IcrewardError(f"size must be even and at least 16 (H.264), got {size}")
    if frames < 2:
        raise IcrewardError(f"frames must be at least 2, got {frames}")
    if photos is None:
        real_sources.ensure_real_imagery()
        photos = _choose_photos(n_photos, seed, split)
    if not photos:
        raise IcrewardError("no photos for the camera set")
    out = Path(out)
    videos, pairs = [], []
    with atomic_dir(out, own=OUTPUT_FILES, marker=(MARKER,), overwrite=overwrite, what="camera set") as tmp:
        (tmp / "images").mkdir()
        (tmp / "videos").mkdir()
        for i, photo in enumerate(photos):
            source = f"cam{i:03d}"
            scene = photo_camera_scene(load_image(photo, max_side=4 * size), size, np.random.default_rng([seed, i, 32]))
            image = f"images/{source}.png"
            caption = real_sources.photo_caption(photo)
            clips = {}
            for move in CAMERA_MOVES:
                clip = render_consistent(scene, camera_trajectory(scene, move, frames))
                if move == CAMERA_MOVES[0]:
                    Image.fromarray(_to_uint8(clip[0])).save(tmp / image)
                clips[move] = f"videos/{source}_{move}.mp4"
                write_video(tmp / clips[move], _to_uint8(clip), fps=fps)
                videos.append(
                    {
                        "id": f"{source}_{move}",
                        "image": image,
                        "video": clips[move],
                        "prompt": with_camera(caption, move),
                        "camera": move,
                        "source": source,
                        "split": split,
                        "photo": Path(photo).name,
                    }
                )
            for p in CAMERA_MOVES:
                for q in CAMERA_MOVES:
                    if q != p:
                        pairs.append(
                            {
                                "id": f"{source}_{p}_vs_{q}",
                                "image": image,
                                "prompt": with_camera(caption, p),
                                "video_a": clips[p],
                                "video_b": clips[q],
                                "label": "A",
                                "labels": {"text": "A"},
                                "camera_a": p,
                                "camera_b": q,
                                "source": source,
                                "split": split,
                            }
                        )
        _write_jsonl(tmp / "videos.jsonl", videos)
        _write_jsonl(tmp / "pairs.jsonl", pairs)
        summary = {
            "name": "icbench-camera",
            "version": CAMERA_SET_VERSION,
            "seed": seed,
            "size": size,
            "frames": frames,
            "fps": fps,
            "split": split,
            "pan": CANONICAL_PAN,
            "zoom": CANONICAL_ZOOM,
            "moves": list(CAMERA_MOVES),
            "photos": [Path(p).name for p in photos],
            "counts": {"images": len(photos), "videos": len(videos), "pairs": len(pairs)},
        }
        (tmp / MARKER).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return out
