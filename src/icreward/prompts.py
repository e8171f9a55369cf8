"""What a prompt asks of a video's motion: the camera move (VBench-I2V's seven phrases) and the subject's motion.

One place for the words, shared by `synth` (which writes prompts from what it rendered), the weight-free
`camera-motion` metric (which judges the measured flow against the prompt's camera words) and the text benchmarks.

Directions are those of the camera, as VBench-I2V phrases them; the image content moves the other way. In frame
coordinates (x right, y down), `CAMERA_EFFECT[move]` is the sign of the content's motion `(dx, dy, zoom)`: "camera pans
left" moves the content right (+x), "camera tilts up" moves it down (+y), "camera zooms in" magnifies it (+zoom).
VBench-I2V's camera_motion dimension reads its CoTracker tracks the same way (edge points moving left: pan_right;
top edge up and bottom edge down: zoom_in).
"""

from __future__ import annotations

import re

CAMERA_MOVES = ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "static")
# VBench-I2V appends exactly these to the caption after a comma (`vbench2_i2v_full_info.json`).
CAMERA_PHRASES = {
    "pan_left": "camera pans left",
    "pan_right": "camera pans right",
    "tilt_up": "camera tilts up",
    "tilt_down": "camera tilts down",
    "zoom_in": "camera zooms in",
    "zoom_out": "camera zooms out",
    "static": "camera static",
}
CAMERA_EFFECT = {  # sign of the content's (dx, dy, zoom) in frame coordinates under each camera move
    "pan_left": (1, 0, 0),
    "pan_right": (-1, 0, 0),
    "tilt_up": (0, 1, 0),
    "tilt_down": (0, -1, 0),
    "zoom_in": (0, 0, 1),
    "zoom_out": (0, 0, -1),
    "static": (0, 0, 0),
}
OPPOSITE_MOVE = {
    "pan_left": "pan_right",
    "pan_right": "pan_left",
    "tilt_up": "tilt_down",
    "tilt_down": "tilt_up",
    "zoom_in": "zoom_out",
    "zoom_out": "zoom_in",
}
SUBJECT_DIRECTIONS = ("left", "right", "up", "down")
SUBJECT_EFFECT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # the subject's own (dx, dy)

# Accepted wordings of each camera move beyond VBench's own ("the camera slowly pans to the left", "panning left",
# "static camera", "the camera is still", "zoom-in shot"). Checked in this order; the first match wins.
_CAMERA_PATTERNS = [
    ("pan_left", r"\bpan(?:s|ning|ned)?\s+(?:to\s+the\s+)?left\b"),
    ("pan_right", r"\bpan(?:s|ning|ned)?\s+(?:to\s+the\s+)?right\b"),
    ("tilt_up", r"\btilt(?:s|ing|ed)?\s+up(?:ward|wards)?\b"),
    ("tilt_down", r"\btilt(?:s|ing|ed)?\s+down(?:ward|wards)?\b"),
    ("zoom_in", r"\bzoom(?:s|ing|ed)?[\s-]+in\b"),
    ("zoom_out", r"\bzoom(?:s|ing|ed)?[\s-]+out\b"),
    ("static", r"\bcamera\s+(?:is\s+)?(?:static|still|fixed|stationary)\b|\b(?:static|still|fixed)\s+camera\b"),
]
_SUBJECT_PATTERN = re.compile(
    r"\b(?:moves?|moving|walks?|walking|runs?|running|drifts?|drifting|slides?|sliding|flies|flying|swims?|"
    r"swimming|goes|going|rises?|rising|falls?|falling|sinks?|sinking)\s+(?:to\s+the\s+|towards?\s+the\s+)?"
    r"(left|right|up|down|upwards?|downwards?)\b"
)


def camera_move(prompt: str | None) -> str | None:
    """The camera move a prompt asks for (a `CAMERA_MOVES` name), or None when it names none."""
    if not prompt:
        return None
    text = prompt.lower()
    for move, pattern in _CAMERA_PATTERNS:
        if re.search(pattern, text):
            return move
    return None


def subject_direction(prompt: str | None) -> str | None:
    """The direction a prompt asks the subject to move in (`SUBJECT_DIRECTIONS`), or None when it names none."""
    if not prompt:
        return None
    match = _SUBJECT_PATTERN.search(prompt.lower())
    if match is None:
        return None
    word = match.group(1)
    return "up" if word.startswith("up") else "down" if word.startswith("down") else word


def with_camera(caption: str, move: str) -> str:
    """`caption` with VBench-I2V's camera phrase appended after a comma: "a cat on a sofa, camera pans left"."""
    return f"{caption.rstrip(' ,.')}, {CAMERA_PHRASES[move]}"
