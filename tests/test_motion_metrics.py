"""`metric:dynamic-degree` and `metric:camera-motion`: weight-free motion metrics on the block flow."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

import icreward
from icreward.cli import main
from icreward.media import write_video
from icreward.metrics.motion import (
    camera_rewards,
    dynamic_threshold,
    is_dynamic,
    pair_motion,
    predicted_move,
    vbench_camera_classes,
)
from icreward.prompts import CAMERA_EFFECT, CAMERA_MOVES, CAMERA_PHRASES, with_camera


def source(name: str = "astronaut", side: int = 224) -> torch.Tensor:
    x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return F.interpolate(x[None], size=(side, side), mode="bilinear", antialias=True)[0]


def camera_video(move: str, src: torch.Tensor, frames: int = 8, px: float = 2.0, zoom: float = 0.02, out=(128, 128)):
    """`[T, 3, H, W]`: the central 60% of `src`, its content moving as `CAMERA_EFFECT[move]` says, `px` pixels (of
    the output's width) or `zoom` log-scale a step."""
    ex, ey, ez = CAMERA_EFFECT[move]
    h, w = out
    video = []
    for t in range(frames):
        s = math.exp(ez * zoom * t)
        d = torch.tensor([ex * px * t * 2 / w, ey * px * t * 2 / h])
        theta = torch.tensor([[0.6 / s, 0, -0.6 / s * d[0]], [0, 0.6 / s, -0.6 / s * d[1]]])
        grid = F.affine_grid(theta[None], (1, 3, h, w), align_corners=False)
        video.append(F.grid_sample(src[None], grid, mode="bicubic", align_corners=False)[0].clamp(0, 1))
    return torch.stack(video)


@pytest.fixture(scope="module")
def photo():
    return source("astronaut")


@pytest.fixture(scope="module")
def moves(photo):
    """The seven camera moves rendered from one photo: `[7, 8, 3, 128, 128]` in `CAMERA_MOVES` order."""
    return torch.stack([camera_video(m, photo) for m in CAMERA_MOVES])


def test_both_are_registered_weight_free_with_their_dimension():
    assert {"dynamic-degree", "camera-motion"} <= set(icreward.list_metrics(offline_only=True))
    dd, cm = icreward.load("metric:dynamic-degree"), icreward.load("metric:camera-motion")
    assert (dd.name, dd.dimension, dd.needs_weights) == ("dynamic-degree", "motion", False)
    assert (cm.name, cm.dimension, cm.needs_weights) == ("camera-motion", "text", False)


def test_a_still_video_scores_below_a_panning_one(photo, moves):
    metric = icreward.load("metric:dynamic-degree")
    still = moves[CAMERA_MOVES.index("static")]
    slow = camera_video("pan_left", photo, px=1.0)
    fast = camera_video("pan_left", photo, px=6.0)
    scores = metric(still[:1].expand(3, -1, -1, -1), torch.stack([still, slow, fast]))
    assert scores[0] < 0.01 < scores[1] < scores[2]
    assert 0 <= scores.min() and scores.max() <= 1
    # VBench's boolean: 6 px at a 256 short side is 3 px at 128; 2 of 7 pairs must pass for T = 8
    assert dynamic_threshold(128, 128) == 3.0
    assert is_dynamic(torch.stack([still, slow, fast])).tolist() == [False, False, True]
    px = pair_motion(fast[None])[0]
    assert (px - 6.0).abs().max() < 0.5  # the largest block motion, in pixels of the frame


def test_dynamic_degree_is_in_pixels_of_the_frame_given(photo):
    """The same motion at twice the size reads twice the pixels against twice the threshold: the same reward."""
    small = camera_video("tilt_down", photo, px=2.5)
    big = camera_video("tilt_down", photo, px=5.0, out=(256, 256))
    metric = icreward.load("metric:dynamic-degree")
    a, b = metric(small[:1], small[None]), metric(big[:1], big[None])
    assert a.item() == pytest.approx(b.item(), abs=0.05)


def test_the_matching_prompt_scores_highest_and_the_class_is_right(moves):
    metric = icreward.load("metric:camera-motion")
    image = moves[:, 0]
    for i, move in enumerate(CAMERA_MOVES):
        video = moves[i : i + 1].expand(7, -1, -1, -1, -1)
        prompts = [with_camera("an astronaut in a white suit", m) for m in CAMERA_MOVES]
        rewards = metric(image[i : i + 1].expand(7, -1, -1, -1), video, prompts)
        assert rewards.argmax().item() == i, (move, rewards)
        assert rewards[i] > 0.8  # a clean move well above VBench's threshold
    assert predicted_move(moves) == list(CAMERA_MOVES)
    classes = vbench_camera_classes(moves)
    assert [c == [m] for c, m in zip(classes, CAMERA_MOVES, strict=True)] == [True] * 7, classes
    torch.testing.assert_close(camera_rewards(moves).argmax(1), torch.arange(7))


def test_no_prompt_or_no_camera_words_give_nan(moves):
    metric = icreward.load("metric:camera-motion")
    video, image = moves[:3], moves[:3, 0]
    assert torch.isnan(metric(image, video)).all()
    # the videos pan left, pan right, tilt up
    out = metric(image, video, ["a cat on a sofa", "the camera slowly pans to the right", CAMERA_PHRASES["pan_left"]])
    assert torch.isnan(out[0]) and out[1] > 0.8 and out[2] < -0.8
    with pytest.raises(ValueError, match="one prompt per video"):
        metric(image, video, ["camera static"])
    assert metric.score(image[0], video[0], "a cat, camera pans left") > 0.8  # video 0 pans left
    assert math.isnan(metric.score(image[0], video[0]))


def test_gradients_reach_the_video(moves):
    video = moves[:2].clone().requires_grad_()
    image = moves[:2, 0]
    total = icreward.load("metric:dynamic-degree")(image, video).sum()
    total = total + icreward.load("metric:camera-motion")(image, video, ["camera pans left", "camera zooms in"]).sum()
    total.backward()
    assert torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0


def test_one_frame_and_a_batch_equal_to_each_alone(moves):
    dd, cm = icreward.load("metric:dynamic-degree"), icreward.load("metric:camera-motion")
    image = moves[:, 0]
    assert dd(image[:1], moves[:1, :1]).item() == 0
    assert cm(image[:2], moves[:2, :1], ["camera static", "camera pans left"]).tolist() == [1.0, 0.0]
    prompts = [with_camera("a photo", m) for m in CAMERA_MOVES]
    with torch.no_grad():
        both_dd, both_cm = dd(image, moves), cm(image, moves, prompts)
        for i in (0, 4, 6):
            assert dd(image[i : i + 1], moves[i : i + 1]).item() == pytest.approx(both_dd[i].item(), abs=1e-5)
            assert cm(image[i : i + 1], moves[i : i + 1], prompts[i : i + 1]).item() == pytest.approx(
                both_cm[i].item(), abs=1e-5
            )


def test_cli_scores_a_tiny_mp4(tmp_path, photo, capsys):
    pan = camera_video("pan_right", photo, frames=16, px=3.0, out=(64, 96))  # 16 frames: what the metric samples
    frames = (pan.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    write_video(tmp_path / "pan.mp4", frames)
    write_video(tmp_path / "still.mp4", np.repeat(frames[:1], 16, axis=0))
    Image.fromarray(frames[0]).save(tmp_path / "img.png")
    rewards = {}
    for name in ("pan", "still"):
        args = ["score", "--model", "metric:dynamic-degree", "--image", str(tmp_path / "img.png")]
        assert main([*args, "--video", str(tmp_path / f"{name}.mp4")]) == 0
        rewards[name] = float(capsys.readouterr().out)
    assert rewards["still"] < 0.05 < 0.5 < rewards["pan"]
