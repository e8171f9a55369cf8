"""`icreward.flow`: block phase correlation recovers known motion of a real photo, and its descriptors behave.

Videos are rendered from a skimage photo at 128 x 128 (the flow's working size) with `affine_grid` / `grid_sample`
from a larger source, so nothing wraps in at the edges. Pixels at 128 and frame units convert as
`px = frame_units * 128 / 2`.
"""

import math
import time

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from icreward.flow import FLOW_GRID, FLOW_SIZE, MOTION_FEATURES, MotionField, motion_descriptors, motion_field
from icreward.prompts import CAMERA_EFFECT, CAMERA_MOVES

PX = FLOW_SIZE / 2  # pixels at the working size per frame unit


def source(name: str = "astronaut", side: int = 224) -> torch.Tensor:
    """A skimage photo, centre-cropped square and resized (antialiased): `[3, side, side]` in [0, 1]."""
    x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return F.interpolate(x[None], size=(side, side), mode="bilinear", antialias=True)[0]


def render(src: torch.Tensor, moves: list[tuple[float, float, float, float]], out: int = 128) -> torch.Tensor:
    """A video `[T, 3, out, out]`: frame t shows the central 60% of `src` with its content moved by
    `moves[t] = (dx_px, dy_px, scale, clockwise_radians)` (pixels of the output, x right, y down)."""
    base = 0.6
    frames = []
    for dx, dy, scale, rot in moves:
        c, s = math.cos(rot), math.sin(rot)
        a = torch.tensor([[c, s], [-s, c]]) / scale  # inverse of the content's rotation and scale
        d = torch.tensor([dx, dy]) * 2 / out
        theta = torch.cat([a, (-a @ d)[:, None]], 1) * base
        grid = F.affine_grid(theta[None], (1, 3, out, out), align_corners=False)
        frames.append(F.grid_sample(src[None], grid, mode="bicubic", align_corners=False)[0].clamp(0, 1))
    return torch.stack(frames)


def camera_video(move: str, src: torch.Tensor, frames: int = 8, px: float = 1.5, zoom: float = 0.02):
    """The content moving as `CAMERA_EFFECT[move]` says: `px` pixels (at 128) or `zoom` log-scale a step."""
    ex, ey, ez = CAMERA_EFFECT[move]
    return render(src, [(ex * px * t, ey * px * t, math.exp(ez * zoom * t), 0.0) for t in range(frames)])


@pytest.fixture(scope="module")
def photo():
    return source("astronaut")


@pytest.mark.parametrize("shift", [(0.4, -0.3), (1.7, 0.9), (-3.25, 2.5), (6.6, -4.1), (0.0, 0.15)])
def test_recovers_subpixel_shifts_within_a_third_of_a_pixel(photo, shift):
    dx, dy = shift
    video = render(photo, [(dx * t, dy * t, 1.0, 0.0) for t in range(3)])[None]
    field = motion_field(video)
    got = field.similarity[0, :, :2] * PX  # (2 steps, 2) in pixels at 128
    assert (got - torch.tensor(shift)).abs().max() < 0.3
    blocks = (field.flow[0] * PX - torch.tensor(shift)).abs()  # every block, every step
    assert blocks.median() < 0.15 and blocks.max() < 0.4
    assert field.confidence.min() > 0.7 and field.confidence.mean() > 0.95  # 7.8 px steps (1/6 of a window) lose some
    assert field.similarity[0, :, 2:].abs().max() < 2e-3  # no zoom, no rotation


def test_integer_roll_shifts_and_any_frame_size(photo):
    frame = render(photo, [(0, 0, 1.0, 0.0)], out=160)[0]  # 160 x 160: resized to 128, so 5 px -> 4 px
    video = torch.stack([frame, torch.roll(frame, shifts=(-5, 5), dims=(-2, -1))])[None]
    got = motion_field(video).similarity[0, 0, :2] * PX
    assert got[0] == pytest.approx(4.0, abs=0.3) and got[1] == pytest.approx(-4.0, abs=0.3)
    wide = F.interpolate(video[0], size=(96, 200), mode="bilinear")[None]  # x and y each in their own frame units
    got = motion_field(wide).similarity[0, 0, :2] * PX
    assert got[0] == pytest.approx(4.0, abs=0.4) and got[1] == pytest.approx(-4.0, abs=0.4)


