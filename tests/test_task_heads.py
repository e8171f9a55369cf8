"""Task heads (motion, text, guidance) on a model: one pass, selection, null text without a prompt, checkpoints,
the text encoders, the CLI's --json / --head / --prompt, and head training on per-dimension labels."""

import json
import math

import numpy as np
import pytest
import torch

import icreward
from icreward.cli import main
from icreward.errors import IcrewardError
from icreward.models import ICRewardConfig, ICRewardModel
from icreward.models.task_heads import TaskHeadsConfig
from icreward.text_encoders import build_text_encoder


def model_with_heads(encoder: str, fusion: str = "film") -> ICRewardModel:
    torch.manual_seed(0)
    heads = TaskHeadsConfig(text_encoder=encoder, text_fusion=fusion, text_dim=32, text_token_dim=32, d_model=8)
    config = ICRewardConfig(
        backbone="patch-features", head="none", evidence=True, num_frames=4, task_heads=heads.to_dict()
    )
    return ICRewardModel(config).eval()


def clip(seed: int, t: int = 4, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, size, size, generator=g)
    shifts = [image.roll(k, dims=-1) for k in range(t)]  # content moving right
    return image, torch.stack(shifts)


def test_minilm_is_the_offline_default_and_embeds_prompts():
    encoder = build_text_encoder("minilm")
    out = encoder.encode(["a cat on a sofa, camera pans left", "a dog"])
    assert out.pooled.shape == (2, 384) and out.tokens.shape[0] == 2 and out.mask[1].sum() < out.mask[0].sum()
    assert torch.allclose(out.pooled.norm(dim=-1), torch.ones(2), atol=1e-4)
    # cached: the same prompt again gives the same embedding without a new pass
    again = encoder.encode(["a dog"])
    assert torch.equal(again.pooled[0], out.pooled[1])
    # related prompts are closer than unrelated ones
    a, b, c = encoder.encode(["camera pans left", "the camera pans to the left", "a bowl of soup"]).pooled
    assert a @ b > a @ c


def test_unknown_text_encoder_is_a_clear_error():
    with pytest.raises(IcrewardError, match="unknown text encoder"):
        build_text_encoder("no-such-encoder")


@pytest.mark.parametrize("fusion", ["film", "cross"])
def test_all_heads_in_one_pass_and_text_is_nan_without_a_prompt(tiny_text_encoder, fusion):
    model = model_with_heads(tiny_text_encoder, fusion)
    assert model.head_names == ("consistency", "motion", "text", "guidance")
    image, video = clip(0)
    images, videos = torch.stack([image, image]), torch.stack([video, video])
    with torch.no_grad():
        heads = model.all_heads(images, videos, ["a cat, camera pans left", None])
    assert set(heads) == {"consistency", "motion", "text", "guidance"}
    assert math.isfinite(float(heads["text"][0])) and math.isnan(float(heads["text"][1]))
    assert torch.isfinite(heads["guidance"]).all()  # guidance is defined without a prompt: its text term drops out
    assert torch.equal(heads["consistency"], model(images, videos))  # consistency stays the default reward
    model.select_head("motion")
    assert torch.equal(model(images, videos), heads["motion"])
    model.select_head("consistency")


def test_guidance_drops_the_text_term_without_a_prompt(tiny_text_encoder):
    model = model_with_heads(tiny_text_encoder)
    image, video = clip(1)
    heads = model.all_heads(image[None], video[None], [None])
    w = model.task_heads.guidance_weights()
    expected = w[0] * heads["consistency"] + w[1] * heads["motion"]
    assert torch.allclose(heads["guidance"], expected)


def test_heads_are_differentiable_wrt_the_video(tiny_text_encoder):
    model = model_with_heads(tiny_text_encoder)
    image, video = clip(2)
    video = video[None].clone().requires_grad_()
    heads = model.all_heads(image[None], video, ["camera pans right"])
    (heads["motion"] + heads["text"] + heads["guidance"]).sum().backward()
    assert video.grad is not None and torch.isfinite(video.grad).all() and video.grad.abs().sum() > 0


