"""The reward as a differentiable function for generator training loops (VADER / DRaFT reward backpropagation,
DDPO / GRPO policy gradients, best-of-N).

```python
from icreward.guidance import RewardFunction
reward_fn = RewardFunction("default", value_range="[-1,1]", layout="BCTHW", skip_first=True, max_frames=8)
frames = vae.decode(latents / vae.config.scaling_factor).sample    # (B, C, T, H, W) in [-1, 1], requires grad
rewards = reward_fn(images, frames, prompts)                         # (B,) float32, differentiable
(-rewards.mean()).backward()                                         # or reward_fn.loss(images, frames, prompts)
```

What it adds to calling a scorer (`icreward.interface.Scorer`, which checks the tensors and maps "-1,1" to [0, 1]):
the value range declared once and never guessed, both video layouts pipelines produce, frame selection that keeps
gradients (`skip_first`, `max_frames`), gradient checkpointing of the encoder, inputs in any float dtype and any
autocast context with rewards always float32, the head chosen for fine-tuning (`guidance` where the model has it),
and the reward model frozen so that gradients reach only the generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from icreward.errors import IcrewardError
from icreward.interface import VALUE_RANGES, InputError, Scorer

LAYOUTS = ("BTCHW", "BCTHW")  # what pipelines return: SVD/CogVideoX/LTX frames and latents, Wan's latents and VAE
CHECKPOINT_CHUNK = 8  # images per checkpointed encoder call: the most encoder activations alive during backward


class GuidanceError(IcrewardError, ValueError):
    """A `RewardFunction` argument is wrong (value range, layout, head, frame selection, prompts)."""


def parse_value_range(value_range: str | Sequence[float]) -> str:
    """The `VALUE_RANGES` key ("0,1" or "-1,1") of a declared range, written "[-1,1]", "[-1, 1]", "-1,1" or
    (-1, 1); anything else raises `GuidanceError`."""
    if isinstance(value_range, str):
        key = value_range.strip().strip("[]()").replace(" ", "")
    elif isinstance(value_range, Sequence) and len(value_range) == 2:
        key = ",".join(f"{float(x):g}" for x in value_range)
    else:
        key = None
    if key not in VALUE_RANGES:
        raise GuidanceError(
            f"value_range: declare what the frames hold, '[0,1]' or '[-1,1]' (VAE decoders give [-1, 1], "
            f"pipelines' output_type='pt' gives [0, 1]); got {value_range!r}"
        )
    return key


def default_head(scorer: Scorer) -> str:
    """The head that guides generation unless one is asked for: `guidance` where the scorer has it, else the
    scorer's selected head (`RewardFunction`, `best_of_n` and the fine-tuning loop all read it here)."""
    return "guidance" if "guidance" in scorer.head_names else scorer.selected_head


def select_frames(video: torch.Tensor, max_frames: int | None, skip_first: bool) -> torch.Tensor:
    """Frames of `video [B,T,C,H,W]` a reward reads: without frame 0 where `skip_first` (T >= 2 needed), then at
    most `max_frames` spread uniformly over the rest, first and last kept (`icreward.media.sample_indices`, the rule
    files are sampled by). Indexing keeps gradients: frames left out get zero gradient. Returns `[B,T',C,H,W]`."""
    from icreward.media import sample_indices

    if skip_first:
        if video.shape[1] < 2:
            raise GuidanceError(
                f"skip_first=True drops frame 0, but the video has T = {video.shape[1]} frame; decode at least 2 "
                "frames or pass skip_first=False"
            )
        video = video[:, 1:]  # (B, T-1, C, H, W)
    t = video.shape[1]
    if max_frames is None or t <= max_frames:
        return video
    index = torch.tensor(sample_indices(t, max_frames), device=video.device)
    return video.index_select(1, index)  # (B, max_frames, C, H, W)


