"""What a synthetic video shows, in words: its camera move, its subject's motion, its subject, and a prompt.

Every video `icreward synth` renders gets a description computed from the trajectory its frames actually show
(`icreward.synth.failures.render_described`), and the source's prompt is the description of its first video
(`_v0`, always consistent). The words are those of `icreward.prompts`, so `prompts.camera_move(prompt)` and
`prompts.subject_direction(prompt)` read back exactly the `camera` and `subject_motion` written.

Camera move (`camera_class`): the net content motion between the first and the last frame, as the background moves
(its parallax depth `bg_depth` scales the camera path: a far background moves less than the camera): `dx, dy` =
-(camera pan x, pan y change) * depth in frame units (the frame spans [-1, 1]; content moves opposite to the camera)
and `dz` = (log zoom change) * depth (content grows on a zoom in; a log zoom of 0.05 moves the frame edge by about
0.05 frame units, so the three are compared directly). Roll is ignored. The largest of |dx|, |dy|, |dz| names the
move when it exceeds `CAMERA_THRESHOLD` (0.05), else the camera is "static". A mixed move is named by its largest
component; a prompt's move still counts as followed (`camera_matches`) by a video whose component of that move has
the right sign, passes the threshold and is at least 1 / `DOMINANCE` (1 / 1.5) of the largest one.

Subject motion (`subject_direction`): the subject's own net displacement (`traj.subject[-1, :2]`, relative to the
scene, not the frame): its larger axis names the direction ("left", "right", "up", "down"; y grows downwards) when
it exceeds `SUBJECT_THRESHOLD` (0.05 frame units), else None (a prompt then says nothing about the subject's
motion).
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch

from icreward import prompts
from icreward.synth.scenes import Scene, Sprite

CAMERA_THRESHOLD = 0.05  # net content motion (frame units, or log zoom) below which the camera counts as static
SUBJECT_THRESHOLD = 0.05  # net own displacement of the subject (frame units) below which it counts as still
DOMINANCE = 1.5  # a component within this ratio of the largest one also counts as followed (mixed moves)
CANONICAL_PAN = 0.3  # camera pan / tilt over a whole canonical move (frame units)
CANONICAL_ZOOM = 0.25  # log zoom over a whole canonical move
MOTION_VERBS = ("moving", "drifting", "sliding")  # synonyms `prompts.subject_direction` reads
DIRECTION_WORDS = {"left": "to the left", "right": "to the right", "up": "upwards", "down": "downwards"}
SHAPE_WORDS = {
    "ellipse": "oval object",
    "superellipse": "rounded object",
    "blob": "blob-shaped object",
    "polygon": "angular object",
    "star": "star-shaped object",
    "composite": "two-part object",
}
TEXT_MISMATCH_SUBJECT = 0.5  # text score of a video whose subject moves, but in another direction than asked


def content_motion(camera: np.ndarray, depth: float) -> tuple[float, float, float]:
    """Net content motion `(dx, dy, dz)` of a layer at parallax `depth` under a camera path `(T, 4)`."""
    net = np.asarray(camera)[-1, :3] - np.asarray(camera)[0, :3]
    return float(-net[0] * depth), float(-net[1] * depth), float(net[2] * depth)


def _move_of(component: int, sign: float) -> str:
    effect = [0, 0, 0]
    effect[component] = 1 if sign > 0 else -1
    return next(m for m, e in prompts.CAMERA_EFFECT.items() if list(e) == effect)


def camera_class(motion: tuple[float, float, float]) -> str:
    """The `prompts.CAMERA_MOVES` name of a net content motion `(dx, dy, dz)` (see the module docstring)."""
    size = np.abs(motion)
    k = int(np.argmax(size))
    return "static" if size[k] <= CAMERA_THRESHOLD else _move_of(k, motion[k])


def camera_matches(move: str, motion: tuple[float, float, float]) -> bool:
    """Whether a net content motion follows a prompt's camera `move` (its class, or a co-dominant component)."""
    cls = camera_class(motion)
    if cls == move or move == "static" or cls == "static":
        return cls == move
    k = [abs(e) for e in prompts.CAMERA_EFFECT[move]].index(1)
    value = motion[k] * prompts.CAMERA_EFFECT[move][k]  # positive: the move's own sign
    return value > CAMERA_THRESHOLD and value * DOMINANCE >= max(abs(m) for m in motion)


def subject_direction(subject: np.ndarray) -> str | None:
    """The `prompts.SUBJECT_DIRECTIONS` word of the subject's own net displacement (`(T, 4)` offsets), or None."""
    dx, dy = np.asarray(subject)[-1, :2] - np.asarray(subject)[0, :2]
    if max(abs(dx), abs(dy)) <= SUBJECT_THRESHOLD:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def canonical_camera(move: str, frames: int, pan: float = CANONICAL_PAN, zoom: float = CANONICAL_ZOOM) -> np.ndarray:
    """A camera path `(T, 4)` doing exactly `move`: `pan` frame units of pan / tilt or `zoom` of log zoom over the
    clip, along a smoothstep (ease in and out), no roll. For a background at depth 1 its `content_motion` is
    `CAMERA_EFFECT[move]` times (pan, pan, zoom)."""
    u = np.linspace(0.0, 1.0, frames)
    progress = u * u * (3 - 2 * u)
    dx, dy, dz = prompts.CAMERA_EFFECT[move]
    camera = np.zeros((frames, 4))
    camera[:, 0], camera[:, 1], camera[:, 2] = -dx * pan * progress, -dy * pan * progress, dz * zoom * progress
    return camera


