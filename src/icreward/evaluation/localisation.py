"""How well an explanation says where and when a video drifts: held-out synthetic local failures with their masks
(`icreward.synth.masks`), a motion-compensated pixel-difference baseline, and the scores.

Cases (`local_cases`): procedural scenes drawn from `HELDOUT_SEED` (the shipped model's data came from synth seeds 1
and 2 and its real photos and emoji; these scenes are new draws of the procedural generator, never rendered for
training), each with one local failure (`masks.LOCAL_MODES`, in turn) at a severity in [0.5, 1]; draws whose failure
covers more than half the frame, or never shows, are skipped for the next draw.

Scores, all on the map's patch grid (16 x 16 for the shipped model; pixel maps are area-averaged onto it):
- pointing game: in each frame where the mask covers part of the grid, whether the map's highest cell holds any
  masked pixel (a one-cell tolerance, 8 px at 128); per video, the share of such frames that hit;
- AUROC of the map's cell values against the cells at least half covered by the mask, pooled over the frames from
  the true onset on (one AUROC per video);
- onset error: |predicted - true onset| in frames, the prediction from the curve (`explain.find_onset`, here asked
  where the fall is however small: when it drifts; whether it drifts at all is scored apart, as the share of failure
  videos and of consistent videos that `explain` says drift); a curve with no onset counts as an error of T.
The baseline (`compensated_difference`) warps the image by the camera motion that `icreward.flow.motion_field`
fits between consecutive frames (translation, zoom and rotation, composed from frame 0), and maps |frame - warped
image| (mean over colour); its curve is minus the per-frame mean of that difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from icreward.synth.masks import LOCAL_MODES, MaskedFailure, render_with_mask
from icreward.synth.motion import render_consistent, render_image, sample_trajectory
from icreward.synth.scenes import procedural_scene

HELDOUT_SEED = 20261  # procedural scenes no recipe of the shipped model draws from
ONSET_TOLERANCE = 2  # frames: an onset this close to the true one counts as found


@dataclass
class LocalCase:
    """A held-out synthetic local failure: its image and its masked failure video."""

    image: torch.Tensor  # [3, H, W]
    failure: MaskedFailure
    draw: int  # which draw of the seed it is


def _scene_and_path(seed: int, draw: int, frames: int, size: int):
    scene = procedural_scene(np.random.default_rng([seed, draw, 1]), size)
    rng = np.random.default_rng([seed, draw, 2])
    return scene, sample_trajectory(rng, scene, frames), rng


def local_cases(
    n: int, seed: int = HELDOUT_SEED, frames: int = 16, size: int = 128, modes=LOCAL_MODES
) -> list[LocalCase]:
    """`n` local failure cases, modes in turn (module docstring); the same arguments give the same cases."""
    cases, draw = [], 0
    while len(cases) < n:
        mode = modes[len(cases) % len(modes)]
        scene, traj, rng = _scene_and_path(seed, draw, frames, size)
        severity = float(np.random.default_rng([seed, draw, 3]).uniform(0.5, 1.0))
        failure = render_with_mask(scene, traj, mode, severity, rng)
        if failure.is_local and failure.onset >= 1:
            cases.append(LocalCase(render_image(scene), failure, draw))
        draw += 1
        if draw > 50 * n:
            raise RuntimeError(f"found only {len(cases)} local {modes} failures in {draw} draws")
    return cases


def consistent_videos(
    n: int, seed: int = HELDOUT_SEED + 1, frames: int = 16, size: int = 128
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` consistent `(image, video)` pairs of held-out procedural scenes (for the false-drift rate)."""
    out = []
    for draw in range(n):
        scene, traj, _ = _scene_and_path(seed, draw, frames, size)
        out.append((render_image(scene), render_consistent(scene, traj)))
    return out


# ---- the baseline


def camera_warps(video: torch.Tensor) -> torch.Tensor:
    """`[T, 2, 3]` affine maps (frame units, x right, y down) taking frame 0's content to where it is in frame t,
    composed from the similarity motion `motion_field` fits between consecutive frames (identity at t = 0)."""
    from icreward.flow import motion_field

    sim = motion_field(video[None].float()).similarity[0]  # (T-1, 4): dx, dy, zoom, rotation per step
    step = torch.zeros(sim.shape[0], 3, 3)
    z, r = sim[:, 2].exp(), sim[:, 3]
    step[:, 0, 0], step[:, 0, 1], step[:, 1, 0], step[:, 1, 1] = z * r.cos(), -z * r.sin(), z * r.sin(), z * r.cos()
    step[:, 0, 2], step[:, 1, 2], step[:, 2, 2] = sim[:, 0], sim[:, 1], 1.0
    total = [torch.eye(3)]
    for k in range(sim.shape[0]):
        total.append(step[k] @ total[-1])
    return torch.stack(total)[:, :2]  # (T, 2, 3)


