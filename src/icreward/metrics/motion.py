"""Weight-free motion metrics on `icreward.flow.motion_field`: VBench's dynamic degree and camera motion, offline.

`metric:dynamic-degree` (dimension "motion") is VBench's dynamic_degree with our block phase correlation in place of
RAFT. What it copies from VBench: the per-pair score is the largest motion in the frame (VBench: the mean of the top 5%
of RAFT's per-pixel flow magnitudes), in pixels of the decoded frame; the threshold is `6.0 * min(H, W) / 256` pixels;
a video is dynamic when at least `round(4 * T / 16)` consecutive pairs exceed it (`is_dynamic`, VBench's boolean).
What differs: the flow is `motion_field`'s 4 x 4 grid of overlapping windows at 128 x 128 (each window's dominant
displacement), so the per-pair score is the largest block magnitude (the top 1 of 16 blocks, about 6% of the frame)
weighted by the block's match confidence: a small subject moving inside a still window reads lower than in RAFT, and
unmatched frames (noise, cuts) read as still where RAFT would report large flow. Frames are the T the video is given
with (16 sampled uniformly from a file), where VBench first resamples to 8 fps. The reward is continuous: the mean over
pairs of `q^2 / (1 + q^2)` with `q` the pair's score over the threshold (0.5 at the threshold, 0.2 at half of it,
0.8 at twice it): a soft count of the pairs VBench would count, in [0, 1].

`metric:camera-motion` (dimension "text") judges the camera move the prompt asks for (`icreward.prompts.camera_move`:
VBench-I2V's seven phrases and common variants) against the global motion. What it copies from VBench-I2V's
camera_motion: the content's net first-to-last motion at the frame's edge points, in pixels, against the threshold
`0.005 * min(H, W)`, and (in `vbench_camera_classes`) its rules: each of the top, bottom, left and right edge points
is classed left/right/up/down/static, and the pairs (top, bottom) and (left, right) map to pan/tilt/zoom/static
(both left: pan_right; top up and bottom down: zoom_in; ...), several classes possible. What differs: the motion is
the per-step similarity fit of `motion_field` summed over steps, not CoTracker tracks, and the reward is continuous:
with the content's net motion in pixels `X` (along x), `Y` (along y), `Z` (the zoom's displacement of an edge point,
`net zoom * min(H, W) / 2`) and `R` (the rotation's, likewise), `total = |X| + |Y| + |Z| + |R|` and `tau` the VBench
threshold, the reward is `(the signed motion along the asked move - every other component) / (total + tau)`: for
"camera pans left" (content moving right, +x, `CAMERA_EFFECT`) `(X - |Y| - |Z| - |R|) / (total + tau)`, for zooms
`(±Z - |X| - |Y| - |R|) / (total + tau)`, for "camera static" `(tau - total) / (total + tau)`. It lies in (-1, 1]:
near 1 for a clean move of the asked kind well above the threshold (whatever its speed), near 0 for too little
motion or a diagonal one, near -1 for the opposite move. Items whose prompt names no camera move (or no prompt) get
NaN: "no value", not a score.

Neither uses the image (VBench's dimensions do not either). Both are differentiable w.r.t. the video.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from icreward.flow import MotionField, motion_field
from icreward.interface import Scorer, register_metric
from icreward.prompts import CAMERA_EFFECT, CAMERA_MOVES, camera_move

VBENCH_DYNAMIC_THRESHOLD = 6.0  # pixels at a 256-pixel short side (VBench's dynamic_degree `thres`)
VBENCH_CAMERA_FACTOR = 0.005  # VBench-I2V's camera_motion threshold: min(H, W) * 0.005 pixels
EDGE = 0.9  # frame units of the edge points (VBench tracks a 10 x 10 grid: its outer rows and columns)


def dynamic_threshold(height: int, width: int) -> float:
    """VBench's per-pair motion threshold in pixels: `6.0 * min(H, W) / 256`."""
    return VBENCH_DYNAMIC_THRESHOLD * min(height, width) / 256.0


