"""`icreward eval`: score the videos of labelled pair manifests with each model and measure agreement."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from icreward.errors import IcrewardError

LABEL_VALUE = {"A": 1, "B": -1, "tie": 0}
OFFLINE_METRICS = "metrics:offline"
DEFAULT_BENCHMARK = "icbench-synth"


def expand_models(names: Sequence[str]) -> list[str]:
    """Expand `metrics:offline` into every registered metric that needs no pretrained weights."""
    from icreward.scorer import list_metrics

    out: list[str] = []
    for name in names:
        expanded = [f"metric:{m}" for m in list_metrics(offline_only=True)] if name == OFFLINE_METRICS else [name]
        out += [n for n in expanded if n not in out]
    return out


def resolve_data(data: str, val: str | None) -> tuple[Path, Path | None]:
    """`icbench-synth` names the embedded benchmark (generated on first use); anything else is a manifest path."""
    if data == DEFAULT_BENCHMARK:
        from icreward.synth.dataset import default_benchmark

        root = default_benchmark()
        return root / "test.jsonl", Path(val) if val else root / "val.jsonl"
    return Path(data), Path(val) if val else None


def pair_modes(rec) -> list[str]:
    """The failure modes a pair tests: the modes of its two videos other than `none`."""
    modes = {m for m in (rec.extra.get("mode_a"), rec.extra.get("mode_b")) if m and m != "none"}
    return sorted(modes) or ["none"]


def reward_pairs(scorer, manifest, *, batch_size: int, device: str) -> np.ndarray:
    """Rewards `[n_pairs, 2]` (A, B) for a pair manifest; each distinct (image, video) is scored once."""
    from icreward.scoring import Item, score_items

    items: dict[tuple[Path, Path], Item] = {}
    for rec in manifest.records:
        for video in (rec.video_a, rec.video_b):
            items.setdefault((rec.image, video), Item(str(len(items)), rec.image, video))
    rewards: dict[str, float] = {}
    for res in score_items(scorer, list(items.values()), batch_size=batch_size, device=device):
        if res.error:
            raise IcrewardError(f"{manifest.path}: cannot score with {scorer.name}: {res.error}")
        rewards[res.key] = res.reward
    return np.array(
        [[rewards[items[(rec.image, v)].key] for v in (rec.video_a, rec.video_b)] for rec in manifest.records]
    )


def pointwise_agreement(records, rewards: np.ndarray, *, n_resamples: int, seed: int) -> dict:
    """Spearman / Kendall / Pearson (+ intervals) of each distinct video's reward against its label score.

    `rewards` is `[n_pairs, 2]` (A, B) for the pair records; videos without a score are left out, and fewer than
    three scored videos give `{}`.
    """
    from icreward.evaluation.stats import evaluate_points

    points: dict[tuple[Path, Path], tuple[float, float, str]] = {}
    for rec, (ra, rb) in zip(records, rewards, strict=True):
        for video, r, score in ((rec.video_a, ra, rec.score_a), (rec.video_b, rb, rec.score_b)):
            if score is not None:
                points[(rec.image, video)] = (r, score, rec.extra.get("source", str(rec.image)))
    if len(points) < 3:
        return {}
    pred, target, cluster = zip(*points.values(), strict=True)
    return evaluate_points(np.array(pred), np.array(target), n_resamples=n_resamples, seed=seed, cluster=cluster)


def pair_labels(manifest) -> np.ndarray:
    """The human labels of a pair manifest as +1 (A), -1 (B), 0 (tie)."""
    return np.array([LABEL_VALUE[r.label] for r in manifest.records])


def evaluate_rewards(
    name: str,
    test,
    rewards: np.ndarray,
    val=None,
    val_rewards: np.ndarray | None = None,
    *,
    n_resamples: int,
    seed: int,
) -> tuple[dict, list[dict]]:
    """Results dict and pair rows of one model from its rewards `[n_pairs, 2]` (A, B) on the test manifest.

    With `val` and `val_rewards`, the tie threshold is chosen on the validation pairs.
    """
    from icreward.evaluation.report import build_pair_rows
    from icreward.evaluation.stats import evaluate_pairs

    labels = pair_labels(test)
    val_kwargs = {}
    if val is not None and val_rewards is not None:
        val_kwargs = {"val_delta": val_rewards[:, 0] - val_rewards[:, 1], "val_labels": pair_labels(val)}
    result = evaluate_pairs(
        rewards[:, 0] - rewards[:, 1],
        labels,
        groups=[pair_modes(r) for r in test.records],
        cluster=[r.extra.get("source", str(r.image)) for r in test.records],
        n_resamples=n_resamples,
        seed=seed,
        **val_kwargs,
    )
    result.update(pointwise_agreement(test.records, rewards, n_resamples=n_resamples, seed=seed))
    extra = [
        {k: rec.extra.get(k) for k in ("source", "mode_a", "mode_b", "severity_a", "severity_b")}
        | {"score_a": rec.score_a, "score_b": rec.score_b}
        for rec in test.records
    ]
    rows = build_pair_rows(
        name,
        [r.id for r in test.records],
        labels,
        rewards[:, 0],
        rewards[:, 1],
        tie_threshold=result.get("tie_threshold"),
        extra=extra,
    )
    return result, rows


def evaluate_model(name: str, test, val, *, n_resamples: int, seed: int, batch_size: int, device: str):
    """Results dict of one model on the test manifest (tie threshold from `val` when given) and its pair rows."""
    from icreward import load

    scorer = load(name)
    rewards = reward_pairs(scorer, test, batch_size=batch_size, device=device)
    val_rewards = reward_pairs(scorer, val, batch_size=batch_size, device=device) if val is not None else None
    return evaluate_rewards(name, test, rewards, val, val_rewards, n_resamples=n_resamples, seed=seed)


def run_cli(args) -> int:
    from icreward.evaluation.html import write_html_report
    from icreward.evaluation.report import format_per_mode_table, format_table, write_report
    from icreward.manifest import format_skipped, load_manifest

    data_path, val_path = resolve_data(args.data, args.val)
    test = load_manifest(data_path, skip_bad=args.skip_bad, require_labels=True)
    val = load_manifest(val_path, skip_bad=args.skip_bad, require_labels=True) if val_path else None
    for m in (test, val):
        if m is not None and m.kind != "pair":
            raise IcrewardError(f"{m.path}: eval needs pair records (image, video_a, video_b, label)")
        if m is not None and m.skipped:
            print(format_skipped(m), file=sys.stderr)
    from icreward.scorer import DEFAULT_MODEL

    names = expand_models(args.model or [DEFAULT_MODEL])
    results, rows = {}, []
    for name in names:
        start = time.perf_counter()
        results[name], model_rows = evaluate_model(
            name, test, val, n_resamples=args.bootstrap, seed=args.seed, batch_size=args.batch_size, device=args.device
        )
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
        rows += model_rows
    print(f"\n{len(test)} test pairs from {test.path}" + (f", tie threshold chosen on {val.path}" if val else ""))
    print(format_table(results))
    print("\nPairwise accuracy (%) per failure mode (pairs without human ties):")
    print(format_per_mode_table(results))
    if args.report:
        meta = {"data": str(test.path), "val": str(val.path) if val else None, "bootstrap": args.bootstrap}
        write_report(args.report, results, rows, meta=meta)
        write_html_report(args.report, results, rows, title=f"icreward eval: {test.path}", meta=meta)
        print(f"\nreport written to {args.report}")
    return 0
