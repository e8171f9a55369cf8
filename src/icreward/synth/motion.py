"""Consistent motion: camera and subject trajectories, and rendering frames from a scene's layers and a pose.

A `Trajectory` holds per-frame poses that are all zero (or one) at frame 0, so frame 0 of every consistent
video is exactly the conditioning image, as an I2V model pins it. Rendering turns the scene into `Track`s (a
texture plus a per-frame affine map from output pixels to texture coordinates) and composites them back to front
with one `grid_sample` per layer over all frames at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from icreward.synth.scenes import Scene, Sprite


@dataclass
class Trajectory:
    """Per-frame poses of a consistent video; every row is the identity at frame 0."""

    camera: np.ndarray  # (T, 4) pan x, pan y (frame units), log zoom, roll (radians)
    subject: np.ndarray  # (T, 4) subject's own dx, dy (frame units), log scale, rotation (radians)
    objects: np.ndarray  # (T, n_objects, 2) own drift of each small object (frame units)
    light: np.ndarray  # (T, 4) exposure gain and r, g, b tint multipliers
    sway: np.ndarray  # (T,) non-rigid sway of the subject, sprite units at its top (bottom anchored)
    grain: float  # std of per-frame sensor-like noise (never on frame 0)
    grain_seed: int  # seed of that noise, so re-rendering a trajectory gives the same pixels

    @property
    def frames(self) -> int:
        return self.camera.shape[0]


@dataclass
class Track:
    """One layer ready to composite."""

    name: str  # "background", "subject", "object<i>", or a name a failure mode gives an extra layer
    texture: torch.Tensor  # (1 or T, 4, h, w) premultiplied colour + alpha (alpha 1 for the background)
    theta: torch.Tensor  # (T, 2, 3) output frame coordinates -> texture coordinates (affine_grid convention)
    opacity: torch.Tensor | None = None  # (T,) multiplier on the layer
    sway: torch.Tensor | None = None  # (T,) horizontal shear of texture coordinates, growing towards the top


def still_trajectory(scene: Scene, frames: int) -> Trajectory:
    """No camera, subject or light change: every frame is the conditioning image."""
    zeros = np.zeros((frames, 4))
    light = np.ones((frames, 4))
    return Trajectory(zeros, zeros.copy(), np.zeros((frames, len(scene.objects), 2)), light, np.zeros(frames), 0.0, 0)


def _progress(rng: np.random.Generator, frames: int) -> np.ndarray:
    """A smooth monotone curve from 0 (frame 0) to 1 (last frame): linear, ease-in, ease-out or smoothstep."""
    u = np.linspace(0.0, 1.0, frames)
    kind = rng.integers(4)
    return [u, u**2, 1 - (1 - u) ** 2, u * u * (3 - 2 * u)][kind]


def _layer_to_world(cam: np.ndarray, depth: float) -> np.ndarray:
    """(T, 3, 3) maps output frame coordinates to world coordinates for a layer at `depth` (parallax)."""
    t = cam.shape[0]
    zoom, roll = np.exp(cam[:, 2] * depth), cam[:, 3]
    c, s = np.cos(roll), np.sin(roll)
    m = np.zeros((t, 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c / zoom, s / zoom, -s / zoom, c / zoom  # R(-roll) / zoom
    m[:, 0, 2], m[:, 1, 2], m[:, 2, 2] = cam[:, 0] * depth, cam[:, 1] * depth, 1.0
    return m


def _world_to_sprite(x: np.ndarray, y: np.ndarray, half: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(T, 3, 3) maps world coordinates to a sprite's texture coordinates, given its per-frame pose."""
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros((len(x), 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c / half, s / half, -s / half, c / half
    m[:, 0, 2] = -(m[:, 0, 0] * x + m[:, 0, 1] * y)
    m[:, 1, 2] = -(m[:, 1, 0] * x + m[:, 1, 1] * y)
    m[:, 2, 2] = 1.0
    return m


def fit_camera(camera: np.ndarray, scene: Scene) -> np.ndarray:
    """Shrink a camera path until every frame's view of the background stays inside the canvas."""
    corners = np.array([[-1, -1, 1], [1, -1, 1], [-1, 1, 1], [1, 1, 1]], dtype=float).T  # (3, 4)
    limit = scene.margin * (1 - 2 / scene.background.shape[-1])
    for _ in range(30):
        world = _layer_to_world(camera, scene.bg_depth) @ corners  # (T, 3, 4)
        if np.abs(world[:, :2]).max() <= limit:
            return camera
        camera = camera * 0.8
    return np.zeros_like(camera)


def sample_trajectory(rng: np.random.Generator, scene: Scene, frames: int) -> Trajectory:
    """Plausible I2V motion: camera pan / zoom / roll (with parallax), the subject moving, light drifting a little."""
    camera = np.zeros((frames, 4))
    kind = rng.choice(["static", "pan", "zoom", "roll", "combo"], p=[0.12, 0.3, 0.2, 0.1, 0.28])
    if kind in ("pan", "combo"):
        direction = rng.uniform(0, 2 * np.pi)
        camera[:, :2] = np.outer(_progress(rng, frames), [math.cos(direction), math.sin(direction)])
        camera[:, :2] *= rng.uniform(0.05, 0.35)
    if kind in ("zoom", "combo") and (kind == "zoom" or rng.random() < 0.5):
        camera[:, 2] = _progress(rng, frames) * rng.uniform(-0.25, 0.3)
    if kind in ("roll", "combo") and (kind == "roll" or rng.random() < 0.4):
        camera[:, 3] = _progress(rng, frames) * rng.uniform(-0.1, 0.1)
    if rng.random() < 0.3:  # handheld shake
        camera[1:, :2] += rng.normal(0, 0.004, (frames - 1, 2)).cumsum(0) * 0.5
    camera = fit_camera(camera, scene)

    u = np.linspace(0.0, 1.0, frames)
    subject = np.zeros((frames, 4))
    if rng.random() < 0.55:
        direction = rng.uniform(0, 2 * np.pi)
        end = rng.uniform(0.05, 0.3) * np.array([math.cos(direction), math.sin(direction)])
        if abs(scene.subject.x + end[0]) > 0.75 or abs(scene.subject.y + end[1]) > 0.75:
            end = -end
        subject[:, :2] = np.outer(_progress(rng, frames), end)
    if rng.random() < 0.35:  # bobbing
        subject[:, 1] += rng.uniform(0.01, 0.05) * np.sin(2 * np.pi * rng.uniform(0.5, 3) * u)
    if rng.random() < 0.3:
        subject[:, 2] = _progress(rng, frames) * rng.uniform(-0.15, 0.15)
    if rng.random() < 0.3:
        subject[:, 3] = _progress(rng, frames) * rng.uniform(-0.2, 0.2)
    subject[:, :2] *= scene.subject.mobility
    sway = np.zeros(frames)
    if rng.random() < 0.35:
        sway = rng.uniform(0.03, 0.1) * np.sin(2 * np.pi * rng.uniform(0.5, 2) * u) * scene.subject.mobility

    drift = rng.uniform(-0.1, 0.1, (len(scene.objects), 2)) * (rng.random((len(scene.objects), 1)) < 0.3)
    objects = u[:, None, None] * drift[None]
    light = np.ones((frames, 4))
    if rng.random() < 0.5:
        light[:, 0] += u * rng.uniform(-0.06, 0.06)
        light[:, 1:] += np.outer(u, rng.uniform(-0.03, 0.03, 3))
    grain = rng.uniform(0.002, 0.012) if rng.random() < 0.5 else 0.0
    return Trajectory(camera, subject, objects, light, sway, grain, int(rng.integers(2**31)))


def sprite_track(name: str, sprite: Sprite, camera: np.ndarray, offset: np.ndarray) -> Track:
    """A sprite's layer; `offset` (T, 4) adds dx, dy, log scale, rotation to its frame-0 pose."""
    half = sprite.half * np.exp(offset[:, 2])
    world_to_tex = _world_to_sprite(sprite.x + offset[:, 0], sprite.y + offset[:, 1], half, sprite.angle + offset[:, 3])
    theta = (world_to_tex @ _layer_to_world(camera, sprite.depth))[:, :2]
    return Track(name, sprite.rgba[None], torch.from_numpy(theta).float())


def background_track(scene: Scene, camera: np.ndarray, texture: torch.Tensor | None = None) -> Track:
    """The background layer; `texture` (1 or T, 3, C, C) replaces the scene's canvas (e.g. a drifting one)."""
    rgb = scene.background[None] if texture is None else texture
    rgba = torch.cat([rgb, torch.ones_like(rgb[:, :1])], 1)
    theta = _layer_to_world(camera, scene.bg_depth)[:, :2] / scene.margin
    return Track("background", rgba, torch.from_numpy(theta).float())


def scene_tracks(scene: Scene, traj: Trajectory) -> list[Track]:
    """Every layer of `scene` posed by `traj`, in draw order (background first, nearest last)."""
    tracks = [background_track(scene, traj.camera)]
    subject = sprite_track("subject", scene.subject, traj.camera, traj.subject)
    subject.sway = torch.from_numpy(traj.sway).float()
    layers = [(scene.subject.depth, 0, subject)]
    for i, obj in enumerate(scene.objects):
        offset = np.zeros((traj.frames, 4))
        offset[:, :2] = traj.objects[:, i]
        layers.append((obj.depth, i + 1, sprite_track(f"object{i}", obj, traj.camera, offset)))
    return tracks + [track for _, _, track in sorted(layers, key=lambda item: item[:2])]


def _footprint(theta: torch.Tensor, reach: float, size: int) -> tuple[int, int, int, int] | None:
    """The pixel window `(y0, y1, x0, x1)` that a sprite's texture square, grown by `reach`, touches in any frame
    (None when it never enters the frame); `theta` `(T, 2, 3)` maps frame to texture coordinates."""
    a, b = theta[:, :, :2].double(), theta[:, :, 2:].double()
    corners = torch.tensor([[-1.0, 1.0, -1.0, 1.0], [-1.0, -1.0, 1.0, 1.0]], dtype=torch.float64) * reach  # (2, 4)
    frame = torch.linalg.solve(a, corners[None] - b)  # (T, 2, 4) corners in frame coordinates
    lo = ((frame.amin((0, 2)) + 1) / 2 * size).floor().int() - 1
    hi = ((frame.amax((0, 2)) + 1) / 2 * size).ceil().int() + 1
    x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
    x1, y1 = min(size, int(hi[0])), min(size, int(hi[1]))
    return (y0, y1, x0, x1) if x0 < x1 and y0 < y1 else None


def _grid(theta: torch.Tensor, window: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """Texture coordinates `(T, h, w, 2)` of the pixel centres in `window` (as `affine_grid`, align_corners=False)."""
    y0, y1, x0, x1 = window
    ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5) / size * 2 - 1
    xs = (torch.arange(x0, x1, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([x, y, torch.ones_like(x)], -1)  # (h, w, 3)
    return torch.einsum("hwk,tjk->thwj", base, theta)


def composite(tracks: list[Track], size: int) -> torch.Tensor:
    """Draw tracks back to front into frames `(T, 3, size, size)`; the first track is the opaque background.

    A sprite is sampled only inside the window it can touch, so small objects cost little.
    """
    frames = None
    for track in tracks:
        t = track.theta.shape[0]
        sway = 0.0 if track.sway is None else float(track.sway.abs().max())
        window = (0, size, 0, size) if frames is None else _footprint(track.theta, 1 + sway, size)
        if window is None:
            continue
        grid = _grid(track.theta, window, size)  # (T, h, w, 2)
        if track.sway is not None:
            grid[..., 0] += track.sway.view(t, 1, 1) * ((1 - grid[..., 1]) / 2).clamp(0, 1) ** 2
        texture = track.texture.expand(t, -1, -1, -1)
        padding = "border" if frames is None else "zeros"
        layer = F.grid_sample(texture, grid, mode="bilinear", padding_mode=padding, align_corners=False)
        if track.opacity is not None:
            layer = layer * track.opacity.view(t, 1, 1, 1)
        if frames is None:
            frames = layer[:, :3].contiguous()
            continue
        y0, y1, x0, x1 = window
        frames[:, :, y0:y1, x0:x1] = frames[:, :, y0:y1, x0:x1] * (1 - layer[:, 3:]) + layer[:, :3]
    return frames


def finish(frames: torch.Tensor, traj: Trajectory) -> torch.Tensor:
    """Apply the trajectory's light drift and per-frame grain (none on frame 0) and clamp to [0, 1]."""
    light = torch.from_numpy(traj.light).float()
    frames = frames * (light[:, :1] * light[:, 1:]).view(-1, 3, 1, 1)
    if traj.grain > 0:
        noise = torch.randn(frames.shape, generator=torch.Generator().manual_seed(traj.grain_seed))
        noise[0] = 0
        frames = frames + traj.grain * noise
    return frames.clamp(0, 1)


def render_consistent(scene: Scene, traj: Trajectory) -> torch.Tensor:
    """Frames `(T, 3, H, W)` of a consistent video of `scene` moving along `traj`; frame 0 is the image."""
    return finish(composite(scene_tracks(scene, traj), scene.size), traj)


def render_image(scene: Scene) -> torch.Tensor:
    """The conditioning image `(3, H, W)` in [0, 1]."""
    return render_consistent(scene, still_trajectory(scene, 1))[0]
