"""Synthetic I2V consistency benchmarks: procedural or photo scenes, consistent motion, labelled failure modes.

`generate(SynthConfig(...), out_dir)` writes a benchmark; `default_benchmark()` returns the cached default one;
`FAILURE_MODES` maps each failure mode's name to its weights and rendering function; `build_camera_set(out)` renders
real photos under the seven VBench-I2V camera moves.
"""

from icreward.synth.camera_set import build_camera_set
from icreward.synth.dataset import default_benchmark, generate
from icreward.synth.failures import FAILURE_MODES, render_video
from icreward.synth.plan import SynthConfig

__all__ = ["FAILURE_MODES", "SynthConfig", "build_camera_set", "default_benchmark", "generate", "render_video"]
