import math

import pytest
import torch

from icreward.losses import (
    bt_loss,
    btt_loss,
    btt_probabilities,
    btt_tie_threshold,
    contrastive_loss,
    mse_loss,
)

R_A = [2.0, -1.0, 0.3, 0.0, 5.0, -0.7]
R_B = [0.5, 1.0, 0.3, 2.0, -5.0, -0.2]
LABELS = [1, -1, 0, 1, 0, -1]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def naive_btt_nll(d: float, label: int, theta: float) -> float:
    p_a, p_b = sigmoid(d - math.log(theta)), sigmoid(-d - math.log(theta))
    p = {1: p_a, -1: p_b, 0: (theta**2 - 1) * p_a * p_b}[label]
    return -math.log(p)


def tensors(*lists, dtype=torch.float64):
    return [torch.tensor(x, dtype=dtype) for x in lists]


def test_mse_matches_naive_mean_of_squares():
    pred, target = tensors([1.0, 2.0, -3.0], [0.5, 2.0, 1.0])
    assert mse_loss(pred, target).item() == pytest.approx((0.25 + 0 + 16) / 3)
    assert mse_loss(target, target).item() == 0.0


def test_bt_matches_naive_and_drops_ties():
    r_a, r_b = tensors(R_A, R_B)
    labels = torch.tensor(LABELS)
    terms = [-math.log(sigmoid((a - b) * y)) for a, b, y in zip(R_A, R_B, LABELS, strict=True) if y != 0]
    assert bt_loss(r_a, r_b, labels).item() == pytest.approx(sum(terms) / len(terms))
    r_a.requires_grad_()
    bt_loss(r_a, r_b, labels).backward()
    assert r_a.grad[torch.tensor(LABELS) == 0].abs().sum() == 0  # ties get no gradient


def test_bt_all_ties_is_zero_with_a_graph():
    r_a, r_b = tensors([0.1, 2.0], [0.3, -1.0])
    r_a.requires_grad_()
    loss = bt_loss(r_a, r_b, torch.tensor([0, 0]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(r_a.grad, torch.zeros(2, dtype=torch.float64))


def test_bt_rejects_bad_labels():
    r_a, r_b = tensors([0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="labels"):
        bt_loss(r_a, r_b, torch.tensor([2, 1]))


@pytest.mark.parametrize("theta", [5.0, 1.5, 20.0])
def test_btt_matches_naive_per_pair_likelihood(theta):
    r_a, r_b = tensors(R_A, R_B)
    expected = [naive_btt_nll(a - b, y, theta) for a, b, y in zip(R_A, R_B, LABELS, strict=True)]
    assert btt_loss(r_a, r_b, torch.tensor(LABELS), theta).item() == pytest.approx(sum(expected) / len(expected))


def test_btt_tie_value_and_best_tie_loss():
    # a tie at equal rewards costs ln((θ+1)/(θ−1)); any margin costs more
    zero = torch.zeros(1, dtype=torch.float64)
    tie = torch.tensor([0])
    assert btt_loss(zero, zero, tie).item() == pytest.approx(math.log(6 / 4))
    assert btt_loss(zero + 0.5, zero, tie).item() > math.log(6 / 4)


@pytest.mark.parametrize("delta", [100.0, -100.0, 1e4])
def test_btt_and_bt_are_stable_at_large_margins(delta):
    r_a = torch.tensor([delta, delta, delta], requires_grad=True)
    r_b = torch.zeros(3)
    for loss in (btt_loss(r_a, r_b, torch.tensor([1, -1, 0])), bt_loss(r_a, r_b, torch.tensor([1, -1, 0]))):
        (grad,) = torch.autograd.grad(loss, r_a)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert loss.item() > 10  # one pair is badly wrong, and it says so


def test_btt_probabilities_sum_to_one():
    delta = torch.linspace(-100, 100, 2001, dtype=torch.float64)
    for theta in (1.1, 2.0, 5.0, 50.0):
        p_a, p_b, p_tie = btt_probabilities(delta, theta)
        assert torch.allclose(p_a + p_b + p_tie, torch.ones_like(delta), atol=1e-12)
        assert (p_tie >= 0).all()


@pytest.mark.parametrize("theta", [1.5, 2.5, 5.0, 10.0])
def test_btt_tie_threshold_matches_a_numeric_sweep(theta):
    delta = torch.linspace(0, 10, 200_001, dtype=torch.float64)
    p_a, p_b, p_tie = btt_probabilities(delta, theta)
    tie_most_likely = (p_tie >= p_a) & (p_tie >= p_b)
    swept = delta[tie_most_likely].max().item() if tie_most_likely.any() else 0.0
    assert btt_tie_threshold(theta) == pytest.approx(swept, abs=1e-4)
    assert btt_tie_threshold(5.0) == pytest.approx(math.log(4.6))


def test_contrastive_matches_naive_cross_entropy():
    m = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    for temperature in (1.0, 0.5):
        naive = [
            -math.log(math.exp(m[i, i] / temperature) / sum(math.exp(m[i, j] / temperature) for j in range(3)))
            for i in range(3)
        ]
        assert contrastive_loss(m, temperature).item() == pytest.approx(sum(naive) / 3)


def test_contrastive_perfect_diagonal_is_near_zero_and_gradient_raises_the_diagonal():
    perfect = torch.eye(4) * 50
    assert contrastive_loss(perfect).item() < 1e-6
    m = torch.zeros(4, 4, requires_grad=True)
    assert contrastive_loss(m).item() == pytest.approx(math.log(4))
    contrastive_loss(m).backward()
    off_diagonal = ~torch.eye(4, dtype=torch.bool)
    assert (m.grad.diagonal() < 0).all() and (m.grad[off_diagonal] > 0).all()  # descent raises the diagonal


def test_btt_tie_threshold_is_calibrated_on_labels_drawn_from_the_model():
    """Labels sampled from Rao-Kupper with theta=5: the accuracy-with-ties-optimal epsilon that eval picks on such
    data lands at the BTT threshold, and predicting with it beats always predicting a winner."""
    import numpy as np

    from icreward.evaluation.stats import best_tie_threshold, pair_accuracy_ties
    from icreward.losses import btt_probabilities, btt_tie_threshold

    rng = np.random.default_rng(0)
    delta = torch.tensor(rng.uniform(-5, 5, 40_000))
    p_a, p_b, p_tie = btt_probabilities(delta, 5.0)
    probs = torch.stack([p_a, p_b, p_tie], -1).numpy()
    draws = (probs.cumsum(-1) > rng.random((len(delta), 1))).argmax(-1)
    labels = np.array([1, -1, 0])[draws]
    eps, acc = best_tie_threshold(delta.numpy(), labels)
    assert abs(eps - btt_tie_threshold(5.0)) < 0.15
    assert acc > pair_accuracy_ties(delta.numpy(), labels, 0.0) + 0.05
