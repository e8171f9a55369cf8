"""Real imagery for synthetic benchmarks, all from Debian packages that install offline: photographs
(`opencv-doc`, `mate-backgrounds`), colour emoji as subject sprites (`fonts-noto-color-emoji`) and real video clips
(`opencv-doc`).

Every library item has a fixed split (`train`, `val` or `test`) that depends only on its name, never on a
benchmark's config: a photo, emoji or clip segment that one benchmark tests on is never trained on by another.
Near-duplicate photos (stereo pairs, two views of one place) form one group and share a split. Clips are cut in
time: each video's frames are split into a train, a val and a test block (45/10/45%, with a gap between blocks),
so a test clip shows the same camera view as a training one but never the same frames.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from icreward.errors import IcrewardError

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_HTML = Path("/usr/share/doc/opencv-doc/opencv4/html")
MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
APT_PACKAGES = ("opencv-doc", "fonts-noto-color-emoji", "mate-backgrounds")
INSTALL_COMMAND = "apt-get install -y " + " ".join(APT_PACKAGES)
LIBRARY_FRACTIONS = (("train", 0.45), ("val", 0.10), ("test", 0.45))  # fixed: a library item's split never moves
SPLIT_SALT = "icreward-real-v1"

# The colour photographs of opencv-doc's sample data, hand-picked: left out are renders (Blender_Suzanne*), logos,
# drawings and charts (HappyFish, pic1-6, gradient, ml, opencv-logo*), chessboards (left01.. / right01..), text
# (imageText*, text_*, notes, sudoku, digits), masks and templates, greyscale shots (basketball*, box*), and a
# painting (starry_night). Near-duplicate shots are one group.
OPENCV_PHOTOS = {
    "aero": ("aero1.jpg", "aero3.jpg"),
    "aloe": ("aloeL.jpg", "aloeR.jpg"),
    "apple": ("apple.jpg",),
    "baboon": ("baboon.jpg",),
    "board": ("board.jpg",),
    "books": ("left.jpg", "right.jpg"),
    "building": ("building.jpg",),
    "butterfly": ("butterfly.jpg",),
    "chicky": ("chicky_512.png",),
    "ela": ("ela_original.jpg", "ela_modified.jpg"),
    "fruits": ("fruits.jpg",),
    "graffiti": ("graf1.png", "graf3.png"),
    "home": ("home.jpg",),
    "leuven": ("leuvenA.jpg", "leuvenB.jpg"),
    "licenseplate": ("licenseplate_motion.jpg",),
    "messi": ("messi5.jpg",),
    "orange": ("orange.jpg",),
    "rubberwhale": ("rubberwhale1.png", "rubberwhale2.png"),
    "smarties": ("smarties.png",),
    "squirrel": ("squirrel_cls.jpg",),
    "stuff": ("stuff.jpg",),
}
# Real videos: a fixed camera over pedestrians, a tree in wind, a film trailer, objects moved before a camera.
# (Megamind_bugy.avi is the trailer again, with decoding bugs: left out.)
CLIP_FILES = {
    "box": OPENCV_HTML / "box.mp4.gz",
    "cup": OPENCV_HTML / "cup.mp4.gz",
    "megamind": OPENCV_DATA / "Megamind.avi",
    "tree": OPENCV_DATA / "tree.avi",
    "vtest": OPENCV_DATA / "vtest.avi",
}
# What each clip shows, as a prompt caption (no camera or direction words: the prompt's camera phrase is appended).
CLIP_CAPTIONS = {
    "box": "a hand holding a colourful box over a table",
    "cup": "a hand holding a black cup",
    "megamind": "animated characters in a film scene",
    "tree": "a tree with green leaves in the wind",
    "vtest": "people walking across a plaza",
}
# Captions of library photos by file stem (others: the stem's words, "FreshFlower" -> "a photo of fresh flower").
PHOTO_CAPTIONS = {
    "apple": "an apple", "baboon": "a baboon's face", "butterfly": "a butterfly", "fruits": "fruits",
    "orange": "an orange", "squirrel_cls": "a squirrel", "messi5": "a football player on a pitch",
    "smarties": "colourful sweets", "building": "a building", "chicky_512": "a toy chick", "home": "a room",
    "stuff": "objects on a table", "rubberwhale1": "toys on a table", "rubberwhale2": "toys on a table",
    "board": "a circuit board", "graf1": "graffiti on a wall", "graf3": "graffiti on a wall",
    "leuvenA": "a street of houses", "leuvenB": "a street of houses", "aero1": "an aerial view",
    "aero3": "an aerial view", "licenseplate_motion": "a car's licence plate", "left": "books on a shelf",
    "right": "books on a shelf", "aloeL": "an aloe plant", "aloeR": "an aloe plant", "ela_original": "a scene",
    "ela_modified": "a scene", "LadyBird": "a ladybird", "TwoWings": "a butterfly",
}  # fmt: skip
CLIP_GAP = 0.05  # share of a video's frames left unused between its split blocks (no near-duplicate frames)
MAX_CLIP_STRIDE = 3  # a clip video samples every 1st..3rd frame of its segment

# Emoji with an identity (plants, food, objects, buildings, animals, vehicles, instruments): code point ranges of
# Unicode's emoji blocks, less people, flags, signs, scenes and near-duplicates ("ONCOMING" views).
EMOJI_RANGES = (
    (0x1F330, 0x1F37F),  # plants, fruit, food, drink
    (0x1F380, 0x1F393),  # gifts, cakes, celebration objects
    (0x1F3B8, 0x1F3BB),  # instruments
    (0x1F3E0, 0x1F3F0),  # buildings
    (0x1F400, 0x1F43C),  # animals
    (0x1F4A1, 0x1F4A1),  # light bulb
    (0x1F680, 0x1F6A4),  # vehicles
    (0x1F950, 0x1F96F),  # more food
    (0x1F980, 0x1F9AE),  # more animals
)
EMOJI_EXCLUDED = frozenset(
    {
        "AUTOMATED TELLER MACHINE", "BUS STOP", "CLINKING BEER MUGS", "COOKING", "CROSSED FLAGS",
        "FATHER CHRISTMAS", "FORK AND KNIFE", "FORK AND KNIFE WITH PLATE", "FRONT-FACING BABY CHICK",
        "JAPANESE DOLLS", "LOVE HOTEL", "MOON VIEWING CEREMONY", "SPOUTING WHALE", "STATION", "CHOPSTICKS",
        "FIREWORKS", "FIREWORK SPARKLER", "CONFETTI BALL", "PARTY POPPER", "MICROBE",
    }
)  # fmt: skip
EMOJI_PIXELS = 109  # Noto Color Emoji's bitmap size
EMOJI_SIDE = 136  # square canvas an emoji is drawn on


def _missing_files() -> dict[str, list[str]]:
    """Package name → the files of it that are missing."""
    wanted = {
        "opencv-doc": [OPENCV_DATA / files[0] for files in OPENCV_PHOTOS.values()] + list(CLIP_FILES.values()),
        "fonts-noto-color-emoji": [EMOJI_FONT],
        "mate-backgrounds": [MATE_NATURE],
    }
    missing = {pkg: [str(p) for p in paths if not p.exists()] for pkg, paths in wanted.items()}
    return {pkg: paths for pkg, paths in missing.items() if paths}


def real_imagery_available() -> bool:
    """Whether every file of the real-imagery library is on this machine."""
    return not _missing_files()


def ensure_real_imagery(install: bool = True) -> None:
    """Make sure the real-imagery library is installed: where files are missing and this process is root with
    apt-get, install the Debian packages (`apt-get update` only if a first install fails); otherwise raise
    IcrewardError naming what is missing and the command that installs it."""
    missing = _missing_files()
    if not missing:
        return
    can_install = install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")
    if can_install:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        command = ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]
        print(f"icreward synth: installing real imagery ({' '.join(APT_PACKAGES)})", file=sys.stderr)
        if subprocess.run(command, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
            subprocess.run(command, env=env, check=False)
        missing = _missing_files()
        if not missing:
            return
    listing = "; ".join(
        f"{pkg}: {', '.join(paths[:2])}{' ...' if len(paths) > 2 else ''}" for pkg, paths in missing.items()
    )
    raise IcrewardError(
        f"real imagery for --real-share is missing ({listing}); install it with: sudo {INSTALL_COMMAND}"
    )


def library_split(key: str) -> str:
    """The fixed split of a library item: a salted hash of its name read as a number in [0, 1) against the
    cumulative LIBRARY_FRACTIONS, so an item's split never depends on which other items are installed."""
    u = int(hashlib.sha256(f"{SPLIT_SALT}:{key}".encode()).hexdigest()[:15], 16) / 16**15
    bound = 0.0
    for split, share in LIBRARY_FRACTIONS:
        bound += share
        if u < bound:
            return split
    return LIBRARY_FRACTIONS[-1][0]