def test_zoom_and_rotation_signs_and_sizes(photo):
    grow = motion_field(render(photo, [(0, 0, 1.02**t, 0.0) for t in range(4)])[None]).similarity[0]
    assert (grow[:, 2] - math.log(1.02)).abs().max() < 0.004  # d log scale per step
    assert grow[:, :2].abs().max() * PX < 0.2 and grow[:, 3].abs().max() < 0.003
    shrink = motion_field(render(photo, [(0, 0, 0.98**t, 0.0) for t in range(3)])[None]).similarity[0]
    assert (shrink[:, 2] < -0.015).all()
    turn = math.radians(1.0)
    clockwise = motion_field(render(photo, [(0, 0, 1.0, turn * t) for t in range(3)])[None]).similarity[0]
    assert (clockwise[:, 3] - turn).abs().max() < 0.004 and clockwise[:, 2].abs().max() < 0.003
    anti = motion_field(render(photo, [(0, 0, 1.0, -turn * t) for t in range(3)])[None]).similarity[0]
    assert (anti[:, 3] < -0.013).all()


def test_identical_frames_have_no_flow_and_no_difference(photo):
    frame = render(photo, [(0, 0, 1.0, 0.0)])[0]
    field = motion_field(frame[None, None].repeat(2, 5, 1, 1, 1))
    assert field.flow.abs().max() < 1e-5 and field.residual.abs().max() < 1e-5
    assert field.difference.abs().max() == 0 and field.brightness.abs().max() == 0
    assert field.confidence.min() > 0.99
    d = dict(zip(MOTION_FEATURES, motion_descriptors(field)[0].tolist(), strict=True))
    assert d["frozen_fraction"] > 0.95 and d["straightness"] < 0.01 and d["log_dynamic"] < -6


def test_unrelated_frames_have_low_confidence():
    g = torch.Generator().manual_seed(0)
    field = motion_field(torch.rand(2, 6, 3, 128, 128, generator=g))
    assert field.confidence.mean() < 0.05
    assert field.similarity[..., :2].abs().max() * PX < 1.0  # shrunk towards no motion, not a random jump
    photos = torch.stack([source(n, 128) for n in ("astronaut", "chelsea", "coffee", "rocket")])[None]
    assert motion_field(photos).confidence.mean() < 0.1


def test_shapes_centres_and_errors(photo):
    video = render(photo, [(0.5 * t, 0, 1.0, 0.0) for t in range(4)])[None]
    field = motion_field(video)
    assert isinstance(field, MotionField)
    g = FLOW_GRID
    assert field.flow.shape == (1, 3, g, g, 2) and field.confidence.shape == (1, 3, g, g)
    assert field.centres.shape == (g, g, 2) and field.similarity.shape == (1, 3, 4)
    assert field.residual.shape == (1, 3, g, g, 2) and field.difference.shape == field.brightness.shape == (1, 3)
    assert (field.centres[0, :, 0].diff() > 0).all() and (field.centres[:, 0, 1].diff() > 0).all()  # x, y increase
    assert field.centres.abs().max() < 1
    assert motion_field(video, grid=3, size=96).flow.shape == (1, 3, 3, 3, 2)
    with pytest.raises(ValueError, match="T >= 2"):
        motion_field(video[:, :1])
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        motion_field(video[0])


def test_descriptors_are_finite_for_frozen_two_frame_and_noise_videos(photo):
    frame = render(photo, [(0, 0, 1.0, 0.0)])[0]
    cases = {
        "frozen": frame[None, None].repeat(1, 6, 1, 1, 1),
        "flat": torch.full((1, 4, 3, 64, 64), 0.5),
        "two frames": render(photo, [(0, 0, 1.0, 0.0), (2.0, 1.0, 1.0, 0.0)])[None],
        "noise": torch.rand(2, 5, 3, 64, 48, generator=torch.Generator().manual_seed(1)),
    }
    for name, video in cases.items():
        video = video.clone().requires_grad_()
        desc = motion_descriptors(motion_field(video))
        assert desc.shape == (video.shape[0], len(MOTION_FEATURES)), name
        assert torch.isfinite(desc).all() and desc.abs().max() < 20, name
        desc.sum().backward()
        assert torch.isfinite(video.grad).all(), name


