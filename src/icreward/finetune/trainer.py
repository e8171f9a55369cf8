"""The reward fine-tuning loop (`icreward finetune`): DRaFT-K / VADER-style reward backpropagation into a LoRA on a
diffusers I2V pipeline's denoiser.

One step: draw `batch_size` conditioning images (seeded by the run's seed and the step, so a resumed run draws what
the uninterrupted run would), sample videos with the pipeline's scheduler (no gradients before the last K steps),
VAE-decode (a subset of frames where the VAE allows), score with the reward, and step AdamW on
`-reward + kl_weight * reference` (`sampling.sample`). Only the LoRA parameters require gradients.

The run folder `OUT`:
- `finetune_config.json`: the resolved config, pipeline, data, versions (written first; `--resume` checks it);
- `last/`: the resume state, one atomic folder (`lora.safetensors`, `lora_config.json`, `optimizer.pt`,
  `state.json`, and `accepted.safetensors` under the guard), replaced whole at each save;
- `lora/`: the fine-tuned LoRA (`icreward.finetune.load_lora`), written atomically at the end: the last weights,
  or under `guard` those of the best held-out evaluation that passed the guard;
- `metrics.csv` and TensorBoard events: a `train` row every `log_every` steps (reward, loss, reference term,
  gradient norm, seconds, the reward's share of the step) and an `eval` row at each held-out evaluation;
- `summary.json`: the held-out evaluation at the start and the end, the guard's decision, timings, peak memory.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from icreward.atomic import atomic_dir, atomic_write
from icreward.errors import IcrewardError
from icreward.finetune.config import RESUME_FREE_FIELDS, FinetuneConfig
from icreward.finetune.data import ConditioningSet
from icreward.finetune.families import family_for
from icreward.finetune.judges import Evaluation, evaluate, load_judges
from icreward.finetune.lora import LORA_CONFIG, TARGET_MODULES, add_lora, lora_state, set_lora_state, write_lora
from icreward.finetune.sampling import sample
from icreward.precision import autocast

CONFIG_NAME = "finetune_config.json"
STATE_DIR = "last"
STATE_NAME = "state.json"
LORA_DIR = "lora"
METRICS_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
COLUMNS = (
    "kind",
    "step",
    "loss",
    "reward",
    "reward_std",
    "reference",
    "grad_norm",
    "seconds",
    "reward_seconds",
    "reward_share",
    "heldout_reward",
    "motion",
    "static_fraction",
    "guard",
)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak memory so far: the accelerator's allocator where there is one, and the process's resident set."""
    out = {
        "process_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / (1024 if sys.platform != "darwin" else 1024 * 1024)
    }
    if device.type == "cuda":
        out["cuda_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def guard_check(base: dict[str, Any], now: dict[str, Any], config: FinetuneConfig) -> str | None:
    """None when the held-out evaluation `now` keeps the judges, motion and static fraction of `base` within the
    config's tolerances; else what failed (the guard against reward hacking)."""
    for name, before in base["judges"].items():
        after = now["judges"][name]
        if after < before - config.judge_tolerance * abs(before):
            return f"{name} fell from {before:.4f} to {after:.4f}"
    if now["motion"] < (1 - config.motion_tolerance) * base["motion"]:
        return f"motion fell from {base['motion']:.4f} to {now['motion']:.4f}"
    if now["static_fraction"] > base["static_fraction"] + config.static_increase + 1e-9:
        return f"static fraction grew from {base['static_fraction']:.3f} to {now['static_fraction']:.3f}"
    return None


class Finetuner:
    """Holds a run: pipeline parts, LoRA, optimizer, reward, judges, the run folder. `run()` trains to `steps`."""

    def __init__(
        self,
        pipe,
        config: FinetuneConfig,
        train: ConditioningSet,
        out: str | Path,
        *,
        heldout: ConditioningSet | None = None,
        resume: bool = False,
        overwrite: bool = False,
        log=None,
        accelerator=None,
    ):
        from accelerate import Accelerator

        from icreward.guidance import RewardFunction

        self.config = config.check()
        if config.guard and heldout is None:
            raise IcrewardError("--guard stops on held-out judges: give --heldout images")
        self.out = Path(out)
        self.train, self.heldout = train, heldout
        self.log = log or (lambda line: print(line, file=sys.stderr))
        # Precision and accumulation are the run's own (`autocast`, `no_sync`), not the Accelerator's: its state is
        # one per process and refuses a second mixed_precision (two runs in one notebook or test session).
        self.accelerator = accelerator or Accelerator()
        self.device = self.accelerator.device
        self.pipe = pipe.to(self.device)
        self.family = family_for(pipe, guidance_scale=config.guidance_scale)
        for part in pipe.components.values():  # VAE, encoders, denoiser: frozen; only the LoRA trains
            if isinstance(part, torch.nn.Module):
                part.requires_grad_(False).eval()
        denoiser = self.family.denoiser
        self.params = add_lora(denoiser, config.lora_rank, config.lora_alpha, seed=config.seed)
        if config.gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()
        denoiser.train()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.denoiser, self.optimizer = self.accelerator.prepare(denoiser, self.optimizer)
        self.base_denoiser = denoiser  # the unwrapped module that owns the adapters
        self.reward_fn = RewardFunction(
            config.reward_model,
            value_range="[-1,1]",
            head=config.head,
            layout="BTCHW",
            checkpointing=config.gradient_checkpointing,
            device=self.device,
        )
        self.judges = load_judges(config.judges) if heldout is not None else {}
        self.state: dict[str, Any] = {
            "step": 0,
            "history": [],
            "base_eval": None,
            "accepted_step": None,
            "accepted_reward": None,
            "stopped": None,
            "timing": {},
        }
        self.accepted: dict[str, torch.Tensor] | None = None
        self._prepare_out(resume, overwrite)

    # ---- the run folder

    def _record(self) -> dict[str, Any]:
        import accelerate
        import diffusers
        import peft

        from icreward import __version__

        return {
            "config": self.config.to_dict(),
            "pipeline_class": type(self.pipe).__name__,
            "family": self.family.name,
            "train_images": self.train.names,
            "heldout_images": self.heldout.names if self.heldout is not None else None,
            "reward": repr(self.reward_fn),
            "world_size": self.accelerator.num_processes,
            "versions": {
                "icreward": __version__,
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "peft": peft.__version__,
                "accelerate": accelerate.__version__,
            },
        }

    def _prepare_out(self, resume: bool, overwrite: bool) -> None:
        out, record = self.out, self._record()
        state_file = out / STATE_DIR / STATE_NAME
        if resume and state_file.is_file():
            saved = json.loads((out / CONFIG_NAME).read_text())
            changed = [
                k for k, v in record["config"].items() if k not in RESUME_FREE_FIELDS and saved["config"].get(k) != v
            ]
            changed += [
                k for k in ("family", "train_images", "heldout_images", "world_size") if saved.get(k) != record[k]
            ]
            if changed:
                raise IcrewardError(
                    f"--resume {out}: the run was started with other settings ({', '.join(changed)}); "
                    "resume with the same options, or start a new run"
                )
            self._load_state()
            self.log(f"resuming {out} at step {self.state['step']}")
        elif (out / CONFIG_NAME).exists() and not overwrite and not resume:
            raise IcrewardError(
                f"--out {out}: already holds a fine-tuning run; continue it with --resume or "
                "replace it with --overwrite"
            )
        elif out.exists() and not out.is_dir():
            raise IcrewardError(f"--out {out}: is a file, not a folder")
        if self.accelerator.is_main_process:
            with atomic_write(out / CONFIG_NAME) as f:
                f.write(json.dumps(record, indent=2) + "\n")
        self.metrics = _MetricsLog(out, self.state["history"], self.accelerator.is_main_process)

    def lora_config(self) -> dict[str, Any]:
        c = self.config
        return {
            "family": self.family.name,
            "rank": c.lora_rank,
            "alpha": c.lora_alpha,
            "target_modules": list(TARGET_MODULES),
            "pipeline": c.pipeline,
            "reward_model": c.reward_model,
            "head": self.reward_fn.head,
            "steps": self.state["step"],
            "k": c.k,
            "kl_weight": c.kl_weight,
            "seed": c.seed,
        }

    def save_state(self) -> None:
        if not self.accelerator.is_main_process:
            return
        with atomic_dir(self.out / STATE_DIR, marker=(STATE_NAME,), overwrite=True, what="resume state") as tmp:
            write_lora(tmp, lora_state(self.base_denoiser), self.lora_config())
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            if self.accepted is not None:
                import safetensors.torch

                safetensors.torch.save_file(self.accepted, str(tmp / "accepted.safetensors"))
            (tmp / STATE_NAME).write_text(json.dumps(self.state, indent=1) + "\n")

    def _load_state(self) -> None:
        import safetensors.torch

        from icreward.finetune.lora import read_lora

        folder = self.out / STATE_DIR
        state, _ = read_lora(folder)
        set_lora_state(self.base_denoiser, state)
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        self.state = json.loads((folder / STATE_NAME).read_text())
        accepted = folder / "accepted.safetensors"
        self.accepted = safetensors.torch.load_file(str(accepted)) if accepted.is_file() else None

    def publish_lora(self) -> Path:
        """Write `OUT/lora/` (atomically): the accepted weights under the guard, else the current ones."""
        weights = self.accepted if self.config.guard and self.accepted is not None else lora_state(self.base_denoiser)
        config = {**self.lora_config(), "accepted_step": self.state["accepted_step"] if self.config.guard else None}
        if self.accelerator.is_main_process:
            with atomic_dir(self.out / LORA_DIR, marker=(LORA_CONFIG,), overwrite=True, what="LoRA") as tmp:
                write_lora(tmp, weights, config)
        return self.out / LORA_DIR

    # ---- steps

    def step_generator(self, step: int) -> torch.Generator:
        rank = self.accelerator.process_index
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + step * 1_009 + rank)

    def train_step(self, step: int) -> dict[str, float]:
        """One optimizer step (with `grad_accum` micro-batches); returns its statistics and timings."""
        c, acc = self.config, self.accelerator
        times = {"generate": 0.0, "reward": 0.0, "backward": 0.0}
        rewards, references = [], []
        for micro in range(c.grad_accum):  # gradients summed over micro-batches, synced across processes at the last
            g = self.step_generator(step * c.grad_accum + micro)
            idx = torch.randint(len(self.train), (c.batch_size,), generator=g)
            images = self.train.images[idx].to(self.device)
            prompts = [self.train.prompts[i] for i in idx.tolist()]
            last = micro == c.grad_accum - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.denoiser):
                t0 = time.perf_counter()
                cond = self.family.condition(images, prompts, c.frames, g)
                with autocast(self.device, c.precision):
                    out = sample(
                        self.family,
                        self.denoiser,
                        cond,
                        steps=c.sample_steps,
                        grad_steps=c.k,
                        generator=g,
                        reference=c.kl_weight > 0,
                        base_denoiser=self.base_denoiser,
                    )
                    frames = self.family.decodable_frames(c.frames, c.reward_frames)
                    video = self.family.decode(out.latents, cond, frames).clamp(-1, 1)  # (B, T', 3, H, W)
                t1 = time.perf_counter()
                # The reward's forward and backward on a leaf copy of the frames, timed apart from the generator's.
                leaf = video.detach().requires_grad_(video.requires_grad)
                reward = self.reward_fn(images * 2 - 1, leaf, prompts)
                if leaf.requires_grad:
                    (-reward.mean() / c.grad_accum).backward()
                t2 = time.perf_counter()
                tensors, grads = [], []
                if video.requires_grad:
                    tensors, grads = [video], [leaf.grad]
                if out.reference is not None and out.reference.requires_grad:
                    tensors.append(c.kl_weight * out.reference / c.grad_accum)
                    grads.append(None)
                if tensors:
                    torch.autograd.backward(tensors, grads)
                t3 = time.perf_counter()
            times["generate"] += t1 - t0
            times["reward"] += t2 - t1
            times["backward"] += t3 - t2
            rewards.append(reward.detach())
            if out.reference is not None:
                references.append(out.reference.detach().float())
        t3 = time.perf_counter()
        grad_norm = float(acc.clip_grad_norm_(self.params, c.grad_clip)) if c.grad_clip > 0 else float("nan")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        times["backward"] += time.perf_counter() - t3
        r = torch.cat(rewards)
        reference = torch.stack(references).mean().item() if references else float("nan")
        total = sum(times.values())
        return {
            "loss": -r.mean().item() + c.kl_weight * (0.0 if math.isnan(reference) else reference),
            "reward": r.mean().item(),
            "reward_std": r.std().item() if len(r) > 1 else 0.0,
            "reference": reference,
            "grad_norm": grad_norm,
            "seconds": total,
            "reward_seconds": times["reward"],
            "reward_share": times["reward"] / total,
            "generate_seconds": times["generate"],
            "backward_seconds": times["backward"],
        }

    def evaluate(self) -> Evaluation:
        c = self.config
        self.denoiser.eval()
        try:
            return evaluate(
                self.family,
                self.denoiser,
                self.heldout,
                self.reward_fn,
                self.judges,
                frames=c.frames,
                steps=c.sample_steps,
                seed=c.eval_seed,
            )
        finally:
            self.denoiser.train()

    def _eval_row(self, step: int) -> dict[str, Any]:
        ev = self.evaluate().summary()
        c, st = self.config, self.state
        if st["base_eval"] is None:
            st["base_eval"] = ev
        verdict = guard_check(st["base_eval"], ev, c) if c.guard else None
        if c.guard and verdict is None and (st["accepted_reward"] is None or ev["reward"] > st["accepted_reward"]):
            st["accepted_step"], st["accepted_reward"] = step, ev["reward"]
            self.accepted = lora_state(self.base_denoiser)
        row = {
            "kind": "eval",
            "step": step,
            "heldout_reward": ev["reward"],
            "motion": ev["motion"],
            "static_fraction": ev["static_fraction"],
            "guard": verdict or ("ok" if c.guard else ""),
            **{f"judge:{k}": v for k, v in ev["judges"].items()},
        }
        self.metrics.add(row)
        self.log(
            f"step {step}: held-out reward {ev['reward']:.4f}, motion {ev['motion']:.4f}, "
            f"static {ev['static_fraction']:.2f}" + (f", guard: {verdict}" if verdict else "")
        )
        if c.guard and verdict is not None:
            st["stopped"] = {"step": step, "why": verdict}
        return ev

    def run(self) -> dict[str, Any]:
        """Train from the current step to `config.steps`; returns the run summary (also `OUT/summary.json`)."""
        c, st = self.config, self.state
        started = time.perf_counter()
        if self.heldout is not None and st["base_eval"] is None:
            self._eval_row(0)
        timing = {"seconds": 0.0, "reward_seconds": 0.0, "generate_seconds": 0.0, "backward_seconds": 0.0}
        timed = 0  # steps of this session (timing covers them; a resumed run times its own steps)
        while st["step"] < c.steps and st["stopped"] is None:
            stats = self.train_step(st["step"])
            st["step"] += 1
            timed += 1
            for key in timing:
                timing[key] += stats[key]
            if st["step"] % c.log_every == 0 or st["step"] == c.steps:
                self.metrics.add({"kind": "train", "step": st["step"], **stats})
                self.log(
                    f"step {st['step']}/{c.steps}: reward {stats['reward']:.4f}, loss {stats['loss']:.4f}, "
                    f"{stats['seconds']:.2f} s (reward {100 * stats['reward_share']:.0f}%)"
                )
            if self.heldout is not None and c.eval_every and st["step"] % c.eval_every == 0 and st["step"] < c.steps:
                self._eval_row(st["step"])
            if st["step"] % c.save_every == 0 and st["step"] < c.steps:
                self.save_state()
        final = self._eval_row(st["step"]) if self.heldout is not None and st["stopped"] is None else None
        st["timing"] = {**timing, "steps_timed": timed, "wall_seconds": time.perf_counter() - started}
        self.save_state()
        lora_dir = self.publish_lora()
        summary = {
            "steps": st["step"],
            "base_eval": st["base_eval"],
            "final_eval": final,
            "stopped": st["stopped"],
            "accepted_step": st["accepted_step"],
            "lora": str(lora_dir),
            "timing": st["timing"],
            "peak_memory": peak_memory_mb(self.device),
        }
        if self.accelerator.is_main_process:
            with atomic_write(self.out / SUMMARY_NAME) as f:
                f.write(json.dumps(summary, indent=2) + "\n")
        self.metrics.close()
        return summary


class _MetricsLog:
    """`metrics.csv` (rewritten from the saved history on resume, then appended) and TensorBoard scalars."""

    def __init__(self, out: Path, history: list[dict], enabled: bool):
        self.path, self.history, self.enabled, self.writer = out / METRICS_NAME, history, enabled, None
        if not enabled:
            return
        self._rewrite()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        last = history[-1]["step"] if history else 0
        self.writer = SummaryWriter(str(out), purge_step=last + 1 if history else None)

    def _columns(self) -> list[str]:
        extra = sorted({k for row in self.history for k in row if k not in COLUMNS})
        return [*COLUMNS, *extra]

    def _rewrite(self) -> None:
        with atomic_write(self.path) as f:
            writer = csv.DictWriter(f, self._columns(), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(_cells(r) for r in self.history)

    def add(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.enabled:
            return
        self._rewrite()  # rows carry columns of their own (one per judge); a few hundred rows at most
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, float) and math.isfinite(value) and key not in ("step",):
                    self.writer.add_scalar(f"{row['kind']}/{key}", value, row["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    return {k: "" if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
