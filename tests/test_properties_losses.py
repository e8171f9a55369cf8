"""Properties of the training losses (icreward.losses) on Hypothesis-drawn rewards and labels.

Convention (losses' module docstring): labels +1 = A preferred, -1 = B preferred, 0 = tie; rewards are raw outputs.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icreward.losses import bt_loss, btt_loss, btt_probabilities, contrastive_loss, mse_loss

REWARD = st.floats(-50, 50, allow_subnormal=False)
THETA = st.floats(1.05, 20)
MARGIN = st.floats(-15, 15)
MORE = st.floats(0.01, 10)  # how much further the preferred video gets ahead


@st.composite
def batches(draw, max_size=8):
    """(r_a, r_b, labels) as float64 / int64 tensors of one length."""
    rows = draw(st.lists(st.tuples(REWARD, REWARD, st.sampled_from([1, -1, 0])), min_size=1, max_size=max_size))
    r_a, r_b, labels = zip(*rows, strict=True)
    return torch.tensor(r_a, dtype=torch.float64), torch.tensor(r_b, dtype=torch.float64), torch.tensor(labels)


def one(x: float) -> torch.Tensor:
    return torch.tensor([x], dtype=torch.float64)


@settings(max_examples=40)
@given(batches(), THETA)
def test_swapping_a_and_b_with_the_label_changes_no_loss(batch, theta):
    r_a, r_b, labels = batch
    assert torch.equal(bt_loss(r_a, r_b, labels), bt_loss(r_b, r_a, -labels))
    # ties included: P(tie) is symmetric in the two rewards
    assert btt_loss(r_b, r_a, -labels, theta).item() == pytest.approx(btt_loss(r_a, r_b, labels, theta).item())


@settings(max_examples=40)
@given(batches(), batches(), st.randoms(use_true_random=False))
def test_bt_loss_ignores_ties_wherever_they_are(batch, other, random):
    r_a, r_b, labels = batch
    tie_a, tie_b, _ = other  # pairs humans tied, with any rewards
    order = list(range(len(r_a) + len(tie_a)))
    random.shuffle(order)
    more_labels = torch.cat([labels, torch.zeros(len(tie_a), dtype=labels.dtype)])[order]
    mixed = bt_loss(torch.cat([r_a, tie_a])[order], torch.cat([r_b, tie_b])[order], more_labels)
    if (labels != 0).any():
        assert mixed.item() == pytest.approx(bt_loss(r_a, r_b, labels).item(), rel=1e-12)
    else:
        assert mixed.item() == 0.0


@settings(max_examples=100)
@given(MARGIN, MORE, THETA, st.sampled_from([1, -1]))
def test_loss_falls_as_the_preferred_video_gets_further_ahead(margin, more, theta, label):
    """`margin` is r_win - r_lose; both decided losses fall strictly as it grows (float64 at these sizes)."""
    labels = torch.tensor([label])

    def rewards(m: float) -> tuple[torch.Tensor, torch.Tensor]:  # (r_a, r_b) with r_win - r_lose = m
        return (one(m), one(0.0)) if label == 1 else (one(0.0), one(m))

    assert bt_loss(*rewards(margin + more), labels) < bt_loss(*rewards(margin), labels)
    assert btt_loss(*rewards(margin + more), labels, theta) < btt_loss(*rewards(margin), labels, theta)
    assert bt_loss(*rewards(margin), labels) > 0  # and never reach 0


@settings(max_examples=100)
@given(st.floats(0, 15), MORE, THETA)
def test_tie_loss_is_smallest_at_equal_rewards_and_grows_with_the_gap(gap, more, theta):
    tie = torch.tensor([0])
    loss = btt_loss(one(gap), one(0.0), tie, theta)
    assert btt_loss(one(-gap), one(0.0), tie, theta).item() == pytest.approx(loss.item())  # either direction
    assert btt_loss(one(gap + more), one(0.0), tie, theta) > loss
    assert loss.item() >= math.log((theta + 1) / (theta - 1)) - 1e-12  # documented best value of a tie


@settings(max_examples=40)
@given(batches(), THETA)
def test_losses_are_bounded_below_as_documented(batch, theta):
    r_a, r_b, labels = batch
    assert bt_loss(r_a, r_b, labels).item() >= 0
    tie_fraction = (labels == 0).double().mean().item()
    floor = tie_fraction * math.log((theta + 1) / (theta - 1))  # decided pairs can approach 0, ties cannot
    assert btt_loss(r_a, r_b, labels, theta).item() >= floor - 1e-12


LARGE = st.floats(-1e4, 1e4)


@settings(max_examples=40)
@given(st.lists(st.tuples(LARGE, LARGE, st.sampled_from([1, -1, 0])), min_size=1, max_size=6), THETA)
def test_losses_and_gradients_stay_finite_for_large_float32_rewards(rows, theta):
    r_a, r_b, labels = zip(*rows, strict=True)
    labels = torch.tensor(labels)
    for loss_fn in (bt_loss, lambda a, b, lab: btt_loss(a, b, lab, theta)):
        a = torch.tensor(r_a, dtype=torch.float32, requires_grad=True)
        b = torch.tensor(r_b, dtype=torch.float32, requires_grad=True)
        loss = loss_fn(a, b, labels)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


@settings(max_examples=100)
@given(st.floats(-200, 200), THETA)
def test_rao_kupper_probabilities_sum_to_one_and_mirror(delta, theta):
    p_a, p_b, p_tie = btt_probabilities(one(delta), theta)
    assert (p_a + p_b + p_tie).item() == pytest.approx(1.0, abs=1e-12)
    assert min(p_a.item(), p_b.item(), p_tie.item()) >= 0
    q_a, q_b, q_tie = btt_probabilities(one(-delta), theta)
    assert q_a.item() == pytest.approx(p_b.item(), abs=1e-15) and q_b.item() == pytest.approx(p_a.item(), abs=1e-15)
    assert q_tie.item() == pytest.approx(p_tie.item(), rel=1e-12, abs=1e-300)


@st.composite
def reward_matrices(draw):
    b = draw(st.integers(1, 5))
    values = draw(st.lists(st.floats(-20, 20), min_size=b * b, max_size=b * b))
    return torch.tensor(values, dtype=torch.float64).reshape(b, b)


@settings(max_examples=40)
@given(reward_matrices(), st.data())
def test_contrastive_loss_sees_only_each_rows_differences_and_not_the_batch_order(matrix, data):
    b = matrix.shape[0]
    loss = contrastive_loss(matrix).item()
    shifts = torch.tensor(data.draw(st.lists(st.floats(-100, 100), min_size=b, max_size=b)), dtype=torch.float64)
    assert contrastive_loss(matrix + shifts[:, None]).item() == pytest.approx(loss, rel=1e-9, abs=1e-9)
    order = torch.tensor(data.draw(st.permutations(range(b))))
    assert contrastive_loss(matrix[order][:, order]).item() == pytest.approx(loss, rel=1e-9, abs=1e-9)
    assert contrastive_loss(torch.zeros(b, b, dtype=torch.float64)).item() == pytest.approx(math.log(b))
    assert loss >= 0


SCORE = st.floats(-50, 50).map(lambda v: round(v, 6))  # distinct values differ by enough that squares do not underflow


@settings(max_examples=50)
@given(st.lists(st.tuples(SCORE, SCORE), min_size=1, max_size=8))
def test_mse_is_symmetric_and_zero_only_on_agreement(rows):
    pred, target = (torch.tensor(x, dtype=torch.float64) for x in zip(*rows, strict=True))
    assert torch.equal(mse_loss(pred, target), mse_loss(target, pred))
    assert (mse_loss(pred, target).item() == 0) == torch.equal(pred, target)
