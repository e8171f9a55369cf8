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
    """Expand `metrics:offline` into every registered consistency metric that needs no pretrained weights (the motion
    and text metrics, `dynamic-degree` and `camera-motion`, are named on their own)."""
    from icreward.loading import list_metrics

    out: list[str] = []
    for name in names:
        offline = list_metrics(offline_only=True, dimension="consistency")
        expanded = [f"metric:{m}" for m in offline] if name == OFFLINE_METRICS else [name]
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
    """Rewards `[n_pairs, 2]` (A, B) for a pair manifest; each distinct (image, video, prompt) is scored once."""
    return ensemble_reward_pairs([scorer], manifest, batch_size=batch_size, device=device, precision=precision)[0]


def _pair_items(manifest) -> tuple[dict, list[list]]:
    """The distinct (image, video, prompt) items of a pair manifest and, per record, the keys of its A and B."""
    from icreward.scoring import Item

    items: dict[tuple, Item] = {}
    for rec in manifest.records:
        for video in (rec.video_a, rec.video_b):
            items.setdefault((rec.image, video, rec.prompt), Item(str(len(items)), rec.image, video, rec.prompt))
    keys = [[items[(rec.image, v, rec.prompt)].key for v in (rec.video_a, rec.video_b)] for rec in manifest.records]
    return items, keys


def ensemble_reward_pairs(
    scorers, manifest, *, batch_size: int, device: str, precision: str = "fp32"
) -> list[np.ndarray]:
    """Each scorer's rewards `[n_pairs, 2]` (A, B) for a pair manifest; each distinct (image, video, prompt) is
    decoded once for all the scorers (they must sample videos alike, as the fold models of one recipe do)."""
    from icreward.scoring import score_items

    items, keys = _pair_items(manifest)
    rewards: dict[str, tuple[float | None, ...]] = {}
    for res in score_items(scorers, list(items.values()), batch_size=batch_size, device=device, precision=precision):
        if res.error:
            names = ", ".join(dict.fromkeys(s.name for s in scorers))
            raise IcrewardError(f"{manifest.path}: cannot score with {names}: {res.error}")
        rewards[res.key] = res.rewards
    return [np.array([[rewards[k][s] for k in pair] for pair in keys]) for s in range(len(scorers))]


def head_reward_pairs(
    scorer, manifest, *, batch_size: int, device: str, precision: str = "fp32"
) -> tuple[dict[str, np.ndarray], dict]:
    """Every head's rewards `[n_pairs, 2]` (NaN where a head has no value, e.g. text without a prompt), from one
    pass per distinct (image, video, prompt), and those items' head values by item key (for the static test)."""
    from icreward.scoring import score_items

    items, keys = _pair_items(manifest)
    values: dict[str, dict[str, float | None]] = {}
    for res in score_items(
        scorer, list(items.values()), batch_size=batch_size, device=device, precision=precision, heads=True
    ):
        if not res.heads:
            raise IcrewardError(f"{manifest.path}: cannot score with {scorer.name}: {res.error}")
        values[res.key] = res.heads[0]
    nan = float("nan")
    out = {
        head: np.array([[nan if values[k][head] is None else values[k][head] for k in pair] for pair in keys])
        for head in scorer.head_names
    }
    return out, {"items": items, "values": values}


def static_wins(scorer, scored: dict, *, device: str, precision: str = "fp32") -> dict[str, dict]:
    """The static test: how often a frozen copy of the image (the image repeated for every frame) scores at least
    as high as a real video of it, per head, over the distinct (image, video, prompt) items of a manifest (`scored`
    from `head_reward_pairs`). Per head: `{"rate", "n"}`; items where the head has no value are left out."""
    from icreward.media import load_image
    from icreward.scoring.engine import batch_heads

    frozen: dict[tuple, dict[str, float | None]] = {}
    counts: dict[str, list[int]] = {head: [0, 0] for head in scorer.head_names}
    for (image, _, prompt), item in scored["items"].items():
        if (image, prompt) not in frozen:
            still = load_image(image, max_side=scorer.max_side)
            video = still[None].expand(scorer.num_frames, -1, -1, -1)
            frozen[(image, prompt)] = batch_heads(scorer, [still], [video], device, precision, [prompt])[0]
        for head, value in scored["values"][item.key].items():
            still_value = frozen[(image, prompt)].get(head)
            if value is None or still_value is None:
                continue
            counts[head][0] += still_value >= value
            counts[head][1] += 1
    return {head: {"rate": wins / n, "n": n} for head, (wins, n) in counts.items() if n}


def _head_label(rec, head: str) -> str | None:
    """A pair's label string for `head`: `labels[HEAD_LABELS[head]]`, for consistency the record's `label` where
    `labels` has no `ic`; None where the record has none."""
    from icreward.interface import HEAD_LABELS

    return rec.labels.get(HEAD_LABELS[head], rec.label if head == "consistency" else None)


def head_labels(manifest, head: str) -> list[int | None]:
    """Each pair's label for `head` (+1 A, -1 B, 0 tie, None where the record has none; see `_head_label`)."""
    return [None if (label := _head_label(rec, head)) is None else label_value(label) for rec in manifest.records]


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
    """Results dict of one model on the test manifest (tie threshold from `val` when given) and its pair rows.

    The results are those of the model's reward (its selected head) against the pairs' `label`, as they always were;
    `heads[HEAD]` has the same keys for every head against the labels of its own dimension (`labels.ic` / `motion` /
    `text` / `overall`, pairs without that label or without a value left out), and `static_wins[HEAD]` how often a
    frozen copy of the image scores at least as high as the real videos (`static_wins`).
    """
    from icreward.loading import load

    scorer = load(name)
    kwargs = {"batch_size": batch_size, "device": device, "precision": precision}
    heads, scored = head_reward_pairs(scorer, test, **kwargs)
    val_heads = head_reward_pairs(scorer, val, **kwargs)[0] if val is not None else None
    main = scorer.selected_head
    result, rows = evaluate_rewards(
        name, test, heads[main], val, None if val is None else val_heads[main], n_resamples=n_resamples, seed=seed
    )
    per_head = {}
    for head, rewards in heads.items():
        sub_test = _head_subset(test, rewards, head)
        if sub_test is None:
            continue
        sub_val = _head_subset(val, val_heads[head], head) if val is not None else None
        per_head[head] = evaluate_rewards(
            name,
            sub_test[0],
            sub_test[1],
            None if sub_val is None else sub_val[0],
            None if sub_val is None else sub_val[1],
            n_resamples=n_resamples,
            seed=seed,
        )[0]
    result["heads"] = per_head
    result["static_wins"] = static_wins(scorer, scored, device=device, precision=precision)
    return result, rows


def _head_subset(manifest, rewards: np.ndarray, head: str):
    """`(manifest, rewards)` restricted to the pairs that have a `head` label and a value of that head on both
    videos, each record relabelled with its `head` label as `label` (what evaluate_rewards reads); None when no pair
    is left."""
    import copy
    import dataclasses

    keep = [
        i
        for i, rec in enumerate(manifest.records)
        if _head_label(rec, head) is not None and np.isfinite(rewards[i]).all()
    ]
    if not keep:
        return None
    sub = copy.copy(manifest)
    sub.records = [dataclasses.replace(manifest.records[i], label=_head_label(manifest.records[i], head)) for i in keep]
    return sub, rewards[keep]