@cache
def photo_library() -> dict[str, list[str]]:
    """Split → sorted paths of the real photographs in it (photo groups share a split)."""
    groups = {f"opencv/{name}": [str(OPENCV_DATA / f) for f in files] for name, files in OPENCV_PHOTOS.items()}
    for path in sorted(MATE_NATURE.glob("*.jpg")):
        groups[f"mate/{path.stem}"] = [str(path)]
    library: dict[str, list[str]] = {split: [] for split, _ in LIBRARY_FRACTIONS}
    for group, paths in groups.items():
        library[library_split(group)].extend(p for p in paths if Path(p).is_file())
    return {split: sorted(paths) for split, paths in library.items()}


@cache
def emoji_library() -> dict[str, list[str]]:
    """Split → the curated emoji characters in it, in code point order."""
    chars = []
    for lo, hi in EMOJI_RANGES:
        for code in range(lo, hi + 1):
            name = unicodedata.name(chr(code), "")
            if name and name not in EMOJI_EXCLUDED and not name.startswith("ONCOMING"):
                chars.append(chr(code))
    return {split: [c for c in chars if library_split(f"U+{ord(c):X}") == split] for split, _ in LIBRARY_FRACTIONS}


@cache
def _emoji_font():
    from PIL import ImageFont

    return ImageFont.truetype(str(EMOJI_FONT), EMOJI_PIXELS)


