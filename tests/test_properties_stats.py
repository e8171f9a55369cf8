"""Properties of the evaluation statistics (icreward.evaluation.stats), checked on Hypothesis-drawn data.

Conventions (stats' module docstring): delta = r_A - r_B per pair; labels +1 = A preferred, -1 = B preferred, 0 = tie.
"""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from icreward.evaluation import (
    best_tie_threshold,
    bootstrap_ci,
    correlations,
    evaluate_pairs,
    pair_accuracy,
    pair_accuracy_ties,
)

# Deltas mix a few exact values (zeros, equal magnitudes of both signs, so ties in |delta| happen) with general floats.
DELTA_VALUE = st.one_of(
    st.sampled_from([0.0, 0.25, -0.25, 0.5, -0.5, 1.0, -1.0]),
    st.floats(-100, 100, allow_nan=False, allow_subnormal=False),
)
LABEL = st.sampled_from([1, -1, 0])
POWERS_OF_TWO = st.sampled_from([0.25, 0.5, 2.0, 8.0])  # scaling by these is exact in floating point


@st.composite
def pair_data(draw, min_size=0, max_size=16):
    pairs = draw(st.lists(st.tuples(DELTA_VALUE, LABEL), min_size=min_size, max_size=max_size))
    delta = np.array([d for d, _ in pairs], dtype=np.float64)
    labels = np.array([label for _, label in pairs], dtype=np.int64)
    return delta, labels


def same(a: float, b: float) -> bool:
    """Equal, or both NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def correct_count(delta, labels, eps) -> int:
    return round(pair_accuracy_ties(delta, labels, eps) * len(delta))


# ---- pair accuracy without ties


@settings(max_examples=100)
@given(pair_data(), st.floats(0, 2))
def test_swapping_a_and_b_changes_no_accuracy(data, eps):
    """Relabelling every pair (A, B) as (B, A) negates delta and the labels; no statistic may notice."""
    delta, labels = data
    assert same(pair_accuracy(-delta, -labels), pair_accuracy(delta, labels))
    assert same(pair_accuracy_ties(-delta, -labels, eps), pair_accuracy_ties(delta, labels, eps))
    swapped_eps, swapped_acc = best_tie_threshold(-delta, -labels)
    eps_best, acc_best = best_tie_threshold(delta, labels)
    assert swapped_eps == eps_best and same(swapped_acc, acc_best)


@settings(max_examples=100)
@given(pair_data(min_size=1))
def test_reversing_every_prediction_turns_accuracy_a_into_1_minus_a(data):
    """Each non-tie pair's credit 1 becomes 0 and 0 becomes 1; a model tie (delta 0) stays a coin flip at 0.5."""
    delta, labels = data
    assume((labels != 0).any())
    accuracy = pair_accuracy(delta, labels)
    assert 0 <= accuracy <= 1
    assert pair_accuracy(-delta, labels) == pytest.approx(1 - accuracy, abs=1e-12)


@settings(max_examples=100)
@given(pair_data(min_size=1), pair_data(), POWERS_OF_TWO, st.randoms(use_true_random=False))
def test_pair_accuracy_ignores_human_ties_pair_order_and_the_delta_scale(data, extra, scale, random):
    delta, labels = data
    assume((labels != 0).any())
    tie_delta, _ = extra  # pairs humans tied, whatever the model says about them
    order = list(range(len(delta) + len(tie_delta)))
    random.shuffle(order)
    more_delta = np.concatenate([delta, tie_delta])[order] * scale
    more_labels = np.concatenate([labels, np.zeros(len(tie_delta), dtype=np.int64)])[order]
    assert pair_accuracy(more_delta, more_labels) == pytest.approx(pair_accuracy(delta, labels), abs=1e-12)


