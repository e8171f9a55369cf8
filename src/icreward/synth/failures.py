"""The failure modes of image-to-video generation, as a registry `FAILURE_MODES` keyed by the data-contract names.

Three scopes:
- "frames" modes (`icreward.synth.frame_failures`) are functions `(frames, severity, rng) -> frames`; they apply to
  any video, e.g. to build corruption tests from real I2V outputs, and to real clip sources;
- "scene" modes (here and in `icreward.synth.identity_failures`) are functions `(scene, trajectory, severity, rng)
  -> frames`; they act on the layers of a synthetic scene (the subject morphing, vanishing, doubling or turning
  into another object, the background drifting, the layout rearranging, ...);
- "clip" modes are functions `(frames, other, severity, rng) -> frames` on a real clip and other footage.
`FailureMode.applies(kind)` says which source kind ("scene" or "clip") a mode can render.

`WAVE1_MODES` are the first eleven modes, what a config uses unless it names its modes (so the default benchmark
keeps its content as modes are added). Later modes are registered after them, so the registry order (and every
schedule of a config naming only earlier modes) stays:
- the identity modes `subject_swap`, `identity_morph`, `layout_shuffle`, `clip_replacement`;
- `MOTION_MODES` (frames scope, faithful content, unnatural motion; `motion_weight` > 0): `jitter` (frame 0 shaken
  in place, no net path), `pingpong` (forward to a turn and back), `stutter` (frames held in runs, then jumping);
- `TEXT_MODES` (scene scope, consistency weight 0, `text_weight` 1; `icreward.synth.text_failures`):
  `camera_mismatch`, `subject_opposite`, `motion_missing`, rendered from the source's first video's trajectory.
`motion_weight` is the motion quality lost at severity 1 (`motion_score`; `frozen` scores 0, the other
earlier modes keep their motion, so a config without the new modes has motion scores of 0 or 1 only) and
`text_weight` the prompt following lost where the prompt says what the mode changes (`describe.text_score` reads
it off what each video rendered).

Every mode keeps moving along the trajectory (except `frozen`), leaves frame 0 as the conditioning image (except
`first_frame_mismatch`, whose whole point is a different start), and grows from a random onset. `weight` is the
consistency lost at severity 1: a video's score is `1 - weight * severity` (see `icreward.synth.dataset`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from icreward.rules import CONSISTENT_MODE, FROZEN_MODE
from icreward.synth import frame_failures, identity_failures, text_failures
from icreward.synth.frame_failures import hue_rotate, strength
from icreward.synth.motion import (
    Trajectory,
    background_track,
    composite,
    finish,
    fit_camera,
    render_consistent,
    sample_trajectory,
    scene_tracks,
    sprite_track,
)
from icreward.synth.scenes import Scene, make_sprite_texture, shape_alpha, unrelated_scene
from icreward.synth.textures import value_noise


def _render(scene: Scene, traj: Trajectory, tracks: list) -> torch.Tensor:
    return finish(composite(tracks, scene.size), traj)


def _subject_index(tracks: list) -> int:
    return next(i for i, track in enumerate(tracks) if track.name == "subject")


def subject_drift(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The subject's identity drifts: its colours rotate, its texture morphs and/or its shape morphs into another."""
    t = traj.frames
    m = strength(rng, t, severity).view(t, 1, 1, 1)
    rgba = scene.subject.rgba
    n = rgba.shape[-1]
    kinds = [["colour"], ["texture"], ["colour", "texture"], ["shape"], ["shape", "colour"]][rng.integers(5)]
    frames_rgba = rgba[None].repeat(t, 1, 1, 1)  # (T, 4, n, n)
    if kinds != ["colour"]:  # morph into a new texture (and a new outline for "shape")
        alpha = shape_alpha(rng, n) if "shape" in kinds else rgba[3]
        other = make_sprite_texture(rng, n, scene.light, alpha=alpha)
        frames_rgba = rgba[None] * (1 - m) + other[None] * m
    if "colour" in kinds:  # hue turns and the colour is pulled towards another one (greys change too)
        angle = m.view(t) * rng.choice([-1, 1]) * rng.uniform(1.5, 3.0)
        gains = 1 + m * torch.from_numpy(rng.uniform(-0.6, 0.6, 3)).float().view(1, 3, 1, 1)
        frames_rgba[:, :3] = hue_rotate(frames_rgba[:, :3], angle) * gains
    tracks = scene_tracks(scene, traj)
    frames_rgba = frames_rgba.clamp(0, 1)
    frames_rgba[:, :3] = torch.minimum(frames_rgba[:, :3], frames_rgba[:, 3:])  # premultiplied: colour <= alpha
    tracks[_subject_index(tracks)].texture = frames_rgba
    return _render(scene, traj, tracks)