@lru_cache(maxsize=512)
def emoji_sprite(char: str) -> torch.Tensor:
    """The emoji `char` drawn centred on a square, `(4, 136, 136)` premultiplied colour + alpha in [0, 1]."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGBA", (EMOJI_SIDE, EMOJI_SIDE))
    ImageDraw.Draw(canvas).text((0, (EMOJI_SIDE - 128) // 2), char, font=_emoji_font(), embedded_color=True)
    rgba = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255).permute(2, 0, 1)
    return torch.cat([rgba[:3] * rgba[3:], rgba[3:]]).contiguous()


def emoji_name(char: str) -> str:
    """`CAT FACE`, `AUTOMOBILE`, ..."""
    return unicodedata.name(char)


def photo_caption(path: str) -> str:
    """A prompt caption for a photo: `PHOTO_CAPTIONS` by file stem, else "a photo of" the stem's words."""
    stem = Path(path).stem
    if stem in PHOTO_CAPTIONS:
        return PHOTO_CAPTIONS[stem]
    words = re.sub(r"(?<=[a-z])(?=[A-Z])|[_\-\d]+", " ", stem).split()
    return "a photo of " + " ".join(w.lower() for w in words) if words else "a photo"


# ---- clips


@dataclass(frozen=True)
class ClipSegment:
    """A stretch of one real video: frame `start` is the conditioning image; videos sample every `stride`-th
    frame after it, for strides 1..max_stride."""

    video: str  # a CLIP_FILES key
    start: int
    max_stride: int


def _open_clip(name: str):
    import av

    path = CLIP_FILES[name]
    source = io.BytesIO(gzip.open(path).read()) if path.suffix == ".gz" else str(path)
    return av.open(source)


@lru_cache(maxsize=len(CLIP_FILES))
def clip_frames(name: str, size: int) -> torch.Tensor:
    """Every frame of a clip, centre-cropped square and resized to `size`: uint8 `(N, 3, size, size)`, kept for
    the process (all clips: about 1800 frames, 90 MB at size 128)."""
    frames = []
    with _open_clip(name) as container:
        for frame in container.decode(video=0):
            x = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float()  # (3, H, W)
            h, w = x.shape[-2:]
            side = min(h, w)
            x = x[:, (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
            x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
            frames.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.stack(frames)


@cache
def clip_lengths() -> dict[str, int]:
    """Frames of each clip (decoded once per process)."""
    lengths = {}
    for name in CLIP_FILES:
        with _open_clip(name) as container:
            lengths[name] = sum(1 for _ in container.decode(video=0))
    return lengths


def clip_blocks(length: int) -> dict[str, tuple[int, int]]:
    """Split → the `[lo, hi)` frame block of a video of `length` frames that split may use."""
    blocks, lo = {}, 0.0
    for split, share in LIBRARY_FRACTIONS:
        hi = lo + share
        first = lo + (CLIP_GAP / 2 if lo > 0 else 0)
        last = hi - (CLIP_GAP / 2 if hi < 0.999 else 0)
        blocks[split] = (round(first * length), round(last * length))
        lo = hi
    return blocks


def sample_segment(rng: np.random.Generator, split: str, frames: int, exclude: str | None = None) -> ClipSegment | None:
    """A seeded segment of `frames` frames inside `split`'s block of a clip (another clip than `exclude` where one
    fits); None when no clip's block is long enough."""
    fits = []
    for name, length in sorted(clip_lengths().items()):
        lo, hi = clip_blocks(length)[split]
        stride = min(MAX_CLIP_STRIDE, (hi - lo - 1) // max(frames - 1, 1))
        if stride >= 1:
            fits.append((name, lo, hi, stride))
    others = [f for f in fits if f[0] != exclude]
    pool = others or fits
    if not pool:
        return None
    name, lo, hi, stride = pool[int(rng.integers(len(pool)))]
    start = int(rng.integers(lo, hi - (frames - 1) * stride))
    return ClipSegment(name, start, stride)


def segment_video(segment: ClipSegment, stride: int, frames: int, size: int) -> torch.Tensor:
    """`frames` frames of a segment, every `stride`-th from its start: `(T, 3, size, size)` in [0, 1]."""
    stride = max(1, min(stride, segment.max_stride))
    all_frames = clip_frames(segment.video, size)
    index = torch.arange(frames) * stride + segment.start
    return all_frames[index].float() / 255
