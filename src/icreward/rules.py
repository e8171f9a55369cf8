"""The rules of the domain, each in one place that everything calls.

What a pair label means, when two scores tie, which source image a record belongs to, the names of the failure modes,
how grey is computed from colour, and the name of the shipped model. Pure Python: importing it costs nothing.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_MODEL = "default"  # the checkpoint shipped inside the package; `icreward.load()` and every command's default

# Pair labels: which video of a pair is more consistent with the image.
LABELS = ("A", "B", "tie")
LABEL_VALUES = {"A": 1, "B": -1, "tie": 0}  # +1: A preferred, -1: B preferred, 0: tie (the sign of r_A - r_B)
LABEL_NAMES = {value: name for name, value in LABEL_VALUES.items()}

# Frames sampled from a video file (`num_frames`): at least MIN_FRAMES, as consistency over time needs two, and at
# most MAX_FRAMES, as every sampled frame is kept in memory (float32 at the working size: 256 frames of 512 x 288 are
# 450 MB). Scorers take tensors of any T >= 1 (`scorer(image, video)`); these bounds are for decoding files.
MIN_FRAMES = 2
MAX_FRAMES = 256

# Threads decoding media ahead of the model while it runs (`score_items`, `icreward score --decode-workers`); 0 decodes
# in the calling thread, for one thread per process when several processes share a machine's cores.
DECODE_WORKERS = 2

LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights of R, G, B in grey

# The `mode` of a consistent video and of a still one in `icreward synth`'s records; the failure modes themselves
# (names, weights, renderers) are the registry `icreward.synth.failures.FAILURE_MODES`.
CONSISTENT_MODE = "none"
FROZEN_MODE = "frozen"
DEFAULT_HOLDOUT_MODES = ("flicker", "subject_duplicate")  # the study's failure modes kept out of training


def label_from_scores(score_a: float, score_b: float, margin: float) -> str:
    """The label of a scored pair: "tie" when `|score_a - score_b| <= margin`, else the video with the higher score.

    A gap equal to the margin up to float rounding (0.8 - 0.7 against 0.1) counts as a tie: this is the one float
    edge every part of icreward uses (manifests, synth, the study's added pairs).
    """
    gap = abs(score_a - score_b)
    if gap <= margin or math.isclose(gap, margin, rel_tol=1e-9):
        return "tie"
    return "A" if score_a > score_b else "B"


def label_value(label: str) -> int:
    """+1 / -1 / 0 for the pair label "A" / "B" / "tie"."""
    return LABEL_VALUES[label]


def source_image(record: Any) -> str:
    """The source image a manifest record was made from: its `source` field where given, else its image file.

    Every video made from one source image belongs together: k-fold folds, bootstrap clusters, in-batch negatives
    and the study's added pairs all group by it.
    """
    source = record.extra.get("source")
    return str(source) if source is not None else str(record.image)


def pair_failure_modes(mode_a: str | None, mode_b: str | None) -> list[str]:
    """The failure modes shown by a pair's two videos (from synth's `mode_a` / `mode_b`), sorted; none when both are
    consistent or the record does not say."""
    return sorted({m for m in (mode_a, mode_b) if isinstance(m, str) and m and m != CONSISTENT_MODE})
