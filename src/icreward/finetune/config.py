"""`FinetuneConfig`: every option of a reward fine-tuning run, with what it does."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from icreward.errors import IcrewardError
from icreward.finetune.judges import DEFAULT_JUDGES

# Options that may differ on --resume: they change how long the run goes and what it logs, not the weights so far.
RESUME_FREE_FIELDS = ("steps", "log_every", "eval_every", "save_every", "overwrite", "resume", "quiet")


@dataclass
class FinetuneConfig:
    pipeline: str = "tiny-svd"  # a diffusers pipeline folder or hub id, or tiny-svd / tiny-wan-i2v (offline, random)
    frames: int = 8  # video length generated (Wan: 4k + 1)
    height: int = 32
    width: int = 32
    sample_steps: int = 8  # sampling steps per video, with the pipeline's own scheduler
    k: int = 1  # DRaFT-K: the last K sampling steps keep gradients (K = 1 works best: DRaFT, VADER)
    steps: int = 100  # optimizer steps
    batch_size: int = 2  # videos per step per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # global norm of the LoRA gradients
    lora_rank: int = 8
    lora_alpha: float | None = None  # None: = rank (scale 1)
    reward_model: str = "default"  # what icreward.load takes: default, a checkpoint folder, metric:<name>
    head: str | None = None  # None: guidance where the model has it, else its own head
    reward_frames: int | None = (
        None  # decoded frames the reward sees (frame 0 and frames spread over 1..T-1); None: all
    )
    kl_weight: float = 0.0  # weight of the reference term: mean squared (LoRA - frozen) denoiser output at the K steps
    guidance_scale: float = 1.0  # classifier-free guidance while sampling (1: none, one denoiser call per step)
    precision: str = "fp32"  # fp32 | bf16 (autocast of the generator; the reward keeps the caller's context)
    gradient_checkpointing: bool = False  # of the denoiser (diffusers' enable_gradient_checkpointing) and the reward
    seed: int = 0
    log_every: int = 1  # a training row in metrics.csv / TensorBoard every N steps
    eval_every: int = 0  # held-out reward and judges every N steps (0: only at the start and the end)
    save_every: int = 10  # resume state every N steps (and at the end)
    eval_seed: int = 1234  # noise seeds of the held-out videos (the same videos' noise before and after)
    judges: tuple[str, ...] = DEFAULT_JUDGES
    guard: bool = False  # early stopping on the held-out judges (see `guard_check`); needs held-out images
    judge_tolerance: float = 0.01  # guard: a judge may fall by at most this share of its starting value
    motion_tolerance: float = 0.2  # guard: mean motion within this share of its starting value
    static_increase: float = 0.10  # guard: the static fraction may grow by at most this
    extra: dict[str, Any] = field(default_factory=dict)  # recorded, unused (e.g. a demo's notes)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["judges"] = list(self.judges)
        return values

    def check(self) -> FinetuneConfig:
        """Refuse values no run can use, naming the flag."""
        positive = {
            "--frames": self.frames,
            "--height": self.height,
            "--width": self.width,
            "--steps": self.steps,
            "--sample-steps": self.sample_steps,
            "--batch-size": self.batch_size,
            "--grad-accum": self.grad_accum,
            "--lora-rank": self.lora_rank,
            "--save-every": self.save_every,
            "--log-every": self.log_every,
        }
        for flag, value in positive.items():
            if value < 1:
                raise IcrewardError(f"{flag}: must be >= 1, got {value}")
        if not 0 <= self.k <= self.sample_steps:
            raise IcrewardError(f"--k: between 0 and --sample-steps ({self.sample_steps}), got {self.k}")
        if self.frames < 2:
            raise IcrewardError(f"--frames: a video needs at least 2 frames, got {self.frames}")
        if self.reward_frames is not None and self.reward_frames < 3:
            raise IcrewardError(
                f"--reward-frames: at least 3 (frame 0 and two moving frames), got {self.reward_frames}"
            )
        for flag, value in {
            "--lr": self.lr,
            "--kl-weight": self.kl_weight,
            "--weight-decay": self.weight_decay,
            "--grad-clip": self.grad_clip,
            "--eval-every": self.eval_every,
        }.items():
            if value < 0:
                raise IcrewardError(f"{flag}: must be >= 0, got {value}")
        if self.precision not in ("fp32", "bf16"):
            raise IcrewardError(f"--precision: fp32 or bf16, got {self.precision}")
        if self.guidance_scale < 1:
            raise IcrewardError(f"--guidance-scale: >= 1 (1 = no classifier-free guidance), got {self.guidance_scale}")
        return self
