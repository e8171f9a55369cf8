"""Identity and structure failures of image-to-video generation: the subject becomes another object (suddenly or
gradually), the layout of the scene rearranges, or a real clip continues with other footage.

They keep colour statistics close to the conditioning image's (replacements are picked and toned to the subject's
mean colour; a rearranged layout moves the same layers), so a reward that reads only colour cannot see them.
Registered in `icreward.synth.failures.FAILURE_MODES`; the same contract holds: frame 0 is the image, the video
keeps moving along its trajectory, every draw comes from the given RNG, and severity 0 is (about) consistent.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from icreward.synth.frame_failures import strength
from icreward.synth.motion import Trajectory, composite, finish, render_consistent, scene_tracks
from icreward.synth.scenes import Scene, fit_texture, make_sprite_texture
from icreward.synth.textures import value_noise

SWAP_CANDIDATES = 4  # procedural candidates drawn for a replacement subject; the one nearest in colour is used


def _mean_colour(rgba: torch.Tensor) -> torch.Tensor:
    """Alpha-weighted mean colour `(3,)` of a premultiplied texture `(4, n, n)`."""
    return rgba[:3].sum((1, 2)) / rgba[3].sum().clamp(min=1e-6)


def _nearest(candidates: list[torch.Tensor], target: torch.Tensor) -> int:
    """Index of the candidate texture whose mean colour is nearest `target` (the first of equals)."""
    return min(range(len(candidates)), key=lambda i: float((_mean_colour(candidates[i]) - target).abs().sum()))


def swap_index(scene: Scene) -> int | None:
    """Which of `scene.swaps` `replacement_subject` turns the subject into (None: no swaps, a procedural one)."""
    if not scene.swaps:
        return None
    n = scene.subject.rgba.shape[-1]
    return _nearest([fit_texture(s, n) for s in scene.swaps], _mean_colour(scene.subject.rgba))


def replacement_subject(scene: Scene, rng: np.random.Generator) -> torch.Tensor:
    """Another object for the subject's place, `(4, n, n)` like the subject's texture: one of the scene's `swaps`
    (other emoji for an emoji subject) or a new procedural sprite, the candidate nearest the subject's mean colour,
    then toned to that mean colour so the frame's colour statistics stay."""
    rgba = scene.subject.rgba
    n = rgba.shape[-1]
    if scene.swaps:
        candidates = [fit_texture(s, n) for s in scene.swaps]
    else:
        candidates = [make_sprite_texture(rng, n, scene.light) for _ in range(SWAP_CANDIDATES)]
    target = _mean_colour(rgba)
    other = candidates[_nearest(candidates, target)]
    gain = (target / _mean_colour(other).clamp(min=1e-3)).clamp(0.6, 1.6).view(3, 1, 1)
    toned = other.clone()
    toned[:3] = torch.minimum(other[:3] * gain, other[3:])  # premultiplied: colour <= alpha
    return toned


def _with_subject(scene: Scene, traj: Trajectory, texture: torch.Tensor) -> torch.Tensor:
    """Render `scene` along `traj` with the subject's texture replaced by a per-frame `(T, 4, n, n)` one."""
    tracks = scene_tracks(scene, traj)
    next(track for track in tracks if track.name == "subject").texture = texture
    return finish(composite(tracks, scene.size), traj)


