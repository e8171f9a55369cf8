"""`icreward rank`: best-of-N, the videos of one image sorted by reward (unreadable videos last, with their error), or
those of every image of a manifest, with each image's (best, worst) written as preference pairs (`--pairs-out`)."""

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
    float_range,
    frame_count,
    positive_int,
)
from icreward.errors import IcrewardError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("rank", help="best-of-N: rank several videos of one image (or of each image of a manifest)")
    p.add_argument("--image", help="conditioning image (decoded and encoded once); with --videos")
    p.add_argument("--videos", nargs="+", help="candidate videos of that image")
    p.add_argument(
        "--manifest",
        nargs="+",
        help="instead of --image/--videos: pointwise manifests (id, image, video, prompt?; e.g. the candidates.jsonl "
        "of several best-of-n runs); the videos of each "
        "image and prompt are ranked together, by default by the guidance head where the model has it",
    )
    p.add_argument(
        "--pairs-out",
        help="with --manifest: write each image's (best, worst) as a pair manifest (JSONL; label A = video_a, plus "
        "chosen/rejected, label_0 and the rewards, for DPO-style trainers); images with one candidate are skipped",
    )
    p.add_argument(
        "--min-gap",
        type=float_range(0.0),
        default=0.0,
        help="with --pairs-out: leave out images whose best and worst rewards differ by this or less (default: 0)",
    )
    p.add_argument("--skip-bad", action="store_true", help="with --manifest: skip invalid lines, listed on stderr")
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
    if args.manifest is not None:
        if args.image is not None or args.videos is not None:
            raise IcrewardError("--manifest ranks the videos it lists: give it without --image/--videos")
        return run_manifest(args)
    if args.image is None or args.videos is None:
        raise IcrewardError("give --image IMG --videos V1 V2 ..., or --manifest M [M ...]")
    if args.pairs_out is not None:
        raise IcrewardError("--pairs-out needs --manifest (pairs are written for each image of a manifest)")
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


def run_manifest(args: argparse.Namespace) -> int:
    """`rank --manifest M [M ...] [--pairs-out F]`: every (image, prompt) group of the manifests ranked; a table (or
    a JSON line per group with --json) on stdout; notes on skipped lines and on images left without a pair on
    stderr."""
    check_inputs(manifest=args.manifest)
    if args.pairs_out is not None:
        from icreward.atomic import check_output_file

        inputs = {f"--manifest {m}": m for m in args.manifest}
        check_output_file(args.pairs_out, flag="--pairs-out", inputs=inputs)
    check_device(args.device)
    check_precision(args.device, args.precision)
    import torch

    from icreward.guidance import default_head
    from icreward.loading import load
    from icreward.manifest import format_skipped, load_manifest, write_manifest
    from icreward.scoring.rank import preference_pairs, rank_manifest

    records = []
    for path in args.manifest:
        manifest = load_manifest(path, skip_bad=args.skip_bad)
        if manifest.kind != "point":
            raise IcrewardError(
                f"--manifest {path}: holds pair records; rank reads pointwise records (id, image, video), the "
                "candidates of each image"
            )
        if manifest.skipped:
            print(format_skipped(manifest), file=sys.stderr)
        records += manifest.records
    torch.manual_seed(0)
    scorer = load(args.model)
    head = args.head or default_head(scorer)  # generated candidates: guidance where the model has it
    scorer.select_head(head)
    groups = rank_manifest(
        scorer,
        records,
        args.batch_size,
        num_frames=args.num_frames,
        device=args.device,
        precision=args.precision,
    )
    for group in groups:
        shown = group.ranking[: args.top] if args.top else group.ranking
        if args.json:
            entries = [
                {"id": i, "video": video, "reward": reward, "rank": rank, **({"error": error} if error else {})}
                for rank, (i, video, reward, error) in enumerate(shown, start=1)
            ]
            line = {"image": str(group.image), "prompt": group.prompt, "model": args.model, "head": head}
            print(json.dumps({**line, "ranking": entries}))
        else:
            print(f"{group.image}" + (f"  ({group.prompt})" if group.prompt else ""))
            for rank, (i, video, reward, error) in enumerate(shown, start=1):
                shown_reward = f"{reward:>10.6f}" if error is None else f"{'error':>10}"
                print(f"{rank:>4}  {shown_reward}  {i}  {video if error is None else error}")
    if args.pairs_out is not None:
        from pathlib import Path

        pairs, notes = preference_pairs(
            groups, Path(args.pairs_out).parent, min_gap=args.min_gap, head=head, model=args.model
        )
        for note in notes:
            print(f"icreward rank: note: {note}", file=sys.stderr)
        write_manifest(args.pairs_out, pairs)
        print(f"wrote {len(pairs)} pair(s) of {len(groups)} image group(s) to {args.pairs_out}", file=sys.stderr)
    errors = [error for g in groups for _, _, _, error in g.ranking if error]
    for error in errors if not args.json else []:
        print(f"icreward rank: could not score {error}", file=sys.stderr)
    return 1 if errors else 0
