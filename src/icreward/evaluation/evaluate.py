"""Evaluation runs: score the videos of labelled pair manifests with each model (through the scoring engine) and
measure agreement with the labels; what `icreward eval` and the study both call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from icreward.errors import IcrewardError
from icreward.rules import label_value, pair_failure_modes, source_image

OFFLINE_METRICS = "metrics:offline"
DEFAULT_BENCHMARK = "icbench-synth"


def expand_models(names: Sequence[str]) -> list[str]:
    """Expand `metrics:offline` into every registered metric that needs no pretrained weights."""
    from icreward.loading import list_metrics

    out: list[str] = []
    for name in names:
        expanded = [f"metric:{m}" for m in list_metrics(offline_only=True)] if name == OFFLINE_METRICS else [name]
        out += [n for n in expanded if n not in out]
    return out


def resolve_data(data: str, val: str | None) -> tuple[Path, Path | None]:
    """(test, val) manifests: `icbench-synth` names the embedded benchmark (generated on first use), a folder with a
    `test.jsonl` (what `icreward synth` writes) means that file and the folder's `val.jsonl` where there is one;
    anything else is a manifest path. An explicit `val` wins."""
    if data == DEFAULT_BENCHMARK:
        from icreward.synth.dataset import default_benchmark

        root = default_benchmark()
        return root / "test.jsonl", Path(val) if val else root / "val.jsonl"
    folder = Path(data)
    if folder.is_dir() and (folder / "test.jsonl").is_file():
        found_val = folder / "val.jsonl" if (folder / "val.jsonl").is_file() else None
        return folder / "test.jsonl", Path(val) if val else found_val
    return Path(data), Path(val) if val else None


def pair_modes(rec) -> list[str]:
    """The failure modes a pair tests (`["none"]` for a pair of consistent videos): its per-mode group."""
    return pair_failure_modes(rec.extra.get("mode_a"), rec.extra.get("mode_b")) or ["none"]


def reward_pairs(scorer, manifest, *, batch_size: int, device: str, precision: str = "fp32") -> np.ndarray:
    """Rewards `[n_pairs, 2]` (A, B) for a pair manifest; each distinct (image, video) is scored once."""
    return ensemble_reward_pairs([scorer], manifest, batch_size=batch_size, device=device, precision=precision)[0]


def ensemble_reward_pairs(
    scorers, manifest, *, batch_size: int, device: str, precision: str = "fp32"
) -> list[np.ndarray]:
    """Each scorer's rewards `[n_pairs, 2]` (A, B) for a pair manifest; each distinct (image, video) is decoded once
    for all the scorers (they must sample videos alike, as the fold models of one recipe do)."""
    from icreward.scoring import Item, score_items

    items: dict[tuple[Path, Path], Item] = {}
    for rec in manifest.records:
        for video in (rec.video_a, rec.video_b):
            items.setdefault((rec.image, video), Item(str(len(items)), rec.image, video))
    rewards: dict[str, tuple[float | None, ...]] = {}
    for res in score_items(scorers, list(items.values()), batch_size=batch_size, device=device, precision=precision):
        if res.error:
            names = ", ".join(dict.fromkeys(s.name for s in scorers))
            raise IcrewardError(f"{manifest.path}: cannot score with {names}: {res.error}")
        rewards[res.key] = res.rewards
    keys = [[items[(rec.image, v)].key for v in (rec.video_a, rec.video_b)] for rec in manifest.records]
    return [np.array([[rewards[k][s] for k in pair] for pair in keys]) for s in range(len(scorers))]


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
                points[(rec.image, video)] = (r, score, source_image(rec))
    if len(points) < 3:
        return {}
    pred, target, cluster = zip(*points.values(), strict=True)
    return evaluate_points(np.array(pred), np.array(target), n_resamples=n_resamples, seed=seed, cluster=cluster)


def pair_labels(manifest) -> np.ndarray:
    """The human labels of a pair manifest as +1 (A), -1 (B), 0 (tie)."""
    return np.array([label_value(r.label) for r in manifest.records])


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
        cluster=[source_image(r) for r in test.records],
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


def evaluate_model(
    name: str, test, val, *, n_resamples: int, seed: int, batch_size: int, device: str, precision: str = "fp32"
):
    """Results dict of one model on the test manifest (tie threshold from `val` when given) and its pair rows."""
    from icreward.loading import load

    scorer = load(name)
    rewards = reward_pairs(scorer, test, batch_size=batch_size, device=device, precision=precision)
    val_rewards = None
    if val is not None:
        val_rewards = reward_pairs(scorer, val, batch_size=batch_size, device=device, precision=precision)
    return evaluate_rewards(name, test, rewards, val, val_rewards, n_resamples=n_resamples, seed=seed)
