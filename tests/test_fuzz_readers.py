"""Fuzzing the media and manifest readers with truncated, corrupted and garbled files built from small valid ones.

Every call runs in one long-lived worker process, with a timeout per call and its peak memory reported, so a reader
that hangs or blows up fails the test instead of the suite. What a reader may do with any input: return a valid
result (a finite `[0, 1]` tensor of the promised shape, a manifest) or raise an `IcrewardError` subclass whose message
names the file. Anything else (another exception type, a hang, unbounded memory) is a bug. Hypothesis picks the
mutations (derandomized, see conftest.py), so every run tries the same ones.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from icreward.media import write_video

CALL_TIMEOUT = 20.0  # seconds for one read of a file of a few KB: a hang, not a slow machine
MAX_GROWTH_MB = 1024  # the worker's peak memory may grow this much over its first calls, no more
NUM_FRAMES = 4

WORKER = textwrap.dedent(
    f"""
    import json, resource, sys, traceback, warnings
    import torch
    from icreward.errors import IcrewardError, ManifestError
    from icreward.manifest import Manifest, load_manifest
    from icreward.media import load_image, load_video

    warnings.simplefilter("ignore")  # FewFramesWarning and PIL's warnings on broken files

    def valid(x, dims):
        return (
            isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.ndim == len(dims)
            and all(d is None or s == d for s, d in zip(x.shape, dims)) and min(x.shape) >= 1
            and bool(torch.isfinite(x).all()) and float(x.min()) >= 0 and float(x.max()) <= 1
        )

    for line in sys.stdin:
        kind, path = json.loads(line)
        reply = {{}}
        try:
            if kind == "image":
                reply["valid"] = valid(load_image(path, max_side=64), (3, None, None))
            elif kind == "video":
                video = load_video(path, num_frames={NUM_FRAMES}, max_side=64)
                reply["valid"] = valid(video, ({NUM_FRAMES}, 3, None, None))
            else:
                for skip_bad in (False, True):
                    m = load_manifest(path, check_files=False, skip_bad=skip_bad)
                    reply["valid"] = isinstance(m, Manifest) and len(m) >= 1
            reply["outcome"] = "ok"
        except IcrewardError as e:
            reply.update(outcome="error", type=type(e).__name__, message=str(e))
            reply["manifest_error"] = isinstance(e, ManifestError)
        except Exception as e:
            reply.update(outcome="other", type=type(e).__name__, message=traceback.format_exc(limit=4))
        reply["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(reply), flush=True)
    """
)


class Worker:
    """The reader process: `call(kind, path)` returns its reply, or fails the test when it does not come in time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # libtiff and FFmpeg print to stderr on broken files
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.baseline_mb: float | None = None

    def call(self, kind: str, path: Path) -> dict:
        assert self.proc.poll() is None, f"the reader process died (exit {self.proc.returncode}) before {path}"
        self.proc.stdin.write(json.dumps([kind, str(path)]) + "\n")
        self.proc.stdin.flush()
        if not self.selector.select(timeout=CALL_TIMEOUT):
            self.proc.kill()
            pytest.fail(f"reading {path} ({kind}) did not finish in {CALL_TIMEOUT:.0f} s: it hangs")
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail(f"the reader process died reading {path} ({kind}), exit {self.proc.wait()}: a crash or OOM")
        reply = json.loads(line)
        if self.baseline_mb is None:
            self.baseline_mb = reply["rss_mb"]
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def check(worker: Worker, kind: str, path: Path) -> dict:
    """Read `path` in the worker and assert the reader kept its promise on it."""
    reply = worker.call(kind, path)
    assert reply["outcome"] != "other", f"{path.name}: {reply['type']} escaped the {kind} reader:\n{reply['message']}"
    if reply["outcome"] == "ok":
        assert reply["valid"], f"{path.name}: the {kind} reader returned an invalid result"
    else:
        assert path.name in reply["message"], f"the error does not name the file: {reply['message']}"
        assert kind != "manifest" or reply["manifest_error"], reply
    growth = reply["rss_mb"] - worker.baseline_mb
    assert growth < MAX_GROWTH_MB, f"{path.name}: the reader's memory grew by {growth:.0f} MB"
    return reply


# ---------------------------------------------------------------- small valid files to start from


def _seeds() -> dict[str, tuple[str, bytes]]:
    """name -> (reader, bytes) of small valid files of each format."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    out = {}
    for fmt, ext in (("PNG", ".png"), ("JPEG", ".jpg")):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt)
        out[f"image{ext}"] = ("image", buf.getvalue())
    frames = [np.roll(pixels, 3 * t, axis=1) for t in range(NUM_FRAMES)]
    buf = io.BytesIO()
    Image.fromarray(frames[0]).save(buf, "GIF", save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    out["video.gif"] = ("video", buf.getvalue())
    out["image.gif"] = ("image", buf.getvalue())
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"icreward-fuzz-seed-{os.getpid()}.mp4"
    try:
        write_video(tmp, np.stack([f[:16, :16] for f in frames]))
        out["video.mp4"] = ("video", tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    buf = io.BytesIO()
    np.save(buf, np.stack(frames))
    out["video.npy"] = ("video", buf.getvalue())
    out["points.jsonl"] = (
        "manifest",
        b'{"id": "a", "image": "i.png", "video": "v.mp4", "score": 1.5, "prompt": "a cat"}\n'
        b'{"id": 7, "image": "i.png", "video": "w.mp4", "labels": {"ic": 0.5}}\n',
    )
    out["pairs.csv"] = (
        "manifest",
        b'id,image,video_a,video_b,label,labels\np1,i.png,a.mp4,b.mp4,A,"{""ic"": ""A""}"\np2,i.png,a.mp4,c.mp4,tie,\n',
    )
    return out


SEEDS = _seeds()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_the_seed_files_are_valid(worker, folder):
    for name, (kind, data) in SEEDS.items():
        path = folder / name
        path.write_bytes(data)
        assert check(worker, kind, path)["outcome"] == "ok", name


# ---------------------------------------------------------------- mutations

MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("garble_header"), st.integers(0, 63), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("big_number"), st.integers(0, 160), st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])),
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    b = bytearray(data)
    for op, *args in mutations:
        at = min(len(b), int(args[0] * len(b))) if isinstance(args[0], float) else min(len(b), args[0])
        if op == "truncate":
            del b[at:]
        elif op == "flip" and at < len(b):
            b[at] ^= args[1]
        elif op == "garble_header":
            b[at : at + len(args[1])] = args[1]
        elif op == "insert":
            b[at:at] = args[1]
        elif op == "big_number":  # a size or count field set to 0, 1 or huge (little-endian, as in GIF and BMP)
            b[at : at + 4] = struct.pack("<I", args[1])
    return bytes(b)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_files(worker, folder, name, mutations):
    kind, data = SEEDS[name]
    path = folder / f"mutated-{name}"
    path.write_bytes(mutate(data, mutations))
    check(worker, kind, path)


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), data=st.binary(min_size=1, max_size=400))
def test_random_bytes(worker, folder, name, data):
    kind, _ = SEEDS[name]
    path = folder / f"random-{name}"
    path.write_bytes(data)
    check(worker, kind, path)


@settings(max_examples=40, deadline=None)
@given(lines=st.lists(st.text(max_size=80), min_size=1, max_size=4), csv=st.booleans())
def test_manifest_text(worker, folder, lines, csv):
    """Arbitrary text lines (any Unicode, lone surrogates excepted: they are not encodable) as a manifest."""
    path = folder / ("text.csv" if csv else "text.jsonl")
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    check(worker, "manifest", path)


# ---------------------------------------------------------------- what the fuzzing found, kept as regressions

FOUND = {
    # json.loads raised RecursionError (deep nesting) or ValueError (an integer of 5000 digits) out of the reader
    "deep.jsonl": b'{"id": "a", "image": "i.png", "video": "v.mp4", "x": ' + b"[" * 50000 + b"]" * 50000 + b"}\n",
    "bigint.jsonl": b'{"id": ' + b"9" * 5000 + b', "image": "i.png", "video": "v.mp4"}\n',
    "deep-labels.csv": b'id,image,video,labels\na,i.png,v.mp4,"' + b"[" * 50000 + b'"\n',
    # a lone surrogate escape is valid JSON but not text: it could not be printed or written back
    "surrogate.jsonl": b'{"id": "a", "image": "i\\ud800.png", "video": "v.mp4"}\n',
    # a NUL in a path can name no file
    "nul.jsonl": b'{"id": "a", "image": "i\\u0000.png", "video": "v.mp4"}\n',
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_manifests_the_fuzzing_found(worker, folder, name):
    path = folder / name
    path.write_bytes(FOUND[name])
    assert check(worker, "manifest", path)["outcome"] == "error"


def test_media_the_fuzzing_found(worker, folder):
    mp4 = SEEDS["video.mp4"][1]
    cases = {
        "unknown-codec.mp4": mp4.replace(b"avc1", b"zzzz"),  # a stream FFmpeg has no decoder for
        # numpy's header parser raised tokenize.TokenError out of the reader
        "garbled.npy": SEEDS["video.npy"][1][:10] + b"{'descr': '<u1', 'shape': (((((((" + b"(" * 200,
        "huge-shape.npy": SEEDS["video.npy"][1].replace(b"(4, 24, 32, 3)", b"(9999999999, 9, 9, 3)"),
        "zero-size.npy": _npy(np.zeros((4, 0, 32, 3), np.uint8)),  # came back as an empty [4, 3, 0, 32] video
        "structured.npy": _npy(np.zeros((4, 8, 8, 3), dtype=[("a", "<f4")])),
        "huge-canvas.gif": mutate(SEEDS["video.gif"][1], [("big_number", 6, 0xFFFFFFFF)]),  # 65535 x 65535
    }
    for name, data in cases.items():
        path = folder / name
        path.write_bytes(data)
        assert check(worker, "video", path)["outcome"] == "error", name
    # metadata that is not UTF-8 (here the encoder tag) raised UnicodeDecodeError in av.open: now it is replaced,
    # and the video reads
    at = mp4.index(b"Lavf")
    path = folder / "latin1-tag.mp4"
    path.write_bytes(mp4[:at] + b"\xff" + mp4[at + 1 :])
    assert check(worker, "video", path)["outcome"] == "ok"


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()
