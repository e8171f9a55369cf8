"""A differentiable, weight-free motion field of a video: block phase correlation, a similarity fit, descriptors.

`motion_field(video)` measures how the content of each block moves between consecutive frames; `motion_descriptors`
condenses that into a fixed vector per video for motion and text heads (is there motion, is it plausible, which way
does the camera / the subject go). Everything is batched torch, differentiable w.r.t. the video, and finite for
frozen, two-frame and pure-noise videos.

Frame units: the frame spans [-1, 1] on each axis, x to the right and y down, each axis in units of its own length
(a displacement `dx` of 1 is half the frame's width; in pixels of an H x W frame, `dx * W / 2` and `dy * H / 2`).

Method (`motion_field`):

1. Grey (Rec. 601, `icreward.rules.LUMA`), resized to `size` x `size` (bilinear, antialiased when shrinking).
2. Blocks: a `grid` x `grid` array of overlapping square windows of side `window * size / grid` (rounded to even;
   48 px at the defaults, 1.5 times the block pitch), evenly spaced so that the first and the last touch the frame's
   edges (no padding). The window centres, `MotionField.centres`, are at 24, 51, 77 and 104 px of 128, i.e. -0.625,
   -0.2, 0.2 and 0.625 frame units, at the defaults. Each window has its Hann-weighted mean removed and is
   multiplied by a 2-D (symmetric) Hann window. Displacements up to half a window (24 px at 128, 19% of the
   frame) per step can be measured; beyond about a third of a window the confidence falls.
3. Phase correlation of each window with the same window of the next frame: `r = irfft2(conj(A') B')` with the
   whitened spectra `A' = A / (|A| + eps)` (eps = 1e-3 x the window's mean |A| + 1e-6: a flat window whitens to 0
   and has confidence 0), one `rfft2` per window of every frame, all at once. For content moving by `d` the
   surface peaks at `+d` (indices past half the window wrap round to negative displacements).
4. Sub-pixel peak: a soft-argmax restricted to the 3x3 neighbourhood of the surface's maximum (the maximum picks
   only where to look; the value returned is differentiable): the centroid of the neighbourhood weighted by
   `relu(r)`, i.e. a soft-argmax at temperature 1 on the linear (not exponential) scale. For an ideal phase
   correlation peak (a sampled sinc) this centroid is exactly the sub-pixel shift (Foroosh et al. 2002's estimate).
5. Confidence: the peak's energy `e` (the sum of `relu(r)` over the neighbourhood; about 1 for a clean match, about
   0.2 for unrelated content, under 0.38 in our tests with noise and unrelated photos) mapped to [0, 1] by
   `clamp((e - 0.35) / 0.45, 0, 1)` (a 10 px step at 128 keeps about 0.6).
6. Similarity fit (closed-form weighted least squares, weights `confidence`) of
   `flow(p) = t + zoom * (p - c) + rotation * perp(p - c)`, `perp(x, y) = (-y, x)`, around the weighted centroid `c`
   of the block centres, with a prior of no motion worth 0.1 of a fully confident block (ridge terms 0.1 in the
   translation's and 0.1 x mean |centre|^2 in the zoom's and rotation's denominators): with 16 confident blocks
   that shrinks the motion by 0.6%, and unmatched frames (noise, cuts) give no motion rather than a random one.
   `zoom` is d(log scale) per step (> 0: content grows, camera zooms in); `rotation` is in
   radians per step, > 0 clockwise on screen (x right, y down: a point right of centre moves down).
   `similarity[..., :2]` is the fitted motion at the frame's centre, `t - zoom * c - rotation * perp(c)`, so a pure
   zoom about the centre has no translation however the confidences fall (with equal weights it is the mean flow).
7. `residual = flow - fitted motion` (local motion: the subject relative to the camera).
8. `difference`: mean |grey_{t+1} - grey_t| at `size` x `size`; `brightness`: mean(grey_{t+1}) - mean(grey_t).

Descriptor columns (`MOTION_FEATURES`, `motion_descriptors`), per video, with s_t = similarity[t, :2] the camera-like
translation per step, |.| the Euclidean norm (smoothed, sqrt(x^2 + 1e-12), so gradients stay finite at 0):

- `net_dx`, `net_dy`, `net_zoom`, `net_rotation`: the similarity motion summed over steps (signed; the content's
  net motion: see `icreward.prompts.CAMERA_EFFECT` for what each camera move gives).
- `log_path`: log(sum_t |s_t| + 1e-3), the length of the translation's path.
- `straightness`: |sum_t s_t| / (sum_t |s_t| + 1e-2): 1 for a steady pan, near 0 for jitter, loops or no motion.
- `reversal`: sum_t relu(-s_t . s_{t+1}) / (sum_t |s_t| |s_{t+1}| + 1e-6): the mean of relu(-cos) between consecutive
  translations weighted by their magnitudes (jitter and back-and-forth loops score high, 0 for T < 3).
- `zoom_reversal`: the same for the sign flips of the zoom, sum relu(-z_t z_{t+1}) / (sum |z_t z_{t+1}| + 1e-6).
- `acceleration`: mean_t |s_{t+1} - s_t| / (mean_t |s_t| + 1e-3) (0 for T < 3): jerky versus smooth translation.
- `log_residual`: log of the confidence-weighted mean |residual| + 1e-3: how much moves apart from the camera.
- `subject_dx`, `subject_dy`: the residual's direction, per step the mean residual vector weighted by confidence x
  magnitude (so the blocks that move dominate), summed over steps: the subject's net motion relative to the camera.
- `log_dynamic`: log(mean over steps of the mean of the top 20% of confidence x |flow| over blocks + 1e-3):
  VBench's dynamic degree analogue (which takes the top 5% of RAFT flow magnitudes per frame pair).
- `log_difference`: log(mean_t difference + 1e-3): photometric change.
- `difference_cv`: std_t(difference) / (mean_t difference + 1e-3): uneven change over time (stutter, cuts).
- `log_brightness_std`: log(std_t(brightness) + 1e-3): flicker of the mean grey level.
- `frozen_fraction`: mean_t sigmoid((0.005 - difference_t) / 0.00125): the (soft) fraction of steps whose mean
  grey change is below 0.005 (about 1.3 grey levels of 255): frozen frames, stutter.
- `mean_confidence`: the mean block confidence: how well the frames match at all (low for noise, cuts, morphing).
- `return_ratio`: the last frame's mean grey difference from the first over the largest such difference of any frame
  (a smooth maximum): about 1 for a video that keeps going, 0 for one that comes back to where it started (a
  back-and-forth loop) or never leaves it (frozen).

Standard deviations over time are population ones (0 for T = 2), smoothed as sqrt(var + 1e-12).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from icreward.rules import LUMA

FLOW_SIZE = 128  # frames are resized to FLOW_SIZE x FLOW_SIZE grey before matching
FLOW_GRID = 4  # blocks per side
FLOW_WINDOW = 1.5  # window side / block pitch (size / grid): overlapping windows

_PHASE_EPS = 1e-3  # relative regulariser of the whitening (times the window's mean |A|)
_PHASE_FLOOR = 1e-6  # absolute floor of that regulariser (flat windows give a flat surface, confidence 0)
_CONF_LOW, _CONF_SPAN = 0.35, 0.45  # peak energy -> confidence: clamp((e - low) / span, 0, 1)
_FIT_EPS = 1e-4
_FIT_PRIOR = 0.1  # weight of the "no motion" prior in the similarity fit, in fully confident blocks
_TINY = 1e-12
FROZEN_THRESHOLD = 0.005  # mean grey change per step under which a step counts as frozen

MOTION_FEATURES: tuple[str, ...] = (
    "net_dx",
    "net_dy",
    "net_zoom",
    "net_rotation",
    "log_path",
    "straightness",
    "reversal",
    "zoom_reversal",
    "acceleration",
    "log_residual",
    "subject_dx",
    "subject_dy",
    "log_dynamic",
    "log_difference",
    "difference_cv",
    "log_brightness_std",
    "frozen_fraction",
    "mean_confidence",
    "return_ratio",
)


@dataclass
class MotionField:
    """The motion of a batch of videos, per consecutive pair of frames (see the module docstring)."""

    flow: torch.Tensor  # [B, T-1, G, G, 2] displacement (dx, dy) of each block's content from frame t to t+1
    confidence: torch.Tensor  # [B, T-1, G, G] in [0, 1]: how peaked the block's phase correlation is
    centres: torch.Tensor  # [G, G, 2] block (window) centres (x, y) in frame units; [i, j] is row i, column j
    similarity: torch.Tensor  # [B, T-1, 4] (dx, dy, zoom, rotation) per step; rotation > 0 = clockwise on screen
    residual: torch.Tensor  # [B, T-1, G, G, 2] flow minus the fitted similarity motion
    difference: torch.Tensor  # [B, T-1] mean absolute grey difference between consecutive frames
    brightness: torch.Tensor  # [B, T-1] change of the mean grey level between consecutive frames (signed)
    drift: torch.Tensor  # [B, T-1] mean |grey_t - grey_0| for t = 1 .. T-1: how far each frame is from the first


def _norm(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean norm with a finite gradient at 0."""
    return torch.sqrt((x * x).sum(dim) + _TINY)


