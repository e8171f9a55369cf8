"""IC-Reward: VideoReward adapted to image-to-video consistency, with the reference image in place of the prompt.

One backbone encodes the image and all T frames in one batch. Frame tokens are projected to `d_model`, tagged with
a type embedding and their relative time in the video, then pass `depth` fusion blocks, each:
  1. frame -> image matching: every frame token cross-attends to the image's tokens and an MLP compares the token
     with its match ([x, m, x - m, x * m]); explicit token matching is the inductive bias that generalises best;
  2. temporal attention at each spatial position across the T frames, so drift late in the video is seen.
The IC head's learned queries then attend over the fused tokens of all frames, and an MLP reads the reward out.
Attention maps (fusion and IC head) come back on request, to show where in which frame a video departs from its image.

With `head: map`, the IC head reads the evidence maps instead (`icreward.models.evidence.evidence_maps`): for every
patch of every frame, its distances to the image patch at its place, to the nearest image patch nearby and to the
nearest anywhere, per token group. That is the frame -> image matching done explicitly; a small MLP embeds each
patch's distances and the IC head's learned queries attend over all frames' patches, so it can weigh a change by
where it is, how concentrated it is and how many frames show it, which the read-out's means and maxima cannot. The
maps are the same at any frame count, and the head's attention says where in which frame it looked.

With `head: none`, the model is the evidence read-out alone: none of the attention path is built or computed.

With `evidence`, the reward also has a monotone part (`icreward.models.evidence`): parameter-free distances between
the frames' and the image's backbone tokens, read out with non-negative learned weights, so any departure from the
image lowers the reward even where the head, trained on other failures, has not learned it. `head_bound` then keeps
the head to `bound * tanh(head / bound)`: it reorders close calls and cannot overrule large distances.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from icreward.models.base import RewardModel, RewardModelConfig, Tokens, check_bool, check_float, check_int
from icreward.models.evidence import (
    EPS,
    MAP_MEASURES,
    MEASURES,
    EvidenceReadout,
    check_measures,
    evidence_and_maps,
    evidence_inputs,
    evidence_maps,
)

HEADS = ("attention", "map", "none")
MAP_SCALE = 4.0  # evidence-map values (log distances above the floor) are divided by it before the map head
TIME_FREQUENCIES = 8  # Fourier frequencies (pi, 2pi, ...) of the relative frame time
# Options of earlier versions that every recipe left at one value, now fixed: a checkpoint that records them loads
# when it holds that value.
FIXED_OPTIONS = {"use_cls": True, "match_features": True, "pool_readout": True, "time_frequencies": TIME_FREQUENCIES}


@dataclass
class ICRewardConfig(RewardModelConfig):
    head: str = "attention"  # "attention": fusion blocks + IC head; "map": IC head over the evidence maps (needs
    #                           evidence); "none": evidence read-out alone (needs evidence)
    d_model: int = 128  # width of the fusion, temporal and head layers (backbone tokens are projected to it)
    heads: int = 4  # attention heads of every attention layer; d_model must be a multiple
    depth: int = 2  # fusion blocks, each: frame->image cross-attention + matching MLP, then temporal attention
    mlp_ratio: float = 2.0  # hidden width of every MLP, relative to its output width
    head_queries: int = 4  # learned query tokens of the IC head
    dropout: float = 0.0  # dropout inside every MLP
    evidence: bool = False  # add the monotone consistency-evidence branch (icreward.models.evidence) to the reward
    evidence_measures: list[str] | None = None  # its measures (None: evidence.MEASURES, the wave-1 set)
    head_bound: float | None = None  # with evidence: the IC head's part of the reward is bound * tanh(head / bound),
    #                                  so it reorders close calls but cannot overrule large distances
    head_reference: bool = False  # the attention head's part is measured against its output on a still copy of the
    #                               image, so a constant offset (which pairwise losses never see) cannot saturate the
    #                               bound (head 'map' always is)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.head, str) or self.head not in HEADS:
            raise ValueError(f"head: must be one of {', '.join(HEADS)}, got {self.head!r}")
        for name in ("d_model", "heads", "depth", "head_queries"):
            check_int(self, name, minimum=1)
        if self.d_model % self.heads:
            raise ValueError(f"d_model: {self.d_model} is not a multiple of heads ({self.heads})")
        check_float(self, "mlp_ratio", above=0)
        if int(self.d_model * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio: {self.mlp_ratio} leaves the MLPs no hidden unit at d_model {self.d_model}")
        check_float(self, "dropout", minimum=0, below=1)
        check_bool(self, "evidence")
        check_bool(self, "head_reference")
        if self.evidence_measures is not None:
            if not isinstance(self.evidence_measures, list | tuple):
                raise ValueError(f"evidence_measures: must be a list of names, got {self.evidence_measures!r}")
            self.evidence_measures = list(check_measures(self.evidence_measures))
        check_float(self, "head_bound", above=0, optional=True)  # for no head at all, set head: none
        if self.head in ("none", "map") and not self.evidence:
            raise ValueError(f"head {self.head!r} needs evidence: true (it reads the evidence distances)")
        if self.head == "map" and self.head_reference:
            raise ValueError(
                "head_reference is for head 'attention'; head 'map' is always measured against a still copy"
            )
        if self.head == "none" and (self.head_bound is not None or self.head_reference):
            raise ValueError("head_bound and head_reference shape the attention head; head 'none' has none")

    @classmethod
    def from_dict(cls, d: dict) -> ICRewardConfig:
        """Like `RewardModelConfig.from_dict`; options that are now fixed are accepted at their fixed value."""
        d = dict(d)
        for name, fixed in FIXED_OPTIONS.items():
            if name in d and d.pop(name) != fixed:
                raise ValueError(f"{name} other than {fixed!r} is no longer supported")
        return super().from_dict(d)


class Attention(nn.Module):
    """Multi-head attention returning its weights on request: `x [B,L,d]` attends to `context [B,S,d]`.

    The key projection has no bias: a key bias adds the same logit to every key of a query, which softmax cancels,
    so it would never receive a gradient.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns `(out [B,L,d], weights [B,heads,L,S] or None)`."""
        b, length, d = x.shape
        q = self.q(x).view(b, length, self.heads, -1).transpose(1, 2)  # (B, h, L, d/h)
        k = self.k(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)  # (B, h, S, d/h)
        v = self.v(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)  # (B, h, S, d/h)
        weights = None
        if need_weights:
            weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)  # (B, h, L, S)
            out = weights @ v  # (B, h, L, d/h)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, h, L, d/h)
        out = out.transpose(1, 2).reshape(b, length, d)  # (B, L, d)
        return self.out(out), weights


class MLP(nn.Sequential):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float, out_bias: bool = True):
        super().__init__(
            nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out, bias=out_bias)
        )


class RelativeTimeEmbedding(nn.Module):
    """Embedding of each frame's relative time tau = t / (T - 1) in [0, 1]: Fourier features -> learned linear map.

    Frames are sampled uniformly over the whole video, so tau (not the index t) says where in the video a frame is;
    a model trained at T = 16 therefore reads T = 8 or T = 24 with the same meaning, and there is no maximum T.
    """

    def __init__(self, dim: int, frequencies: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, frequencies + 1, dtype=torch.float32), persistent=False)
        self.proj = nn.Linear(2 * frequencies, dim)

    def forward(self, num_frames: int) -> torch.Tensor:
        """Returns `[T, dim]`."""
        tau = torch.linspace(0.0, 1.0, num_frames, device=self.freqs.device) if num_frames > 1 else self.freqs[:1] * 0
        angles = tau[:, None] * self.freqs  # (T, F)
        return self.proj(torch.cat([angles.sin(), angles.cos()], dim=-1))  # (T, 2F) -> (T, dim)


def token_match_features(image: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Explicit token matching on backbone tokens: `image [B,N,D]`, `frames [B,T,N,D]` -> `[B,T,N,2]`.

    Per frame token: cosine similarity to its best-matching image token (is this content in the image anywhere?)
    and to the image token at the same position (is it where the image had it?). Parameter-free, so the bias that
    a token which finds no match is a departure from the image holds from the first step.
    """
    img = F.normalize(image, dim=-1)  # (B, N, D)
    vid = F.normalize(frames, dim=-1)  # (B, T, N, D)
    sim = torch.einsum("btnd,bmd->btnm", vid, img)  # (B, T, N, N)
    best = sim.amax(-1)  # (B, T, N)
    same = (vid * img[:, None]).sum(-1)  # (B, T, N)
    return torch.stack([best, same], dim=-1)  # (B, T, N, 2)


