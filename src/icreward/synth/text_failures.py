"""Text failures: the video stays faithful to the image but does not do what its prompt asks.

Each is rendered from the source's first video's trajectory (`_v0`, whose description is the source's prompt), so
a pair differs only in what the prompt talks about. Each mode is a path function `(scene, traj, severity, rng) ->
Trajectory` (what the frames show, for their description) and a renderer `(scene, traj, severity, rng) -> frames`
drawing that path consistently (light and grain as in `traj`). Severity is unused: a text failure is all or nothing
(the plan records severity 1).

- `camera_mismatch`: the camera does another of the seven moves than the prompt asks: the opposite move when the
  prompt's camera moves, a seeded pan / tilt / zoom when it says static; a canonical move
  (`describe.canonical_camera`: 0.3 frame units of pan / tilt or 0.25 of log zoom, smoothstep, no roll; then
  `fit_camera`); the subject's own motion is kept;
- `subject_opposite`: the subject's own path reversed, so it moves the opposite way; when the prompt's subject
  does not move (the source's subject moves less than `describe.SUBJECT_THRESHOLD`), it moves instead in a seeded
  direction by 0.2 frame units (times its mobility), which a prompt naming no subject motion does not forbid
  (text score 1 there, see `describe.text_score`);
- `motion_missing`: camera, subject, objects and sway held still while light drift and grain go on (frozen-like:
  motion weight 1); where the prompt asks for no motion (static camera, still subject) this follows it (text 1).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from icreward import prompts
from icreward.synth import describe
from icreward.synth.motion import Trajectory, fit_camera, render_consistent
from icreward.synth.scenes import Scene

MOVING = tuple(m for m in prompts.CAMERA_MOVES if m != "static")


def camera_mismatch_path(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> Trajectory:
    """`traj` with its camera replaced by a canonical move that another prompt would ask for (module docstring)."""
    asked = describe.camera_class(describe.content_motion(traj.camera, scene.bg_depth))
    move = prompts.OPPOSITE_MOVE[asked] if asked != "static" else MOVING[int(rng.integers(len(MOVING)))]
    return replace(traj, camera=fit_camera(describe.canonical_camera(move, traj.frames), scene))


def subject_opposite_path(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> Trajectory:
    """`traj` with the subject's own path reversed (or, for a still subject, a seeded straight move)."""
    subject = traj.subject.copy()
    if describe.subject_direction(traj.subject) is not None:
        subject[:, :2] = -subject[:, :2]
    else:
        angle = rng.uniform(0, 2 * np.pi)
        u = np.linspace(0.0, 1.0, traj.frames)
        end = 0.2 * scene.subject.mobility * np.array([np.cos(angle), np.sin(angle)])
        subject[:, :2] += np.outer(u * u * (3 - 2 * u), end)
    return replace(traj, subject=subject)


def motion_missing_path(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> Trajectory:
    """`traj` with every motion held at its start (frame 0's pose); light and grain unchanged."""
    return replace(
        traj,
        camera=np.zeros_like(traj.camera),
        subject=np.zeros_like(traj.subject),
        objects=np.zeros_like(traj.objects),
        sway=np.zeros_like(traj.sway),
    )


TEXT_PATHS = {
    "camera_mismatch": camera_mismatch_path,
    "subject_opposite": subject_opposite_path,
    "motion_missing": motion_missing_path,
}


def _renderer(name: str):
    path = TEXT_PATHS[name]

    def render(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
        return render_consistent(scene, path(scene, traj, severity, rng))

    render.__name__ = render.__qualname__ = name
    render.__doc__ = path.__doc__
    return render


camera_mismatch = _renderer("camera_mismatch")
subject_opposite = _renderer("subject_opposite")
motion_missing = _renderer("motion_missing")
