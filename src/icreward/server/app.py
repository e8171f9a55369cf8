"""The HTTP API of `icreward serve`: score and rank over uploads or allowed server paths, micro-batched."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from icreward.errors import IcrewardError, MediaError
from icreward.interface import Scorer
from icreward.server.batcher import MicroBatcher, ScoreOutcome
from icreward.server.inputs import BodySizeLimit, PathPolicy, request_media


@dataclass
class ServeSettings:
    allow_roots: Sequence[str | Path] = ()  # folders whose files JSON path requests may name; none: uploads only
    max_upload_mb: float = 200.0  # largest request body (all uploads together), MiB
    max_frames: int = 64  # largest num_frames a request may ask for
    request_timeout: float = 60.0  # seconds from a request's start to its answer, else 504
    batch_size: int = 8  # most (image, video) pairs in one forward pass
    batch_wait_ms: float = 10.0  # how long the worker waits for more requests to join a batch
    device: str = "cpu"
    max_rank_videos: int = 64  # most videos in one /rank request
    decode_workers: int = 2  # threads decoding media

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_frames", "request_timeout", "batch_size", "max_rank_videos"):
            if not getattr(self, name) > 0:
                raise IcrewardError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise IcrewardError(f"batch-wait-ms must be at least 0, got {self.batch_wait_ms}")


# ---- request and response bodies (the /docs page is built from these)


class ScorePaths(BaseModel):
    """Score files on the server: paths inside an --allow-root folder (relative paths start from the first)."""

    image: str = Field(description="conditioning image (PNG, JPEG, WebP, ...)", examples=["cats/cat.png"])
    video: str = Field(description="generated video (mp4, webm, gif, frame folder, .npy)", examples=["cats/cat.mp4"])
    num_frames: int | None = Field(None, description="frames sampled from the video (default: the model's)")


class RankPaths(BaseModel):
    """Rank videos on the server: paths inside an --allow-root folder (relative paths start from the first)."""

    image: str = Field(description="conditioning image", examples=["cats/cat.png"])
    videos: list[str] = Field(description="candidate videos of that image", examples=[["cats/a.mp4", "cats/b.mp4"]])
    num_frames: int | None = Field(None, description="frames sampled from each video (default: the model's)")


class ScoreResponse(BaseModel):
    reward: float = Field(description="consistency of the video with the image; higher = more consistent")
    model: str = Field(description="the model that scored it, as given to --model")
    num_frames: int = Field(description="frames sampled from the video")


class RankedVideo(BaseModel):
    video: str = Field(description="the upload's file name, or the path as given")
    reward: float | None = Field(description="null where the video could not be scored")
    rank: int = Field(description="1 = best; videos that could not be scored come last")
    error: str | None = Field(None, description="why the video could not be scored")


class RankResponse(BaseModel):
    image: str
    model: str
    num_frames: int
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
    config: dict[str, Any] | None = Field(None, description="a learned model's checkpoint config")


class Stats(BaseModel):
    requests: int = Field(description="score and rank requests answered since the start")
    batches: int = Field(description="forward passes run for score requests")
    items: int = Field(description="(image, video) pairs scored in them")
    largest_batch: int = Field(description="most pairs scored in one forward pass")
    dropped: int = Field(description="requests given up (timed out) before they were scored")


class ErrorBody(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "a path outside the --allow-root folders, or path requests disabled"},
    413: {"model": ErrorBody, "description": "request body over --max-upload-mb"},
    415: {"model": ErrorBody, "description": "neither multipart/form-data nor application/json"},
    422: {"model": ErrorBody, "description": "a missing field, num_frames out of range, or media that cannot be read"},
    504: {"model": ErrorBody, "description": "not answered within --request-timeout"},
}


def _bodies(paths_model: type[BaseModel], files: dict[str, str], list_field: str | None = None) -> dict[str, Any]:
    """OpenAPI request bodies of an endpoint that takes either uploads or a JSON object of paths."""
    form: dict[str, Any] = {name: {"type": "string", "format": "binary", "description": d} for name, d in files.items()}
    if list_field is not None:
        form[list_field] = {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "videos"}
    form["num_frames"] = {"type": "integer", "description": "frames sampled per video (default: the model's)"}
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
        config=config.to_dict() if hasattr(config, "to_dict") else None,
    )


def _media_detail(name: str, label: str, error: Exception) -> str:
    """`video (clip.mp4): not a video FFmpeg can read ...`: the field, what the client called it, and the reason."""
    return f"{name} ({label}): {error.reason if isinstance(error, MediaError) else error}"


def create_app(scorer: Scorer, model_name: str, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving `scorer` (named `model_name` in answers). Its lifespan starts and stops the batcher,
    so drive it with uvicorn or `with TestClient(app)`."""
    settings = settings or ServeSettings()
    policy = PathPolicy(settings.allow_roots)
    batcher = MicroBatcher(
        scorer,
        batch_size=settings.batch_size,
        batch_wait_ms=settings.batch_wait_ms,
        device=settings.device,
        decode_workers=settings.decode_workers,
    )
    info = model_info(model_name, scorer, settings.device)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(
        title="icreward",
        summary="Image-to-video consistency rewards",
        description="Score how faithfully a generated video keeps the image it was conditioned on, or rank several "
        "videos of one image (best-of-N). Send files as multipart uploads, or (where the server was started with "
        "--allow-root) a JSON object of paths on the server. Requests that arrive together are scored in one batch.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=int(settings.max_upload_mb * 2**20))
    app.state.batcher = batcher

    def frames_of(media) -> int:
        if media.num_frames is None:
            return scorer.num_frames
        if not 2 <= media.num_frames <= settings.max_frames:
            raise HTTPException(
                422, f"num_frames must be between 2 and {settings.max_frames} (--max-frames), got {media.num_frames}"
            )
        return media.num_frames

    async def within_timeout(work):
        try:
            async with asyncio.timeout(settings.request_timeout):
                return await work()
        except TimeoutError:
            raise HTTPException(
                504, f"not answered within {settings.request_timeout:g} s (--request-timeout)"
            ) from None

    @app.get("/healthz", response_model=Health, summary="liveness")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/model", response_model=ModelInfo, summary="the model being served")
    async def model() -> ModelInfo:
        return info

    @app.get("/stats", response_model=Stats, summary="requests answered and batches formed")
    async def stats() -> Stats:
        return Stats(**asdict(batcher.stats()))

    @app.post(
        "/score",
        response_model=ScoreResponse,
        responses=_ERRORS,
        summary="reward of one (image, video)",
        openapi_extra=_bodies(ScorePaths, {"image": "conditioning image", "video": "generated video"}),
    )
    async def score(request: Request) -> ScoreResponse:
        async def work() -> ScoreResponse:
            async with request_media(request, policy, ScorePaths, ("image", "video"), None) as media:
                num_frames = frames_of(media)
                future = batcher.submit_score(media.paths["image"], media.paths["video"], num_frames)
                outcome: ScoreOutcome = await asyncio.wrap_future(future)
            if outcome.error is not None:
                raise HTTPException(422, _media_detail(outcome.field, media.labels[outcome.field], outcome.error))
            if outcome.reward is None:
                raise HTTPException(500, "the model gave a reward that is not a finite number")
            return ScoreResponse(reward=outcome.reward, model=model_name, num_frames=num_frames)

        return await within_timeout(work)

    @app.post(
        "/rank",
        response_model=RankResponse,
        responses=_ERRORS,
        summary="videos of one image, best first (best-of-N)",
        openapi_extra=_bodies(RankPaths, {"image": "conditioning image"}, list_field="videos"),
    )
    async def rank(request: Request) -> RankResponse:
        async def work() -> RankResponse:
            async with request_media(request, policy, RankPaths, ("image",), "videos") as media:
                num_frames = frames_of(media)
                if len(media.videos) > settings.max_rank_videos:
                    raise HTTPException(422, f"at most {settings.max_rank_videos} videos per request")
                label = dict(zip(map(str, media.videos), media.video_labels, strict=True))
                try:
                    ranking = await asyncio.wrap_future(
                        batcher.submit_rank(media.paths["image"], media.videos, num_frames)
                    )
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
            return RankResponse(image=media.labels["image"], model=model_name, num_frames=num_frames, ranking=entries)

        return await within_timeout(work)

    return app