class _CheckpointedEncoder(nn.Module):
    """An encoder (`icreward.backbones.Backbone`) run in chunks of `chunk` images, each under activation
    checkpointing: only its named tokens are kept for backward, and backward recomputes one chunk at a time."""

    def __init__(self, encoder: nn.Module, chunk: int):
        super().__init__()
        self.encoder = encoder
        self.chunk = chunk

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = [checkpoint(self.encoder, part, use_reentrant=False) for part in x.split(self.chunk)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}  # (N, ...) per token name

    def __getattr__(self, name: str) -> Any:  # the encoder's attributes (dim, preprocess_config, ...) read through
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("encoder"), name)


class RewardFunction:
    """`reward_fn(images, videos, prompts=None) -> rewards [B]`: a scorer's reward as a differentiable function of
    decoded frames, for training loops.

    Arguments:
    - `model`: a scorer name for `icreward.load` ("default", a checkpoint folder or hub id, "metric:<name>") or a
      `Scorer` object. The scorer is put in eval mode and frozen (`requires_grad_(False)`): gradients reach the
      frames, never the reward.
    - `value_range` (required, never guessed): what images and frames hold, "[0,1]" (pipelines' `output_type="pt"`)
      or "[-1,1]" (`vae.decode(...)`); values outside it raise `InputError` rather than give a wrong reward.
    - `head`: which head is the reward. Default: `guidance` where the model has it (consistency with a capped
      bonus for closeness, motion, and the prompt where it names a camera move or direction: made so that a frozen
      copy of the image does not win), else the scorer's own head. `consistency` alone rewards not moving: a
      generator tuned on it learns to stop; pair it with a motion term.
    - `layout`: "BTCHW" (`[B,T,C,H,W]`, diffusers' decoded `output_type="pt"` frames) or "BCTHW" (`[B,C,T,H,W]`,
      what Wan's and CogVideoX's VAEs decode to).
    - `skip_first`: drop frame 0 before scoring. I2V generators pin frame 0 to the input image (Wan, CogVideoX,
      LTX condition on it; VADER scores frames >= 1), so it carries no gradient worth having and makes every video
      look consistent. Default False: frame 0 is scored, as in files scored by `icreward score`; pass True when
      fine-tuning a generator whose frame 0 is the input.
    - `max_frames`: score at most this many frames, spread uniformly (`select_frames`: first and last kept) with
      gradients kept through the indexing; frames left out get no gradient. None: every frame. Rewards depend on T
      (see `Scorer`): compare rewards at one T, and use T >= 4 (better 8) where they should mean what file scores
      mean.
    - `checkpointing`: when gradients are being taken, run the reward model's encoder in chunks of
      `checkpoint_chunk` images under activation checkpointing (`torch.utils.checkpoint`): only its tokens are kept
      until backward, which recomputes one chunk at a time: the encoder's activations are not held while the rest
      of a training step's graph is (113 -> 70 MiB for the shipped model at T = 16, `bench_reward_fn.py`). Scorers
      without an encoder (handcrafted metrics) are checkpointed whole. No effect under `torch.no_grad()`; the same
      gradients either way.
    - `precision`: None (default) runs the scorer in whatever autocast context the caller has (a bf16 / fp16
      training step); "fp32" turns autocast off for the reward; "bf16" / "fp16" autocast the reward alone
      (`icreward.autocast`). Inputs in any float dtype are accepted; rewards are always float32.
    - `device`: where the scorer runs (moved there once; frames are moved to it differentiably). None: where the
      scorer already is. Rewards come back on the frames' device.
    """

    def __init__(
        self,
        model: str | Scorer = "default",
        *,
        value_range: str | Sequence[float],
        head: str | None = None,
        layout: str = "BTCHW",
        max_frames: int | None = None,
        skip_first: bool = False,
        checkpointing: bool = True,
        checkpoint_chunk: int = CHECKPOINT_CHUNK,
        precision: str | None = None,
        device: str | torch.device | None = None,
    ):
        from icreward.loading import load
        from icreward.precision import check_precision

        self.value_range = parse_value_range(value_range)
        if layout not in LAYOUTS:
            raise GuidanceError(f"layout: one of {', '.join(LAYOUTS)} (the video tensor's dimensions), got {layout!r}")
        if max_frames is not None and (
            isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
        ):
            raise GuidanceError(f"max_frames: a whole number >= 1 or None (every frame), got {max_frames!r}")
        if isinstance(checkpoint_chunk, bool) or not isinstance(checkpoint_chunk, int) or checkpoint_chunk < 1:
            raise GuidanceError(f"checkpoint_chunk: a whole number >= 1 of images, got {checkpoint_chunk!r}")
        if precision is not None:
            check_precision(precision)
        if not isinstance(model, Scorer | str):
            raise GuidanceError(
                f"model: a scorer name ('default', a checkpoint folder, metric:<name>) or a Scorer, "
                f"got {type(model).__name__}"
            )
        self.scorer = load(model) if isinstance(model, str) else model
        if device is not None:
            self.scorer.to(device)
        self.scorer.eval().requires_grad_(False)
        self.head = head if head is not None else default_head(self.scorer)
        self.scorer.check_head(self.head)
        self.layout = layout
        self.max_frames = max_frames
        self.skip_first = skip_first
        self.checkpointing = checkpointing
        self.checkpoint_chunk = checkpoint_chunk
        self.precision = precision

    def __repr__(self) -> str:
        return (
            f"RewardFunction({self.scorer.name}, head={self.head!r}, value_range={self.value_range!r}, "
            f"layout={self.layout!r}, max_frames={self.max_frames}, skip_first={self.skip_first}, "
            f"checkpointing={self.checkpointing}, precision={self.precision})"
        )

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.scorer.parameters()), None) or next(
            (b.device for b in self.scorer.buffers()), torch.device("cpu")
        )

    def to(self, device: str | torch.device) -> RewardFunction:
        """Move the scorer to `device`; returns self."""
        self.scorer.to(device)
        return self

    def frames(self, videos: torch.Tensor) -> torch.Tensor:
        """The frames the reward reads: `videos` in the declared layout -> `[B,T',C,H,W]` (`select_frames`)."""
        if not isinstance(videos, torch.Tensor) or videos.dim() != 5:
            shape = list(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
            raise InputError(
                f"videos: expected a 5-D tensor [{','.join(self.layout)}] (layout={self.layout!r}), got {shape}"
                + (
                    "; add the batch dimension with videos[None]"
                    if isinstance(videos, torch.Tensor) and videos.dim() == 4
                    else ""
                )
            )
        channel = self.layout.index("C")
        if videos.shape[channel] != 3:
            other = LAYOUTS[1 - LAYOUTS.index(self.layout)]
            hint = f"; it looks like {other}: pass layout={other!r}" if videos.shape[3 - channel] == 3 else ""
            raise InputError(
                f"videos has shape {list(videos.shape)}: with layout={self.layout!r} dimension {channel} is the 3 "
                f"colour channels{hint}"
            )
        if self.layout == "BCTHW":
            videos = videos.permute(0, 2, 1, 3, 4)  # (B, C, T, H, W) -> (B, T, C, H, W)
        return select_frames(videos, self.max_frames, self.skip_first)

    def __call__(
        self, images: torch.Tensor, videos: torch.Tensor, prompts: str | Sequence[str | None] | None = None
    ) -> torch.Tensor:
        """Rewards `[B]` (float32, on the videos' device) of `videos` (the declared layout, any T >= 1, any size) made
        from `images [B,3,H,W]` (the same value range), differentiable w.r.t. both. `prompts`: one per video, one
        string for all, or None (the text head then has no value, and guidance does without it)."""
        frames = self.frames(videos)
        b = frames.shape[0]
        prompt_list = self._prompts(prompts, b)
        if self.head == "text" and (prompt_list is None or not all(prompt_list)):
            raise GuidanceError("head 'text' scores a video against its prompt: give a prompt for every video")
        device = self.device
        dtype = next((p.dtype for p in self.scorer.parameters() if p.is_floating_point()), torch.float32)
        image_in = (
            images.to(device, dtype) if isinstance(images, torch.Tensor) and images.is_floating_point() else images
        )
        frames = frames.to(device, dtype) if frames.is_floating_point() else frames
        with self._precision(device), self._checkpointed():
            if self.head == self.scorer.selected_head:
                out = self.scorer(image_in, frames, prompt_list, value_range=self.value_range)
            else:
                out = self.scorer.all_heads(image_in, frames, prompt_list, value_range=self.value_range)[self.head]
        return out.to(videos.device, torch.float32)

    def loss(
        self, images: torch.Tensor, videos: torch.Tensor, prompts: str | Sequence[str | None] | None = None
    ) -> torch.Tensor:
        """`-rewards.mean()`: a scalar to minimise (add it, weighted, to a generator's loss)."""
        return -self(images, videos, prompts).mean()

    def policy_gradient_fn(self) -> Callable[..., tuple[torch.Tensor, dict]]:
        """The scalar form DDPO / GRPO trainers call: `fn(videos, prompts, metadata) -> (rewards [B], info)`, rewards
        float32 on the CPU without gradients. The conditioning images come in `metadata`: a list of B dicts each
        with "image" (`[3,H,W]` in the declared range) or one dict with "images" (`[B,3,H,W]`). `info` holds the
        head and the mean reward."""

        def reward_fn(videos: torch.Tensor, prompts, metadata) -> tuple[torch.Tensor, dict]:
            images = self._metadata_images(metadata)
            with torch.no_grad():
                rewards = self(images, videos, prompts).cpu()
            return rewards, {"head": self.head, "reward_mean": float(rewards.mean())}

        return reward_fn

    # ---- helpers

    @staticmethod
    def _metadata_images(metadata) -> torch.Tensor:
        if isinstance(metadata, dict) and isinstance(metadata.get("images"), torch.Tensor):
            return metadata["images"]
        if (
            isinstance(metadata, Sequence)
            and metadata
            and all(isinstance(m, dict) and isinstance(m.get("image"), torch.Tensor) for m in metadata)
        ):
            return torch.stack([m["image"] for m in metadata])  # (B, 3, H, W)
        raise GuidanceError(
            "metadata: give the conditioning images as a list of dicts with 'image' ([3,H,W] tensors) or a dict "
            "with 'images' ([B,3,H,W]), in the declared value range"
        )

    @staticmethod
    def _prompts(prompts, b: int) -> list[str | None] | None:
        if prompts is None:
            return None
        if isinstance(prompts, str):
            return [prompts] * b
        prompts = list(prompts)
        if len(prompts) != b or not all(p is None or isinstance(p, str) for p in prompts):
            raise GuidanceError(
                f"prompts: one string (or None) per video, {b} in all, or one string for all; got {len(prompts)} items"
            )
        return prompts

    def _precision(self, device: torch.device):
        from contextlib import nullcontext

        from icreward.precision import autocast

        if self.precision is None:
            return nullcontext()
        if self.precision == "fp32":
            return torch.autocast(device.type, enabled=False)
        return autocast(device, self.precision)

    @contextmanager
    def _checkpointed(self):
        """While gradients are taken and `checkpointing` is on: the scorer's encoder (its `backbone`) runs chunked
        under activation checkpointing; a scorer without one is checkpointed whole. The swap lasts for the forward
        only (backward recomputes with the encoder itself); a RewardFunction is not for concurrent calls."""
        if not (self.checkpointing and torch.is_grad_enabled()):
            yield
            return
        encoder = getattr(self.scorer, "backbone", None)
        if isinstance(encoder, nn.Module):
            self.scorer.backbone = _CheckpointedEncoder(encoder, self.checkpoint_chunk)
            try:
                yield
            finally:
                self.scorer.backbone = encoder
            return
        call = self.scorer.forward
        self.scorer.forward = lambda *a, **k: checkpoint(call, *a, use_reentrant=False, **k)
        try:
            yield
        finally:
            del self.scorer.forward  # the instance attribute; the class's forward shows again