def test_gradients_reach_the_video(photo):
    video = render(photo, [(1.2 * t, -0.7 * t, 1.01**t, 0.0) for t in range(5)])[None].clone().requires_grad_()
    motion_descriptors(motion_field(video)).sum().backward()
    assert torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0
    video.grad = None
    motion_field(video).similarity[..., 0].sum().backward()  # the flow itself, not only the photometric columns
    assert torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0


def test_a_batch_equals_each_alone(photo):
    other = source("chelsea")
    videos = torch.stack(
        [
            render(photo, [(1.1 * t, 0.4 * t, 1.0, 0.0) for t in range(5)]),
            render(other, [(0, 0, 1.02**t, 0.0) for t in range(5)]),
            render(photo, [(0, 0, 1.0, 0.0)] * 5),
        ]
    )
    both = motion_field(videos)
    for b in range(3):
        alone = motion_field(videos[b : b + 1])
        for key in ("flow", "confidence", "similarity", "residual", "difference", "brightness"):
            torch.testing.assert_close(getattr(both, key)[b : b + 1], getattr(alone, key), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        motion_descriptors(both)[1:2], motion_descriptors(motion_field(videos[1:2])), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("move", CAMERA_MOVES)
def test_camera_moves_give_net_similarity_of_their_sign(photo, move):
    net = motion_descriptors(motion_field(camera_video(move, photo)[None]))[0, :4]  # net dx, dy, zoom, rotation
    ex, ey, ez = CAMERA_EFFECT[move]
    dx, dy, zoom = net[0].item() * PX, net[1].item() * PX, net[2].item()  # pixels over 7 steps, log scale
    for sign, value, size in ((ex, dx, 7 * 1.5), (ey, dy, 7 * 1.5), (ez, zoom, 7 * 0.02)):
        if sign:
            assert value * sign > 0.8 * size
        else:
            assert abs(value) < 0.1 * 7 * 1.5 if size > 1 else abs(value) < 0.01
    assert abs(net[3].item()) < 0.01


def test_descriptors_tell_steady_motion_from_jitter_and_loops(photo):
    names = list(MOTION_FEATURES)
    steady = render(photo, [(1.5 * t, 0, 1.0, 0.0) for t in range(9)])
    jitter = render(photo, [(1.5 * (t % 2), 0, 1.0, 0.0) for t in range(9)])  # back and forth every step
    loop = render(photo, [(1.5 * min(t, 8 - t), 0, 1.0, 0.0) for t in range(9)])  # out and back
    d = motion_descriptors(motion_field(torch.stack([steady, jitter, loop])))
    col = {n: d[:, names.index(n)] for n in names}
    assert col["straightness"][0] > 0.9 and col["straightness"][1] < 0.2 and col["straightness"][2] < 0.2
    assert col["reversal"][0] < 0.05 and col["reversal"][1] > 0.9 and 0.05 < col["reversal"][2] < 0.5
    assert col["acceleration"][0] < 0.1 and col["acceleration"][1] > 1.5
    assert col["frozen_fraction"].max() < 0.05 and (col["mean_confidence"] > 0.9).all()


def test_subject_motion_shows_in_the_residual(photo):
    """A patch moving right over a still background: residual motion to the right, camera nearly still."""
    frames = []
    patch = source("chelsea", 40)
    base = render(photo, [(0, 0, 1.0, 0.0)])[0]
    for t in range(6):
        f = base.clone()
        x = 20 + 3 * t
        f[:, 44:84, x : x + 40] = patch
        frames.append(f)
    d = motion_descriptors(motion_field(torch.stack(frames)[None]))[0]
    col = dict(zip(MOTION_FEATURES, d.tolist(), strict=True))
    assert col["subject_dx"] > 0.05 and abs(col["subject_dy"]) < 0.5 * col["subject_dx"]
    assert abs(col["net_dx"]) < col["subject_dx"]


def test_timing_is_reported():
    video = torch.rand(8, 16, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    motion_descriptors(motion_field(video))  # warm-up
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        with torch.no_grad():
            motion_descriptors(motion_field(video))
        runs.append(time.perf_counter() - start)
    print(f"motion_field + descriptors, B=8 T=16 128x128: {min(runs) * 1000:.1f} ms")  # reported, not asserted
