"""A load test of the real server: `icreward serve`'s app under uvicorn in its own process on a free 127.0.0.1 port,
100 concurrent mixed requests (score and rank, uploads and paths) and a few decompression bombs at the same time.

Nothing is lost (every request answered, each answer equal to the answer to the same request sent alone, /stats
counting all of them), nothing hangs (every call and the whole run are bounded in time, the server is stopped in the
end), and the bombs are refused from their headers: the server's peak memory stays far below what decoding one of
them costs (2 GiB for a 16000 x 16000 GIF canvas, frames decoded at the canvas size).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from test_serve import gif_bomb  # a test module beside this one

from icreward.media import write_video

MODEL = "metric:vbench-i2v-pixel"  # a cheap real metric: 1 ms a forward pass here
N_REQUESTS = 100
N_WORKERS = 16  # client threads: at most this many requests in flight
PEAK_RSS_GROWTH_MIB = 256  # the server's peak RSS under load and bombs may grow this much over its peak after the
# same requests sent one at a time (about 370 MiB here, mostly torch); decoding one bomb would add 2048
RUN_SECONDS = 60  # the whole concurrent run, else the test fails (each call also has its own timeout)

SERVER = """
import socket, sys
import uvicorn, icreward
from icreward.server import ServeSettings, create_app

root, model = sys.argv[1], sys.argv[2]
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
settings = ServeSettings(allow_roots=[root], batch_size=8, batch_wait_ms=5, request_timeout=30, max_decode_mb=512)
app = create_app(icreward.load(model), model, settings)
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


