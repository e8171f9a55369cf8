"""Reading images and videos into `[0, 1]` float tensors, and writing videos.

Images come back as `[3, H, W]`, videos as `[T, 3, H, W]` with T frames sampled uniformly while streaming: a video
is decoded once and only the sampled frames are kept, each shrunk to the working size as it is converted, so memory
is T frames at the working size whatever the video's length or resolution. Every failure to read a file raises
`MediaError`, which names the file and says what is wrong with it.

What is refused before anything is decoded: a FIFO, device or other non-regular file (reading one would block or
never end), an image over MAX_IMAGE_PIXELS, a video whose declared frame size or length is over MAX_VIDEO_FRAME_PIXELS
or MAX_VIDEO_PIXELS, and `num_frames` outside MIN_FRAMES..MAX_FRAMES (`FrameCountError`).
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from icreward import rules
from icreward.atomic import atomic_write
from icreward.errors import IcrewardError, MediaError

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

MIN_FRAMES, MAX_FRAMES = rules.MIN_FRAMES, rules.MAX_FRAMES  # frames `load_video` may sample (see icreward.rules)

# Decompression-bomb limits for videos, like MAX_IMAGE_PIXELS for images. Each is checked on the sizes the file's
# header declares (container stream header, image headers of a frame folder, the .npy shape), so a video over one is
# refused before a frame is decoded: `max_side` shrinks frames only after the decoder has made them, so it does not
# protect memory. Raise one (or set None) to read bigger videos you trust.
# Pixels (width * height) of one frame: the decoder holds whole frames (a GIF's canvas is as big as its header says,
# whatever its file size). 8192 x 8192; 8K UHD (7680 x 4320) is half of it.
MAX_VIDEO_FRAME_PIXELS: int | None = 2**26
# Frames in the video times pixels of a frame: the work of decoding it (every frame up to the last sampled one is
# decoded). 2**35 is about 9 minutes of 1080p or 2 minutes of 4K at 30 fps.
MAX_VIDEO_PIXELS: int | None = 2**35
# `num_frames` times pixels of a frame at the working size (after `max_side`): the float32 tensor returned, 12 bytes
# a pixel, so 2**28 pixels are 3 GiB. Only `max_side=None` comes near it (256 frames at 512 take a quarter).
MAX_SAMPLED_PIXELS: int | None = 2**28
# A container is demuxed once to count its frames; its packets are kept for decoding when they come to at most this
# many bytes (a few seconds of 1080p), so the file is not opened and read twice; past it, it is read again.
KEPT_PACKET_BYTES = 64 * 1024 * 1024


class FrameCountError(IcrewardError, ValueError):
    """`num_frames` is outside MIN_FRAMES..MAX_FRAMES (a ValueError too, for callers that catch bad arguments)."""


class FewFramesWarning(UserWarning):
    """A video holds fewer frames than `num_frames`: frames repeat, and the reward is read from fewer frames."""


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
    if _check_file(path) == "folder":
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
    except MemoryError:
        raise
    except Exception as exc:  # PIL's decoders fail in many ways (OSError, SyntaxError, ValueError, struct.error…)
        raise MediaError(path, f"could not decode the image, it is truncated or corrupt ({_brief(exc)})") from exc


def sample_indices(n_frames: int, num_frames: int) -> list[int]:
    """Indices of `num_frames` frames spread uniformly over `n_frames`: `round(linspace(0, n_frames - 1, num_frames))`.

    The first and last frames are always kept (for `num_frames >= 2`). When `n_frames < num_frames` indices repeat,
    e.g. 3 frames sampled to 5 give `[0, 0, 1, 2, 2]`, so every video comes back with exactly `num_frames` frames.
    Ties round half to even (numpy), so the result is the same on every run and machine.
    """
    if n_frames < 1 or num_frames < 1:
        raise ValueError(f"need n_frames >= 1 and num_frames >= 1, got {n_frames} and {num_frames}")
    return np.rint(np.linspace(0, n_frames - 1, num_frames)).astype(int).tolist()


def check_num_frames(num_frames: int) -> int:
    """`num_frames` as an int if it is a frame count `load_video` samples (MIN_FRAMES..MAX_FRAMES), else raise
    `FrameCountError` naming the value and the range."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer):
        raise FrameCountError(f"num_frames must be an integer from {MIN_FRAMES} to {MAX_FRAMES}, got {num_frames!r}")
    if not MIN_FRAMES <= num_frames <= MAX_FRAMES:
        hint = (
            "consistency over time needs at least two frames; to score fewer, pass tensors to the scorer"
            if num_frames < MIN_FRAMES
            else "every sampled frame is kept in memory (raise icreward.media.MAX_FRAMES if you need more)"
        )
        raise FrameCountError(
            f"num_frames must be from {MIN_FRAMES} to {MAX_FRAMES} frames sampled per video, got {num_frames}: {hint}"
        )
    return int(num_frames)


