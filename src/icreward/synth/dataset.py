"""`icreward synth`: render a planned synthetic benchmark to disk, and the embedded default benchmark.

Output folder (paths in manifests are relative to it):
- `train.jsonl`, `val.jsonl`, `test.jsonl`: pair records `{"id", "image", "video_a", "video_b", "label",
  "labels": {"ic", "motion", "text", "overall"}, "prompt", "score_a", "score_b", "mode_a", "mode_b", "severity_a",
  "severity_b", "source"}`;
- `videos.jsonl`: pointwise records `{"id", "image", "video", "score", "mode", "severity", "motion", "split",
  "source", "prompt", "camera", "subject_motion", "motion_score", "text_score", "overall_score"}` of every video;
- `images/<source>.png`, `videos/<video id>.mp4` (H.264), and `synth.json` (resolved config, code version, seed,
  score, motion and text weights, counts per split, per mode, per label and per camera move).

Prompts: each video's `prompt` describes what it rendered (`icreward.synth.describe`): its subject (an emoji's
name, a procedural subject's colour and shape, "the scene" for user photos, a caption for real clips), the
subject's own motion (`subject_motion`: "left", "right", "up", "down" or null) and the camera move (`camera`, one
of `prompts.CAMERA_MOVES`, VBench-I2V's phrase appended: "a cat face moving to the left, camera pans right").
A pair's `prompt` is its source's prompt: that of `<source>_v0`, always a consistent video. Scores of a video, all
in [0, 1]: `score` (consistency, see `icreward.synth.plan`), `motion_score` (`failures.motion_score`: 1 natural,
0 still, `1 - motion_weight * severity` for the motion failures), `text_score` against the source's prompt
(`describe.text_score`: 0 for another camera move or missing subject motion, 0.5 for a wrong subject direction,
down to 0 for a swapped named subject) and `overall_score` = the least of the three. Pair labels compare them
with `tie_margin` (`rules.label_from_scores`): `labels.ic` (= `label`) the scores, `labels.motion` the motion
scores (without the motion and text modes these are 0 or 1: the moving-or-frozen label of earlier versions),
`labels.text` the text scores and `labels.overall` the overall scores.

The folder is written through `atomic_dir`: a new or empty folder (or an earlier benchmark holding nothing else)
appears in one rename once complete; into a folder that also holds other files, only the files above are replaced,
`synth.json` last, and the other files are kept. A non-empty folder that is not an earlier benchmark (no
`synth.json`) is refused unless `overwrite`. The same config gives byte-identical files whatever the number of
workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from icreward.atomic import atomic_dir, check_output_dir
from icreward.errors import IcrewardError
from icreward.media import IMAGE_EXTENSIONS, load_image, write_video
from icreward.progress import progress_bar
from icreward.rules import CONSISTENT_MODE, FROZEN_MODE, label_from_scores
from icreward.synth import real_sources
from icreward.synth.describe import describe, sprite_phrase, text_score
from icreward.synth.failures import FAILURE_MODES, TEXT_MODES, motion_score, render_clip_video, render_described
from icreward.synth.identity_failures import swap_index
from icreward.synth.motion import render_image, sample_trajectory
from icreward.synth.plan import SPLITS, SourcePlan, SynthConfig, VideoPlan, plan_sources
from icreward.synth.scenes import Scene, photo_scene, procedural_scene, sprite_scene

SYNTH_VERSION = 1  # bump when the same config would render different data
BENCHMARK_NAME = "icbench-synth"
MARKER = "synth.json"  # written last: a folder holding it is a whole benchmark
OUTPUT_FILES = (*(f"{split}.jsonl" for split in SPLITS), "videos.jsonl", "images", "videos", MARKER)  # all synth writes
ADDED_FIELDS = {"real_share": 0.0, "modes": None}  # config fields recorded only when set (older hashes hold)
EMOJI_SWAPS = 12  # other emoji a real photo scene keeps for identity swaps


def default_workers() -> int:
    """Processes rendering by default: two at most (the generator is light; more mostly contend for memory)."""
    return min(2, os.cpu_count() or 1)


def list_photos(folder: str | Path) -> list[str]:
    """Image files under `folder` (recursively), sorted; at least three, so that every split gets one."""
    root = Path(folder)
    if not root.is_dir():
        raise IcrewardError(f"--images: {root} is not a folder")
    photos = sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if len(photos) < len(SPLITS):
        raise IcrewardError(f"--images: {root} holds {len(photos)} images; at least {len(SPLITS)} are needed")
    return photos


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Render with one torch thread: the same arithmetic (and pixels) in the main process and in workers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """`(..., 3, H, W)` in [0, 1] → uint8 `(..., H, W, 3)`."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).numpy()