class FrameImageFusion(nn.Module):
    """Each frame token finds its match among the image's tokens (cross-attention); an MLP compares the two."""

    def __init__(self, config: ICRewardConfig):
        super().__init__()
        d = config.d_model
        self.norm_frames = nn.LayerNorm(d)
        self.norm_image = nn.LayerNorm(d)
        self.attn = Attention(d, config.heads)
        self.norm_pair = nn.LayerNorm(4 * d)
        self.compare = MLP(4 * d, int(d * config.mlp_ratio), d, config.dropout)

    def forward(
        self, frames: torch.Tensor, image: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`frames [B,T,N,d]`, `image [B,N_img,d]` -> `(frames [B,T,N,d], weights [B,T,heads,N,N_img] or None)`."""
        b, t, n, d = frames.shape
        x = self.norm_frames(frames)  # (B, T, N, d)
        # All T*N frame tokens query the same image tokens, so the image is never repeated T times.
        matched, weights = self.attn(x.reshape(b, t * n, d), self.norm_image(image), need_weights)  # (B, T*N, d)
        matched = matched.view(b, t, n, d)  # (B, T, N, d)
        pair = torch.cat([x, matched, x - matched, x * matched], dim=-1)  # (B, T, N, 4d)
        frames = frames + self.compare(self.norm_pair(pair))  # (B, T, N, d)
        if weights is not None:
            weights = weights.unflatten(2, (t, n)).transpose(1, 2)  # (B, h, T*N, N_img) -> (B, T, h, N, N_img)
        return frames, weights


class TemporalAttention(nn.Module):
    """A pre-norm transformer block over time, run at each spatial position (cls included) separately.

    Per position rather than over pooled frame tokens: it costs B*N*T^2*d, a factor N/T below the fusion's
    B*T*N^2*d, so it is nearly free, and it keeps the spatial detail that the IC head later localises drift with.
    """

    def __init__(self, config: ICRewardConfig):
        super().__init__()
        d = config.d_model
        self.norm_attn = nn.LayerNorm(d)
        self.attn = Attention(d, config.heads)
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = MLP(d, int(d * config.mlp_ratio), d, config.dropout)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """`frames [B,T,N,d]` -> `[B,T,N,d]`."""
        b, t, n, d = frames.shape
        x = frames.transpose(1, 2).reshape(b * n, t, d)  # (B*N, T, d)
        h = self.norm_attn(x)
        x = x + self.attn(h, h)[0]  # (B*N, T, d)
        x = x + self.mlp(self.norm_mlp(x))  # (B*N, T, d)
        return x.view(b, n, t, d).transpose(1, 2)  # (B, T, N, d)


class FusionBlock(nn.Module):
    def __init__(self, config: ICRewardConfig):
        super().__init__()
        self.fusion = FrameImageFusion(config)
        self.temporal = TemporalAttention(config)

    def forward(
        self, frames: torch.Tensor, image: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        frames, weights = self.fusion(frames, image, need_weights)
        return self.temporal(frames), weights


class ICHead(nn.Module):
    """Learned queries read the fused tokens of all frames; an MLP turns what they read into the reward."""

    def __init__(self, config: ICRewardConfig):
        super().__init__()
        d, q = config.d_model, config.head_queries
        self.queries = nn.Parameter(torch.randn(q, d) * 0.02)
        self.norm_tokens = nn.LayerNorm(d)
        self.attn = Attention(d, config.heads)
        width = (q + 1) * d  # the queries' reads and the mean of the fused tokens
        self.norm_read = nn.LayerNorm(width)
        # No output bias: pairwise losses cannot see a constant offset (it would never get a gradient), and the
        # offset of the served reward is the stored score_mean (regress centred scores with MSE).
        self.mlp = MLP(width, int(d * config.mlp_ratio), 1, config.dropout, out_bias=False)

    def forward(self, tokens: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`tokens [B,L,d]` -> `(reward [B], weights [B,Q,L] averaged over heads, or None)`."""
        b = tokens.shape[0]
        queries = self.queries.expand(b, -1, -1)  # (B, Q, d)
        tokens = self.norm_tokens(tokens)  # (B, L, d)
        read, weights = self.attn(queries, tokens, need_weights)  # (B, Q, d), (B, h, Q, L)
        read = torch.cat([read.flatten(1), tokens.mean(1)], dim=-1)  # (B, Q*d + d)
        reward = self.mlp(self.norm_read(read)).squeeze(-1)  # (B,)
        return reward, None if weights is None else weights.mean(1)  # (B,), (B, Q, L)


class ICRewardModel(RewardModel):
    model_type = "icreward"
    config_class = ICRewardConfig

    def __init__(self, config: ICRewardConfig):
        super().__init__(config)
        if config.head == "map":
            channels = len(MAP_MEASURES) * len(self.backbone.token_groups)  # evidence_maps' channels
            d = config.d_model
            # No LayerNorm on the distances: it would drop how far a patch is from the image and blow the rounding
            # noise of a still patch up to unit scale. The maps are shifted so a distance of 0 reads 0 instead.
            self.map_tokens = nn.Sequential(nn.Linear(channels, d), nn.GELU(), nn.Linear(d, d))
            self.ic_head = ICHead(config)
        if config.head == "attention":
            d = config.d_model
            # cls and patch tokens get their own projections: their widths differ in some backbones (CLIP's projected
            # embedding), and their roles differ in all of them.
            patch_dim = self.backbone.patch_dim
            self.proj_patch = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, d))
            self.proj_cls = nn.Sequential(nn.LayerNorm(self.backbone.dim), nn.Linear(self.backbone.dim, d))
            self.type_embed = nn.Parameter(torch.randn(2, d) * 0.02)  # row 0: image tokens, row 1: frame tokens
            self.time_embed = RelativeTimeEmbedding(d, TIME_FREQUENCIES)
            self.match_embed = nn.Linear(2, d)
            self.blocks = nn.ModuleList([FusionBlock(config) for _ in range(config.depth)])
            self.ic_head = ICHead(config)
        self.evidence = None
        if config.evidence:
            self.evidence = EvidenceReadout(self.backbone.token_groups, measures=config.evidence_measures or MEASURES)

    def _tokens(self, tokens: Tokens) -> torch.Tensor:
        """Projected patch tokens with the cls token first: `[..., N', d]`, N' = N + 1."""
        if "patch" not in tokens:
            raise ValueError(f"IC-Reward needs patch tokens; backbone {self.config.backbone!r} returns only cls")
        patch = self.proj_patch(tokens["patch"])  # (..., N, d)
        return torch.cat([self.proj_cls(tokens["cls"]).unsqueeze(-2), patch], dim=-2)  # (..., 1+N, d)

    def head(
        self, img_tokens: Tokens, vid_tokens: Tokens, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """Raw reward `[B]` from backbone tokens (`img cls [B,D], patch [B,N,D]`; `vid cls [B,T,D], patch [B,T,N,D]`).

        With `return_attention`, also `{"fusion": one [B, T, heads, N', N'] map per fusion block (frame token ->
        image token), "head": [B, Q, T*N'] (IC-head queries over all frames' tokens, frame-major)}`, N' = N + 1
        (cls first). A model with `head: none` has no attention to return.
        """
        if self.config.head == "none":
            if return_attention:
                raise ValueError("this IC-Reward model has no attention head (head: none): no attention maps")
            return self.evidence(img_tokens, vid_tokens)
        if self.config.head == "map":
            evidence, evidence_maps = evidence_and_maps(
                img_tokens, vid_tokens, self.evidence.groups, self.evidence.measures
            )
            part, maps = self._bounded(*self._map_head(evidence_maps, return_attention))
            reward = self.evidence.readout(evidence) + part
        else:
            reward, maps = self.head_part(img_tokens, vid_tokens, return_attention)
            if self.evidence is not None:
                reward = reward + self.evidence(img_tokens, vid_tokens)
        if return_attention:
            return reward, maps
        return reward

    def evidence_reader(self) -> Callable[[Tokens, Tokens], tuple[torch.Tensor, torch.Tensor | None]] | None:
        """Where the head reads the tokens through the evidence alone (`head: map` or `none`): a picklable function
        `(img_tokens, vid_tokens) -> (evidence [B, K], maps [B, T, N, C] or None)` of everything the head takes from
        them, which `head_from_evidence` finishes; None for the attention head. Parameter-free: with a frozen
        backbone, training caches its output (`FeatureCache.evidence`) and an epoch costs only the head."""
        if self.evidence is None or self.config.head not in ("map", "none"):
            return None
        groups, measures = self.evidence.groups, self.evidence.measures
        return functools.partial(evidence_inputs, groups=groups, measures=measures, maps=self.config.head == "map")

    def head_from_evidence(self, evidence: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
        """Raw reward `[B]` from what `evidence_reader` returns: `head` without the distances, the same values."""
        if self.config.head == "none":
            return self.evidence.readout(evidence)
        if self.config.head != "map" or maps is None:
            raise ValueError("head_from_evidence needs a model with head 'map' (and its maps) or 'none'")
        part, _ = self._bounded(*self._map_head(maps, False))
        return self.evidence.readout(evidence) + part

    def head_part(
        self, img_tokens: Tokens, vid_tokens: Tokens, return_attention: bool = False
    ) -> tuple[torch.Tensor, dict | None]:
        """What the head (attention or map) adds to the raw reward, `[B]` (after `head_reference` and `head_bound`),
        with its attention maps when asked (else None)."""
        if self.config.head == "map":
            maps = evidence_maps(img_tokens, vid_tokens, self.evidence.groups)
            return self._bounded(*self._map_head(maps, return_attention))
        if self.config.head != "attention":
            raise ValueError("this IC-Reward model has no head (head: none)")
        reward, maps = self._attention_head(img_tokens, vid_tokens, return_attention)
        if self.config.head_reference:
            still = {k: v[:, None].expand(-1, 2, *v.shape[1:]) for k, v in img_tokens.items()}  # the image, 2 frames
            reward = reward - self._attention_head(img_tokens, still, False)[0]
        return self._bounded(reward, maps)

    def _bounded(self, reward: torch.Tensor, maps: dict | None) -> tuple[torch.Tensor, dict | None]:
        if self.config.head_bound is not None:
            reward = self.config.head_bound * torch.tanh(reward / self.config.head_bound)
        return reward, maps

    def _map_head(self, evidence_maps: torch.Tensor, return_attention: bool) -> tuple[torch.Tensor, dict | None]:
        """The map head on `evidence_maps [B, T, N, C]` -> (raw part `[B]`, `{"head": [B, Q, T*N]}` or None)."""
        dtype = self.map_tokens[0].weight.dtype
        shifted = (evidence_maps.flatten(1, 2) - math.log(EPS)) / MAP_SCALE  # (B, T*N, C): 0 where identical
        tokens = self.map_tokens(shifted.to(dtype))  # (B, T*N, d)
        reward, weights = self.ic_head(tokens, return_attention)
        # Measured against a still copy of the image (every distance 0): pairwise losses never see a constant offset,
        # so without the reference it could drift until head_bound saturates. All the still video's tokens are the
        # same, so one stands for them all.
        still = self.map_tokens(evidence_maps.new_zeros(1, 1, evidence_maps.shape[-1]).to(dtype))
        reward = reward - self.ic_head(still)[0]
        return reward, {"fusion": (), "head": weights} if return_attention else None

    def without_head(self, offset: float) -> ICRewardModel:
        """An evidence-only copy (`head: none`) for a model whose head adds about the constant `offset` to every raw
        reward: the offset moves into `score_mean`, so rewards change by what the head's output deviated from it,
        over `score_std`. The copy computes none of the head."""
        if self.evidence is None or self.config.head == "none":
            raise ValueError("only an IC-Reward model with a head and the evidence branch can drop its head")
        config = copy.deepcopy(self.config)
        config.head, config.head_bound, config.head_reference = "none", None, False
        config.score_mean = self.config.score_mean - offset
        pruned = type(self)(config)
        pruned.load_state_dict({k: v for k, v in self.state_dict().items() if k in pruned.state_dict()})
        return pruned.to(next(self.parameters()).device).train(self.training)

    def _attention_head(
        self, img_tokens: Tokens, vid_tokens: Tokens, return_attention: bool
    ) -> tuple[torch.Tensor, dict | None]:
        """The attention path: fusion blocks and IC head -> (raw reward `[B]`, attention maps or None)."""
        image = self._tokens(img_tokens) + self.type_embed[0]  # (B, N', d)
        frames = self._tokens(vid_tokens) + self.type_embed[1]  # (B, T, N', d)
        b, t, n, d = frames.shape
        frames = frames + self.time_embed(t)[:, None]  # (B, T, N', d) + (T, 1, d)
        match = token_match_features(img_tokens["patch"], vid_tokens["patch"])  # (B, T, N, 2)
        cls_sim = F.cosine_similarity(vid_tokens["cls"], img_tokens["cls"][:, None], dim=-1)  # (B, T)
        match = torch.cat([cls_sim[..., None, None].expand(-1, -1, 1, 2), match], dim=2)  # (B, T, N', 2)
        frames = frames + self.match_embed(match.to(frames.dtype))  # (B, T, N', d)
        fusion_maps = []
        for block in self.blocks:
            frames, weights = block(frames, image, return_attention)
            fusion_maps.append(weights)
        reward, head_map = self.ic_head(frames.reshape(b, t * n, d), return_attention)  # (B, T*N', d) in
        return reward, {"fusion": tuple(fusion_maps), "head": head_map} if return_attention else None


@torch.no_grad()
def attention_heatmaps(
    model: ICRewardModel, image: torch.Tensor, video: torch.Tensor, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Per-frame spatial maps `[B, T, h, w]` of where the IC head looks: its attention, averaged over its queries, on
    each patch of each frame (the patch grid, or bilinearly resized to `size`).

    Values are attention mass, not normalised per frame: over all frames and patches they sum to 1 minus what went
    to the cls tokens, so the maps of different frames are comparable.
    """
    _, attention = model(image, video, return_attention=True)
    b, t = video.shape[:2]
    maps = attention["head"].mean(1).view(b, t, -1)  # (B, Q, T*N') -> (B, T, N')
    if model.config.head == "attention":
        maps = maps[..., 1:]  # cls dropped: (B, T, N)
    side = math.isqrt(maps.shape[-1])
    if side * side != maps.shape[-1]:
        raise ValueError(f"cannot lay {maps.shape[-1]} patch tokens out on a square grid")
    maps = maps.reshape(b, t, side, side)  # (B, T, h, w)
    if size is not None:
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)  # (B, T, *size)
    return maps