def compensated_difference(image: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """`[T, H, W]`: |frame - image warped by the camera motion| (mean over colour), 0 where the warped image does not
    reach (content that came into view)."""
    t, _, h, w = video.shape
    img = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    forward = torch.cat([camera_warps(video), torch.tensor([[[0.0, 0.0, 1.0]]]).expand(t, 1, 3)], 1)  # (T, 3, 3)
    theta = torch.linalg.inv(forward)[:, :2]  # sampling grid: where in the image each frame pixel comes from
    grid = F.affine_grid(theta, [t, 3, h, w], align_corners=False)
    warped = F.grid_sample(img.expand(t, -1, -1, -1), grid, align_corners=False)  # (T, 3, H, W)
    seen = F.grid_sample(torch.ones(t, 1, h, w), grid, align_corners=False)[:, 0] > 0.999  # (T, H, W)
    return (video - warped).abs().mean(1) * seen


# ---- scores


def to_cells(x: torch.Tensor, side: int) -> torch.Tensor:
    """`[T, H, W]` -> `[T, side, side]` by area averaging (a bool mask becomes each cell's covered share)."""
    return F.adaptive_avg_pool2d(x.float()[:, None], side)[:, 0]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` against bool `labels` (Mann-Whitney, ties counted half); NaN when one
    class is empty."""
    pos, n = int(labels.sum()), labels.size
    if pos == 0 or pos == n:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * (n - pos)))


def score_map(maps: torch.Tensor, mask: torch.Tensor, onset: int) -> tuple[float, float]:
    """`(pointing accuracy, AUROC)` of `maps [T, h, w]` (h = w) against `mask [T, H, W]` (module docstring)."""
    side = maps.shape[-1]
    cover = to_cells(mask, side)  # (T, h, w) share of each cell in the mask
    hits, frames = 0, 0
    for t in range(maps.shape[0]):
        if cover[t].max() <= 0:
            continue
        frames += 1
        hits += bool(cover[t].flatten()[int(maps[t].flatten().argmax())] > 0)
    pointing = hits / frames if frames else float("nan")
    values = maps[onset:].flatten().float().numpy()
    labels = (cover[onset:] >= 0.5).flatten().numpy()
    return pointing, auroc(values, labels)


def onset_error(predicted: int | None, true: int, frames: int) -> int:
    """|predicted - true| in frames; `frames` (the whole video) when nothing was predicted."""
    return frames if predicted is None else abs(predicted - true)


@dataclass
class MethodScores:
    """One method's scores over the cases, in case order."""

    pointing: list[float]
    auroc: list[float]
    onset_errors: list[int]

    def row(self) -> dict[str, float]:
        errors = np.array(self.onset_errors)
        return {
            "pointing": float(np.nanmean(self.pointing)) if self.pointing else float("nan"),
            "auroc": float(np.nanmean(self.auroc)) if self.auroc else float("nan"),
            "onset_within_2": float((errors <= ONSET_TOLERANCE).mean()) if errors.size else float("nan"),
            "onset_error": float(errors.mean()) if errors.size else float("nan"),
            "n": max(len(self.auroc), len(self.onset_errors)),
        }


Method = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor | None, torch.Tensor | None]]


def evaluate(method: Method, cases: list[LocalCase], onset: Callable[[torch.Tensor], int | None]) -> MethodScores:
    """Score `method(image, video) -> (maps [T, h, w] or None, curve [T] or None)` on every case; `onset(curve)`
    predicts the onset frame from a curve (higher = more consistent)."""
    scores = MethodScores([], [], [])
    for case in cases:
        f = case.failure
        maps, curve = method(case.image, f.video)
        if maps is not None:
            pointing, area = score_map(maps.detach().float().cpu(), f.mask, f.onset)
            scores.pointing.append(pointing)
            scores.auroc.append(area)
        if curve is not None:
            scores.onset_errors.append(onset_error(onset(curve.detach().float().cpu()), f.onset, f.video.shape[0]))
    return scores


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """The methods' scores as a markdown table: method x (pointing, AUROC, onset within 2, mean onset error, n)."""
    lines = [
        "| method | pointing | AUROC | onset within 2 | mean onset error | n |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        cells = [f"{r[k]:.3f}" if np.isfinite(r[k]) else "-" for k in ("pointing", "auroc", "onset_within_2")]
        err = f"{r['onset_error']:.2f}" if np.isfinite(r["onset_error"]) else "-"
        lines.append(f"| {name} | {' | '.join(cells)} | {err} | {r['n']} |")
    return "\n".join(lines)
