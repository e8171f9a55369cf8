"""Handcrafted metrics: each against a naive reference, plus the properties every reward must have."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import icreward
from icreward.errors import BackboneError
from icreward.metrics.base import crop_to_aspect, match_image_to_frames, resize_to
from icreward.metrics.color_hist import ColorHistogram
from icreward.metrics.vbench import VBENCH_SUBJECT_PREPROCESS, VBENCH_WEIGHTS
from icreward.metrics.vbench_offline import LUMA, HOGEmbedder
from icreward.transforms import preprocess

OFFLINE = [
    "color-hist",
    "first-frame-mse",
    "first-frame-psnr",
    "first-frame-ssim",
    "vbench-i2v-hog",
    "vbench-i2v-pixel",
]
NEEDS_WEIGHTS = ["clip-i", "vbench-i2v-background", "vbench-i2v-subject"]
# Metrics built on a backbone, run here on the random tiny-vit (their real backbones need downloaded weights).
TINY_BACKBONE = {"vbench-i2v-subject": {"backbone": "tiny-vit"}, "clip-i": {"backbone": "tiny-vit"}}
ALL_RUNNABLE = OFFLINE + list(TINY_BACKBONE)


def photo(name: str, side: int = 96) -> torch.Tensor:
    """A skimage sample photo, centre-cropped square and resized: `[3, side, side]` in [0, 1]."""
    x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255
    return resize_to(crop_to_aspect(x, 1, 1), (side, side)).clamp(0, 1)


def corrupt(image: torch.Tensor, other: torch.Tensor, severity: float, frames: int = 6, seed: int = 0):
    """A video `[T, 3, H, W]` drifting from `image` towards `other`: blended in, shifted and noised by `severity`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(frames):
        moved = torch.roll(image, shifts=round(severity * 4 * t), dims=-1)
        noise = severity * 0.2 * torch.randn(image.shape, generator=g)
        out.append(((1 - severity) * moved + severity * other + noise).clamp(0, 1))
    return torch.stack(out)


def load(name: str, **kwargs):
    return icreward.load(f"metric:{name}", **{**TINY_BACKBONE.get(name, {}), **kwargs})


@pytest.fixture(scope="module")
def pair():
    """Image `[2, 3, 96, 96]` and a mildly corrupted video `[2, 6, 3, 96, 96]`."""
    image = torch.stack([photo("astronaut"), photo("coffee")])
    video = torch.stack([corrupt(image[0], photo("chelsea"), 0.2), corrupt(image[1], photo("rocket"), 0.3, seed=1)])
    return image, video


def vbench_loop(image_feat: np.ndarray, frame_feats: list[np.ndarray], weights) -> float:
    """VBench's per-video loop, in plain Python."""

    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    conformity, consecutive = [], []
    for i, f in enumerate(frame_feats):
        if i:
            consecutive.append(max(0.0, cos(frame_feats[i - 1], f)))
        conformity.append(max(0.0, cos(image_feat, f)))
    w_image, w_mean, w_min = weights
    return w_image * max(conformity) + w_mean * float(np.mean(consecutive)) + w_min * min(consecutive)


def test_offline_listing():
    assert set(OFFLINE) <= set(icreward.list_metrics(offline_only=True))
    assert not set(NEEDS_WEIGHTS) & set(icreward.list_metrics(offline_only=True))
    assert set(OFFLINE + NEEDS_WEIGHTS) <= set(icreward.list_metrics())


@pytest.mark.parametrize("weights", ["vbench", "vbench-early"])
def test_vbench_subject_matches_a_frame_loop(pair, weights):
    image, video = pair
    metric = load("vbench-i2v-subject", weights=weights)
    backbone, cfg = metric.embedder.backbone, metric.embedder.preprocess_config

    def feat(x):
        return backbone(preprocess(x[None], cfg))["cls"][0].detach().numpy()

    with torch.no_grad():
        got = metric(image, video)
        for b in range(2):
            ref = vbench_loop(feat(image[b]), [feat(f) for f in video[b]], VBENCH_WEIGHTS[weights])
            assert got[b].item() == pytest.approx(ref, abs=1e-5)


def test_vbench_pixel_matches_a_frame_loop(pair):
    image, video = pair

    def feat(x):  # 32x32 thumbnail, mean-centred, flattened (normalising does not change a cosine)
        v = resize_to(x, (32, 32)).numpy().astype(np.float64).ravel()
        return v - v.mean()

    got = load("vbench-i2v-pixel")(image, video)
    for b in range(2):
        ref = vbench_loop(feat(image[b]), [feat(f) for f in video[b]], VBENCH_WEIGHTS["vbench"])
        assert got[b].item() == pytest.approx(ref, abs=1e-5)