def _load_photo(path: str, size: int) -> torch.Tensor:
    """A source photo, shrunk for a frame of `size` pixels."""
    return load_image(path, max_side=4 * size)


def _real_photo_scene(plan: SourcePlan, config: SynthConfig, rng: np.random.Generator) -> Scene:
    """A library photo with an emoji subject, 0-2 emoji objects and other emoji kept for swaps, all from the
    source's split of the emoji library."""
    pool = real_sources.emoji_library()[plan.split]
    erng = np.random.default_rng([config.seed, plan.index, 5])
    n_objects = int(erng.integers(0, 3))
    picks = [pool[k] for k in erng.choice(len(pool), min(len(pool), 1 + n_objects + EMOJI_SWAPS), replace=False)]
    sprites = [real_sources.emoji_sprite(c) for c in picks]
    alternate = _load_photo(plan.alternate, config.size) if plan.alternate else None
    photo = _load_photo(plan.photo, config.size)
    subject, objects, swaps = sprites[0], sprites[1 : 1 + n_objects], sprites[1 + n_objects :]
    scene = sprite_scene(rng, photo, config.size, subject, objects, swaps, alternate)
    names = [real_sources.emoji_name(c) for c in picks]  # for prompts only: no draw, no pixel
    return replace(scene, subject=replace(scene.subject, name=names[0]), swap_names=names[1 + n_objects :])


def _prompt_rng(config: SynthConfig, plan: SourcePlan, k: int) -> np.random.Generator:
    """The RNG of video k's prompt wording: its own seed, so wording never moves another draw."""
    return np.random.default_rng([config.seed, plan.index, 9, k])


def _render_clip_source(plan: SourcePlan, config: SynthConfig, out: Path) -> list[dict]:
    """A real clip source: the segment's first frame as the image; each video samples the segment at a seeded
    stride (the faithful video), and failures act on those frames (`clip_replacement` on the alternate segment).
    Described as the clip's caption with a static camera and no subject motion (the clips' cameras are fixed or
    unknown: a fixed camera over a plaza, a tree, hand-held objects before a still camera, a film trailer)."""
    caption = real_sources.CLIP_CAPTIONS.get(plan.clip.video, "a video scene")
    descriptions = []
    segment, other = plan.clip, plan.clip_alternate or plan.clip
    image = real_sources.segment_video(segment, 1, 1, config.size)[0]
    Image.fromarray(_to_uint8(image)).save(out / "images" / f"{plan.id}.png")
    for k, video in enumerate(plan.videos):
        vrng = np.random.default_rng([config.seed, plan.index, 2, k])
        stride = 1 + int(vrng.integers(segment.max_stride))
        frames = real_sources.segment_video(segment, stride, config.frames, config.size)
        footage = real_sources.segment_video(other, stride, config.frames, config.size)
        frames = render_clip_video(frames, footage, video.mode, video.severity, vrng)
        write_video(out / "videos" / f"{video.id}.mp4", _to_uint8(frames), fps=config.fps)
        descriptions.append(describe(None, None, None, _prompt_rng(config, plan, k), phrase=caption, named=False))
    return descriptions


def _swapped_phrase(scene: Scene) -> str:
    """The subject a completed `subject_swap` shows: the swapped-in emoji, or some other procedural object."""
    k = swap_index(scene)
    names = scene.swap_names or []
    if k is None or k >= len(names):
        return "a different object"
    return sprite_phrase(replace(scene.subject, name=names[k], kind=None)) or "a different object"


def render_source(plan: SourcePlan, config: SynthConfig, out: Path) -> list[dict]:
    """Render one source image and all its planned videos into `out`; returns each video's description
    (`icreward.synth.describe.describe`: camera move, subject motion, subject and prompt), in video order.

    Text failures (`TEXT_MODES`) are rendered along video 0's trajectory (the one the source's prompt describes),
    so that a pair differs only in what the prompt talks about."""
    with _single_thread():
        if plan.kind == "real_clip":
            return _render_clip_source(plan, config, out)
        rng = np.random.default_rng([config.seed, plan.index, 1])
        if plan.kind == "real_photo":
            scene = _real_photo_scene(plan, config, rng)
        elif plan.photo is None:
            scene = procedural_scene(rng, config.size)
        else:
            alternate = _load_photo(plan.alternate, config.size) if plan.alternate else None
            scene = photo_scene(rng, _load_photo(plan.photo, config.size), config.size, alternate)
        Image.fromarray(_to_uint8(render_image(scene))).save(out / "images" / f"{plan.id}.png")
        # user photos: "the scene" (what a photo shows is unknown); procedural and emoji subjects by name
        phrase, named = ("the scene", False) if plan.kind == "photo" else (None, None)
        descriptions, first = [], None
        for k, video in enumerate(plan.videos):
            vrng = np.random.default_rng([config.seed, plan.index, 2, k])
            if video.mode in TEXT_MODES and first is not None:
                traj = first
            else:
                traj = sample_trajectory(vrng, scene, config.frames)
            first = traj if k == 0 else first
            frames, shown = render_described(scene, traj, video.mode, video.severity, vrng)
            write_video(out / "videos" / f"{video.id}.mp4", _to_uint8(frames), fps=config.fps)
            own = phrase
            if video.mode == "subject_swap" and video.severity >= 0.5 and named is None:
                own = _swapped_phrase(scene)  # the swap is complete by the last frame
            descriptions.append(
                describe(scene, shown.camera, shown.subject, _prompt_rng(config, plan, k), phrase=own, named=named)
            )
        return descriptions


