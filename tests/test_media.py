import json
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from icreward import media
from icreward.errors import MediaError
from icreward.media import DEFAULT_BACKGROUND, FewFramesWarning, load_image, load_video, sample_indices, write_video

REAL_I2V = Path(__file__).parents[2] / "shared" / "real-i2v"


def save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def encode(path: Path, values: list[int], fmt: str, codec: str, pix_fmt: str = "yuv420p", size=(64, 48)) -> Path:
    """Encode flat frames, frame i filled with grey level `values[i]`, with PyAV."""
    w, h = size
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        for v in values:
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), v, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def grey_video(path: Path, n: int, step: int = 6) -> Path:
    """H.264 mp4 whose frame i is the flat grey level step * i, so a frame's brightness tells its index."""
    write_video(path, np.stack([np.full((48, 64, 3), step * i, np.uint8) for i in range(n)]))
    return path


def frame_indices(video: torch.Tensor, step: int = 6) -> list[int]:
    return [round(float(f.mean()) * 255 / step) for f in video]


# ---------------------------------------------------------------- images


def test_rgb_png_exact(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = load_image(save(Image.fromarray(arr), tmp_path / "a.png"))
    assert x.dtype == torch.float32 and x.shape == (3, 5, 7)
    torch.testing.assert_close(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_rgba_composited_on_white_exactly(tmp_path):
    arr = np.array([[[255, 0, 0, 128], [0, 0, 255, 0], [10, 20, 30, 255]]], np.uint8)  # (1, 3, 4)
    x = load_image(save(Image.fromarray(arr, "RGBA"), tmp_path / "a.png"))
    a = 128 / 255
    expected = torch.tensor([[1.0, 1.0, 10 / 255], [1 - a, 1.0, 20 / 255], [1 - a, 1.0, 30 / 255]]).view(3, 1, 3)
    torch.testing.assert_close(x, expected)
    black = load_image(tmp_path / "a.png", background=(0.0, 0.0, 0.0))
    torch.testing.assert_close(black[:, 0, 0], torch.tensor([a, 0.0, 0.0]))


def test_la_composited(tmp_path):
    arr = np.array([[[0, 0], [100, 255]]], np.uint8)  # (1, 2, LA)
    x = load_image(save(Image.fromarray(arr, "LA"), tmp_path / "a.png"))
    torch.testing.assert_close(x, torch.tensor([1.0, 100 / 255]).repeat(3, 1).view(3, 1, 2))


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    x = load_image(save(img, tmp_path / "a.png", transparency=0))
    torch.testing.assert_close(x[:, 0, 0], torch.ones(3))  # transparent index -> white background
    torch.testing.assert_close(x[:, 0, 1], torch.tensor([0.0, 1.0, 0.0]))
    opaque = load_image(save(img, tmp_path / "b.png"))
    torch.testing.assert_close(opaque[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_greyscale_and_one_bit(tmp_path):
    x = load_image(save(Image.new("L", (4, 3), 128), tmp_path / "l.png"))
    assert x.shape == (3, 3, 4)
    torch.testing.assert_close(x, torch.full((3, 3, 4), 128 / 255))
    bits = Image.new("1", (2, 1))
    bits.putpixel((1, 0), 1)
    y = load_image(save(bits, tmp_path / "b.png"))
    torch.testing.assert_close(y, torch.tensor([0.0, 1.0]).repeat(3, 1).view(3, 1, 2))


def test_sixteen_bit_scaled_not_clipped(tmp_path):
    png = save(Image.fromarray(np.full((4, 4), 65535 // 2, np.uint16)), tmp_path / "a.png")
    assert Image.open(png).mode == "I;16"
    torch.testing.assert_close(load_image(png), torch.full((3, 4, 4), 0.5), atol=1e-4, rtol=0)
    big_endian = Image.frombytes("I;16B", (4, 4), np.full((4, 4), 13107, ">u2").tobytes())  # 13107 = 65535 / 5
    tif = save(big_endian, tmp_path / "b.tif")
    assert Image.open(tif).mode == "I;16B"
    torch.testing.assert_close(load_image(tif), torch.full((3, 4, 4), 0.2), atol=1e-4, rtol=0)
    int32 = save(Image.fromarray(np.full((4, 4), 65535, np.int32)), tmp_path / "c.tif")
    assert Image.open(int32).mode == "I"
    torch.testing.assert_close(load_image(int32), torch.ones(3, 4, 4))


def test_float_mode(tmp_path):
    arr = np.array([[0.25, 2.0]], np.float32)
    x = load_image(save(Image.fromarray(arr, "F"), tmp_path / "a.tif"))
    torch.testing.assert_close(x, torch.tensor([0.25, 1.0]).repeat(3, 1).view(3, 1, 2))  # clipped to [0, 1]


def test_cmyk_jpeg_roughly_right(tmp_path):
    path = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "a.jpg", quality=95)  # red
    assert Image.open(path).mode == "CMYK"
    torch.testing.assert_close(load_image(path)[:, 8, 8], torch.tensor([1.0, 0.0, 0.0]), atol=0.05, rtol=0)


def test_ycbcr(tmp_path):
    path = save(Image.new("RGB", (8, 8), (0, 0, 255)).convert("YCbCr"), tmp_path / "a.tif")
    assert Image.open(path).mode == "YCbCr"
    torch.testing.assert_close(load_image(path)[:, 4, 4], torch.tensor([0.0, 0.0, 1.0]), atol=0.05, rtol=0)


@pytest.mark.parametrize(("orientation", "top"), [(6, "red"), (8, "blue")])
def test_exif_orientation(tmp_path, orientation, top):
    arr = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high: left half red, right half blue
    arr[:, :20, 0] = 255
    arr[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    x = load_image(save(Image.fromarray(arr), tmp_path / "a.jpg", exif=exif, quality=95))
    assert x.shape == (3, 40, 20)  # displayed upright: rotated a quarter turn
    red_on_top = x[0, 5, 10] > 0.8 and x[2, 5, 10] < 0.2
    assert red_on_top == (top == "red")


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = save(frames[0], tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    torch.testing.assert_close(load_image(path)[:, 4, 4], torch.tensor([1.0, 0.0, 0.0]))


@pytest.mark.parametrize("max_side", [None, 4])
def test_gif_video_colours_and_transparency(tmp_path, max_side):
    """GIF frames decode as BGRA: the colours come back in RGB order, transparent pixels on white, whether the frames
    are only reordered (at their own size) or scaled by FFmpeg."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    opaque = [Image.new("RGB", (8, 8), c) for c in colours]
    path = save(opaque[0], tmp_path / "opaque.gif", save_all=True, append_images=opaque[1:], duration=100)
    video = load_video(path, num_frames=3, max_side=max_side)  # (3, 3, h, w)
    assert video.shape[-2:] == ((8, 8) if max_side is None else (4, 4))
    torch.testing.assert_close(video[:, :, 1, 1], torch.tensor(colours, dtype=torch.float32) / 255, atol=0.02, rtol=0)
    holes = []
    for c in colours:
        frame = Image.new("P", (8, 8), 1)
        frame.putpalette([0, 0, 0, *c] + [0] * 762)
        frame.paste(0, (0, 0, 8, 4))  # top half: index 0, the transparent one
        holes.append(frame)
    path = save(holes[0], tmp_path / "holes.gif", save_all=True, append_images=holes[1:], transparency=0, disposal=2)
    video = load_video(path, num_frames=3, max_side=max_side)
    bottom, top = video[:, :, -1, 1], video[:, :, 0, 1]  # (3 frames, RGB)
    torch.testing.assert_close(top, torch.ones(3, 3), atol=0.02, rtol=0)  # transparent -> DEFAULT_BACKGROUND, white
    torch.testing.assert_close(bottom, torch.tensor(colours, dtype=torch.float32) / 255, atol=0.02, rtol=0)


@pytest.mark.parametrize("kept_bytes", [media.KEPT_PACKET_BYTES, 0])
def test_b_frames_come_back_in_presentation_order(tmp_path, monkeypatch, kept_bytes):
    """H.264 with B-frames stores frames out of order; the sampled frames are those of presentation order, whether
    the packets counted are kept for decoding or (over KEPT_PACKET_BYTES) read again from the file."""
    monkeypatch.setattr(media, "KEPT_PACKET_BYTES", kept_bytes)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64, 3))
    path = tmp_path / "b.mp4"
    options = {"bf": "3", "x264-params": "bframes=3:b-adapt=0:keyint=30:scenecut=0"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8, options=options)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(24):
            frame = np.clip(np.roll(base, i, axis=1) * 0.5 + 8 * i, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        pts = [p.pts for p in container.demux(video=0) if p.size]
        assert pts != sorted(pts)  # stored out of presentation order
    with av.open(str(path)) as container:
        reference = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    video = load_video(path, num_frames=5)
    expected = torch.stack([torch.from_numpy(reference[i]).permute(2, 0, 1) for i in sample_indices(24, 5)]) / 255
    torch.testing.assert_close(video, expected.float(), atol=0, rtol=0)


def test_rgba_video_with_hidden_colour_under_transparency_is_composited(tmp_path):
    """An RGBA stream (PNG in MOV) whose transparent pixels hold red: they come back as the white background."""
    path = tmp_path / "alpha.mov"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=8)
        stream.width, stream.height, stream.pix_fmt = 8, 8, "rgba"
        for _ in range(3):
            rgba = np.zeros((8, 8, 4), np.uint8)
            rgba[..., 0] = 255  # red everywhere
            rgba[4:, :, 3] = 255  # opaque only in the bottom half
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgba, format="rgba")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    video = load_video(path, num_frames=3)
    torch.testing.assert_close(video[:, :, 0, 0], torch.ones(3, 3))  # transparent: white, exactly
    torch.testing.assert_close(video[:, :, -1, 0], torch.tensor([[1.0, 0.0, 0.0]] * 3))  # opaque red


def test_max_side_shrinks_keeping_aspect(tmp_path):
    arr = np.full((300, 400, 3), 200, np.uint8)
    for name in ["a.png", "a.jpg"]:
        x = load_image(save(Image.fromarray(arr), tmp_path / name), max_side=100)
        assert x.shape == (3, 75, 100)
        torch.testing.assert_close(x.mean(), torch.tensor(200 / 255), atol=0.02, rtol=0)
    assert load_image(tmp_path / "a.png", max_side=1000).shape == (3, 300, 400)  # never enlarged


def test_decompression_bomb_rejected_without_decoding(tmp_path):
    path = save(Image.new("1", (10_000, 10_000)), tmp_path / "bomb.png")
    start = time.perf_counter()
    with pytest.raises(MediaError, match=r"10000x10000 = 100,000,000 pixels.*limit of 89,478,485") as err:
        load_image(path)
    assert time.perf_counter() - start < 1.0
    assert "bomb.png" in str(err.value) and "MAX_IMAGE_PIXELS" in str(err.value)


def test_max_image_pixels_is_the_knob(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (20, 20)), tmp_path / "a.png")
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 399)
    with pytest.raises(MediaError, match="20x20 = 400 pixels"):
        load_image(path)
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 400)
    assert load_image(path).shape == (3, 20, 20)


def test_image_errors_name_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    png = save(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)), tmp_path / "t.png")
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    cases = {"missing.png": "no such file", "empty.png": "empty", "text.png": "not an image", "cut.png": "truncated"}
    for name, reason in cases.items():
        with pytest.raises(MediaError, match=reason) as err:
            load_image(tmp_path / name)
        assert err.value.path == str(tmp_path / name) and name in str(err.value)


# ---------------------------------------------------------------- sampling


def test_sample_indices():
    assert sample_indices(40, 5) == [0, 10, 20, 29, 39]
    assert sample_indices(16, 16) == list(range(16))
    assert sample_indices(3, 5) == [0, 0, 1, 2, 2]  # fewer frames than asked: indices repeat
    assert sample_indices(1, 3) == [0, 0, 0]
    assert sample_indices(100, 1) == [0]
    assert sample_indices(1000, 16) == sample_indices(1000, 16)
    for n, t in [(2, 16), (17, 16), (1000, 7)]:
        idx = sample_indices(n, t)
        assert len(idx) == t and idx[0] == 0 and idx[-1] == n - 1 and idx == sorted(idx)
    with pytest.raises(ValueError):
        sample_indices(0, 4)


# ---------------------------------------------------------------- videos


def test_sampling_picks_the_right_frames(tmp_path):
    video = load_video(grey_video(tmp_path / "v.mp4", 40), num_frames=5)
    assert video.shape == (5, 3, 48, 64) and video.dtype == torch.float32
    assert frame_indices(video) == sample_indices(40, 5)


def test_short_video_repeats_frames(tmp_path):
    with pytest.warns(FewFramesWarning, match=r"v\.mp4: video has 3 frames, fewer than the 5 sampled"):
        video = load_video(grey_video(tmp_path / "v.mp4", 3, step=60), num_frames=5)
    assert frame_indices(video, step=60) == [0, 0, 1, 2, 2]
    assert torch.equal(video[0], video[1]) and torch.equal(video[3], video[4])


@pytest.mark.parametrize(
    ("name", "fmt", "codec", "pix_fmt"),
    [
        ("v.mp4", "mp4", "libx264", "yuv420p"),
        ("v.mkv", "matroska", "libx264", "yuv420p"),
        ("v.avi", "avi", "mpeg4", "yuv420p"),
        ("v.mov", "mov", "libx264", "yuv420p"),
        ("v.webm", "webm", "libvpx-vp9", "yuv420p"),
        ("v.gif", "gif", "gif", "rgb8"),
    ],
)
def test_containers(tmp_path, name, fmt, codec, pix_fmt):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = encode(tmp_path / name, [24 * i for i in range(10)], fmt, codec, pix_fmt)
    video = load_video(path, num_frames=4)
    assert video.shape == (4, 3, 48, 64)
    assert 0 <= video.min() and video.max() <= 1
    assert frame_indices(video, step=24) == sample_indices(10, 4)
    assert load_video(path, num_frames=4, max_side=32).shape == (4, 3, 24, 32)


def test_video_errors_name_the_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello, this is not a video\n" * 20)
    full = grey_video(tmp_path / "full.mp4", 40)
    (tmp_path / "cut.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    grey_video(tmp_path / "one.mp4", 1)
    with wave.open(str(tmp_path / "sound.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 800)
    (tmp_path / "no_frames").mkdir()
    cases = {
        "missing.mp4": "no such file",
        "empty.mp4": "empty",
        "text.mp4": "not a video",
        "cut.mp4": "truncated",
        "one.mp4": "video has 1 frame; at least 2 are needed to judge consistency over time",
        "sound.wav": "no video stream",
        "no_frames": "no frame images",
    }
    for name, reason in cases.items():
        with pytest.raises(MediaError, match=reason) as err:
            load_video(tmp_path / name)
        assert err.value.path == str(tmp_path / name) and name in str(err.value)
    assert load_video(tmp_path / "one.mp4", num_frames=2, min_frames=1).shape == (2, 3, 48, 64)


def test_truncated_faststart_mp4(tmp_path):
    """With the index at the front the cut file still opens; decoding then runs out of data."""
    rng = np.random.default_rng(0)
    with av.open(str(tmp_path / "fast.mp4"), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(40):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = (tmp_path / "fast.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.mp4: truncated or corrupt"):
        load_video(tmp_path / "cut.mp4")


def test_frame_folder_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        save(Image.new("RGB", (16, 12), (20 * i,) * 3), folder / f"frame_{i + 1}.png")
    (folder / "notes.txt").write_text("not a frame")
    video = load_video(folder, num_frames=4)
    assert video.shape == (4, 3, 12, 16)
    assert frame_indices(video, step=20) == sample_indices(12, 4)  # frame_10 sorted after frame_9, not frame_1
    assert load_video(folder, num_frames=4, max_side=8).shape == (4, 3, 6, 8)
    save(Image.new("RGB", (8, 8)), folder / "frame_13.png")
    with pytest.raises(MediaError, match="frame_13.png: frame is 8x8 but frame_1.png is 16x12"):
        load_video(folder, num_frames=4)


@pytest.mark.parametrize("layout", ["thwc", "tchw"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_npy(tmp_path, layout, dtype):
    values = np.arange(10, dtype=np.float64) / 10  # frame i is flat i / 10
    arr = np.broadcast_to(values[:, None, None, None], (10, 6, 8, 3))
    arr = (arr * 255).round().astype(np.uint8) if dtype == np.uint8 else arr.astype(dtype)
    if layout == "tchw":
        arr = arr.transpose(0, 3, 1, 2)
    np.save(tmp_path / "v.npy", np.ascontiguousarray(arr))
    video = load_video(tmp_path / "v.npy", num_frames=4)
    assert video.shape == (4, 3, 6, 8) and video.dtype == torch.float32
    expected = torch.tensor(values[sample_indices(10, 4)], dtype=torch.float32)
    torch.testing.assert_close(video.mean(dim=(1, 2, 3)), expected, atol=3e-3, rtol=0)
    assert load_video(tmp_path / "v.npy", num_frames=4, max_side=4).shape == (4, 3, 3, 4)


def test_npy_errors(tmp_path):
    np.save(tmp_path / "shape.npy", np.zeros((4, 8, 8), np.uint8))
    np.save(tmp_path / "dtype.npy", np.zeros((4, 8, 8, 3), np.int16))
    np.save(tmp_path / "range.npy", np.full((4, 8, 8, 3), -1.0, np.float32))
    cases = {"shape.npy": "got shape", "dtype.npy": "got dtype int16", "range.npy": r"must be in \[0, 1\]"}
    for name, reason in cases.items():
        with pytest.raises(MediaError, match=reason) as err:
            load_video(tmp_path / name)
        assert name in str(err.value)


def test_real_i2v_pairs():
    manifest = REAL_I2V / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip(f"no real I2V data at {REAL_I2V}")
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    assert records
    for record in records:
        image = load_image(REAL_I2V / record["image"])
        video = load_video(REAL_I2V / record["video"], num_frames=16)
        assert image.ndim == 3 and image.shape[0] == 3, record["id"]
        assert video.shape[:2] == (16, 3) and video.shape[2] * video.shape[3] > 0, record["id"]
        for x in (image, video):
            assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and x.std() > 0.01, record["id"]


def test_default_background_is_white():
    assert DEFAULT_BACKGROUND == (1.0, 1.0, 1.0)
