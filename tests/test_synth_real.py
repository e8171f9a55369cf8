"""Real imagery sources (library photos with emoji sprites, real clips) and the identity / structure failure modes
of `icreward synth`; the default config's hash, plan and files stay what they were before these were added."""

import hashlib
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from PIL import Image

from icreward.cli import main
from icreward.errors import IcrewardError
from icreward.synth import FAILURE_MODES, SynthConfig, generate, render_video
from icreward.synth import real_sources as rs
from icreward.synth.dataset import config_hash, config_record
from icreward.synth.failures import WAVE1_MODES, render_clip_video
from icreward.synth.motion import render_consistent, render_image, sample_trajectory
from icreward.synth.plan import SPLITS, plan_sources
from icreward.synth.scenes import make_sprite_texture, procedural_scene, sprite_scene

NEW_SCENE_MODES = ["subject_swap", "identity_morph", "layout_shuffle"]
needs_library = pytest.mark.skipif(
    not rs.real_imagery_available(),
    reason=f"real imagery not installed (Debian packages: {rs.INSTALL_COMMAND})",
)

# Pinned before real sources and the identity modes were added: the default benchmark must not change.
DEFAULT_HASH = "46eb3df971385cb5efc3f21490409838c396e01a57743645644fd6ecd59c4a31"
DEFAULT_PLAN_DIGEST = "0121a0a352f27490300652379fe27a225d5c46d8e4a2de2fe19867fca228d9ec"
OLD_FIELDS = ["n", "seed", "frames", "size", "tie_margin", "holdout_modes", "images", "videos_per_image",
              "pairs_per_image", "split_fractions", "severity_range", "rater_noise", "fps"]  # fmt: skip


def test_default_config_hash_plan_and_record_are_unchanged():
    config = SynthConfig()
    assert config_hash(config) == DEFAULT_HASH
    assert list(config_record(config)) == OLD_FIELDS
    assert config.failure_modes() == WAVE1_MODES and len(WAVE1_MODES) == 11
    plans = [asdict(p) for p in plan_sources(config, [])]
    for p in plans:
        assert p.pop("kind") == "procedural" and p.pop("clip") is None and p.pop("clip_alternate") is None
    assert hashlib.sha256(json.dumps(plans).encode()).hexdigest() == DEFAULT_PLAN_DIGEST
    assert config_hash(replace(config, modes=tuple(FAILURE_MODES))) != DEFAULT_HASH
    assert config_hash(replace(config, real_share=0.5)) != DEFAULT_HASH


def test_modes_select_the_schedule():
    config = SynthConfig(n=30, modes=("subject_swap", "layout_shuffle"))
    config.validate()
    drawn = {v.mode for p in plan_sources(config, []) for v in p.videos}
    assert drawn <= {"none", "frozen", "subject_swap", "layout_shuffle"} and {"subject_swap", "layout_shuffle"} <= drawn
    with pytest.raises(IcrewardError, match="melting"):
        SynthConfig(modes=("melting",)).validate()
    with pytest.raises(IcrewardError, match="holdout"):
        SynthConfig(holdout_modes=("subject_swap",)).validate()  # not among the default config's modes
    with pytest.raises(IcrewardError, match="real-share"):
        SynthConfig(real_share=1.5).validate()
    with pytest.raises(IcrewardError, match="cannot be combined"):
        SynthConfig(real_share=0.5, images="photos").validate()


def test_modes_say_which_sources_they_apply_to():
    assert FAILURE_MODES["clip_replacement"].applies("clip") and not FAILURE_MODES["clip_replacement"].applies("scene")
    assert FAILURE_MODES["flicker"].applies("clip") and FAILURE_MODES["flicker"].applies("scene")
    assert all(FAILURE_MODES[m].applies("scene") and not FAILURE_MODES[m].applies("clip") for m in NEW_SCENE_MODES)
    with pytest.raises(ValueError, match="clip"):
        FAILURE_MODES["subject_swap"].render_clip(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8), 0.5, None)


def _sprite_scene(seed: int):
    """A photo-like scene with sprite subjects (procedural textures standing in for emoji) and swap candidates."""
    rng = np.random.default_rng(seed)
    textures = [make_sprite_texture(rng, 40, (0.0, -0.6, 0.8)) for _ in range(6)]
    scene = sprite_scene(
        rng, torch.rand(3, 60, 90), 48, textures[0], textures[1:3], textures[3:], torch.rand(3, 50, 50)
    )
    return scene, sample_trajectory(rng, scene, 6)


def _scenes():
    rng = np.random.default_rng(7)
    procedural = procedural_scene(rng, 48)
    return [(procedural, sample_trajectory(rng, procedural, 6)), _sprite_scene(3)]


@pytest.mark.parametrize("mode", NEW_SCENE_MODES)
def test_identity_modes_follow_the_contract(mode):
    for scene, traj in _scenes():
        consistent = render_consistent(scene, traj)
        frames = render_video(scene, traj, mode, 0.9, np.random.default_rng(1))
        assert frames.shape == (6, 3, 48, 48) and frames.min() >= 0 and frames.max() <= 1
        torch.testing.assert_close(frames[0], render_image(scene), atol=1e-4, rtol=0)  # frame 0 is the image
        torch.testing.assert_close(frames, render_video(scene, traj, mode, 0.9, np.random.default_rng(1)))
        still = render_video(scene, traj, mode, 0.0, np.random.default_rng(1))
        torch.testing.assert_close(still, consistent, atol=1e-4, rtol=0)  # severity 0: consistent
        damage = (frames - consistent).abs().mean((1, 2, 3))
        assert damage[-1] > 0.002 and (frames[-1] - frames[0]).abs().mean() > 1e-3  # fails, and keeps moving


