"""The heads a reward carries beside consistency: `motion`, `text` and `guidance` (issue 11's contract).

All of them read one pass over the video shared by every head (`motion_inputs`): the weight-free motion field of
`icreward.flow` (block phase correlation between consecutive frames, a similarity fit per step, photometric change)
summarised as `MOTION_FEATURES` descriptors, plus the per-step similarity motion and local residual as a sequence.

- `motion`: is there motion, and is it plausible (smooth, not frozen, not jittering in place, not looping back and
  forth, not stuttering)? An MLP on the standardised video features.
- `text`: does the video do what the prompt says (camera move, subject direction)? The prompt's embedding from a
  frozen text encoder (`icreward.text_encoders`, MiniLM by default) enters the fusion by one of three designs, chosen
  by `text_fusion` and measured in the README: `film` (conditioning: the pooled prompt embedding is projected to a
  vector that the video's motion embedding is scored against, `<video(x), prompt(e)> / sqrt(d)`) or `cross`
  (cross-attention: each step of the video's motion sequence attends to the prompt's tokens, and the attended text
  is scored against the step), or `gate` (conditioning on what is asked: the pooled prompt embedding gives a
  distribution over VBench-I2V's seven camera moves and "none", learned with an auxiliary loss on the synthetic
  prompts' camera class, that weighs the weight-free camera-motion reward of each move, plus the `film` term for
  the rest, e.g. the subject's direction). There is no prompt-only term, so a prompt cannot raise every video's score
  alike.
  With no prompt the head has no value: NaN inside, null in JSON output, never an invented number.
- `guidance`: `w_c * capped(consistency) + w_m * motion + w_t * relevance * text`, the three heads' z-scores with
  non-negative weights (softplus of learned parameters, fitted on `overall` labels). Where there is no prompt the
  text term drops out, and `relevance` (1 where the prompt names a camera move or a subject direction, else 0)
  keeps prompts that name nothing the text head was trained to check from moving guidance. Consistency counts fully
  below its validation mean and, above it, saturates at `consistency_cap` (the 90th percentile of the faithful
  moving validation videos' consistency): a copy of the image is closer to it than any moving video can be, and that
  closeness must not buy what motion costs. Meant for fine-tuning and best-of-N: a frozen copy of the image wins
  consistency but loses motion.

Each head's raw output is z-normalised with the mean and std of its own validation outputs, stored in the config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TASK_HEADS = ("motion", "text", "guidance")
TEXT_FUSIONS = ("film", "cross", "gate")
STEP_FEATURES = 6  # per step: similarity (dx, dy, zoom, rotation) and the mean local residual (dx, dy)
STEP_SCALE = 20.0  # per-step motions are a few hundredths of the frame: scaled to order 1
N_CAMERA = 7  # the last columns of the video features: the camera-motion reward of each move


@dataclass
class TaskHeadsConfig:
    """What `RewardModelConfig.task_heads` holds (a dict in config.json)."""

    heads: list[str] = field(default_factory=lambda: list(TASK_HEADS))
    text_encoder: str = "minilm"  # `icreward.text_encoders` name
    text_dim: int = 384  # width of the encoder's pooled embedding
    text_token_dim: int = 384  # width of its token embeddings
    text_fusion: str = "film"  # "film" / "gate" (conditioning) or "cross" (cross-attention): the module docstring
    d_model: int = 32
    n_features: int = 0  # len(video_features()), filled in when built
    feature_mean: list[float] | None = None  # descriptor standardisation, measured on training videos
    feature_std: list[float] | None = None
    norm: dict[str, list[float]] = field(default_factory=dict)  # head -> [mean, std] of its raw validation outputs
    consistency_cap: float | None = None  # guidance counts consistency z-scores above 0 only up to about this

    def __post_init__(self) -> None:
        unknown = sorted(set(self.heads) - set(TASK_HEADS))
        if unknown or not self.heads:
            raise ValueError(f"task_heads.heads: choose from {', '.join(TASK_HEADS)}, got {self.heads!r}")
        if self.text_fusion not in TEXT_FUSIONS:
            raise ValueError(f"task_heads.text_fusion: one of {', '.join(TEXT_FUSIONS)}, got {self.text_fusion!r}")
        if "guidance" in self.heads and "motion" not in self.heads:
            raise ValueError("task_heads: guidance combines consistency, motion and text, so it needs the motion head")
        for name, value in self.norm.items():
            if name not in self.heads or len(value) != 2 or not value[1] > 0:
                raise ValueError(f"task_heads.norm.{name}: [mean, std > 0] of a head the model has, got {value!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskHeadsConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"task_heads: unknown fields {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class MotionInputs:
    """The shared pass over a video that the motion and text heads read: `features [B, F]` (raw, the columns of
    `video_features()`) and `steps [B, T-1, STEP_FEATURES]`."""

    features: torch.Tensor
    steps: torch.Tensor


def video_features() -> tuple[str, ...]:
    """Names of the columns of `MotionInputs.features`: the motion descriptors (`icreward.flow.MOTION_FEATURES`),
    then the weight-free camera-motion reward of each of VBench-I2V's seven moves (`metric:camera-motion`'s)."""
    from icreward.flow import MOTION_FEATURES
    from icreward.prompts import CAMERA_MOVES

    return (*MOTION_FEATURES, *(f"camera_{move}" for move in CAMERA_MOVES))


def motion_inputs(video: torch.Tensor) -> MotionInputs:
    """Features and per-step motion of `video [B, T, 3, H, W]` in [0, 1] (T >= 2; a single frame is repeated)."""
    from icreward.flow import motion_descriptors, motion_field
    from icreward.metrics.motion import camera_rewards

    if video.shape[1] == 1:
        video = video.expand(-1, 2, -1, -1, -1)
    motion = motion_field(video)
    residual = motion.residual.mean((2, 3))  # (B, T-1, 2)
    steps = torch.cat([motion.similarity, residual], -1) * STEP_SCALE
    features = torch.cat([motion_descriptors(motion), camera_rewards(video, motion)], 1)
    return MotionInputs(features, steps)


def _mlp(d_in: int, d: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.GELU(), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d_out))


class TextHead(nn.Module):
    """Agreement of a video's motion with a prompt (see the module docstring for the three fusions)."""

    def __init__(self, config: TaskHeadsConfig):
        super().__init__()
        from icreward.prompts import CAMERA_MOVES

        d = config.d_model
        self.fusion = config.text_fusion
        self.video = _mlp(config.n_features, d, d)
        if self.fusion in ("film", "gate"):
            self.prompt = nn.Sequential(nn.Linear(config.text_dim, d), nn.GELU(), nn.Linear(d, d))
        if self.fusion == "gate":  # which of the seven camera moves (or none) the prompt asks for
            self.moves = nn.Sequential(nn.Linear(config.text_dim, d), nn.GELU(), nn.Linear(d, len(CAMERA_MOVES) + 1))
            self.camera_scale = nn.Parameter(torch.tensor(2.0))
        else:
            self.step = nn.Linear(STEP_FEATURES, d)
            self.query = nn.Linear(d, d)
            self.key = nn.Linear(config.text_token_dim, d)
            self.value = nn.Linear(config.text_token_dim, d)
            self.out = nn.Linear(d, d)

    def move_logits(self, text) -> torch.Tensor:
        """`gate`: logits `[B, 8]` of the camera move each prompt asks for (`CAMERA_MOVES`, then "none")."""
        return self.moves(text.pooled.to(self.camera_scale.dtype))

    def forward(self, features: torch.Tensor, steps: torch.Tensor, text, camera: torch.Tensor) -> torch.Tensor:
        """`features [B, F]` (standardised), `steps [B, T-1, S]`, `text` a `TextEmbedding` of B prompts, `camera
        [B, 7]` the weight-free camera-motion rewards of the seven moves -> `[B]`."""
        video = self.video(features)  # (B, d)
        d = video.shape[-1]
        if self.fusion in ("film", "gate"):
            out = (video * self.prompt(text.pooled.to(video.dtype))).sum(-1) / math.sqrt(d)
            if self.fusion == "gate":
                asked = self.move_logits(text).softmax(-1)  # (B, 8)
                evidence = torch.cat([camera, camera.new_zeros(camera.shape[0], 1)], 1)  # "none": no camera term
                out = out + self.camera_scale * (asked * evidence).sum(-1)
            return out
        tokens = self.step(steps) + video[:, None]  # (B, S, d): each step, in the context of the whole video
        keys, values = self.key(text.tokens.to(video.dtype)), self.value(text.tokens.to(video.dtype))  # (B, L, d)
        scores = self.query(tokens) @ keys.transpose(1, 2) / math.sqrt(d)  # (B, S, L)
        scores = scores.masked_fill(~text.mask[:, None, :], float("-inf"))
        attended = self.out(scores.softmax(-1) @ values)  # (B, S, d)
        return (attended * tokens).sum(-1).mean(-1) / math.sqrt(d)


