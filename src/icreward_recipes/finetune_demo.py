"""The reward fine-tuning demonstration on a CPU (`make finetune-demo`): train a small I2V generator, fine-tune it with
the reward, and judge it on images it never saw.

    python -m icreward_recipes.finetune_demo --work build/finetune-demo --out reports/finetune

Steps, all seeded:
  1. data: `icreward synth` (half procedural scenes, half real imagery: photos with emoji subjects and real clips);
     the faithful moving videos (`mode: none`) of the train split are the generator's training clips; the images
     of the val split are the guard's, those of the test split the report's (never trained on, never used to stop);
  2. the generator: `StableVideoDiffusionPipeline` built from configs (the tiny SVD test components reshaped for a
     CPU, `build_generator`: a spatio-temporal U-Net with blocks (32, 64), the lossless `PatchVAE` with latents at
     1/4 of the frame (pixel_unshuffle: 8 x 8 x 48), a random CLIP vision tower), at 32 x 32 pixels and 8 frames;
     its U-Net trained as an EDM denoiser (v-prediction, log-normal noise levels, cosine learning rate, SVD's
     conditioning: the noise-augmented first frame's latents concatenated on channels and its CLIP embedding) on
     the training clips that move (VBench's dynamic degree);
  3. fine-tuning (`icreward.finetune.Finetuner`, DRaFT-1: gradients through the last of 8 Euler steps, LoRA rank 8
     on to_q/to_k/to_v/to_out.0), twice from the same generator:
     - `unguarded`: the `consistency` head alone, no reference term, no early stopping: the hackable set-up;
     - `guarded`: the `guidance` head (consistency capped, plus motion), the reference term (`kl_weight`), and
       early stopping on the judges of the guard images (`guard`: no judge may fall by more than 1%, motion by
       20%, the static share grow by 0.10; the LoRA kept is the best evaluation that passed);
  4. evaluation on the report images, before and after each run: the reward (guidance), the weight-free judges
     (VBench-I2V formula on pixels and HOG, colour histogram, dynamic degree), motion and the static share;
     timing of a fine-tuning step and the reward's cost in ms per frame at T = 16;
  5. `--out`: `results.json` (the guarded run's before/after under the issue's keys, both runs under `runs`),
     `index.html` with before/after frame strips of every report image, the strips as PNG, written atomically.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class DemoRecipe:
    n_sources: int = 120  # synth source images
    synth_seed: int = 11
    synth_size: int = 64  # synth renders at 64 px; the generator works at `size`
    size: int = 32  # generator frame side
    frames: int = 8
    n_report: int = 16  # test-split images the report shows and judges on
    n_guard: int = 8  # val-split images the guard checks
    layers_per_block: int = 1  # U-Net
    pretrain_steps: int = 1500
    pretrain_batch: int = 8
    pretrain_lr: float = 1.5e-3  # cosine-decayed to 5% over the steps
    sigma_max: float = 80.0  # the demo scheduler's largest noise level (EDM's); SVD's own is 700
    sample_steps: int = 8
    finetune_steps: int = 60
    finetune_batch: int = 2
    finetune_lr: float = 1e-3
    lora_rank: int = 8
    kl_weight: float = 1.0
    eval_every: int = 10
    seed: int = 0


# ---- 1. data


def synth_clips(recipe: DemoRecipe, work: Path, progress: bool) -> Path:
    """The synth benchmark under `work/synth` (made once; reused when complete)."""
    from icreward.synth import SynthConfig
    from icreward.synth.dataset import generate

    folder = work / "synth"
    if not (folder / "synth.json").is_file():
        config = SynthConfig(
            n=recipe.n_sources,
            seed=recipe.synth_seed,
            frames=recipe.frames,
            size=recipe.synth_size,
            real_share=0.5,
            videos_per_image=3,
            pairs_per_image=1,
            split_fractions=(0.6, 0.15, 0.25),
        )
        generate(config, folder, progress=progress)
    return folder


def read_split(folder: Path, recipe: DemoRecipe):
    """(training clips [N, T, 3, s, s], guard ConditioningSet, report ConditioningSet) from the synth folder."""
    import torch
    import torch.nn.functional as F

    from icreward.finetune.data import ConditioningSet, fit_image
    from icreward.media import load_image, load_video

    records = [json.loads(line) for line in (folder / "videos.jsonl").read_text().splitlines() if line.strip()]
    s = recipe.size
    clips = []
    for r in records:
        if r["split"] == "train" and r["mode"] == "none":
            video = load_video(folder / r["video"], num_frames=recipe.frames)  # (T, 3, H, W)
            clips.append(F.interpolate(video, size=(s, s), mode="bilinear", antialias=True, align_corners=False))

    def images(split: str, n: int) -> ConditioningSet:
        seen: dict[str, dict] = {}
        for r in records:
            if r["split"] == split and r["source"] not in seen:
                seen[r["source"]] = r
        chosen = list(seen.values())[:n]
        return ConditioningSet(
            torch.stack([fit_image(load_image(folder / r["image"]), s, s) for r in chosen]),
            [None] * len(chosen),
            [r["source"] for r in chosen],
        )

    return torch.stack(clips).clamp(0, 1), images("val", recipe.n_guard), images("test", recipe.n_report)


# ---- 2. the generator


def patch_vae_class():
    """`PatchVAE`: the demo generator's autoencoder, lossless: "encoding" is `pixel_unshuffle` by 4 (a 32-pixel
    frame -> 48 channels of 8 x 8), "decoding" its inverse. It has the interface the SVD pipeline and
    `icreward.finetune`'s `svd` family read from `AutoencoderKLTemporalDecoder` (`encode(x).latent_dist.mode()` /
    `.mean` / `.std`, `decode(z, num_frames).sample`, `config.scaling_factor`, `config.block_out_channels` for the
    pipeline's `vae_scale_factor`). A learned VAE small enough to train on 2 CPU cores in minutes lost the clips'
    colours (mean colour error 0.08) and all their motion (0.003 px per frame pair after reconstruction against
    0.38 px before), so the generator could not learn either; with this one it sees exact pixels."""
    import torch
    import torch.nn.functional as F
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.modeling_utils import ModelMixin

    class _Dist:
        def __init__(self, z):
            self.mean, self.std = z, torch.zeros_like(z)

        def mode(self):
            return self.mean

        def sample(self, generator=None):
            return self.mean

        def kl(self):
            return self.mean.new_zeros(self.mean.shape[0])

    class _Out:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class PatchVAE(ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, patch: int = 4, block_out_channels=(3, 3, 3), scaling_factor: float = 1.0):
            super().__init__()
            self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # gives the module a dtype/device

        def encode(self, x, return_dict: bool = True):
            return _Out(latent_dist=_Dist(F.pixel_unshuffle(x, self.config.patch)))

        def decode(self, z, num_frames: int | None = None, return_dict: bool = True):
            return _Out(sample=F.pixel_shuffle(z, self.config.patch))

    return PatchVAE


def build_generator(recipe: DemoRecipe):
    """A `StableVideoDiffusionPipeline` from the tiny SVD test components (`icreward.generation.tiny`), reshaped to
    train on 2 CPU cores: a U-Net with 2 attention heads of 16 (the tiny one: 8 of 4, which costs 4x on a CPU at the
    same width), one layer per block, and 48 latent channels in and out; the lossless `PatchVAE` (latents at 1/4 of
    the frame: 8 x 8 x 48 at 32 px); the CLIP vision tower stays as it is (random, frozen: an image hash the U-Net
    learns to read). The scheduler is SVD's with `sigma_max` lowered to what the denoiser is trained on."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel

    from icreward.generation.tiny import tiny_svd_pipeline

    tiny = tiny_svd_pipeline(seed=recipe.seed, num_frames=recipe.frames)
    vae = patch_vae_class()(patch=4, block_out_channels=(3, 3, 3))
    channels = 3 * 4 * 4
    torch.manual_seed(recipe.seed + 10)
    unet = UNetSpatioTemporalConditionModel(
        **{
            **dict(tiny.unet.config),
            "num_attention_heads": 2,
            "layers_per_block": recipe.layers_per_block,
            "sample_size": recipe.size // 4,
            "in_channels": 2 * channels,
            "out_channels": channels,
        }
    )
    pipe = StableVideoDiffusionPipeline(
        vae=vae.eval(),
        image_encoder=tiny.image_encoder,
        unet=unet.eval(),
        feature_extractor=tiny.feature_extractor,
        scheduler=EulerDiscreteScheduler.from_config(tiny.scheduler.config, sigma_max=recipe.sigma_max),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def train_vae(pipe, clips, recipe: DemoRecipe, log) -> dict[str, float]:
    """Nothing to train in the `PatchVAE`: only its latents' scale (`scaling_factor`, 1 / their std on the clips)."""
    import torch

    start = time.perf_counter()
    vae = pipe.vae
    t = clips.shape[1]
    with torch.no_grad():
        latents = torch.cat([vae.encode(c * 2 - 1).latent_dist.mean for c in clips[:64]])
        vae.register_to_config(scaling_factor=float(1 / latents.std()))
        recon = vae.decode(latents[: t * 4], num_frames=t).sample
        mse = (recon - (clips[:4].flatten(0, 1) * 2 - 1)).pow(2).mean().item()
    return {
        "seconds": time.perf_counter() - start,
        "reconstruction_mse": mse,
        "scaling_factor": vae.config.scaling_factor,
    }


def train_denoiser(pipe, clips, recipe: DemoRecipe, log) -> dict[str, float]:
    """The U-Net as an EDM denoiser with SVD's parametrisation (what the pipeline's Euler v-prediction steps assume):
    input `x / sqrt(s^2 + 1)`, timestep `0.25 log s`, denoised = `v * (-s / sqrt(s^2 + 1)) + x / (s^2 + 1)`, loss
    weight `(s^2 + 1) / s^2`; noise levels log-normal (mean 0.7, std 1.6, EDM's)."""
    import torch

    from icreward.finetune.families import SVDFamily

    family = SVDFamily(pipe)
    unet, vae = pipe.unet.train().requires_grad_(True), pipe.vae
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.pretrain_lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.pretrain_steps, eta_min=0.05 * recipe.pretrain_lr)
    g = torch.Generator().manual_seed(recipe.seed + 2)
    n, t = clips.shape[:2]
    with torch.no_grad():  # the clips' latents, the first frames' conditioning: computed once
        latents = torch.stack([vae.encode(c * 2 - 1).latent_dist.mean for c in clips]) * vae.config.scaling_factor
        embeds = torch.cat([family.clip_embeddings(clips[i : i + 64, 0]) for i in range(0, n, 64)])
    start, losses = time.perf_counter(), []
    for step in range(recipe.pretrain_steps):
        idx = torch.randint(n, (recipe.pretrain_batch,), generator=g)
        x0 = latents[idx]  # (B, T, C, h, w)
        with torch.no_grad():
            cond = family.image_latents(clips[idx, 0], g).unsqueeze(1).repeat(1, t, 1, 1, 1)
        sigma = (torch.randn(len(idx), generator=g) * 1.6 + 0.7).exp().clamp(0.002, recipe.sigma_max)
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = x0 + s * torch.randn(x0.shape, generator=g)
        model_in = torch.cat([noisy / (s**2 + 1).sqrt(), cond], dim=2)
        v = unet(
            model_in,
            0.25 * sigma.log(),
            encoder_hidden_states=embeds[idx],
            added_time_ids=family.time_ids(len(idx), x0.device, x0.dtype),
            return_dict=False,
        )[0]
        denoised = v * (-s / (s**2 + 1).sqrt()) + noisy / (s**2 + 1)
        loss = ((denoised - x0).pow(2) * (s**2 + 1) / s**2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            log(f"denoiser step {step + 1}/{recipe.pretrain_steps}: loss {sum(losses[-100:]) / 100:.4f}")
    unet.eval().requires_grad_(False)
    return {"seconds": time.perf_counter() - start, "final_loss": sum(losses[-100:]) / min(100, len(losses))}


def pretrained_generator(recipe: DemoRecipe, clips, work: Path, log):
    """(weights, VAE stats, denoiser stats) of the trained generator: trained here, or read from
    `work/generator.pt` when an earlier run of the same recipe left it (written atomically)."""
    import torch

    from icreward.atomic import atomic_write

    path = work / "generator.pt"
    keys = (
        "seed",
        "size",
        "frames",
        "n_sources",
        "synth_seed",
        "layers_per_block",
        "pretrain_steps",
        "pretrain_batch",
        "pretrain_lr",
        "sigma_max",
    )
    wanted = {k: getattr(recipe, k) for k in keys}
    wanted["generator"] = "patch-vae, cosine lr, dynamic clips"  # what an older cached generator was not
    # The frozen CLIP tower comes from the tiny pipeline's config: a changed config must not meet a cached U-Net.
    wanted["image_encoder"] = build_generator(recipe).image_encoder.config.to_json_string()
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved["recipe"] == wanted:
            log(f"generator: reusing {path}")
            return saved["state"], saved["vae_stats"], saved["denoiser_stats"]
    from icreward.metrics.motion import is_dynamic

    pipe = build_generator(recipe)
    vae_stats = train_vae(pipe, clips, recipe, log)
    moving = clips[is_dynamic(clips)]  # the clips VBench calls dynamic: the generator is to learn motion
    log(f"generator: trained on the {len(moving)} of {len(clips)} training clips that move")
    denoiser_stats = train_denoiser(pipe, moving, recipe, log)
    denoiser_stats["training_clips"] = len(moving)
    state = {
        "vae": {k: v.clone() for k, v in pipe.vae.state_dict().items()},
        "unet": {k: v.clone() for k, v in pipe.unet.state_dict().items()},
        "image_encoder": {k: v.clone() for k, v in pipe.image_encoder.state_dict().items()},
        "scaling_factor": pipe.vae.config.scaling_factor,
    }
    with atomic_write(path, "wb") as f:
        torch.save({"recipe": wanted, "state": state, "vae_stats": vae_stats, "denoiser_stats": denoiser_stats}, f)
    return state, vae_stats, denoiser_stats


# ---- 3-4. fine-tuning and evaluation


def reward_cost(reward_fn, recipe: DemoRecipe, repeats: int = 3) -> dict[str, float]:
    """The reward's forward + backward in ms per frame on 2 videos of T = 16 frames at the demo's size."""
    import torch

    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, recipe.size, recipe.size, generator=g) * 2 - 1
    videos = (torch.rand(2, 16, 3, recipe.size, recipe.size, generator=g) * 2 - 1).requires_grad_(True)
    reward_fn(images, videos).sum().backward()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        reward_fn(images, videos).sum().backward()
    seconds = (time.perf_counter() - start) / repeats
    return {"ms_per_frame_t16": 1000 * seconds / 32, "seconds_per_batch_2x16": seconds}


