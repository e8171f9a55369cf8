"""`icreward.allocator`: freed heap memory kept in the process (glibc), measured by the page faults of scoring."""

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from icreward import allocator
from icreward.media import write_video

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def score_page_faults(manifest, out, **env) -> int:
    """Minor page faults of `icreward score --manifest` run as a user would, with `env` added."""
    base = {k: v for k, v in os.environ.items() if k not in ("MALLOC_TOP_PAD_", "ICREWARD_RETAIN_MEMORY")}
    command = [sys.executable, "-m", "icreward.cli", "score", "--manifest", str(manifest), "--out", str(out)]
    process = subprocess.Popen([*command, "--quiet"], env={**base, "OMP_NUM_THREADS": "1", **env})
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_minflt


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_command_keeps_freed_memory_instead_of_faulting_it_in_again(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        frames = rng.integers(0, 256, (16, 128, 128, 3), dtype=np.uint8)
        write_video(tmp_path / f"v{i}.mp4", frames)
        Image.fromarray(frames[0]).save(tmp_path / f"i{i}.png")
    for n in range(24):
        lines.append(json.dumps({"id": f"p{n}", "image": f"i{n % 6}.png", "video": f"v{n % 6}.mp4"}))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    kept = score_page_faults(manifest, tmp_path / "kept.jsonl")
    plain = score_page_faults(manifest, tmp_path / "plain.jsonl", ICREWARD_RETAIN_MEMORY="0")
    assert kept < plain / 2  # measured: about a third
    assert (tmp_path / "kept.jsonl").read_bytes() == (tmp_path / "plain.jsonl").read_bytes()


def test_the_environment_decides_first(monkeypatch):
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1000000")
    assert allocator.user_chose() and not allocator.retain_freed_memory()
    monkeypatch.delenv("MALLOC_TOP_PAD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.top_pad=1000000")
    assert allocator.user_chose()
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("ICREWARD_RETAIN_MEMORY", "0")
    assert allocator.user_chose() and not allocator.retain_freed_memory()
    monkeypatch.delenv("ICREWARD_RETAIN_MEMORY")
    assert not allocator.user_chose()
    assert not allocator.set_malloc(-1) and not allocator.set_malloc(2**31)