def load_video(
    path: str | Path, num_frames: int = 16, max_side: int | None = None, min_frames: int = MIN_FRAMES
) -> torch.Tensor:
    """Read `num_frames` frames sampled uniformly (`sample_indices`) from a video into float32 `[T, 3, H, W]` in [0, 1].

    `path` is a file FFmpeg decodes (mp4, webm, mov, mkv, avi, animated gif, …), a folder of frame images (sorted
    naturally by name: frame_2 before frame_10), or a `.npy` array `[T, H, W, 3]` or `[T, 3, H, W]` (uint8, or float
    in [0, 1]) that is memory-mapped so only the sampled frames are read. `max_side` shrinks frames so the longer
    side is at most `max_side`. Transparent pixels (GIF, RGBA frames) are composited on `DEFAULT_BACKGROUND`, as
    `load_image` does. Only the first video stream is read, and rotation metadata (phone videos) is not applied.

    Refused, with `FrameCountError`: `num_frames` outside MIN_FRAMES..MAX_FRAMES (2..256). With `MediaError` naming
    the file: a video with fewer than `min_frames` frames (consistency over time needs at least two), a FIFO, device
    or other non-regular file, and a video over a decompression-bomb limit (MAX_VIDEO_FRAME_PIXELS,
    MAX_VIDEO_PIXELS, MAX_SAMPLED_PIXELS), checked on its declared size before anything is decoded.

    A video with fewer frames than `num_frames` (a 2-frame video sampled to 16) comes back with its frames repeated
    (`sample_indices`), so it has T frames like any other, and a `FewFramesWarning` names the file: its reward is
    read from fewer distinct frames than the model expects, and can differ from what a longer video of the same
    motion gets.
    """
    num_frames = check_num_frames(num_frames)
    if isinstance(min_frames, bool) or not isinstance(min_frames, int | np.integer) or min_frames < 1:
        raise ValueError(f"min_frames must be an integer >= 1, got {min_frames!r}")
    _check_max_side(max_side)
    path = Path(path)
    if _check_file(path) == "folder":
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