def finetune_run(pipe_state, recipe: DemoRecipe, train, guard, out: Path, *, guarded: bool, log) -> dict[str, Any]:
    from icreward.finetune import FinetuneConfig, Finetuner

    config = FinetuneConfig(
        pipeline="demo-svd",
        frames=recipe.frames,
        height=recipe.size,
        width=recipe.size,
        sample_steps=recipe.sample_steps,
        k=1,
        steps=recipe.finetune_steps,
        batch_size=recipe.finetune_batch,
        lr=recipe.finetune_lr,
        lora_rank=recipe.lora_rank,
        head="guidance" if guarded else "consistency",
        kl_weight=recipe.kl_weight if guarded else 0.0,
        seed=recipe.seed,
        eval_every=recipe.eval_every,
        save_every=recipe.finetune_steps,
        guard=guarded,
    )
    tuner = Finetuner(restore(pipe_state, recipe), config, train, out, heldout=guard, overwrite=True, log=log)
    summary = tuner.run()
    return {"summary": summary, "tuner": tuner}


def restore(pipe_state: dict, recipe: DemoRecipe):
    """A fresh copy of the trained generator (each fine-tuning run starts from the same weights)."""
    pipe = build_generator(recipe)
    pipe.vae.register_to_config(scaling_factor=pipe_state["scaling_factor"])
    pipe.vae.load_state_dict(pipe_state["vae"])
    pipe.unet.load_state_dict(pipe_state["unet"])
    pipe.image_encoder.load_state_dict(pipe_state["image_encoder"])
    return pipe


