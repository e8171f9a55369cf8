"""`icreward best-of-n`: generate N seeded candidate videos of one image with a diffusers I2V pipeline, rank them by
reward, and write them (mp4), a ranking JSON and a manifest of the candidates."""

from __future__ import annotations

import argparse

from icreward.cli.common import (
    add_head_option,
    add_model_option,
    add_precision_option,
    add_quiet_option,
    check_device,
    check_inputs,
    check_precision,
    int_range,
    positive_int,
    seed_value,
)

RANKING_NAME = "ranking.json"
MANIFEST_NAME = "candidates.jsonl"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("best-of-n", help="generate N candidate videos with a diffusers I2V pipeline and rank them")
    p.add_argument(
        "--pipeline",
        required=True,
        help="a diffusers image-to-video pipeline: a folder written by save_pretrained (offline), a hub id such as "
        "stabilityai/stable-video-diffusion-img2vid-xt or Wan-AI/Wan2.1-I2V-14B-480P-Diffusers (network or cache), "
        "or tiny-svd / tiny-wan-i2v (random weights, for trying the command)",
    )
    p.add_argument("--image", required=True, help="the conditioning image")
    p.add_argument("--prompt", help="the prompt (for pipelines that take one; also read by the text head and guidance)")
    p.add_argument("--n", type=int_range(1, 1024), default=4, help="number of candidates, 1..1024 (default: 4)")
    p.add_argument(
        "--out",
        required=True,
        help=f"output folder: seed_<S>.mp4 per candidate, {RANKING_NAME} (best first) and {MANIFEST_NAME} (a "
        "pointwise manifest of the candidates, for icreward score / rank --manifest)",
    )
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder (other files are kept)")
    p.add_argument("--seed", type=seed_value, default=0, help="candidate i uses seed + i (default: 0)")
    add_model_option(p)
    add_head_option(p)
    p.add_argument(
        "--num-frames", type=int_range(1, 1024), default=None, help="frames per video (default: the pipeline's)"
    )
    p.add_argument("--steps", type=positive_int, default=None, help="denoising steps (default: the pipeline's)")
    p.add_argument("--height", type=int_range(8, 8192), default=None, help="video height (default: the pipeline's)")
    p.add_argument("--width", type=int_range(8, 8192), default=None, help="video width (default: the pipeline's)")
    p.add_argument("--batch", type=positive_int, default=1, help="candidates per pipeline call (default: 1)")
    p.add_argument("--fps", type=int_range(1, 240), default=8, help="frame rate of the written mp4s (default: 8)")
    p.add_argument("--device", default="cpu", help="where the pipeline and the reward run (default: cpu)")
    p.add_argument(
        "--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="the pipeline's weights (default: fp32)"
    )
    add_precision_option(p)
    add_quiet_option(p)
    return p


def run(args: argparse.Namespace) -> int:
    check_inputs(image=args.image)
    check_device(args.device)
    check_precision(args.device, args.precision)
    from icreward.atomic import check_output_dir

    check_output_dir(
        args.out,
        flag="--out",
        inputs={"--image": args.image},
        marker=(RANKING_NAME,),
        overwrite=args.overwrite,
        what="best-of-n output",
    )
    from icreward.generation.best_of_n import best_of_n
    from icreward.generation.pipelines import load_pipeline
    from icreward.loading import load
    from icreward.media import load_image

    image = load_image(args.image, max_side=None)  # a bad image fails before the pipeline loads
    scorer = load(args.model)
    pipeline = load_pipeline(args.pipeline, dtype=args.dtype, seed=args.seed).to(args.device)
    given = {
        "num_frames": args.num_frames,
        "num_inference_steps": args.steps,
        "height": args.height,
        "width": args.width,
    }
    kwargs = {k: v for k, v in given.items() if v is not None}
    ranked = best_of_n(
        pipeline,
        image,
        args.prompt,
        args.n,
        seed=args.seed,
        scorer=scorer,
        head=args.head,
        batch=args.batch,
        device=args.device,
        precision=args.precision,
        **kwargs,
    )
    from icreward.guidance import default_head

    head = args.head or default_head(scorer)
    write_candidates(args, ranked, head, type(pipeline).__name__, kwargs)
    if not args.quiet:
        for c in ranked:
            reward = "      none" if c.reward is None else f"{c.reward:>10.6f}"
            print(f"{c.rank:>4}  {reward}  seed_{c.seed}.mp4")
    return 0


def write_candidates(args: argparse.Namespace, ranked, head: str, pipeline_class: str, kwargs: dict) -> None:
    """The candidates' mp4s, the ranking and the candidates' manifest, into `args.out` in one atomic step."""
    import json
    from pathlib import Path

    import torch

    from icreward.atomic import atomic_dir
    from icreward.media import write_video

    image = str(Path(args.image).resolve())
    names = [f"seed_{c.seed}.mp4" for c in ranked]
    with atomic_dir(
        args.out,
        own=[*names, MANIFEST_NAME, RANKING_NAME],
        marker=(RANKING_NAME,),
        overwrite=args.overwrite,
        what="best-of-n output",
        flag="--out",
    ) as tmp:
        for c, name in zip(ranked, names, strict=True):
            frames = (c.frames.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
            h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # H.264 needs even sides
            write_video(tmp / name, frames[:, :h, :w], fps=args.fps)
        entries = [
            {"rank": c.rank, "seed": c.seed, "video": name, "reward": c.reward, "heads": c.heads}
            for c, name in zip(ranked, names, strict=True)
        ]
        ranking = {
            "pipeline": args.pipeline,
            "pipeline_class": pipeline_class,
            "image": image,
            "prompt": args.prompt,
            "model": args.model,
            "head": head,
            "n": args.n,
            "seed": args.seed,
            "pipeline_kwargs": kwargs,
            "candidates": entries,
        }
        (tmp / RANKING_NAME).write_text(json.dumps(ranking, indent=2) + "\n")
        prompt = {"prompt": args.prompt} if args.prompt else {}
        lines = [
            {
                "id": f"{Path(args.image).stem}-seed_{c.seed}",
                "image": image,
                "video": f"seed_{c.seed}.mp4",
                **prompt,
                "reward": c.reward,
            }
            for c in sorted(ranked, key=lambda c: c.seed)
        ]
        (tmp / MANIFEST_NAME).write_text("".join(json.dumps(line) + "\n" for line in lines))
