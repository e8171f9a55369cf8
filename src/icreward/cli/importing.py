"""`icreward import FORMAT`: turn labelled data users already have into icreward manifests.

- `vbench-i2v`: VBench-I2V results files -> `OUT_DIR/<dimension>.jsonl` (pointwise) and `OUT_DIR/import.json`;
- `videoalign`: VideoAlign's VideoGen-RewardBench / training CSV -> a pair manifest;
- `scores`: a CSV of one score per video -> a pair manifest (pairs of videos of one image), or `--pointwise`.

Bad input stops the import with one error naming the file and the row or entry; `--skip-bad` leaves such entries out
and lists them on stderr. Every manifest written loads with `icreward.manifest.load_manifest`.
"""

from __future__ import annotations

import argparse
import json
import sys

from icreward.cli.common import check_inputs, float_range

FORMATS = ("vbench-i2v", "videoalign", "scores")
SKIP_BAD_HELP = "leave out entries that cannot be imported (listed on stderr) instead of stopping at the first"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "import",
        help="turn labelled data you already have (VBench-I2V, VideoAlign, a scores CSV) into manifests",
        description="Convert existing labelled data into icreward manifests. Formats: " + ", ".join(FORMATS) + ".",
    )
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")

    v = formats.add_parser(
        "vbench-i2v",
        help="VBench-I2V <name>_eval_results.json -> one pointwise manifest per dimension",
        description="One pointwise manifest per dimension (OUT_DIR/<dimension>.jsonl, score on VBench's 0-1 scale) "
        "and OUT_DIR/import.json with the counts.",
    )
    v.add_argument("--info", required=True, help="vbench2_i2v_full_info.json (prompt -> image)")
    v.add_argument("--results", nargs="+", required=True, help="one or more <name>_eval_results.json files")
    v.add_argument(
        "--videos",
        nargs="+",
        required=True,
        help="folder of the videos (<prompt>-<index>.mp4): one, or one per --results file",
    )
    v.add_argument("--images", required=True, help="folder of the I2V images, e.g. vbench2_beta_i2v/data/crop/1-1")
    v.add_argument("--out", required=True, help="output folder for <dimension>.jsonl and import.json")
    v.add_argument("--overwrite", action="store_true", help="write into a non-empty folder that is no earlier import")
    v.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)

    a = formats.add_parser(
        "videoalign",
        help="VideoAlign VideoGen-RewardBench / training CSV -> a pair manifest",
        description="Labels A/B/same per dimension (VQ -> vq, MQ -> motion, TA -> text, Overall -> overall); other "
        "strings mean no label. VideoAlign is text-to-video: give an image column, or --image-from first-frame.",
    )
    a.add_argument("--csv", required=True, help="VideoGen-RewardBench.csv or a training CSV")
    a.add_argument("--out", required=True, help="output manifest (.jsonl)")
    a.add_argument("--videos-root", default=None, help="folder the CSV's paths are relative to (default: the CSV's)")
    a.add_argument(
        "--image-from",
        choices=("column", "first-frame"),
        default="column",
        help="column: the CSV's image column (default); first-frame: extract video A's first frame as the image "
        "(it favours video A on image consistency)",
    )
    a.add_argument(
        "--frames-dir",
        default=None,
        help="where --image-from first-frame writes <id>.png (default: images/ beside --out)",
    )
    a.add_argument(
        "--label",
        default=None,
        metavar="DIM",
        help="the dimension (vq, motion, text, overall) that gives each pair its top-level label "
        "(default: overall when the CSV has Overall, else none: only per-dimension labels)",
    )
    a.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)

    s = formats.add_parser(
        "scores",
        help="a CSV of one score per video -> pairs of videos of one image (or --pointwise)",
        description="Columns image, video, score, optional prompt, id, group. Pairs every two videos of one group "
        "(the group column, else the same image and prompt), labelled by the score difference.",
    )
    s.add_argument("--csv", required=True, help="CSV with image, video, score (and prompt, id, group)")
    s.add_argument("--out", required=True, help="output manifest (.jsonl)")
    s.add_argument(
        "--margin", type=float_range(0.0), default=0.0, help="|score_a - score_b| <= margin is a tie (default: 0)"
    )
    s.add_argument("--pointwise", action="store_true", help="write one pointwise record per row instead of pairs")
    s.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    return p


def run(args: argparse.Namespace) -> int:
    return {"vbench-i2v": _vbench, "videoalign": _videoalign, "scores": _scores}[args.format](args)


def _report_skipped(issues) -> None:
    if issues.skipped:
        n = len(issues.skipped)
        print(f"skipped {n} entr{'y' if n == 1 else 'ies'}:", file=sys.stderr)
        for line in issues.lines():
            print(f"  {line}", file=sys.stderr)