def _video_scores(video: VideoPlan, own: dict, prompt: dict) -> dict:
    """The motion, text and overall scores of a video against its source's prompt (module docstring)."""
    motion = motion_score(video.mode, video.severity)
    text = text_score(own, prompt, video.mode, video.severity)
    return {"motion_score": motion, "text_score": text, "overall_score": min(video.score, motion, text)}


def _render_one(plan: SourcePlan, config: SynthConfig, out: Path) -> tuple[str, list[dict]]:
    """`render_source` tagged with the source id (workers finish in any order)."""
    return plan.id, render_source(plan, config, out)


def _records(
    plans: list[SourcePlan], config: SynthConfig, descriptions: dict[str, list[dict]]
) -> tuple[dict[str, list[dict]], list[dict]]:
    """Pair records per split and pointwise records of every video, as the manifests hold them; `descriptions`
    maps each source id to its videos' descriptions (`render_source`)."""
    pairs: dict[str, list[dict]] = {split: [] for split in SPLITS}
    videos = []
    for plan in plans:
        image = f"images/{plan.id}.png"
        described = descriptions[plan.id]
        prompt = described[0]
        scores = [_video_scores(v, d, prompt) for v, d in zip(plan.videos, described, strict=True)]
        for v, d, sc in zip(plan.videos, described, scores, strict=True):
            videos.append(
                {
                    "id": v.id,
                    "image": image,
                    "video": f"videos/{v.id}.mp4",
                    "score": v.score,
                    "mode": v.mode,
                    "severity": v.severity,
                    "motion": v.motion,
                    "split": plan.split,
                    "source": plan.id,
                    "prompt": d["prompt"],
                    "camera": d["camera"],
                    "subject_motion": d["subject_motion"],
                    **sc,
                }
            )
        for p, (i, j) in enumerate(plan.pairs):
            a, b = plan.videos[i], plan.videos[j]
            sa, sb = scores[i], scores[j]
            label = label_from_scores(a.score, b.score, config.tie_margin)
            margin = config.tie_margin
            pairs[plan.split].append(
                {
                    "id": f"{plan.id}_p{p}",
                    "image": image,
                    "video_a": f"videos/{a.id}.mp4",
                    "video_b": f"videos/{b.id}.mp4",
                    "label": label,
                    "labels": {
                        "ic": label,
                        "motion": label_from_scores(sa["motion_score"], sb["motion_score"], margin),
                        "text": label_from_scores(sa["text_score"], sb["text_score"], margin),
                        "overall": label_from_scores(sa["overall_score"], sb["overall_score"], margin),
                    },
                    "prompt": prompt["prompt"],
                    "score_a": a.score,
                    "score_b": b.score,
                    "mode_a": a.mode,
                    "mode_b": b.mode,
                    "severity_a": a.severity,
                    "severity_b": b.severity,
                    "source": plan.id,
                }
            )
    return pairs, videos