@settings(max_examples=50)
@given(st.lists(DELTA_VALUE, max_size=10))
def test_pair_accuracy_is_nan_exactly_when_every_pair_is_a_human_tie(delta):
    delta = np.array(delta, dtype=np.float64)
    assert math.isnan(pair_accuracy(delta, np.zeros(len(delta), dtype=np.int64)))
    if len(delta):
        assert not math.isnan(pair_accuracy(delta, np.ones(len(delta), dtype=np.int64)))


# ---- accuracy with ties and the tie threshold


@settings(max_examples=80)
@given(pair_data(min_size=1), st.lists(st.floats(0, 150), max_size=5))
def test_best_tie_threshold_achieves_its_accuracy_and_no_threshold_beats_it(data, other_eps):
    delta, labels = data
    eps, accuracy = best_tie_threshold(delta, labels)
    assert eps == 0 or eps in np.abs(delta)  # only 0 and the |delta| values are candidates
    assert pair_accuracy_ties(delta, labels, eps) == pytest.approx(accuracy, abs=1e-12)
    best = correct_count(delta, labels, eps)
    assert correct_count(delta, labels, 0.0) <= best  # a threshold of 0 never beats the best one
    for candidate in [*np.abs(delta), *other_eps]:
        assert correct_count(delta, labels, candidate) <= best
    for smaller in [0.0, *np.abs(delta)]:  # equally good thresholds resolve to the smallest
        if smaller < eps:
            assert correct_count(delta, labels, smaller) < best


@settings(max_examples=100)
@given(pair_data(min_size=1))
def test_tie_accuracy_at_the_extremes_of_the_threshold(data):
    delta, labels = data
    # a threshold of at least every |delta| predicts a tie everywhere: right exactly on the human ties
    assert pair_accuracy_ties(delta, labels, float(np.abs(delta).max())) == pytest.approx(np.mean(labels == 0))
    # a threshold of 0 with no model tie predicts a sign everywhere: right on the non-tie pairs pair_accuracy counts
    if (delta != 0).all() and (labels != 0).any():
        n_nontie = int((labels != 0).sum())
        expected = pair_accuracy(delta, labels) * n_nontie / len(delta)
        assert pair_accuracy_ties(delta, labels, 0.0) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=100)
@given(pair_data(min_size=1), st.floats(0, 2), POWERS_OF_TWO)
def test_tie_accuracy_is_invariant_when_delta_and_threshold_scale_together(data, eps, scale):
    delta, labels = data
    assert pair_accuracy_ties(delta * scale, labels, eps * scale) == pair_accuracy_ties(delta, labels, eps)
    best_eps, best_accuracy = best_tie_threshold(delta, labels)
    assert best_tie_threshold(delta * scale, labels) == (best_eps * scale, best_accuracy)


# ---- bootstrap intervals

SAMPLE = st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=1, max_size=12)


