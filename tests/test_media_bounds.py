"""Bounds of the media readers: frame counts, decompression-bomb limits for videos, and files that are not regular
files (FIFOs, devices, folders), each refused at once with an error that names the value or the file."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icreward import media
from icreward.errors import IcrewardError, MediaError
from icreward.media import FewFramesWarning, FrameCountError, load_image, load_video, write_video

SUBPROCESS_TIMEOUT = 120  # seconds; a reader that blocks makes the test fail instead of hanging the suite


def mp4(path: Path, n_frames: int, size: tuple[int, int] = (16, 16)) -> Path:
    """An H.264 video whose frame t is grey level 40 * t (so frames are told apart by their mean)."""
    frames = np.stack([np.full((*size, 3), min(255, 40 * t), np.uint8) for t in range(n_frames)])
    write_video(path, frames)
    return path


def gif(path: Path, n_frames: int, size: tuple[int, int] = (16, 16), canvas: tuple[int, int] | None = None) -> Path:
    """An animated GIF of `n_frames` distinct frames; `canvas` rewrites the logical screen size in its header (a
    decompression bomb: the file stays tiny, the decoder's canvas does not)."""
    frames = [Image.new("RGB", size, (60 * t % 256, 0, 0)) for t in range(n_frames)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    if canvas is not None:
        data = bytearray(path.read_bytes())
        data[6:10] = struct.pack("<HH", *canvas)  # GIF logical screen width, height (little-endian)
        path.write_bytes(bytes(data))
    return path


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (hard timeout), so a hang or a memory blow-up cannot take the suite down."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


# ---------------------------------------------------------------- frame counts


@pytest.mark.parametrize("num_frames", [0, -1, 1, media.MAX_FRAMES + 1, 5000, 100_000, 2.0, True, "16", None])
def test_num_frames_outside_the_range_is_refused_before_the_file_is_read(tmp_path, num_frames):
    with pytest.raises(FrameCountError, match=rf"num_frames .*{media.MIN_FRAMES} to {media.MAX_FRAMES}.*got") as err:
        load_video(tmp_path / "no-such-video.mp4", num_frames=num_frames)  # the file is never looked at
    assert isinstance(err.value, IcrewardError) and isinstance(err.value, ValueError)
    assert repr(num_frames) in str(err.value) or str(num_frames) in str(err.value)


def test_frame_count_bounds_are_inclusive(tmp_path):
    video = mp4(tmp_path / "v.mp4", 4)
    assert load_video(video, num_frames=media.MIN_FRAMES).shape == (2, 3, 16, 16)
    with pytest.warns(FewFramesWarning):
        assert load_video(video, num_frames=media.MAX_FRAMES).shape == (media.MAX_FRAMES, 3, 16, 16)
    assert media.MIN_FRAMES == 2 and media.MAX_FRAMES == 256  # what the README and the CLI promise


def test_num_frames_zero_is_not_the_model_default(tmp_path):
    """`num_frames=0` used to mean "the scorer's own" (`num_frames or scorer.num_frames`); now it is refused."""
    import icreward
    from icreward.scoring.engine import Item, score_items
    from icreward.scoring.rank import rank_videos

    scorer = icreward.load("metric:color-hist")
    image = tmp_path / "i.png"
    Image.new("RGB", (16, 16), (90, 90, 90)).save(image)
    items = [Item("a", image, mp4(tmp_path / "v.mp4", 16))]
    for bad in (0, -1, 1, 5000):
        with pytest.raises(FrameCountError, match=f"got {bad}"):
            list(score_items(scorer, items, num_frames=bad, progress=False))
        with pytest.raises(FrameCountError, match=f"got {bad}"):
            rank_videos(scorer, image, [items[0].video], num_frames=bad)
    (result,) = score_items(scorer, items, num_frames=None, progress=False)  # None: the scorer's 16
    assert result.error is None and result.reward is not None


def test_videos_shorter_than_min_frames_are_refused_in_every_format(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "f0.png")
    np.save(tmp_path / "one.npy", np.zeros((1, 8, 8, 3), np.uint8))
    for video in (mp4(tmp_path / "one.mp4", 1), gif(tmp_path / "one.gif", 1), folder, tmp_path / "one.npy"):
        with pytest.raises(MediaError, match="video has 1 frame; at least 2 are needed") as err:
            load_video(video, num_frames=4)
        assert err.value.path == str(video)


def test_a_video_shorter_than_num_frames_repeats_its_frames_and_says_so(tmp_path):
    """A 2-frame video sampled to 16 comes back with 16 frames (8 copies of each) and a warning naming the file;
    a long enough video gives no warning."""
    video = mp4(tmp_path / "two.mp4", 2)
    with pytest.warns(FewFramesWarning, match=r"two\.mp4: video has 2 frames, fewer than the 16 sampled") as record:
        frames = load_video(video, num_frames=16)
    assert len(record) == 1
    assert frames.shape == (16, 3, 16, 16)
    means = frames.mean(dim=(1, 2, 3))
    assert torch.equal(frames[0], frames[7]) and torch.equal(frames[8], frames[15]) and means[0] < means[15]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all when the video has the frames
        assert load_video(mp4(tmp_path / "long.mp4", 16), num_frames=16).shape[0] == 16


# ---------------------------------------------------------------- decompression bombs


def test_gif_bomb_refused_from_its_header_without_big_memory(tmp_path):
    """A GIF of a few hundred bytes with a 16000 x 16000 canvas (2.4 GB when decoded) is refused before decoding."""
    bomb = gif(tmp_path / "bomb.gif", 3, canvas=(16000, 16000))
    assert bomb.stat().st_size < 1000
    done = run_python(
        f"""
        import json, resource
        from icreward.media import load_video
        from icreward.errors import MediaError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_video({str(bomb)!r}, num_frames=2, max_side=64)
            outcome = "loaded"
        except MediaError as e:
            outcome = str(e)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
        print(json.dumps({{"outcome": outcome, "grown_mb": grown / 1024}}))
        """
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(bomb) in result["outcome"]
    assert "16000x16000" in result["outcome"] and f"{media.MAX_VIDEO_FRAME_PIXELS:,}" in result["outcome"]
    assert "MAX_VIDEO_FRAME_PIXELS" in result["outcome"]
    assert result["grown_mb"] < 200, result  # decoding one frame of it would take over 1 GB


def test_video_pixel_limits_are_knobs_that_name_the_file(tmp_path, monkeypatch):
    video = mp4(tmp_path / "v.mp4", 8, size=(32, 48))  # 48 x 32 frames
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (48, 32), (i * 30, 0, 0)).save(folder / f"f{i}.png")
    array = tmp_path / "v.npy"
    np.save(array, np.zeros((8, 32, 48, 3), np.uint8))
    for path in (video, folder, array):
        monkeypatch.setattr(media, "MAX_VIDEO_FRAME_PIXELS", 48 * 32 - 1)
        with pytest.raises(MediaError, match=r"48x32 = 1,536 pixels, over the decompression-bomb limit of 1,535"):
            load_video(path, num_frames=4)
        monkeypatch.setattr(media, "MAX_VIDEO_FRAME_PIXELS", None)
        monkeypatch.setattr(media, "MAX_VIDEO_PIXELS", 48 * 32 * 3)  # fewer pixels than decoding 4 frames reads
        with pytest.raises(MediaError, match=r"frames of 48x32 to decode.*MAX_VIDEO_PIXELS") as err:
            load_video(path, num_frames=4)
        assert err.value.path == str(path)
        monkeypatch.setattr(media, "MAX_VIDEO_PIXELS", None)
        monkeypatch.setattr(media, "MAX_SAMPLED_PIXELS", 4 * 48 * 32 - 1)
        with pytest.raises(MediaError, match=r"4 frames sampled at 48x32 are 6,144 pixels.*max_side"):
            load_video(path, num_frames=4)
        assert load_video(path, num_frames=4, max_side=24).shape == (4, 3, 16, 24)  # the limit is on what is kept
        monkeypatch.setattr(media, "MAX_SAMPLED_PIXELS", None)
        assert load_video(path, num_frames=4).shape == (4, 3, 32, 48)


def test_the_default_video_limits():
    assert media.MAX_VIDEO_FRAME_PIXELS <= media.MAX_IMAGE_PIXELS  # never laxer than PIL's image limit
    assert media.MAX_VIDEO_FRAME_PIXELS >= 7680 * 4320  # 8K UHD frames still read
    assert media.MAX_VIDEO_PIXELS >= 30 * 60 * 1920 * 1080  # a minute of 1080p at 30 fps still reads
    assert media.MAX_SAMPLED_PIXELS >= media.MAX_FRAMES * 512 * 512  # the most frames at the scorers' max_side


# ---------------------------------------------------------------- files that are not regular files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifos_devices_and_folders_are_refused_at_once(tmp_path):
    """Every call runs in a subprocess with a hard timeout: a reader that opened a FIFO would block forever."""
    os.mkfifo(tmp_path / "pipe.mp4")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "link.mp4").symlink_to(tmp_path / "pipe.mp4")
    frames = tmp_path / "frames"
    frames.mkdir()
    os.mkfifo(frames / "f0.png")
    Image.new("RGB", (8, 8)).save(frames / "f1.png")
    (tmp_path / "folder.png").mkdir()
    cases = [
        ("load_video", tmp_path / "pipe.mp4", "is a FIFO"),
        ("load_image", tmp_path / "pipe.png", "is a FIFO"),
        ("load_video", tmp_path / "link.mp4", "is a FIFO"),
        ("load_video", frames, "is a FIFO"),
        ("load_image", tmp_path / "folder.png", "is a folder, not an image file"),
        ("load_image", tmp_path, "is a folder, not an image file"),
    ]
    if Path("/dev/zero").exists():
        cases += [("load_video", Path("/dev/zero"), "character device"), ("load_image", Path("/dev/zero"), "charac")]
    done = run_python(
        f"""
        import json
        from icreward.media import load_image, load_video
        from icreward.errors import MediaError
        for fn, path, _ in {[(fn, str(p), r) for fn, p, r in cases]!r}:
            try:
                {{"load_image": load_image, "load_video": load_video}}[fn](path)
                print(json.dumps([fn, path, "loaded"]), flush=True)
            except MediaError as e:
                print(json.dumps([fn, path, str(e)]), flush=True)
        """
    )
    assert done.returncode == 0, done.stderr
    outcomes = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(outcomes) == len(cases)
    for (fn, path, reason), (_, _, message) in zip(cases, outcomes, strict=True):
        assert reason in message, (fn, path, message)
        assert str(path) in message or str(frames / "f0.png") in message


def test_in_process_refusals_name_the_path(tmp_path):
    with pytest.raises(MediaError, match="not a valid path"):
        load_image("bad\0name.png")
    with pytest.raises(MediaError, match="no such file or folder"):
        load_video(tmp_path / "absent.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: file is empty"):
        load_video(tmp_path / "empty.mp4")
