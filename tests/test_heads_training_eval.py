"""Task heads end to end: `icreward train --heads` on a tiny synth benchmark with prompts, its errors, `icreward eval`'s
per-head results and `static_wins`, and the static test's semantics on hand-made videos."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import icreward
from icreward.cli import main
from icreward.errors import IcrewardError
from icreward.media import load_image, load_video, write_video
from icreward.models import ICRewardConfig, ICRewardModel
from icreward.synth import SynthConfig, generate

# the metrics sample 16 frames of these 6-frame videos: their frames are repeated, as the warning says
pytestmark = pytest.mark.filterwarnings("ignore::icreward.media.FewFramesWarning")

FRAMES = 6
HEADS = ("consistency", "motion", "text", "guidance")
BENCH = SynthConfig(
    n=12,
    size=48,
    frames=FRAMES,
    seed=0,
    modes=("jitter", "pingpong", "camera_mismatch", "motion_missing", "color_drift", "flicker"),
    videos_per_image=6,
    pairs_per_image=8,
    real_share=0.0,
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny synth benchmark with prompts and the motion / text failure modes (labels ic, motion, text, overall)."""
    out = tmp_path_factory.mktemp("heads-bench") / "bench"
    generate(BENCH, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def init_model(tmp_path_factory):
    """A tiny untrained consistency model checkpoint: what the heads are trained on."""
    torch.manual_seed(0)
    model = ICRewardModel(ICRewardConfig(backbone="patch-features", head="none", evidence=True, num_frames=FRAMES))
    folder = tmp_path_factory.mktemp("init") / "ckpt"
    model.eval().save_pretrained(folder)
    return folder


def train_args(bench, init, out, encoder) -> list[str]:
    return [
        "train", "--heads", "motion,text,guidance", "--init", str(init), "--data", str(bench / "train.jsonl"),
        "--val", str(bench / "val.jsonl"), "--out", str(out), "--text-encoder", encoder, "--head-epochs", "40",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(bench, init_model, tiny_text_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("heads-run") / "run"
    assert main(train_args(bench, init_model, out, tiny_text_encoder)) == 0
    return out


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _sources(bench, split: str = "train") -> list[str]:
    return sorted({r["source"] for r in _records(bench / f"{split}.jsonl")})


def _clip(bench, source: str, max_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The source image and its consistent moving video (`<source>_v0`, the one the prompt describes)."""
    image = load_image(bench / "images" / f"{source}.png", max_side=max_side)
    video = load_video(bench / "videos" / f"{source}_v0.mp4", num_frames=FRAMES, max_side=max_side)
    return image, video


# ---- icreward train --heads


def test_train_heads_gives_a_checkpoint_with_every_head(run_dir, bench, init_model, capsys):
    model = icreward.load(str(run_dir))
    assert model.head_names == HEADS
    config = json.loads((run_dir / "config.json").read_text())
    norm = config["task_heads"]["norm"]
    assert set(norm) == {"motion", "text", "guidance"} and all(std > 0 for _, std in norm.values())
    assert config["task_heads"]["heads"] == ["motion", "text", "guidance"]
    assert (model.task_heads.guidance_weights() >= 0).all()
    summary = config["training"]["task_heads"]
    assert all(w >= 0 for w in summary["guidance"]["weights"].values())
    assert summary["pairs"]["train"]["motion"] > 0 and summary["pairs"]["train"]["text"] > 0


def test_train_heads_leaves_the_consistency_head_untouched(run_dir, bench, init_model):
    init, trained = icreward.load(str(init_model)), icreward.load(str(run_dir))
    clips = [_clip(bench, s, init.max_side) for s in _sources(bench)]
    images, videos = torch.stack([c[0] for c in clips]), torch.stack([c[1] for c in clips])
    with torch.no_grad():
        before = init(images, videos)
        after = trained(images, videos)  # the default head is still consistency
        heads = trained.all_heads(images, videos, [None] * len(clips))
    assert torch.equal(before, after) and torch.equal(heads["consistency"], before)


def test_trained_motion_head_prefers_the_moving_video_to_its_frozen_copy(run_dir, bench):
    model = icreward.load(str(run_dir))
    sources = _sources(bench)
    clips = [_clip(bench, s, model.max_side) for s in sources]
    images = torch.stack([c[0] for c in clips] * 2)
    frozen = [image[None].expand(FRAMES, -1, -1, -1) for image, _ in clips]
    videos = torch.stack([c[1] for c in clips] + frozen)
    with torch.no_grad():
        motion = model.all_heads(images, videos, [None] * len(images))["motion"]
    moving, still = motion[: len(sources)], motion[len(sources) :]
    assert torch.isfinite(motion).all()
    assert (moving > still).float().mean() >= 0.7, (moving, still)


def test_train_heads_is_reproducible(run_dir, bench, init_model, tiny_text_encoder, tmp_path):
    again = tmp_path / "again"
    assert main(train_args(bench, init_model, again, tiny_text_encoder)) == 0
    assert (again / "model.safetensors").read_bytes() == (run_dir / "model.safetensors").read_bytes()
    a, b = (json.loads((d / "config.json").read_text())["task_heads"] for d in (run_dir, again))
    assert a == b


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--heads": "motion,speed"}, "--heads: choose from motion, text, guidance"),
        ({"--init": None}, "--heads needs --init"),
        ({"--init": "metric:color-hist"}, "task heads go on a learned model, not on a handcrafted metric"),
    ],
)
def test_train_heads_errors_are_one_line_and_exit_2(bench, init_model, tmp_path, capsys, change, message):
    args = train_args(bench, init_model, tmp_path / "out", "minilm")
    for flag, value in change.items():
        i = args.index(flag)
        if value is None:
            del args[i : i + 2]
        else:
            args[i + 1] = value
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("icreward train: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "model.safetensors").exists()


# ---- icreward eval: per-head results and static wins


def test_eval_reports_every_head_and_static_wins(run_dir, bench, tmp_path):
    report = tmp_path / "report"
    args = ["eval", "--data", str(bench / "test.jsonl"), "--val", str(bench / "val.jsonl"), "--bootstrap", "20"]
    assert main([*args, "--model", str(run_dir), "--model", "metric:color-hist", "--report", str(report)]) == 0
    models = json.loads((report / "results.json").read_text())["models"]
    ours = models[str(run_dir)]
    assert set(ours["heads"]) == set(HEADS)  # the test pairs carry labels ic, motion, text and overall
    for head, result in ours["heads"].items():
        assert 0 <= result["pair_accuracy"] <= 1, head
        assert 0 < result["n_pairs"] <= ours["n_pairs"], head
    assert set(ours["static_wins"]) == set(HEADS)
    for head, wins in ours["static_wins"].items():
        assert 0 <= wins["rate"] <= 1 and wins["n"] > 0, head
    # the reward (consistency) is the one the old keys describe
    assert ours["heads"]["consistency"]["pair_accuracy"] == pytest.approx(ours["pair_accuracy"])
    metric = models["metric:color-hist"]
    assert set(metric["heads"]) == {"consistency"} and set(metric["static_wins"]) == {"consistency"}
    assert 0 <= metric["static_wins"]["consistency"]["rate"] <= 1 and metric["static_wins"]["consistency"]["n"] > 0


def test_head_labels_and_head_reward_pairs(run_dir, bench):
    from icreward.evaluation.evaluate import head_labels, head_reward_pairs
    from icreward.manifest import load_manifest

    test = load_manifest(bench / "test.jsonl")
    records = _records(bench / "test.jsonl")
    value = {"A": 1, "B": -1, "tie": 0}
    assert head_labels(test, "motion") == [value[r["labels"]["motion"]] for r in records]
    assert head_labels(test, "guidance") == [value[r["labels"]["overall"]] for r in records]
    rewards, scored = head_reward_pairs(icreward.load(str(run_dir)), test, batch_size=8, device="cpu")
    assert set(rewards) == set(HEADS) and all(r.shape == (len(records), 2) for r in rewards.values())
    assert all(np.isfinite(r).all() for r in rewards.values())  # every synth pair has a prompt
    assert len(scored["values"]) == len(scored["items"])


# ---- static_wins on hand-made videos


@pytest.fixture(scope="module")
def moving_pairs(tmp_path_factory):
    """Three images, each with two videos whose content moves clearly (4 and 6 pixels a frame), as a pair manifest."""
    root = tmp_path_factory.mktemp("moving")
    rng = np.random.default_rng(1)
    lines = []
    for i in range(3):
        img = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
        img = np.asarray(Image.fromarray(img).resize((12, 12)).resize((48, 48), Image.BILINEAR))  # smooth, textured
        Image.fromarray(img).save(root / f"img{i}.png")
        for speed in (4, 6):
            write_video(root / f"v{i}_{speed}.mp4", np.stack([np.roll(img, speed * t, axis=1) for t in range(FRAMES)]))
        record = {"id": f"p{i}", "image": f"img{i}.png", "video_a": f"v{i}_4.mp4", "video_b": f"v{i}_6.mp4"}
        lines.append(json.dumps({**record, "label": "A"}))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return root / "pairs.jsonl"


@pytest.mark.parametrize(
    ("model", "head", "rate"),
    [
        ("metric:first-frame-mse", "consistency", 1.0),  # a frozen copy is the image: it always wins
        ("metric:color-hist", "consistency", 1.0),
        ("metric:dynamic-degree", "motion", 0.0),  # a frozen copy never moves: it never wins
    ],
)
def test_static_wins_semantics(moving_pairs, model, head, rate):
    from icreward.evaluation.evaluate import head_reward_pairs, static_wins
    from icreward.manifest import load_manifest

    scorer = icreward.load(model)
    _, scored = head_reward_pairs(scorer, load_manifest(moving_pairs), batch_size=8, device="cpu")
    wins = static_wins(scorer, scored, device="cpu")
    assert wins == {head: {"rate": rate, "n": 6}}


def test_static_wins_leaves_out_heads_without_a_value(run_dir, moving_pairs):
    """Without prompts the text head has no value: static_wins counts no text items, the other heads all six."""
    from icreward.evaluation.evaluate import head_reward_pairs, static_wins
    from icreward.manifest import load_manifest

    scorer = icreward.load(str(run_dir))
    rewards, scored = head_reward_pairs(scorer, load_manifest(moving_pairs), batch_size=8, device="cpu")
    assert np.isnan(rewards["text"]).all() and np.isfinite(rewards["motion"]).all()
    wins = static_wins(scorer, scored, device="cpu")
    assert set(wins) == {"consistency", "motion", "guidance"}
    assert all(w["n"] == 6 and 0 <= w["rate"] <= 1 and not math.isnan(w["rate"]) for w in wins.values())


def test_unknown_head_in_train_heads_config_is_refused():
    from icreward.models.task_heads import TaskHeadsConfig

    with pytest.raises(ValueError, match="choose from motion, text, guidance"):
        TaskHeadsConfig(heads=["motion", "speed"])
    with pytest.raises(IcrewardError, match="no 'text' head"):
        icreward.load("metric:dynamic-degree").select_head("text")


def test_static_pairs_of_real_videos_join_the_guidance_fit(bench, init_model, tiny_text_encoder):
    """`static_videos` (the recipe passes the real check's `select` half): each video against its frozen copy, its
    jitter and its loop, preferred, counted among guidance's pairs; the weights change."""
    from icreward.evaluation.heads_check import RealVideo
    from icreward.manifest import load_manifest
    from icreward.training.heads import HeadTrainConfig, read_features, train_task_heads

    model = icreward.load(str(init_model))
    train, val = load_manifest(bench / "train.jsonl"), load_manifest(bench / "val.jsonl")
    videos = read_features(model, [train, val], batch_size=8, device="cpu")
    items = []
    for source in _sources(bench)[:4]:
        image, video = _clip(bench, source, model.max_side)
        items.append(RealVideo(source, "bench", f"bench/{source}", image, video, None, "select"))
    config = HeadTrainConfig(text_encoder=tiny_text_encoder, epochs=20, guidance_epochs=100)
    plain = train_task_heads(model, train, val, config, log=lambda _: None, videos=videos)
    static = train_task_heads(model, train, val, config, log=lambda _: None, videos=videos, static_videos=items)
    assert "static_pairs" not in plain["guidance"] and static["guidance"]["static_pairs"] == 3 * len(items)
    assert static["guidance"]["weights"] != plain["guidance"]["weights"]
    assert all(w >= 0 for w in static["guidance"]["weights"].values())