_NOT_REGULAR = (  # what a path that is neither a regular file nor a folder is, for the error message
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_file(path: Path) -> str:
    """ "file" for a non-empty regular file, "folder" for a folder; anything else raises `MediaError` at once.

    A FIFO or a device is refused before it is opened: reading one would block forever (a FIFO no one writes to)
    or never end (/dev/zero). Symlinks are followed.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError(path, "no such file or folder") from None
    except ValueError as exc:  # a NUL byte, or a name the file system's encoding cannot hold
        raise MediaError(path, f"not a valid path ({exc})") from None
    except OSError as exc:
        raise MediaError(path, f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        return "folder"
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _NOT_REGULAR if test(st.st_mode)), "not a regular file")
        raise MediaError(path, f"is {what}, not a regular file: give the path of an image or video file")
    if st.st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    return "file"


def _check_max_side(max_side: int | None) -> None:
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int | np.integer)):
        raise ValueError(f"max_side must be None or an integer >= 1, got {max_side!r}")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be None or >= 1, got {max_side}")


def _check_length(path: Path, n_frames: int, min_frames: int, num_frames: int) -> None:
    """Refuse a video shorter than `min_frames`; warn (`FewFramesWarning`) when it is shorter than `num_frames`."""
    if n_frames < min_frames:
        frames = "frame" if n_frames == 1 else "frames"
        verb = "is" if min_frames == 1 else "are"
        raise MediaError(
            path, f"video has {n_frames} {frames}; at least {min_frames} {verb} needed to judge consistency over time"
        )
    if n_frames < num_frames:
        frames = "frame" if n_frames == 1 else "frames"
        warnings.warn(
            f"{path}: video has {n_frames} {frames}, fewer than the {num_frames} sampled; its frames are repeated to "
            f"make {num_frames}, so its reward is read from {n_frames} distinct {frames}",
            FewFramesWarning,
            stacklevel=4,
        )


def _check_video_size(
    path: Path, width: int, height: int, n_frames: int, num_frames: int, max_side: int | None, where: str
) -> None:
    """Refuse a video whose frames, as `where` declares them (its stream header, its first frame image, its array
    shape), are over a decompression-bomb limit; `n_frames` is how many of them decoding reads."""
    if width < 1 or height < 1:
        raise MediaError(path, f"{where} declares frames of {width}x{height} pixels: the file is corrupt")
    pixels, work = width * height, n_frames * width * height
    if MAX_VIDEO_FRAME_PIXELS is not None and pixels > MAX_VIDEO_FRAME_PIXELS:
        raise MediaError(
            path,
            f"{where} declares frames of {width}x{height} = {pixels:,} pixels, over the decompression-bomb limit of "
            f"{MAX_VIDEO_FRAME_PIXELS:,} pixels a frame (raise icreward.media.MAX_VIDEO_FRAME_PIXELS if you trust "
            "the file)",
        )
    if MAX_VIDEO_PIXELS is not None and work > MAX_VIDEO_PIXELS:
        raise MediaError(
            path,
            f"{where} declares {n_frames:,} frames of {width}x{height} to decode, {work:,} pixels, over the "
            f"decompression-bomb limit of {MAX_VIDEO_PIXELS:,} pixels a video (raise icreward.media.MAX_VIDEO_PIXELS "
            "if you trust the file)",
        )
    new_w, new_h = working_size(width, height, max_side)
    kept = num_frames * new_w * new_h
    if MAX_SAMPLED_PIXELS is not None and kept > MAX_SAMPLED_PIXELS:
        raise MediaError(
            path,
            f"{num_frames} frames sampled at {new_w}x{new_h} are {kept:,} pixels, over the limit of "
            f"{MAX_SAMPLED_PIXELS:,} (pass a smaller max_side or fewer frames, or raise "
            "icreward.media.MAX_SAMPLED_PIXELS)",
        )


def _brief(exc: BaseException, limit: int = 200) -> str:
    """An exception as a short message: its type when it has no text, cut to `limit` characters."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def working_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """`(width, height)` shrunk so the longer side is `max_side`, aspect kept; unchanged when already small enough."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _composite(rgba: torch.Tensor, background: tuple[float, float, float]) -> torch.Tensor:
    """Alpha-composite `[..., 4, H, W]` in [0, 1] over a solid `background`, giving `[..., 3, H, W]`."""
    rgb, alpha = rgba[..., :3, :, :], rgba[..., 3:, :, :]  # (..., 3, H, W), (..., 1, H, W)
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
    except MemoryError:
        raise
    except Exception as exc:  # OSError, and what PIL's header parsers let through (EOFError, ValueError, …)
        raise MediaError(path, f"could not open the image, it is truncated or corrupt ({_brief(exc)})") from exc
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
        img.draft(None, working_size(*img.size, max_side))  # JPEG: libjpeg decodes at 1/2, 1/4 or 1/8 scale
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
    size = working_size(*img.size, max_side)
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
    new_w, new_h = working_size(w, h, max_side)
    if (new_w, new_h) == (w, h):
        return frame
    out = F.interpolate(frame[None], size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def _natural_key(path: Path) -> list[int | str]:
    """Sort key that orders embedded numbers by value: frame_2.png before frame_10.png."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _load_frame_folder(path: Path, num_frames: int, max_side: int | None, min_frames: int) -> torch.Tensor:
    try:
        entries = list(path.iterdir())
    except OSError as exc:
        raise MediaError(path, f"cannot list the folder ({exc.strerror or exc})") from None
    files = sorted(
        (p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")), key=_natural_key
    )
    if not files:
        raise MediaError(path, f"folder has no frame images (files ending in {', '.join(sorted(IMAGE_EXTENSIONS))})")
    _check_length(path, len(files), min_frames, num_frames)
    wanted = sample_indices(len(files), num_frames)
    unique = sorted(set(wanted))
    first = wanted[0]
    if _check_file(files[first]) == "folder":
        raise MediaError(files[first], "is a folder, not an image file")
    with _open_image(files[first]) as img:  # the header only: the size the limits are checked on
        width, height = img.size
    _check_video_size(path, width, height, len(unique), num_frames, max_side, f"its frame {files[first].name}")
    frames = {i: load_image(files[i], max_side=max_side) for i in unique}  # each (3, H, W)
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
    except MemoryError:
        raise
    except Exception as exc:  # a garbled header fails in numpy's parser in many ways (ValueError, SyntaxError, …)
        raise MediaError(path, f"not a readable .npy array ({_brief(exc)})") from exc
    if not isinstance(array, np.ndarray):
        if hasattr(array, "close"):
            array.close()
        raise MediaError(path, "is an .npz archive, not a single .npy array")
    if array.ndim != 4 or 3 not in (array.shape[1], array.shape[-1]):
        raise MediaError(path, f"expected an array [T, H, W, 3] or [T, 3, H, W], got shape {list(array.shape)}")
    if array.dtype != np.uint8 and not (np.issubdtype(array.dtype, np.floating) and array.dtype.fields is None):
        raise MediaError(path, f"expected uint8 values, or floats in [0, 1], got dtype {array.dtype}")
    channels_last = array.shape[-1] == 3  # [T, 3, H, 3] is read as channels-last
    height, width = array.shape[1:3] if channels_last else array.shape[2:4]
    _check_length(path, array.shape[0], min_frames, num_frames)
    wanted = sample_indices(array.shape[0], num_frames)
    unique = sorted(set(wanted))
    _check_video_size(path, width, height, len(unique), num_frames, max_side, f"its array shape {list(array.shape)}")
    frames = {}
    for i in unique:
        frame = torch.from_numpy(np.array(array[i], dtype=np.float32))  # reads this frame only
        frame = frame.permute(2, 0, 1) if channels_last else frame  # (3, H, W)
        if array.dtype == np.uint8:
            frame = frame / 255
        else:
            low, high = frame.min().item(), frame.max().item()
            if not (0 <= low and high <= 1):  # NaN fails both
                raise MediaError(path, f"float frames must be in [0, 1], frame {i} spans [{low:.3g}, {high:.3g}]")
        frames[i] = _shrink(frame.contiguous(), max_side)
    return torch.stack([frames[i] for i in wanted])  # (T, 3, H, W)


def _open_container(path: Path) -> av.container.InputContainer:
    import av

    try:
        container = av.open(str(path), metadata_errors="replace")  # a title in Latin-1 does not make a video unreadable
    except av.error.InvalidDataError:
        raise MediaError(path, "not a video FFmpeg can read (the file is truncated, corrupt, or not a video)") from None
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"could not open the video ({_brief(exc)})") from exc
    except MemoryError:
        raise
    except Exception as exc:  # what PyAV raises converting what FFmpeg read
        raise MediaError(path, f"could not open the video, it is corrupt ({_brief(exc)})") from exc
    if not container.streams.video:
        container.close()
        raise MediaError(path, "has no video stream")
    return container


def _read_packets(container: av.container.InputContainer, path: Path) -> tuple[list | None, int, int, int]:
    """`(packets, count, width, height)` of the first video stream: its packets with data, demuxed, not decoded
    (cheap even for 4K), kept compressed for decoding when they come to at most KEPT_PACKET_BYTES (else None: the
    caller demuxes again), their count, and the size the header declares (0 where it does not say)."""
    stream = container.streams.video[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for it (or the codec id in the file is garbage)
        raise MediaError(path, "its video stream is in a codec FFmpeg cannot decode (or the file is corrupt)")
    width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
    packets: list | None = []
    count = kept = 0
    try:
        for packet in container.demux(stream):
            if packet.size > 0 and not packet.is_discard:
                count += 1
                kept += packet.size
                if packets is not None and kept <= KEPT_PACKET_BYTES:
                    packets.append(packet)
                else:
                    packets = None
    except MemoryError:
        raise
    except Exception as exc:  # FFmpegError, and what PyAV raises converting what it read (UnicodeDecodeError…)
        raise MediaError(path, f"truncated or corrupt: could not read its packets ({_brief(exc)})") from exc
    return packets, count, width, height


def _decoded_frames(
    path: Path, container: av.container.InputContainer, packets: list | None
) -> Iterator[av.VideoFrame]:
    """The first video stream's frames in presentation order: decoded from `packets` then drained, or, where they
    were not kept, from the file opened again."""
    if packets is None:
        with _open_container(path) as again:
            stream = again.streams.video[0]
            stream.thread_type = "AUTO"
            yield from again.decode(stream)
        return
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    for packet in [*packets, None]:
        yield from stream.codec_context.decode(packet)


# Packed formats a decoder may hand out that need no colour conversion: the channel order that makes them RGB(A).
_PACKED_TO_RGB = {"rgb24": None, "rgba": None, "bgr24": [2, 1, 0], "bgra": [2, 1, 0, 3]}


def _frame_to_array(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """An `av.VideoFrame` as uint8 `(h, w, 3)`, or `(h, w, 4)` where it has alpha, at `size` = (w, h); FFmpeg scales
    it before numpy sees it. A packed RGB frame already at `size` (GIF frames decode as BGRA) is only reordered."""
    if (frame.width, frame.height) == size and frame.format.name in _PACKED_TO_RGB:
        order = _PACKED_TO_RGB[frame.format.name]
        packed = frame.to_ndarray()  # (h, w, 3 or 4) uint8, the frame's own layout
        return packed if order is None else packed[..., order]
    has_alpha = any(c.is_alpha for c in frame.format.components)
    return frame.reformat(
        width=size[0], height=size[1], format="rgba" if has_alpha else "rgb24", interpolation="BICUBIC"
    ).to_ndarray()  # (h, w, 3 or 4) uint8


def _arrays_to_video(frames: list[np.ndarray]) -> torch.Tensor:
    """uint8 frames `(h, w, 3 or 4)` -> float32 `[T, 3, h, w]` in [0, 1], RGBA composited on DEFAULT_BACKGROUND:
    converted all at once, planar, rather than in several small steps per frame. Where every pixel is opaque (most
    GIFs) compositing would change nothing, and alpha is dropped instead."""
    if len({f.shape for f in frames}) > 1:  # a stream whose frames change format: frame by frame
        return torch.cat([_arrays_to_video([f]) for f in frames])
    x = torch.from_numpy(np.stack(frames))  # (T, h, w, C) uint8
    if x.shape[-1] == 4 and bool((x[..., 3] == 255).all()):
        x = x[..., :3]
    T, h, w, C = x.shape
    planar = torch.empty((T, C, h, w)).copy_(x.permute(0, 3, 1, 2)).div_(255)  # (T, C, h, w), one conversion pass
    return _composite(planar, DEFAULT_BACKGROUND) if C == 4 else planar  # (T, 3, h, w)


def _load_container(path: Path, num_frames: int, max_side: int | None, min_frames: int) -> torch.Tensor:
    kept: list[np.ndarray] = []  # uint8 (h, w, 3 or 4) each, in sample order
    with _open_container(path) as container:  # opened once: the packets are counted, then decoded
        packets, n_frames, width, height = _read_packets(container, path)
        _check_length(path, n_frames, min_frames, num_frames)
        checked = None  # the frame size the limits were checked at
        if width and height:  # refused on the header, before the decoder allocates a frame
            _check_video_size(path, width, height, n_frames, num_frames, max_side, "its stream header")
            checked = (width, height)
        wanted = sample_indices(n_frames, num_frames)
        copies = Counter(wanted)  # frame index -> how many times it appears in the sample
        decoded, size = 0, None
        try:
            for index, frame in enumerate(_decoded_frames(path, container, packets)):
                decoded = index + 1
                if (frame.width, frame.height) != checked:  # no size in the header, or a stream that changes size
                    checked = (frame.width, frame.height)
                    _check_video_size(path, *checked, n_frames, num_frames, max_side, f"its frame {index}")
                if index in copies:
                    size = size or working_size(frame.width, frame.height, max_side)
                    kept.extend([_frame_to_array(frame, size)] * copies[index])
                if index == wanted[-1]:
                    break
        except (MediaError, MemoryError):
            raise
        except Exception as exc:  # FFmpegError, and what PyAV raises on frames it cannot convert
            raise MediaError(
                path, f"truncated or corrupt: decoding failed after {decoded} of {n_frames} frames ({_brief(exc)})"
            ) from exc
    if len(kept) < num_frames:
        raise MediaError(path, f"truncated or corrupt: decoded {decoded} of {n_frames} frames")
    return _arrays_to_video(kept)  # (T, 3, h, w)
