"""`icreward rank`: best-of-N, the videos of one image sorted by reward; unreadable videos last, with their error."""

from __future__ import annotations

import argparse
import json
import sys

from icreward.cli.common import (
    FRAMES_HELP,
    add_head_option,
    add_model_option,
    add_precision_option,
    check_device,
    check_inputs,
    check_precision,
    frame_count,
    positive_int,
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("rank", help="best-of-N: rank several videos of one image by reward")
    p.add_argument("--image", required=True, help="conditioning image (decoded and encoded once)")
    p.add_argument("--videos", nargs="+", required=True, help="candidate videos of that image")
    p.add_argument("--prompt", help="the prompt the videos were generated from (read by the text head and guidance)")
    add_model_option(p)
    add_head_option(p)
    p.add_argument(
        "--json", action="store_true", help='print {"image", "model", "head", "ranking": [...]} instead of a table'
    )
    p.add_argument("--top", type=positive_int, default=None, help="show only the K best, K >= 1")
    p.add_argument("--num-frames", type=frame_count, default=None, help=f"{FRAMES_HELP} (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="videos per forward pass, >= 1 (default: 8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:<i> or mps (default: cpu)")
    add_precision_option(p)
    return p


def run(args: argparse.Namespace) -> int:
    check_inputs(image=args.image, videos=args.videos)
    check_device(args.device)
    check_precision(args.device, args.precision)
    import torch

    from icreward.loading import load
    from icreward.scoring import rank_videos

    torch.manual_seed(0)
    scorer = load(args.model, head=args.head)
    ranking = rank_videos(
        scorer,
        args.image,
        args.videos,
        args.batch_size,
        num_frames=args.num_frames,
        device=args.device,
        precision=args.precision,
        prompt=args.prompt,
    )
    shown = ranking[: args.top] if args.top else ranking
    if args.json:
        entries = [
            {"video": video, "reward": reward, "rank": rank, **({"error": error} if error else {})}
            for rank, (video, reward, error) in enumerate(shown, start=1)
        ]
        head = scorer.selected_head
        print(json.dumps({"image": args.image, "model": args.model, "head": head, "ranking": entries}))
    else:
        for rank, (video, reward, error) in enumerate(shown, start=1):
            print(f"{rank:>4}  {reward:>10.6f}  {video}" if error is None else f"{rank:>4}  {'error':>10}  {error}")
    for _, _, error in ranking[len(shown) :]:  # failures that --top left out of the table
        if error:
            print(f"icreward rank: could not score {error}", file=sys.stderr)
    return 1 if any(error for _, _, error in ranking) else 0
