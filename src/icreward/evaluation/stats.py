"""Evaluation statistics of reward models: pairwise accuracy with and without ties, correlations, bootstrap CIs.

Pure functions on numpy arrays (no torch, no I/O). Conventions shared by every pair function:

- `delta = r_A - r_B`, shape (n,): the model's reward difference for each pair (A, B);
- `labels`, shape (n,): the human verdict, +1 = A preferred, -1 = B preferred, 0 = tie.

Accuracy without ties is VideoReward's: correct / (pairs humans did not tie). Accuracy with ties follows
"Ties Matter" (Deutsch et al. 2023): the model predicts a tie when |delta| <= eps, and a pair counts as correct
when the prediction equals the human label, ties included; eps is chosen on validation data, because choosing it
on the test set itself is optimistic (that figure is reported too, labelled `test_swept`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence

import numpy as np
from scipy import stats as sps

_RESAMPLE_CHUNK = 1 << 22  # indices drawn per chunk of resamples, bounding memory at ~32 MB whatever n is


def _check_pairs(delta: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    delta = np.asarray(delta, dtype=np.float64)
    labels = np.asarray(labels)
    if delta.ndim != 1 or delta.shape != labels.shape:
        raise ValueError(f"delta and labels must be 1-D of the same length, got {delta.shape} and {labels.shape}")
    bad = np.flatnonzero(~np.isfinite(delta))
    if bad.size:
        raise ValueError(f"delta is NaN or infinite at pairs {bad[:10].tolist()}; drop or report them first")
    if not np.isin(labels, (-1, 0, 1)).all():
        raise ValueError("labels must be +1 (A preferred), -1 (B preferred) or 0 (tie)")
    return delta, labels.astype(np.int64)


def _nontie_credit(delta: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-pair credit for accuracy without ties: 1 right sign, 0 wrong sign, 0.5 for delta == 0; 0 on human ties."""
    credit = np.where(delta == 0, 0.5, (np.sign(delta) == labels).astype(np.float64))
    return np.where(labels != 0, credit, 0.0)


def predicted_labels(delta: np.ndarray, eps: float) -> np.ndarray:
    """A model's label of each pair from its reward difference `delta = r_A - r_B`: 0 (tie) when |delta| <= eps, else
    the sign of delta (+1 A, -1 B). The one rule, and the one float edge, for calling a tie from rewards."""
    delta = np.asarray(delta, dtype=np.float64)
    return np.where(np.abs(delta) <= eps, 0, np.sign(delta)).astype(np.int64)


def _tie_correct(delta: np.ndarray, labels: np.ndarray, eps: float) -> np.ndarray:
    """Per-pair 0/1: the prediction (`predicted_labels`) equals the human label."""
    return (predicted_labels(delta, eps) == labels).astype(np.float64)


