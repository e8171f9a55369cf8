"""The work behind `POST /explain` (and the page at `/` that draws it): each video of a request explained with
`icreward.explain.explain_files` (per-frame reward curve, per-frame inconsistency maps, onset, summary), every head's
value, and the videos ranked by the requested head the way `/rank` ranks them (best first, equal rewards in input
order, videos that could not be read last). Maps are resized to a small grid; on request the sampled frames come
too, as small JPEGs, for a browser that cannot play the uploaded file (GIF, .npy, a codec it lacks)."""

from __future__ import annotations

import base64
import io
import math
import threading
from pathlib import Path

from fastapi import HTTPException, Request
from PIL import Image
from pydantic import BaseModel, Field

from icreward.errors import MediaError
from icreward.interface import Scorer
from icreward.server.bodies import RankPaths

GRID_RANGE = (1, 64)  # map cells per side a request may ask for
DEFAULT_GRID = 16
FRAME_SIZE_RANGE = (16, 1024)  # longer side of the sampled frames sent back as JPEGs
JPEG_QUALITY = 85


class ExplainPaths(RankPaths):
    """Explain videos on the server: paths inside an --allow-root folder (relative paths start from the first)."""

    videos: list[str] = Field(description="videos of that image", examples=[["cats/a.mp4", "cats/b.mp4"]])
    grid: int = Field(DEFAULT_GRID, description=f"map cells per side, {GRID_RANGE[0]} to {GRID_RANGE[1]}")
    frame_size: int | None = Field(
        None,
        description="send each video's sampled frames as JPEG data URIs, longer side at most this many pixels "
        f"({FRAME_SIZE_RANGE[0]} to {FRAME_SIZE_RANGE[1]}); default: no frames",
    )


class ExplainedVideo(BaseModel):
    video: str = Field(description="the upload's file name, or the path as given")
    index: int = Field(description="its position in the request, from 0")
    rank: int = Field(description="1 = best by `head`; videos that could not be explained come last")
    reward: float | None = Field(description="the value of `head` (null where the video could not be read)")
    heads: dict[str, float | None] | None = Field(
        None, description="every head of the model; null where a head has no value (text, no prompt)"
    )
    curve: list[float] | None = Field(
        None, description="the reward of each sampled frame judged alone (higher = more consistent)"
    )
    maps: list[list[list[float]]] | None = Field(
        None, description="per sampled frame, a `grid` x `grid` map of inconsistency in [0, 1] (rows from the top)"
    )
    frame_indices: list[int] | None = Field(None, description="the video's frame number of each sampled frame")
    times: list[float] | None = Field(None, description="seconds of the sampled frames (null: the file has no rate)")
    onset: int | None = Field(None, description="index into the sampled frames where drift starts; null: none")
    onset_frame: int | None = Field(None, description="the video's frame number at the onset")
    region: str | None = Field(None, description="the ninth of the frame whose map is highest from the onset on")
    summary: str | None = Field(None, description="one line: when it drifts and where")
    frames: list[str] | None = Field(None, description="the sampled frames as JPEG data URIs, where asked")
    error: str | None = Field(None, description="why the video could not be explained")


class ExplainResponse(BaseModel):
    image: str
    model: str
    num_frames: int
    head: str = Field(description="the head the videos are ranked by and `reward` is")
    grid: int = Field(description="map cells per side")
    videos: list[ExplainedVideo] = Field(description="best first")


def _ranged(name: str, value: object, low: int, high: int) -> int:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HTTPException(422, f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise HTTPException(422, f"{name} must be between {low} and {high}, got {number}")
    return number


async def explain_options(request: Request) -> tuple[int, int | None]:
    """`(grid, frame_size)` of a request whose media `request_media` has read: from the form (cached by Starlette)
    or the JSON body; HTTP 422 for a value out of range."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
        body = ExplainPaths.model_validate_json(await request.body())  # valid: request_media has read it
        grid, frame_size = body.grid, body.frame_size
    else:
        form = await request.form()
        grid, frame_size = form.get("grid") or DEFAULT_GRID, form.get("frame_size") or None
    grid = _ranged("grid", grid, *GRID_RANGE)
    frame_size = None if frame_size is None else _ranged("frame_size", frame_size, *FRAME_SIZE_RANGE)
    return grid, frame_size


def frame_uris(path: Path, num_frames: int, frame_size: int) -> list[str]:
    """The `num_frames` sampled frames of a video (the ones `load_video` samples, hence the explained ones) as JPEG
    data URIs, longer side at most `frame_size`."""
    from icreward.media import load_video

    video = load_video(path, num_frames=num_frames, max_side=frame_size)  # (T, 3, h, w) in [0, 1]
    pixels = (video.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()  # (T, h, w, 3)
    uris = []
    for frame in pixels:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        uris.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return uris


class ExplainCancelled(Exception):
    """The request was given up (timed out or the server stopped) before all its videos were explained."""


def explain_videos(
    scorer: Scorer,
    image: Path,
    videos: list[Path],
    labels: list[str],
    *,
    num_frames: int,
    prompt: str | None,
    head: str,
    grid: int,
    frame_size: int | None,
    device: str,
    precision: str,
    cancelled: threading.Event,
) -> list[ExplainedVideo]:
    """Explain each video of `image` in turn (one at a time: memory holds one video's frames), best first by `head`.

    A video that cannot be read comes last with its error; an image that cannot be read raises `MediaError` (the
    caller answers 422). Stops with `ExplainCancelled` between videos once `cancelled` is set."""
    from icreward.explain import explain_files

    entries: list[ExplainedVideo] = []
    for index, (path, label) in enumerate(zip(videos, labels, strict=True)):
        if cancelled.is_set():
            raise ExplainCancelled
        try:
            (explanation,) = explain_files(
                scorer, image, [path], prompt, num_frames=num_frames, device=device, precision=precision
            )
            frames = None if frame_size is None else frame_uris(path, num_frames, frame_size)
        except MediaError as e:
            if Path(e.path) == image:
                raise
            entries.append(ExplainedVideo(video=label, index=index, rank=0, reward=None, error=f"{label}: {e.reason}"))
            continue
        value = explanation.heads.get(head)
        finite = value is not None and math.isfinite(value)
        fields = explanation.to_json(grid)
        entries.append(
            ExplainedVideo(
                video=label,
                index=index,
                rank=0,
                reward=value if finite else None,
                heads=explanation.heads,  # full precision: the ranking below reads them
                frames=frames,
                **{key: fields[key] for key in ExplainedVideo.model_fields if key in fields and key not in _OWN},
                error=None if finite else f"the {head} head gave no finite value",
            )
        )
    # best first, the videos without a value last, equal values in input order: the order of /rank
    entries.sort(key=lambda e: (e.reward is None, -(e.reward or 0.0), e.index))
    for rank, entry in enumerate(entries, start=1):
        entry.rank = rank
    return entries


_OWN = frozenset({"video", "index", "rank", "reward", "heads", "frames", "error"})  # set above, not from to_json
