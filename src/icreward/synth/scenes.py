"""Conditioning images as layers: a background canvas larger than the frame plus sprites with alpha masks.

A `Scene` is what an I2V model is conditioned on, kept apart in layers so that camera motion, subject motion and
the failure modes can act on each layer: the background (procedural or a user photo), one main textured
subject, and a few smaller objects at other depths. Everything is drawn from a numpy RNG, so a scene is a pure
function of its seed. Coordinates are frame units: the frame spans [-1, 1] (x right, y down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from icreward.synth.textures import background, coords, palette, textured_fill

MARGIN = 1.6  # the background canvas covers [-MARGIN, MARGIN]² frame units, so the camera can pan and zoom out
CANVAS_RES = 1.25  # canvas pixels per frame pixel (some headroom for zooming in)
SPRITE_RES = 1.5  # sprite texture pixels per frame pixel
SHAPE_KINDS = ("ellipse", "superellipse", "blob", "polygon", "star", "composite")
PASTE_SUBJECT_P = 0.7  # chance a photo source gets a procedural subject pasted on (else a cut-out of the photo)


@dataclass
class Sprite:
    """One layer: a square texture with alpha, placed on the frame at frame 0."""

    rgba: torch.Tensor  # (4, n, n) premultiplied colour + alpha; the texture covers [-1, 1]² sprite units
    x: float  # centre in frame units
    y: float
    half: float  # half-extent of the texture square in frame units
    angle: float  # rotation in radians
    depth: float  # parallax factor: 1 = the subject plane, < 1 farther than it, > 1 nearer
    mobility: float = 1.0  # how far the sprite may move on its own (cut-outs of a photo move little)
    kind: str | None = None  # SHAPE_KINDS name of a procedural sprite's outline (for prompts; no effect on pixels)
    name: str | None = None  # what the sprite shows, e.g. an emoji's Unicode name "CAT FACE" (for prompts)


@dataclass
class Scene:
    """A conditioning image in layers. Draw order: background, sprites by increasing depth (subject at 1)."""

    background: torch.Tensor  # (3, C, C) canvas covering [-margin, margin]² frame units
    margin: float  # half-extent of the canvas in frame units (> 1 so the camera can move)
    bg_depth: float  # parallax factor of the background (< 1: it moves less than the subject)
    subject: Sprite
    objects: list[Sprite]  # smaller sprites; depth < 1 behind the subject, > 1 in front of it
    size: int  # frame side in pixels
    light: tuple[float, float, float]  # unit light direction shared by every sprite's shading
    alternate: torch.Tensor | None = None  # (3, C, C) unrelated real content (another photo) for swap failures
    swaps: list[torch.Tensor] | None = None  # (4, h, w) other subjects of the same kind (emoji) for identity swaps
    swap_names: list[str] | None = None  # what each of `swaps` shows (emoji names), for prompts


def canvas_side(size: int) -> int:
    """Pixel side of the background canvas for a frame of `size` pixels (even)."""
    return 2 * math.ceil(size * MARGIN * CANVAS_RES / 2)


def _polar_alpha(rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, kind: str, px: float) -> torch.Tensor:
    """Antialiased alpha of a star-shaped outline R(θ) over sprite coordinates; `px` pixels per sprite unit."""
    rho, theta = (x**2 + y**2).sqrt(), torch.atan2(y, x) - rng.uniform(0, 2 * np.pi)
    if kind in ("ellipse", "superellipse"):
        a, b = rng.uniform(0.5, 0.92), rng.uniform(0.5, 0.92)
        p = 2.0 if kind == "ellipse" else rng.uniform(2.5, 5.0)
        radius = ((theta.cos() / a).abs() ** p + (theta.sin() / b).abs() ** p) ** (-1 / p)
    elif kind == "blob":
        radius = torch.full_like(rho, 0.78)
        for k in range(2, 6):
            radius = radius + 0.78 * rng.uniform(0, 0.16) / math.sqrt(k) * torch.cos(k * theta + rng.uniform(0, 6.3))
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        sector = 2 * np.pi / n
        radius = 0.88 * math.cos(np.pi / n) / torch.cos(torch.remainder(theta, sector) - np.pi / n)
    else:  # star
        n = int(rng.integers(4, 9))
        t = torch.remainder(theta, 2 * np.pi / n) / (2 * np.pi / n)
        inner = 0.9 * rng.uniform(0.35, 0.7)
        radius = inner + (0.9 - inner) * (2 * t - 1).abs() ** rng.uniform(0.7, 1.5)
    return ((radius.clamp(max=0.94) - rho) * px + 0.5).clamp(0, 1)


def shape_alpha(rng: np.random.Generator, n: int, kind: str | None = None) -> torch.Tensor:
    """An `(n, n)` alpha mask of a random shape from SHAPE_KINDS, fitting inside the sprite square."""
    kind = kind or str(rng.choice(SHAPE_KINDS))
    x, y = coords(n, n)
    if kind != "composite":
        return _polar_alpha(rng, x, y, kind, n / 2)
    body_kind, head_kind = rng.choice(SHAPE_KINDS[:5], 2)
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = math.cos(angle), math.sin(angle)
    body = _polar_alpha(rng, (x + 0.2 * dx) / 0.78, (y + 0.2 * dy) / 0.78, str(body_kind), n / 2 * 0.78)
    head = _polar_alpha(rng, (x - 0.5 * dx) / 0.46, (y - 0.5 * dy) / 0.46, str(head_kind), n / 2 * 0.46)
    return torch.maximum(body, head)


def shade(rng: np.random.Generator, rgb: torch.Tensor, alpha: torch.Tensor, light: tuple) -> torch.Tensor:
    """Fake 3D shading of a flat sprite `(3, n, n)`: a dome height field from the mask, Lambert + specular, outline."""
    inside = alpha.numpy() > 0.5
    dist = ndimage.distance_transform_edt(inside).astype(np.float32)  # pixels from the edge
    dmax = max(float(dist.max()), 1.0) * rng.uniform(0.5, 1.0)
    height = 1 - (1 - np.clip(dist / dmax, 0, 1)) ** 2
    gy, gx = np.gradient(height)
    bump = rng.uniform(0.5, 2.0) * dmax
    normal = np.stack([-gx * bump, -gy * bump, np.ones_like(gx)])
    normal /= np.linalg.norm(normal, axis=0, keepdims=True)
    lx, ly, lz = light
    diffuse = np.clip(normal[0] * lx + normal[1] * ly + normal[2] * lz, 0, 1)
    half_vec = np.array([lx, ly, lz + 1.0]) / np.linalg.norm([lx, ly, lz + 1.0])
    spec = np.clip(np.tensordot(half_vec, normal, axes=1), 0, 1) ** rng.uniform(8, 40) * rng.uniform(0, 0.5)
    ambient = rng.uniform(0.35, 0.7)
    light_term = (ambient + (1 - ambient) * diffuse).astype(np.float32)
    out = rgb * torch.from_numpy(light_term) + torch.from_numpy(spec.astype(np.float32))
    if rng.random() < 0.6:
        ring = torch.from_numpy((dist < rng.uniform(1.0, 3.0)).astype(np.float32))
        ink = torch.tensor(rng.uniform(0, 0.25, 3), dtype=torch.float32).view(3, 1, 1)
        out = out * (1 - ring) + ink * ring
    return out.clamp(0, 1)


def _marks(rng: np.random.Generator, rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """A few small contrasting discs inside the shape (eyes, buttons, spots): identity detail for the subject."""
    n = alpha.shape[-1]
    x, y = coords(n, n)
    inside = torch.nonzero(alpha > 0.99)
    if len(inside) == 0:
        return rgb
    colour = 1 - rgb[:, alpha > 0.5].mean(1).view(3, 1, 1)
    for _ in range(int(rng.integers(1, 4))):
        i, j = inside[int(rng.integers(len(inside)))].tolist()
        r = rng.uniform(0.05, 0.14)
        disc = (((x - x[i, j]) ** 2 + (y - y[i, j]) ** 2).sqrt() < r).float() * alpha
        rgb = rgb * (1 - disc) + colour * disc
    return rgb


def make_sprite_texture(
    rng: np.random.Generator, n: int, light: tuple, detail: bool = True, alpha: torch.Tensor | None = None
) -> torch.Tensor:
    """A textured, shaded shape `(4, n, n)` (premultiplied). `alpha` keeps a given outline instead of a new one."""
    alpha = shape_alpha(rng, n) if alpha is None else alpha
    x, y = coords(n, n)
    rgb = textured_fill(rng, x, y, palette(rng))
    if detail and rng.random() < 0.6:
        rgb = _marks(rng, rgb, alpha)
    rgb = shade(rng, rgb, alpha, light)
    return torch.cat([rgb * alpha, alpha[None]])


def sprite_pixels(half: float, size: int) -> int:
    """Texture side (pixels) of a sprite of half-extent `half` frame units in a frame of `size` pixels."""
    return max(8, math.ceil(SPRITE_RES * half * size))


def _random_light(rng: np.random.Generator) -> tuple[float, float, float]:
    """A unit light direction from the front, mostly from above."""
    v = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.3), rng.uniform(0.5, 1.2)])
    return tuple(float(c) for c in v / np.linalg.norm(v))


def _subject(rng: np.random.Generator, size: int, light: tuple) -> Sprite:
    """The main subject: 35-75% of the frame wide, anywhere that keeps most of it in the frame."""
    half = rng.uniform(0.35, 0.75)
    x, y = rng.uniform(-0.6, 0.6, 2) * (1 - half)
    n = sprite_pixels(half, size)
    kind = str(rng.choice(SHAPE_KINDS))  # the very draw `shape_alpha` would make: the same stream, now recorded
    rgba = make_sprite_texture(rng, n, light, alpha=shape_alpha(rng, n, kind))
    return Sprite(rgba, float(x), float(y), half, rng.uniform(-0.35, 0.35), 1.0, kind=kind)


def _objects(
    rng: np.random.Generator,
    size: int,
    light: tuple,
    subject: Sprite,
    bg_depth: float,
    n: int,
    texture: torch.Tensor | None = None,
) -> list:
    """`n` small objects over the whole canvas: most between background and subject, some in front of it.
    `texture` `(4, h, w)` gives their look (else a new procedural one each)."""
    objects = []
    for _ in range(n):
        half = rng.uniform(0.05, 0.18)
        in_front = rng.random() < 0.15
        x, y = rng.uniform(-MARGIN * 0.8, MARGIN * 0.8, 2)
        dx, dy = x - subject.x, y - subject.y
        reach, dist = subject.half * 0.9 + half, math.hypot(dx, dy) + 1e-6
        if in_front and dist < reach:  # keep nearer objects off the subject
            x, y = subject.x + dx / dist * reach, subject.y + dy / dist * reach
        depth = rng.uniform(1.05, 1.3) if in_front else rng.uniform(bg_depth, 0.97)
        n_pixels = sprite_pixels(half, size)
        rgba = (
            make_sprite_texture(rng, n_pixels, light, detail=False)
            if texture is None
            else fit_texture(texture, n_pixels)
        )
        objects.append(Sprite(rgba, float(x), float(y), half, rng.uniform(-np.pi, np.pi), depth))
    return objects


def procedural_scene(rng: np.random.Generator, size: int) -> Scene:
    """A procedural conditioning image: background, one main textured subject and 2-6 smaller objects."""
    bg_depth = rng.uniform(0.35, 0.95)
    canvas = background(rng, canvas_side(size), MARGIN)
    light = _random_light(rng)
    subject = _subject(rng, size, light)
    objects = _objects(rng, size, light, subject, bg_depth, int(rng.integers(2, 7)))
    return Scene(canvas, MARGIN, bg_depth, subject, objects, size, light)


def photo_canvas(rng: np.random.Generator, image: torch.Tensor, side: int) -> torch.Tensor:
    """Resize a photo `(3, H, W)` to cover a `side`² canvas (a little larger, at random) and crop it at random."""
    h, w = image.shape[-2:]
    scale = side * rng.uniform(1.0, 1.25) / min(h, w)
    nh, nw = max(side, round(h * scale)), max(side, round(w * scale))
    resized = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = int(rng.integers(0, nh - side + 1)), int(rng.integers(0, nw - side + 1))
    return resized[0, :, top : top + side, left : left + side].clamp(0, 1).contiguous()


def _cutout_subject(rng: np.random.Generator, scene_bg: torch.Tensor, size: int) -> tuple[Sprite, torch.Tensor]:
    """Cut a soft-edged region of the photo out as the subject; the hole left behind is filled by a normalised blur
    of its surroundings (the smear an inpainting model leaves), seen only once the subject moves."""
    side = scene_bg.shape[-1]
    half = rng.uniform(0.2, 0.35)
    x, y = rng.uniform(-0.4, 0.4, 2)
    n = sprite_pixels(half, size)
    alpha = shape_alpha(rng, n, str(rng.choice(["ellipse", "blob", "superellipse"])))
    sx, sy = coords(n, n)
    grid = torch.stack([(x + sx * half) / MARGIN, (y + sy * half) / MARGIN], -1)[None]  # (1, n, n, 2)
    patch = F.grid_sample(scene_bg[None], grid, mode="bilinear", align_corners=False)[0]
    cx, cy = coords(side, side, MARGIN)
    hole_grid = torch.stack([(cx - x) / half, (cy - y) / half], -1)[None]
    hole = F.grid_sample(alpha[None, None], hole_grid, mode="bilinear", align_corners=False)[0, 0]
    # fill only well inside the opaque part, so the soft edge still blends the patch with the photo it came from
    hole = torch.from_numpy(ndimage.grey_erosion(((hole - 0.5) * 2).clamp(0, 1).numpy(), size=3))
    sigma = half * side / MARGIN / 3
    keep = (1 - hole).numpy()
    num = np.stack([ndimage.gaussian_filter(c * keep, sigma) for c in scene_bg.numpy()])
    den = ndimage.gaussian_filter(keep, sigma)[None] + 1e-4
    filled = torch.from_numpy((num / den).astype(np.float32))
    filled = filled * (1 + 0.06 * torch.from_numpy(rng.standard_normal((1, side, side)).astype(np.float32)))
    bg = (scene_bg * (1 - hole) + filled.clamp(0, 1) * hole).contiguous()
    sprite = Sprite(torch.cat([patch * alpha, alpha[None]]), float(x), float(y), half, 0.0, 1.0, mobility=0.3)
    return sprite, bg


def photo_scene(
    rng: np.random.Generator, image: torch.Tensor, size: int, alternate: torch.Tensor | None = None
) -> Scene:
    """A conditioning image from a photo `(3, H, W)`: a procedural subject pasted on it, or a cut-out subject.

    `alternate` (another photo) is kept, resized to the canvas, as unrelated real content for swap failures.
    """
    side = canvas_side(size)
    canvas = photo_canvas(rng, image, side)
    light = _random_light(rng)
    bg_depth = rng.uniform(0.5, 0.95)
    if rng.random() < PASTE_SUBJECT_P:
        subject = _subject(rng, size, light)
    else:
        subject, canvas = _cutout_subject(rng, canvas, size)
    objects = _objects(rng, size, light, subject, bg_depth, int(rng.integers(0, 4)))
    alt = None if alternate is None else photo_canvas(rng, alternate, side)
    return Scene(canvas, MARGIN, bg_depth, subject, objects, size, light, alt)


def sprite_scene(
    rng: np.random.Generator,
    image: torch.Tensor,
    size: int,
    subject: torch.Tensor,
    objects: list[torch.Tensor],
    swaps: list[torch.Tensor] | None = None,
    alternate: torch.Tensor | None = None,
) -> Scene:
    """A conditioning image from a photo `(3, H, W)` with given sprite textures on it (e.g. emoji): `subject`
    `(4, h, w)` premultiplied as the main subject (35-65% of the frame wide, upright within ±0.2 rad) and each of
    `objects` as a small layer behind or in front of it. `swaps` are kept for identity-swap failures."""
    side = canvas_side(size)
    canvas = photo_canvas(rng, image, side)
    light = _random_light(rng)
    bg_depth = rng.uniform(0.5, 0.95)
    half = rng.uniform(0.35, 0.65)
    x, y = rng.uniform(-0.6, 0.6, 2) * (1 - half)
    texture = fit_texture(subject, sprite_pixels(half, size))
    main = Sprite(texture, float(x), float(y), half, rng.uniform(-0.2, 0.2), 1.0)
    placed = []
    for rgba in objects:
        sprite = _objects(rng, size, light, main, bg_depth, 1, texture=rgba)[0]
        placed.append(replace(sprite, angle=sprite.angle * 0.1))
    alt = None if alternate is None else photo_canvas(rng, alternate, side)
    return Scene(canvas, MARGIN, bg_depth, main, placed, size, light, alt, swaps)


def fit_texture(rgba: torch.Tensor, n: int) -> torch.Tensor:
    """A premultiplied `(4, h, w)` texture resized to the sprite square `(4, n, n)`."""
    out = F.interpolate(rgba[None], size=(n, n), mode="bilinear", antialias=True, align_corners=False)[0]
    return out.clamp(0, 1).contiguous()


def unrelated_scene(rng: np.random.Generator, scene: Scene) -> Scene:
    """Different content of the same kind: the alternate photo with a new subject, else a new procedural scene."""
    if scene.alternate is None:
        return procedural_scene(rng, scene.size)
    light = _random_light(rng)
    subject = _subject(rng, scene.size, light)
    return replace(scene, background=scene.alternate, subject=subject, objects=[], light=light, alternate=None)
