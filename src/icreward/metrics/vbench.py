"""VBench / VBench++ image-to-video consistency: i2v_subject (DINO) and i2v_background (DreamSim).

The formula, per video, on embeddings of the image and of frames 0..T-1:
`c_i = max(0, cos(image, frame_i))`, `s_i = max(0, cos(frame_{i-1}, frame_i))` and
`score = w_image * max(c) + w_mean * mean(s) + w_min * min(s)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from icreward.backbones import Backbone
from icreward.interface import Scorer, register_metric
from icreward.metrics.base import BackboneEmbedder, Embedder, embed_image_and_frames
from icreward.transforms import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig

# (w_image, w_mean, w_min): weights of max(c), mean(s) and min(s). "vbench" is VBench++'s; an earlier release
# used "vbench-early".
VBENCH_WEIGHTS = {"vbench": (0.4, 0.3, 0.3), "vbench-early": (0.5, 0.5, 0.0)}
VBENCH_SUBJECT_BACKBONE = "hf:facebook/dino-vitb16"
# VBench's DINO preprocessing (its `dino_transform_*_internet`): shorter side to 256 (bicubic), centre crop 224,
# ImageNet normalisation.
VBENCH_SUBJECT_PREPROCESS = PreprocessConfig(
    resize=256, crop=224, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD
)


def vbench_i2v_formula(
    image_emb: torch.Tensor, frame_emb: torch.Tensor, weights: Sequence[float] = VBENCH_WEIGHTS["vbench"]
) -> torch.Tensor:
    """VBench's I2V score from image embeddings `[B, D]` and frame embeddings `[B, T, D]`: `[B]`, at most 1.

    1 for frames identical to the image (with weights summing to 1). With a single frame there are no
    adjacent pairs, and the score is `max(c)`. Differentiable almost everywhere (max, min and the clamp at 0
    pass gradient to the selected terms only).
    """
    w_image, w_mean, w_min = weights
    c = F.cosine_similarity(image_emb[:, None], frame_emb, dim=-1).clamp_min(0)  # (B, T)
    if frame_emb.shape[1] == 1:
        return c[:, 0]
    s = F.cosine_similarity(frame_emb[:, :-1], frame_emb[:, 1:], dim=-1).clamp_min(0)  # (B, T-1)
    return w_image * c.amax(1) + w_mean * s.mean(1) + w_min * s.amin(1)


class VBenchI2V(Scorer):
    """The VBench I2V formula on the embeddings of any `Embedder`; `weights` is a name in VBENCH_WEIGHTS or a
    `(w_image, w_mean, w_min)` triple."""

    name = "vbench-i2v"

    def __init__(self, embedder: Embedder, weights: str | Sequence[float] = "vbench"):
        super().__init__()
        self.embedder = embedder
        self.weights = tuple(VBENCH_WEIGHTS[weights] if isinstance(weights, str) else weights)
        if len(self.weights) != 3:
            raise ValueError(f"weights must be (w_image, w_mean, w_min), got {weights!r}")

    def forward(self, image: torch.Tensor, video: torch.Tensor, prompt: Sequence[str] | None = None) -> torch.Tensor:
        return vbench_i2v_formula(*embed_image_and_frames(self.embedder, image, video), self.weights)


@register_metric("vbench-i2v-subject")
class VBenchI2VSubject(VBenchI2V):
    """VBench i2v_subject: the VBench formula on CLS embeddings of a DINO ViT-B/16 (default weights (0.4, 0.3, 0.3)).

    Kwargs: `backbone` (any backbone name or instance; default `hf:facebook/dino-vitb16`), `preprocess` (a
    PreprocessConfig or its dict; default: VBench's, i.e. shorter side 256 bicubic, centre crop 224, ImageNet
    normalisation, for the default backbone, and the backbone's own preprocessing for any other), `weights`
    (see VBenchI2V), `backbone_kwargs` (passed to `build_backbone`).
    Common size: image (cropped to the video's aspect ratio) and frames each go through that preprocessing, which
    ends in a square centre crop. Differentiable through the frozen backbone.
    """

    name = "vbench-i2v-subject"
    needs_weights = True
    max_side = 512  # keeps the shorter side at 256 or more for aspect ratios up to 2:1

    def __init__(
        self,
        backbone: str | Backbone = VBENCH_SUBJECT_BACKBONE,
        preprocess: PreprocessConfig | dict | None = None,
        weights: str | Sequence[float] = "vbench",
        backbone_kwargs: dict | None = None,
    ):
        if preprocess is None and backbone == VBENCH_SUBJECT_BACKBONE:
            preprocess = VBENCH_SUBJECT_PREPROCESS
        super().__init__(BackboneEmbedder(backbone, preprocess, backbone_kwargs), weights)


@register_metric("vbench-i2v-background")
class VBenchI2VBackground(VBenchI2V):
    """VBench i2v_background: the VBench formula on DreamSim embeddings (default weights (0.4, 0.3, 0.3)).

    Kwargs: `backbone` (default `dreamsim`, which needs `pip install dreamsim` and downloads its weights once),
    `preprocess` (default: the backbone's own; DreamSim's is VBench's: a 224x224 square resize, bicubic, no crop),
    `weights`, `backbone_kwargs`, as for vbench-i2v-subject.
    Common size: the backbone's preprocessing (for DreamSim, both squashed to 224x224 after the aspect crop).
    Differentiable through the frozen backbone.
    """

    name = "vbench-i2v-background"
    needs_weights = True

    def __init__(
        self,
        backbone: str | Backbone = "dreamsim",
        preprocess: PreprocessConfig | dict | None = None,
        weights: str | Sequence[float] = "vbench",
        backbone_kwargs: dict | None = None,
    ):
        super().__init__(BackboneEmbedder(backbone, preprocess, backbone_kwargs), weights)