def judge_generator(pipe, lora_dir: Path | None, report, reward_fn, judges, recipe: DemoRecipe):
    from icreward.finetune import family_for, load_lora
    from icreward.finetune.judges import evaluate

    if lora_dir is not None:
        load_lora(pipe, lora_dir)
    family = family_for(pipe)
    return evaluate(
        family, family.denoiser, report, reward_fn, judges, frames=recipe.frames, steps=recipe.sample_steps, seed=4321
    )


def consistency_of(evaluation, report, consistency_fn) -> float:
    """Mean consistency-head reward of an evaluation's videos."""
    import torch

    with torch.no_grad():
        return consistency_fn(report.images * 2 - 1, evaluation.videos * 2 - 1).mean().item()


def before_after(before: dict, after: dict) -> dict[str, Any]:
    return {
        "reward": {"before": before["reward"], "after": after["reward"]},
        "judges": {k: {"before": v, "after": after["judges"][k]} for k, v in before["judges"].items()},
        "motion": {"before": before["motion"], "after": after["motion"]},
        "static_fraction": {"before": before["static_fraction"], "after": after["static_fraction"]},
    }


def goals(result: dict[str, Any], noise: float = 1e-3) -> dict[str, bool]:
    """The issue's goals for the demonstration, checked on a before/after record. A rise must exceed `noise` times
    the value (the same weights give rewards that differ by about 1e-5 between runs of the kernels)."""
    judges = result["judges"].values()
    reward = result["reward"]
    return {
        "reward_rises": reward["after"] - reward["before"] > noise * abs(reward["before"]),
        "no_judge_falls_over_1pct": all(j["after"] >= j["before"] - 0.01 * abs(j["before"]) for j in judges),
        "a_judge_rises": any(j["after"] - j["before"] > noise * abs(j["before"]) for j in judges),
        "motion_within_20pct": abs(result["motion"]["after"] - result["motion"]["before"])
        <= 0.2 * abs(result["motion"]["before"]),
        "static_fraction_grows_at_most_0.10": result["static_fraction"]["after"]
        <= result["static_fraction"]["before"] + 0.10 + 1e-9,
    }


