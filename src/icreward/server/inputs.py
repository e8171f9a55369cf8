"""Where a request's media come from: uploads saved to a per-request temporary folder, or paths on the server
confined to the `--allow-root` folders; the request-size limit; and what decoding the media would take, read from
their headers before anything is decoded."""

from __future__ import annotations

import contextlib
import re
import shutil
import struct
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import HTTPException, Request
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from icreward.errors import IcrewardError


class PathPolicy:
    """Which server paths a request may name: files and frame folders inside one of `roots`, after every `..` and
    symlink is resolved. No roots: path requests are refused. A relative path is taken from the first root."""

    def __init__(self, roots: Sequence[str | Path]):
        self.roots = []
        for root in roots:
            try:
                resolved = Path(root).resolve(strict=True)
            except (OSError, RuntimeError) as e:
                raise IcrewardError(f"--allow-root {root}: no such folder ({e})") from e
            if not resolved.is_dir():
                raise IcrewardError(f"--allow-root {root}: not a folder")
            self.roots.append(resolved)

    def _inside(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.roots)

    def resolve(self, name: str, given: str) -> Path:
        """The real path of input `name` (`"image"`, `"video"`, ...); HTTP 403 where it is outside the roots."""
        if not self.roots:
            raise HTTPException(403, "path requests are disabled on this server (start it with --allow-root DIR)")
        outside = HTTPException(403, f"{name}: {given} is outside the folders this server may read (--allow-root)")
        path = Path(given) if Path(given).is_absolute() else self.roots[0] / given
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            try:
                lexical = path.resolve()  # follows the links that exist: tells "outside" from "missing inside"
            except (OSError, RuntimeError, ValueError):
                raise outside from None
            if not self._inside(lexical):
                raise outside from None
            raise HTTPException(422, f"{name}: {given}: no such file or folder") from None
        if not self._inside(resolved):
            raise outside
        if resolved.is_dir():  # a frame folder: each frame must be inside too (no symlinked frames from elsewhere)
            if not all(self._inside(frame.resolve()) for frame in resolved.iterdir()):
                raise outside
        elif not resolved.is_file():
            raise HTTPException(422, f"{name}: {given} is not a regular file")
        return resolved


class BodySizeLimit:
    """ASGI middleware answering 413 to a request body over `max_bytes`: at once when Content-Length says so,
    else (a chunked upload) as soon as that many bytes have arrived."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_refused: Callable[[str, int], None] | None = None):
        self.app, self.max_bytes, self.on_refused = app, max_bytes, on_refused  # on_refused(path, status): counts

    def _detail(self) -> str:
        return f"request body is over the upload limit of {self.max_bytes / 2**20:g} MiB (--max-upload-mb)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            if self.on_refused is not None:
                self.on_refused(scope["path"], 413)
            return await JSONResponse({"detail": self._detail()}, status_code=413)(scope, receive, send)
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._detail())  # answered by the app's HTTPException handler
            return message

        await self.app(scope, limited, send)


@dataclass
class RequestMedia:
    """The inputs of one request as local paths, and how to call each in answers (the upload's file name, or the
    path as the client gave it)."""

    paths: dict[str, Path] = field(default_factory=dict)  # "image", "video" -> path
    labels: dict[str, str] = field(default_factory=dict)
    videos: list[Path] = field(default_factory=list)  # the list input of /rank
    video_labels: list[str] = field(default_factory=list)
    num_frames: int | None = None
    prompt: str | None = None  # the prompt the video(s) came from (the text head and guidance read it)
    head: str | None = None  # which head is the reward (None: the served scorer's own)


def _safe_suffix(filename: str | None) -> str:
    """The upload's extension when it is a plain one (`.mp4`, `.npy`): the decoders pick a reader by it."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


async def _save(upload: UploadFile, path: Path) -> Path:
    path = path.with_suffix(_safe_suffix(upload.filename))

    def copy() -> None:
        upload.file.seek(0)
        with path.open("wb") as f:
            shutil.copyfileobj(upload.file, f, 1 << 20)

    await run_in_threadpool(copy)
    return path


