"""Tiny offline diffusers I2V pipelines, `best_of_n` over them, and `icreward best-of-n` end to end."""

import json

import pytest
import torch

pytest.importorskip("diffusers")

import icreward  # noqa: E402
from icreward.cli import main  # noqa: E402
from icreward.generation.best_of_n import BestOfNError, best_of_n  # noqa: E402
from icreward.generation.tiny import tiny_svd_pipeline, tiny_wan_i2v_pipeline  # noqa: E402

SVD_CALL = {"height": 32, "width": 32, "num_frames": 2, "num_inference_steps": 2, "decode_chunk_size": 2}
WAN_CALL = {"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 2, "max_sequence_length": 16}
PROMPT = "a red ball, camera pans left"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run best on one thread


@pytest.fixture(scope="module")
def svd():
    return tiny_svd_pipeline(seed=0)


@pytest.fixture(scope="module")
def wan():
    return tiny_wan_i2v_pipeline(seed=0)


@pytest.fixture(scope="module")
def scorer():
    return icreward.load("default")


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 5, generator=g), size=(48, 40), mode="bilinear")
    return smooth[0].clamp(0, 1)  # (3, 48, 40): not the pipelines' size, so the reward's resize is exercised


def _generate(pipe, image, seed, **kwargs):
    from icreward.generation.best_of_n import _image

    picture, _ = _image(image)
    out = pipe(picture, generator=torch.Generator().manual_seed(seed), output_type="pt", **kwargs)
    return out.frames  # (B, F, 3, H, W)


def test_tiny_pipelines_generate_reproducibly(svd, wan, image):
    a = _generate(svd, image, 3, **SVD_CALL)
    assert a.shape == (1, 2, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, _generate(svd, image, 3, **SVD_CALL))
    assert not torch.equal(a, _generate(svd, image, 4, **SVD_CALL))
    b = _generate(wan, image, 3, prompt=PROMPT, **WAN_CALL)
    assert b.shape == (1, 5, 3, 32, 32) and 0 <= b.min() and b.max() <= 1
    assert torch.equal(b, _generate(wan, image, 3, prompt=PROMPT, **WAN_CALL))
    assert not torch.equal(b, _generate(wan, image, 3, prompt="a blue cube", **WAN_CALL))  # the prompt is read
    assert not torch.equal(tiny_wan_i2v_pipeline(seed=1).transformer.proj_out.weight, wan.transformer.proj_out.weight)


