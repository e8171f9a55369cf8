"""`icreward score --manifest` under torchrun: one shard per process, rank 0 merges into the bytes a single process
writes; a killed rank's finished lines survive into `--resume`, also with another number of processes."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from icreward.scoring.distributed import FAULT_ENV

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-i2v"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_score(args: list[str], nproc: int = 1, env: dict | None = None) -> subprocess.CompletedProcess:
    launcher = []
    if nproc > 1:
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1"]
        launcher += ["--master_port", str(free_port())]
    cmd = [sys.executable, *launcher, "-m", "icreward.cli", "score", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if nproc == 1:  # a test session under a launcher must not make the single-process run a shard
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            full_env.pop(key, None)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=240)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """24 records of the real pairs (three rounds, distinct ids), one malformed line and one unreadable video."""
    if not (REAL / "manifest.jsonl").is_file():
        pytest.skip(f"{REAL} is absent")
    root = tmp_path_factory.mktemp("dist")
    (root / "broken.gif").write_text("not a gif")
    sources = [json.loads(line) for line in (REAL / "manifest.jsonl").read_text().splitlines() if line.strip()]
    lines = []
    for r in range(3):
        for s in sources:
            rec = {"id": f"{s['id']}-{r}", "image": str(REAL / s["image"]), "video": str(REAL / s["video"])}
            lines.append(json.dumps(rec))
        if r == 1:
            lines.append('{"id": "bad", "image": ')
            bad = {"id": "unreadable", "image": str(REAL / sources[0]["image"]), "video": str(root / "broken.gif")}
            lines.append(json.dumps(bad))
    path = root / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def straight(manifest, tmp_path_factory) -> Path:
    """The single-process output of the colour-histogram metric."""
    out = tmp_path_factory.mktemp("straight") / "straight.jsonl"
    run_score(["--manifest", str(manifest), "--model", "metric:color-hist", "--out", str(out)])
    assert out.is_file()
    return out


def side_files_of(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.stem}.partial*"))


@pytest.mark.parametrize("model", ["metric:color-hist", "default"])
def test_two_processes_write_the_bytes_of_one(manifest, tmp_path, model):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    flags = ["--manifest", str(manifest), "--model", model]
    single = run_score([*flags, "--out", str(one)])
    double = run_score([*flags, "--out", str(two)], nproc=2)
    assert single.returncode == 1, single.stderr[-3000:]  # the two error lines
    assert double.returncode != 0 and two.is_file(), double.stderr[-3000:]
    assert one.read_bytes() == two.read_bytes()
    assert subprocess.run(["cmp", str(one), str(two)]).returncode == 0
    lines = [json.loads(line) for line in two.read_text().splitlines()]
    assert len(lines) == 26 and sum("error" in r for r in lines) == 2
    assert not side_files_of(two)
    assert double.stderr.count("scored 24 of 26 lines") == 1  # rank 0 reports, rank 1 is quiet
    assert double.stderr.count("(id unreadable)") == 1


def test_one_thread_per_process_writes_the_same_bytes(manifest, straight, tmp_path):
    """`--decode-workers 0`: each process decodes in its main thread (one thread with OMP_NUM_THREADS=1)."""
    out = tmp_path / "inline.jsonl"
    flags = ["--manifest", str(manifest), "--model", "metric:color-hist", "--decode-workers", "0", "--out", str(out)]
    done = run_score(flags, nproc=2)
    assert done.returncode == 1, done.stderr[-3000:]
    assert out.read_bytes() == straight.read_bytes()


def test_a_killed_rank_resumes_with_what_every_rank_finished(manifest, straight, tmp_path):
    out = tmp_path / "out.jsonl"
    flags = ["--manifest", str(manifest), "--model", "metric:color-hist", "--flush-every", "1"]
    crashed = run_score([*flags, "--out", str(out)], nproc=2, env={FAULT_ENV: "3:1"})  # rank 1 SIGKILLs itself
    assert crashed.returncode != 0 and not out.exists(), crashed.stderr[-3000:]
    rank1 = tmp_path / "out.partial.rank1-of-2.jsonl"
    assert len(rank1.read_text().splitlines()) >= 3
    resumed = run_score([*flags, "--out", str(out), "--resume"], nproc=2)
    assert out.is_file(), resumed.stderr[-3000:]
    match = re.search(r"resuming: (\d+) of (\d+) records already scored", resumed.stderr)
    assert match, resumed.stderr[-3000:]
    kept, total = int(match.group(1)), int(match.group(2))
    assert 3 <= kept < total == 25
    assert out.read_bytes() == straight.read_bytes()
    assert not side_files_of(out)


def test_a_crashed_two_process_run_resumes_in_one_process(manifest, straight, tmp_path):
    out = tmp_path / "out.jsonl"
    flags = ["--manifest", str(manifest), "--model", "metric:color-hist", "--flush-every", "1"]
    crashed = run_score([*flags, "--out", str(out)], nproc=2, env={FAULT_ENV: "4"})  # both ranks die
    assert crashed.returncode != 0 and not out.exists()
    resumed = run_score([*flags, "--out", str(out), "--resume"])
    match = re.search(r"resuming: (\d+) of 25 records already scored", resumed.stderr)
    assert match and int(match.group(1)) >= 4, resumed.stderr[-3000:]
    assert out.read_bytes() == straight.read_bytes()
    assert not side_files_of(out)