def background_drift(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The background drifts while the subject stays: it morphs into other content, changes colour, or warps."""
    t = traj.frames
    m = strength(rng, t, severity).view(t, 1, 1, 1)
    bg = scene.background
    kind = rng.choice(["replace", "recolour", "warp"])
    if kind == "replace":
        other = unrelated_scene(rng, scene).background
        frames_bg = bg[None] * (1 - m) + other[None] * m
    elif kind == "recolour":
        angle = m.view(t) * rng.choice([-1, 1]) * rng.uniform(1.5, 3.0)
        frames_bg = hue_rotate(bg[None].expand(t, -1, -1, -1), angle) * (1 + m * rng.uniform(-0.5, 0.5))
    else:
        side = bg.shape[-1]
        field = torch.stack([value_noise(rng, side, side, rng.uniform(2, 5), 2) - 0.5 for _ in range(2)], -1)
        grid = F.affine_grid(torch.eye(2, 3)[None], [1, 3, side, side], align_corners=False)
        grid = grid + rng.uniform(0.3, 0.6) * m.view(t, 1, 1, 1) * field
        frames_bg = F.grid_sample(bg[None].expand(t, -1, -1, -1), grid, padding_mode="reflection", align_corners=False)
    tracks = scene_tracks(scene, traj)
    tracks[0] = background_track(scene, traj.camera, frames_bg.clamp(0, 1))
    return _render(scene, traj, tracks)


def content_replacement(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The video cuts or cross-fades to different content, whole frame or one region; more severe = earlier/more."""
    t = traj.frames
    other = unrelated_scene(rng, scene)
    other_frames = render_consistent(other, sample_trajectory(rng, other, t))
    own = render_consistent(scene, traj)
    style = rng.choice(["cut", "fade", "region"])
    start = int(np.clip(round((1 - 0.8 * severity + rng.uniform(-0.1, 0.1)) * (t - 1)), 1, t - 1))
    idx = torch.arange(t, dtype=torch.float32)
    if style == "cut":
        mix = (idx >= start).float().view(t, 1, 1, 1)
    else:
        length = rng.uniform(2, 5)
        fade_start = max(0.0, start - length)
        level = 0.5 + 0.5 * severity if style == "fade" else 1.0
        mix = (((idx - fade_start) / length).clamp(0, 1) * level).view(t, 1, 1, 1)
        mix[0] = 0
        if style == "region":
            h = scene.size
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, h), indexing="ij")
            cx, cy = rng.uniform(-0.5, 0.5, 2)
            radius = 0.35 + 0.55 * severity
            region = torch.sigmoid((radius - ((xs - cx) ** 2 + (ys - cy) ** 2).sqrt()) * 12)
            mix = mix * region.view(1, 1, h, h)
    return own * (1 - mix) + other_frames * mix