def pair_motion(video: torch.Tensor, field: MotionField | None = None) -> torch.Tensor:
    """Per consecutive pair `[B, T-1]`: the largest confidence-weighted block displacement, in pixels of the given
    frames (our stand-in for VBench's mean of the top 5% of RAFT flow magnitudes)."""
    field = motion_field(video) if field is None else field
    h, w = video.shape[-2:]
    scale = torch.tensor([w / 2.0, h / 2.0], dtype=field.flow.dtype, device=field.flow.device)
    pixels = torch.sqrt(((field.flow * scale) ** 2).sum(-1) + 1e-12)  # (B, T-1, G, G)
    return (field.confidence * pixels).flatten(2).amax(-1)


def is_dynamic(video: torch.Tensor, field: MotionField | None = None) -> torch.Tensor:
    """VBench's boolean per video `[B]`: at least `round(4 * T / 16)` pairs move more than `dynamic_threshold`."""
    scores = pair_motion(video, field)
    threshold = dynamic_threshold(*video.shape[-2:])
    count_num = round(4 * video.shape[1] / 16.0)  # Python's round, as VBench's: 0 for T <= 2, 2 for T = 8, 4 for 16
    return (scores > threshold).sum(1) >= max(count_num, 1)  # VBench calls any video of 2 frames dynamic; we need 1


@register_metric("dynamic-degree")
class DynamicDegree(Scorer):
    """VBench's dynamic degree on the weight-free block flow (module docstring): a soft count in [0, 1] of the frame
    pairs whose largest motion passes VBench's threshold; `is_dynamic(video)` gives VBench's boolean."""

    name = "dynamic-degree"
    dimension = "motion"
    needs_weights = False
    max_side = 256  # the flow works at 128 x 128 and the threshold scales with the frame

    def forward(self, image: torch.Tensor, video: torch.Tensor, prompt: Sequence[str] | None = None) -> torch.Tensor:
        if video.shape[1] < 2:
            return video.new_zeros(video.shape[0])  # one frame shows no motion
        ratio = pair_motion(video) / dynamic_threshold(*video.shape[-2:])
        return (ratio**2 / (1 + ratio**2)).mean(1)


def net_edge_motion(video: torch.Tensor, field: MotionField | None = None) -> torch.Tensor:
    """The content's net motion `[B, 4]` in pixels of the given frames: (X, Y, Z, R) = net translation along x and y,
    and the displacement of an edge point (at half the short side from the centre) by the net zoom and rotation."""
    field = motion_field(video) if field is None else field
    h, w = video.shape[-2:]
    net = field.similarity.sum(1)  # (B, 4): dx, dy, zoom, rotation in frame units
    scale = net.new_tensor([w / 2.0, h / 2.0, min(h, w) / 2.0, min(h, w) / 2.0])
    return net * scale


def camera_rewards(video: torch.Tensor, field: MotionField | None = None) -> torch.Tensor:
    """The camera-motion reward `[B, 7]` of each video under each of the seven moves (`CAMERA_MOVES` order)."""
    x, y, z, r = net_edge_motion(video, field).unbind(1)
    tau = VBENCH_CAMERA_FACTOR * min(video.shape[-2:])
    mags = [torch.sqrt(c**2 + 1e-12) for c in (x, y, z, r)]
    total = mags[0] + mags[1] + mags[2] + mags[3]
    out = []
    for move in CAMERA_MOVES:
        effect = CAMERA_EFFECT[move]
        if effect == (0, 0, 0):
            along = tau - total
        else:
            axis = next(i for i, s in enumerate(effect) if s)
            signed = (x, y, z)[axis] * effect[axis]
            along = signed - (total - mags[axis])
        out.append(along / (total + tau))
    return torch.stack(out, 1)


def predicted_move(video: torch.Tensor, field: MotionField | None = None) -> list[str]:
    """The move (`CAMERA_MOVES`) whose reward is highest, per video."""
    best = camera_rewards(video, field).argmax(1).tolist()
    return [CAMERA_MOVES[i] for i in best]


def _edge_class(dx: float, dy: float, scale: float) -> list[str]:
    """VBench's `transform_class`: the directions of one edge point's motion beyond `scale` pixels, or static."""
    out = []
    if dx > scale:
        out.append("right")
    elif dx < -scale:
        out.append("left")
    if dy > scale:
        out.append("down")
    elif dy < -scale:
        out.append("up")
    return out or ["static"]


