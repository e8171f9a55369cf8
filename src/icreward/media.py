"""Reading images and videos into `[0, 1]` float tensors, and writing videos.

Images come back as `[3, H, W]`, videos as `[T, 3, H, W]` with T frames sampled uniformly while streaming: a video
is decoded once and only the sampled frames are kept, each shrunk to the working size as it is converted, so memory
is T frames at the working size whatever the video's length or resolution. Every failure to read a file raises
`MediaError`, which names the file and says what is wrong with it.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from icreward.atomic import atomic_write
from icreward.errors import MediaError

if TYPE_CHECKING:
    import av

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# What `load_video` reads besides a folder of frame images: containers FFmpeg decodes, and `.npy` arrays.
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg", ".mpeg", ".npy"})

# Transparent pixels (RGBA, LA, PA, palette or greyscale with a transparent colour, GIF frames) are composited on
# white, the colour most viewers and browsers show behind them.
DEFAULT_BACKGROUND: tuple[float, float, float] = (1.0, 1.0, 1.0)

# Decompression-bomb limit in pixels (width * height); an image over it is refused before any pixel is decoded.
# Raise it (or set None) to read bigger images you trust. PIL still refuses images over twice its own limit.
MAX_IMAGE_PIXELS: int | None = Image.MAX_IMAGE_PIXELS

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
_INTEGER_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})  # read as 16-bit: 65535 is white


def load_image(
    path: str | Path, max_side: int | None = None, background: tuple[float, float, float] = DEFAULT_BACKGROUND
) -> torch.Tensor:
    """Read an image file into float32 `[3, H, W]` in [0, 1].

    Any PIL mode is accepted: alpha is composited on `background` (RGB in [0, 1]), greyscale and 1-bit images are
    repeated over three channels, 16-bit images are scaled by 1/65535, float images (mode F) are taken as [0, 1]
    and clipped, CMYK and YCbCr are converted by PIL. EXIF orientation is applied; an animated GIF or WebP gives
    its first frame. `max_side` shrinks the image (bicubic, aspect kept) so its longer side is at most `max_side`;
    a JPEG is then decoded at a reduced scale by libjpeg, so a large photo never costs full-size memory.
    """
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        raise MediaError(path, "is a folder, not an image file")
    _check_max_side(max_side)
    if len(background) != 3 or not all(0 <= c <= 1 for c in background):
        raise ValueError(f"background must be three floats in [0, 1], got {background}")
    img = _open_image(path)
    try:
        with img, warnings.catch_warnings():
            # PIL re-checks sizes while decoding (GIF frames, TIFF tiles); there too a bomb is an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _image_to_tensor(img, max_side, background)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise MediaError(path, f"{exc} (raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file)") from None
    except Exception as exc:  # PIL's decoders fail in many ways (OSError, SyntaxError, ValueError, struct.error…)
        raise MediaError(path, f"could not decode the image, it is truncated or corrupt ({exc})") from exc


def sample_indices(n_frames: int, num_frames: int) -> list[int]:
    """Indices of `num_frames` frames spread uniformly over `n_frames`: `round(linspace(0, n_frames - 1, num_frames))`.

    The first and last frames are always kept (for `num_frames >= 2`). When `n_frames < num_frames` indices repeat,
    e.g. 3 frames sampled to 5 give `[0, 0, 1, 2, 2]`, so every video comes back with exactly `num_frames` frames.
    Ties round half to even (numpy), so the result is the same on every run and machine.
    """
    if n_frames < 1 or num_frames < 1:
        raise ValueError(f"need n_frames >= 1 and num_frames >= 1, got {n_frames} and {num_frames}")
    return np.rint(np.linspace(0, n_frames - 1, num_frames)).astype(int).tolist()


def load_video(
    path: str | Path, num_frames: int = 16, max_side: int | None = None, min_frames: int = 2
) -> torch.Tensor:
    """Read `num_frames` frames sampled uniformly (`sample_indices`) from a video into float32 `[T, 3, H, W]` in [0, 1].

    `path` is a file FFmpeg decodes (mp4, webm, mov, mkv, avi, animated gif, …), a folder of frame images (sorted
    naturally by name: frame_2 before frame_10), or a `.npy` array `[T, H, W, 3]` or `[T, 3, H, W]` (uint8, or float
    in [0, 1]) that is memory-mapped so only the sampled frames are read. `max_side` shrinks frames so the longer
    side is at most `max_side`. Transparent pixels (GIF, RGBA frames) are composited on `DEFAULT_BACKGROUND`, as
    `load_image` does. A video with fewer than `min_frames` frames is refused: consistency over time needs at least
    two. Only the first video stream is read, and rotation metadata (phone videos) is not applied.
    """
    if num_frames < 1 or min_frames < 1:
        raise ValueError(f"need num_frames >= 1 and min_frames >= 1, got {num_frames} and {min_frames}")
    _check_max_side(max_side)
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        return _load_frame_folder(path, num_frames, max_side, min_frames)
    if path.suffix.lower() == ".npy":
        return _load_npy(path, num_frames, max_side, min_frames)
    return _load_container(path, num_frames, max_side, min_frames)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8, crf: int = 18) -> None:
    """Write `frames` (uint8 `[T, H, W, 3]`, H and W even) to an H.264 mp4 atomically."""
    import av

    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even sizes, got {h}x{w}")
    with atomic_write(path, "wb") as f:
        with av.open(f, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            # mbtree=0: libx264's macroblock-tree rate control gives different bytes for identical input across runs
            stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
            for frame in frames:
                for packet in stream.encode(
                    av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
                ):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(path, "no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")


def _check_max_side(max_side: int | None) -> None:
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be None or >= 1, got {max_side}")


def _check_length(path: Path, n_frames: int, min_frames: int) -> None:
    if n_frames < min_frames:
        frames = "frame" if n_frames == 1 else "frames"
        verb = "is" if min_frames == 1 else "are"
        raise MediaError(
            path, f"video has {n_frames} {frames}; at least {min_frames} {verb} needed to judge consistency over time"
        )


def _working_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """`(width, height)` shrunk so the longer side is `max_side`, aspect kept; unchanged when already small enough."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _composite(rgba: torch.Tensor, background: tuple[float, float, float]) -> torch.Tensor:
    """Alpha-composite `[4, H, W]` in [0, 1] over a solid `background`, giving `[3, H, W]`."""
    rgb, alpha = rgba[:3], rgba[3:]  # (3, H, W), (1, H, W)
    bg = torch.tensor(background, dtype=rgba.dtype).view(3, 1, 1)
    return rgb * alpha + bg * (1 - alpha)


