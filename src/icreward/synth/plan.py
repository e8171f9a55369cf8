"""Planning a synthetic benchmark before any pixel is drawn: splits, the videos of each source image, their
consistency labels, and the pairs compared.

Labels (the data contract of `icreward synth`):
- consistency score of a video: `clip(1 - weight[mode] * severity + noise, 0, 1)`, rounded to 4 decimals, with
  `weight` from `FAILURE_MODES` (`none` and `frozen` have weight 0, so they score about 1) and `noise` a seeded
  normal draw of std `rater_noise` per video standing in for rater disagreement;
- `motion`: 1 for a moving video, 0 for `frozen` and `motion_missing` (`STILL_MODES`);
- the severity of a text failure (`TEXT_MODES`) is 1: it is all or nothing (its severity is drawn all the same, so
  every later draw is what it would be for another mode);
- a pair's `labels["ic"]` is "A" / "B" when one score exceeds the other by more than `tie_margin`, else "tie";
  `label` equals `labels["ic"]`. The motion, text and overall labels come from what the videos rendered
  (`icreward.synth.dataset`).

Every random choice about source image i comes from an RNG seeded by (seed, i), and the balanced mode schedule
from one seeded by (seed, split), so a plan depends only on the config, never on workers or timing.

Source kinds: "procedural" (a procedural scene), "photo" (a user photo from `images`), and with `real_share` > 0,
"real_photo" (a photo of the real-imagery library with emoji sprites on it) and "real_clip" (a real video segment:
its first frame is the image, the frames after it the faithful video). A `real_share` of the sources, chosen by an
RNG seeded by (seed, 2^21), are real: alternately photo and clip sources (a clip source falls back to a photo one
where no clip is long enough for `frames`). Library photos, emoji and clip segments keep their fixed library split
(`icreward.synth.real_sources`), so test sources never show anything trained on. Clip sources draw their failures
from a schedule of their own, over the modes that apply to clips (frames-scope and clip-scope ones).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from icreward.errors import IcrewardError
from icreward.rules import CONSISTENT_MODE, FROZEN_MODE, label_from_scores
from icreward.synth import real_sources
from icreward.synth.failures import FAILURE_MODES, STILL_MODES, TEXT_MODES, WAVE1_MODES
from icreward.synth.real_sources import ClipSegment

SPLITS = ("train", "val", "test")
PAIR_QUOTAS = {"tie": 1, "consistent_vs_failure": 2, "failure_pair": 2, "consistent_pair": 1}  # per source image


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides a synthetic benchmark's content (not how fast it is made)."""

    n: int = 150  # source images (conditioning images)
    seed: int = 0
    frames: int = 16  # frames per video
    size: int = 128  # video side in pixels (even)
    tie_margin: float = 0.05  # |score_a - score_b| at or below this is a tie
    holdout_modes: tuple[str, ...] = ()  # failure modes kept out of train and val
    images: str | None = None  # folder of source photos (None: procedural scenes)
    videos_per_image: int = 6  # 1-2 consistent (sometimes frozen), the rest failures
    pairs_per_image: int = 6
    split_fractions: tuple[float, float, float] = (0.45, 0.10, 0.45)  # train, val, test share of source groups
    severity_range: tuple[float, float] = (0.15, 1.0)  # failure severities are uniform in this range
    rater_noise: float = 0.02  # std of the seeded per-video score noise
    fps: int = 8
    # Fields added later are left out of the config's hash and synth.json while at their default (see
    # `config_record`), so configs that do not set them keep their cached benchmarks.
    real_share: float = 0.0  # share of sources from real imagery (half photo + emoji scenes, half real clips)
    modes: tuple[str, ...] | None = None  # failure modes to draw (frozen is always drawn); None: WAVE1_MODES

    def failure_modes(self) -> tuple[str, ...]:
        """The failure modes this config draws from, in registry order (frozen included)."""
        chosen = WAVE1_MODES if self.modes is None else {*self.modes, FROZEN_MODE}
        return tuple(m for m in FAILURE_MODES if m in chosen)

    def validate(self) -> None:
        """Raise IcrewardError naming the first invalid setting."""
        unknown = sorted(set(self.modes or ()) - set(FAILURE_MODES))
        if unknown:
            raise IcrewardError(
                f"unknown failure mode(s) in --modes: {', '.join(unknown)}; valid modes: {', '.join(FAILURE_MODES)}"
            )
        unknown = sorted(set(self.holdout_modes) - set(self.failure_modes()))
        if unknown:
            raise IcrewardError(
                f"unknown failure mode(s) in --holdout-modes: {', '.join(unknown)}; "
                f"valid modes: {', '.join(self.failure_modes())}"
            )
        if set(self.failure_modes()) - {FROZEN_MODE} <= set(self.holdout_modes):
            raise IcrewardError("--holdout-modes must leave at least one failure mode (besides frozen) for training")
        if self.n < len(SPLITS):
            raise IcrewardError(f"--n must be at least {len(SPLITS)} (one source image per split), got {self.n}")
        if self.frames < 2:
            raise IcrewardError(f"--frames must be at least 2, got {self.frames}")
        if self.size < 16 or self.size % 2:
            raise IcrewardError(f"--size must be even and at least 16 (H.264), got {self.size}")
        if not 0 <= self.tie_margin < 1:
            raise IcrewardError(f"--tie-margin must be in [0, 1), got {self.tie_margin}")
        if self.videos_per_image < 3:
            raise IcrewardError(f"videos_per_image must be at least 3, got {self.videos_per_image}")
        if not 0 <= self.real_share <= 1:
            raise IcrewardError(f"--real-share must be in [0, 1], got {self.real_share}")
        if self.real_share > 0 and self.images:
            raise IcrewardError("--real-share and --images cannot be combined (both replace procedural scenes)")


