"""Training losses for reward models: small pure functions of rewards and labels.

Pair labels are a LongTensor: +1 = A preferred, -1 = B preferred, 0 = tie. Rewards are raw model outputs (higher =
more consistent); every loss is a mean over the pairs (or items) it counts, so its scale does not depend on the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check_pairs(r_a: torch.Tensor, r_b: torch.Tensor, labels: torch.Tensor) -> None:
    if r_a.shape != r_b.shape or r_a.shape != labels.shape or r_a.dim() != 1:
        raise ValueError(
            f"expected r_a, r_b, labels of the same shape [B], got {tuple(r_a.shape)}, {tuple(r_b.shape)}, "
            f"{tuple(labels.shape)}"
        )
    if ((labels != 1) & (labels != -1) & (labels != 0)).any():
        raise ValueError(f"labels must be +1 (A), -1 (B) or 0 (tie), got {sorted(set(labels.tolist()))}")


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted rewards `[B]` and human scores `[B]` (pointwise regression).

    Best value 0 (every prediction equals its score). There are no ties: each item is scored on its own; targets are
    best centred and scaled (e.g. a centred mean opinion score) so the model's reward scale stays near zero mean.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return F.mse_loss(pred, target.to(pred.dtype))


def bt_loss(r_a: torch.Tensor, r_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry negative log-likelihood `-log σ(r_win − r_lose)`, averaged over the pairs that are not ties.

    Best value 0, approached as the preferred video's reward exceeds the other's by a growing margin; at equal
    rewards it is ln 2. Ties are dropped: they neither count in the mean nor get a gradient. A batch of only ties
    returns 0 that is still attached to the graph (so `backward()` works and gives zero gradients).
    """
    _check_pairs(r_a, r_b, labels)
    decided = labels != 0
    if not decided.any():
        return (r_a.sum() + r_b.sum()) * 0.0
    margin = (r_a - r_b)[decided] * labels[decided].to(r_a.dtype)  # r_win − r_lose
    return -F.logsigmoid(margin).mean()


def btt_log_probabilities(delta: torch.Tensor, theta: float = 5.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities `(log P(A≻B), log P(B≻A), log P(tie))` of the Rao–Kupper model for Δ = r_A − r_B.

    `P(A≻B) = σ(Δ − ln θ)`, `P(B≻A) = σ(−Δ − ln θ)`, `P(tie) = (θ² − 1)·σ(Δ − ln θ)·σ(−Δ − ln θ)`, computed with
    logsigmoid so that |Δ| in the hundreds gives finite values and gradients.
    """
    if theta <= 1.0:
        raise ValueError(f"theta must be > 1 (theta = 1 means ties never happen), got {theta}")
    log_theta = math.log(theta)
    log_a = F.logsigmoid(delta - log_theta)
    log_b = F.logsigmoid(-delta - log_theta)
    log_tie = math.log(theta**2 - 1.0) + log_a + log_b
    return log_a, log_b, log_tie


def btt_probabilities(delta: torch.Tensor, theta: float = 5.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Probabilities `(P(A≻B), P(B≻A), P(tie))` of the Rao–Kupper model for Δ = r_A − r_B; they sum to 1."""
    return tuple(lp.exp() for lp in btt_log_probabilities(delta, theta))


def btt_tie_threshold(theta: float = 5.0) -> float:
    """The |Δ| below which a tie is the most likely outcome under the Rao–Kupper model (0 where it never is).

    For Δ ≥ 0, P(A≻B) ≥ P(B≻A), and P(tie) ≥ P(A≻B) ⇔ (θ² − 1)·σ(−Δ − ln θ) ≥ 1 ⇔ −Δ − ln θ ≥ logit(1/(θ² − 1))
    = −ln(θ² − 2) ⇔ Δ ≤ ln((θ² − 2)/θ). By symmetry the same holds for Δ < 0. The bound is positive only for θ > 2;
    θ = 5 gives ln 4.6 ≈ 1.526 in raw-reward units (divide by the stored score_std for z-normalised rewards).
    """
    if theta <= 1.0:
        raise ValueError(f"theta must be > 1, got {theta}")
    if theta**2 - 2.0 <= theta:
        return 0.0
    return math.log((theta**2 - 2.0) / theta)


def btt_loss(r_a: torch.Tensor, r_b: torch.Tensor, labels: torch.Tensor, theta: float = 5.0) -> torch.Tensor:
    """Bradley–Terry-with-ties (Rao–Kupper) negative log-likelihood of the observed labels, averaged over all pairs.

    Ties count as a third outcome, `P(tie) = (θ² − 1)·σ(Δ − ln θ)·σ(−Δ − ln θ)`, which is largest at Δ = 0: a tie
    pulls the two rewards together, a preference pushes them at least ~ln θ apart. The best value is not 0: a decided
    pair's loss tends to 0 as its margin grows, but a tie's loss is at least −log P(tie | Δ=0) = ln((θ + 1)/(θ − 1))
    (≈ 0.405 at θ = 5), so a batch's minimum is that times its fraction of ties.
    """
    _check_pairs(r_a, r_b, labels)
    log_a, log_b, log_tie = btt_log_probabilities(r_a - r_b, theta)
    log_p = torch.where(labels > 0, log_a, torch.where(labels < 0, log_b, log_tie))
    return -log_p.mean()


def contrastive_loss(reward_matrix: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """In-batch contrastive loss: each image should reward its own video above the videos made from other images.

    `reward_matrix[i, j]` is the reward of image i with video j (`[B, B]`); the loss is the cross-entropy of each row's
    softmax (rewards / temperature) with the diagonal as the target, averaged over images. Best value 0, approached
    as every diagonal reward exceeds its row's other rewards by a growing margin; ln B when a row is flat. There are no
    ties: each image has exactly one positive, and every other video in the batch is a negative.
    """
    if reward_matrix.dim() != 2 or reward_matrix.shape[0] != reward_matrix.shape[1]:
        raise ValueError(f"expected a square [B, B] reward matrix, got {tuple(reward_matrix.shape)}")
    target = torch.arange(reward_matrix.shape[0], device=reward_matrix.device)
    return F.cross_entropy(reward_matrix / temperature, target)