def _open_image(path: Path) -> Image.Image:
    """Open `path` lazily (header only) and refuse it, before a pixel is decoded, when it is over MAX_IMAGE_PIXELS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size check below raises instead
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise MediaError(
            path,
            f"image is over {2 * Image.MAX_IMAGE_PIXELS:,} pixels, twice PIL's decompression-bomb limit (raise "
            "PIL.Image.MAX_IMAGE_PIXELS and icreward.media.MAX_IMAGE_PIXELS if you trust the file)",
        ) from None
    except UnidentifiedImageError:
        raise MediaError(path, "not an image file PIL can read") from None
    except OSError as exc:
        raise MediaError(path, f"could not open the image ({exc})") from exc
    width, height = img.size
    if MAX_IMAGE_PIXELS is not None and width * height > MAX_IMAGE_PIXELS:
        img.close()
        raise MediaError(
            path,
            f"image is {width}x{height} = {width * height:,} pixels, over the decompression-bomb limit of "
            f"{MAX_IMAGE_PIXELS:,} (raise icreward.media.MAX_IMAGE_PIXELS if you trust the file)",
        )
    return img


def _image_to_tensor(img: Image.Image, max_side: int | None, background: tuple[float, float, float]) -> torch.Tensor:
    """Decode an opened image (current frame) into `[3, H, W]` in [0, 1], shrinking before any float copy is made."""
    if max_side is not None:
        img.draft(None, _working_size(*img.size, max_side))  # JPEG: libjpeg decodes at 1/2, 1/4 or 1/8 scale
    ImageOps.exif_transpose(img, in_place=True)
    scale = 255.0  # what white is in the converted image's pixel values
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        img = img.convert("RGBA")
    elif img.mode in _INTEGER_MODES:
        img, scale = img.convert("F"), 65535.0
    elif img.mode == "F":
        scale = 1.0
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode != "L":
        img = img.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV
    size = _working_size(*img.size, max_side)
    if size != img.size:
        img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)  # RGBA is resized premultiplied
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / np.float32(scale)).clamp_(0, 1)  # (H, W) or (H, W, C)
    if x.ndim == 2:
        return x.expand(3, -1, -1).contiguous()  # (3, H, W)
    x = x.permute(2, 0, 1)  # (C, H, W)
    return (_composite(x, background) if x.shape[0] == 4 else x).contiguous()


def _shrink(frame: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """Shrink `[3, H, W]` so its longer side is at most `max_side` (antialiased bicubic, as for images)."""
    h, w = frame.shape[-2:]
    new_w, new_h = _working_size(w, h, max_side)
    if (new_w, new_h) == (w, h):
        return frame
    out = F.interpolate(frame[None], size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def _natural_key(path: Path) -> list[int | str]:
    """Sort key that orders embedded numbers by value: frame_2.png before frame_10.png."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _load_frame_folder(path: Path, num_frames: int, max_side: int | None, min_frames: int) -> torch.Tensor:
    files = sorted(
        (p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
        key=_natural_key,
    )
    if not files:
        raise MediaError(path, f"folder has no frame images (files ending in {', '.join(sorted(IMAGE_EXTENSIONS))})")
    _check_length(path, len(files), min_frames)
    wanted = sample_indices(len(files), num_frames)
    frames = {i: load_image(files[i], max_side=max_side) for i in sorted(set(wanted))}  # each (3, H, W)
    first = wanted[0]
    for i, frame in frames.items():
        if frame.shape != frames[first].shape:
            raise MediaError(
                files[i],
                f"frame is {frame.shape[2]}x{frame.shape[1]} but {files[first].name} is "
                f"{frames[first].shape[2]}x{frames[first].shape[1]}; all frames of a video must be the same size",
            )
    return torch.stack([frames[i] for i in wanted])  # (T, 3, H, W)


def _load_npy(path: Path, num_frames: int, max_side: int | None, min_frames: int) -> torch.Tensor:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise MediaError(path, f"not a readable .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray):
        raise MediaError(path, "is an .npz archive, not a single .npy array")
    if array.ndim != 4 or 3 not in (array.shape[1], array.shape[-1]):
        raise MediaError(path, f"expected an array [T, H, W, 3] or [T, 3, H, W], got shape {list(array.shape)}")
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise MediaError(path, f"expected uint8 values, or floats in [0, 1], got dtype {array.dtype}")
    channels_last = array.shape[-1] == 3  # [T, 3, H, 3] is read as channels-last
    _check_length(path, array.shape[0], min_frames)
    wanted = sample_indices(array.shape[0], num_frames)
    frames = {}
    for i in sorted(set(wanted)):
        frame = torch.from_numpy(np.array(array[i], dtype=np.float32))  # reads this frame only
        frame = frame.permute(2, 0, 1) if channels_last else frame  # (3, H, W)
        if array.dtype == np.uint8:
            frame = frame / 255
        else:
            low, high = frame.min().item(), frame.max().item()
            if not (0 <= low and high <= 1):
                raise MediaError(path, f"float frames must be in [0, 1], frame {i} spans [{low:.3g}, {high:.3g}]")
        frames[i] = _shrink(frame.contiguous(), max_side)
    return torch.stack([frames[i] for i in wanted])  # (T, 3, H, W)


def _open_container(path: Path) -> av.container.InputContainer:
    import av

    try:
        container = av.open(str(path))
    except av.error.InvalidDataError:
        raise MediaError(path, "not a video FFmpeg can read (the file is truncated, corrupt, or not a video)") from None
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"could not open the video ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise MediaError(path, "has no video stream")
    return container


def _count_frames(path: Path) -> int:
    """Frames in the first video stream, counted from its packets (demuxed, not decoded: cheap even for 4K)."""
    import av

    with _open_container(path) as container:
        stream = container.streams.video[0]
        try:
            return sum(1 for p in container.demux(stream) if p.size > 0 and not p.is_discard)
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"truncated or corrupt: could not read its packets ({exc})") from exc


def _frame_to_tensor(frame: av.VideoFrame, size: tuple[int, int]) -> torch.Tensor:
    """Convert an `av.VideoFrame` to `[3, h, w]` in [0, 1] at `size` = (w, h); FFmpeg scales it before numpy sees it."""
    has_alpha = any(c.is_alpha for c in frame.format.components)  # GIF frames decode as BGRA
    rgb = frame.reformat(
        width=size[0], height=size[1], format="rgba" if has_alpha else "rgb24", interpolation="BICUBIC"
    ).to_ndarray()  # (h, w, 3 or 4) uint8
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255  # (C, h, w)
    return _composite(x, DEFAULT_BACKGROUND) if has_alpha else x


def _load_container(path: Path, num_frames: int, max_side: int | None, min_frames: int) -> torch.Tensor:
    import av

    n_frames = _count_frames(path)
    _check_length(path, n_frames, min_frames)
    wanted = sample_indices(n_frames, num_frames)
    copies = Counter(wanted)  # frame index -> how many times it appears in the sample
    kept: list[torch.Tensor] = []  # (3, h, w) each, in sample order
    decoded, size = 0, None
    with _open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if index in copies:
                    size = size or _working_size(frame.width, frame.height, max_side)
                    kept.extend([_frame_to_tensor(frame, size)] * copies[index])
                if index == wanted[-1]:
                    break
        except av.error.FFmpegError as exc:
            raise MediaError(
                path, f"truncated or corrupt: decoding failed after {decoded} of {n_frames} frames ({exc})"
            ) from exc
    if len(kept) < num_frames:
        raise MediaError(path, f"truncated or corrupt: decoded {decoded} of {n_frames} frames")
    return torch.stack(kept)  # (T, 3, h, w)
