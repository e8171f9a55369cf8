import csv
import math
import re

import numpy as np
import pytest
from PIL import Image

from icreward.evaluation import build_pair_rows, evaluate_pairs, write_report
from icreward.evaluation.html import seen_vs_heldout, write_html_report
from icreward.evaluation.stats import bootstrap_ci

MODES = ["subject_drift", "color_drift", "flicker", "content_replacement", "subject_vanish"]
HOLDOUT = ["content_replacement", "subject_vanish"]
MODELS = {"metric:pixel": ("handcrafted", 0.4), "mlp": ("learned", 1.0), "<b>x</b>": ("learned", 2.0)}
ALL_PLOTS = {"accuracy.png", "reward_vs_label.png", "per_mode.png", "per_severity.png", "seen_vs_heldout.png"}


def fake_evaluation(seed=0, n_pairs=120):
    """results and pair rows of three models on the same pairs, built with the real stats functions."""
    rng = np.random.default_rng(seed)
    modes = rng.choice(["none", *MODES], size=(n_pairs, 2))
    severity = np.where(modes == "none", 0.0, rng.uniform(0.15, 1.0, size=(n_pairs, 2))).round(3)
    score = 1 - 0.6 * severity + rng.normal(0, 0.03, size=(n_pairs, 2))
    labels = np.where(np.abs(score[:, 0] - score[:, 1]) <= 0.05, 0, np.sign(score[:, 0] - score[:, 1])).astype(int)
    sources = [f"src{i // 4}" for i in range(n_pairs)]
    groups = [sorted({m for m in pair if m != "none"}) or ["none"] for pair in modes]
    extra = [
        {"source": s, "mode_a": a, "mode_b": b, "severity_a": sa, "severity_b": sb}
        for s, (a, b), (sa, sb) in zip(sources, modes, severity, strict=True)
    ]
    results, rows = {}, []
    for name, (_, quality) in MODELS.items():
        rewards = quality * score + rng.normal(0, 0.2, size=score.shape)
        delta = rewards[:, 0] - rewards[:, 1]
        results[name] = evaluate_pairs(
            delta, labels, val_delta=delta[::-1], val_labels=labels, groups=groups, cluster=sources, n_resamples=50
        )
        ids = [f"p{i}" for i in range(n_pairs)]
        tie_threshold = results[name]["tie_threshold"]
        rows += build_pair_rows(name, ids, labels, *rewards.T, tie_threshold=tie_threshold, extra=extra)
    return results, rows


def attention_entries(rng, n=2, t=5):
    image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    frames = np.repeat(image[None], t, axis=0)
    heatmaps = rng.random((t, 4, 4))
    entry = {"title": "drift & <fade>", "frames": frames, "image": image, "heatmaps": heatmaps}
    return [{"id": f"v{i}", **entry} for i in range(n)]


def linked_files(index):
    return set(re.findall(r'<img src="([^"]+)"', index.read_text()))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results, rows = fake_evaluation()
    seed_results = {m: [{"pair_accuracy": results[m]["pair_accuracy"] + d} for d in (-0.02, 0.01)] for m in MODELS}
    index = write_html_report(
        out,
        results,
        rows,
        title="<script>alert(1)</script> test",
        meta={"data": "a & b.jsonl", "seeds": [0, 1], "timings": {"mlp": 1.5}},
        holdout_modes=HOLDOUT,
        model_groups={m: group for m, (group, _) in MODELS.items()},
        seed_results=seed_results,
        attention=attention_entries(np.random.default_rng(0)),
    )
    return out, index, results, rows


def test_full_report_links_every_png_and_each_opens(full_report):
    out, index, _, _ = full_report
    assert index == out / "index.html"
    linked = linked_files(index)
    assert linked == ALL_PLOTS | {"attention_00.png", "attention_01.png"}
    assert linked == {p.name for p in out.glob("*.png")}
    for name in linked:
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width >= 300 and image.height >= 150
            assert np.asarray(image.convert("L")).std() > 5  # not a blank canvas


def test_full_report_tables_and_captions(full_report):
    _, index, results, _ = full_report
    page = index.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower()
    assert page.count("<figure>") == page.count("</figure>") == page.count("<figcaption>") == 7
    assert "(optimistic)" in page and "content_replacement †" in page
    best = max(results, key=lambda m: results[m]["pair_accuracy"])
    assert f'<b>{100 * results[best]["pair_accuracy"]:.1f} <span class="sub">[' in page  # the interval below
    assert '<dt>seeds</dt><dd class="value">0, 1</dd>' in page  # settings: lists comma-separated
    assert '<dt>timings</dt><dd><dl class="fields"><div><dt>mlp</dt><dd class="value">1.5</dd>' in page  # nested


