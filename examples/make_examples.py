"""Rebuild the example files from the DynamiCrafter showcase pairs in `real-i2v` (see README.md here).

    python examples/make_examples.py ../shared/real-i2v

Images are re-saved as JPEG (quality 90); the 16-frame GIF videos are re-encoded as H.264 MP4 (8 fps, CRF 27,
yuv420p); walk-colour-swap.mp4 is walk.mp4 under the robustness check's `channel_swap` corruption (severity 1,
seed 1). The encoder's output may differ by a few bytes between FFmpeg builds; rewards agree to about 1e-6.
"""

import sys
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageSequence

from icreward.evaluation.robustness import channel_swap

OUT = Path(__file__).resolve().parent
PAIRS = {"walk": ("walk0.png", "walk0.gif"), "bird": ("bird000.jpeg", "bird000.gif")}


def gif_frames(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8."""
    with Image.open(path) as im:
        return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)])


def write_mp4(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "27", "preset": "veryslow"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def main(source: Path) -> None:
    for name, (image, video) in PAIRS.items():
        with Image.open(source / image) as im:
            im.convert("RGB").save(OUT / f"{name}.jpg", quality=90, optimize=True)
        frames = gif_frames(source / video)
        write_mp4(OUT / f"{name}.mp4", frames)
        if name == "walk":
            clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
            swapped = channel_swap(clip, 1.0, np.random.default_rng(1)).clamp(0, 1).permute(0, 2, 3, 1).numpy()
            write_mp4(OUT / "walk-colour-swap.mp4", (swapped * 255).round().astype(np.uint8))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/real-i2v"))
