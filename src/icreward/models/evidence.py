"""Consistency evidence: parameter-free distances between a video's backbone tokens and its image's, with a monotone
learned read-out.

A transformer head trained on synthetic failures learns whatever separates them, and on a failure it never saw
(or on real photographs, whose token statistics differ from procedural scenes) its output can go anywhere. The
evidence branch holds the reward to one rule that is true of every consistency failure: a video whose tokens are
further from the image's scores lower. It measures, for each group of token channels (colour, texture, edges...),
how far the frames are from the image, each way and at each scale, and reads out `-sum_k softplus(w_k) * log(d_k)`:
the weights are learned, their sign is not, so every distance can only lower the reward.

Measures, per group and frame (`d` the group's distance: Euclidean, or cosine for whole-token groups):
  - `position`: mean over patches of d(frame patch, image patch at the same place): layout;
  - `match`: mean over frame patches of the distance to the nearest image patch: content that is not in the image;
  - `recall`: mean over image patches of the distance to the nearest frame patch: image content that is gone;
  - `global`: d(frame cls, image cls): the look of the whole frame;
  - `pattern`: 1 - correlation of the frame's and the image's patch maps (each centred over its patches): the
    layout, blind to a global shift or scaling of the channels (exposure, contrast);
  - `local`: mean over frame patches of the distance to the nearest image patch within `LOCAL_RADIUS` patches of
    its place (the patch grid must be square): the layout again, but tolerant of motion up to that radius, so a
    camera move or a moving subject costs little while content moved further or replaced is caught (`position`
    pays for any motion, `match` for none);
  - `local_recall`: the same from each image patch to the frames: image content gone from its neighbourhood;
  - `jitter`: how much of the change between frames turns back: d(frame t, mean of frames t-1 and t+1) over the
    mean of d(frame t, frame t-1) and d(frame t, frame t+1), each averaged over patches. Near 0 for motion that
    keeps its course, near 1 for flicker and broken frame order. Measured on 8 frames spread evenly over the video
    whatever T, and relative to the step between frames, so that it reads the same at any frame count (a raw second
    difference halves with twice the frames).
Each is aggregated over frames by its mean and its maximum (drift that grows late in the video). A model picks its
measures (`MEASURES`, the default, is the set of wave-1 checkpoints; `ALL_MEASURES` adds the local ones).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from icreward.backbones import TokenGroup

MEASURES = ("position", "match", "recall", "global", "pattern", "jitter")  # the default set
ALL_MEASURES = (*MEASURES, "local", "local_recall")
LOCAL_RADIUS = 2  # patches (each way, Chebyshev) a patch may move and still match its place under `local`
AGGREGATES = ("mean", "max")
EPS = 1e-3  # added to every distance before the log: distances below it all read as "identical"
JITTER_EPS = 1e-2  # added to the frame step the jitter is relative to: steps well below it read as a still video
JITTER_FRAMES = 8  # frames (evenly spread over the video) the jitter is measured on


def _pairwise(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Distances `[..., N, M]` between the rows of `a [..., N, D]` and `b [..., M, D]`."""
    return _finish(_pairwise_order(a, b, kind), kind, a.shape[-1])


def _pairwise_order(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """What orders the distances of `_pairwise` alike (squared Euclidean, or the cosine distance itself), so minima
    can be taken before `_finish`: the square root is monotone, and only the minima need it."""
    if kind == "cosine":
        return 1 - F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-2, -1)
    sq = a.square().sum(-1, keepdim=True) + b.square().sum(-1).unsqueeze(-2)  # (..., N, M)
    return sq.sub_(2 * a @ b.transpose(-2, -1)).clamp_min_(0)  # in place: no third (..., N, M) matrix


def _finish(order: torch.Tensor, kind: str, dim: int) -> torch.Tensor:
    """`_pairwise_order` values to distances."""
    return order if kind == "cosine" else (order + 1e-8).sqrt() / math.sqrt(dim)