def naive_hog(x: torch.Tensor, cell: int, bins: int, eps: float = 1e-3) -> np.ndarray:
    """Per-pixel loops with atan2: orientation votes by a von Mises kernel, cell averages, L2-Hys 2x2 blocks."""
    grey = np.tensordot(np.array(LUMA), x.numpy().astype(np.float64), axes=1)
    size = grey.shape[0]
    padded = np.pad(grey, 1, mode="edge")
    kappa = math.log(2) / (1 - math.cos(math.pi / bins))
    centres = [(k + 0.5) * math.pi / bins for k in range(bins)]
    n_cells = size // cell
    cells = np.zeros((bins, n_cells, n_cells))
    for i in range(size):
        for j in range(size):
            gx = padded[i + 1, j + 2] - padded[i + 1, j]
            gy = padded[i + 2, j + 1] - padded[i, j + 1]
            sq = gx * gx + gy * gy
            theta = math.atan2(gy, gx)
            shrink = sq / (sq + eps * eps)  # the torch version's doubled-angle vector is shortened by this
            logits = [kappa * shrink * math.cos(2 * (theta - c)) for c in centres]
            top = max(logits)
            w = np.exp(np.array(logits) - top)
            cells[:, i // cell, j // cell] += math.sqrt(sq + eps * eps) * w / w.sum() / cell**2
    feats = []
    for i in range(n_cells - 1):
        for j in range(n_cells - 1):
            v = np.concatenate([cells[:, i, j], cells[:, i + 1, j], cells[:, i, j + 1], cells[:, i + 1, j + 1]])
            v = np.minimum(v / max(np.linalg.norm(v), eps), 0.2)
            feats.append(v / max(np.linalg.norm(v), eps))
    return np.stack(feats, axis=1).ravel()  # block-major like the torch version: (4 * bins, blocks) flattened


def test_hog_embedding_matches_naive_loops():
    x = photo("astronaut", side=24)
    got = HOGEmbedder(size=24, cell=8, bins=9).encode(x[None])[0].numpy()
    np.testing.assert_allclose(got, naive_hog(x, cell=8, bins=9), atol=1e-5)


def test_vbench_hog_matches_a_frame_loop(pair):
    image, video = pair
    embedder = HOGEmbedder()
    got = load("vbench-i2v-hog")(image, video)
    for b in range(2):
        feats = embedder.encode(embedder.prepare(torch.cat([image[b : b + 1], video[b]]))).numpy()
        ref = vbench_loop(feats[0], list(feats[1:]), VBENCH_WEIGHTS["vbench"])
        assert got[b].item() == pytest.approx(ref, abs=1e-5)


def test_clip_i_matches_a_frame_loop(pair):
    image, video = pair
    metric = load("clip-i")
    backbone, cfg = metric.embedder.backbone, metric.embedder.preprocess_config
    with torch.no_grad():
        got = metric(image, video)
        for b in range(2):
            img = backbone(preprocess(image[b : b + 1], cfg))["cls"]
            frames = [backbone(preprocess(f[None], cfg))["cls"] for f in video[b]]
            ref = np.mean([F.cosine_similarity(img, f).item() for f in frames])
            assert got[b].item() == pytest.approx(ref, abs=1e-5)


def test_first_frame_metrics_match_skimage(pair):
    image, video = pair
    image = F.interpolate(image, size=(120, 120), mode="bilinear")  # a larger image: resized to the frames
    ssim = load("first-frame-ssim")(image, video)
    psnr = load("first-frame-psnr")(image, video)
    mse = load("first-frame-mse")(image, video)
    matched = match_image_to_frames(image, video[:, 0])
    for b in range(2):
        ref, frame = matched[b].permute(1, 2, 0).numpy(), video[b, 0].permute(1, 2, 0).numpy()
        kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=2)
        assert ssim[b].item() == pytest.approx(structural_similarity(ref, frame, **kw), abs=1e-4)
        assert psnr[b].item() == pytest.approx(peak_signal_noise_ratio(ref, frame, data_range=1), abs=1e-3)
        assert mse[b].item() == pytest.approx(-np.mean((ref - frame) ** 2), abs=1e-6)


@pytest.mark.parametrize("joint", [True, False])
def test_color_hist_matches_hard_numpy_histograms(pair, joint):
    image, video = F.interpolate(pair[0], size=(64, 64), mode="area"), pair[1][:, :, :, 16:80, 16:80]
    got = ColorHistogram(bandwidth=1e-3, joint=joint)(image, video)

    def hist(x):
        px = x.permute(1, 2, 0).reshape(-1, 3).numpy().astype(np.float64)
        if joint:
            return np.histogramdd(px, bins=8, range=[(0, 1)] * 3)[0].ravel() / len(px)
        return np.stack([np.histogram(px[:, c], bins=8, range=(0, 1))[0] / len(px) for c in range(3)])

    for b in range(2):
        h_image = hist(image[b])
        overlaps = [np.minimum(h_image, hist(f)).sum() / (1 if joint else 3) for f in video[b]]
        assert got[b].item() == pytest.approx(np.mean(overlaps), abs=2e-3)


