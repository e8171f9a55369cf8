"""Handcrafted image-to-video consistency metrics, loaded as `icreward.load("metric:<name>")`.

Importing this package registers them all: VBench's i2v_subject / i2v_background, CLIP-I, first-frame SSIM / PSNR /
MSE, and the weight-free colour-histogram, pixel and HOG metrics.
"""

from icreward.metrics import clip_i, color_hist, first_frame, motion, vbench, vbench_offline  # noqa: F401  (registers)
from icreward.metrics.vbench import VBENCH_WEIGHTS, VBenchI2V, vbench_i2v_formula

__all__ = ["VBENCH_WEIGHTS", "VBenchI2V", "vbench_i2v_formula"]