def vm_hwm_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of process `pid`, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Two 32x32 images, six 32x32 videos of 4 frames, and a bomb GIF, in the folder the server may read."""
    root = tmp_path_factory.mktemp("load")
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(root / f"img{i}.png")
    for i in range(6):
        base = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        write_video(root / f"v{i}.mp4", np.stack([np.roll(base, s * i, axis=0) for s in range(4)]))
    (root / "bomb.gif").write_bytes(gif_bomb())
    return root


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    """The server process, its URL and its log; stopped (SIGTERM, then killed) whatever happens."""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the server's peak memory from /proc (Linux)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(root), MODEL], stdout=subprocess.PIPE, stderr=stderr, env=env, text=True
        )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the server did not start within 60 s"
        url = f"http://127.0.0.1:{int(proc.stdout.readline())}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, f"no /healthz answer: {log.read_text()}"
            time.sleep(0.05)
        yield proc, url, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def requests(root: Path) -> list[tuple[str, dict]]:
    """N_REQUESTS mixed requests as (path, httpx keyword arguments): score and rank, uploads and server paths."""
    out = []
    for i in range(N_REQUESTS):
        image, videos = f"img{i % 2}.png", [f"v{(i + k) % 6}.mp4" for k in range(1 + i % 3)]
        kind = ("score-upload", "score-path", "rank-upload", "rank-path")[i % 4]
        if kind == "score-upload":
            files = [
                ("image", (image, (root / image).read_bytes())),
                ("video", (videos[0], (root / videos[0]).read_bytes())),
            ]
            out.append(("/score", {"files": files, "data": {"num_frames": "4"}}))
        elif kind == "score-path":
            out.append(("/score", {"json": {"image": image, "video": videos[0], "num_frames": 4}}))
        elif kind == "rank-upload":
            files = [("image", (image, (root / image).read_bytes()))]
            files += [("videos", (v, (root / v).read_bytes())) for v in videos]
            out.append(("/rank", {"files": files, "data": {"num_frames": "4"}}))
        else:
            out.append(("/rank", {"json": {"image": image, "videos": videos, "num_frames": 4}}))
    return out


def bombs(root: Path) -> list[tuple[str, dict]]:
    """Requests whose media would take gigabytes decoded: refused with 413 from the headers."""
    bomb, image, video = (
        (root / "bomb.gif").read_bytes(),
        (root / "img0.png").read_bytes(),
        (root / "v0.mp4").read_bytes(),
    )
    return [
        ("/score", {"files": [("image", ("img0.png", image)), ("video", ("bomb.gif", bomb))]}),
        ("/score", {"files": [("image", ("bomb.gif", bomb)), ("video", ("v0.mp4", video))]}),
        (
            "/rank",
            {"files": [("image", ("img0.png", image)), ("videos", ("v0.mp4", video)), ("videos", ("b.gif", bomb))]},
        ),
        ("/score", {"json": {"image": "img0.png", "video": "bomb.gif"}}),
        ("/rank", {"json": {"image": "img0.png", "videos": ["v1.mp4", "bomb.gif"]}}),
    ]


def test_concurrent_mixed_load_loses_nothing_and_refuses_bombs(server, root):
    proc, url, log = server
    calls, bomb_calls = requests(root), bombs(root)
    with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=N_WORKERS)) as http:
        start = time.monotonic()
        try:
            sequential = [http.post(path, **kwargs) for path, kwargs in calls]  # one at a time
        except httpx.TransportError as e:
            raise AssertionError(f"{e!r}; server log:\n{log.read_text()[-4000:]}") from e
        sequential_seconds = time.monotonic() - start
        assert [r.status_code for r in sequential] == [200] * N_REQUESTS, [r.text for r in sequential][:3]
        calm_peak = vm_hwm_mib(proc.pid)

        mixed = calls + bomb_calls
        order = np.random.default_rng(0).permutation(len(mixed))  # bombs among the others
        start = time.monotonic()
        pool = ThreadPoolExecutor(N_WORKERS)
        futures = {i: pool.submit(http.post, mixed[i][0], **mixed[i][1]) for i in order}
        done, pending = wait(futures.values(), timeout=RUN_SECONDS)
        pool.shutdown(wait=not pending, cancel_futures=True)  # late calls end on their own 30 s timeout
        assert not pending, f"{len(pending)} requests not answered within {RUN_SECONDS} s"
        seconds = time.monotonic() - start
        try:
            answers = {i: f.result() for i, f in futures.items()}
        except httpx.TransportError as e:
            raise AssertionError(f"{e!r}; server log:\n{log.read_text()[-4000:]}") from e
        peak = vm_hwm_mib(proc.pid)
        stats = http.get("/stats").json()

    concurrent = [answers[i] for i in range(N_REQUESTS)]
    errors = [(i, r.status_code, r.text) for i, r in enumerate(concurrent) if r.status_code != 200]
    assert not errors, errors
    assert [r.json() for r in concurrent] == [r.json() for r in sequential]  # the same answers, to the bit
    refused = [answers[N_REQUESTS + i] for i in range(len(bomb_calls))]
    assert [r.status_code for r in refused] == [413] * len(bomb_calls), [r.text for r in refused]
    assert all("16000x16000" in r.json()["detail"] for r in refused), [r.text for r in refused]
    total = 2 * N_REQUESTS + len(bomb_calls)
    assert stats["requests"] == total and stats["errors"] == len(bomb_calls) and stats["dropped"] == 0, stats
    assert stats["score_requests"] + stats["rank_requests"] == total
    videos = sum(len(r.json()["ranking"]) if "ranking" in r.json() else 1 for r in concurrent)
    assert stats["items"] == 2 * videos, stats  # every video scored once per run
    print(
        f"\n{N_REQUESTS} sequential requests in {sequential_seconds:.1f} s; {len(mixed)} concurrent requests "
        f"({len(bomb_calls)} bombs) in {seconds:.1f} s, {len(errors)} errors, "
        f"answers equal to sequential; server peak RSS {calm_peak:.0f} MiB after the sequential run, "
        f"{peak:.0f} MiB after the concurrent one; stats {stats}"
    )
    assert peak < calm_peak + PEAK_RSS_GROWTH_MIB, (calm_peak, peak)
