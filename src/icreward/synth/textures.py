"""Procedural colour palettes, noise, patterns and backgrounds: torch tensors in [0, 1] drawn from a numpy RNG.

Every function takes the RNG it draws from, so a scene is a pure function of its seed. Coordinates are in
"frame units": the video frame spans [-1, 1] on both axes (x to the right, y down), so pattern frequencies
mean the same thing on a sprite, on the frame and on the larger background canvas.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
import torch.nn.functional as F

BACKGROUND_KINDS = ("gradient", "horizon", "noise", "stripes", "tiles", "blobs")
PATTERN_KINDS = ("noise", "stripes", "checker", "spots", "rings", "gradient", "marble")


def palette(rng: np.random.Generator, k: int | None = None) -> torch.Tensor:
    """A harmonious colour palette `[k, 3]` (analogous, complementary, triadic, monochrome or free hues)."""
    k = k or int(rng.integers(3, 6))
    base = rng.random()
    scheme = rng.choice(["analogous", "complementary", "triadic", "mono", "free"])
    if scheme == "analogous":
        hues = base + rng.uniform(-0.09, 0.09, k)
    elif scheme == "complementary":
        hues = base + 0.5 * rng.integers(0, 2, k) + rng.uniform(-0.03, 0.03, k)
    elif scheme == "triadic":
        hues = base + rng.integers(0, 3, k) / 3 + rng.uniform(-0.03, 0.03, k)
    elif scheme == "mono":
        hues = base + rng.uniform(-0.02, 0.02, k)
    else:
        hues = rng.random(k)
    sats = rng.uniform(0.1, 0.95, k) * rng.uniform(0.5, 1.0)
    vals = np.linspace(rng.uniform(0.1, 0.45), rng.uniform(0.7, 1.0), k)[rng.permutation(k)]
    colours = [colorsys.hsv_to_rgb(h % 1.0, s, v) for h, s, v in zip(hues, sats, vals, strict=True)]
    return torch.tensor(colours, dtype=torch.float32)


def hsv(h: float, s: float, v: float) -> torch.Tensor:
    """One colour from hue (wrapped), saturation and value, as `[3, 1, 1]` to broadcast over an image."""
    return torch.tensor(colorsys.hsv_to_rgb(float(h) % 1.0, float(s), float(v)), dtype=torch.float32).view(3, 1, 1)


def coords(h: int, w: int, extent: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates `(x, y)`, each `[h, w]`, spanning [-extent, extent]."""
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w * 2 - 1
    y, x = torch.meshgrid(ys * extent, xs * extent, indexing="ij")
    return x, y


def value_noise(rng: np.random.Generator, h: int, w: int, cells: float, octaves: int = 1) -> torch.Tensor:
    """Smooth (fractal when `octaves > 1`) value noise `[h, w]` normalised to [0, 1]; `cells` lattice cells a side."""
    out = torch.zeros(h, w)
    amp = 1.0
    for o in range(octaves):
        n = max(2, int(round(cells * 2**o)) + 1)
        lattice = torch.from_numpy(rng.random((1, 1, n, n)).astype(np.float32))
        out += amp * F.interpolate(lattice, size=(h, w), mode="bicubic", align_corners=True)[0, 0]
        amp *= 0.5
    return (out - out.min()) / (out.max() - out.min() + 1e-6)


