"""How `load_video` scales with video length: time, decode rate and peak memory, each run in a fresh process.

    python benchmarks/bench_decode.py [--lengths 150 600 1800] [--frames 16] [--max-side 512]

Makes 1920x1080 H.264 videos (moving gradients, x264 preset ultrafast) of each length in a cache folder, reused on
later runs, then loads each with `load_video` in its own subprocess and prints a markdown table. The peak RSS of a
child that only imports torch, PyAV and icreward is the baseline: the growth over it should stay flat as videos get
longer, since only the sampled frames are kept, at the working size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FPS = 1920, 1080, 30

# Run in the child: report peak RSS (MiB) and, when given a video, load_video's wall time and output shape.
CHILD = """
import json, resource, sys, time
import av, torch
from icreward.media import load_video
out = {}
if len(sys.argv) > 1:
    start = time.perf_counter()
    video = load_video(sys.argv[1], num_frames=int(sys.argv[2]), max_side=int(sys.argv[3]) or None)
    out = {"seconds": time.perf_counter() - start, "shape": list(video.shape)}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["peak_mib"] = peak / (2**20 if sys.platform == "darwin" else 2**10)
print(json.dumps(out))
"""


def make_video(path: Path, n_frames: int) -> None:
    """Encode `n_frames` of gradients drifting across a 1080p frame; built straight in YUV 4:2:0 so it is cheap."""
    x = np.arange(WIDTH, dtype=np.float32)
    y = np.arange(HEIGHT, dtype=np.float32)[:, None]
    luma = ((x + y) % 256).astype(np.uint8)  # (H, W)
    chroma = np.tile(((x[::2] * 0.5) % 256).astype(np.uint8), (HEIGHT // 2, 1))  # (H/2, W/2)
    tmp = path.with_suffix(".partial.mp4")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for i in range(n_frames):
            u, v = np.roll(chroma, i, axis=0), np.roll(chroma, -i, axis=1)  # (H/2, W/2) each
            uv = np.concatenate([u.ravel(), v.ravel()]).reshape(HEIGHT // 2, WIDTH)
            yuv = np.concatenate([np.roll(luma, 4 * i, axis=1), uv])  # (H * 3/2, W): the Y, U, V planes in turn
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def run_child(*args: str) -> dict:
    """Run CHILD in a fresh interpreter and return what it printed."""
    result = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[150, 600, 1800], help="frames per test video")
    parser.add_argument("--frames", type=int, default=16, help="frames sampled per video (T)")
    parser.add_argument("--max-side", type=int, default=512, help="longer side frames are decoded at (0: full size)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "icreward-bench-decode")
    args = parser.parse_args(argv)

    args.cache.mkdir(parents=True, exist_ok=True)
    videos = {}
    for n in args.lengths:
        videos[n] = args.cache / f"gradient_{WIDTH}x{HEIGHT}_{n}.mp4"
        if not videos[n].exists():
            start = time.perf_counter()
            make_video(videos[n], n)
            print(f"made {videos[n]} in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    baseline = run_child()["peak_mib"]
    print(f"\nload_video(num_frames={args.frames}, max_side={args.max_side or None}) on {WIDTH}x{HEIGHT} H.264\n")
    print("| frames in file | file MiB | output shape | wall s | decoded fps | peak RSS MiB | over baseline MiB |")
    print("| ---: | ---: | :--- | ---: | ---: | ---: | ---: |")
    print(f"| (imports only) | | | | | {baseline:.0f} | 0 |")
    for n, path in videos.items():
        r = run_child(str(path), str(args.frames), str(args.max_side))
        size = path.stat().st_size / 2**20
        print(
            f"| {n} | {size:.1f} | {tuple(r['shape'])} | {r['seconds']:.2f} | {n / r['seconds']:.0f} "
            f"| {r['peak_mib']:.0f} | {r['peak_mib'] - baseline:+.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
