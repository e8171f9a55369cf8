"""The task heads' goals, measured: the static test on real I2V outputs, the camera-motion text test, the PIA prompt
check, side by side with the weight-free baselines.

    python benchmarks/bench_heads.py [--model default] [--roots ../shared/real-i2v ../shared/real-i2v-pia]
        [--camera-set build/camera-set] [--json-out reports/heads.json]

Prints three tables:
1. static test: per head, how often a frozen copy of the image / the image jittering in place / the real video
   looping back and forth scores at least as high as the real video (goal for guidance: frozen <= 20%, jitter and
   loop <= 20%, i.e. the real video wins >= 80%), over every video of the real folders;
2. camera text test: on videos rendered from held-out real photographs with VBench-I2V's seven camera moves
   (`icreward.synth.camera_set`, built on first use), how often the prompted move's video outranks each other
   move's video under the model's text head and under `metric:camera-motion` (goal >= 90%);
3. PIA prompt check: how often a video scores higher under its own prompt than under the other prompts of its image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOTS = [REPO.parent / "shared" / "real-i2v", REPO.parent / "shared" / "real-i2v-pia"]


def camera_set(folder: Path, n_photos: int, seed: int) -> Path:
    """The camera set in `folder`, built once (reused when its manifest is there)."""
    from icreward.synth.camera_set import build_camera_set

    if not (folder / "pairs.jsonl").is_file():
        build_camera_set(folder, n_photos=n_photos, seed=seed)
    return folder


def run(model_name: str, roots: list[Path], camera_dir: Path | None, n_photos: int, seed: int) -> dict:
    import icreward
    from icreward.evaluation.heads_check import camera_check, prompt_check, real_videos, static_check

    torch.manual_seed(0)
    model = icreward.load(model_name)
    results: dict = {"model": model_name, "heads": list(model.head_names)}
    roots = [r for r in roots if (r / "manifest.jsonl").is_file()]
    if roots:
        items = real_videos(roots, num_frames=model.num_frames)
        results["static"] = static_check(model, items)
        results["static_n_videos"] = len(items)
        baseline = icreward.load("metric:dynamic-degree")
        results["static_dynamic_degree"] = static_check(baseline, items)
        pia = [i for i in items if i.folder == "real-i2v-pia"]
        if "text" in model.head_names and pia:
            results["pia_prompts"] = prompt_check(model, pia)
            results["pia_prompts_camera_metric"] = prompt_check(icreward.load("metric:camera-motion"), pia, "text")
    if "guidance" in model.head_names:
        results["throughput"] = throughput(model)
    if camera_dir is not None and "text" in model.head_names:
        folder = camera_set(camera_dir, n_photos, seed)
        scorers = {model_name: model, "metric:camera-motion": icreward.load("metric:camera-motion")}
        results["camera"] = camera_check(scorers, folder)
    return results


def throughput(model, rounds: int = 3, batch: int = 8, frames: int = 16, size: int = 256) -> dict:
    """Videos/s from tensors, side by side in one run: the consistency head alone (`model(...)`) against every head
    (`all_heads`) without and with a prompt; the best of `rounds` timings of one batch each."""
    import time

    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, size, size, generator=g)
    video = torch.rand(batch, frames, 3, size, size, generator=g)
    prompts = ["a cat on a sofa, camera pans left"] * batch
    calls = {
        "consistency only": lambda: model(image, video),
        "all heads, no prompt": lambda: model.all_heads(image, video),
        "all heads, with prompt": lambda: model.all_heads(image, video, prompts),
    }
    out = {}
    with torch.no_grad():
        for fn in calls.values():
            fn()  # warm-up (the text encoder loads here)
        best = {name: float("inf") for name in calls}
        for _ in range(rounds):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        out[name] = batch / seconds
    return out


def print_tables(results: dict, out=sys.stdout) -> None:
    static = results.get("static")
    if static:
        print(f"\nstatic test on {results['static_n_videos']} real videos: rate at which the fallback scores >= the "
              "real video (lower is better)", file=out)  # fmt: skip
        print(f"{'head':<22}{'frozen':>10}{'jitter':>10}{'loop':>10}", file=out)
        rows = [(h, static[h]) for h in results["heads"] if h in static]
        rows += [
            (f"{h}, {half} half", static["per_split"][half][h])
            for h in ("guidance",)
            for half in ("select", "report")
            if h in static.get("per_split", {}).get(half, {})
        ]
        baseline = results["static_dynamic_degree"]
        rows += [(f"{h} (dynamic-degree)", v) for h, v in baseline.items() if h not in ("per_folder", "per_split")]
        for head, v in rows:
            print(
                f"{head:<22}" + "".join(f"{100 * v[k]['wins']:>9.1f}%" for k in ("frozen", "jitter", "loop")), file=out
            )
    camera = results.get("camera")
    if camera:
        print("\ncamera text test: prompted move's video outranks another move's video", file=out)
        moves = list(next(iter(camera.values()))["per_move"])
        print(f"{'scorer':<24}{'all':>8}" + "".join(f"{m:>11}" for m in moves), file=out)
        for name, v in camera.items():
            cells = "".join(f"{100 * v['per_move'][m]:>10.1f}%" for m in moves)
            print(f"{name:<24}{100 * v['accuracy']:>7.1f}%{cells}   ({v['n_pairs']} pairs)", file=out)
    speed = results.get("throughput")
    if speed:
        base = speed["consistency only"]
        print("\nthroughput from tensors (8 videos of 16 frames at 256 px, best of 3, same run):", file=out)
        for name, rate in speed.items():
            print(f"  {name:<24}{rate:>7.1f} videos/s  ({rate / base:.2f}x)", file=out)
    pia = results.get("pia_prompts")
    if pia:
        base = results["pia_prompts_camera_metric"]
        print(f"\nPIA prompt check: own prompt beats another prompt of the same image: text head "
              f"{100 * pia['rate']:.1f}% of {pia['n']}, camera-motion metric "
              f"{100 * (base['rate'] or 0):.1f}% (chance 50%)", file=out)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--roots", type=Path, nargs="*", default=DEFAULT_ROOTS)
    parser.add_argument("--camera-set", type=Path, default=REPO / "build" / "camera-set")
    parser.add_argument("--n-photos", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    results = run(args.model, args.roots, args.camera_set, args.n_photos, args.seed)
    print_tables(results)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
