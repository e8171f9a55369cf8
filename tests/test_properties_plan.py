"""Properties of synthetic-benchmark planning (icreward.synth.plan) and of the pair-label rule, on Hypothesis-drawn
configs. Planning draws no pixel, so each example costs milliseconds."""

import itertools
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from icreward.rules import CONSISTENT_MODE, FROZEN_MODE, label_from_scores
from icreward.synth.failures import FAILURE_MODES, WAVE1_MODES
from icreward.synth.plan import PAIR_QUOTAS, SPLITS, SynthConfig, VideoPlan, choose_pairs, plan_sources, split_groups

MOVING_FAILURES = [m for m in WAVE1_MODES if m != FROZEN_MODE]  # what a config that names no modes draws
SWAP = {"A": "B", "B": "A", "tie": "tie"}


def _fractions(weights: tuple[float, float, float]) -> tuple[float, float, float]:
    total = sum(weights)
    return tuple(w / total for w in weights)


# Train, val, test shares as a config would give them: positive, summing to 1, validation under half (larger
# validation shares have a property of their own below).
FRACTIONS = st.tuples(st.floats(0.05, 1), st.floats(0.05, 0.45), st.floats(0.05, 1)).map(_fractions)
FRACTIONS = FRACTIONS.filter(lambda f: f[1] < 0.5)


# ---- split_groups