class TaskHeads(nn.Module):
    """The motion, text and guidance heads of one model (those its `TaskHeadsConfig` names)."""

    def __init__(self, config: TaskHeadsConfig):
        super().__init__()
        n_features = len(video_features())
        if config.n_features == 0:
            config.n_features = n_features
        if config.n_features != n_features:
            raise ValueError(
                f"task_heads.n_features: {config.n_features} video features recorded, this icreward computes "
                f"{n_features}"
            )
        self.config = config
        n = config.n_features
        mean = torch.tensor(config.feature_mean) if config.feature_mean else torch.zeros(n)
        std = torch.tensor(config.feature_std) if config.feature_std else torch.ones(n)
        self.register_buffer("feature_mean", mean.float(), persistent=False)
        self.register_buffer("feature_std", std.float(), persistent=False)
        self.motion = _mlp(n, config.d_model, 1) if "motion" in config.heads else None
        self.text = TextHead(config) if "text" in config.heads else None
        # guidance weights (consistency, motion, text) through softplus: softplus(0.5413) = 1
        self.guidance = nn.Parameter(torch.full((3,), 0.5413)) if "guidance" in config.heads else None
        # the text encoder is shared, frozen and not part of the checkpoint: kept out of the module tree
        object.__setattr__(self, "_encoder", None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h for h in TASK_HEADS if h in self.config.heads)

    def set_feature_statistics(self, features: torch.Tensor) -> None:
        """Standardise descriptors with the mean and std of `features [N, F]` (training videos)."""
        mean, std = features.mean(0), features.std(0).clamp(min=1e-3)
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)
        self.config.feature_mean, self.config.feature_std = mean.tolist(), std.tolist()

    def text_encoder(self):
        if self._encoder is None:
            from icreward.text_encoders import build_text_encoder

            object.__setattr__(self, "_encoder", build_text_encoder(self.config.text_encoder))
        return self._encoder

    def embed(self, prompts: Sequence[str]):
        """`TextEmbedding` of the prompts (on the heads' device)."""
        return self.text_encoder().encode(list(prompts)).to(self.feature_mean.device)

    def standardised(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feature_mean) / self.feature_std

    def raw(self, inputs: MotionInputs, prompts: Sequence[str | None] | None) -> dict[str, torch.Tensor]:
        """Raw (unnormalised) motion and text outputs `[B]`; text is NaN where an item has no prompt."""
        features = self.standardised(inputs.features.float())
        out = {}
        if self.motion is not None:
            out["motion"] = self.motion(features)[:, 0]
        if self.text is not None:
            b = features.shape[0]
            text = features.new_full((b,), float("nan"))
            given = [i for i in range(b) if prompts is not None and prompts[i]]
            if given:
                embedding = self.embed([prompts[i] for i in given])
                index = torch.tensor(given, device=features.device)
                camera = inputs.features[index, -N_CAMERA:].float()
                value = self.text(features[index], inputs.steps[index].float(), embedding, camera)
                text = text.index_put((index,), value)
            out["text"] = text
        return out

    def text_relevance(self, prompts: Sequence[str | None] | None, b: int) -> torch.Tensor:
        """`[B]`, 1 or 0: whether guidance counts an item's text head. It does where the prompt asks for what the
        text head was trained to check, a camera move or a direction of the subject as `icreward.prompts` reads
        them ("..., camera pans left", "a dog running to the right"); a prompt that names neither ("a golden
        labrador walking") leaves guidance to consistency and motion, and so does no prompt."""
        from icreward.prompts import camera_move, subject_direction

        names = [bool(p) and (camera_move(p) is not None or subject_direction(p) is not None) for p in prompts or []]
        out = self.feature_mean.new_zeros(b)
        if self.text is not None and names:
            out = out + torch.tensor(names, dtype=out.dtype, device=out.device)
        return out

    def normalise(self, name: str, raw: torch.Tensor) -> torch.Tensor:
        mean, std = self.config.norm.get(name, (0.0, 1.0))
        return (raw - mean) / std

    def guidance_weights(self) -> torch.Tensor:
        """Non-negative weights of (consistency, motion, text) in `guidance`."""
        return F.softplus(self.guidance)

    def capped(self, consistency: torch.Tensor) -> torch.Tensor:
        """Consistency as guidance counts it: unchanged up to 0 (the validation mean), then `cap * tanh(c / cap)`,
        so a video closer to the image than faithful moving videos get (a copy of it) gains almost nothing more."""
        cap = self.config.consistency_cap
        if cap is None:
            return consistency
        return torch.where(consistency > 0, cap * torch.tanh(consistency.clamp(min=0) / cap), consistency)

    def combine(
        self,
        consistency: torch.Tensor,
        motion: torch.Tensor,
        text: torch.Tensor | None,
        relevance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`guidance` from the heads' z-scores; the text term drops out where `text` is NaN (no prompt) and counts
        `relevance` (`text_relevance`) of its weight elsewhere."""
        w = self.guidance_weights()
        out = w[0] * self.capped(consistency) + w[1] * motion
        if text is not None:
            weight = w[2] if relevance is None else w[2] * relevance
            out = out + weight * torch.nan_to_num(text, nan=0.0)
        return out

    def forward(
        self, consistency: torch.Tensor, inputs: MotionInputs, prompts: Sequence[str | None] | None
    ) -> dict[str, torch.Tensor]:
        """Every head's z-score `[B]` given the consistency z-scores and the shared motion inputs."""
        raw = self.raw(inputs, prompts)
        out = {name: self.normalise(name, value) for name, value in raw.items()}
        if self.guidance is not None:
            relevance = self.text_relevance(prompts, consistency.shape[0]) if "text" in out else None
            guidance = self.combine(consistency, out["motion"], out.get("text"), relevance)
            out["guidance"] = self.normalise("guidance", guidance)
        return out
