"""`icreward score`: one (image, video) pair, or every line of a manifest into a JSONL file (resumable)."""

from __future__ import annotations

import argparse
import json
import sys

from icreward.cli.common import (
    FRAMES_HELP,
    add_head_option,
    add_model_option,
    add_precision_option,
    add_quiet_option,
    check_device,
    check_inputs,
    check_pair_or_manifest,
    check_precision,
    frame_count,
    non_negative_int,
    positive_int,
)
from icreward.errors import IcrewardError
from icreward.rules import DECODE_WORKERS


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("score", help="score one (image, video) pair or every line of a manifest")
    p.add_argument("--image", help="conditioning image")
    p.add_argument("--video", help="generated video")
    p.add_argument("--manifest", help="JSONL/CSV manifest of pointwise or pair records")
    p.add_argument(
        "--out",
        help="output JSONL (required with --manifest): one line per input line; a file path, never the manifest",
    )
    p.add_argument("--prompt", help="the prompt the video was generated from (single pair; manifests carry `prompt`)")
    add_model_option(p)
    add_head_option(p)
    p.add_argument(
        "--json",
        action="store_true",
        help='every head: a single pair prints {"id", "reward", "heads": {...}}; manifest lines gain "heads" '
        '("heads_a", "heads_b" for pairs)',
    )
    p.add_argument("--num-frames", type=frame_count, default=None, help=f"{FRAMES_HELP} (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="videos per forward pass, >= 1 (default: 8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:<i> or mps (default: cpu)")
    add_precision_option(p)
    p.add_argument(
        "--decode-workers",
        type=non_negative_int,
        default=DECODE_WORKERS,
        help=f"threads decoding ahead of the model, >= 0; 0 decodes in the main thread (default: {DECODE_WORKERS})",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the results already in --out (and in its .partial.jsonl side file) and score only the rest",
    )
    p.add_argument(
        "--flush-every",
        type=positive_int,
        default=64,
        help="fsync finished results to the side file every N, >= 1 (default: 64)",
    )
    add_quiet_option(p)
    return p


def run(args: argparse.Namespace) -> int:
    single = check_pair_or_manifest(args)
    if not single and args.out is None:
        raise IcrewardError("--manifest needs --out")
    if single and args.out is not None:
        raise IcrewardError("--out goes with --manifest; a single pair's reward is printed")
    check_inputs(image=args.image, video=args.video, manifest=args.manifest)
    if not single:  # before the model loads and anything is scored: a refusal leaves nothing behind
        from icreward.scoring.resumable import check_output_paths

        check_output_paths(args.manifest, args.out, out_flag="--out")
    check_device(args.device)
    check_precision(args.device, args.precision)
    import torch

    from icreward.loading import load

    torch.manual_seed(0)
    scorer = load(args.model, head=args.head)
    if single:
        return _score_pair(scorer, args)
    from icreward.scoring.distributed import world

    if world()[0] > 1:  # under torchrun / accelerate launch: one shard per process
        return _score_manifest_distributed(scorer, args)
    return _score_manifest(scorer, args)


def _score_pair(scorer, args: argparse.Namespace) -> int:
    from pathlib import Path

    from icreward.scoring import Item, score_items

    item = Item(Path(args.video).stem, Path(args.image), Path(args.video), args.prompt)
    (result,) = score_items(
        scorer,
        [item],
        num_frames=args.num_frames,
        device=args.device,
        progress=False,
        precision=args.precision,
        heads=args.json,
    )
    if result.error and not (args.json and result.heads):
        raise IcrewardError(result.error)
    if args.json:  # exactly one JSON object on stdout; a head without a value (text, no prompt) is null
        print(json.dumps({"id": item.key, "reward": result.reward, "heads": result.heads[0]}))
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
            return 1
    else:
        print(f"{result.reward:.6f}")
    return 0


def _score_manifest(scorer, args: argparse.Namespace) -> int:
    from icreward.scoring import partial_path, score_manifest_to_file

    try:
        records = score_manifest_to_file(
            scorer,
            args.manifest,
            args.out,
            resume=args.resume,
            flush_every=args.flush_every,
            log=lambda msg: print(msg, file=sys.stderr),
            batch_size=args.batch_size,
            num_frames=args.num_frames,
            device=args.device,
            progress=not args.quiet,
            precision=args.precision,
            heads=args.json,
            decode_workers=args.decode_workers,
        )
    except KeyboardInterrupt:
        side = partial_path(args.out)
        if side.is_file():
            print(f"finished results are in {side}; run again with --resume to go on", file=sys.stderr)
        raise
    return _report(records, args)


def _score_manifest_distributed(scorer, args: argparse.Namespace) -> int:
    """One shard per process of the launcher; rank 0 merges, logs and reports, the others stay quiet."""
    from icreward.progress import silenced
    from icreward.scoring.distributed import ProcessGroup, device_for_rank, score_manifest_distributed, world

    size, rank, local = world()
    device = device_for_rank(args.device, local)
    group = ProcessGroup(device, local)
    try:
        with silenced(args.quiet or rank != 0):
            records = score_manifest_distributed(
                scorer,
                args.manifest,
                args.out,
                group=group,
                rank=rank,
                world_size=size,
                resume=args.resume,
                flush_every=args.flush_every,
                log=(lambda msg: print(msg, file=sys.stderr)) if rank == 0 else None,
                batch_size=args.batch_size,
                num_frames=args.num_frames,
                device=device,
                progress=not args.quiet and rank == 0,
                precision=args.precision,
                heads=args.json,
                decode_workers=args.decode_workers,
            )
    finally:
        group.close()
    if records is None:  # not rank 0: its results are in its side file, merged by rank 0
        return 0
    return _report(records, args)


def _report(records: list[dict], args: argparse.Namespace) -> int:
    """The summary on stderr (lines scored, each error line); exit code 1 when any line is an error."""
    n_err = sum("error" in r for r in records)
    print(f"scored {len(records) - n_err} of {len(records)} lines of {args.manifest} -> {args.out}", file=sys.stderr)
    for r in records:
        if "error" in r:
            print(f"  line {r['line']} (id {r['id']}): {r['error']}", file=sys.stderr)
    return 0 if n_err == 0 else 1
