"""The HTTP API of `icreward serve`: score and rank over uploads or allowed server paths, micro-batched, and explain
(where and when each video drifts, `server/explaining.py`), within bounds a client cannot push (body size, frames,
decoded memory, videos per request, time). Two pages, both from files of this server alone, so they work offline:
the page at / (static/: plain HTML, JS and CSS, drawing /explain's answer) and /docs (Swagger UI, from the files
fastapi-offline ships)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from icreward.errors import IcrewardError, MediaError
from icreward.interface import Scorer
from icreward.server.batcher import MicroBatcher, ScoreOutcome
from icreward.server.bodies import RankPaths
from icreward.server.explaining import (
    FRAME_SIZE_RANGE,
    GRID_RANGE,
    ExplainPaths,
    ExplainResponse,
    explain_options,
    explain_videos,
)
from icreward.server.inputs import (
    DECODE_BUFFERS,
    BodySizeLimit,
    PathPolicy,
    RequestMedia,
    media_cost,
    pixel_limit,
    request_media,
)

RANK_DECODERS = 2  # threads rank_videos decodes a request's videos with
# The page at /: it and everything it loads come from this server (its static files, /model and /explain) or from
# the files the user picked (blob: URLs), never from elsewhere; the browser enforces it.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'"
)


@dataclass
class ServeSettings:
    allow_roots: Sequence[str | Path] = ()  # folders whose files JSON path requests may name; none: uploads only
    max_upload_mb: float = 200.0  # largest request body (all uploads together), MiB
    max_frames: int = 64  # largest num_frames a request may ask for (capped by icreward.media.MAX_FRAMES)
    max_decode_mb: float = 512.0  # most memory one request's decoded media may take (estimated from headers), MiB
    request_timeout: float = 60.0  # seconds from a request's start to its answer, else 504
    batch_size: int = 8  # most (image, video) pairs in one forward pass
    batch_wait_ms: float = 10.0  # how long the worker waits for more requests to join a batch
    device: str = "cpu"
    max_rank_videos: int = 64  # most videos in one /rank request
    max_explain_videos: int = 16  # most videos in one /explain request (each takes a few forward passes)
    decode_workers: int = 2  # threads decoding media
    precision: str = "fp32"  # fp32 (no autocast), bf16 or fp16 autocast on the device (icreward.precision)

    def __post_init__(self) -> None:
        for name in (
            "max_upload_mb",
            "max_frames",
            "max_decode_mb",
            "request_timeout",
            "batch_size",
            "max_rank_videos",
            "max_explain_videos",
            "decode_workers",
        ):
            if not getattr(self, name) > 0:
                raise IcrewardError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise IcrewardError(f"batch-wait-ms must be at least 0, got {self.batch_wait_ms}")
        from icreward.precision import check_precision

        check_precision(self.precision)


# ---- request and response bodies (the /docs page is built from these)


class ScorePaths(BaseModel):
    """Score files on the server: paths inside an --allow-root folder (relative paths start from the first)."""

    image: str = Field(description="conditioning image (PNG, JPEG, WebP, ...)", examples=["cats/cat.png"])
    video: str = Field(description="generated video (mp4, webm, gif, frame folder, .npy)", examples=["cats/cat.mp4"])
    num_frames: int | None = Field(None, description="frames sampled from the video (default: the model's)")
    prompt: str | None = Field(None, description="the prompt the video was made from (text head, guidance)")
    head: str | None = Field(None, description="which head is `reward` (default: the served model's own)")


class ScoreResponse(BaseModel):
    reward: float = Field(description="the selected head's value (consistency unless `head` asks otherwise)")
    model: str = Field(description="the model that scored it, as given to --model")
    num_frames: int = Field(description="frames sampled from the video")
    head: str = Field(description="the head `reward` is")
    heads: dict[str, float | None] = Field(
        description="every head of the model, from the same pass; null where a head has no value (text, no prompt)"
    )


class RankedVideo(BaseModel):
    video: str = Field(description="the upload's file name, or the path as given")
    reward: float | None = Field(description="null where the video could not be scored")
    rank: int = Field(description="1 = best; videos that could not be scored come last")
    error: str | None = Field(None, description="why the video could not be scored")


class RankResponse(BaseModel):
    image: str
    model: str
    num_frames: int
    head: str = Field(description="the head the videos are ranked by")
    ranking: list[RankedVideo] = Field(description="best first")


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class ModelInfo(BaseModel):
    name: str = Field(description="as given to --model", examples=["metric:color-hist"])
    type: str = Field(description="'metric' for a handcrafted metric, else the learned model's type")
    scorer: str = Field(description="the scorer's own name")
    num_frames: int = Field(description="frames sampled per video unless a request asks otherwise")
    max_side: int | None = Field(description="longer side media are decoded at")
    needs_weights: bool = Field(description="whether it runs on pretrained weights")
    parameters: int = Field(description="number of parameters")
    device: str
    heads: list[str] = Field(description="the heads a request may ask for (`head`)")
    head: str = Field(description="the head `reward` is unless a request asks for another")
    config: dict[str, Any] | None = Field(None, description="a learned model's checkpoint config")


class Stats(BaseModel):
    """Counts since the server started. Every /score and /rank request is counted once, when it is answered."""

    requests: int = Field(description="/score and /rank requests answered, whatever the answer")
    score_requests: int = Field(description="of them, /score requests")
    rank_requests: int = Field(description="of them, /rank requests")
    errors: int = Field(description="of them, answered with an error status (4xx or 5xx), dropped ones included")
    dropped: int = Field(
        description="of them, given up: not answered within --request-timeout (504), or cut off by shutdown (503)"
    )
    batches: int = Field(description="forward passes run, for /score micro-batches and /rank alike")
    items: int = Field(description="videos scored in them: one per answered /score, one per ranked video")
    largest_batch: int = Field(description="most videos scored in one forward pass")


class ErrorBody(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "a path outside the --allow-root folders, or path requests disabled"},
    413: {
        "model": ErrorBody,
        "description": "request body over --max-upload-mb, an image or video frame over the pixel limit, or media "
        "whose decoding would take over --max-decode-mb (read from the file headers: nothing was decoded)",
    },
    415: {"model": ErrorBody, "description": "neither multipart/form-data nor application/json"},
    422: {
        "model": ErrorBody,
        "description": "a missing field, num_frames out of range, too many videos, or media that cannot be read",
    },
    503: {"model": ErrorBody, "description": "the server shut down before the request was scored"},
    504: {"model": ErrorBody, "description": "not answered within --request-timeout"},
}


def _bodies(paths_model: type[BaseModel], files: dict[str, str], list_field: str | None = None) -> dict[str, Any]:
    """OpenAPI request bodies of an endpoint that takes either uploads or a JSON object of paths."""
    form: dict[str, Any] = {name: {"type": "string", "format": "binary", "description": d} for name, d in files.items()}
    if list_field is not None:
        form[list_field] = {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "videos"}
    form["num_frames"] = {"type": "integer", "description": "frames sampled per video (default: the model's)"}
    form["prompt"] = {"type": "string", "description": "the prompt the video(s) came from (text head, guidance)"}
    form["head"] = {"type": "string", "description": "which head is the reward (default: the served model's own)"}
    required = [*files, *([list_field] if list_field else [])]
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": form, "required": required}},
                "application/json": {"schema": paths_model.model_json_schema()},
            },
        }
    }


def model_info(name: str, scorer: Scorer, device: str) -> ModelInfo:
    config = getattr(scorer, "config", None)
    return ModelInfo(
        name=name,
        type=getattr(scorer, "model_type", "metric"),
        scorer=scorer.name,
        num_frames=scorer.num_frames,
        max_side=scorer.max_side,
        needs_weights=scorer.needs_weights,
        parameters=sum(p.numel() for p in scorer.parameters()),
        device=str(device),
        heads=list(scorer.head_names),
        head=scorer.selected_head,
        config=config.to_dict() if hasattr(config, "to_dict") else None,
    )


def _media_detail(name: str, label: str, error: Exception) -> str:
    """`video (clip.mp4): not a video FFmpeg can read ...`: the field, what the client called it, and the reason."""
    return f"{name} ({label}): {error.reason if isinstance(error, MediaError) else error}"


def frame_range(settings: ServeSettings) -> tuple[int, int]:
    """The num_frames a request may ask for: from `icreward.media.MIN_FRAMES` (2 where it has none) to the smaller of
    `--max-frames` and `icreward.media.MAX_FRAMES`."""
    from icreward import media

    return getattr(media, "MIN_FRAMES", 2), min(settings.max_frames, getattr(media, "MAX_FRAMES", settings.max_frames))


def limits_text(settings: ServeSettings, scorer: Scorer) -> str:
    """The limits of this server, in Markdown (the /docs page and its description)."""
    low, high = frame_range(settings)
    image_pixels, frame_pixels = ("none" if n is None else f"{n:,}" for n in (pixel_limit(False), pixel_limit(True)))
    working = "full size" if scorer.max_side is None else f"longer side at most {scorer.max_side}"
    return f"""