def test_unknown_head_is_refused_naming_the_heads(tiny_text_encoder):
    with pytest.raises(IcrewardError, match="no 'motion' head; its heads: consistency"):
        icreward.load("metric:color-hist").select_head("motion")
    model = model_with_heads(tiny_text_encoder)
    model.task_heads.config.heads = ["motion", "guidance"]
    with pytest.raises(ValueError, match="guidance combines"):
        TaskHeadsConfig(heads=["guidance"])


def test_checkpoint_round_trip_keeps_every_head(tiny_text_encoder, tmp_path):
    model = model_with_heads(tiny_text_encoder)
    model.task_heads.set_feature_statistics(torch.randn(10, model.task_heads.config.n_features))
    model.task_heads.config.norm = {"motion": [0.1, 2.0]}
    model.save_pretrained(tmp_path / "ckpt")
    loaded = icreward.load(str(tmp_path / "ckpt"), head="guidance")
    assert loaded.selected_head == "guidance"
    image, video = clip(3)
    a = model.all_heads(image[None], video[None], ["camera static"])
    b = loaded.all_heads(image[None], video[None], ["camera static"])
    for name in a:
        assert torch.allclose(a[name], b[name]), name


def test_score_json_prints_every_head_and_null_text_without_a_prompt(tiny_text_encoder, tmp_path, capsys):
    from icreward.media import write_video

    model = model_with_heads(tiny_text_encoder)
    model.save_pretrained(tmp_path / "ckpt")
    image, video = clip(4, t=6, size=64)
    from PIL import Image

    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "img.png")
    write_video(tmp_path / "vid.mp4", (video.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8), fps=8)
    args = ["score", "--model", str(tmp_path / "ckpt"), "--image", str(tmp_path / "img.png")]
    args += ["--video", str(tmp_path / "vid.mp4")]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"id", "reward", "heads"} and out["id"] == "vid"
    assert out["heads"]["text"] is None and out["reward"] == out["heads"]["consistency"]
    assert main([*args, "--json", "--head", "text", "--prompt", "a cat, camera pans left"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reward"] == out["heads"]["text"] is not None
    # the text head without a prompt: the JSON says null and the exit code says there is no value
    assert main([*args, "--json", "--head", "text"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["reward"] is None and "no prompt" in captured.err
    assert main([*args, "--head", "motion"]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(out["heads"]["motion"], abs=1e-6)
    # manifests: each line gains its heads, prompts from the records
    points, pairs = tmp_path / "points.jsonl", tmp_path / "pairs.jsonl"
    points.write_text(json.dumps({"id": "a", "image": "img.png", "video": "vid.mp4", "prompt": "camera static"}) + "\n")
    pairs.write_text(
        json.dumps({"id": "b", "image": "img.png", "video_a": "vid.mp4", "video_b": "vid.mp4", "label": "tie"}) + "\n"
    )
    rows = []
    for manifest in (points, pairs):
        out = tmp_path / f"out-{manifest.name}"
        args = ["score", "--model", str(tmp_path / "ckpt"), "--manifest", str(manifest), "--out", str(out)]
        assert main([*args, "--json", "--quiet"]) == 0
        rows += [json.loads(line) for line in out.read_text().splitlines()]
    a, b = rows
    assert a["heads"]["text"] is not None and b["heads_a"]["text"] is None and b["heads_b"]["motion"] is not None


def test_prompt_with_a_manifest_is_refused(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    code = main(["score", "--manifest", str(manifest), "--out", str(tmp_path / "o.jsonl"), "--prompt", "x"])
    assert code == 2 and "--prompt is for a single pair" in capsys.readouterr().err


def test_the_text_encoder_is_not_saved_in_the_checkpoint(tiny_text_encoder, tmp_path):
    model = model_with_heads(tiny_text_encoder)
    image, video = clip(5)
    model.all_heads(image[None], video[None], ["camera pans left"])  # loads the encoder
    assert not any(k.startswith("task_heads._encoder") for k in model.state_dict())
    model.save_pretrained(tmp_path / "ckpt")
    icreward.load(str(tmp_path / "ckpt"))
