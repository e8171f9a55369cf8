"""CLIP-I (AIGCBench): cosine similarity of the image's and each frame's CLIP embeddings, averaged over frames."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from icreward.backbones import Backbone
from icreward.interface import Scorer, register_metric
from icreward.metrics.base import BackboneEmbedder, embed_image_and_frames
from icreward.transforms import PreprocessConfig


@register_metric("clip-i")
class ClipI(Scorer):
    """Mean over frames of `cos(image, frame_t)` on projected CLIP image embeddings, in [-1, 1]; 1 for a video of
    copies of the image.

    Kwargs: `backbone` (default `hf:openai/clip-vit-large-patch14`, AIGCBench's ViT-L/14), `preprocess` (default:
    the backbone's own, for CLIP shorter side 224 bicubic and centre crop 224), `backbone_kwargs`.
    Common size: image (cropped to the video's aspect ratio) and frames each go through the backbone's
    preprocessing. Differentiable through the frozen backbone.
    """

    name = "clip-i"
    needs_weights = True

    def __init__(
        self,
        backbone: str | Backbone = "hf:openai/clip-vit-large-patch14",
        preprocess: PreprocessConfig | dict | None = None,
        backbone_kwargs: dict | None = None,
    ):
        super().__init__()
        self.embedder = BackboneEmbedder(backbone, preprocess, backbone_kwargs)

    def forward(self, image: torch.Tensor, video: torch.Tensor, prompt: Sequence[str] | None = None) -> torch.Tensor:
        image_emb, frame_emb = embed_image_and_frames(self.embedder, image, video)  # (B, D), (B, T, D)
        return F.cosine_similarity(image_emb[:, None], frame_emb, dim=-1).mean(1)