def _onset(rng: np.random.Generator, frames: int, severity: float) -> int:
    """Frame where a sudden failure happens: earlier for a more severe one, never in the first quarter."""
    start = round((1 - 0.8 * severity + rng.uniform(-0.1, 0.1)) * (frames - 1))
    return int(np.clip(start, max(1, frames // 4), frames - 1))


def _step(rng: np.random.Generator, frames: int, severity: float) -> torch.Tensor:
    """`(T,)`: 0 before a seeded onset, then up to `min(1, 2 * severity)` within one or two frames."""
    start, blend = _onset(rng, frames, severity), int(rng.integers(1, 3))
    idx = torch.arange(frames, dtype=torch.float32)
    return ((idx - start + 1) / blend).clamp(0, 1) * min(1.0, 2 * severity)


def subject_swap(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The subject turns into a different object of about the same colour within a frame or two and carries on
    along its path (an I2V model losing the subject's identity mid-shot: the cat becomes a dog)."""
    other = replacement_subject(scene, rng)
    m = _step(rng, traj.frames, severity).view(-1, 1, 1, 1)
    return _with_subject(scene, traj, scene.subject.rgba[None] * (1 - m) + other[None] * m)


def identity_morph(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The subject gradually becomes another object: a warping cross-dissolve, or a blotchy dissolve, from a seeded
    onset (the slow identity drift of long I2V generations)."""
    t = traj.frames
    rgba = scene.subject.rgba
    n = rgba.shape[-1]
    other = replacement_subject(scene, rng)
    m = strength(rng, t, severity).view(t, 1, 1, 1)
    if rng.random() < 0.5:  # warp: each identity is pushed along a smooth field towards the other's place
        field = torch.stack([value_noise(rng, n, n, rng.uniform(2, 4)) - 0.5 for _ in range(2)], -1)  # (n, n, 2)
        amplitude = rng.uniform(0.3, 0.6)
        identity = F.affine_grid(torch.eye(2, 3).expand(t, 2, 3), [t, 4, n, n], align_corners=False)
        to_other = F.grid_sample(rgba[None].expand(t, -1, -1, -1), identity + amplitude * m.view(t, 1, 1, 1) * field,
                                 mode="bilinear", padding_mode="zeros", align_corners=False)  # fmt: skip
        from_other = F.grid_sample(other[None].expand(t, -1, -1, -1), identity - amplitude * (1 - m) * field,
                                   mode="bilinear", padding_mode="zeros", align_corners=False)  # fmt: skip
        texture = to_other * (1 - m) + from_other * m
    else:  # dissolve: blotches of the other object spread until it has replaced the subject
        noise = value_noise(rng, n, n, rng.uniform(3, 8)) * 0.9 + 0.05
        mask = ((m - noise[None, None]) * 8 + m).clamp(0, 1)  # (T, 1, n, n), 0 everywhere at m = 0
        texture = rgba[None] * (1 - mask) + other[None] * mask
    texture = texture.clamp(0, 1)
    texture[0] = rgba
    return _with_subject(scene, traj, texture)


def layout_shuffle(scene: Scene, traj: Trajectory, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """The scene's layout rearranges: within a frame or two the subject jumps to where a visible object was (that
    object to the subject's place) or to a far spot, and other visible objects move to new places; the layers
    then carry on with their own motion (an I2V model re-composing the shot while keeping its content)."""
    t = traj.frames
    subject = scene.subject
    visible = [i for i, o in enumerate(scene.objects) if abs(o.x) < 0.9 and abs(o.y) < 0.9]
    candidates = rng.uniform(-0.6, 0.6, (10, 2))
    far = candidates[np.argmax(np.hypot(candidates[:, 0] - subject.x, candidates[:, 1] - subject.y))]
    targets = {i: rng.uniform(-0.8, 0.8, 2) for i in visible}
    if visible and rng.random() < 0.6:  # the subject and one visible object trade places
        partner = visible[int(rng.integers(len(visible)))]
        far = np.array([scene.objects[partner].x, scene.objects[partner].y])
        targets[partner] = np.array([subject.x, subject.y])
    m = _step(rng, t, severity).numpy()[:, None]  # (T, 1)
    subject_path = traj.subject.copy()
    subject_path[:, :2] += m * (far - [subject.x, subject.y])
    object_paths = traj.objects.copy()
    for i, target in targets.items():
        object_paths[:, i] += m * (target - [scene.objects[i].x, scene.objects[i].y])
    return render_consistent(scene, replace(traj, subject=subject_path, objects=object_paths))


def clip_replacement(
    frames: torch.Tensor, other: torch.Tensor, severity: float, rng: np.random.Generator
) -> torch.Tensor:
    """A real clip `(T, 3, H, W)` cuts or quickly cross-fades to `other` footage (another video's segment) from a
    seeded onset, earlier when more severe (an I2V model abandoning the conditioning scene for other content)."""
    t = frames.shape[0]
    start = _onset(rng, t, severity)
    length = 1 if rng.random() < 0.5 else int(rng.integers(2, 4))  # a cut, or a fade over 2-3 frames
    idx = torch.arange(t, dtype=torch.float32)
    mix = (((idx - start + 1) / length).clamp(0, 1) * min(1.0, 2 * severity)).view(t, 1, 1, 1)
    return frames * (1 - mix) + other * mix