def test_strings_are_escaped(full_report):
    _, index, _, _ = full_report
    page = index.read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; test" in page
    assert "a &amp; b.jsonl" in page and "drift &amp; &lt;fade&gt;" not in page  # attention titles live in PNGs


def test_files_are_written_atomically(full_report, tmp_path):
    out, _, results, rows = full_report
    assert not list(out.glob("*.partial")) and not list(out.glob(".*"))
    (tmp_path / "index.html").write_text("old")
    bad = attention_entries(np.random.default_rng(1), n=1)
    bad[0]["heatmaps"] = bad[0]["heatmaps"][:2]  # fewer maps than frames: fails before any file is written
    with pytest.raises(ValueError, match="one heatmap per frame"):
        write_html_report(tmp_path, results, rows, title="t", attention=bad)
    assert (tmp_path / "index.html").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]


def test_minimal_report_from_csv_rows(tmp_path):
    """No seeds, attention, groups or holdout, and rows read back from pairs.csv (every value a string)."""
    results, rows = fake_evaluation(seed=1, n_pairs=60)
    write_report(tmp_path / "data", results, rows)
    with open(tmp_path / "data" / "pairs.csv") as f:
        csv_rows = list(csv.DictReader(f))
    index = write_html_report(tmp_path / "html", results, csv_rows, title="minimal")
    assert linked_files(index) == ALL_PLOTS - {"seen_vs_heldout.png"}
    assert linked_files(index) == {p.name for p in index.parent.glob("*.png")}
    assert "†" not in index.read_text()


def test_report_with_missing_values_skips_plots(tmp_path):
    results = {"empty": {}, "nan": {"pair_accuracy": float("nan"), "n_pairs": 0}, "ok": {"pair_accuracy": 0.7}}
    index = write_html_report(tmp_path, results, [], title="sparse", holdout_modes=["flicker"])
    assert linked_files(index) == {"accuracy.png"}
    page = index.read_text()
    assert "70.0" in page and "<b>" not in page  # a single value is not marked best
    assert "Accuracy per failure mode" not in page


def test_seen_vs_heldout_matches_hand_computation():
    rows = [
        {"model": "m", "mode_a": "none", "mode_b": "flicker", "correct": 1, "source": "s0"},
        {"model": "m", "mode_a": "blur", "mode_b": "flicker", "correct": 0, "source": "s0"},
        {"model": "m", "mode_a": "none", "mode_b": "none", "correct": "0.5", "source": "s1"},  # no mode: seen
        {"model": "m", "mode_a": "vanish", "mode_b": "flicker", "correct": 1, "source": "s1"},  # any held-out one
        {"model": "m", "mode_a": "vanish", "mode_b": "none", "correct": 0, "source": "s2"},
        {"model": "m", "mode_a": "vanish", "mode_b": "none", "correct": 1, "source": "s2"},
        {"model": "m", "mode_a": "vanish", "mode_b": "none", "correct": None, "source": "s2"},  # human tie
        {"model": "m", "mode_a": "blur", "mode_b": "none", "correct": "", "source": "s3"},  # tie, from a CSV
        {"model": "n", "mode_a": "blur", "mode_b": "none", "correct": None, "source": "s3"},
    ]
    split = seen_vs_heldout(rows, ["vanish"], n_resamples=200, seed=3)
    acc, lo, hi, n = split["m"]["seen"]
    assert (acc, n) == (pytest.approx(1.5 / 3), 3)
    assert (lo, hi) == bootstrap_ci(np.mean, np.array([1, 0, 0.5]), n_resamples=200, seed=3, groups=["s0", "s0", "s1"])
    acc, lo, hi, n = split["m"]["heldout"]
    assert (acc, n) == (pytest.approx(2 / 3), 3)
    assert (lo, hi) == bootstrap_ci(np.mean, np.array([1.0, 0, 1]), n_resamples=200, seed=3, groups=["s1", "s2", "s2"])
    assert split["n"]["seen"][3] == split["n"]["heldout"][3] == 0 and math.isnan(split["n"]["seen"][0])
