import csv
import json
import math
import time

import numpy as np
import pytest
from scipy import stats as sps

from icreward.evaluation import (
    best_tie_threshold,
    bootstrap_ci,
    build_pair_rows,
    correlations,
    evaluate_pairs,
    evaluate_points,
    format_per_mode_table,
    format_table,
    pair_accuracy,
    pair_accuracy_ties,
    per_group_accuracy,
    write_report,
)

# Five pairs: right, wrong, model-tie on a preference, human tie with small delta, human tie with large delta.
DELTA = np.array([0.5, -0.2, 0.0, 0.1, -0.4])
LABELS = np.array([1, 1, -1, 0, 0])


def test_pair_accuracy_counts_model_ties_half_and_skips_human_ties():
    assert pair_accuracy(DELTA, LABELS) == pytest.approx((1 + 0 + 0.5) / 3)
    assert pair_accuracy([1.0, -2.0], [1, -1]) == 1.0
    assert math.isnan(pair_accuracy([1.0, 0.0], [0, 0]))


def test_pair_accuracy_rejects_nan_deltas_and_bad_labels():
    with pytest.raises(ValueError, match=r"pairs \[1\]"):
        pair_accuracy([0.1, np.nan], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        pair_accuracy([0.1], [2])


def test_pair_accuracy_ties_by_hand():
    # eps 0: pair 3 (delta 0) is a predicted tie against a preference -> wrong; no human tie is matched.
    assert pair_accuracy_ties(DELTA, LABELS, 0.0) == pytest.approx(1 / 5)
    # eps exactly at |delta| = 0.1 includes that pair: right, and the human tie at 0.1 is matched.
    assert pair_accuracy_ties(DELTA, LABELS, 0.1) == pytest.approx(2 / 5)
    assert pair_accuracy_ties(DELTA, LABELS, 0.0999) == pytest.approx(1 / 5)
    # eps 0.4 predicts ties for everything but pair 0.
    assert pair_accuracy_ties(DELTA, LABELS, 0.4) == pytest.approx(3 / 5)
    assert math.isnan(pair_accuracy_ties([], [], 0.1))
    with pytest.raises(ValueError):
        pair_accuracy_ties(DELTA, LABELS, -1.0)


def test_best_tie_threshold_by_hand():
    assert best_tie_threshold(DELTA, LABELS) == (0.4, pytest.approx(3 / 5))
    # No human ties: predicting none is best, and the smallest eps of the equally good ones (0) wins.
    assert best_tie_threshold([0.3, -0.1, 0.2], [1, -1, -1]) == (0.0, pytest.approx(2 / 3))
    # All human ties: call everything a tie.
    assert best_tie_threshold([0.3, -0.1, 0.2], [0, 0, 0]) == (0.3, 1.0)
    assert best_tie_threshold([], [])[0] == 0.0


def _brute_force_best(delta, labels):
    candidates = np.unique(np.concatenate([[0.0], np.abs(delta)]))
    accuracies = [pair_accuracy_ties(delta, labels, eps) for eps in candidates]
    best = int(np.argmax(accuracies))
    return candidates[best], accuracies[best]


@pytest.mark.parametrize("seed", range(5))
def test_best_tie_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 300
    labels = rng.choice([-1, 0, 1], size=n, p=[0.35, 0.3, 0.35])
    delta = rng.integers(-6, 7, size=n) * 0.25 + 0.3 * labels * rng.random(n).round(1)  # many repeated |delta|
    eps, accuracy = best_tie_threshold(delta, labels)
    ref_eps, ref_accuracy = _brute_force_best(delta, labels)
    assert eps == ref_eps and accuracy == pytest.approx(ref_accuracy)
    assert pair_accuracy_ties(delta, labels, eps) == pytest.approx(accuracy)


def test_correlations_match_scipy_and_are_nan_on_constant_input():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50).round(1)  # with ties
    y = x + rng.normal(size=50)
    got = correlations(x, y)
    assert got["spearman"] == pytest.approx(sps.spearmanr(x, y).statistic)
    assert got["kendall"] == pytest.approx(sps.kendalltau(x, y, variant="b").statistic)
    assert got["pearson"] == pytest.approx(sps.pearsonr(x, y).statistic)
    for pred, target in [(np.ones(5), np.arange(5.0)), ([1.0], [2.0]), ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])]:
        assert all(math.isnan(v) for v in correlations(pred, target).values())


def test_bootstrap_is_deterministic_and_contains_the_estimate():
    rng = np.random.default_rng(1)
    labels = rng.choice([-1, 1], size=400)
    delta = labels * rng.normal(0.3, 1.0, size=400)
    ci = bootstrap_ci(pair_accuracy, delta, labels, n_resamples=300, seed=7)
    assert ci == bootstrap_ci(pair_accuracy, delta, labels, n_resamples=300, seed=7)
    assert ci != bootstrap_ci(pair_accuracy, delta, labels, n_resamples=300, seed=8)
    assert ci[0] < pair_accuracy(delta, labels) < ci[1]
    narrow = bootstrap_ci(pair_accuracy, np.tile(delta, 16), np.tile(labels, 16), n_resamples=300, seed=7)
    assert narrow[1] - narrow[0] < (ci[1] - ci[0]) / 2


