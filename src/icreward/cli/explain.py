"""`icreward explain`: where and when a video drifts from its image, drawn for one pair or every record of a manifest.

Writes into `--out` (one subfolder per record id with `--manifest`; `<id>/a` and `<id>/b` for pair records):
`curve.json` (the explanation's `to_json` with the maps on the model's patch grid), `curve.png` (the per-frame
reward, the onset marked), `strip.png` (every sampled frame with its map overlaid, a colour bar) and `overlay.mp4`
(the frames with their maps, H.264 / yuv420p), and prints each one-line summary. The folder appears whole or not at
all (`icreward.atomic.atomic_dir`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
)
from icreward.errors import IcrewardError

PAIR_FILES = ("curve.json", "curve.png", "strip.png", "overlay.mp4")  # curve.json is written last: the marker
INDEX = "explain.jsonl"  # manifest mode: one line per record (id, summary, reward, onset, region, or error)
STRIP_COLUMNS = 8
OVERLAY_SIDE = 256  # the overlay's longer side in pixels (frames are enlarged or shrunk to it)
COLOUR_MAP = "inferno"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "explain",
        help="where and when a video drifts from its image: per-frame curve, maps, strip and overlay video",
    )
    p.add_argument("--image", help="conditioning image")
    p.add_argument("--video", help="generated video")
    p.add_argument("--manifest", help="JSONL/CSV manifest: one subfolder of --out per record id")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier explain output)")
    p.add_argument("--prompt", help="the prompt the video was generated from (single pair; manifests carry `prompt`)")
    add_model_option(p)
    add_head_option(p)
    p.add_argument("--num-frames", type=frame_count, default=None, help=f"{FRAMES_HELP} (default: the model's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:<i> or mps (default: cpu)")
    add_precision_option(p)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out that is not an earlier one")
    add_quiet_option(p)
    return p


def run(args: argparse.Namespace) -> int:
    single = check_pair_or_manifest(args)
    check_inputs(image=args.image, video=args.video, manifest=args.manifest)
    from icreward.atomic import check_output_dir

    inputs = {"--image": args.image, "--video": args.video, "--manifest": args.manifest}
    marker = ("curve.json",) if single else (INDEX,)
    check_output_dir(args.out, flag="--out", inputs=inputs, marker=marker, overwrite=args.overwrite, what="explain")
    check_device(args.device)
    check_precision(args.device, args.precision)
    import torch

    from icreward.loading import load

    torch.manual_seed(0)
    scorer = load(args.model, head=args.head)
    from icreward.explain import _kind

    _kind(scorer)  # a scorer that cannot explain is refused before anything is decoded
    if single:
        return _explain_pair(scorer, args)
    return _explain_manifest(scorer, args)


def _explainer(scorer, args: argparse.Namespace):
    """`explain_one(image, video_path, prompt) -> (Explanation, frames [T,3,H,W])` on the chosen device/precision."""
    from icreward.explain import explain, frame_timing
    from icreward.media import load_video
    from icreward.precision import autocast

    scorer = scorer.to(args.device).eval()
    t = args.num_frames or scorer.num_frames

    def explain_one(image, video_path, prompt):
        frames = load_video(video_path, num_frames=t, max_side=scorer.max_side)
        indices, times = frame_timing(video_path, t)
        with autocast(args.device, args.precision):
            return explain(scorer, image, frames, prompt, frame_indices=indices, times=times), frames

    return explain_one


def _explain_pair(scorer, args: argparse.Namespace) -> int:
    from icreward.atomic import atomic_dir
    from icreward.media import load_image

    explain_one = _explainer(scorer, args)
    image = load_image(args.image, max_side=scorer.max_side)
    explanation, frames = explain_one(image, args.video, args.prompt)
    with atomic_dir(args.out, own=PAIR_FILES, marker=("curve.json",), overwrite=args.overwrite, flag="--out") as tmp:
        write_outputs(tmp, explanation, frames)
    print(explanation.summary)
    return 0


def _explain_manifest(scorer, args: argparse.Namespace) -> int:
    from icreward.atomic import atomic_dir
    from icreward.manifest import PairRecord, load_manifest
    from icreward.media import load_image
    from icreward.progress import progress_bar

    manifest = load_manifest(args.manifest)
    explain_one = _explainer(scorer, args)
    index, errors = [], 0
    with atomic_dir(args.out, marker=(INDEX,), overwrite=args.overwrite, flag="--out") as tmp:
        bar = progress_bar(total=len(manifest.records), desc="explaining", unit="record", enabled=not args.quiet)
        for record in manifest.records:
            pair = isinstance(record, PairRecord)
            videos = {"a": record.video_a, "b": record.video_b} if pair else {"": record.video}
            try:
                image = load_image(record.image, max_side=scorer.max_side)
            except IcrewardError as e:
                errors += 1
                index.append({"id": record.id, "line": record.line, "error": str(e)})
                print(f"  line {record.line} (id {record.id}): {e}", file=sys.stderr)
                bar.update(1)
                continue
            for key, video in videos.items():
                entry = {"id": record.id, "line": record.line} | ({"video": key} if key else {})
                folder = tmp / _safe_name(record.id) / key if key else tmp / _safe_name(record.id)
                try:
                    explanation, frames = explain_one(image, video, record.prompt)
                except IcrewardError as e:
                    errors += 1
                    index.append(entry | {"error": str(e)})
                    print(f"  line {record.line} (id {record.id}): {e}", file=sys.stderr)
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                write_outputs(folder, explanation, frames)
                entry |= {"folder": str(folder.relative_to(tmp)), "reward": round(explanation.reward, 4)}
                index.append(entry | {"onset": explanation.onset, "region": explanation.region})
                index[-1]["summary"] = explanation.summary
                print(f"{record.id}{'/' + key if key else ''}: {explanation.summary}")
            bar.update(1)
        bar.close()
        (tmp / INDEX).write_text("".join(json.dumps(e) + "\n" for e in index))
    done = sum("error" not in e for e in index)
    print(f"explained {done} of {len(index)} videos of {args.manifest} -> {args.out}", file=sys.stderr)
    return 0 if errors == 0 else 1


def _safe_name(record_id: str) -> str:
    """A record id as one folder name (path separators and leading dots replaced)."""
    name = "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in str(record_id)).lstrip(".")
    return name or "_"


# ---- drawing


def overlay_frames(frames, maps, side: int | None = None):
    """Frames `[T,3,H,W]` in [0, 1] with their maps `[T,h,w]` in [0, 1] laid over them in the colour map, opacity
    rising with the value (an unchanged region shows the frame): uint8 `[T, H', W', 3]`, H' and W' even, the longer
    side `side` where given."""
    import matplotlib
    import numpy as np
    import torch
    import torch.nn.functional as F

    t, _, h, w = frames.shape
    if side is not None:
        scale = side / max(h, w)
        h, w = max(2, round(h * scale)), max(2, round(w * scale))
    h, w = h - h % 2, w - w % 2
    frames = F.interpolate(frames.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    m = F.interpolate(maps.float()[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)
    colours = torch.from_numpy(matplotlib.colormaps[COLOUR_MAP](m.numpy())[..., :3]).float().permute(0, 3, 1, 2)
    alpha = (0.75 * m)[:, None]  # (T, 1, h, w): 0 (the frame as it is) where nothing changed
    out = frames * (1 - alpha) + colours * alpha
    return (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().astype(np.uint8)


def write_outputs(folder: Path, explanation, frames) -> None:
    """curve.png, strip.png, overlay.mp4 and curve.json (last) of one explanation into `folder`."""
    import numpy as np

    from icreward.media import write_video

    maps = explanation.maps
    if maps is None:  # a metric with no map: the frames as they are
        import torch

        maps = torch.zeros(frames.shape[0], 1, 1)
    _plot_curve(folder / "curve.png", explanation)
    tiles = overlay_frames(frames, maps, side=160)
    _strip(folder / "strip.png", tiles, explanation)
    fps = 8
    if explanation.times is not None and explanation.times[-1] > explanation.times[0]:
        fps = max(1, round((len(explanation.times) - 1) / (explanation.times[-1] - explanation.times[0])))
    write_video(folder / "overlay.mp4", np.ascontiguousarray(overlay_frames(frames, maps, side=OVERLAY_SIDE)), fps=fps)
    grid = None if explanation.maps is None else int(explanation.maps.shape[-1])
    record = explanation.to_json(grid=grid)
    (folder / "curve.json").write_text(json.dumps(record) + "\n")


def _plot_curve(path: Path, explanation) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = explanation.frame_indices
    fig, ax = plt.subplots(figsize=(6, 2.6), dpi=100)
    ax.plot(x, explanation.curve.numpy(), marker="o", markersize=3, color="#1f5fa8")
    if explanation.onset is not None:
        ax.axvline(x[explanation.onset], color="#c0392b", linestyle="--", label=f"onset (frame {x[explanation.onset]})")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("frame")
    ax.set_ylabel(f"{explanation.head} reward\n(each frame alone)")
    ax.set_title(explanation.summary, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _strip(path: Path, tiles, explanation) -> None:
    """The overlaid frames in rows of STRIP_COLUMNS, each labelled with its frame number and reward, the onset
    framed in red, and a colour bar under them."""
    import matplotlib
    import numpy as np
    from PIL import Image, ImageDraw

    t, h, w, _ = tiles.shape
    columns = min(STRIP_COLUMNS, t)
    rows = -(-t // columns)
    label, gap, bar_h = 14, 4, 34
    canvas = Image.new("RGB", (columns * (w + gap) + gap, rows * (h + label + gap) + gap + bar_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(t):
        x0 = gap + (i % columns) * (w + gap)
        y0 = gap + (i // columns) * (h + label + gap)
        draw.text((x0, y0), f"frame {explanation.frame_indices[i]}  {float(explanation.curve[i]):+.2f}", fill="black")
        canvas.paste(Image.fromarray(tiles[i]), (x0, y0 + label))
        if i == explanation.onset:
            draw.rectangle([x0 - 2, y0 + label - 2, x0 + w + 1, y0 + label + h + 1], outline=(200, 30, 30), width=2)
    width = min(canvas.width - 2 * gap, 320)
    ramp = matplotlib.colormaps[COLOUR_MAP](np.linspace(0, 1, width))[None, :, :3]
    bar = Image.fromarray((np.repeat(ramp, 10, 0) * 255).astype(np.uint8))
    y = canvas.height - bar_h + 4
    canvas.paste(bar, (gap, y))
    draw.text((gap, y + 12), "0: as in the image", fill="black")
    draw.text((gap + width - 90, y + 12), "1: changed most", fill="black")
    canvas.save(path)
