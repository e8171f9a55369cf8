"""Reading images and videos into `[0, 1]` float tensors, and writing videos.

Images come back as `[3, H, W]`, videos as `[T, 3, H, W]` with T frames sampled uniformly while streaming.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icreward.atomic import atomic_write


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8, crf: int = 18) -> None:
    """Write `frames` (uint8 `[T, H, W, 3]`, H and W even) to an H.264 mp4 atomically."""
    import av

    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even sizes, got {h}x{w}")
    with atomic_write(path, "wb") as f:
        with av.open(f, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