_TOP_DOWN = {"left_left": "pan_right", "right_right": "pan_left", "down_down": "tilt_up", "up_up": "tilt_down",
             "up_down": "zoom_in", "down_up": "zoom_out", "static_static": "static"}  # fmt: skip
_LEFT_RIGHT = {**{k: v for k, v in _TOP_DOWN.items() if k not in ("up_down", "down_up")},
               "left_right": "zoom_in", "right_left": "zoom_out"}  # fmt: skip


def vbench_camera_classes(video: torch.Tensor, field: MotionField | None = None) -> list[list[str]]:
    """VBench-I2V's camera_motion rules on our net motion: per video the list of predicted moves (`CAMERA_MOVES`
    names, or `["None"]` as VBench when no rule matches); VBench scores a video 1 when the asked move is in it.

    The edge points are the middle of the top, bottom, left and right edges (`EDGE` = 0.9 frame units from the
    centre); each moves by the net similarity motion, in pixels, classed against `0.005 * min(H, W)`."""
    h, w = video.shape[-2:]
    net = motion_field(video).similarity.sum(1) if field is None else field.similarity.sum(1)
    scale = VBENCH_CAMERA_FACTOR * min(h, w)
    results = []
    for dx, dy, zoom, rot in net.tolist():

        def moved(px: float, py: float, dx=dx, dy=dy, zoom=zoom, rot=rot) -> list[str]:
            u, v = dx + zoom * px - rot * py, dy + zoom * py + rot * px  # frame units
            return _edge_class(u * w / 2, v * h / 2, scale)

        top, down, left, right = moved(0, -EDGE), moved(0, EDGE), moved(-EDGE, 0), moved(EDGE, 0)
        found = [_TOP_DOWN[f"{a}_{b}"] for a in top for b in down if f"{a}_{b}" in _TOP_DOWN] or ["None"]
        found += [_LEFT_RIGHT[f"{a}_{b}"] for a in left for b in right if f"{a}_{b}" in _LEFT_RIGHT] or ["None"]
        classes = sorted(set(found))
        for drop in ("static", "None"):
            if drop in classes and len(classes) > 1:
                classes.remove(drop)
        results.append(classes)
    return results


@register_metric("camera-motion")
class CameraMotion(Scorer):
    """Agreement of the global motion with the camera move the prompt asks for (module docstring), in (-1, 1];
    NaN for an item whose prompt names no camera move, and for every item without prompts."""

    name = "camera-motion"
    dimension = "text"
    needs_weights = False
    max_side = 256

    def forward(self, image: torch.Tensor, video: torch.Tensor, prompt: Sequence[str] | None = None) -> torch.Tensor:
        b = video.shape[0]
        if prompt is None:
            return video.new_full((b,), float("nan"))
        if isinstance(prompt, str):
            prompt = [prompt] * b
        if len(prompt) != b:
            raise ValueError(f"camera-motion needs one prompt per video: {len(prompt)} prompts for {b} videos")
        moves = [camera_move(p) for p in prompt]
        if all(m is None for m in moves):
            return video.new_full((b,), float("nan"))
        if video.shape[1] < 2:  # one frame shows no motion: what "camera static" asks for, and no pan, tilt or zoom
            still = torch.tensor([float(m == "static") for m in CAMERA_MOVES], dtype=video.dtype, device=video.device)
            rewards = still.expand(b, -1)
        else:
            rewards = camera_rewards(video)  # (B, 7)
        index = torch.tensor([CAMERA_MOVES.index(m) if m else 0 for m in moves], device=video.device)
        picked = rewards.gather(1, index[:, None])[:, 0]
        known = torch.tensor([m is not None for m in moves], device=video.device)
        return torch.where(known, picked, torch.full_like(picked, float("nan")))


__all__ = [
    "CameraMotion",
    "DynamicDegree",
    "camera_rewards",
    "dynamic_threshold",
    "is_dynamic",
    "net_edge_motion",
    "pair_motion",
    "predicted_move",
    "vbench_camera_classes",
]