def _summary(config: SynthConfig, plans: list[SourcePlan], pairs: dict, videos: list[dict]) -> dict:
    """The content of synth.json: resolved config, versions, weights and counts."""
    from icreward.version import __version__

    modes = [CONSISTENT_MODE, *config.failure_modes()]
    counts = {
        "images": {s: sum(p.split == s for p in plans) for s in SPLITS},
        "videos": {s: sum(v["split"] == s for v in videos) for s in SPLITS},
        "pairs": {s: len(pairs[s]) for s in SPLITS},
        "videos_per_mode": {
            s: {m: sum(v["split"] == s and v["mode"] == m for v in videos) for m in modes} for s in SPLITS
        },
        "pair_labels": {s: {k: sum(r["label"] == k for r in pairs[s]) for k in ("A", "B", "tie")} for s in SPLITS},
        "pair_motion_labels": {
            s: {k: sum(r["labels"]["motion"] == k for r in pairs[s]) for k in ("A", "B", "tie")} for s in SPLITS
        },
        **{
            f"pair_{dim}_labels": {
                s: {k: sum(r["labels"][dim] == k for r in pairs[s]) for k in ("A", "B", "tie")} for s in SPLITS
            }
            for dim in ("text", "overall")
        },
        "cameras": {s: dict(sorted(Counter(v["camera"] for v in videos if v["split"] == s).items())) for s in SPLITS},
    }
    if config.real_share > 0:
        counts["source_kinds"] = {
            s: dict(sorted(Counter(p.kind for p in plans if p.split == s).items())) for s in SPLITS
        }
    return {
        "name": BENCHMARK_NAME,
        "synth_version": SYNTH_VERSION,
        "code_version": __version__,
        "seed": config.seed,
        "config": config_record(config),
        "score_weights": {CONSISTENT_MODE: 0.0, **{m: FAILURE_MODES[m].weight for m in config.failure_modes()}},
        "motion_weights": {m: FAILURE_MODES[m].motion_weight for m in config.failure_modes() if m != FROZEN_MODE},
        "text_weights": {m: FAILURE_MODES[m].text_weight for m in config.failure_modes()},
        "counts": counts,
    }


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def check_output(config: SynthConfig, out: str | Path, overwrite: bool = False, flag: str | None = None) -> None:
    """Refuse (`IcrewardError`) an output folder that is, holds or lies inside `config.images`, is a file, or is a
    non-empty folder that is not an earlier benchmark (unless `overwrite`)."""
    inputs = {"--images": config.images} if config.images else {}
    check_output_dir(out, flag=flag, inputs=inputs, marker=(MARKER,), overwrite=overwrite, what="synth benchmark")


def generate(
    config: SynthConfig,
    out: str | Path,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Plan and render the benchmark `config` describes into the folder `out` (see the module docstring).

    `out` may be new, empty or an earlier benchmark; a folder holding other files is refused unless `overwrite`
    (then synth's files are written beside them). Returns the content of `out/synth.json`.
    """
    config.validate()
    check_output(config, out, overwrite)
    if config.real_share > 0:
        real_sources.ensure_real_imagery()
    photos = list_photos(config.images) if config.images else []
    plans = plan_sources(config, photos)
    if workers is not None and workers < 1:
        raise IcrewardError(f"--workers must be at least 1, got {workers}")
    workers = min(workers or default_workers(), len(plans))
    with atomic_dir(out, own=OUTPUT_FILES, marker=(MARKER,), overwrite=overwrite, what="synth benchmark") as tmp:
        (tmp / "images").mkdir()
        (tmp / "videos").mkdir()
        render = partial(_render_one, config=config, out=tmp)
        descriptions: dict[str, list[dict]] = {}
        with progress_bar(total=len(plans), desc="synth", unit="image", enabled=progress) as bar:
            if workers == 1:
                for plan in plans:
                    descriptions.update([render(plan)])
                    bar.update()
            else:
                with multiprocessing.get_context("spawn").Pool(workers) as pool:
                    for source_id, described in pool.imap_unordered(render, plans):
                        descriptions[source_id] = described
                        bar.update()
        pairs, videos = _records(plans, config, descriptions)  # in plan order, whatever order workers finished
        for split in SPLITS:
            _write_jsonl(tmp / f"{split}.jsonl", pairs[split])
        _write_jsonl(tmp / "videos.jsonl", videos)
        summary = _summary(config, plans, pairs, videos)
        (tmp / MARKER).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def config_record(config: SynthConfig) -> dict:
    """The config as synth.json and `config_hash` record it: every field, less ADDED_FIELDS at their default."""
    record = asdict(config)
    for name, default in ADDED_FIELDS.items():
        if record[name] == default:
            del record[name]
    return record


def config_hash(config: SynthConfig) -> str:
    """A stable hash of a config and the generator version (names cache folders)."""
    blob = json.dumps({"synth_version": SYNTH_VERSION, **config_record(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def default_benchmark(cache_dir: str | Path | None = None, config: SynthConfig | None = None) -> Path:
    """The embedded default benchmark `icbench-synth` (what `icreward synth` makes with its defaults).

    Generated on first use into `cache_dir` (default `$ICREWARD_CACHE`, else `~/.cache/icreward`) as
    `icbench-synth-v<version>-<hash8>`, and reused afterwards. Returns that folder (manifests inside). Another
    `config` (e.g. the defaults with held-out modes) is cached the same way under its own hash.
    """
    config = config or SynthConfig()
    root = Path(cache_dir or os.environ.get("ICREWARD_CACHE") or Path.home() / ".cache" / "icreward")
    path = root / f"{BENCHMARK_NAME}-v{SYNTH_VERSION}-{config_hash(config)[:8]}"
    if not (path / MARKER).is_file():
        generate(config, path, overwrite=True)  # the cache's own folder: what a crash left there is replaced
    return path