@dataclass
class VideoPlan:
    """One video to render and its labels."""

    id: str  # "<source id>_v<k>"
    mode: str  # "none" or a FAILURE_MODES name
    severity: float  # in severity_range for failures, 0 for "none" and "frozen"
    score: float  # consistency label in [0, 1]
    motion: int  # 1 moving, 0 still (frozen, motion_missing)


@dataclass
class SourcePlan:
    """One source (conditioning) image: where it comes from, its split, its videos and its pairs."""

    index: int  # position in the benchmark; with the seed, it seeds every random choice about this image
    id: str  # "img<index:05d>"
    split: str
    photo: str | None  # path of the source photo (None: procedural or clip)
    alternate: str | None  # another photo of the same split, for failures that swap in unrelated content
    videos: list[VideoPlan] = field(default_factory=list)
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (video index of A, video index of B)
    kind: str = "procedural"  # "procedural", "photo", "real_photo" or "real_clip" (see the module docstring)
    clip: ClipSegment | None = None  # the real clip segment of a "real_clip" source
    clip_alternate: ClipSegment | None = None  # other footage of the same split, for clip_replacement


def score_video(mode: str, severity: float, rng: np.random.Generator, rater_noise: float) -> float:
    """The consistency label of one video (see the module docstring)."""
    weight = 0.0 if mode == CONSISTENT_MODE else FAILURE_MODES[mode].weight
    return round(float(np.clip(1 - weight * severity + rng.normal(0, rater_noise), 0, 1)), 4)


