"""Robustness on real I2V outputs: does a reward prefer each image's own video over another image's video, and over
corruptions of its own video that the training engine never makes?

Three families of cases, each "the own video should score above the other one":
- `other_image`: another input image's video, cropped to this video's aspect ratio and resized to its frame size;
- `heldout`: `HELDOUT_CORRUPTIONS` (`icreward.evaluation.corruptions`), failures the synthetic engine never makes;
- `structural`: `STRUCTURAL_CORRUPTIONS` (`icreward.evaluation.structural`), content moved or replaced while the
  colours stay, which a colour-statistics reward cannot see.

`build_real_i2v_check` is the check over several folders of real pairs (each with a `manifest.jsonl`), split by input
image into `select` (to choose recipes on) and `report` (the final figure) by `real_i2v_split`; `build_real_i2v_tests`
is the first check, one folder with every other video and the held-out family. `evaluate_real_i2v` scores either.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from icreward.evaluation.corruptions import HELDOUT_CORRUPTIONS, Corruption
from icreward.evaluation.structural import DONOR_CORRUPTIONS, STRUCTURAL_CORRUPTIONS
from icreward.interface import Scorer
from icreward.scoring.engine import score_tensors

CORRUPTION_FAMILIES: dict[str, dict[str, Corruption]] = {
    "heldout": HELDOUT_CORRUPTIONS,
    "structural": STRUCTURAL_CORRUPTIONS,
}
FAMILIES = ("other_image", *CORRUPTION_FAMILIES)
SELECT_SHARE = 1 / 3  # share of each folder's input images in the `select` half


@dataclass(frozen=True, eq=False)
class Case:
    """One test: `image`'s own video `preferred` should get a higher reward than `other`.

    Cases of one source share their `image` and `preferred` tensors (the same objects), so each is scored once.
    `build_real_i2v_check` stores the videos as 8 bits (`to_uint8`), like any saved video: a quarter of the memory
    of floats, which a check of a thousand 256-pixel videos needs.
    """

    id: str  # "<source>/other_image/<other source>" or "<source>/<corruption>@<severity>"
    source: str  # the real pair's id in the manifest
    image: torch.Tensor  # (3, H, W) the conditioning image, floats in [0, 1]
    preferred: torch.Tensor  # (T, 3, h, w) the video generated from it: floats in [0, 1], or uint8 in [0, 255]
    other: torch.Tensor  # (T, 3, h, w) another image's video, or a corruption of `preferred`, stored like `preferred`
    kind: str  # "other_image" or "corruption"
    corruption: str | None = None  # the corruption's name, for kind "corruption"
    severity: float | None = None
    family: str | None = None  # one of FAMILIES; by default "other_image" for that kind, else "heldout"
    folder: str | None = None  # the name of the folder of real pairs the source comes from

    def __post_init__(self):
        if self.family is None:
            object.__setattr__(self, "family", "other_image" if self.kind == "other_image" else "heldout")


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """A video in [0, 1] as 8-bit values, rounded: what saving it losslessly would keep."""
    return (video * 255).round_().clamp_(0, 255).to(torch.uint8)


class _AsFloats(Sequence):
    """A view of a list of tensors that gives uint8 ones as floats in [0, 1], one at a time (`score_tensors` reads a
    batch at once, so the floats of the whole list never exist together)."""

    def __init__(self, tensors: list[torch.Tensor]):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, i):
        x = self.tensors[i]
        return x.float().div_(255) if x.dtype == torch.uint8 else x


def _stable_key(*parts: str) -> list[int]:
    """RNG seed words for names: the same on every machine and whatever else is loaded (unlike `hash`)."""
    return [zlib.crc32(p.encode()) for p in parts]


@dataclass(frozen=True)
class _Pair:
    """A real (image, video) pair as loaded: `image` (3, H, W), `video` (T, 3, h, w)."""

    id: str
    folder: str
    image_key: str  # "<folder>/<image file>": videos of one input image share it
    image: torch.Tensor
    video: torch.Tensor


def _records(root: Path) -> list:
    from icreward.manifest import load_manifest

    return load_manifest(root / "manifest.jsonl").records


def _image_key(root: Path, record) -> str:
    """ "<folder name>/<image file name>": the input image a pair of `root/manifest.jsonl` was generated from. (Not
    `rules.source_image`: the PIA manifest's `source` names the file each video came from.)"""
    return f"{root.name}/{Path(record.image).name}"


def real_i2v_split(roots: Sequence[str | Path], seed: int = 0) -> dict[str, str]:
    """Input image key ("<folder name>/<image file>") -> "select" or "report", for every image of `roots`.

    Per folder, its distinct images are sorted, shuffled by an RNG of (`seed`, the folder's name) and the first
    `round(SELECT_SHARE * n)` go to `select`: about a third of each folder's images, to choose recipes on; the rest
    are `report`, the final figure, never looked at while choosing. The split depends only on the seed, the folder
    names and the image file names (not on paths, order or other folders). With seed 0, for the shared folders,
    `select` holds real-i2v/{dance1.jpeg, girl3.jpeg, pour_honey.png} and real-i2v-pia/{harry.png, labrador.png}
    (3 DynamiCrafter and 9 PIA videos); the other 9 images (5 + 15 videos) are `report`.
    """
    split: dict[str, str] = {}
    for root in map(Path, roots):
        images = sorted({_image_key(root, r) for r in _records(root)})
        order = np.random.default_rng([seed, *_stable_key(root.name)]).permutation(len(images))
        n_select = round(SELECT_SHARE * len(images))
        split |= {images[j]: "select" if rank < n_select else "report" for rank, j in enumerate(order)}
    return split


def _load_pairs(root: Path, keep: Callable[[str, str], bool], num_frames: int, max_side: int) -> dict[str, _Pair]:
    """The pairs of `root/manifest.jsonl` whose (id, image key) `keep` accepts, loaded with `num_frames` frames and
    the longer side at most `max_side`, by id in manifest order."""
    from icreward.media import load_image, load_video

    pairs = {}
    for r in _records(root):
        key = _image_key(root, r)
        if keep(r.id, key):
            image = load_image(r.image, max_side=max_side)
            pairs[r.id] = _Pair(
                r.id, root.name, key, image, load_video(r.video, num_frames=num_frames, max_side=max_side)
            )
    return pairs


def _fit(video: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`video` centre-cropped to the aspect ratio of `like` (T, 3, h, w) and resized to its frame size."""
    from icreward.metrics.base import crop_to_aspect, resize_to

    return resize_to(crop_to_aspect(video, *like.shape[-2:]), tuple(like.shape[-2:])).clamp(0, 1)


def _check_names(names: Sequence[str], known: dict[str, Corruption]) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown corruptions {unknown}; known: {', '.join(known)}")


def build_real_i2v_tests(
    root: str | Path,
    seed: int = 0,
    severities: Sequence[float] = (0.5, 1.0),
    *,
    corruptions: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    num_frames: int = 16,
    max_side: int = 256,
) -> list[Case]:
    """The first check: cases from the (image, generated video) pairs of one folder's `root/manifest.jsonl`.

    For each pair: one "other_image" case per other pair (that pair's video, centre-cropped to this video's aspect
    ratio and resized to its frame size) and one "corruption" case per held-out corruption and severity (the RNG
    of a (seed, pair, corruption) is the same at every severity, so severities differ only in strength).
    `corruptions` and `sources` restrict to those names and pair ids (all by default). Media are loaded once, with
    `num_frames` frames and the longer side at most `max_side`. `build_real_i2v_check` is the check over several
    folders, split by image, with the structural family.
    """
    names = list(HELDOUT_CORRUPTIONS) if corruptions is None else list(corruptions)
    _check_names(names, HELDOUT_CORRUPTIONS)
    root = Path(root)
    pairs = _load_pairs(root, lambda i, _: sources is None or i in sources, num_frames, max_side)
    missing = sorted(set(sources or ()) - set(pairs))
    if missing:
        raise ValueError(f"{root}: no pairs with ids {missing}")
    cases: list[Case] = []
    for p, (source, pair) in enumerate(pairs.items()):
        image, video = pair.image, pair.video
        for other_source, other_pair in pairs.items():
            if other_source != source:
                other = _fit(other_pair.video, video)
                case_id = f"{source}/other_image/{other_source}"
                cases.append(Case(case_id, source, image, video, other, "other_image", folder=root.name))
        for name in names:
            c = list(HELDOUT_CORRUPTIONS).index(name)
            for severity in severities:
                corrupted = HELDOUT_CORRUPTIONS[name](video, severity, np.random.default_rng([seed, p, c]))
                case_id = f"{source}/{name}@{severity:g}"
                cases.append(
                    Case(case_id, source, image, video, corrupted, "corruption", name, severity, folder=root.name)
                )
    return cases


def _others(pair: _Pair, pool: dict[str, _Pair], count: int, rng: np.random.Generator) -> list[_Pair]:
    """`count` videos of other input images from `pool`, one per image: the images of each folder in an order drawn
    from `rng`, taken in turns from `pair`'s own folder first and then each other folder, so every generator
    supplies about as many "other" videos whatever its number of videos; each image's video drawn from `rng`."""
    by_image: dict[str, list[_Pair]] = {}
    for other in pool.values():
        if other.image_key != pair.image_key:
            by_image.setdefault(other.image_key, []).append(other)
    folders = sorted({p.folder for p in pool.values()}, key=lambda f: (f != pair.folder, f))
    queues = []
    for folder in folders:
        images = sorted(k for k in by_image if by_image[k][0].folder == folder)
        queues.append([images[j] for j in rng.permutation(len(images))])
    turns = [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]
    return [by_image[k][rng.integers(len(by_image[k]))] for k in turns[:count]]


def build_real_i2v_check(
    roots: Sequence[str | Path],
    split: Literal["all", "select", "report"] = "all",
    seed: int = 0,
    severities: Sequence[float] = (0.5, 1.0),
    *,
    families: Sequence[str] = FAMILIES,
    corruptions: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    others_per_video: int = 4,
    num_frames: int = 16,
    max_side: int = 256,
) -> list[Case]:
    """The real-video check over the folders `roots` (each with a `manifest.jsonl` of pairs; pair ids must be
    unique over them), restricted to one half of `real_i2v_split(roots, seed)` or `"all"` (both halves).

    Each half is closed: its cases use only its own images, as "other" videos and as donors, so `"all"` is exactly
    the union of the `"select"` and `"report"` cases and choosing on `select` never looks at a `report` image.
    For each video of the half, by family (`families` keeps some of FAMILIES):
    - `other_image`: `others_per_video` videos of other input images (never one of the same image), one per image,
      alternating between the folders (`_others`), so a folder with many videos per image does not dominate;
    - `heldout`, `structural`: one case per corruption of the family (or of `corruptions`, names from either) and
      severity; the RNG of a (seed, pair, corruption) is the same at every severity and depends only on names, so a
      case is the same whatever else is built; a corruption of `DONOR_CORRUPTIONS` takes as donor a video of another
      image of the half, drawn from that RNG.
    `sources` restricts to those pair ids (and the other videos and donors to their images' videos). Media are
    loaded once, with `num_frames` frames and the longer side at most `max_side`; the cases keep their videos as
    uint8 (`to_uint8`, after the corruption), the image as floats.
    """
    if split not in ("all", "select", "report"):
        raise ValueError(f"split must be 'all', 'select' or 'report', not {split!r}")
    unknown_families = sorted(set(families) - set(FAMILIES))
    if unknown_families:
        raise ValueError(f"unknown families {unknown_families}; known: {', '.join(FAMILIES)}")
    every = {n: f for f in CORRUPTION_FAMILIES for n in CORRUPTION_FAMILIES[f]}
    names = [n for n in every if every[n] in families] if corruptions is None else list(corruptions)
    _check_names(names, {n: CORRUPTION_FAMILIES[every[n]][n] for n in every})
    halves = real_i2v_split(roots, seed)
    wanted = ("select", "report") if split == "all" else (split,)
    pairs: dict[str, _Pair] = {}
    for root in map(Path, roots):
        loaded = _load_pairs(
            root, lambda i, k: halves[k] in wanted and (sources is None or i in sources), num_frames, max_side
        )
        clash = sorted(set(loaded) & set(pairs))
        if clash:
            raise ValueError(f"{root}: pair ids {clash} also in another folder")
        pairs |= loaded
    missing = sorted(set(sources or ()) - set(pairs))
    if missing:
        raise ValueError(f"no pairs with ids {missing} in the {split!r} split of {', '.join(map(str, roots))}")
    cases: list[Case] = []
    for source, pair in pairs.items():
        image, video = pair.image, pair.video
        half = {i: p for i, p in pairs.items() if halves[p.image_key] == halves[pair.image_key]}
        stored = to_uint8(video)  # (T, 3, h, w) uint8, shared by the cases of this source
        base = Case("", source, image, stored, stored, "other_image", folder=pair.folder)
        if "other_image" in families:
            rng = np.random.default_rng([seed, *_stable_key(source, "other_image")])
            for other in _others(pair, half, others_per_video, rng):
                case_id = f"{source}/other_image/{other.id}"
                cases.append(dataclasses.replace(base, id=case_id, other=to_uint8(_fit(other.video, video))))
        for name in names:
            family = every[name]
            corrupt = CORRUPTION_FAMILIES[family][name]
            rng_key = [seed, *_stable_key(source, name)]
            extra = {}
            if name in DONOR_CORRUPTIONS:
                donors = [p for p in half.values() if p.image_key != pair.image_key]
                if not donors:
                    raise ValueError(f"{name} needs a video of another image; the {split!r} split of {source} has none")
                donor_rng = np.random.default_rng([seed, *_stable_key(source, name, "donor")])
                extra["donor"] = _fit(donors[donor_rng.integers(len(donors))].video, video)
            for severity in severities:
                corrupted = to_uint8(corrupt(video, severity, np.random.default_rng(rng_key), **extra))
                case_id = f"{source}/{name}@{severity:g}"
                cases.append(
                    dataclasses.replace(
                        base,
                        id=case_id,
                        other=corrupted,
                        kind="corruption",
                        corruption=name,
                        severity=severity,
                        family=family,
                    )
                )
    return cases


def _accuracy(rows: list[dict]) -> float | None:
    return float(np.mean([r["credit"] for r in rows])) if rows else None


def evaluate_real_i2v(scorer: Scorer, cases: Sequence[Case], batch_size: int = 8, tie_tolerance: float = 1e-5) -> dict:
    """How often `scorer` rewards each case's preferred video above the other one.

    Returns `{"n_cases", "accuracy", "accuracy_other_image", "accuracy_corruption", "accuracy_heldout",
    "accuracy_structural", "per_family": {family: acc}, "per_folder": {folder: acc}, "per_corruption": {name: acc},
    "mean_margin", "rows"}`. A case scores 1 when reward(preferred) > reward(other), 0.5 on a tie and 0 otherwise;
    accuracies are means of that over the cases (None where there are none; `accuracy_corruption` over both
    corruption families, `per_family` over every family of FAMILIES, `per_corruption` over every corruption present),
    and the margin is reward(preferred) - reward(other). Rewards within `tie_tolerance` of each other, relative to
    the larger magnitude, tie: float32 rounding (e.g. a metric blind to frame order scoring a shuffled video, one
    ulp apart) is a tie, not a coin flip. `rows` holds one dict per case. Each distinct (image, video) tensor pair,
    by identity, is scored once (with `scorer` put in eval mode); pairs of equal shapes share batches of up to
    `batch_size`.
    """
    scorer.eval()
    index: dict[tuple[int, int], int] = {}
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for case in cases:
        for video in (case.preferred, case.other):
            key = (id(case.image), id(video))
            if key not in index:
                index[key] = len(pairs)
                pairs.append((case.image, video))
    scored = score_tensors(scorer, [p[0] for p in pairs], _AsFloats([p[1] for p in pairs]), batch_size=batch_size)
    rewards = [math.nan if r is None else r for r in scored]  # a reward that is not finite earns no credit
    rows = []
    for case in cases:
        good, bad = (rewards[index[(id(case.image), id(v))]] for v in (case.preferred, case.other))
        tie = abs(good - bad) <= tie_tolerance * max(abs(good), abs(bad))
        credit = 0.5 if tie else 1.0 if good > bad else 0.0
        rows.append(
            {"id": case.id, "source": case.source, "folder": case.folder, "kind": case.kind, "family": case.family}
            | {"corruption": case.corruption, "severity": case.severity}
            | {"reward_preferred": good, "reward_other": bad, "margin": good - bad, "credit": credit}
        )
    corruptions = list(dict.fromkeys(r["corruption"] for r in rows if r["corruption"] is not None))
    folders = list(dict.fromkeys(r["folder"] for r in rows if r["folder"] is not None))
    per_family = {f: _accuracy([r for r in rows if r["family"] == f]) for f in FAMILIES}
    return {
        "n_cases": len(rows),
        "accuracy": _accuracy(rows),
        "accuracy_other_image": _accuracy([r for r in rows if r["kind"] == "other_image"]),
        "accuracy_corruption": _accuracy([r for r in rows if r["kind"] == "corruption"]),
        "accuracy_heldout": per_family["heldout"],
        "accuracy_structural": per_family["structural"],
        "per_family": per_family,
        "per_folder": {f: _accuracy([r for r in rows if r["folder"] == f]) for f in folders},
        "per_corruption": {c: _accuracy([r for r in rows if r["corruption"] == c]) for c in corruptions},
        "mean_margin": float(np.mean([r["margin"] for r in rows])) if rows else None,
        "rows": rows,
    }


def sampling_stability(scorer: Scorer, root: str | Path, frames: Sequence[int] = (8, 16), max_side: int = 256) -> dict:
    """How much a reward moves with the frame sampling of the real pairs under `root/manifest.jsonl`.

    Each pair is scored with its video sampled uniformly to each T in `frames`, and reversed at the largest T.
    Returns `{"ids", "rewards": {T: [per pair]}, "reversed": [per pair], "spread", "range", "max_change",
    "max_reversal_change"}`: `spread` is the standard deviation (population) of the rewards over the pairs at the
    largest T, `range` their max - min, `max_change` the largest |reward(T) - reward(largest T)| over pairs and
    other T, and `max_reversal_change` the largest |reward(reversed) - reward| at the largest T.
    """
    from icreward.manifest import load_manifest
    from icreward.media import load_image, load_video

    records = load_manifest(Path(root) / "manifest.jsonl").records
    top = max(frames)
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for rec in records:
        image = load_image(rec.image, max_side=max_side)
        videos = {t: load_video(rec.video, num_frames=t, max_side=max_side) for t in frames}
        pairs += [(image, videos[t]) for t in frames] + [(image, videos[top].flip(0))]
    scorer.eval()
    scores = np.array(
        score_tensors(scorer, [p[0] for p in pairs], [p[1] for p in pairs], batch_size=8), dtype=float
    ).reshape(len(records), len(frames) + 1)
    at_top = scores[:, list(frames).index(top)]
    return {
        "ids": [r.id for r in records],
        "rewards": {t: scores[:, i].tolist() for i, t in enumerate(frames)},
        "reversed": scores[:, -1].tolist(),
        "spread": float(at_top.std()),
        "range": float(at_top.max() - at_top.min()),
        "max_change": float(np.abs(scores[:, : len(frames)] - at_top[:, None]).max()),
        "max_reversal_change": float(np.abs(scores[:, -1] - at_top).max()),
    }