def test_best_of_n_ranks_reproducibly_and_each_candidate_is_its_seed(svd, scorer, image):
    ranked = best_of_n(svd, image, n=3, seed=5, scorer=scorer, **SVD_CALL)
    assert [c.rank for c in ranked] == [1, 2, 3] and sorted(c.seed for c in ranked) == [5, 6, 7]
    rewards = [c.reward for c in ranked]
    assert rewards == sorted(rewards, reverse=True) and len(set(rewards)) == 3
    assert all(c.reward == c.heads["guidance"] and c.heads["text"] is None for c in ranked)  # no prompt: text null
    again = best_of_n(svd, image, n=3, seed=5, scorer=scorer, **SVD_CALL)
    assert [(c.seed, c.reward) for c in again] == [(c.seed, c.reward) for c in ranked]
    best = ranked[0]
    torch.testing.assert_close(best.frames, _generate(svd, image, best.seed, **SVD_CALL)[0])
    reference = torch.nn.functional.interpolate(image[None], size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
    heads = scorer.all_heads(reference, best.frames[None])
    assert best.reward == pytest.approx(float(heads["guidance"][0]), abs=1e-5)
    by_consistency = best_of_n(svd, image, n=3, seed=5, scorer=scorer, head="consistency", **SVD_CALL)
    assert [c.reward for c in by_consistency] == sorted((c.heads["consistency"] for c in ranked), reverse=True)


def test_best_of_n_with_a_prompt_and_batches(wan, scorer, image):
    one = best_of_n(wan, image, PROMPT, n=3, seed=0, scorer=scorer, **WAN_CALL)
    two = best_of_n(wan, image, PROMPT, n=3, seed=0, scorer=scorer, batch=2, **WAN_CALL)
    assert all(c.heads["text"] is not None for c in one)
    by_seed = {c.seed: c for c in two}
    for c in one:  # Wan draws all noise per video: the same candidates whatever the batch
        torch.testing.assert_close(c.frames, by_seed[c.seed].frames, rtol=0, atol=1e-5)


def test_best_of_n_errors(svd, scorer, image):
    with pytest.raises(BestOfNError, match="n: a whole number >= 1"):
        best_of_n(svd, image, n=0, scorer=scorer)
    with pytest.raises(BestOfNError, match="output_type"):
        best_of_n(svd, image, n=1, scorer=scorer, output_type="np")
    with pytest.raises(BestOfNError, match="not an image-to-video pipeline"):
        best_of_n(lambda prompt, generator=None: None, image, n=1, scorer=scorer)
    with pytest.raises(BestOfNError, match="head 'text'"):
        best_of_n(svd, image, n=1, scorer=scorer, head="text")
    with pytest.raises(BestOfNError, match=r"image: values span"):
        best_of_n(svd, image * 255, n=1, scorer=scorer)


def test_cli_best_of_n_end_to_end(tmp_path, wan, image, capsys):
    from PIL import Image

    wan.save_pretrained(tmp_path / "pipe")
    picture = tmp_path / "image.png"
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(picture)
    args = ["best-of-n", "--pipeline", str(tmp_path / "pipe"), "--image", str(picture), "--prompt", PROMPT, "--n", "3"]
    args += ["--num-frames", "5", "--steps", "2", "--height", "32", "--width", "32", "--seed", "7"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    ranking = json.loads((tmp_path / "out" / "ranking.json").read_text())
    assert ranking["pipeline_class"] == "WanImageToVideoPipeline" and ranking["head"] == "guidance"
    rewards = [c["reward"] for c in ranking["candidates"]]
    assert rewards == sorted(rewards, reverse=True) and sorted(c["seed"] for c in ranking["candidates"]) == [7, 8, 9]
    manifest = [json.loads(line) for line in (tmp_path / "out" / "candidates.jsonl").read_text().splitlines()]
    assert [m["id"] for m in manifest] == ["image-seed_7", "image-seed_8", "image-seed_9"]
    assert manifest[0]["prompt"] == PROMPT
    video = icreward.media.load_video(tmp_path / "out" / "seed_7.mp4", num_frames=5)
    assert video.shape == (5, 3, 32, 32)
    assert main([*args, "--out", str(tmp_path / "again")]) == 0  # from the saved folder: the same candidates again
    assert json.loads((tmp_path / "again" / "ranking.json").read_text())["candidates"] == ranking["candidates"]
    out = capsys.readouterr().out
    assert "seed_" in out


@pytest.mark.parametrize(
    "pipeline, message",
    [("nowhere/at/all", "no such folder"), ("{tmp}", "no model_index.json")],
)
def test_cli_best_of_n_clear_errors(tmp_path, capsys, image, pipeline, message):
    from PIL import Image

    picture = tmp_path / "image.png"
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(picture)
    spec = pipeline.format(tmp=tmp_path)
    code = main(["best-of-n", "--pipeline", spec, "--image", str(picture), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"--pipeline {spec}" in err and message in err
    assert not (tmp_path / "out").exists()


def test_load_pipeline_by_name(tmp_path):
    from icreward.generation.pipelines import PipelineLoadError, load_pipeline

    pipe = load_pipeline("tiny-wan-i2v", dtype="bf16", seed=1)
    assert type(pipe).__name__ == "WanImageToVideoPipeline" and pipe.transformer.dtype == torch.bfloat16
    with pytest.raises(PipelineLoadError, match="dtype"):
        load_pipeline("tiny-svd", dtype="fp64")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(PipelineLoadError, match="no model_index.json"):
        load_pipeline(str(tmp_path / "file.txt"))