def test_subject_swap_keeps_the_mean_colour_closer_than_a_random_swap():
    scene, traj = _sprite_scene(5)
    frames = render_video(scene, traj, "subject_swap", 1.0, np.random.default_rng(2))
    consistent = render_consistent(scene, traj)
    assert (frames[-1] - consistent[-1]).abs().mean() > 0.002
    assert (frames[-1].mean((1, 2)) - consistent[-1].mean((1, 2))).abs().max() < 0.05


def test_clip_replacement_follows_the_contract():
    frames, other = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    out = render_clip_video(frames, other, "clip_replacement", 0.9, np.random.default_rng(0))
    assert torch.equal(out[0], frames[0]) and torch.allclose(out[-1], other[-1])
    assert torch.equal(out, render_clip_video(frames, other, "clip_replacement", 0.9, np.random.default_rng(0)))
    assert torch.equal(render_clip_video(frames, other, "clip_replacement", 0.0, np.random.default_rng(0)), frames)
    flicker = render_clip_video(frames, other, "flicker", 0.9, np.random.default_rng(0))  # frames-scope modes apply
    torch.testing.assert_close(flicker[0], frames[0], atol=1e-4, rtol=0)
    assert not torch.allclose(flicker, frames)


def test_missing_imagery_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(rs, "EMOJI_FONT", tmp_path / "missing.ttf")
    with pytest.raises(IcrewardError, match="fonts-noto-color-emoji.*apt-get install -y opencv-doc"):
        rs.ensure_real_imagery(install=False)


def test_library_split_is_fixed_per_item():
    splits = [rs.library_split(f"item{i}") for i in range(400)]
    assert splits == [rs.library_split(f"item{i}") for i in range(400)]  # a function of the name alone
    shares = {s: splits.count(s) / len(splits) for s in SPLITS}
    assert abs(shares["train"] - 0.45) < 0.07 and abs(shares["val"] - 0.1) < 0.05


@needs_library
def test_library_items_never_cross_splits():
    photos, emoji = rs.photo_library(), rs.emoji_library()
    assert all(photos[s] for s in SPLITS) and sum(len(e) for e in emoji.values()) >= 150
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not set(photos[a]) & set(photos[b]) and not set(emoji[a]) & set(emoji[b])
    for pair in [("aloeL.jpg", "aloeR.jpg"), ("leuvenA.jpg", "leuvenB.jpg")]:  # near-duplicates share a split
        assert len({s for s in SPLITS for p in photos[s] if p.endswith(pair)}) == 1
    sprite = rs.emoji_sprite(emoji["train"][0])
    assert sprite.shape == (4, rs.EMOJI_SIDE, rs.EMOJI_SIDE) and 0.05 < sprite[3].mean() < 0.95
    assert (sprite[:3] <= sprite[3:] + 1e-6).all()  # premultiplied
    for length in rs.clip_lengths().values():
        blocks = rs.clip_blocks(length)
        assert blocks["train"][1] < blocks["val"][0] <= blocks["val"][1] < blocks["test"][0]


@needs_library
def test_real_sources_end_to_end(tmp_path):
    config = SynthConfig(n=8, frames=4, size=32, real_share=1.0, modes=tuple(FAILURE_MODES))
    summary = generate(config, tmp_path / "bench", workers=1, progress=False)
    plans = plan_sources(config, [])
    kinds = {p.kind for p in plans}
    assert kinds == {"real_photo", "real_clip"} and summary["config"]["real_share"] == 1.0
    assert sum(sum(k.values()) for k in summary["counts"]["source_kinds"].values()) == 8
    photos = rs.photo_library()
    for p in plans:
        if p.kind == "real_photo":
            assert p.photo in photos[p.split] and (p.alternate is None or p.alternate in photos[p.split])
        else:
            assert all(FAILURE_MODES[v.mode].applies("clip") for v in p.videos if v.mode != "none")
            lo, hi = rs.clip_blocks(rs.clip_lengths()[p.clip.video])[p.split]
            assert lo <= p.clip.start and p.clip.start + 3 * p.clip.max_stride < hi
    videos = [json.loads(line) for line in (tmp_path / "bench" / "videos.jsonl").read_text().splitlines()]
    assert len(videos) == 48 and all((tmp_path / "bench" / v["video"]).is_file() for v in videos)
    clip = next(p for p in plans if p.kind == "real_clip")
    image = np.asarray(Image.open(tmp_path / "bench" / "images" / f"{clip.id}.png"))
    first = rs.segment_video(clip.clip, 1, 1, 32)[0]
    assert np.abs(image.astype(float) - (first.permute(1, 2, 0) * 255).numpy()).max() <= 1


@needs_library
def test_cli_real_share_flag(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path / "b"), "--n", "4", "--frames", "4", "--size", "32", "--workers", "1"]
    assert main([*args, "--real-share", "0.5", "--modes", "all", "--quiet"]) == 0
    meta = json.loads((tmp_path / "b" / "synth.json").read_text())
    assert meta["config"]["real_share"] == 0.5 and "clip_replacement" in meta["score_weights"]
    assert main([*args[:2], str(tmp_path / "c"), *args[3:], "--real-share", "2"]) == 2
    assert "real-share" in capsys.readouterr().err