def colour_word(rgba: torch.Tensor) -> str:
    """A colour name for a premultiplied texture `(4, n, n)`: its alpha-weighted mean colour's hue, or grey tones."""
    rgb = (rgba[:3].sum((1, 2)) / rgba[3].sum().clamp(min=1e-6)).clamp(0, 1).tolist()
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    if v < 0.2:
        return "black"
    if s < 0.18:
        return "white" if v > 0.8 else "grey"
    hue = h * 360
    if hue < 15 or hue >= 340:
        return "red"
    if hue < 45:
        return "brown" if v < 0.6 else "orange"
    names = ((70, "yellow"), (160, "green"), (200, "teal"), (255, "blue"), (290, "purple"), (340, "pink"))
    return next(name for bound, name in names if hue < bound)


def _article(noun: str) -> str:
    if noun.endswith("s") and not noun.endswith("ss"):  # "cherries", "eyeglasses"
        return noun
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def sprite_phrase(sprite: Sprite) -> str | None:
    """What a sprite is, in words ("a cat face", "a red star-shaped object"), or None when unknown (a cut-out)."""
    if sprite.name:
        return _article(sprite.name.lower())
    if sprite.kind:
        return _article(f"{colour_word(sprite.rgba)} {SHAPE_WORDS[sprite.kind]}")
    return None


def prompt_text(subject: str, direction: str | None, move: str, rng: np.random.Generator, named: bool = True) -> str:
    """The prompt of a video: its subject, how that moves (a seeded verb among `MOTION_VERBS`) and the camera phrase,
    e.g. "a cat face moving to the left, camera pans right". `named=False` (a user photo, "the scene") words the
    moving subject as "an object in the scene"."""
    verb = MOTION_VERBS[int(rng.integers(len(MOTION_VERBS)))]
    if direction is None:
        caption = subject
    elif named:
        caption = f"{subject} {verb} {DIRECTION_WORDS[direction]}"
    else:
        caption = f"{subject} with an object {verb} {DIRECTION_WORDS[direction]}"
    return prompts.with_camera(caption, move)


def describe(
    scene: Scene | None,
    camera: np.ndarray | None,
    subject: np.ndarray | None,
    rng: np.random.Generator,
    phrase: str | None = None,
    named: bool | None = None,
) -> dict:
    """The description of a video showing `scene` along a camera path and subject offsets `(T, 4)` (None: a real
    clip, taken as a static camera with no known subject motion). `phrase` names what the video shows (else the
    scene's subject, else "the scene"); `named` says whether that names the subject (default: a phrase was found).
    Returns `{"camera", "camera_motion", "subject_motion", "subject", "subject_named", "prompt"}`."""
    motion = (0.0, 0.0, 0.0) if camera is None or scene is None else content_motion(camera, scene.bg_depth)
    motion = tuple(round(m, 4) + 0.0 for m in motion)  # as written (+ 0.0: no "-0.0")
    direction = None if subject is None else subject_direction(subject)
    if phrase is None and scene is not None:
        phrase = sprite_phrase(scene.subject)
    named = phrase is not None if named is None else named
    subject_words = phrase or "the scene"
    move = camera_class(motion)
    return {
        "camera": move,
        "camera_motion": list(motion),
        "subject_motion": direction,
        "subject": subject_words,
        "subject_named": named,
        "prompt": prompt_text(subject_words, direction, move, rng, named=named),
    }


def text_score(video: dict, source: dict, mode: str, severity: float) -> float:
    """How well a video follows its source's prompt (the description `source` of `_v0`), in [0, 1]:
    0 when its camera does not follow the prompt's move (`camera_matches`), or the prompt asks the subject to move
    and it does not; `TEXT_MISMATCH_SUBJECT` (0.5) when the subject moves in another direction than asked; for
    `subject_swap` when the prompt names the subject, `1 - min(1, 2 * severity)` at most (the share of the swap
    done: a swap completes at severity 0.5); else 1. A prompt that names no subject motion asks for none in
    particular: any subject motion follows it."""
    if not camera_matches(source["camera"], tuple(video["camera_motion"])):
        return 0.0
    score = 1.0
    wanted, shown = source["subject_motion"], video["subject_motion"]
    if wanted is not None and shown is None:
        return 0.0
    if wanted is not None and shown != wanted:
        score = TEXT_MISMATCH_SUBJECT
    if mode == "subject_swap" and source["subject_named"]:
        score = min(score, 1 - min(1.0, 2 * severity))
    return round(score, 4)
