"""`icreward explain` and the explain API: shapes, ranges, determinism, a local corruption found where and when it
happens, the CLI's files, the metrics that explain and those that do not, and the localisation scores."""

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import icreward
from icreward.cli import main
from icreward.explain import ExplainError, Explanation, explain, explain_files, find_onset
from icreward.media import load_image, load_video, write_video

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-i2v"
PATCH_FROM = 8  # frame from which the corruption is pasted in


@pytest.fixture(scope="module")
def model():
    return icreward.load("default")


def _scene(t: int = 16, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """A held-out procedural scene and a consistent video of it (seeded)."""
    from icreward.evaluation.localisation import consistent_videos

    return consistent_videos(1, seed=7, frames=t, size=size)[0]


def _corrupt(video: torch.Tensor, start: int = PATCH_FROM) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """`video` with a 40 x 40 px block of seeded coloured noise pasted into its top-left ninth from frame `start` on."""
    h, w = video.shape[-2:]
    rows, cols = slice(h // 16, h // 16 + h * 5 // 16), slice(w // 16, w // 16 + w * 5 // 16)
    noise = torch.rand(3, rows.stop - rows.start, cols.stop - cols.start, generator=torch.Generator().manual_seed(0))
    out = video.clone()
    out[start:, :, rows, cols] = noise
    return out, (rows, cols)


def test_shapes_ranges_and_determinism(model):
    image, video = _scene(t=6, size=64)
    first, again = explain(model, image, video), model.explain(image, video)
    assert isinstance(first, Explanation)
    assert first.curve.shape == (6,) and first.maps.shape == (6, 16, 16)
    assert 0 <= float(first.maps.min()) and float(first.maps.max()) <= 1
    assert torch.equal(first.curve, again.curve) and torch.equal(first.maps, again.maps)
    assert first.frame_indices == list(range(6)) and first.times is None
    assert set(first.heads) == {"consistency", "motion", "text", "guidance"} and first.heads["text"] is None
    assert first.reward == pytest.approx(model.score(image, video), abs=1e-5)
    record = json.loads(json.dumps(first.to_json(grid=8)))
    assert len(record["maps"]) == 6 and len(record["maps"][0]) == 8 and len(record["maps"][0][0]) == 8
    assert record["summary"] == first.summary and len(record["curve"]) == 6
    # the curve is each frame judged alone: a frame's value is the reward of a still video of that frame
    with torch.no_grad():
        still = model(image[None], video[3][None, None].expand(1, 2, -1, -1, -1))
    assert float(first.curve[3]) == pytest.approx(float(still), abs=1e-4)


def test_value_range_and_bad_tensors(model):
    image, video = _scene(t=4, size=64)
    a = explain(model, image, video)
    b = explain(model, image * 2 - 1, video * 2 - 1, value_range="-1,1")
    assert torch.allclose(a.curve, b.curve, atol=1e-3)  # (x * 2 - 1 + 1) / 2 rounds
    with pytest.raises(icreward.interface.InputError, match="channels"):
        explain(model, image, video.permute(0, 2, 3, 1))


def _check_local(explanation: Explanation, where: tuple[slice, slice], size: tuple[int, int]) -> None:
    """The map's highest cell in every frame from PATCH_FROM on lies in the pasted block (one cell of slack), and
    the onset is within 2 frames of PATCH_FROM."""
    maps = explanation.maps
    side = maps.shape[-1]
    rows, cols = where
    cell_h, cell_w = size[0] / side, size[1] / side
    lo_r, hi_r = rows.start / cell_h - 1, rows.stop / cell_h
    lo_c, hi_c = cols.start / cell_w - 1, cols.stop / cell_w
    for t in range(PATCH_FROM, maps.shape[0]):
        r, c = divmod(int(maps[t].flatten().argmax()), side)
        assert lo_r <= r <= hi_r and lo_c <= c <= hi_c, f"frame {t}: map peaks at cell {(r, c)}"
    assert explanation.onset is not None and abs(explanation.onset - PATCH_FROM) <= 2, explanation.curve
    assert explanation.region == "top-left"
    assert "top-left" in explanation.summary


@pytest.mark.slow
def test_a_local_corruption_is_found_where_and_when_it_happens(model):
    image, video = _scene()
    corrupted, where = _corrupt(video)
    found = explain(model, image, corrupted)
    _check_local(found, where, video.shape[-2:])
    assert explain(model, image, video).maps[PATCH_FROM:].mean() < found.maps[PATCH_FROM:].mean()


@pytest.mark.slow
@pytest.mark.skipif(not (REAL / "girl3.gif").is_file(), reason="the real I2V pairs (shared/real-i2v) are not here")
def test_a_local_corruption_of_a_real_clip(model):
    """girl3: a real I2V clip that stays close to its image (explain finds no drift in it), so the pasted block is
    the change to find; in clips that drift themselves (walk0, explode0) the block competes with their own drift."""
    image = load_image(REAL / "girl3.jpeg", max_side=model.max_side)
    video = load_video(REAL / "girl3.gif", num_frames=16, max_side=model.max_side)
    assert explain(model, image, video).onset is None
    corrupted, where = _corrupt(video)
    _check_local(explain(model, image, corrupted), where, video.shape[-2:])


def test_maps_of_a_wide_video_cover_the_frame_the_model_sees(model):
    """A 2:1 video: the model sees its centre square; the map spans the whole frame, 0 outside that square."""
    image, video = _scene(t=4, size=64)
    wide = torch.cat([video, video.flip(-1)], -1)  # (T, 3, 64, 128)
    found = explain(model, torch.cat([image, image.flip(-1)], -1), wide)
    assert found.maps.shape == (4, 16, 32)
    assert float(found.maps[:, :, :8].max()) == 0 and float(found.maps[:, :, -8:].max()) == 0


def test_find_onset_rules():
    flat = torch.tensor([5.0, 2.0, 2.0, 1.98, 2.01, 2.0])
    assert find_onset(flat) is None  # no fall
    falling = torch.tensor([5.0, 2.0, 2.0, 1.9, 0.5, 0.2])
    assert find_onset(falling) == 4  # 70% of the 1.8 fall from frame 1 is first reached at frame 4
    assert find_onset(falling + 3) is None  # every frame reads above DRIFT_LEVEL: motion, not drift
    assert find_onset(falling + 3, level=None) == 4
    assert find_onset(flat - 2) == 1  # unlike the image from frame 1 on: drifts from there, though it never falls


@pytest.fixture()
def media(tmp_path):
    image, video = _scene(t=8, size=64)
    corrupted, _ = _corrupt(video, start=4)
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "img.png")
    for name, v in (("clean", video), ("corrupt", corrupted)):
        write_video(tmp_path / f"{name}.mp4", (v.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom but not a video")
    return tmp_path


def _check_outputs(folder: Path, frames: int) -> dict:
    record = json.loads((folder / "curve.json").read_text())
    assert len(record["curve"]) == frames and len(record["maps"]) == frames and record["summary"]
    assert record["times"] is not None and record["times"][1] == pytest.approx(1 / 8)  # write_video's 8 fps
    for name in ("curve.png", "strip.png"):
        with Image.open(folder / name) as png:
            png.load()
            assert png.width > 100
    with av.open(str(folder / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(stream)) == frames
    return record


def test_cli_writes_every_file(media, capsys):
    out = media / "out"
    args = ["explain", "--image", str(media / "img.png"), "--video", str(media / "corrupt.mp4"), "--out", str(out)]
    assert main([*args, "--num-frames", "8"]) == 0
    summary = capsys.readouterr().out.strip()
    record = _check_outputs(out, 8)
    assert record["summary"] == summary
    assert sorted(p.name for p in out.iterdir()) == ["curve.json", "curve.png", "overlay.mp4", "strip.png"]
    assert main([*args, "--num-frames", "8"]) == 0  # an earlier explain output is replaced


def test_cli_manifest_writes_a_subfolder_per_record(media, capsys):
    lines = [
        {"id": "clean", "image": "img.png", "video": "clean.mp4"},
        {"id": "corrupt", "image": "img.png", "video": "corrupt.mp4"},
        {"id": "broken", "image": "img.png", "video": "broken.mp4"},
    ]
    manifest = media / "m.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = media / "explained"
    code = main(["explain", "--manifest", str(manifest), "--out", str(out), "--num-frames", "8", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1  # one record failed, the others were written
    assert "broken.mp4" in captured.err and "clean:" in captured.out and "corrupt:" in captured.out
    _check_outputs(out / "clean", 8)
    _check_outputs(out / "corrupt", 8)
    index = [json.loads(x) for x in (out / "explain.jsonl").read_text().splitlines()]
    assert [e["id"] for e in index] == ["clean", "corrupt", "broken"]
    assert "broken.mp4" in index[2]["error"] and not (out / "broken").exists()


def test_cli_errors_are_one_line_naming_the_file(media, capsys):
    out = media / "o"
    code = main(["explain", "--image", str(media / "img.png"), "--video", str(media / "broken.mp4"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "broken.mp4" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    code = main(["explain", "--image", str(media / "img.png"), "--video", str(media / "clean.mp4"), "--out", str(out),
                 "--model", "metric:dynamic-degree"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "dynamic" in err and "explain with" in err


def test_metrics_explain_where_defined(media):
    image, video = _scene(t=6, size=64)
    corrupted, _ = _corrupt(video, start=3)
    mse = icreward.load("metric:first-frame-mse").explain(image, corrupted)
    assert mse.maps is not None and mse.maps.shape == (6, 64, 64) and float(mse.maps.max()) <= 1
    assert mse.curve.shape == (6,) and float(mse.curve[0]) == pytest.approx(0, abs=1e-6)  # frame 0 is the image
    assert mse.maps[3:, :8, :8].mean() > mse.maps[3:, -8:, -8:].mean()  # brighter where the block was pasted
    hist = icreward.load("metric:color-hist").explain(image, corrupted)
    assert hist.maps is None and hist.curve.shape == (6,) and hist.region == "none"
    json.dumps(hist.to_json())
    with pytest.raises(ExplainError, match="explain with"):
        icreward.load("metric:dynamic-degree").explain(image, corrupted)


def test_explain_files_decodes_each_video_and_times_its_frames(model, media):
    found = explain_files(model, media / "img.png", [media / "clean.mp4", media / "corrupt.mp4"], num_frames=8)
    assert len(found) == 2 and all(e.curve.shape == (8,) for e in found)
    assert found[0].frame_indices == list(range(8)) and found[0].times[-1] == pytest.approx(7 / 8)
    assert found[1].maps[4:].mean() > found[0].maps[4:].mean()


def test_masks_of_a_local_failure_and_the_scores():
    from icreward.evaluation import localisation as L

    (case,) = L.local_cases(1, seed=5)
    f = case.failure
    assert f.is_local and f.onset >= 1 and not f.mask[0].any() and f.mask[f.onset].any()
    assert L.auroc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([False, False, True, True])) == 1.0
    assert L.auroc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([False, False, True, True])) == 0.0
    truth = f.mask.float()
    pointing, area = L.score_map(L.to_cells(truth, 16), f.mask, f.onset)  # the mask itself as the map
    assert pointing == 1.0 and area > 0.95
    flipped = L.score_map(1 - L.to_cells(truth, 16), f.mask, f.onset)
    assert flipped[1] < 0.1


@pytest.mark.parametrize("kind", ["mlp", "icreward-attention"])
def test_every_learned_model_explains(kind):
    from icreward.models import ICRewardConfig, ICRewardModel, MLPRewardConfig, MLPRewardModel

    torch.manual_seed(0)
    if kind == "mlp":
        scorer = MLPRewardModel(MLPRewardConfig(backbone="tiny-vit"))
    else:
        scorer = ICRewardModel(ICRewardConfig(backbone="tiny-vit", d_model=16, heads=2, depth=1))
    image, video = torch.rand(3, 32, 32), torch.rand(4, 3, 32, 32)
    found = scorer.eval().explain(image, video)
    assert found.curve.shape == (4,) and found.maps.shape == (4, 8, 8)
    assert torch.isfinite(found.curve).all() and 0 <= float(found.maps.min()) <= float(found.maps.max()) <= 1