def first_frame_mismatch(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The video starts from an image that differs from the conditioning one (other crop, moved objects, other
    colours) and then moves consistently from there."""
    kinds = list(rng.permutation(["crop", "layout", "colour"])[: rng.integers(1, 4)])
    t = traj.frames
    if "crop" in kinds:
        direction = rng.uniform(0, 2 * np.pi)
        offset = severity * np.array(
            [0.35 * np.cos(direction), 0.35 * np.sin(direction), rng.uniform(-0.35, 0.45), rng.uniform(-0.2, 0.2)]
        )
        traj = replace(traj, camera=fit_camera(traj.camera + offset, scene))
    if "layout" in kinds:
        direction = rng.uniform(0, 2 * np.pi)
        shift = severity * rng.uniform(0.3, 0.6)
        subject = replace(
            scene.subject, x=scene.subject.x + shift * np.cos(direction), y=scene.subject.y + shift * np.sin(direction)
        )
        moves = severity * rng.uniform(-0.4, 0.4, (len(scene.objects), 2))
        objects = [replace(o, x=o.x + dx, y=o.y + dy) for o, (dx, dy) in zip(scene.objects, moves, strict=True)]
        scene = replace(scene, subject=subject, objects=objects)
    frames = render_consistent(scene, traj)
    if "colour" in kinds:
        angle = torch.full((t,), severity * rng.choice([-1, 1]) * rng.uniform(0.8, 1.6))
        frames = (hue_rotate(frames, angle) * (1 + severity * rng.uniform(-0.35, 0.35))).clamp(0, 1)
    return frames


def subject_vanish(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The subject fades out, dissolves into noise, or shrinks away; severity is how much of it is gone."""
    t = traj.frames
    m = strength(rng, t, severity)
    tracks = scene_tracks(scene, traj)
    i = _subject_index(tracks)
    style = rng.choice(["fade", "dissolve", "shrink"])
    if style == "fade":
        tracks[i].opacity = 1 - m
    elif style == "dissolve":
        n = scene.subject.rgba.shape[-1]
        noise = value_noise(rng, n, n, rng.uniform(3, 8)) * 0.9 + 0.05
        level = m.view(t, 1, 1)
        keep = ((noise[None] - level) * 8 + 1).clamp(0, 1) * (1 - level)  # 1 at frame 0
        tracks[i].texture = scene.subject.rgba[None] * keep.unsqueeze(1)
    else:
        offset = traj.subject.copy()
        offset[:, 2] += np.log(1 - 0.95 * m.numpy())
        shrunk = sprite_track("subject", scene.subject, traj.camera, offset)
        shrunk.sway = tracks[i].sway
        tracks[i] = shrunk
    return _render(scene, traj, tracks)


def subject_duplicate(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """A copy of the subject appears elsewhere (fading in or growing), following the subject's motion; two copies
    at high severity."""
    t = traj.frames
    m = strength(rng, t, severity)
    subject = scene.subject
    tracks = scene_tracks(scene, traj)
    i = _subject_index(tracks)
    second = rng.random() < 0.5  # drawn whatever the severity, so severities share every other draw
    copies = 1 + int(severity > 0.6 and second)
    for c in range(copies):
        candidates = rng.uniform(-0.55, 0.55, (10, 2))
        far = candidates[np.argmax(np.hypot(candidates[:, 0] - subject.x, candidates[:, 1] - subject.y))]
        scale = rng.uniform(0.6, 1.0)
        grow = rng.random() < 0.5
        copy = replace(subject, x=float(far[0]), y=float(far[1]), half=subject.half * scale)
        if rng.random() < 0.5:
            copy = replace(copy, rgba=subject.rgba.flip(-1))
        offset = traj.subject.copy()
        if grow:
            offset[:, 2] += np.log(np.clip(m.numpy() / max(severity, 1e-6), 0.02, 1))
        track = sprite_track(f"subject_copy{c}", copy, traj.camera, offset)
        track.opacity = (3 * m).clamp(max=severity) if grow else m
        tracks.insert(i + 1 + c, track)
    return _render(scene, traj, tracks)


@dataclass(frozen=True)
class FailureMode:
    """One failure mode: its data-contract name, score weight, scope and rendering function."""

    name: str
    weight: float  # consistency lost at severity 1: score = 1 - weight * severity
    scope: str  # "frames": fn(frames, severity, rng) works on any video; "scene": fn(scene, traj, severity, rng);
    # "clip": fn(frames, other, severity, rng) on a real clip and other footage
    fn: Callable[..., torch.Tensor]
    motion_weight: float = 0.0  # motion quality lost at severity 1: motion_score = 1 - motion_weight * severity
    text_weight: float = 0.0  # prompt following lost at severity 1 where the prompt says what the mode changes

    def applies(self, kind: str) -> bool:
        """Whether this mode can render a source of `kind`: "scene" (a layered Scene) or "clip" (real footage)."""
        return self.scope in ("frames", kind)

    def render(self, scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
        """Frames `(T, 3, H, W)` of `scene` moving along `traj` with this failure at `severity` in [0, 1]."""
        if self.scope == "frames":
            return self.fn(render_consistent(scene, traj), severity, rng)
        if self.scope != "scene":
            raise ValueError(f"failure mode {self.name} renders {self.scope} sources, not scenes")
        return self.fn(scene, traj, severity, rng)

    def render_clip(
        self, frames: torch.Tensor, other: torch.Tensor, severity: float, rng: np.random.Generator
    ) -> torch.Tensor:
        """A real clip `(T, 3, H, W)` with this failure at `severity`; `other` `(T, 3, H, W)` is other footage."""
        if self.scope == "frames":
            return self.fn(frames, severity, rng)
        if self.scope != "clip":
            raise ValueError(f"failure mode {self.name} renders {self.scope} sources, not clips")
        return self.fn(frames, other, severity, rng)


FAILURE_MODES: dict[str, FailureMode] = {
    mode.name: mode
    for mode in [
        FailureMode("subject_drift", 0.7, "scene", subject_drift),
        FailureMode("background_drift", 0.55, "scene", background_drift),
        FailureMode("color_drift", 0.5, "frames", frame_failures.color_drift),
        FailureMode("structure_distortion", 0.6, "frames", frame_failures.structure_distortion),
        FailureMode("detail_loss", 0.45, "frames", frame_failures.detail_loss),
        FailureMode("content_replacement", 0.9, "scene", content_replacement),
        FailureMode("first_frame_mismatch", 0.6, "scene", first_frame_mismatch),
        FailureMode("flicker", 0.45, "frames", frame_failures.flicker),
        FailureMode("subject_vanish", 0.8, "scene", subject_vanish),
        FailureMode("subject_duplicate", 0.6, "scene", subject_duplicate),
        FailureMode("frozen", 0.0, "frames", frame_failures.frozen),
        FailureMode("subject_swap", 0.85, "scene", identity_failures.subject_swap),
        FailureMode("identity_morph", 0.75, "scene", identity_failures.identity_morph),
        FailureMode("layout_shuffle", 0.6, "scene", identity_failures.layout_shuffle),
        FailureMode("clip_replacement", 0.9, "clip", identity_failures.clip_replacement),
        # motion failures: faithful content, unnatural motion (frames scope: they apply to real clips too)
        FailureMode("jitter", 0.1, "frames", frame_failures.jitter, motion_weight=0.9),
        FailureMode("pingpong", 0.0, "frames", frame_failures.pingpong, motion_weight=0.7),
        FailureMode("stutter", 0.0, "frames", frame_failures.stutter, motion_weight=0.6),
        # text failures: faithful to the image, not to the prompt; rendered from the source's `_v0` trajectory
        FailureMode("camera_mismatch", 0.0, "scene", text_failures.camera_mismatch, text_weight=1.0),
        FailureMode("subject_opposite", 0.0, "scene", text_failures.subject_opposite, text_weight=1.0),
        FailureMode("motion_missing", 0.0, "scene", text_failures.motion_missing, motion_weight=1.0, text_weight=1.0),
    ]
}
WAVE1_MODES = (  # the modes of a config that names none (the default benchmark's), in registry order
    "subject_drift", "background_drift", "color_drift", "structure_distortion", "detail_loss", "content_replacement",
    "first_frame_mismatch", "flicker", "subject_vanish", "subject_duplicate", "frozen",
)  # fmt: skip
MOTION_MODES = ("jitter", "pingpong", "stutter")  # faithful content, unnatural motion (labels.motion)
TEXT_MODES = ("camera_mismatch", "subject_opposite", "motion_missing")  # faithful content, not the prompt's motion
# The consistency failures (what a consistency reward is trained on; the default model's stage 1 draws these).
CONSISTENCY_MODES = tuple(m for m in FAILURE_MODES if m not in MOTION_MODES + TEXT_MODES)
STILL_MODES = (FROZEN_MODE, "motion_missing")  # modes whose video does not move (`motion` 0)


def render_video(scene: Scene, traj: Trajectory, mode: str, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """Frames `(T, 3, H, W)` in [0, 1] of `scene` along `traj`: consistent (`mode="none"`) or with a failure."""
    if mode == CONSISTENT_MODE:
        return render_consistent(scene, traj)
    return FAILURE_MODES[mode].render(scene, traj, severity, rng)


def render_clip_video(
    frames: torch.Tensor, other: torch.Tensor, mode: str, severity: float, rng: np.random.Generator
) -> torch.Tensor:
    """A real clip `(T, 3, H, W)` as it is (`mode="none"`) or with a failure; `other` is other footage."""
    if mode == CONSISTENT_MODE:
        return frames
    return FAILURE_MODES[mode].render_clip(frames, other, severity, rng).clamp(0, 1)


def _shown(traj: Trajectory, index: np.ndarray) -> Trajectory:
    """The trajectory of frames `traj` re-timed by `index` `(T,)` (frame t shows frame index[t])."""
    return replace(
        traj,
        camera=traj.camera[index],
        subject=traj.subject[index],
        objects=traj.objects[index],
        light=traj.light[index],
        sway=traj.sway[index],
    )


RETIMINGS = {"pingpong": frame_failures.pingpong_index, "stutter": frame_failures.stutter_index}


def render_described(
    scene: Scene, traj: Trajectory, mode: str, severity: float, rng: np.random.Generator
) -> tuple[torch.Tensor, Trajectory]:
    """`render_video`'s frames (the same pixels, the same draws) and the trajectory they show, for describing the
    video: `traj` itself for most modes, frame 0's pose held for `frozen` and `jitter`, `traj` re-timed for
    `pingpong` and `stutter`, and the text failures' own paths (`text_failures.TEXT_PATHS`)."""
    if mode in RETIMINGS and FAILURE_MODES[mode].fn is getattr(frame_failures, mode):
        index = RETIMINGS[mode](traj.frames, severity, rng)
        return render_consistent(scene, traj)[torch.from_numpy(index)], _shown(traj, index)
    if mode in text_failures.TEXT_PATHS and FAILURE_MODES[mode].fn is getattr(text_failures, mode):
        shown = text_failures.TEXT_PATHS[mode](scene, traj, severity, rng)
        return render_consistent(scene, shown), shown
    frames = render_video(scene, traj, mode, severity, rng)
    if mode in (FROZEN_MODE, "jitter"):
        return frames, _shown(traj, np.zeros(traj.frames, dtype=np.int64))
    return frames, traj


def motion_score(mode: str, severity: float) -> float:
    """How natural a video's motion is, in [0, 1]: 1 for a consistent video, 0 for a frozen one, else
    `1 - motion_weight * severity` with the mode's `motion_weight` (`FAILURE_MODES`)."""
    if mode == CONSISTENT_MODE:
        return 1.0
    if mode == FROZEN_MODE:
        return 0.0
    return round(float(np.clip(1 - FAILURE_MODES[mode].motion_weight * severity, 0, 1)), 4)