def palette_map(v: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Map a scalar field `[h, w]` in [0, 1] through a palette `[k, 3]` by linear interpolation → `[3, h, w]`."""
    k = colours.shape[0]
    pos = v.clamp(0, 1) * (k - 1)
    lo = pos.floor().long().clamp(max=k - 2) if k > 1 else torch.zeros_like(pos, dtype=torch.long)
    frac = (pos - lo).unsqueeze(-1) if k > 1 else torch.zeros_like(pos).unsqueeze(-1)
    hi = (lo + 1).clamp(max=k - 1)
    rgb = colours[lo] * (1 - frac) + colours[hi] * frac  # (h, w, 3)
    return rgb.permute(2, 0, 1).contiguous()


def _rotate(x: torch.Tensor, y: torch.Tensor, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return c * x + s * y, -s * x + c * y


def pattern(rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, kind: str | None = None) -> torch.Tensor:
    """A scalar pattern field in [0, 1] over coordinates `x, y` (`[h, w]`, frame units); `kind` from PATTERN_KINDS."""
    kind = kind or str(rng.choice(PATTERN_KINDS))
    h, w = x.shape
    extent = float(x.abs().max())
    u, v = _rotate(x, y, rng.uniform(0, np.pi))
    freq = rng.uniform(2.0, 9.0)
    if kind == "noise":
        return value_noise(rng, h, w, cells=rng.uniform(2, 6) * extent, octaves=int(rng.integers(1, 5)))
    if kind == "stripes":
        wave = value_noise(rng, h, w, cells=2 * extent) * rng.uniform(0, 2.5)
        sharp = rng.uniform(1, 8)
        return torch.sigmoid(sharp * torch.sin(np.pi * freq * u + wave))
    if kind == "checker":
        sharp = rng.uniform(2, 10)
        return torch.sigmoid(sharp * torch.sin(np.pi * freq * u) * torch.sin(np.pi * freq * v))
    if kind == "spots":
        n = int(rng.integers(5, 40))
        pts = torch.from_numpy(rng.uniform(-extent, extent, (n, 2)).astype(np.float32))
        radius = rng.uniform(0.03, 0.2) * (1 + extent) / 2
        d = ((x[None] - pts[:, 0, None, None]) ** 2 + (y[None] - pts[:, 1, None, None]) ** 2).sqrt().amin(0)
        return torch.sigmoid((radius - d) * 60)
    if kind == "rings":
        cx, cy = rng.uniform(-0.5, 0.5, 2)
        r = ((x - cx) ** 2 + (y - cy) ** 2).sqrt()
        return 0.5 + 0.5 * torch.sin(np.pi * freq * r + value_noise(rng, h, w, cells=2 * extent) * 2)
    if kind == "gradient":
        return ((u / (extent + 1e-6)) * 0.5 + 0.5 + 0.15 * (value_noise(rng, h, w, 3 * extent) - 0.5)).clamp(0, 1)
    warp = value_noise(rng, h, w, cells=3 * extent, octaves=3) * rng.uniform(2, 6)  # marble
    return 0.5 + 0.5 * torch.sin(np.pi * freq * u * 0.5 + warp)


def textured_fill(rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """A patterned colour fill `[3, h, w]`: a pattern through (a part of) the palette, with fine grain."""
    k = colours.shape[0]
    take = rng.permutation(k)[: int(rng.integers(2, k + 1))]
    rgb = palette_map(pattern(rng, x, y), colours[torch.from_numpy(take)])
    h, w = x.shape
    grain = value_noise(rng, h, w, cells=max(4.0, w / 6)) - 0.5
    return (rgb * (1 + rng.uniform(0.02, 0.15) * grain)).clamp(0, 1)


def _horizon(rng: np.random.Generator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sky gradient over a textured ground with a hilly horizon, distant hills and sometimes a sun."""
    h, w = x.shape
    extent = float(x.abs().max())
    sky_hue = rng.choice([0.58, 0.6, 0.55, 0.08, 0.95, 0.0]) + rng.uniform(-0.03, 0.03)
    top = hsv(sky_hue, rng.uniform(0.2, 0.8), rng.uniform(0.4, 0.95))
    low = hsv(sky_hue + rng.uniform(-0.1, 0.1), rng.uniform(0.05, 0.4), rng.uniform(0.7, 1.0))
    t = ((y + extent) / (2 * extent)).clamp(0, 1).unsqueeze(0)
    sky = top * (1 - t) + low * t
    sky = sky * (1 + 0.08 * (value_noise(rng, h, w, cells=3 * extent, octaves=3) - 0.5))
    horizon_y = rng.uniform(-0.4, 0.5)
    out = sky
    if rng.random() < 0.6:
        sx, sy = rng.uniform(-0.8, 0.8), horizon_y - rng.uniform(0.2, 0.7)
        d = ((x - sx) ** 2 + (y - sy) ** 2).sqrt()
        sun = hsv(rng.uniform(0.05, 0.17), rng.uniform(0, 0.6), 1.0)
        glow = (torch.sigmoid((rng.uniform(0.06, 0.18) - d) * 80) + 0.3 * torch.exp(-d * 4)).clamp(0, 1)
        out = out * (1 - glow) + sun * glow
    layers = int(rng.integers(1, 3))
    for i in range(layers, -1, -1):
        hills = value_noise(rng, 1, w, cells=rng.uniform(2, 6))[0] - 0.5
        line = horizon_y - 0.15 * i + rng.uniform(0.05, 0.35) * hills
        mask = torch.sigmoid((y - line[None, :]) * h / (2 * extent) * 1.5).unsqueeze(0)
        if i == 0:
            fill = textured_fill(rng, x, y, palette(rng))
        else:
            haze = hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.7))
            fill = haze * (0.9 + 0.2 * value_noise(rng, h, w, 4 * extent))
        out = out * (1 - mask) + fill * mask
    return out