def _num_frames(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HTTPException(422, f"num_frames must be an integer, got {value!r}") from None


def _text_field(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise HTTPException(422, f"{name} must be a text field, not a file")
    return value


@contextlib.asynccontextmanager
async def request_media(
    request: Request,
    policy: PathPolicy,
    paths_model: type[BaseModel],
    files: Sequence[str],
    list_field: str | None,
    max_list: int | None = None,
) -> AsyncIterator[RequestMedia]:
    """Read a request's inputs: a multipart form whose `files` (and repeated `list_field`, at most `max_list` of them:
    HTTP 422 before any is saved) are uploads, saved to a temporary folder that is removed on exit; or a JSON body
    (`paths_model`) of paths checked by `policy`."""

    def check_list(n: int) -> None:
        if max_list is not None and n > max_list:
            raise HTTPException(422, f"{list_field}: {n} given, at most {max_list} per request")

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        async with request.form(max_files=1000, max_fields=100) as form:
            with tempfile.TemporaryDirectory(prefix="icreward-upload-") as tmp:
                media = RequestMedia(
                    num_frames=_num_frames(form.get("num_frames")),
                    prompt=_text_field(form.get("prompt"), "prompt"),
                    head=_text_field(form.get("head"), "head"),
                )
                for name in files:
                    upload = form.get(name)
                    if not isinstance(upload, UploadFile):
                        raise HTTPException(422, f"{name}: missing; send it as a file field named {name!r}")
                    media.paths[name] = await _save(upload, Path(tmp) / name)
                    media.labels[name] = upload.filename or name
                if list_field is not None:
                    uploads = [u for u in form.getlist(list_field) if isinstance(u, UploadFile)]
                    if not uploads:
                        raise HTTPException(422, f"{list_field}: missing; send one file field {list_field!r} per video")
                    check_list(len(uploads))
                    for i, upload in enumerate(uploads):
                        media.videos.append(await _save(upload, Path(tmp) / f"{list_field}-{i}"))
                        media.video_labels.append(upload.filename or f"{list_field}[{i}]")
                yield media
    elif content_type == "application/json":
        try:
            body = paths_model.model_validate_json(await request.body())
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
            raise HTTPException(422, f"invalid JSON body: {problems}") from None
        data = body.model_dump()
        media = RequestMedia(num_frames=data.get("num_frames"), prompt=data.get("prompt"), head=data.get("head"))
        for name in files:
            media.paths[name], media.labels[name] = policy.resolve(name, data[name]), data[name]
        if list_field is not None:
            if not data[list_field]:
                raise HTTPException(422, f"{list_field}: empty; name at least one")
            check_list(len(data[list_field]))
            media.videos = [policy.resolve(f"{list_field}[{i}]", v) for i, v in enumerate(data[list_field])]
            media.video_labels = list(data[list_field])
        yield media
    else:
        raise HTTPException(
            415, "send multipart/form-data (file uploads) or application/json (paths on the server), see /docs"
        )


# ---- what decoding a request's media would take, read from the file headers before a pixel is decoded

DECODE_BUFFERS = 2  # full-size frames (RGBA, 4 bytes a pixel) a decoder holds at once: the canvas and its output


@dataclass
class MediaCost:
    """One input's decoding cost, from its header: the frames kept (float32 RGB at the model's working size) and the
    full-size frames the decoder works on."""

    label: str
    width: int  # full size, as the header gives it
    height: int
    kept_bytes: int  # frames kept x h x w x 3 x 4 bytes, h x w the size after the `max_side` downscale
    work_bytes: int  # DECODE_BUFFERS x width x height x 4 bytes


def pixel_limit(is_video: bool) -> int | None:
    """The most pixels an image (`icreward.media.MAX_IMAGE_PIXELS`) or a video frame (`MAX_VIDEO_FRAME_PIXELS`, the
    image limit where media has none) may have; None: no limit. Read at each request: a user may raise them."""
    from icreward import media

    return getattr(media, "MAX_VIDEO_FRAME_PIXELS", media.MAX_IMAGE_PIXELS) if is_video else media.MAX_IMAGE_PIXELS


def media_cost(path: Path, label: str, frames: int, max_side: int | None, is_video: bool) -> MediaCost | None:
    """The decoding cost of an image (`frames` = 1) or a video; None where the header cannot be read (the decoder
    then tells what is wrong with the file). HTTP 413 where a frame is over the pixel limit of `icreward.media`."""
    from icreward import media

    try:
        size = _header_size(path, is_video)
    except Image.DecompressionBombError:  # PIL refuses to even open an image over twice its own limit
        raise HTTPException(
            413, f"{label}: over twice PIL's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels"
        ) from None
    if size is None:
        return None
    width, height = size
    limit = pixel_limit(is_video)
    if limit is not None and width * height > limit:
        raise HTTPException(
            413, f"{label}: {width}x{height} = {width * height:,} pixels a frame, over the limit of {limit:,} pixels"
        )
    w, h = media.working_size(width, height, max_side)  # the decoder's own rule
    return MediaCost(label, width, height, frames * h * w * 3 * 4, DECODE_BUFFERS * width * height * 4)


def _header_size(path: Path, is_video: bool) -> tuple[int, int] | None:
    """(width, height) of an image, or of a video's frames (the largest frame of a frame folder, the logical screen
    of a GIF, the first video stream of a container), read from headers only."""
    from icreward.media import IMAGE_EXTENSIONS

    if path.is_dir():
        frames = [
            p
            for p in path.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()  # no FIFO: blocks
        ]
        sizes = [_image_size(frame) for frame in frames]
        return None if not frames or None in sizes else max(sizes, key=lambda s: s[0] * s[1])  # type: ignore
    if not path.is_file():
        return None
    with path.open("rb") as f:
        head = f.read(10)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) == 10:
        return struct.unpack("<HH", head[6:10])  # the canvas every frame is drawn on, whatever the frames' own size
    if not is_video:
        return _image_size(path)
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only: nothing is read
        except (ValueError, OSError, EOFError):
            return None
        if not isinstance(array, np.ndarray) or array.ndim != 4:
            return None
        return (array.shape[2], array.shape[1]) if array.shape[-1] == 3 else (array.shape[3], array.shape[2])
    return _container_size(path)


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # lazy: reads the header
                return img.size
    except Image.DecompressionBombError:
        raise
    except Exception:
        return None


def _container_size(path: Path) -> tuple[int, int] | None:
    import av

    try:
        with av.open(str(path)) as container:  # the container's headers (a GIF is caught before: no frame decoded)
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            return (stream.width, stream.height) if stream.width > 0 and stream.height > 0 else None
    except Exception:
        return None