def test_bootstrap_of_1000_pairs_takes_well_under_a_second():
    rng = np.random.default_rng(2)
    labels = rng.choice([-1, 0, 1], size=1000)
    delta = rng.normal(size=1000)
    start = time.perf_counter()
    bootstrap_ci(pair_accuracy, delta, labels, n_resamples=1000)
    assert time.perf_counter() - start < 1.0


def test_cluster_bootstrap_is_wider_on_clustered_data():
    # 30 images x 20 pairs; the model is right on every pair of 20 images and wrong on every pair of 10.
    images = np.repeat(np.arange(30), 20)
    labels = np.ones(600, dtype=int)
    delta = np.where(images < 20, 1.0, -1.0)
    rows = bootstrap_ci(pair_accuracy, delta, labels, n_resamples=300)
    clusters = bootstrap_ci(pair_accuracy, delta, labels, n_resamples=300, groups=images)
    assert clusters[1] - clusters[0] > 3 * (rows[1] - rows[0])
    assert clusters[0] < 2 / 3 < clusters[1]


def test_per_group_accuracy_with_overlapping_groups():
    delta = np.array([1.0, -1.0, 0.0, 2.0])
    labels = np.array([1, 1, 1, 0])
    groups = [("flicker", "drift"), ("drift", "drift"), ("blur", None), "flicker"]  # a bare string is one name
    assert per_group_accuracy(delta, labels, groups) == {
        "blur": {"pair_accuracy": 0.5, "n_pairs": 1, "n_nontie_pairs": 1},
        "drift": {"pair_accuracy": 0.5, "n_pairs": 2, "n_nontie_pairs": 2},
        "flicker": {"pair_accuracy": 1.0, "n_pairs": 2, "n_nontie_pairs": 1},
    }


def _pairs(n=120, seed=3):
    rng = np.random.default_rng(seed)
    labels = rng.choice([-1, 0, 1], size=n)
    delta = 0.5 * labels + rng.normal(0, 0.5, size=n)
    return delta, labels


def test_evaluate_pairs_without_validation():
    delta, labels = _pairs()
    result = evaluate_pairs(delta, labels, n_resamples=200)
    assert set(result) == {
        "n_pairs",
        "n_nontie_pairs",
        "pair_accuracy",
        "pair_accuracy_ci",
        "pair_accuracy_ties_test_swept",
        "tie_threshold_test_swept",
    }
    assert result["n_pairs"] == 120 and result["n_nontie_pairs"] == int((labels != 0).sum())
    assert result["pair_accuracy"] == pair_accuracy(delta, labels)
    assert (result["tie_threshold_test_swept"], result["pair_accuracy_ties_test_swept"]) == best_tie_threshold(
        delta, labels
    )


def test_evaluate_pairs_with_validation_groups_and_cluster():
    delta, labels = _pairs()
    val_delta, val_labels = _pairs(seed=4)
    modes = [("flicker", "drift")[i % 2] for i in range(120)]
    cluster = np.arange(120) // 6
    result = evaluate_pairs(
        delta,
        labels,
        val_delta=val_delta,
        val_labels=val_labels,
        groups=[(m,) for m in modes],
        cluster=cluster,
        n_resamples=200,
        seed=5,
    )
    eps = best_tie_threshold(val_delta, val_labels)[0]
    assert result["tie_threshold"] == eps and result["n_val_pairs"] == 120
    assert result["pair_accuracy_ties"] == pair_accuracy_ties(delta, labels, eps)
    assert result["pair_accuracy_ties"] <= result["pair_accuracy_ties_test_swept"]
    lo, hi = result["pair_accuracy_ties_ci"]
    assert lo <= result["pair_accuracy_ties"] <= hi
    assert set(result["per_mode"]) == set(result["per_mode_n"]) == {"flicker", "drift"}
    # The vectorised interval equals the generic bootstrap over the same resamples.
    generic = bootstrap_ci(pair_accuracy, delta, labels, n_resamples=200, seed=5, groups=cluster)
    assert result["pair_accuracy_ci"] == pytest.approx(list(generic))
    with pytest.raises(ValueError, match="both"):
        evaluate_pairs(delta, labels, val_delta=val_delta)


def test_evaluate_pairs_leaves_out_what_the_data_cannot_give():
    all_ties = evaluate_pairs([0.1, -0.3], [0, 0], n_resamples=50)
    assert "pair_accuracy" not in all_ties and "pair_accuracy_ci" not in all_ties
    assert all_ties["pair_accuracy_ties_test_swept"] == 1.0
    assert evaluate_pairs([], []) == {"n_pairs": 0, "n_nontie_pairs": 0}