# ---- 5. the report


def strip_png(video, path: Path, scale: int = 3) -> None:
    """Frames side by side, enlarged `scale` times (nearest) so 32-pixel frames can be seen."""
    import numpy as np
    from PIL import Image

    frames = (video.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)  # (T, H, W, 3)
    row = np.concatenate(list(frames), axis=1)
    img = Image.fromarray(row)
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(path)


def write_report(folder: Path, results: dict, report, videos: dict[str, Any], timing_text: str) -> None:
    (folder / "strips").mkdir()
    rows = []
    for i, name in enumerate(report.names):
        cells = []
        strip_png(report.images[i : i + 1], folder / "strips" / f"{name}-image.png")
        cells.append(f'<td><img src="strips/{name}-image.png" alt="{html.escape(name)} image"></td>')
        for label, ev in videos.items():
            file = f"strips/{name}-{label}.png"
            strip_png(ev.videos[i], folder / file)
            cells.append(
                f'<td><img src="{file}" alt="{label}"><br><small>reward {ev.reward[i]:.3f}, motion '
                f"{ev.motion[i]:.3f} px</small></td>"
            )
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{html.escape(label)}</th>" for label in videos)

    def table(result: dict[str, Any]) -> str:
        lines = [
            f"<tr><td>reward ({results['reward_head']})</td><td>{result['reward']['before']:.4f}</td>"
            f"<td>{result['reward']['after']:.4f}</td></tr>"
        ]
        lines += [
            f"<tr><td>{html.escape(k)}</td><td>{v['before']:.4f}</td><td>{v['after']:.4f}</td></tr>"
            for k, v in result["judges"].items()
        ]
        lines += [
            f"<tr><td>{k}</td><td>{result[k]['before']:.4f}</td><td>{result[k]['after']:.4f}</td></tr>"
            for k in ("consistency_reward", "motion", "static_fraction")
            if k in result
        ]
        return "<table><tr><th></th><th>before</th><th>after</th></tr>" + "".join(lines) + "</table>"

    runs = "".join(
        f"<h2>{html.escape(name)}</h2><p>goals: {html.escape(json.dumps(run['goals']))}; "
        f"{html.escape(run['note'])}</p>{table(run)}"
        for name, run in results["runs"].items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>icreward reward fine-tuning demo</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:4px 8px;text-align:left}}