def split_groups(n_groups: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> list[str]:
    """Assign each group (a source image, or a photo and all images cut from it) to a split; none left empty."""
    order = rng.permutation(n_groups)
    n_val = min(max(1, round(fractions[1] * n_groups)), n_groups - 2)  # leave one group each for train and test
    n_test = min(max(1, round(fractions[2] * n_groups)), n_groups - 1 - n_val)  # ... and one for train
    n_train = n_groups - n_val - n_test
    splits = [""] * n_groups
    for rank, g in enumerate(order):
        splits[g] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return splits


def _mode_schedule(split: str, config: SynthConfig, kind: str = "scene") -> Iterator[str]:
    """An endless, block-balanced sequence of failure modes for one split and source kind ("scene" or "clip"):
    each block is a shuffle of every allowed mode (held-out modes lead the first test block, so even a small test
    split has them). Empty when no mode is allowed."""
    rng = np.random.default_rng([config.seed, SPLITS.index(split), 7] + ([1] if kind == "clip" else []))
    allowed = [
        m
        for m in config.failure_modes()
        if m != FROZEN_MODE and FAILURE_MODES[m].applies(kind) and (split == "test" or m not in config.holdout_modes)
    ]
    if not allowed:
        return iter(())
    first = [m for m in allowed if m in config.holdout_modes] if split == "test" else []

    def shuffled(modes: list[str]) -> list[str]:
        return [modes[i] for i in rng.permutation(len(modes))]

    def blocks() -> Iterator[list[str]]:
        yield shuffled(first) + shuffled([m for m in allowed if m not in first])
        while True:
            yield shuffled(allowed)

    return itertools.chain.from_iterable(blocks())


def _consistent_mode(split: str, rng: np.random.Generator, config: SynthConfig) -> str | None:
    """The second video of an image: frozen (45%), another consistent one (20%), or None for a failure."""
    r = rng.random()
    frozen_ok = split == "test" or FROZEN_MODE not in config.holdout_modes
    if r < 0.45:
        return FROZEN_MODE if frozen_ok else CONSISTENT_MODE
    return CONSISTENT_MODE if r < 0.65 else None


def _is_consistent(video: VideoPlan) -> bool:
    return video.mode in (CONSISTENT_MODE, FROZEN_MODE)


def choose_pairs(videos: list[VideoPlan], k: int, margin: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Pick `k` pairs of one image's videos: every video used, and per-category quotas (a tie, consistent vs
    failure, two failures, two consistent videos) met where the videos allow; A/B order at random."""

    def category(i: int, j: int) -> str:
        a, b = videos[i], videos[j]
        if label_from_scores(a.score, b.score, margin) == "tie":
            return "tie"
        if _is_consistent(a) != _is_consistent(b):
            return "consistent_vs_failure"
        return "consistent_pair" if _is_consistent(a) else "failure_pair"

    candidates = [(i, j) for i, j in itertools.combinations(range(len(videos)), 2)]
    tiebreak = rng.random(len(candidates))
    quota, covered, chosen = dict(PAIR_QUOTAS), set(), []
    while len(chosen) < k and len(chosen) < len(candidates):
        value = {
            c: 2 * (quota.get(category(i, j), 0) > 0) + (i not in covered) + (j not in covered) + tiebreak[c]
            for c, (i, j) in enumerate(candidates)
            if (i, j) not in chosen
        }
        i, j = candidates[max(value, key=value.get)]
        quota[category(i, j)] = quota.get(category(i, j), 0) - 1
        covered |= {i, j}
        chosen.append((i, j))
    return [(j, i) if rng.random() < 0.5 else (i, j) for i, j in chosen]


def _source_kinds(config: SynthConfig, photos: list[str]) -> list[str]:
    """The kind of each source (see the module docstring); clip sources may still fall back to real photos."""
    kinds = ["photo" if photos else "procedural"] * config.n
    if config.real_share > 0:
        rng = np.random.default_rng([config.seed, 2**21])
        for rank, i in enumerate(rng.permutation(config.n)[: round(config.real_share * config.n)]):
            kinds[i] = "real_photo" if rank % 2 == 0 else "real_clip"
    return kinds


def _real_source(plan: SourcePlan, config: SynthConfig, clip_modes: bool) -> None:
    """Pick the library photo or clip segment of a real source, from its split's share of the library."""
    rng = np.random.default_rng([config.seed, plan.index, 3])
    if plan.kind == "real_clip":
        plan.clip = real_sources.sample_segment(rng, plan.split, config.frames) if clip_modes else None
        if plan.clip is not None:
            plan.clip_alternate = real_sources.sample_segment(rng, plan.split, config.frames, exclude=plan.clip.video)
            return
        plan.kind = "real_photo"
    pool = real_sources.photo_library()[plan.split]
    if not pool:
        raise IcrewardError(
            f"the real-imagery library has no {plan.split} photos; reinstall {real_sources.INSTALL_COMMAND}"
        )
    k = int(rng.integers(len(pool)))
    plan.photo = pool[k]
    others = pool[:k] + pool[k + 1 :]
    plan.alternate = others[int(rng.integers(len(others)))] if others else None


def plan_sources(config: SynthConfig, photos: list[str]) -> list[SourcePlan]:
    """The whole benchmark's plan: split, photo, videos (mode, severity, score) and pairs of every source image.

    With photos, image i is cut from the (i mod P)-th of P photos taken in a seeded order, and all images of one
    photo share a split. Real sources (`real_share`) take their photo or clip from the library (`_real_source`).
    """
    split_rng = np.random.default_rng([config.seed, 2**20])
    used = [photos[g] for g in split_rng.permutation(len(photos))[: config.n]] if photos else []
    n_groups = len(used) or config.n
    group_of = [i % n_groups for i in range(config.n)]
    group_split = split_groups(n_groups, config.split_fractions, split_rng)
    schedules = {split: _mode_schedule(split, config) for split in SPLITS}
    kinds = _source_kinds(config, photos)
    clip_schedules = {split: _mode_schedule(split, config, "clip") for split in SPLITS} if "real_clip" in kinds else {}
    by_split = {s: sorted({group_of[i] for i in range(config.n) if group_split[group_of[i]] == s}) for s in SPLITS}
    lo, hi = config.severity_range
    plans = []
    for i in range(config.n):
        rng = np.random.default_rng([config.seed, i, 0])
        split = group_split[group_of[i]]
        photo = alternate = None
        if photos:
            photo = used[group_of[i]]
            others = [g for g in by_split[split] if g != group_of[i]]
            alternate = used[others[int(rng.integers(len(others)))]] if others else None
        source_id = f"img{i:05d}"
        plan = SourcePlan(i, source_id, split, photo, alternate, kind=kinds[i])
        first = next(clip_schedules[split], None) if plan.kind == "real_clip" else None
        if plan.kind.startswith("real_"):
            _real_source(plan, config, clip_modes=first is not None)
        schedule = itertools.chain([first], clip_schedules[split]) if plan.kind == "real_clip" else schedules[split]
        modes = [CONSISTENT_MODE, _consistent_mode(split, rng, config)]
        modes = [m if m is not None else next(schedule) for m in modes]
        modes += [next(schedule) for _ in range(config.videos_per_image - 2)]
        videos = []
        for k, mode in enumerate(modes):
            severity = 0.0 if mode in (CONSISTENT_MODE, FROZEN_MODE) else round(float(rng.uniform(lo, hi)), 4)
            severity = 1.0 if mode in TEXT_MODES else severity  # all or nothing (drawn all the same: same stream)
            score = score_video(mode, severity, rng, config.rater_noise)
            videos.append(VideoPlan(f"{source_id}_v{k}", mode, severity, score, int(mode not in STILL_MODES)))
        plan.videos = videos
        plan.pairs = choose_pairs(videos, config.pairs_per_image, config.tie_margin, rng)
        plans.append(plan)
    missing = set(config.holdout_modes) - {v.mode for p in plans if p.split == "test" for v in p.videos}
    if missing:
        raise IcrewardError(
            f"the test split is too small to hold every held-out mode (missing: {', '.join(sorted(missing))}); "
            "use a larger --n"
        )
    return plans