def pair_accuracy(delta: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy over the pairs humans did not tie (VideoReward's "without ties"); best value 1.

    A model delta of exactly 0 on such a pair is a coin flip and counts 0.5. NaN when every pair is a human tie.
    """
    delta, labels = _check_pairs(delta, labels)
    nontie = labels != 0
    if not nontie.any():
        return float("nan")
    return float(_nontie_credit(delta, labels)[nontie].mean())


def pair_accuracy_ties(delta: np.ndarray, labels: np.ndarray, eps: float) -> float:
    """Accuracy with ties ("Ties Matter"): predict a tie when |delta| <= eps, else the sign of delta.

    Returns (correct non-tie predictions + pairs both call a tie) / all pairs; best value 1. NaN for no pairs.
    """
    delta, labels = _check_pairs(delta, labels)
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    if delta.size == 0:
        return float("nan")
    return float(_tie_correct(delta, labels, eps).mean())


def best_tie_threshold(delta: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The eps maximising `pair_accuracy_ties` over 0 and every distinct |delta|, and that accuracy.

    Only these candidates matter: accuracy changes only where eps crosses some |delta|. Equally good thresholds
    resolve to the smallest. O(n log n): sort |delta| once; with eps at the k-th smallest |delta|, the k pairs at
    or below it are predicted ties (right where the label is a tie) and the rest take the sign of delta.
    Returns (0.0, nan) for no pairs.
    """
    delta, labels = _check_pairs(delta, labels)
    if delta.size == 0:
        return 0.0, float("nan")
    order = np.argsort(np.abs(delta), kind="stable")
    magnitude = np.abs(delta)[order]
    tie_right = np.concatenate([[0], np.cumsum(labels[order] == 0)])  # [k]: ties among the k smallest
    sign_right = np.concatenate([[0], np.cumsum(np.sign(delta[order]) == labels[order])])
    candidates = np.unique(np.concatenate([[0.0], magnitude]))  # sorted, so argmax's first hit is the smallest
    k = np.searchsorted(magnitude, candidates, side="right")  # pairs predicted tie at each candidate
    correct = tie_right[k] + sign_right[-1] - sign_right[k]  # integer counts: no float ties to break
    best = int(np.argmax(correct))
    return float(candidates[best]), float(correct[best] / delta.size)


def correlations(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Spearman, Kendall tau-b and Pearson correlation of `pred` with `target`, both shape (n,), via scipy.stats.

    Ties take scipy's defaults: average ranks (Spearman) and tau-b's tie correction (Kendall). NaN, not an error,
    where a correlation is undefined: fewer than 2 points or a constant input. NaN in the inputs propagates.
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.ndim != 1 or pred.shape != target.shape:
        raise ValueError(f"pred and target must be 1-D of the same length, got {pred.shape} and {target.shape}")
    nan = float("nan")
    if pred.size < 2 or np.isnan(pred).any() or np.isnan(target).any() or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return {"spearman": nan, "kendall": nan, "pearson": nan}
    return {
        "spearman": float(sps.spearmanr(pred, target).statistic),
        "kendall": float(sps.kendalltau(pred, target).statistic),
        "pearson": float(sps.pearsonr(pred, target).statistic),
    }


def _units(n: int, groups: Sequence[Hashable] | np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """What a bootstrap resamples: rows (members None) or whole groups, as (group id per row, rows per group).

    Group ids follow first appearance, so any hashable labels work (strings, ints, tuples, None).
    """
    if groups is None:
        return np.arange(n), None
    if len(groups) != n:
        raise ValueError(f"groups must give one label per row ({n}), got {len(groups)}")
    ids: dict[Hashable, int] = {}
    labels = groups.tolist() if isinstance(groups, np.ndarray) else groups
    group_of_row = np.array([ids.setdefault(g, len(ids)) for g in labels], dtype=np.int64)
    order = np.argsort(group_of_row, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(group_of_row, minlength=len(ids)))[:-1])
    return group_of_row, members


def _draws(n_units: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of resamples, each (chunk, n_units) unit indices drawn with replacement; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _RESAMPLE_CHUNK // max(n_units, 1))
    for start in range(0, n_resamples, chunk):
        yield rng.integers(0, n_units, size=(min(chunk, n_resamples - start), n_units))


def _percentile_interval(distribution: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 of a bootstrap distribution, leaving out non-finite resamples (NaN: none)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    alpha = (1 - level) / 2
    finite = np.where(np.isfinite(distribution), distribution, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, which is the answer
        lo, hi = np.nanquantile(finite, [alpha, 1 - alpha], axis=0)
    return lo, hi


def _bootstrap_distribution(
    statistic: Callable[..., float | np.ndarray],
    arrays: Sequence[np.ndarray],
    n_resamples: int,
    seed: int,
    groups: Sequence[Hashable] | np.ndarray | None,
) -> np.ndarray:
    """The statistic on each resample, shape (n_resamples, k) (k = 1 for a scalar statistic)."""
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("all arrays must have the same number of rows")
    _, members = _units(n, groups)
    n_units = n if members is None else len(members)
    values = []
    for draws in _draws(n_units, n_resamples, seed):
        for units in draws:
            rows = units if members is None else np.concatenate([members[u] for u in units])
            values.append(np.atleast_1d(statistic(*(a[rows] for a in arrays))))
    return np.asarray(values, dtype=np.float64)


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    groups: Sequence[Hashable] | np.ndarray | None = None,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(*arrays)`, resampling rows (the same rows of every array).

    With `groups` (one label per row, e.g. the source image of each pair, whose pairs are correlated) whole groups
    are resampled instead: the cluster bootstrap. Resamples on which the statistic is NaN (e.g. no non-tie pair
    drawn) are left out; (nan, nan) when all are. Deterministic for a seed; the same seed draws the same resamples
    as `evaluate_pairs` and `evaluate_points`, so their intervals can be reproduced with this function.
    """
    if len(arrays) == 0 or len(arrays[0]) == 0:
        return float("nan"), float("nan")
    distribution = _bootstrap_distribution(statistic, arrays, n_resamples, seed, groups)
    lo, hi = _percentile_interval(distribution[:, 0], level)
    return float(lo), float(hi)


def _bootstrap_mean_ci(
    credit: np.ndarray,
    counted: np.ndarray,
    n_resamples: int,
    seed: int,
    groups: Sequence[Hashable] | np.ndarray | None,
    level: float = 0.95,
) -> tuple[float, float]:
    """Interval of sum(credit) / sum(counted) over resamples: accuracies, vectorised over all resamples at once.

    Draws exactly the resamples `bootstrap_ci` draws for the same seed and groups. A cluster resample's sums are
    sums of per-group totals, so rows need not be gathered.
    """
    if n_resamples < 1:  # no resamples asked for: no interval
        return math.nan, math.nan
    group_of_row, members = _units(len(credit), groups)
    if members is not None:
        credit = np.bincount(group_of_row, weights=credit)
        counted = np.bincount(group_of_row, weights=counted)
    ratios = []
    for draws in _draws(len(credit), n_resamples, seed):
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios.append(credit[draws].sum(axis=1) / counted[draws].sum(axis=1))
    lo, hi = _percentile_interval(np.concatenate(ratios), level)
    return float(lo), float(hi)


def _group_membership(groups: Sequence[Iterable[str | None]], n: int) -> dict[str, np.ndarray]:
    """{group name: bool mask (n,)}; a pair listing a group twice is counted once, None names are skipped.

    A bare string is one name (not an iterable of one-letter names).
    """
    if len(groups) != n:
        raise ValueError(f"groups must give one iterable of names per pair ({n}), got {len(groups)}")
    masks: dict[str, np.ndarray] = {}
    for i, names in enumerate(groups):
        for name in (names,) if isinstance(names, str) else names:
            if name is not None:
                masks.setdefault(str(name), np.zeros(n, dtype=bool))[i] = True
    return dict(sorted(masks.items()))


def per_group_accuracy(
    delta: np.ndarray, labels: np.ndarray, groups: Sequence[Iterable[str | None]]
) -> dict[str, dict[str, float | int]]:
    """Accuracy without ties within each group; a pair may belong to several groups.

    `groups[i]` names the groups of pair i, e.g. `(mode_a, mode_b)`: a pair of a `subject_drift` video and a
    `flicker` video counts in both modes (once in a group it names twice). Returns, sorted by group name,
    `{group: {"pair_accuracy": ..., "n_pairs": pairs in the group, "n_nontie_pairs": pairs the accuracy is over}}`;
    the accuracy is NaN where the group has only human ties.
    """
    delta, labels = _check_pairs(delta, labels)
    credit = _nontie_credit(delta, labels)
    nontie = labels != 0
    result = {}
    for name, mask in _group_membership(groups, len(delta)).items():
        n_nontie = int((mask & nontie).sum())
        accuracy = float(credit[mask].sum() / n_nontie) if n_nontie else float("nan")
        result[name] = {"pair_accuracy": accuracy, "n_pairs": int(mask.sum()), "n_nontie_pairs": n_nontie}
    return result


def evaluate_pairs(
    delta: np.ndarray,
    labels: np.ndarray,
    *,
    val_delta: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    groups: Sequence[Iterable[str | None]] | None = None,
    cluster: Sequence[Hashable] | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Everything pairwise about one model on one test set, as a JSON-ready dict.

    `val_delta`/`val_labels`: the same model on validation pairs, where the tie threshold is chosen (they must be
    on the test deltas' scale: same model, same normalisation). `groups`: per pair, the names of its groups (e.g.
    failure modes of both videos) for `per_mode`. `cluster`: per pair, the unit the bootstrap resamples (e.g. the
    source image), since pairs of one image are correlated; rows when None. Intervals are 95% percentile bootstrap.

    Keys, each present only where the data can give it (never null):
    `n_pairs`, `n_nontie_pairs`; `pair_accuracy`, `pair_accuracy_ci` [lo, hi] (needs a non-tie pair);
    `tie_threshold` (eps chosen on validation), `n_val_pairs`, `pair_accuracy_ties`, `pair_accuracy_ties_ci`
    (need validation data); `pair_accuracy_ties_test_swept`, `tie_threshold_test_swept` (eps maximised on the
    test set itself: optimistic, for comparison with papers that report it); `per_mode` {group: accuracy} and
    `per_mode_n` {group: non-tie pairs it is over} for the groups that have a non-tie pair.
    """
    if (val_delta is None) != (val_labels is None):
        raise ValueError("give both val_delta and val_labels, or neither")
    delta, labels = _check_pairs(delta, labels)
    n_nontie = int((labels != 0).sum())
    result: dict = {"n_pairs": int(delta.size), "n_nontie_pairs": n_nontie}
    if delta.size == 0:
        return result
    if n_nontie:
        result["pair_accuracy"] = pair_accuracy(delta, labels)
        ci = _bootstrap_mean_ci(_nontie_credit(delta, labels), labels != 0, n_resamples, seed, cluster)
        result["pair_accuracy_ci"] = _ci_or_none(ci)
    if val_delta is not None and len(val_delta) > 0:
        eps, _ = best_tie_threshold(val_delta, val_labels)
        result["tie_threshold"] = eps
        result["n_val_pairs"] = len(val_delta)
        result["pair_accuracy_ties"] = pair_accuracy_ties(delta, labels, eps)
        ci = _bootstrap_mean_ci(_tie_correct(delta, labels, eps), np.ones(delta.size), n_resamples, seed, cluster)
        result["pair_accuracy_ties_ci"] = _ci_or_none(ci)
    eps_swept, accuracy_swept = best_tie_threshold(delta, labels)
    result["pair_accuracy_ties_test_swept"] = accuracy_swept
    result["tie_threshold_test_swept"] = eps_swept
    if groups is not None:
        per_group = {k: v for k, v in per_group_accuracy(delta, labels, groups).items() if v["n_nontie_pairs"]}
        result["per_mode"] = {k: v["pair_accuracy"] for k, v in per_group.items()}
        result["per_mode_n"] = {k: v["n_nontie_pairs"] for k, v in per_group.items()}
    return {k: v for k, v in result.items() if v is not None}


def _ci_or_none(ci: tuple[float, float]) -> list[float] | None:
    return list(ci) if np.isfinite(ci).all() else None


def evaluate_points(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    cluster: Sequence[Hashable] | np.ndarray | None = None,
) -> dict:
    """Correlation of one model's rewards `pred` with human scores `target` (both (n,)), as a JSON-ready dict.

    Keys: `n_points`, and where defined (not constant, at least 2 points) `spearman`, `kendall`, `pearson`, each
    with a 95% percentile bootstrap interval `spearman_ci`, ... (cluster bootstrap over `cluster` when given).
    Raises on NaN or infinite inputs: drop or report missing scores first. Costs about 1 ms per resample (three
    scipy calls on each), so ~1 s for 1000 resamples of a few thousand points.
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    point = correlations(pred, target)  # checks shapes
    bad = np.flatnonzero(~(np.isfinite(pred) & np.isfinite(target)))
    if bad.size:
        raise ValueError(f"pred or target is NaN or infinite at points {bad[:10].tolist()}; drop or report them first")
    result: dict = {"n_points": int(pred.size)}
    if not np.isfinite(list(point.values())).any():
        return result
    names = list(point)
    distribution = _bootstrap_distribution(
        lambda p, t: np.array(list(correlations(p, t).values())), (pred, target), n_resamples, seed, cluster
    )
    lo, hi = _percentile_interval(distribution, 0.95)
    for j, name in enumerate(names):
        if np.isfinite(point[name]):
            result[name] = point[name]
            if np.isfinite(lo[j]) and np.isfinite(hi[j]):
                result[f"{name}_ci"] = [float(lo[j]), float(hi[j])]
    return result