def background(rng: np.random.Generator, side: int, extent: float, kind: str | None = None) -> torch.Tensor:
    """A square background canvas `[3, side, side]` covering [-extent, extent]² frame units."""
    kind = kind or str(rng.choice(BACKGROUND_KINDS))
    x, y = coords(side, side, extent)
    colours = palette(rng)
    if kind == "horizon":
        out = _horizon(rng, x, y)
    elif kind == "gradient":
        if rng.random() < 0.5:
            t = pattern(rng, x, y, "gradient")
        else:
            cx, cy = rng.uniform(-0.7, 0.7, 2)
            t = (((x - cx) ** 2 + (y - cy) ** 2).sqrt() / rng.uniform(1.0, 2.5)).clamp(0, 1)
        out = palette_map(t, colours[: int(rng.integers(2, colours.shape[0] + 1))])
    elif kind == "tiles":
        n = rng.uniform(3, 10)
        u, v = _rotate(x, y, rng.choice([0.0, rng.uniform(0, np.pi / 2)]))
        i, j = (u * n / 2).floor().long() % 16, (v * n / 2).floor().long() % 16
        table = torch.from_numpy(rng.integers(0, colours.shape[0], (16, 16)))
        out = colours[table[i, j]].permute(2, 0, 1) * (1 + 0.1 * (value_noise(rng, side, side, 6 * extent) - 0.5))
        fu, fv = (u * n / 2) % 1, (v * n / 2) % 1
        grout = rng.uniform(0.02, 0.12)
        edge = ((fu < grout) | (fv < grout)).float().unsqueeze(0)
        out = out * (1 - edge) + colours[int(rng.integers(colours.shape[0]))].view(3, 1, 1) * 0.6 * edge
    elif kind == "blobs":
        out = colours[0].view(3, 1, 1).expand(3, side, side).clone()
        for _ in range(int(rng.integers(6, 30))):
            cx, cy = rng.uniform(-extent, extent, 2)
            r = rng.uniform(0.05, 0.5)
            a = torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r**2)).unsqueeze(0) * rng.uniform(0.3, 1.0)
            out = out * (1 - a) + colours[int(rng.integers(colours.shape[0]))].view(3, 1, 1) * a
    elif kind == "stripes":
        out = palette_map(pattern(rng, x, y, "stripes"), colours) * 0.7 + textured_fill(rng, x, y, colours) * 0.3
    else:  # noise
        out = palette_map(pattern(rng, x, y, str(rng.choice(["noise", "marble"]))), colours)
    if rng.random() < 0.4:
        overlay = textured_fill(rng, x, y, palette(rng))
        out = out * (1 - (a := rng.uniform(0.1, 0.3))) + overlay * a
    out = out * (1 + rng.uniform(0.02, 0.1) * (value_noise(rng, side, side, cells=side / 5) - 0.5))
    if rng.random() < 0.4:
        out = out * (1 - rng.uniform(0.1, 0.4) * ((x**2 + y**2) / (2 * extent**2))).unsqueeze(0)
    return out.clamp(0, 1).contiguous()
