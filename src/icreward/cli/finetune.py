"""`icreward finetune`: reward fine-tuning of a diffusers I2V pipeline (DRaFT-K / VADER-style reward backpropagation
into a LoRA on the denoiser). The run folder layout is documented in `icreward.finetune.trainer`."""

from __future__ import annotations

import argparse
import sys

from icreward.cli.common import MODEL_HELP, add_head_option, add_quiet_option, float_range, int_range, positive_int

DEFAULTS = {  # FinetuneConfig's defaults, repeated here so that --help does not import torch
    "frames": 8,
    "size": 32,
    "sample_steps": 8,
    "k": 1,
    "steps": 100,
    "batch_size": 2,
    "lr": 2e-4,
    "lora_rank": 8,
    "kl_weight": 0.0,
    "save_every": 10,
}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "finetune",
        help="reward fine-tuning of a diffusers I2V pipeline (LoRA, reward backprop through the last K steps)",
        description="DRaFT-K / VADER-style reward fine-tuning: sample with the pipeline's own scheduler, keep "
        "gradients through the last K steps, VAE-decode, score with the reward, train a LoRA on the denoiser. "
        "Writes OUT/lora/ (load it with icreward.finetune.load_lora), OUT/metrics.csv, TensorBoard events, "
        "OUT/summary.json and the resume state OUT/last/.",
    )
    p.add_argument(
        "--pipeline",
        required=True,
        help="a diffusers pipeline folder or hub id (StableVideoDiffusionPipeline, WanImageToVideoPipeline), "
        "or tiny-svd / tiny-wan-i2v (random tiny pipelines, offline, for trying the command)",
    )
    p.add_argument(
        "--images",
        required=True,
        help='conditioning images: a folder, or a .jsonl manifest with "image" (and optional "prompt") keys',
    )
    p.add_argument(
        "--prompts",
        nargs="+",
        default=None,
        help="one prompt for every image, or one per image "
        "(overrides the manifest's; Wan needs prompts, SVD ignores them except in the reward)",
    )
    p.add_argument(
        "--heldout",
        default=None,
        help="held-out images (folder or manifest) for the reward and judges "
        "logged every --eval-every steps, and for --guard",
    )
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=positive_int, default=DEFAULTS["steps"], help="optimizer steps (default: 100)")
    p.add_argument(
        "--k",
        type=int_range(0),
        default=DEFAULTS["k"],
        help="sampling steps that keep gradients, the last K (default: 1, as DRaFT-1 / VADER)",
    )
    p.add_argument(
        "--sample-steps",
        type=positive_int,
        default=DEFAULTS["sample_steps"],
        help="sampling steps per video (default: 8)",
    )
    p.add_argument(
        "--frames", type=int_range(2), default=DEFAULTS["frames"], help="frames per video (Wan: 4k + 1) (default: 8)"
    )
    p.add_argument("--height", type=positive_int, default=DEFAULTS["size"], help="frame height (default: 32)")
    p.add_argument("--width", type=positive_int, default=DEFAULTS["size"], help="frame width (default: 32)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULTS["batch_size"],
        help="videos per step per process (default: 2)",
    )
    p.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimizer step (default: 1)")
    p.add_argument(
        "--lr", type=float_range(0, lo_open=True), default=DEFAULTS["lr"], help="AdamW learning rate (default: 2e-4)"
    )
    p.add_argument("--lora-rank", type=positive_int, default=DEFAULTS["lora_rank"], help="LoRA rank (default: 8)")
    p.add_argument("--reward-model", default="default", help=MODEL_HELP)
    add_head_option(p)
    p.add_argument(
        "--reward-frames",
        type=int_range(3),
        default=None,
        help="decoded frames the reward sees (frame 0 and the rest spread over the video; SVD decodes "
        "only those) (default: all)",
    )
    p.add_argument(
        "--kl-weight",
        type=float_range(0),
        default=DEFAULTS["kl_weight"],
        help="weight of the reference term: mean squared difference of the LoRA and frozen denoiser "
        "outputs at the K steps (default: 0, off)",
    )
    p.add_argument(
        "--guidance-scale",
        type=float_range(1),
        default=1.0,
        help="classifier-free guidance while sampling (default: 1, none)",
    )
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="generator precision (default: fp32)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="checkpoint the denoiser and the reward")
    p.add_argument(
        "--eval-every",
        type=int_range(0),
        default=0,
        help="held-out evaluation every N steps (default: 0, at the start and the end only)",
    )
    p.add_argument(
        "--save-every",
        type=positive_int,
        default=DEFAULTS["save_every"],
        help="resume state every N steps (default: 10)",
    )
    p.add_argument(
        "--guard",
        action="store_true",
        help="stop when a held-out judge falls by more than "
        "--judge-tolerance of its start, motion by 20%% or the static share grows by 0.10; the LoRA kept "
        "is the best held-out evaluation that passed (needs --heldout and --eval-every)",
    )
    p.add_argument(
        "--judge-tolerance",
        type=float_range(0),
        default=0.01,
        help="guard: judges' allowed fall, a share of their start (default: 0.01)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved step")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    add_quiet_option(p)
    return p


def run(args: argparse.Namespace) -> int:
    from icreward.atomic import check_readable_input
    from icreward.errors import IcrewardError

    for flag, path in (("--images", args.images), ("--heldout", args.heldout)):
        if path is not None:
            check_readable_input(path, flag)
    if args.guard and (args.heldout is None or not args.eval_every):
        raise IcrewardError("--guard: needs --heldout images and --eval-every N to check the judges during the run")
    import torch

    from icreward.finetune import FinetuneConfig, Finetuner, load_conditioning, load_pipeline

    torch.manual_seed(args.seed)
    config = FinetuneConfig(
        pipeline=args.pipeline,
        frames=args.frames,
        height=args.height,
        width=args.width,
        sample_steps=args.sample_steps,
        k=args.k,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        lora_rank=args.lora_rank,
        reward_model=args.reward_model,
        head=args.head,
        reward_frames=args.reward_frames,
        kl_weight=args.kl_weight,
        guidance_scale=args.guidance_scale,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        eval_every=args.eval_every,
        save_every=args.save_every,
        guard=args.guard,
        judge_tolerance=args.judge_tolerance,
    ).check()
    train = load_conditioning(args.images, config.height, config.width, args.prompts)
    heldout = (
        load_conditioning(args.heldout, config.height, config.width, args.prompts, flag="--heldout")
        if args.heldout
        else None
    )
    log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    pipe = load_pipeline(args.pipeline, seed=args.seed)
    summary = Finetuner(
        pipe, config, train, args.out, heldout=heldout, resume=args.resume, overwrite=args.overwrite, log=log
    ).run()
    line = f"fine-tuned {summary['steps']} steps -> {summary['lora']}"
    if summary["final_eval"] and summary["base_eval"]:
        line += f" (held-out reward {summary['base_eval']['reward']:.4f} -> {summary['final_eval']['reward']:.4f})"
    if summary["stopped"]:
        line += f"; guard stopped at step {summary['stopped']['step']}: {summary['stopped']['why']}"
    print(line)
    return 0