**Limits of this server** (all but the last are checked before any media are decoded):

| what | limit | answer |
|---|---|---|
| request body, all uploads together | {settings.max_upload_mb:g} MiB (`--max-upload-mb`) | 413 |
| `num_frames` | {low} to {high} (`--max-frames`); default: the model's {scorer.num_frames} | 422 |
| decoded media per request | {settings.max_decode_mb:g} MiB (`--max-decode-mb`), estimated from the headers | 413 |
| pixels of an image / of a video frame, from the header | {image_pixels} / {frame_pixels} (`icreward.media`) | 413 |
| videos per `/rank` request | {settings.max_rank_videos} | 422 |
| videos per `/explain` request | {settings.max_explain_videos} | 422 |
| time from a request's start to its answer | {settings.request_timeout:g} s (`--request-timeout`) | 504 |

The decoded-media estimate of a request is what it keeps, the image and the sampled frames of each video as
float32 RGB at the model's working size (T x h x w x 3 x 4 bytes, {working}), plus the
full-size frames being decoded ({DECODE_BUFFERS} RGBA frames, W x H x 4 bytes each, per decoding thread: one for
`/score`, {RANK_DECODERS} for `/rank`). `/rank` decodes and scores its videos {settings.batch_size} at a time
(`--batch-size`), so only its {settings.batch_size} largest videos count. `/score` requests that arrive together
share one forward pass of up to {settings.batch_size}, so the server holds at most about {settings.batch_size} x
{settings.max_decode_mb:g} MiB of decoded media. A GIF counts at the size of its canvas (logical screen), whatever
the size of its frames.

