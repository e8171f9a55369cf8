"""Where and when a local failure happens: per-frame region masks and the onset frame of a synthetic failure video.

A failure is rendered from the same scene, trajectory and grain as the consistent video of that scene, so the two
differ exactly where the failure acts: the mask of frame t is the set of pixels whose colour the failure changed by
more than `MASK_THRESHOLD` (on any channel), and the onset is the first frame whose mask covers at least
`ONSET_AREA` of the frame. A counterfactual render, not a guess from the frames: the camera motion, the subject's
own motion, the light and the grain are in both videos and cancel.

Opt-in: nothing here runs when `icreward synth` renders a benchmark, so the default data stays byte-identical.
`LOCAL_MODES` are the failures that act on part of the frame (for `content_replacement`, its "region" style: a
case is local when its last frame's mask covers at most `MAX_LOCAL_AREA` of the frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from icreward.synth.failures import FAILURE_MODES, render_video
from icreward.synth.motion import Trajectory, render_consistent
from icreward.synth.scenes import Scene

MASK_THRESHOLD = 0.1  # colour change (any channel, [0, 1] scale) from which a pixel counts as changed
ONSET_AREA = 0.002  # share of the frame the mask must cover for the failure to have started (33 px of 128 x 128)
MAX_LOCAL_AREA = 0.5  # a failure covering more of its last frame than this is not local
LOCAL_MODES = ("subject_vanish", "subject_duplicate", "content_replacement", "subject_drift", "subject_swap")


@dataclass
class MaskedFailure:
    """A failure video with where and when it departs from the consistent video of its scene."""

    video: torch.Tensor  # [T, 3, H, W] in [0, 1]
    mask: torch.Tensor  # [T, H, W] bool: pixels the failure changed
    onset: int | None  # first frame whose mask covers ONSET_AREA of the frame; None if it never does
    mode: str
    severity: float

    @property
    def area(self) -> float:
        """Share of the last frame the failure covers."""
        return float(self.mask[-1].float().mean())

    @property
    def is_local(self) -> bool:
        """Whether the failure shows (has an onset) and covers at most MAX_LOCAL_AREA of the last frame."""
        return self.onset is not None and 0 < self.area <= MAX_LOCAL_AREA


def failure_mask(video: torch.Tensor, consistent: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    """`(mask [T, H, W] bool, onset)` of a failure `video [T,3,H,W]` against the `consistent` render of the same scene,
    trajectory and grain (module docstring)."""
    mask = (video - consistent).abs().amax(1) > MASK_THRESHOLD  # (T, H, W)
    started = (mask.float().mean((1, 2)) >= ONSET_AREA).nonzero()
    return mask, (int(started[0]) if len(started) else None)


def render_with_mask(
    scene: Scene, traj: Trajectory, mode: str, severity: float, rng: np.random.Generator
) -> MaskedFailure:
    """`render_video`'s failure video (the same pixels and draws) with its mask and onset (`failure_mask`)."""
    if mode not in FAILURE_MODES or FAILURE_MODES[mode].scope == "clip":
        raise ValueError(f"masks are rendered for scene and frame failure modes, not {mode!r}")
    video = render_video(scene, traj, mode, severity, rng)
    mask, onset = failure_mask(video, render_consistent(scene, traj))
    return MaskedFailure(video, mask, onset, mode, severity)