@settings(max_examples=100)
@given(st.integers(3, 60), FRACTIONS, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_split_groups_assigns_every_group_once_and_leaves_no_split_empty(n_groups, fractions, seed, other_seed):
    splits = split_groups(n_groups, fractions, np.random.default_rng(seed))
    assert len(splits) == n_groups and set(splits) == set(SPLITS)  # each group exactly one split, each split used
    counts = Counter(splits)
    # sizes follow the fractions: validation up to rounding, train and test also up to the one group each must hold
    assert abs(counts["val"] - fractions[1] * n_groups) <= 1
    assert abs(counts["train"] - fractions[0] * n_groups) <= 2 and abs(counts["test"] - fractions[2] * n_groups) <= 2
    assert split_groups(n_groups, fractions, np.random.default_rng(seed)) == splits  # same seed, same split
    # the seed only decides which groups go where, never how many
    assert Counter(split_groups(n_groups, fractions, np.random.default_rng(other_seed))) == counts


@given(st.integers(3, 12), st.floats(0.5, 0.95), st.integers(0, 2**32 - 1))
def test_split_groups_leaves_no_split_empty_even_with_a_large_validation_share(n_groups, val_share, seed):
    rest = (1 - val_share) / 2
    assert set(split_groups(n_groups, (rest, val_share, rest), np.random.default_rng(seed))) == set(SPLITS)


# ---- choose_pairs on arbitrary videos

VIDEO = st.builds(
    VideoPlan,
    id=st.just(""),
    mode=st.sampled_from([CONSISTENT_MODE, FROZEN_MODE, "flicker", "subject_drift"]),
    severity=st.just(0.0),
    score=st.one_of(st.sampled_from([0.2, 0.5, 0.55, 1.0]), st.floats(0, 1).map(lambda s: round(s, 4))),
    motion=st.just(1),
)


@settings(max_examples=100)
@given(st.lists(VIDEO, min_size=2, max_size=8), st.integers(1, 12), st.sampled_from([0.0, 0.05, 0.3]), st.integers(0))
def test_choose_pairs_picks_distinct_pairs_of_two_different_videos(videos, k, margin, seed):
    pairs = choose_pairs(videos, k, margin, np.random.default_rng(seed))
    n = len(videos)
    assert len(pairs) == min(k, n * (n - 1) // 2)
    assert all(0 <= i < n and 0 <= j < n and i != j for i, j in pairs)
    assert len({frozenset(p) for p in pairs}) == len(pairs)  # no pair twice, in either order
    assert choose_pairs(videos, k, margin, np.random.default_rng(seed)) == pairs


# ---- whole plans

CONFIG = st.builds(
    SynthConfig,
    n=st.integers(3, 10),
    seed=st.integers(0, 2**16),
    tie_margin=st.sampled_from([0.0, 0.02, 0.05, 0.1]),
    holdout_modes=st.lists(st.sampled_from(MOVING_FAILURES), max_size=2, unique=True).map(tuple),
    videos_per_image=st.integers(4, 7),
    pairs_per_image=st.integers(1, 9),
    rater_noise=st.sampled_from([0.0, 0.02]),
)


def _category(a: VideoPlan, b: VideoPlan, margin: float) -> str:
    """choose_pairs' pair categories, from the docstring: a tie, consistent vs failure, two failures, two consistent."""
    if label_from_scores(a.score, b.score, margin) == "tie":
        return "tie"
    consistent_a, consistent_b = (v.mode in (CONSISTENT_MODE, FROZEN_MODE) for v in (a, b))
    if consistent_a != consistent_b:
        return "consistent_vs_failure"
    return "consistent_pair" if consistent_a else "failure_pair"


@settings(max_examples=40)
@given(CONFIG)
def test_plan_is_a_function_of_the_config(config):
    assert plan_sources(config, []) == plan_sources(config, [])


@settings(max_examples=40)
@given(CONFIG)
def test_plan_splits_and_held_out_modes(config):
    plans = plan_sources(config, [])
    assert [p.index for p in plans] == list(range(config.n)) and [p.id for p in plans] == [
        f"img{i:05d}" for i in range(config.n)
    ]
    assert {p.split for p in plans} == set(SPLITS)  # no split is empty
    for split in SPLITS:
        failures = [v.mode for p in plans if p.split == split for v in p.videos if v.mode in MOVING_FAILURES]
        if split != "test":
            assert not set(failures) & set(config.holdout_modes)  # held-out modes only in test
        allowed = [m for m in MOVING_FAILURES if split == "test" or m not in config.holdout_modes]
        counts = Counter(failures)
        assert set(counts) <= set(allowed)
        # block-balanced schedule: within a split, no failure mode is drawn twice before every other one once
        assert max(counts[m] for m in allowed) - min(counts[m] for m in allowed) <= 1
    assert set(config.holdout_modes) <= {v.mode for p in plans if p.split == "test" for v in p.videos}


@settings(max_examples=40)
@given(CONFIG)
def test_plan_videos_follow_the_label_contract(config):
    lo, hi = config.severity_range
    for plan in plan_sources(config, []):
        assert len(plan.videos) == config.videos_per_image and plan.videos[0].mode == CONSISTENT_MODE
        for k, video in enumerate(plan.videos):
            assert video.id == f"{plan.id}_v{k}"
            assert video.motion == int(video.mode != FROZEN_MODE)
            assert 0 <= video.score <= 1 and video.score == round(video.score, 4)
            if video.mode in (CONSISTENT_MODE, FROZEN_MODE):
                assert video.severity == 0
            else:
                assert video.mode in FAILURE_MODES and lo <= video.severity <= hi
            if config.rater_noise == 0:  # without rater noise, only a failure loses consistency
                assert (video.score == 1) == (video.mode in (CONSISTENT_MODE, FROZEN_MODE))


@settings(max_examples=40)
@given(CONFIG)
def test_plan_pairs_compare_two_videos_of_their_own_image_and_meet_the_quotas(config):
    for plan in plan_sources(config, []):
        n = len(plan.videos)
        assert len(plan.pairs) == min(config.pairs_per_image, n * (n - 1) // 2)
        assert all(0 <= i < n and 0 <= j < n and i != j for i, j in plan.pairs)  # indices into this image's videos
        assert len({frozenset(p) for p in plan.pairs}) == len(plan.pairs)
        if config.pairs_per_image >= n:
            assert {i for pair in plan.pairs for i in pair} == set(range(n))  # every video is used
        if config.pairs_per_image >= sum(PAIR_QUOTAS.values()):
            available = Counter(_category(a, b, config.tie_margin) for a, b in itertools.combinations(plan.videos, 2))
            chosen = Counter(_category(plan.videos[i], plan.videos[j], config.tie_margin) for i, j in plan.pairs)
            for category, quota in PAIR_QUOTAS.items():
                assert chosen[category] >= min(quota, available[category])


# ---- the label of a pair of scores

SCORE = st.one_of(st.sampled_from([0.0, 0.1, 0.7, 0.8, 0.85, 1.0]), st.floats(0, 1))
MARGIN = st.one_of(st.sampled_from([0.0, 0.05, 0.1]), st.floats(0, 0.5))


@settings(max_examples=100)
@given(SCORE, SCORE, MARGIN, st.floats(0, 0.5))
def test_pair_label_follows_the_scores_and_the_margin(a, b, margin, more):
    label = label_from_scores(a, b, margin)
    assert label_from_scores(b, a, margin) == SWAP[label]  # swapping the videos swaps the label
    if abs(a - b) <= margin:
        assert label == "tie"
    if label != "tie":
        assert label == ("A" if a > b else "B") and abs(a - b) > margin  # the higher score wins, beyond the margin
    if label == "tie":
        assert label_from_scores(a, b, margin + more) == "tie"  # a wider margin never undoes a tie
    assert (label_from_scores(a, b, 0.0) == "tie") == (a == b)
