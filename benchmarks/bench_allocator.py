"""Freed memory kept in the process (`icreward.allocator`) against glibc malloc's defaults, for `icreward score`.

    python benchmarks/bench_allocator.py [--videos 200] [--repeats 3] [--model default] [--side 128] [--threads 1]
        [--real ../shared/real-i2v ../shared/real-i2v-pia]

Runs `icreward score --manifest M --out O --model MODEL --quiet` as a user would, in alternating rounds, with the
command's own allocator setting (512 MiB of freed heap kept) and with `ICREWARD_RETAIN_MEMORY=0` (glibc's defaults),
on `--videos` seeded 16-frame mp4 files (`bench_distributed.make_manifest`) and on the real pairs of each `--real`
folder that has a manifest.jsonl, `OMP_NUM_THREADS=--threads`. Prints the median wall time, the CPU time split
into user and kernel (system) time, the peak resident memory, the speed-up, and whether the outputs are the same bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_distributed import make_manifest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "kept (the command's default)": {},
    "glibc defaults (ICREWARD_RETAIN_MEMORY=0)": {"ICREWARD_RETAIN_MEMORY": "0"},
}


def run(command: list[str], env: dict) -> dict:
    """Wall, user and system seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{process.stderr.read()[-3000:]}")
    process.stderr.close()
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "rss": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="default")
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the command")
    parser.add_argument("--real", type=Path, nargs="*", default=[REPO.parent / "shared" / "real-i2v"])
    args = parser.parse_args(argv)
    icreward_bin = shutil.which("icreward") or str(Path(sys.executable).parent / "icreward")
    base = {k: v for k, v in os.environ.items() if k not in ("MALLOC_TOP_PAD_", "ICREWARD_RETAIN_MEMORY")}
    base.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-allocator-") as tmp:
        root = Path(tmp)
        manifests = {
            f"{args.videos} synthetic mp4 ({args.side} px)": make_manifest(root, args.videos, args.side, 16, 0)
        }
        manifests |= {f"{p.name} (real)": p / "manifest.jsonl" for p in args.real if (p / "manifest.jsonl").is_file()}
        for label, manifest in manifests.items():
            results: dict[str, list[dict]] = {s: [] for s in SETTINGS}
            outputs = set()
            for r in range(args.repeats):
                for i, (setting, extra) in enumerate(SETTINGS.items()):
                    out = root / f"out-{i}.jsonl"
                    out.unlink(missing_ok=True)
                    cmd = [icreward_bin, "score", "--manifest", str(manifest), "--out", str(out)]
                    results[setting].append(run([*cmd, "--model", args.model, "--quiet"], {**base, **extra}))
                    outputs.add(out.read_bytes())
                print(f"{label}: round {r + 1} done", file=sys.stderr)
            walls = {s: statistics.median(x["wall"] for x in v) for s, v in results.items()}
            kept, plain = list(SETTINGS)
            for setting, values in results.items():
                med = {k: statistics.median(x[k] for x in values) for k in ("wall", "user", "sys", "rss")}
                speed = walls[plain] / walls[setting]
                rows.append(
                    f"| {label} | {setting} | {med['wall']:.1f} | {med['user']:.1f} | {med['sys']:.1f} | "
                    f"{med['rss']:.0f} | {speed:.2f}x | {'yes' if len(outputs) == 1 else 'NO'} |"
                )
    print(
        f"\n`icreward score --manifest`, model {args.model}, OMP_NUM_THREADS={args.threads}, median of {args.repeats} "
        f"alternating rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end\n"
    )
    print("| videos | freed memory | wall s | user s | system s | peak RSS MiB | speed-up | same bytes |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
