"""First-frame fidelity (AIGCBench, DreamVideo): SSIM, PSNR and MSE between the image and frame 0.

Common size, for all three: the image is centre-cropped to the video's aspect ratio and resized to the frame's size
(bilinear, antialiased); pixels are compared in [0, 1]. All three are torch ops, differentiable with respect to both
inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from icreward.interface import Scorer, register_metric
from icreward.metrics.base import match_image_to_frames


def gaussian_filter_matrix(n: int, window: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`[n - window + 1, n]` matrix applying a normalised 1-D Gaussian window at every position where it fits.

    Multiplying by banded matrices is the same valid filtering as a separable convolution, and faster
    than a depthwise conv2d on CPU.
    """
    x = torch.arange(window, dtype=dtype, device=device) - (window - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    offset = torch.arange(n, device=device)[None] - torch.arange(n - window + 1, device=device)[:, None]
    inside = (offset >= 0) & (offset < window)
    return torch.where(inside, g[offset.clamp(0, window - 1)], torch.zeros((), dtype=dtype, device=device))


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) of `[B, C, H, W]` pairs: `[B]`, 1 for identical images.

    Gaussian-weighted local statistics (population covariance) over the positions where the whole window fits,
    averaged over those positions and the channels: what skimage's `structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)` computes. H and W must be at least `window`.
    """
    h, w = x.shape[-2:]
    if min(h, w) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {(h, w)}")
    if x.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()
    with torch.autocast(x.device.type, enabled=False):  # E[x^2] - E[x]^2 cancels: bf16/fp16 give NaN, keep float32
        rows = gaussian_filter_matrix(h, window, sigma, x.dtype, x.device)  # (h', H)
        cols = gaussian_filter_matrix(w, window, sigma, x.dtype, x.device)  # (w', W)
        stats = rows @ torch.stack([x, y, x * x, y * y, x * y]) @ cols.T  # (5, B, C, h', w'): local means
        mu_x, mu_y, xx, yy, xy = stats
        var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
        c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
        s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        return s.mean(dim=(1, 2, 3))


class FirstFrameMetric(Scorer):
    """Compares frame 0 with the image brought to the frame's size; subclasses implement `compare`."""

    max_side = 512

    def compare(self, image: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, image: torch.Tensor, video: torch.Tensor, prompt: Sequence[str] | None = None) -> torch.Tensor:
        frame = video[:, 0]  # (B, 3, h, w)
        return self.compare(match_image_to_frames(image, frame), frame)


@register_metric("first-frame-ssim")
class FirstFrameSSIM(FirstFrameMetric):
    """SSIM of frame 0 and the image: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data range 1, averaged
    over RGB channels; 1 when identical. Kwargs override those (`window`, `sigma`, `k1`, `k2`)."""

    name = "first-frame-ssim"

    def __init__(self, window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03):
        super().__init__()
        self.window, self.sigma, self.k1, self.k2 = window, sigma, k1, k2

    def compare(self, image: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        return ssim(image, frame, self.window, self.sigma, self.k1, self.k2)


@register_metric("first-frame-psnr")
class FirstFramePSNR(FirstFrameMetric):
    """PSNR in dB of frame 0 against the image, data range 1: `10 log10(1 / mse)`, capped at `max_psnr` (default
    100 dB) so identical frames score `max_psnr` rather than infinity (no gradient at the cap)."""

    name = "first-frame-psnr"

    def __init__(self, max_psnr: float = 100.0):
        super().__init__()
        self.max_psnr = max_psnr

    def compare(self, image: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        mse = (image - frame).pow(2).mean(dim=(1, 2, 3))
        return -10 * torch.log10(mse.clamp_min(10 ** (-self.max_psnr / 10)))


@register_metric("first-frame-mse")
class FirstFrameMSE(FirstFrameMetric):
    """Negative mean squared error of frame 0 against the image, pixels in [0, 1]: 0 when identical, down to -1."""

    name = "first-frame-mse"

    def compare(self, image: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        return -(image - frame).pow(2).mean(dim=(1, 2, 3))