@pytest.mark.parametrize("name", ALL_RUNNABLE)
def test_copies_of_the_image_score_the_maximum(name):
    image = torch.stack([photo("astronaut", 64), photo("coffee", 64)])
    video = image[:, None].repeat(1, 5, 1, 1, 1)
    expected = {"first-frame-mse": 0.0, "first-frame-psnr": 100.0}.get(name, 1.0)
    with torch.no_grad():
        torch.testing.assert_close(load(name)(image, video), torch.full((2,), expected), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", OFFLINE)
def test_strong_corruption_scores_lower_than_mild(name):
    image, other = photo("astronaut"), photo("chelsea")
    mild, strong = corrupt(image, other, 0.1), corrupt(image, other, 0.6)
    scores = load(name)(image[None].repeat(2, 1, 1, 1), torch.stack([mild, strong]))
    assert scores[1] < scores[0]


@pytest.mark.parametrize("name", ALL_RUNNABLE)
def test_a_batch_equals_each_alone(name, pair):
    image, video = pair
    metric = load(name)
    with torch.no_grad():
        both = metric(image, video)
        alone = torch.cat([metric(image[b : b + 1], video[b : b + 1]) for b in range(2)])
    torch.testing.assert_close(both, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL_RUNNABLE)
def test_gradients_reach_the_video_pixels(name, pair):
    image, video = pair
    image, video = image.clone().requires_grad_(), video.clone().requires_grad_()
    load(name)(image, video).sum().backward()
    assert video.grad is not None and torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_RUNNABLE)
@pytest.mark.parametrize("image_size", [(150, 200), (128, 128)])
def test_image_and_video_of_different_sizes(name, image_size):
    image = resize_to(photo("astronaut", 200)[None], image_size)  # 3:4 or 1:1 image for a 16:9 video
    video = resize_to(corrupt(photo("astronaut", 200), photo("chelsea", 200), 0.1, frames=4), (72, 128))[None]
    with torch.no_grad():
        scores = load(name)(image, video)
    assert scores.shape == (1,) and torch.isfinite(scores).all()


def test_single_frame_and_bad_shapes():
    image = photo("astronaut", 64)[None]
    assert load("vbench-i2v-pixel")(image, image[:, None]).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="video"):
        load("vbench-i2v-pixel")(image, image)


def test_subject_uses_vbench_preprocessing_only_with_its_own_backbone(monkeypatch):
    import icreward.metrics.base as base

    monkeypatch.setattr(base, "build_backbone", lambda spec, **kw: icreward.backbones.build_backbone("tiny-vit"))
    assert load("vbench-i2v-subject", backbone="hf:facebook/dino-vitb16").embedder.preprocess_config == (
        VBENCH_SUBJECT_PREPROCESS
    )
    tiny = load("vbench-i2v-subject")
    assert tiny.embedder.preprocess_config == tiny.embedder.backbone.preprocess_config


def test_background_backbone_is_configurable_and_dreamsim_is_optional(pair):
    image, video = pair
    scores = icreward.load("metric:vbench-i2v-background", backbone="tiny-vit")(image, video)
    assert scores.shape == (2,)
    try:
        import dreamsim  # noqa: F401
    except ImportError:
        with pytest.raises(BackboneError, match="pip install dreamsim"):
            icreward.load("metric:vbench-i2v-background")


def test_subject_end_to_end_on_a_tiny_hf_dinov2(tmp_path, pair):
    import transformers as T

    config = T.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            image_size=32, patch_size=8)  # fmt: skip
    T.Dinov2Model(config).save_pretrained(tmp_path)
    processor = {"size": {"shortest_edge": 36}, "crop_size": {"height": 32, "width": 32}, "resample": 3}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    metric = icreward.load("metric:vbench-i2v-subject", backbone=f"hf:{tmp_path}")
    assert metric.embedder.preprocess_config.resize == 36 and metric.embedder.preprocess_config.crop == 32
    image, video = pair
    with torch.no_grad():
        scores = metric(image, video)
        same = metric(image, image[:, None].repeat(1, 4, 1, 1, 1))
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1 + 1e-6)).all()
    torch.testing.assert_close(same, torch.ones(2), atol=1e-5, rtol=0)
    assert metric.score(image[0], video[0]) == pytest.approx(scores[0].item(), abs=1e-5)
