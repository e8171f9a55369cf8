"""`--precision fp32|bf16|fp16` and `precision=`: fp32 untouched (no autocast at all), reduced precision close to it."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import icreward
from icreward import precision as prec
from icreward.cli import main
from icreward.errors import IcrewardError
from icreward.interface import Scorer
from icreward.media import write_video
from icreward.scoring import Item, rank_videos, score_items, score_tensors

# bf16 keeps 8 bits of mantissa: rewards of order 1 move by a few 1e-3 (README "Precision" has the measured figures)
BF16_TOL = 0.05


@pytest.fixture()
def media(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    write_video(tmp_path / "good.mp4", np.stack([np.roll(img, s, axis=1) for s in range(6)]))
    write_video(tmp_path / "bad.mp4", np.stack([img // 4] * 6))  # another colour histogram altogether
    return tmp_path


def tensors(n=3, t=4, side=32):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, side, side, generator=g) for _ in range(n)]
    videos = [(images[i] + 0.2 * i * torch.rand(t, 3, side, side, generator=g)).clamp(0, 1) for i in range(n)]
    return images, videos


def tiny_icreward():
    from icreward.models import build_model

    torch.manual_seed(0)
    return build_model("icreward", backbone="tiny-vit", d_model=32, heads=2, depth=1, num_frames=4).eval()


@pytest.mark.parametrize("make", [lambda: icreward.load("metric:color-hist"), tiny_icreward], ids=["color", "tiny"])
def test_bf16_rewards_are_float32_and_close_to_fp32(make):
    scorer = make()
    images, videos = tensors()
    fp32 = score_tensors(scorer, images, videos)
    bf16 = score_tensors(scorer, images, videos, precision="bf16")
    assert all(isinstance(r, float) for r in bf16)
    assert np.allclose(bf16, fp32, atol=BF16_TOL, rtol=0)
    with icreward.autocast(scorer, "bf16"):  # the documented way for model(image, video) callers
        direct = scorer(torch.stack(images), torch.stack(videos)).float()
    assert np.allclose(direct.tolist(), bf16, atol=1e-6)


class _Spy(Scorer):
    """Records whether autocast is on while it scores."""

    name = "spy"

    def __init__(self):
        super().__init__()
        self.inner = icreward.load("metric:color-hist")
        self.num_frames, self.max_side = self.inner.num_frames, self.inner.max_side
        self.seen = []

    def forward(self, image, video, prompt=None):
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return self.inner(image, video)


def test_fp32_runs_without_autocast_and_reduced_precision_with_it(media):
    spy = _Spy()
    item = Item("a", media / "img.png", media / "good.mp4")
    default = [r.rewards for r in score_items(spy, [item], progress=False)]
    explicit = [r.rewards for r in score_items(spy, [item], progress=False, precision="fp32")]
    rank_videos(spy, media / "img.png", [media / "good.mp4"], precision="fp32")
    assert spy.seen == [False, False, False] and default == explicit
    list(score_items(spy, [item], progress=False, precision="bf16"))
    assert spy.seen[-1] is True
    assert isinstance(icreward.autocast(spy, "fp32"), type(prec.autocast("cpu")))


@pytest.mark.parametrize("bad", ["fp8", "float32", "", "BF16"])
def test_unknown_precision_is_refused_naming_the_accepted_ones(bad):
    scorer = icreward.load("metric:color-hist")
    images, videos = tensors(1)
    for call in (
        lambda: score_tensors(scorer, images, videos, precision=bad),
        lambda: list(score_items(scorer, [], precision=bad)),
        lambda: icreward.autocast(scorer, bad),
    ):
        with pytest.raises(IcrewardError, match="fp32, bf16, fp16") as e:
            call()
        assert isinstance(e.value, ValueError)
    from icreward.server import ServeSettings

    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        ServeSettings(precision=bad)


def test_cli_rejects_an_unknown_precision_at_parse_time(media, capsys):
    args = ["score", "--image", str(media / "img.png"), "--video", str(media / "good.mp4"), "--precision", "fp8"]
    assert main(args) == 2
    assert "fp32" in capsys.readouterr().err


def _score(media, capsys, *extra):
    args = ["score", "--image", str(media / "img.png"), "--video", str(media / "good.mp4")]
    code = main([*args, "--model", "metric:color-hist", *extra])
    return code, capsys.readouterr()


def test_score_precision_flag(media, capsys):
    code, default = _score(media, capsys)
    assert code == 0
    assert _score(media, capsys, "--precision", "fp32") == (0, default)  # byte-identical to no flag
    code, bf16 = _score(media, capsys, "--precision", "bf16")
    assert code == 0 and abs(float(bf16.out) - float(default.out)) < BF16_TOL


def test_fp16_works_or_is_refused_in_one_line(media, capsys, monkeypatch):
    code, out = _score(media, capsys, "--precision", "fp16")
    if "fp16" in prec.supported("cpu"):
        assert code == 0 and abs(float(out.out) - float(_score(media, capsys)[1].out)) < BF16_TOL
    else:
        assert code == 2 and len(out.err.strip().splitlines()) == 1
    monkeypatch.setattr(prec, "supported", lambda device_type: ["fp32", "bf16"])  # a device without fp16
    code, out = _score(media, capsys, "--precision", "fp16")
    assert code == 2 and out.out == ""
    (line,) = out.err.strip().splitlines()
    assert "fp16" in line and "cpu" in line and "fp32, bf16" in line


def test_rank_precision_flag(media, capsys):
    args = ["rank", "--image", str(media / "img.png"), "--videos", str(media / "bad.mp4"), str(media / "good.mp4")]
    args += ["--model", "metric:color-hist", "--json"]
    assert main(args) == 0
    fp32 = json.loads(capsys.readouterr().out)["ranking"]
    assert main([*args, "--precision", "bf16"]) == 0
    bf16 = json.loads(capsys.readouterr().out)["ranking"]
    assert fp32[0]["reward"] - fp32[1]["reward"] > 2 * BF16_TOL
    assert [r["video"] for r in bf16] == [r["video"] for r in fp32]
    assert all(abs(a["reward"] - b["reward"]) < BF16_TOL for a, b in zip(fp32, bf16, strict=True))


def test_eval_precision_flag(media, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    rec = {"image": "img.png", "video_a": "good.mp4", "video_b": "bad.mp4", "label": "A"}
    data.write_text("\n".join(json.dumps({**rec, "id": f"p{i}"}) for i in range(2)) + "\n")
    rewards = {}
    for p in ("fp32", "bf16"):
        report = tmp_path / f"report-{p}"
        args = ["eval", "--data", str(data), "--model", "metric:color-hist", "--bootstrap", "5", "--quiet"]
        assert main([*args, "--report", str(report), "--precision", p]) == 0
        rows = (report / "pairs.csv").read_text().splitlines()
        header = rows[0].split(",")
        ia, ib = header.index("reward_a"), header.index("reward_b")
        rewards[p] = [(float(r.split(",")[ia]), float(r.split(",")[ib])) for r in rows[1:]]
    capsys.readouterr()
    assert np.allclose(rewards["bf16"], rewards["fp32"], atol=BF16_TOL, rtol=0)


def test_server_scores_and_ranks_in_the_settings_precision(media):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from icreward.server import ServeSettings, create_app

    for p, on in (("fp32", False), ("bf16", True)):
        spy = _Spy()
        with TestClient(create_app(spy, "spy", ServeSettings(allow_roots=[media], precision=p))) as client:
            r = client.post("/score", json={"image": "img.png", "video": "good.mp4"})
            assert r.status_code == 200, r.text
            assert abs(r.json()["reward"] - spy.inner.score(media / "img.png", media / "good.mp4")) < BF16_TOL
            r = client.post("/rank", json={"image": "img.png", "videos": ["good.mp4", "bad.mp4"]})
            assert r.status_code == 200, r.text
        assert spy.seen == [on, on]