def _grid(n: int, device: torch.device | None) -> tuple[int, torch.Tensor, torch.Tensor]:
    """`(side, row [N], column [N])` of each patch of a square grid of `n` patches (row-major)."""
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"local evidence needs a square patch grid, got {n} patches")
    index = torch.arange(n, device=device)
    return side, index // side, index % side


def _window_indices(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """`[N, (2r+1)^2]`: for each patch of a square grid, the patches within `radius` (Chebyshev); places off the grid
    repeat the patch itself, which is in its own window, so minima over a row are those over the window."""
    side, rows, cols = _grid(n, device)
    offsets = torch.arange(-radius, radius + 1, device=device)
    r = rows[:, None, None] + offsets[None, :, None]  # (N, 2r+1, 1)
    c = cols[:, None, None] + offsets[None, None, :]  # (N, 1, 2r+1)
    inside = (r >= 0) & (r < side) & (c >= 0) & (c < side)  # (N, 2r+1, 2r+1)
    index = (r * side + c).where(inside, torch.arange(n, device=device)[:, None, None])
    return index.flatten(1)  # (N, K)


def _rowwise(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Distances `[...]` between matching rows of `a [..., D]` and `b [..., D]`."""
    if kind == "cosine":
        return 1 - F.cosine_similarity(a, b, dim=-1)
    return ((a - b).square().mean(-1) + 1e-12).sqrt()


def check_measures(measures: Sequence[str]) -> tuple[str, ...]:
    """`measures` as a tuple, or ValueError naming an unknown or repeated one."""
    unknown = [m for m in measures if m not in ALL_MEASURES]
    if unknown or len(set(measures)) != len(measures) or not measures:
        raise ValueError(f"evidence measures must be distinct names from {', '.join(ALL_MEASURES)}, got {measures}")
    return tuple(measures)


def evidence_names(groups: Sequence[TokenGroup], measures: Sequence[str] = MEASURES) -> list[str]:
    """Names of the features `consistency_evidence` returns, in order: `<group>/<measure>/<aggregate>`."""
    return [f"{g[0]}/{m}/{a}" for g in groups for m in measures for a in AGGREGATES]


def consistency_evidence(
    img_tokens: dict[str, torch.Tensor],
    vid_tokens: dict[str, torch.Tensor],
    groups: Sequence[TokenGroup],
    measures: Sequence[str] = MEASURES,
) -> torch.Tensor:
    """`log(EPS + distance)` features `[B, K]`, K = groups x measures x aggregates (names: `evidence_names`).

    `img_tokens`: `cls [B,D]`, `patch [B,N,D]`; `vid_tokens`: `cls [B,T,D]`, `patch [B,T,N,D]`. Differentiable.
    With fewer than 3 frames the jitter is 0 (no frame has two neighbours).
    """
    with torch.autocast(vid_tokens["patch"].device.type, enabled=False):  # distances need float32
        return _evidence(img_tokens, vid_tokens, groups, check_measures(measures))


def neighbourhood(n: int, radius: int, device: torch.device | None = None) -> torch.Tensor:
    """`[N, N]` bool: patches of a square grid of `n` patches within `radius` of each other (Chebyshev)."""
    _, rows, cols = _grid(n, device)
    return ((rows[:, None] - rows).abs() <= radius) & ((cols[:, None] - cols).abs() <= radius)


MAP_MEASURES = ("position", "local", "match")  # the per-patch measures of the evidence maps


def evidence_maps(
    img_tokens: dict[str, torch.Tensor], vid_tokens: dict[str, torch.Tensor], groups: Sequence[TokenGroup]
) -> torch.Tensor:
    """Per-patch `log(EPS + distance)` maps `[B, T, N, G * 3]`: for each frame patch and token group (group-major),
    its distance to the image patch at its place (`position`), to the nearest image patch within `LOCAL_RADIUS`
    (`local`) and to the nearest image patch anywhere (`match`). Where in which frame the video departs from its
    image; the patch grid must be square. Differentiable; computed in float32."""
    return evidence_and_maps(img_tokens, vid_tokens, groups, ())[1]


def evidence_and_maps(
    img_tokens: dict[str, torch.Tensor],
    vid_tokens: dict[str, torch.Tensor],
    groups: Sequence[TokenGroup],
    measures: Sequence[str] = MEASURES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(consistency_evidence [B, K], evidence_maps [B, T, N, G*3])` from one pass over the patch distances."""
    with torch.autocast(vid_tokens["patch"].device.type, enabled=False):
        measures = check_measures(measures) if measures else ()  # none: the maps alone (`evidence_maps`)
        return _evidence(img_tokens, vid_tokens, groups, measures, maps=True)


def evidence_inputs(
    img_tokens: dict[str, torch.Tensor],
    vid_tokens: dict[str, torch.Tensor],
    groups: Sequence[TokenGroup],
    measures: Sequence[str],
    maps: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(consistency_evidence [B, K], evidence_maps [B, T, N, G*3] or None)`: all that a model whose head reads the
    tokens through the evidence alone (`head: map` with `maps`, `head: none` without) takes from them. Parameter-free,
    so for a frozen backbone it can be computed once and cached (`icreward.training.data.FeatureCache.evidence`)."""
    if maps:
        return evidence_and_maps(img_tokens, vid_tokens, groups, measures)
    return consistency_evidence(img_tokens, vid_tokens, groups, measures), None


def _evidence(
    img_tokens: dict[str, torch.Tensor], vid_tokens: dict[str, torch.Tensor], groups, measures, maps: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    img_patch, vid_patch = img_tokens["patch"].float(), vid_tokens["patch"].float()  # (B, N, D), (B, T, N, D)
    img_cls, vid_cls = img_tokens["cls"].float(), vid_tokens["cls"].float()  # (B, D), (B, T, D)
    b, t, n, _ = vid_patch.shape
    cls_dim = img_cls.shape[-1] == img_patch.shape[-1]  # cls shares the patch channels (not CLIP's projection)
    local = maps or bool({"local", "local_recall"} & set(measures))
    window = _window_indices(n, LOCAL_RADIUS, vid_patch.device) if local else None  # (N, K)
    features, patch_maps = [], []
    for _, start, end, kind in groups:
        ip, vp = img_patch[..., start:end], vid_patch[..., start:end]  # (B, N, g), (B, T, N, g)
        # Minima are taken on what orders the distances (`_pairwise_order`) and only they become distances: the
        # same values as the minima of the distances, without a square root over every pair.
        order = _pairwise_order(vp.reshape(b, t * n, -1), ip, kind).view(b, t, n, -1)  # (B, T, N, N_img)
        finish = functools.partial(_finish, kind=kind, dim=end - start)

        position, nearest = _rowwise(vp, ip[:, None], kind), finish(order.amin(-1))  # (B, T, N) each
        found = {}  # measure -> (B, T')
        found["position"] = position.mean(-1)  # (B, T)
        found["match"] = nearest.mean(-1)  # (B, T): each frame patch to its nearest image patch
        found["recall"] = finish(order.amin(-2)).mean(-1)  # (B, T): each image patch to its nearest frame patch
        if window is not None:  # only pairs within LOCAL_RADIUS: gathered, (B, T, N, K) instead of (B, T, N, N)
            local_map = finish(order.gather(-1, window.expand(b, t, n, -1)).amin(-1))  # (B, T, N)
            back = order.transpose(-2, -1).gather(-1, window.expand(b, t, n, -1)).amin(-1)  # (B, T, N_img)
            found["local"], found["local_recall"] = local_map.mean(-1), finish(back).mean(-1)  # (B, T) each
            patch_maps += [position, local_map, nearest]
        ic, vc = (img_cls[..., start:end], vid_cls[..., start:end]) if cls_dim else (ip.mean(1), vp.mean(2))
        found["global"] = _rowwise(vc, ic[:, None], kind)  # (B, T)
        ic_map = F.normalize((ip - ip.mean(1, keepdim=True)).flatten(1), dim=-1)  # (B, N*g)
        vc_map = F.normalize((vp - vp.mean(2, keepdim=True)).flatten(2), dim=-1)  # (B, T, N*g)
        found["pattern"] = 1 - (vc_map * ic_map[:, None]).sum(-1)  # (B, T)
        if "jitter" in measures:
            found["jitter"] = _jitter(vp, kind)
        for measure in measures:
            features += [found[measure].mean(1), found[measure].amax(1)]
    evidence = torch.log(EPS + torch.stack(features, dim=-1).clamp_min(0)) if features else vid_patch.new_zeros(b, 0)
    if not maps:
        return evidence  # (B, K)
    return evidence, torch.log(EPS + torch.stack(patch_maps, dim=-1).clamp_min(0))  # (B, K), (B, T, N, G*3)


def _jitter(vp: torch.Tensor, kind: str) -> torch.Tensor:
    """How much of the change between frames turns back, `(B, T')` (see the module docstring); 0 below 3 frames."""
    b, t = vp.shape[:2]
    if t < 3:
        return vp.new_zeros(b, 1)  # no frame has two neighbours
    # On JITTER_FRAMES frames spread over the video (all where T is smaller), whatever T: how jerky motion looks
    # depends on the sampling interval, so a fixed interval keeps the measure the same at any T.
    vj = vp[:, torch.linspace(0, t - 1, min(t, JITTER_FRAMES)).round().long()]  # (B, T', N, g)
    turn = _rowwise(vj[:, 1:-1], (vj[:, :-2] + vj[:, 2:]) / 2, kind).mean(-1)  # (B, T'-2)
    step = _rowwise(vj[:, 1:], vj[:, :-1], kind).mean(-1)  # (B, T'-1)
    return turn / ((step[:, 1:] + step[:, :-1]) / 2 + JITTER_EPS)  # (B, T'-2)


class EvidenceReadout(nn.Module):
    """`-sum_k (floor + softplus(w_k)) * evidence_k`: a reward that every evidence distance can only lower.

    Each weight is at least `floor`: training on one kind of failure cannot switch off the distances that catch
    another kind, which a video from outside the training data may show. Weights start at `init`, so an untrained
    read-out already ranks videos by their summed log distances. The few weights train at `lr_scale` times the
    model's learning rate (`RewardModel.param_groups` honours it): at the rate that suits the head's thousands of
    weights they would hardly move.
    """

    lr_scale = 20.0

    def __init__(
        self, groups: Sequence[TokenGroup], init: float = 0.1, floor: float = 0.05, measures: Sequence[str] = MEASURES
    ):
        super().__init__()
        if not 0 <= floor < init:
            raise ValueError(f"need 0 <= floor < init, got floor {floor}, init {init}")
        self.groups = [tuple(g) for g in groups]
        self.measures = check_measures(measures)
        self.floor = floor
        k = len(evidence_names(self.groups, self.measures))
        self.weight = nn.Parameter(torch.full((k,), math.log(math.expm1(init - floor))))

    def effective_weight(self) -> torch.Tensor:
        """The non-negative weight `[K]` of each evidence feature."""
        return self.floor + F.softplus(self.weight)

    def forward(self, img_tokens: dict[str, torch.Tensor], vid_tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reward contribution `[B]`."""
        return self.readout(consistency_evidence(img_tokens, vid_tokens, self.groups, self.measures))

    def readout(self, evidence: torch.Tensor) -> torch.Tensor:
        """Reward contribution `[B]` of evidence features `[B, K]` (`consistency_evidence` with these groups and
        measures)."""
        return -(evidence * self.effective_weight()).sum(-1)

    def weights(self) -> dict[str, float]:
        """The effective weight of each evidence feature, by name."""
        return dict(zip(evidence_names(self.groups, self.measures), self.effective_weight().tolist(), strict=True))