def _grey(video: torch.Tensor, size: int) -> torch.Tensor:
    """`[B, T, 3, H, W]` -> grey `[B, T, size, size]` (Rec. 601; bilinear, antialiased when shrinking)."""
    b, t, _, h, w = video.shape
    luma = torch.tensor(LUMA, dtype=video.dtype, device=video.device).view(1, 1, 3, 1, 1)
    grey = (video * luma).sum(2).reshape(b * t, 1, h, w)
    if (h, w) != (size, size):
        grey = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False, antialias=size < max(h, w))
    return grey.reshape(b, t, size, size)


def _window_layout(grid: int, size: int, window: float) -> tuple[int, list[int]]:
    """Window side and the start of each window along an axis (evenly spaced, the outer ones touching the edges)."""
    win = min(size, max(8, 2 * round(window * size / grid / 2)))
    if grid == 1:
        return win, [(size - win) // 2]
    return win, [round(i * (size - win) / (grid - 1)) for i in range(grid)]


def motion_field(
    video: torch.Tensor, grid: int = FLOW_GRID, size: int = FLOW_SIZE, *, window: float = FLOW_WINDOW
) -> MotionField:
    """The block motion field of `video [B, T, 3, H, W]` in [0, 1], T >= 2 (see the module docstring).

    Any H, W: frames are resized to `size` x `size`, so x and y displacements are each in frame units of their own
    axis. Differentiable w.r.t. the video. Raises ValueError for a tensor that is not 5-D or has T < 2.
    """
    if not isinstance(video, torch.Tensor) or video.dim() != 5 or video.shape[2] != 3:
        shape = list(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"motion_field takes a video [B, T, 3, H, W], got {shape}")
    if video.shape[1] < 2:
        raise ValueError(f"motion_field needs at least 2 frames (T >= 2), got T = {video.shape[1]}")
    if grid < 1 or size < 8:
        raise ValueError(f"grid must be >= 1 and size >= 8, got grid={grid}, size={size}")
    if not video.is_floating_point():
        video = video.float()
    b, t = video.shape[:2]
    dev, dt = video.device, video.dtype
    grey = _grey(video, size)  # (B, T, S, S)

    # Photometric change.
    difference = (grey[:, 1:] - grey[:, :-1]).abs().mean((-1, -2))  # (B, T-1)
    means = grey.mean((-1, -2))
    brightness = means[:, 1:] - means[:, :-1]
    drift = (grey[:, 1:] - grey[:, :1]).abs().mean((-1, -2))  # (B, T-1)

    # Windows of every frame: (B, T, G, G, win, win), row-major (y, x).
    win, starts = _window_layout(grid, size, window)
    sel = torch.tensor(starts, device=dev)
    windows = grey.unfold(2, win, 1)[:, :, sel]  # (B, T, Gy, S, win_y)
    windows = windows.unfold(3, win, 1)[:, :, :, sel]  # (B, T, Gy, Gx, win_y, win_x)
    hann1 = torch.hann_window(win, periodic=False, dtype=dt, device=dev)
    hann = hann1[:, None] * hann1[None, :]
    tapered = windows * hann
    mean = tapered.sum((-1, -2), keepdim=True) / hann.sum()  # the Hann-weighted mean of each window
    spectra = torch.fft.rfft2(tapered) - mean * torch.fft.rfft2(hann)  # = rfft2((window - mean) * hann)

    # Phase correlation of consecutive frames: each spectrum whitened once, then one product per pair.
    magnitude = spectra.abs()  # (its gradient is 0, not NaN, where a spectrum is exactly 0)
    eps = _PHASE_EPS * magnitude.mean((-1, -2), keepdim=True).detach() + _PHASE_FLOOR
    unit = spectra * (1.0 / (magnitude + eps))
    surface = torch.fft.irfft2(unit[:, :-1].conj() * unit[:, 1:], s=(win, win))  # (B, T-1, G, G, win, win)

    # Soft-argmax in the 3x3 neighbourhood of the maximum (wrap-around coordinates).
    flat = surface.flatten(-2)
    with torch.no_grad():
        peak = flat.argmax(-1)  # where to look only
    py, px = peak // win, peak % win
    k = torch.arange(-1, 2, device=dev)
    ny = (py[..., None, None] + k[:, None]) % win  # (..., 3, 1)
    nx = (px[..., None, None] + k[None, :]) % win  # (..., 1, 3)
    gather = (ny * win + nx).flatten(-2)  # (..., 9)
    values = torch.gather(flat, -1, gather).relu()  # (..., 9)
    half = win // 2
    sy = torch.where(py >= half, py - win, py).to(dt)  # signed peak position
    sx = torch.where(px >= half, px - win, px).to(dt)
    ky = k.to(dt)[:, None].expand(3, 3).flatten()
    kx = k.to(dt)[None, :].expand(3, 3).flatten()
    energy = values.sum(-1)
    denom = energy + 1e-8
    fy = sy + (values * ky).sum(-1) / denom  # pixels at `size`
    fx = sx + (values * kx).sum(-1) / denom
    flow = torch.stack([fx, fy], -1) * (2.0 / size)  # frame units
    confidence = ((energy - _CONF_LOW) / _CONF_SPAN).clamp(0, 1)

    # Block centres in frame units.
    c1 = torch.tensor([(s + win / 2) * 2.0 / size - 1.0 for s in starts], dtype=dt, device=dev)
    centres = torch.stack([c1[None, :].expand(grid, grid), c1[:, None].expand(grid, grid)], -1)  # (G, G, 2): x, y

    similarity, fitted = _fit_similarity(flow, confidence, centres)
    residual = flow - fitted
    return MotionField(flow, confidence, centres, similarity, residual, difference, brightness, drift)


def _fit_similarity(
    flow: torch.Tensor, confidence: torch.Tensor, centres: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted closed-form fit of translation + zoom + rotation to the block flow, shrunk towards no motion when the
    confidence is low: `(similarity [..., 4], fitted flow [..., G, G, 2])`; translation reported at the frame centre."""
    w = confidence.flatten(-2)  # (B, T-1, N)
    u, v = flow[..., 0].flatten(-2), flow[..., 1].flatten(-2)
    x, y = centres[..., 0].flatten(), centres[..., 1].flatten()  # (N,)
    wc = w + _FIT_EPS  # the centroid stays defined when no block is confident
    cx = (wc * x).sum(-1, keepdim=True) / wc.sum(-1, keepdim=True)
    cy = (wc * y).sum(-1, keepdim=True) / wc.sum(-1, keepdim=True)
    xc, yc = x - cx, y - cy
    wsum = w.sum(-1, keepdim=True) + _FIT_PRIOR
    tu, tv = (w * u).sum(-1, keepdim=True) / wsum, (w * v).sum(-1, keepdim=True) / wsum
    spread = (w * (xc**2 + yc**2)).sum(-1, keepdim=True) + _FIT_PRIOR * (x**2 + y**2).mean()
    zoom = (w * (xc * u + yc * v)).sum(-1, keepdim=True) / spread
    rot = (w * (xc * v - yc * u)).sum(-1, keepdim=True) / spread
    fit_u = tu + zoom * xc - rot * yc
    fit_v = tv + zoom * yc + rot * xc
    dx0 = tu - zoom * cx + rot * cy  # the fitted motion at the frame centre (0, 0)
    dy0 = tv - zoom * cy - rot * cx
    similarity = torch.cat([dx0, dy0, zoom, rot], -1)
    fitted = torch.stack([fit_u, fit_v], -1).unflatten(-2, confidence.shape[-2:])
    return similarity, fitted


def _std(x: torch.Tensor) -> torch.Tensor:
    """Population std over the last dim, smoothed (finite gradient for a constant series, 0 for one value)."""
    var = ((x - x.mean(-1, keepdim=True)) ** 2).mean(-1)
    return torch.sqrt(var + _TINY)


def motion_descriptors(field: MotionField) -> torch.Tensor:
    """The descriptor `[B, len(MOTION_FEATURES)]` of each video's motion (columns documented in the module
    docstring); finite, order-1 magnitudes, differentiable."""
    sim = field.similarity  # (B, S, 4)
    steps = sim.shape[1]
    s = sim[..., :2]  # (B, S, 2)
    zoom = sim[..., 2]
    net = sim.sum(1)  # (B, 4)
    speed = _norm(s)  # (B, S)
    path = speed.sum(1)
    log_path = torch.log(path + 1e-3)
    straightness = _norm(s.sum(1)) / (path + 1e-2)

    if steps >= 2:
        dots = (s[:, 1:] * s[:, :-1]).sum(-1)  # (B, S-1)
        reversal = (-dots).relu().sum(1) / ((speed[:, 1:] * speed[:, :-1]).sum(1) + 1e-6)
        zz = zoom[:, 1:] * zoom[:, :-1]
        zoom_reversal = (-zz).relu().sum(1) / (torch.sqrt(zz**2 + _TINY).sum(1) + 1e-6)
        acceleration = _norm(s[:, 1:] - s[:, :-1]).mean(1) / (speed.mean(1) + 1e-3)
    else:
        zero = sim.new_zeros(sim.shape[0])
        reversal = zoom_reversal = acceleration = zero

    conf = field.confidence  # (B, S, G, G)
    res_mag = _norm(field.residual)  # (B, S, G, G)
    log_residual = torch.log((conf * res_mag).sum((1, 2, 3)) / (conf.sum((1, 2, 3)) + 1e-6) + 1e-3)
    w = (conf * res_mag)[..., None]  # (B, S, G, G, 1)
    per_step = (w * field.residual).sum((2, 3)) / (w.sum((2, 3)) + 1e-3)  # (B, S, 2)
    subject = per_step.sum(1)  # (B, 2)

    moving = (conf * _norm(field.flow)).flatten(2)  # (B, S, N)
    top = max(1, round(0.2 * moving.shape[-1]))
    log_dynamic = torch.log(moving.topk(top, dim=-1).values.mean(-1).mean(1) + 1e-3)

    diff = field.difference
    log_difference = torch.log(diff.mean(1) + 1e-3)
    difference_cv = _std(diff) / (diff.mean(1) + 1e-3)
    log_brightness_std = torch.log(_std(field.brightness) + 1e-3)
    frozen = torch.sigmoid((FROZEN_THRESHOLD - diff) / (FROZEN_THRESHOLD / 4)).mean(1)
    mean_conf = conf.mean((1, 2, 3))
    # smooth maximum of the drift (log-sum-exp at a temperature of 1/200 grey level), so the ratio is differentiable
    peak_drift = torch.logsumexp(field.drift * 200.0, dim=1) / 200.0
    return_ratio = field.drift[:, -1] / (peak_drift.clamp(min=0) + 1e-3)

    columns = [
        net[:, 0],
        net[:, 1],
        net[:, 2],
        net[:, 3],
        log_path,
        straightness,
        reversal,
        zoom_reversal,
        acceleration,
        log_residual,
        subject[:, 0],
        subject[:, 1],
        log_dynamic,
        log_difference,
        difference_cv,
        log_brightness_std,
        frozen,
        mean_conf,
        return_ratio,
    ]
    assert len(columns) == len(MOTION_FEATURES)
    return torch.stack(columns, 1)


__all__ = [
    "FLOW_GRID",
    "FLOW_SIZE",
    "FROZEN_THRESHOLD",
    "MOTION_FEATURES",
    "MotionField",
    "motion_descriptors",
    "motion_field",
]
