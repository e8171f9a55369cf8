"""Micro-batching: score requests that arrive within a few milliseconds of each other share one forward pass.

One worker thread owns the model. It takes a request from the queue, waits up to `batch_wait_ms` (or until
`batch_size` requests are in hand) for more, decodes their media in a thread pool, scores the items whose tensors
have the same shapes as one batch, and resolves each request's `concurrent.futures.Future`. A rank request decodes
its image once and its videos `batch_size` at a time (`rank_videos` on each group), so it never holds more than one
group of decoded videos. A request whose caller gave up (timed out, so its future was cancelled) before the worker
reached it is skipped unscored. The worker counts the work done (`BatcherStats`); the app counts the requests.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from icreward.errors import IcrewardError
from icreward.interface import Scorer
from icreward.scoring import rank_videos, shape_batches
from icreward.scoring.engine import batch_heads


@dataclass
class ScoreJob:
    image: Path
    video: Path
    num_frames: int
    prompt: str | None = None
    head: str | None = None  # which head is the reward (None: the scorer's selected one)
    future: Future = field(default_factory=Future)  # -> ScoreOutcome


@dataclass
class RankJob:
    image: Path
    videos: list[Path]
    num_frames: int
    prompt: str | None = None
    head: str | None = None
    future: Future = field(default_factory=Future)  # -> rank_videos' list of (video, reward, error)


@dataclass
class ScoreOutcome:
    """What became of one score request: a reward, or the input (`"image"` / `"video"`) that could not be read."""

    reward: float | None = None
    field: str | None = None
    error: IcrewardError | None = None
    heads: dict[str, float | None] | None = None  # every head of the scorer, None where one has no value


@dataclass
class BatcherStats:
    batches: int = 0  # forward passes run, for score and rank requests
    items: int = 0  # videos scored in those passes: one per score request, one per ranked video
    largest_batch: int = 0  # most videos in one forward pass
    skipped: int = 0  # requests whose caller had given up (future cancelled) before the worker reached them


class _CountingScorer:
    """Stands in for the scorer in `rank_videos` and counts its forward passes (`rewards_for_image` calls)."""

    def __init__(self, scorer: Scorer, count) -> None:
        self._scorer, self._count = scorer, count

    def __getattr__(self, name: str):
        return getattr(self._scorer, name)

    def to(self, *args, **kwargs) -> _CountingScorer:
        self._scorer.to(*args, **kwargs)
        return self

    def eval(self) -> _CountingScorer:
        self._scorer.eval()
        return self

    def rewards_for_image(self, image: torch.Tensor, videos: torch.Tensor, prompt=None) -> torch.Tensor:
        rewards = self._scorer.rewards_for_image(image, videos, prompt)
        self._count(len(videos))
        return rewards

    def all_heads(self, image: torch.Tensor, videos: torch.Tensor, prompt=None) -> dict[str, torch.Tensor]:
        heads = self._scorer.all_heads(image, videos, prompt)
        self._count(len(videos))
        return heads


_STOP = object()


class MicroBatcher:
    def __init__(
        self,
        scorer: Scorer,
        *,
        batch_size: int = 8,
        batch_wait_ms: float = 10.0,
        device: str | torch.device = "cpu",
        decode_workers: int = 2,
        precision: str = "fp32",
    ):
        from icreward.precision import autocast

        autocast(device, precision)  # refuses an unknown precision, or one the device lacks, before serving
        self.scorer = scorer.to(device).eval()
        self.batch_size, self.batch_wait, self.device = batch_size, batch_wait_ms / 1000, device
        self.precision = precision
        self._decode_workers = decode_workers
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._stats = BatcherStats()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self._decode_workers, thread_name_prefix="icreward-decode")
        self._thread = threading.Thread(target=self._run, name="icreward-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish the batch in hand, cancel the requests still queued, and stop the worker."""
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is not _STOP:
                job.future.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def submit_score(
        self, image: Path, video: Path, num_frames: int, prompt: str | None = None, head: str | None = None
    ) -> Future:
        return self._submit(ScoreJob(image, video, num_frames, prompt, head))

    def submit_rank(
        self, image: Path, videos: list[Path], num_frames: int, prompt: str | None = None, head: str | None = None
    ) -> Future:
        return self._submit(RankJob(image, videos, num_frames, prompt, head))

    def stats(self) -> BatcherStats:
        with self._lock:
            return BatcherStats(**vars(self._stats))

    def _submit(self, job: ScoreJob | RankJob) -> Future:
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the batcher is not running (start it, e.g. through the app's lifespan)")
        self._queue.put(job)
        return job.future

    # ---- the worker thread

    def _run(self) -> None:
        stop = False
        while not stop:
            jobs, stop = self._collect()
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            with self._lock:
                self._stats.skipped += len(jobs) - len(live)
            try:
                self._score([job for job in live if isinstance(job, ScoreJob)])
                for job in live:
                    if isinstance(job, RankJob):
                        self._rank(job)
            except BaseException as e:  # the worker never dies: whatever went wrong goes to the callers
                for job in live:
                    if not job.future.done():
                        self._answer(job, error=e)

    def _collect(self) -> tuple[list[ScoreJob | RankJob], bool]:
        """The next micro-batch: one request, and those that arrive within `batch_wait` of it (up to `batch_size`)."""
        job = self._queue.get()
        if job is _STOP:
            return [], True
        jobs = [job]
        deadline = time.monotonic() + self.batch_wait
        while len(jobs) < self.batch_size:
            wait = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _decode(self, job: ScoreJob) -> tuple[torch.Tensor, torch.Tensor] | ScoreOutcome:
        from icreward.media import load_image, load_video

        try:
            image = load_image(job.image, max_side=self.scorer.max_side)
        except IcrewardError as e:
            return ScoreOutcome(field="image", error=e)
        try:
            return image, load_video(job.video, num_frames=job.num_frames, max_side=self.scorer.max_side)
        except IcrewardError as e:
            return ScoreOutcome(field="video", error=e)

    def _score(self, jobs: list[ScoreJob]) -> None:
        ready = []  # (job, (image [3,H,W], video [T,3,H,W]))
        for job, media in zip(jobs, self._pool.map(self._decode, jobs), strict=True):
            if isinstance(media, ScoreOutcome):
                self._answer(job, media)
            else:
                ready.append((job, media))
        for batch in shape_batches([(image.shape, video.shape) for _, (image, video) in ready], self.batch_size):
            chunk = [ready[i] for i in batch]
            try:
                images, videos = [m[0] for _, m in chunk], [m[1] for _, m in chunk]
                prompts = [job.prompt for job, _ in chunk]
                heads = batch_heads(self.scorer, images, videos, self.device, self.precision, prompts)
            except Exception as e:
                for job, _ in chunk:
                    self._answer(job, error=e)
                continue
            self._count_batch(len(chunk))
            own = self.scorer.selected_head
            for (job, _), values in zip(chunk, heads, strict=True):
                self._answer(job, ScoreOutcome(reward=values.get(job.head or own), heads=values))

    def _rank(self, job: RankJob) -> None:
        from icreward.media import load_image

        try:
            image = load_image(job.image, max_side=self.scorer.max_side)  # once for all the groups
            counting = _CountingScorer(self.scorer, self._count_batch)
            ranked: list[tuple[int, str, float | None, str | None]] = []  # (input index, video, reward, error)
            for start in range(0, len(job.videos), self.batch_size):
                group = job.videos[start : start + self.batch_size]
                unused = {}  # path -> its input indices not yet matched (a path may be given twice)
                for i, video in enumerate(group, start=start):
                    unused.setdefault(str(video), []).append(i)
                for video, reward, error in rank_videos(
                    counting,
                    image,
                    group,
                    self.batch_size,
                    num_frames=job.num_frames,
                    device=self.device,
                    precision=self.precision,
                    prompt=job.prompt,
                    head=job.head,
                ):
                    ranked.append((unused[video].pop(0), video, reward, error))
        except Exception as e:
            self._answer(job, error=e)
        else:  # the order rank_videos gives within a group, over all the groups: best first, ties in input order
            ranked.sort(key=lambda r: (r[2] is None, -(r[2] or 0.0), r[0]))
            self._answer(job, [(video, reward, error) for _, video, reward, error in ranked])

    def _count_batch(self, size: int) -> None:
        with self._lock:
            self._stats.batches += 1
            self._stats.items += size
            self._stats.largest_batch = max(self._stats.largest_batch, size)

    def _answer(self, job: ScoreJob | RankJob, result=None, error: BaseException | None = None) -> None:
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
