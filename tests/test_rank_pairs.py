"""`icreward rank --manifest M [--pairs-out F]`: the candidates of many images ranked, and each image's (best, worst)
written as a preference pair manifest."""

import json

import numpy as np
import pytest
from PIL import Image

from icreward.cli import main
from icreward.manifest import load_manifest
from icreward.media import write_video

MODEL = "metric:vbench-i2v-pixel"  # weight-free and fast; the default model's guidance head is the default otherwise


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two images: `cat` with four candidates and an unreadable video under one prompt and two under another
    prompt, `dog` with one candidate."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    records = []
    for name, prompt, shifts in (
        ("cat", "a cat", [0, 1, 3, 8]),
        ("cat", "a cat, camera pans left", [2, 5]),
        ("dog", None, [1]),
    ):
        img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        if not (root / f"{name}.png").exists():
            Image.fromarray(img).save(root / f"{name}.png")
        img = np.asarray(Image.open(root / f"{name}.png"))
        for shift in shifts:
            video = f"videos/{name}-{len(records)}.mp4"
            (root / "videos").mkdir(exist_ok=True)
            noise = rng.normal(0, 4 * shift, (6, 32, 32, 3))  # more noise, further from the image
            frames = np.clip(np.stack([np.roll(img, s, axis=1) for s in range(6)]) + noise, 0, 255).astype(np.uint8)
            write_video(root / video, frames)
            records.append({"id": f"{name}-{len(records)}", "image": f"{name}.png", "video": video})
            if prompt:
                records[-1]["prompt"] = prompt
    (root / "videos" / "broken.mp4").write_text("not a video")
    records.insert(2, {"id": "broken", "image": "cat.png", "video": "videos/broken.mp4", "prompt": "a cat"})
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _rank(args, capsys):
    code = main(["rank", "--model", MODEL, "--num-frames", "6", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_manifest_ranking_and_pairs(data, capsys, tmp_path):
    pairs_out = tmp_path / "dpo" / "pairs.jsonl"
    code, out, err = _rank(["--manifest", str(data / "m.jsonl"), "--json", "--pairs-out", str(pairs_out)], capsys)
    assert code == 1  # the unreadable video: ranked last with its error, the rest still ranked and paired
    groups = [json.loads(line) for line in out.splitlines()]
    assert [(g["image"].rsplit("/", 1)[1], g["prompt"]) for g in groups] == [
        ("cat.png", "a cat"),
        ("cat.png", "a cat, camera pans left"),
        ("dog.png", None),
    ]
    first = groups[0]["ranking"]
    assert [e["rank"] for e in first] == [1, 2, 3, 4, 5] and first[-1]["id"] == "broken" and "error" in first[-1]
    rewards = [e["reward"] for e in first[:4]]
    assert rewards == sorted(rewards, reverse=True) and len(set(rewards)) == 4
    assert "dog.png: 1 scored candidate, no pair" in err

    # the same group ranked with --image/--videos gives the same rewards
    videos = [str(data / "videos" / f"cat-{i}.mp4") for i in range(4)]
    _, single, _ = _rank(["--image", str(data / "cat.png"), "--videos", *videos, "--json"], capsys)
    same = {e["video"]: e["reward"] for e in json.loads(single)["ranking"]}
    assert {e["video"]: e["reward"] for e in first[:4]} == pytest.approx(same)

    manifest = load_manifest(pairs_out, require_labels=True)  # what `icreward train` reads
    assert manifest.kind == "pair" and len(manifest) == 2
    pair, raw = manifest[0], json.loads(pairs_out.read_text().splitlines()[0])
    assert pair.label == "A" and pair.prompt == "a cat"
    assert pair.video_a.resolve() == data / "videos" / f"{first[0]['id']}.mp4"
    assert pair.image.resolve() == data / "cat.png"
    assert str(pair.video_b).endswith(f"{first[3]['id']}.mp4")  # the worst one scored, not the unreadable one
    assert raw["chosen"] == raw["video_a"] and raw["rejected"] == raw["video_b"] and raw["label_0"] == 1.0
    assert raw["reward_a"] == pytest.approx(first[0]["reward"]) and raw["reward_b"] == pytest.approx(first[3]["reward"])
    assert raw["n_candidates"] == 4 and raw["head"] == "consistency" and not raw["image"].startswith("/")


def test_min_gap_leaves_close_groups_out(data, capsys, tmp_path):
    pairs_out = tmp_path / "pairs.jsonl"
    _rank(["--manifest", str(data / "m.jsonl"), "--pairs-out", str(pairs_out), "--min-gap", "1e9"], capsys)
    assert pairs_out.read_text() == ""
    code, _, err = _rank(
        ["--manifest", str(data / "m.jsonl"), "--pairs-out", str(pairs_out), "--min-gap", "-1"], capsys
    )
    assert code == 2 and "--min-gap" in err


def test_several_manifests_with_the_same_ids(data, capsys, tmp_path):
    """Two best-of-n runs each name their candidates by seed: the pairs still get unique ids, and paths resolve
    from each manifest's own folder."""
    other = data / "again"
    other.mkdir(exist_ok=True)
    lines = [json.loads(line) for line in (data / "m.jsonl").read_text().splitlines()]
    moved = [
        {**r, "image": f"../{r['image']}", "video": f"../{r['video']}", "prompt": "again"}
        for r in lines
        if r.get("prompt") == "a cat"
    ]
    (other / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in moved))
    pairs_out = tmp_path / "pairs.jsonl"
    code, _, _ = _rank(
        ["--manifest", str(data / "m.jsonl"), str(other / "m.jsonl"), "--pairs-out", str(pairs_out)], capsys
    )
    assert code == 1  # the unreadable video again
    manifest = load_manifest(pairs_out)  # duplicate ids would fail here
    assert len(manifest) == 3 and len({r.id for r in manifest}) == 3
    assert [r.prompt for r in manifest] == ["a cat", "a cat, camera pans left", "again"]
    assert manifest[2].id == manifest[0].id + "#1"  # the same candidates under another prompt: the same pair


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--image", "{d}/cat.png", "--videos", "{d}/videos/cat-0.mp4", "--pairs-out", "{t}/p.jsonl"],
            "needs --manifest",
        ),
        (["--manifest", "{d}/m.jsonl", "--image", "{d}/cat.png"], "without --image"),
        (["--manifest", "{d}/m.jsonl", "--pairs-out", "{d}/m.jsonl"], "--pairs-out"),
        (["--manifest", "{d}/nope.jsonl"], "manifest file not found"),
        ([], "give --image"),
    ],
)
def test_clear_errors(data, capsys, tmp_path, args, message):
    code, _, err = _rank([a.format(d=data, t=tmp_path) for a in args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_pair_manifest_is_refused(data, capsys, tmp_path):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(
        json.dumps(
            {
                "id": "x",
                "image": str(data / "cat.png"),
                "video_a": str(data / "videos" / "cat-0.mp4"),
                "video_b": str(data / "videos" / "cat-1.mp4"),
                "label": "A",
            }
        )
        + "\n"
    )
    code, _, err = _rank(["--manifest", str(pairs)], capsys)
    assert code == 2 and "holds pair records" in err
