"""The HTML report as a reader sees it: rendered by headless Chromium at laptop widths, every setting and every
model name must be on screen, and nothing may push the page sideways.

Needs Playwright (the Python package only, in the test extras; its own browser download is not used) and a
Chromium binary: `pip install playwright` and `apt-get install -y chromium` (Debian/Ubuntu), or
`ICREWARD_CHROMIUM=/path/to/chrome`. Skips with the reason when either is missing. Screenshots of each width land
in the test's tmp_path.
"""

import os
import shutil

import numpy as np
import pytest

from icreward.evaluation import build_pair_rows, evaluate_pairs
from icreward.evaluation.html import _meta_value, write_html_report

pytestmark = pytest.mark.slow  # a report with every plot and a browser start: ~12 s on 2 CPU cores

WIDTHS = (1400, 1024)
MODES = ["subject_drift", "color_drift", "flicker", "content_replacement", "subject_vanish", "first_frame_mismatch"]
# the study's eight rows: long names, two groups
MODELS = {
    "learned:mlp": "learned",
    "learned:icreward": "learned",
    "metric:color-hist": "handcrafted",
    "metric:first-frame-mse": "handcrafted",
    "metric:first-frame-psnr": "handcrafted",
    "metric:first-frame-ssim": "handcrafted",
    "metric:vbench-i2v-hog": "handcrafted",
    "metric:vbench-i2v-pixel": "handcrafted",
}
LONG = "/home/someone/experiments/2025-06-icreward-study/data/icbench-synth-holdout-flicker-subject_duplicate"
# what `icreward experiment` writes: paths, lists, a big nested config (dataclasses.asdict) and timings per model
META = {
    "train": f"{LONG}/train_all_pairs.jsonl",
    "test": f"{LONG}/test.jsonl",
    "val": None,
    "holdout_modes": ["flicker", "subject_duplicate"],
    "folds": 5,
    "seeds": [0, 1, 2],
    "config": {
        "data": LONG,
        "out": "reports/study-with-a-rather-long-output-folder-name",
        "holdout_modes": [],
        "epochs": 12,
        "num_frames": 16,
        "backbone": "hf:facebook/dinov2-small",
        "backbone_policy": "frozen",
        "models": ["mlp", "icreward"],
        "metrics": ["metrics:offline"],
        "bootstrap": 1000,
        "all_pairs": True,
        "tie_margin": 0.05,
        "recipes": {
            "mlp": {"model_type": "mlp", "lr": 0.001, "batch_size": 16},
            "icreward": {"model_type": "icreward", "lr": 0.0005, "model": {"d_model": 64, "head_bound": 1.0}},
        },
        "model_kwargs": '{"evidence": true, "head_bound": 1.0, "a_json_string_without_spaces":"xxxxxxxxxxxxxxxxxxx"}',
    },
    "seconds": {name: 12.5 * (i + 1) for i, name in enumerate(MODELS)},
    "total_seconds": 812.3,
}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("ICREWARD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def leaf_settings(meta, prefix=()):
    """(key path, displayed text) of every value the settings list shows, nested mappings flattened."""
    for key, value in meta.items():
        if isinstance(value, dict) and value:
            yield from leaf_settings(value, (*prefix, key))
        else:
            yield ".".join((*prefix, key)), _meta_value(value)


def study_like_report(out):
    rng = np.random.default_rng(0)
    n = 90
    modes = rng.choice(["none", *MODES], size=(n, 2))
    severity = np.where(modes == "none", 0.0, rng.uniform(0.15, 1.0, size=(n, 2)))
    score = 1 - 0.6 * severity + rng.normal(0, 0.03, size=(n, 2))
    labels = np.where(np.abs(score[:, 0] - score[:, 1]) <= 0.05, 0, np.sign(score[:, 0] - score[:, 1])).astype(int)
    sources = [f"src{i // 3}" for i in range(n)]
    groups = [sorted({m for m in pair if m != "none"}) or ["none"] for pair in modes]
    extra = [
        {"source": s, "mode_a": a, "mode_b": b, "severity_a": sa, "severity_b": sb}
        for s, (a, b), (sa, sb) in zip(sources, modes, severity, strict=True)
    ]
    results, rows, seeds = {}, [], {}
    for i, name in enumerate(MODELS):
        rewards = (0.3 + 0.2 * i) * score + rng.normal(0, 0.2, size=score.shape)
        delta = rewards[:, 0] - rewards[:, 1]
        results[name] = evaluate_pairs(delta, labels, val_delta=delta, val_labels=labels, groups=groups, n_resamples=30)
        ids = [f"pair-{k:04d}" for k in range(n)]
        rows += build_pair_rows(
            name, ids, labels, *rewards.T, tie_threshold=results[name]["tie_threshold"], extra=extra
        )
        if MODELS[name] == "learned":
            accs = [results[name]["pair_accuracy"] + d for d in (-0.03, 0.0, 0.02)]
            seeds[name] = [{"pair_accuracy": a} for a in accs]
            results[name]["seed_mean"], results[name]["seed_std"] = float(np.mean(accs)), float(np.std(accs, ddof=1))
    image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    attention = [
        {"id": "pair-0001", "title": "flicker", "image": image, "frames": np.repeat(image[None], 8, axis=0)}
        | {"heatmaps": rng.random((8, 6, 8))}
    ]
    title = f"icreward experiment: learned rewards against handcrafted metrics on {LONG}/test.jsonl"
    return write_html_report(
        out,
        results,
        rows,
        title=title,
        meta=META,
        holdout_modes=["flicker", "subject_vanish"],
        model_groups=MODELS,
        seed_results=seeds,
        attention=attention,
    )


# Everything measured in one pass over the page, found by text and headings rather than by the report's classes:
# the page's own width, elements sticking out of the window (inside a table that scrolls in its own container too,
# unless `tablesMayScroll`), each table against its container, and for each settings value (the deepest element
# before the Results heading with exactly its text; keys and headings left out) and each model name (the results
# table's first column) whether it is on screen: its box inside the window and the element itself found at its
# first character once scrolled into view.
MEASURE = """([values, tablesMayScroll]) => {
  const W = window.innerWidth;
  const onScreen = (el) => {
    el.scrollIntoView({block: "center", inline: "nearest"});
    const r = el.getBoundingClientRect();
    const hit = document.elementFromPoint(r.left + Math.min(4, r.width / 2), r.top + r.height / 2);
    return {text: el.textContent.trim(), left: r.left, right: r.right, width: r.width, height: r.height,
            hit: hit !== null && (el === hit || el.contains(hit))};
  };
  const scrolls = (el) => ["auto", "scroll"].includes(getComputedStyle(el).overflowX);
  const inScroller = (el) => {
    const table = el.closest("table");
    return table !== null && table.parentElement !== null && scrolls(table.parentElement);
  };
  const outside = [...document.body.querySelectorAll("*")]
    .filter((el) => !(tablesMayScroll && inScroller(el)))
    .map((el) => [el, el.getBoundingClientRect()])
    .filter(([el, r]) => r.width > 0 && (r.right > W + 0.5 || r.left < -0.5))
    .map(([el, r]) => `<${el.tagName.toLowerCase()}> ${el.textContent.slice(0, 40)}: right ${r.right}`);
  const heading = [...document.querySelectorAll("h2")].find((h) => h.textContent.trim() === "Results");
  const before = [...document.body.querySelectorAll("*")].filter(
    (el) => heading.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_PRECEDING && !el.contains(heading)
      && !el.closest("dt, th, summary, h1"));
  const used = new Set();
  const settings = values.map((text) => {
    const el = before.find((e) => !used.has(e) && e.textContent.trim() === text
      && ![...e.children].some((c) => c.textContent.trim() === text));
    if (el === undefined) return {text: text, missing: true};
    used.add(el);
    return onScreen(el);
  });
  let results = heading.nextElementSibling;
  results = results.matches("table") ? results : results.querySelector("table");
  const models = [...results.querySelectorAll("tr")].slice(1).map((tr) => onScreen(tr.children[0]));
  window.scrollTo(0, 0);
  return {
    width: W,
    scrollWidth: document.documentElement.scrollWidth,
    outside: outside,
    tables: [...document.querySelectorAll("table")].map(
      (t) => [Math.round(t.getBoundingClientRect().width), t.parentElement.clientWidth]),
    settings: settings,
    models: models,
    cellRights: [...results.querySelectorAll("th, td")].map((td) => td.getBoundingClientRect().right),
  };
}"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the Python package)")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium: apt-get install -y chromium, or set ICREWARD_CHROMIUM to a Chrome/Chromium binary")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return study_like_report(tmp_path_factory.mktemp("report"))


@pytest.mark.parametrize("width", WIDTHS)
def test_report_reads_at_laptop_width(browser, report, tmp_path, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    page.screenshot(path=tmp_path / f"report-{width}.png", full_page=True)
    expected = [text for _, text in leaf_settings(META)]
    seen = page.evaluate(MEASURE, [expected, width < 1400])
    page.close()

    assert seen["scrollWidth"] <= seen["width"], f"the page scrolls sideways at {width} px"
    assert seen["outside"] == [], f"elements beyond the {width} px window: {seen['outside'][:5]}"

    missing = [s["text"] for s in seen["settings"] if s.get("missing")]
    assert missing == [], f"settings values not shown as text of their own: {missing}"
    for s in seen["settings"]:
        assert s["width"] > 0 and s["height"] > 0, s
        assert 0 <= s["left"] and s["right"] <= width, s
        assert s["hit"], f"settings value not on screen: {s}"

    assert [c["text"] for c in seen["models"]] == list(MODELS)
    for cell in seen["models"]:
        assert cell["hit"] and 0 <= cell["left"] and cell["right"] <= width, cell
    if width >= 1400:  # every table fits its container; narrower, a table may scroll inside it (never the page)
        assert max(seen["cellRights"]) <= width
        assert all(table <= container for table, container in seen["tables"]), seen["tables"]