`/explain` explains its videos one at a time, one request at a time, beside the `/score` and `/rank` batches.

`/stats` counts every `/score` and `/rank` request once when it is answered (errors and timeouts included), and the
forward passes and videos scored for both (not `/explain`).
"""


def endpoint_limits(settings: ServeSettings, min_frames: int, max_frames: int) -> str:
    return (
        f"`num_frames`: {min_frames} to {max_frames} (422 outside). Refused with 413 before anything is decoded: a "
        f"body over {settings.max_upload_mb:g} MiB, a frame over the pixel limit, media whose decoding would take over "
        f"{settings.max_decode_mb:g} MiB (estimated from the headers, see the limits above). Answered within "
        f"{settings.request_timeout:g} s, else 504."
    )


def create_app(scorer: Scorer, model_name: str, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving `scorer` (named `model_name` in answers). Its lifespan starts and stops the batcher
    and the /explain worker, so drive it with uvicorn or `with TestClient(app)`. Its pages, / and /docs (Swagger UI),
    load their scripts and styles from the server itself, never from a CDN; there is no /redoc page (ReDoc fetches
    its logo from a CDN)."""
    settings = settings or ServeSettings()
    policy = PathPolicy(settings.allow_roots)
    batcher = MicroBatcher(
        scorer,
        batch_size=settings.batch_size,
        batch_wait_ms=settings.batch_wait_ms,
        device=settings.device,
        decode_workers=settings.decode_workers,
        precision=settings.precision,
    )
    info = model_info(model_name, scorer, settings.device)
    counts = _RequestCounts()
    min_frames, max_frames = frame_range(settings)
    max_decode_bytes = int(settings.max_decode_mb * 2**20)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        app.state.explainer = ThreadPoolExecutor(1, thread_name_prefix="icreward-explain")  # one request at a time
        try:
            yield
        finally:
            app.state.explainer.shutdown(wait=False, cancel_futures=True)
            batcher.stop()

    app = FastAPIOffline(
        title="icreward",
        summary="Image-to-video consistency rewards",
        description="Score how faithfully a generated video keeps the image it was conditioned on, rank several "
        "videos of one image (best-of-N), or explain where and when each drifts from it (the page at / draws that). "
        "Send files as multipart uploads, or (where the server was started with --allow-root) a JSON object of paths "
        "on the server. Requests that arrive together are scored in one batch.\n" + limits_text(settings, scorer),
        lifespan=lifespan,
        redoc_url=None,  # ReDoc's page fetches its logo from cdn.redoc.ly, whatever its options: /docs only
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )
    app.add_middleware(BodySizeLimit, max_bytes=int(settings.max_upload_mb * 2**20), on_refused=counts.refused)
    app.state.batcher = batcher

    def frames_of(media: RequestMedia) -> int:
        if media.num_frames is None:
            return scorer.num_frames
        if not min_frames <= media.num_frames <= max_frames:
            raise HTTPException(
                422,
                f"num_frames must be between {min_frames} and {max_frames} (--max-frames), got {media.num_frames}",
            )
        return media.num_frames

    def head_of(media: RequestMedia) -> str:
        """The head a request asks for (the served scorer's own by default); 422 for one it does not have."""
        own = scorer.selected_head
        if media.head is not None and media.head not in scorer.head_names:
            raise HTTPException(422, f"head: {media.head!r} is not a head of this model; its heads: "
                                f"{', '.join(scorer.head_names)}")  # fmt: skip
        return media.head or own

    def check_decode(media: RequestMedia, num_frames: int) -> None:
        """HTTP 413 where decoding the request's media would take over --max-decode-mb (or a frame is over the
        pixel limit), read from the headers; a file whose header cannot be read is left to the decoder's error."""
        image = media_cost(media.paths["image"], f"image ({media.labels['image']})", 1, scorer.max_side, False)
        if "video" in media.paths:  # /score: one decoding thread reads the image, then the video
            videos = [
                media_cost(media.paths["video"], f"video ({media.labels['video']})", num_frames, scorer.max_side, True)
            ]
            decoders = 1
        else:  # /rank: the image, then the videos by groups of batch_size, RANK_DECODERS threads decoding
            videos = [
                media_cost(path, f"videos[{i}] ({label})", num_frames, scorer.max_side, True)
                for i, (path, label) in enumerate(zip(media.videos, media.video_labels, strict=True))
            ]
            decoders = RANK_DECODERS
        known = [v for v in videos if v is not None]
        held = sorted(known, key=lambda v: v.kept_bytes, reverse=True)[: settings.batch_size]
        costs = [c for c in (image, *known) if c is not None]
        if not costs:
            return
        biggest = max(costs, key=lambda c: c.work_bytes)
        total = (image.kept_bytes if image else 0) + sum(v.kept_bytes for v in held) + decoders * biggest.work_bytes
        if total > max_decode_bytes:
            raise HTTPException(
                413,
                f"decoding would take about {total / 2**20:,.0f} MiB (the largest, {biggest.label}, is "
                f"{biggest.width}x{biggest.height}), over this server's bound of {settings.max_decode_mb:g} MiB per "
                "request (--max-decode-mb)",
            )

    async def answer(kind: str | None, work):
        """Run a request's `work` within --request-timeout and count it in /stats once, whatever its answer (a
        `kind` of None: not counted, /explain)."""
        status = 500
        try:
            async with asyncio.timeout(settings.request_timeout):
                response = await work()
            status = 200
            return response
        except TimeoutError:
            status = 504
            raise HTTPException(
                504, f"not answered within {settings.request_timeout:g} s (--request-timeout)"
            ) from None
        except HTTPException as e:
            status = e.status_code
            raise
        except asyncio.CancelledError:
            status = 499  # the server is stopping under it
            raise
        finally:
            if kind is not None:
                counts.answered(kind, status)

    async def outcome_of(future):
        """The worker's answer to a submitted job; HTTP 503 where the batcher was stopped before it got to it."""
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                raise HTTPException(503, "the server shut down before the request was scored") from None
            raise

    page = resources.files("icreward.server").joinpath("static", "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        """The page: drop an image and videos, see the ranking, every head, the per-frame curve and the maps."""
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(packages=[("icreward.server", "static")]), name="static")

    @app.get("/healthz", response_model=Health, summary="liveness")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/model", response_model=ModelInfo, summary="the model being served")
    async def model() -> ModelInfo:
        return info

    @app.get("/stats", response_model=Stats, summary="requests answered, forward passes run, videos scored")
    async def stats() -> Stats:
        """Counts since the server started: every /score and /rank request once, when answered (errors, refusals
        and timeouts included), and the forward passes and videos scored for both."""
        work = batcher.stats()
        return Stats(**asdict(counts), batches=work.batches, items=work.items, largest_batch=work.largest_batch)

    @app.post(
        "/score",
        response_model=ScoreResponse,
        responses=_ERRORS,
        summary="reward of one (image, video)",
        description="The reward of one (image, video): uploads (file fields `image` and `video`, optional "
        "`num_frames`) or, on a server started with --allow-root, a JSON object of paths. "
        + endpoint_limits(settings, min_frames, max_frames),
        openapi_extra=_bodies(ScorePaths, {"image": "conditioning image", "video": "generated video"}),
    )
    async def score(request: Request) -> ScoreResponse:
        async def work() -> ScoreResponse:
            async with request_media(request, policy, ScorePaths, ("image", "video"), None) as media:
                num_frames = frames_of(media)
                head = head_of(media)
                await run_in_threadpool(check_decode, media, num_frames)
                future = batcher.submit_score(
                    media.paths["image"], media.paths["video"], num_frames, media.prompt, head
                )
                outcome: ScoreOutcome = await outcome_of(future)
            if outcome.error is not None:
                raise HTTPException(422, _media_detail(outcome.field, media.labels[outcome.field], outcome.error))
            if outcome.reward is None:
                if head == "text" and not media.prompt:
                    raise HTTPException(422, "the text head has no value without a prompt: send `prompt`")
                raise HTTPException(500, "the model gave a reward that is not a finite number")
            return ScoreResponse(
                reward=outcome.reward, model=model_name, num_frames=num_frames, head=head, heads=outcome.heads
            )

        return await answer("score", work)

    @app.post(
        "/rank",
        response_model=RankResponse,
        responses=_ERRORS,
        summary="videos of one image, best first (best-of-N)",
        description="Several videos of one image, best first: uploads (file field `image`, one file field `videos` "
        f"per video, optional `num_frames`) or a JSON object of paths. At most {settings.max_rank_videos} videos per "
        f"request (422 over); they are decoded and scored {settings.batch_size} at a time, and a video that cannot be "
        "read comes last with its error. " + endpoint_limits(settings, min_frames, max_frames),
        openapi_extra=_bodies(RankPaths, {"image": "conditioning image"}, list_field="videos"),
    )
    async def rank(request: Request) -> RankResponse:
        async def work() -> RankResponse:
            async with request_media(
                request, policy, RankPaths, ("image",), "videos", max_list=settings.max_rank_videos
            ) as media:
                num_frames = frames_of(media)
                head = head_of(media)
                await run_in_threadpool(check_decode, media, num_frames)
                label = dict(zip(map(str, media.videos), media.video_labels, strict=True))
                try:
                    job = batcher.submit_rank(media.paths["image"], media.videos, num_frames, media.prompt, head)
                    ranking = await outcome_of(job)
                except MediaError as e:
                    raise HTTPException(422, _media_detail("image", media.labels["image"], e)) from None
            entries = [
                RankedVideo(
                    video=label[video],
                    reward=reward,
                    rank=i,
                    error=None if error is None else f"{label[video]}: {error.removeprefix(f'{video}: ')}",
                )
                for i, (video, reward, error) in enumerate(ranking, start=1)
            ]
            return RankResponse(
                image=media.labels["image"], model=model_name, num_frames=num_frames, head=head, ranking=entries
            )

        return await answer("rank", work)

    explain_body = _bodies(ExplainPaths, {"image": "conditioning image"}, list_field="videos")
    explain_body["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"].update(
        grid={"type": "integer", "description": f"map cells per side, {GRID_RANGE[0]} to {GRID_RANGE[1]} (16)"},
        frame_size={
            "type": "integer",
            "description": "send the sampled frames as JPEG data URIs, longer side at most this "
            f"({FRAME_SIZE_RANGE[0]} to {FRAME_SIZE_RANGE[1]}; default: none)",
        },
    )

    @app.post(
        "/explain",
        response_model=ExplainResponse,
        responses=_ERRORS,
        summary="where and when each video drifts from its image, videos ranked",
        description="Several videos of one image (uploads: file field `image`, one file field `videos` per video; or a "
        "JSON object of paths), each explained: every head's value, the reward of each sampled frame judged alone "
        "(the curve: higher = more consistent), a `grid` x `grid` inconsistency map per sampled frame (0: as in the "
        "image, 1: most changed), the sampled frames' numbers and times (to show each map with its frame of the "
        "playing video), the frame where drift starts (`onset`), where it is strongest (`region`) and a one-line "
        "`summary`; ranked by `head` best first, as /rank ranks. `frame_size` also sends the sampled frames as JPEGs "
        f"(for a browser that cannot play the file). At most {settings.max_explain_videos} videos per request (422 "
        "over); a video that cannot be read comes last with its error. A model that cannot explain per frame (a "
        "motion or camera metric) answers 422. " + endpoint_limits(settings, min_frames, max_frames),
        openapi_extra=explain_body,
    )
    async def explain(request: Request) -> ExplainResponse:
        from icreward.explain import ExplainError

        async def work() -> ExplainResponse:
            async with request_media(
                request, policy, ExplainPaths, ("image",), "videos", max_list=settings.max_explain_videos
            ) as media:
                num_frames = frames_of(media)
                head = head_of(media)
                if head == "text" and not media.prompt:
                    raise HTTPException(422, "the text head has no value without a prompt: send `prompt`")
                grid, frame_size = await explain_options(request)
                await run_in_threadpool(check_decode, media, num_frames)
                cancelled = threading.Event()  # set when the request is answered or given up: the worker stops
                job = functools.partial(
                    explain_videos,
                    scorer,
                    media.paths["image"],
                    media.videos,
                    media.video_labels,
                    num_frames=num_frames,
                    prompt=media.prompt,
                    head=head,
                    grid=grid,
                    frame_size=frame_size,
                    device=settings.device,
                    precision=settings.precision,
                    cancelled=cancelled,
                )
                try:
                    videos = await asyncio.get_running_loop().run_in_executor(app.state.explainer, job)
                except MediaError as e:
                    raise HTTPException(422, _media_detail("image", media.labels["image"], e)) from None
                except ExplainError as e:
                    raise HTTPException(422, f"model {model_name}: {e}") from None
                finally:
                    cancelled.set()
            image = media.labels["image"]
            return ExplainResponse(
                image=image, model=model_name, num_frames=num_frames, head=head, grid=grid, videos=videos
            )

        return await answer(None, work)

    return app


@dataclass
class _RequestCounts:
    """/score and /rank requests answered, by kind and outcome (the event loop is the only writer)."""

    requests: int = 0
    score_requests: int = 0
    rank_requests: int = 0
    errors: int = 0
    dropped: int = 0

    def answered(self, kind: str, status: int) -> None:
        self.requests += 1
        if kind == "score":
            self.score_requests += 1
        else:
            self.rank_requests += 1
        self.errors += status >= 400
        self.dropped += status in (499, 503, 504)

    def refused(self, path: str, status: int) -> None:
        """A request the body-size limit refused before it reached its endpoint."""
        kind = {"/score": "score", "/rank": "rank"}.get(path.rstrip("/"))
        if kind is not None:
            self.answered(kind, status)