img{{image-rendering:pixelated}} table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}}
</style></head><body>
<h1>Reward fine-tuning of a tiny SVD generator ({results["n_heldout_images"]} held-out images)</h1>
<p>{html.escape(timing_text)}</p>{runs}
<h2>Frame strips (held-out images, 8 frames each)</h2>
<table><tr><th>image</th><th>input</th>{head}</tr>{"".join(rows)}</table></body></html>
"""
    (folder / "index.html").write_text(page, encoding="utf-8")


# ---- the whole demo


def run_demo(recipe: DemoRecipe, work: Path, out: Path, progress: bool = True, log=None) -> dict[str, Any]:
    import torch

    from icreward.atomic import atomic_dir, check_output_dir
    from icreward.finetune.judges import load_judges
    from icreward.guidance import RewardFunction

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    check_output_dir(out, flag="--out", marker=("results.json",), what="fine-tuning report")
    torch.manual_seed(recipe.seed)
    started = time.perf_counter()
    folder = synth_clips(recipe, work, progress)
    clips, guard, report = read_split(folder, recipe)
    log(
        f"data: {len(clips)} training clips, {len(guard)} guard images, {len(report)} report images "
        f"({time.perf_counter() - started:.0f} s)"
    )
    state, vae_stats, denoiser_stats = pretrained_generator(recipe, clips, work, log)
    from icreward.finetune.data import ConditioningSet

    train_images = ConditioningSet(clips[:, 0], [None] * len(clips), [f"clip{i}" for i in range(len(clips))])
    reward_fn = RewardFunction("default", value_range="[-1,1]", head="guidance", layout="BTCHW")
    consistency_fn = RewardFunction("default", value_range="[-1,1]", head="consistency", layout="BTCHW")
    judges = load_judges()
    evaluations = {"before": judge_generator(restore(state, recipe), None, report, reward_fn, judges, recipe)}
    runs, timings = {}, {}
    for name, guarded in (("unguarded", False), ("guarded", True)):
        log(f"fine-tuning: {name}")
        run = finetune_run(state, recipe, train_images, guard, work / "runs" / name, guarded=guarded, log=log)
        summary = run["summary"]
        evaluations[name] = judge_generator(
            restore(state, recipe), Path(summary["lora"]), report, reward_fn, judges, recipe
        )
        record = before_after(evaluations["before"].summary(), evaluations[name].summary())
        record["goals"] = goals(record)
        record["consistency_reward"] = {  # what the unguarded run optimised: the consistency head alone
            "before": consistency_of(evaluations["before"], report, consistency_fn),
            "after": consistency_of(evaluations[name], report, consistency_fn),
        }
        record["stopped"] = summary["stopped"]
        record["accepted_step"] = summary["accepted_step"]
        record["steps_run"] = summary["steps"]
        record["note"] = (
            "consistency head alone, no reference term, no early stopping"
            if not guarded
            else f"guidance head, reference term (kl_weight {recipe.kl_weight}), early stopping on the "
            f"{len(guard)} guard images' judges; LoRA of step {summary['accepted_step']}"
        )
        runs[name] = record
        t = summary["timing"]
        timings[name] = {
            "step_seconds": t["seconds"] / max(1, t["steps_timed"]),
            "reward_share": t["reward_seconds"] / t["seconds"],
            "generate_share": t["generate_seconds"] / t["seconds"],
            "backward_share": t["backward_seconds"] / t["seconds"],
            "peak_memory": summary["peak_memory"],
        }
    cost = reward_cost(reward_fn, recipe)
    guarded = runs["guarded"]
    shares = timings["guarded"]
    largest = max(("generate", "reward", "backward"), key=lambda k: shares[f"{k}_share"])
    results = {
        "reward": guarded["reward"],
        "judges": guarded["judges"],
        "motion": guarded["motion"],
        "static_fraction": guarded["static_fraction"],
        "n_heldout_images": len(report),
        "steps": guarded["accepted_step"] if guarded["accepted_step"] is not None else guarded["steps_run"],
        "reward_head": "guidance",
        "goals": guarded["goals"],
        "runs": runs,
        "timing": {
            "fine_tuning": timings,
            "reward_cost": cost,
            "largest_part_of_a_step": largest,
            "vae_training": vae_stats,
            "denoiser_training": denoiser_stats,
            "total_seconds": time.perf_counter() - started,
        },
        "recipe": asdict(recipe),
        "data": {"training_clips": len(clips), "guard_images": guard.names, "report_images": report.names},
    }
    timing_text = (
        f"a fine-tuning step (guarded run): {shares['step_seconds']:.2f} s, of which sampling and decoding "
        f"{100 * shares['generate_share']:.0f}%, the reward (forward + backward) "
        f"{100 * shares['reward_share']:.0f}%, the generator's backward and the optimizer "
        f"{100 * shares['backward_share']:.0f}%; the reward costs {cost['ms_per_frame_t16']:.1f} ms per "
        f"frame at T = 16 ({recipe.size} px)."
    )
    with atomic_dir(
        out,
        own=("results.json", "index.html", "strips"),
        marker=("results.json",),
        overwrite=False,
        what="fine-tuning report",
        flag="--out",
    ) as tmp:
        write_report(tmp, results, report, {k: evaluations[k] for k in ("before", "unguarded", "guarded")}, timing_text)
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log(timing_text)
    log(f"wrote {out}/results.json and {out}/index.html ({time.perf_counter() - started:.0f} s)")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    defaults = DemoRecipe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="data and run folder")
    parser.add_argument("--out", type=Path, required=True, help="report folder (results.json, index.html)")
    parser.add_argument("--pretrain-steps", type=int, default=defaults.pretrain_steps)
    parser.add_argument("--finetune-steps", type=int, default=defaults.finetune_steps)
    parser.add_argument("--n-sources", type=int, default=defaults.n_sources)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from icreward.errors import IcrewardError

    recipe = DemoRecipe(
        pretrain_steps=args.pretrain_steps,
        finetune_steps=args.finetune_steps,
        n_sources=args.n_sources,
        seed=args.seed,
    )
    try:
        run_demo(recipe, args.work, args.out, progress=not args.quiet, log=(lambda line: None) if args.quiet else None)
    except IcrewardError as e:
        print(f"finetune_demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