def _check_out_file(out: str, inputs: dict) -> None:
    from icreward.atomic import check_output_file
    from icreward.errors import IcrewardError

    if not out.lower().endswith(".jsonl"):
        raise IcrewardError(f"--out {out}: name the manifest .jsonl")
    check_output_file(out, flag="--out", inputs=inputs)


def _vbench(args: argparse.Namespace) -> int:
    from icreward.atomic import check_not_an_input, check_output_dir
    from icreward.errors import IcrewardError
    from icreward.importers import I2VInfo, Issues, vbench_i2v_records, write_vbench_i2v
    from icreward.importers.vbench import SUMMARY_FILE

    check_inputs(info=args.info, results=args.results)
    if len(args.videos) not in (1, len(args.results)):
        raise IcrewardError(
            f"--videos: give one folder, or one per --results file ({len(args.results)}), not {len(args.videos)}"
        )
    from pathlib import Path

    for flag, folder in [("--images", args.images)] + [("--videos", v) for v in args.videos]:
        if not Path(folder).is_dir():
            raise IcrewardError(f"{flag} {folder}: {'not a folder' if Path(folder).exists() else 'folder not found'}")
    for flag, path in [("--info", args.info)] + [("--results", r) for r in args.results]:
        check_not_an_input(args.out, {flag: path}, "--out")
    check_output_dir(args.out, flag="--out", marker=(SUMMARY_FILE,), overwrite=args.overwrite, what="import")
    issues = Issues(skip_bad=args.skip_bad)
    info = I2VInfo.load(args.info)
    records = vbench_i2v_records(info, args.results, args.videos, args.images, args.out, issues)
    if not any(records.values()):
        _report_skipped(issues)
        raise IcrewardError(f"nothing to import: no valid entry in {', '.join(args.results)}")
    summary = {
        "format": "vbench-i2v",
        "info": str(args.info),
        "results": [str(r) for r in args.results],
        "skipped": issues.lines(),
    }
    summary = write_vbench_i2v(args.out, records, summary, overwrite=args.overwrite)
    _report_skipped(issues)
    for dim, n in summary["dimensions"].items():
        print(f"{dim}: {n} record{'' if n == 1 else 's'}" + (f" -> {Path(args.out) / f'{dim}.jsonl'}" if n else ""))
    print(f"wrote {Path(args.out) / SUMMARY_FILE}")
    return 0


def _videoalign(args: argparse.Namespace) -> int:
    from icreward.errors import IcrewardError
    from icreward.importers import Issues, extract_frames, videoalign_records
    from icreward.manifest import write_manifest

    check_inputs(csv=args.csv, videos_root=args.videos_root)
    _check_out_file(args.out, {"--csv": args.csv})
    if args.frames_dir is not None and args.image_from != "first-frame":
        raise IcrewardError("--frames-dir goes with --image-from first-frame")
    issues = Issues(skip_bad=args.skip_bad)
    records, to_extract, unlabelled = videoalign_records(
        args.csv,
        args.out,
        videos_root=args.videos_root,
        image_from=args.image_from,
        frames_dir=args.frames_dir,
        label_dim=args.label,
        issues=issues,
    )
    if args.image_from == "first-frame":
        records = extract_frames(to_extract, records, args.csv, issues)
    _report_skipped(issues)
    if unlabelled:
        print(f"left out {unlabelled} row(s) with no A/B/same label on any dimension", file=sys.stderr)
    if not records:
        raise IcrewardError(f"nothing to import: no valid labelled row in {args.csv}")
    write_manifest(args.out, records)
    with_label = sum("label" in r for r in records)
    print(f"wrote {len(records)} pair(s) to {args.out} ({with_label} with a top-level label)")
    return 0


def _scores(args: argparse.Namespace) -> int:
    from icreward.errors import IcrewardError
    from icreward.importers import Issues, pairs_from_scores, score_rows
    from icreward.manifest import write_manifest

    check_inputs(csv=args.csv)
    _check_out_file(args.out, {"--csv": args.csv})
    issues = Issues(skip_bad=args.skip_bad)
    points = score_rows(args.csv, args.out, issues)
    records = points if args.pointwise else pairs_from_scores(points, args.margin)
    _report_skipped(issues)
    if not records:
        what = "row" if args.pointwise else "pair (no two videos share an image, prompt or group)"
        raise IcrewardError(f"nothing to import: no valid {what} in {args.csv}")
    write_manifest(args.out, records)
    print(json.dumps({"out": args.out, "records": len(records), "kind": "point" if args.pointwise else "pair"}))
    return 0