@settings(max_examples=30)
@given(st.floats(-1e3, 1e3, allow_subnormal=False), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_bootstrap_of_constant_data_is_that_constant(value, n, seed):
    x = np.full(n, value)
    assert bootstrap_ci(np.median, x, n_resamples=30, seed=seed) == (value, value)
    lo, hi = bootstrap_ci(np.mean, x, n_resamples=30, seed=seed)
    assert lo == pytest.approx(value, rel=1e-12, abs=1e-12) and hi == pytest.approx(value, rel=1e-12, abs=1e-12)


@settings(max_examples=40)
@given(SAMPLE, st.integers(0, 2**32 - 1))
def test_bootstrap_interval_is_ordered_nested_bounded_by_the_data_and_reproducible(x, seed):
    x = np.array(x)
    lo, hi = bootstrap_ci(np.mean, x, n_resamples=40, seed=seed)
    assert lo <= hi
    tol = 1e-9 * (1 + np.abs(x).max())
    assert x.min() - tol <= lo and hi <= x.max() + tol  # a mean of resampled rows lies within the data
    assert bootstrap_ci(np.mean, x, n_resamples=40, seed=seed) == (lo, hi)  # same seed, same interval
    lo50, hi50 = bootstrap_ci(np.mean, x, n_resamples=40, seed=seed, level=0.5)
    assert lo <= lo50 <= hi50 <= hi  # same resamples: a lower level gives a nested interval


@settings(max_examples=40)
@given(SAMPLE, st.integers(0, 2**32 - 1), st.randoms(use_true_random=False))
def test_cluster_bootstrap_with_one_cluster_per_row_is_the_row_bootstrap(x, seed, random):
    x = np.array(x)
    names = random.sample(range(1000), len(x))  # distinct cluster labels, in any order
    rows = bootstrap_ci(np.mean, x, n_resamples=30, seed=seed)
    assert bootstrap_ci(np.mean, x, n_resamples=30, seed=seed, groups=names) == rows
    assert bootstrap_ci(np.mean, x, n_resamples=30, seed=seed, groups=[f"img{n}" for n in names]) == rows


@settings(max_examples=40)
@given(SAMPLE, st.data(), st.integers(0, 2**32 - 1))
def test_cluster_bootstrap_depends_on_the_partition_not_on_the_cluster_names(x, data, seed):
    x = np.array(x)
    groups = data.draw(st.lists(st.integers(0, 3), min_size=len(x), max_size=len(x)))
    renamed = [("source", 7 * g + 1) for g in groups]  # another injective naming of the same clusters
    interval = bootstrap_ci(np.mean, x, n_resamples=30, seed=seed, groups=groups)
    assert bootstrap_ci(np.mean, x, n_resamples=30, seed=seed, groups=renamed) == interval
    assert bootstrap_ci(np.mean, x, n_resamples=30, seed=seed, groups=np.array(groups)) == interval
    # one cluster holding every row: each resample is the whole data set, so the interval has no width
    assert bootstrap_ci(np.mean, x, n_resamples=30, seed=seed, groups=["all"] * len(x)) == (np.mean(x),) * 2


@settings(max_examples=40)
@given(
    st.lists(st.floats(-10, 10), min_size=1, max_size=10),
    st.data(),
    st.sampled_from([0.5, 0.9, 0.95]),
    st.integers(0, 2**32 - 1),
)
def test_bootstrap_resamples_rows_or_whole_clusters_and_reports_percentiles(values, data, level, seed):
    """What the statistic is called on, and what comes back: the percentile interval of its finite values."""
    n = len(values)
    groups = data.draw(st.none() | st.lists(st.integers(0, 3), min_size=n, max_size=n))
    resamples, outputs = [], []

    def statistic(rows, y):  # rows: which original rows this resample holds (the first array is 0..n-1)
        resamples.append(rows.copy())
        outputs.append(math.nan if 0 not in rows else float(np.mean(y)))  # NaN resamples are left out
        return outputs[-1]

    rows_and_values = (np.arange(n), np.array(values))
    lo, hi = bootstrap_ci(statistic, *rows_and_values, n_resamples=30, seed=seed, groups=groups, level=level)
    assert len(resamples) == 30
    for rows in resamples:
        assert set(rows.tolist()) <= set(range(n))
        if groups is None:
            assert len(rows) == n  # n rows drawn with replacement
        else:  # whole clusters: each drawn cluster brings all its rows, and as many clusters are drawn as exist
            taken = np.bincount(rows, minlength=n)
            members = {g: [i for i in range(n) if groups[i] == g] for g in set(groups)}
            assert all(len({taken[i] for i in rows_of}) == 1 for rows_of in members.values())
            assert sum(taken[rows_of[0]] for rows_of in members.values()) == len(members)
    finite = [v for v in outputs if not math.isnan(v)]
    if finite:
        alpha = (1 - level) / 2
        assert (lo, hi) == pytest.approx((np.quantile(finite, alpha), np.quantile(finite, 1 - alpha)), abs=1e-12)
    else:
        assert math.isnan(lo) and math.isnan(hi)


@settings(max_examples=40)
@given(pair_data(min_size=1), pair_data(min_size=1), st.data(), st.integers(0, 1000))
def test_evaluate_pairs_intervals_are_reproduced_by_bootstrap_ci(test, val, data, seed):
    """Documented: bootstrap_ci with the same seed (and clusters) draws the resamples evaluate_pairs draws."""
    delta, labels = test
    assume((labels != 0).any())
    cluster = data.draw(st.none() | st.lists(st.integers(0, 4), min_size=len(delta), max_size=len(delta)))
    result = evaluate_pairs(
        delta, labels, val_delta=val[0], val_labels=val[1], cluster=cluster, n_resamples=40, seed=seed
    )
    assert result["pair_accuracy"] == pair_accuracy(delta, labels)
    ci = bootstrap_ci(pair_accuracy, delta, labels, n_resamples=40, seed=seed, groups=cluster)
    assert result.get("pair_accuracy_ci", [math.nan] * 2) == pytest.approx(list(ci), abs=1e-12, nan_ok=True)
    eps = result["tie_threshold"]
    assert eps == best_tie_threshold(*val)[0]  # the threshold is chosen on the validation pairs
    assert result["pair_accuracy_ties"] == pair_accuracy_ties(delta, labels, eps)

    def ties(d, lab):
        return pair_accuracy_ties(d, lab, eps)

    ci_ties = bootstrap_ci(ties, delta, labels, n_resamples=40, seed=seed, groups=cluster)
    assert result["pair_accuracy_ties_ci"] == pytest.approx(list(ci_ties), abs=1e-12)


# ---- correlations

POINT = st.one_of(st.integers(-4, 4).map(float), st.floats(-1e3, 1e3, allow_subnormal=False))  # ties happen
POINTS = st.lists(POINT, min_size=2, max_size=14)


@st.composite
def point_pairs(draw):
    pred = draw(POINTS)
    target = draw(st.lists(POINT, min_size=len(pred), max_size=len(pred)))
    return np.array(pred), np.array(target)


def increasing_map(draw, values: np.ndarray) -> np.ndarray:
    """`values` under a strictly increasing map drawn by Hypothesis (equal values stay equal, order is kept)."""
    distinct = np.unique(values)
    gaps = draw(st.lists(st.floats(0.01, 100), min_size=len(distinct), max_size=len(distinct)))
    image = draw(st.floats(-100, 100)) + np.cumsum(gaps)
    return image[np.searchsorted(distinct, values)]


def assert_close(a: float, b: float) -> None:
    assert a == pytest.approx(b, abs=1e-9, nan_ok=True)


@settings(max_examples=60)
@given(point_pairs())
def test_correlations_are_symmetric_and_bounded(points):
    pred, target = points
    forward, backward = correlations(pred, target), correlations(target, pred)
    for name in ("spearman", "kendall", "pearson"):
        assert_close(forward[name], backward[name])
        assert math.isnan(forward[name]) or -1 - 1e-12 <= forward[name] <= 1 + 1e-12
    constant = np.ptp(pred) == 0 or np.ptp(target) == 0
    assert all(math.isnan(v) for v in forward.values()) == constant


@settings(max_examples=60)
@given(point_pairs(), st.data())
def test_rank_correlations_ignore_increasing_transforms_and_flip_sign_under_reversal(points, data):
    pred, target = points
    base = correlations(pred, target)
    for p, t in [(increasing_map(data.draw, pred), target), (pred, increasing_map(data.draw, target))]:
        moved = correlations(p, t)
        assert_close(moved["spearman"], base["spearman"])
        assert_close(moved["kendall"], base["kendall"])
    reversed_ = correlations(-pred, target)
    assert_close(reversed_["spearman"], -base["spearman"])
    assert_close(reversed_["kendall"], -base["kendall"])


@settings(max_examples=40)
@given(POINTS, st.data())
def test_rank_correlation_with_an_increasing_function_of_itself_is_one(values, data):
    x = np.array(values)
    assume(np.ptp(x) > 0)
    result = correlations(x, increasing_map(data.draw, x))
    assert result["spearman"] == pytest.approx(1.0) and result["kendall"] == pytest.approx(1.0)