def test_evaluate_points():
    rng = np.random.default_rng(6)
    target = rng.random(60)
    pred = target + rng.normal(0, 0.3, size=60)
    result = evaluate_points(pred, target, n_resamples=100, seed=0)
    assert result["n_points"] == 60
    for name, value in correlations(pred, target).items():
        assert result[name] == value
        assert result[f"{name}_ci"][0] <= value <= result[f"{name}_ci"][1]
    assert evaluate_points(np.ones(4), np.arange(4.0), n_resamples=10, seed=0) == {"n_points": 4}
    with pytest.raises(ValueError, match="points"):
        evaluate_points([1.0, np.nan, 2.0], [1.0, 2.0, 3.0], n_resamples=10, seed=0)


def _results():
    return {
        "metric:ssim": {"pair_accuracy": 0.6, "pair_accuracy_ci": [0.5, 0.7], "spearman": 0.2, "n_pairs": 4},
        "icreward": {"pair_accuracy": 0.724, "pair_accuracy_ci": [0.681, 0.765], "spearman": float("nan")},
    }


def table_rows(table: str) -> dict[str, str]:
    """Each line of a printed table by its first word, with the cells' padding collapsed to single spaces: what the
    table says, whatever its column widths and alignment."""
    return {line.split()[0]: " ".join(line.split()) for line in table.splitlines() if line.strip()}


def test_format_table_marks_the_best_and_shows_missing():
    rows = table_rows(format_table(_results()))
    assert rows["model"] == "model pair acc % acc w/ ties % (val ε) ties test-swept % Spearman Kendall n"
    # one model row each, cells in the header's order: value [interval], `*` on the best accuracy, `–` for missing;
    # only one model has a Spearman, so it has nothing to beat and is not marked
    assert rows["metric:ssim"] == "metric:ssim 60.0 [50.0, 70.0] – – 0.200 – 4"
    assert rows["icreward"] == "icreward 72.4 [68.1, 76.5]* – – – – –"


def test_format_per_mode_table():
    results = {
        "a": {"per_mode": {"flicker": 0.8, "drift": 0.5}, "per_mode_n": {"flicker": 10, "drift": 12}},
        "b": {"per_mode": {"flicker": 0.6}, "per_mode_n": {"flicker": 10}},
    }
    rows = table_rows(format_per_mode_table(results))
    assert rows["mode"] == "mode a b"  # one column per model
    assert rows["flicker"] == "flicker 80.0 (n=10)* 60.0 (n=10)"  # the best model per mode is marked
    assert rows["drift"] == "drift 50.0 (n=12) –"  # nothing to compare with: no mark; no pairs: `–`


def test_build_pair_rows_agree_with_the_statistics():
    reward_a = np.array([1.0, 0.0, 2.0, 0.3, 0.0])
    reward_b = reward_a - DELTA
    rows = build_pair_rows("m", list("vwxyz"), LABELS, reward_a, reward_b, tie_threshold=0.1, extra=[{"k": 1}] * 5)
    assert [r["label"] for r in rows] == ["A", "A", "B", "tie", "tie"]
    assert [r["predicted"] for r in rows] == ["A", "B", "tie", "A", "B"]
    credited = [r["correct"] for r in rows if r["correct"] is not None]
    assert np.mean(credited) == pytest.approx(pair_accuracy(DELTA, LABELS))
    assert np.mean([r["correct_ties"] for r in rows]) == pytest.approx(pair_accuracy_ties(DELTA, LABELS, 0.1))
    assert rows[0]["k"] == 1 and rows[0]["model"] == "m"


def test_write_report(tmp_path):
    results = {name: dict(r, per_mode={"flicker": float("nan")}) for name, r in _results().items()}
    pair_rows = [
        {"model": model, "id": str(i), "delta": float("nan") if i == 0 else 0.1, "mode_a": "flicker"}
        for model in results
        for i in range(3)
    ]
    pair_rows[-1]["severity_a"] = np.float32(0.5)
    write_report(tmp_path / "report", results, pair_rows, point_rows=[{"model": "a", "reward": 1.0}], meta={"s": 1})
    document = json.loads((tmp_path / "report" / "results.json").read_text(), parse_constant=pytest.fail)
    assert document["meta"] == {"s": 1}
    assert document["models"]["icreward"]["spearman"] is None
    assert document["models"]["metric:ssim"]["per_mode"] == {"flicker": None}
    with open(tmp_path / "report" / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(results)
    assert rows[0]["delta"] == "" and rows[-1]["severity_a"] == "0.5" and rows[0]["severity_a"] == ""
    assert (tmp_path / "report" / "points.csv").exists()
    assert not list((tmp_path / "report").glob(".*partial"))
