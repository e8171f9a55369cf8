"""The one interface every reward shares: handcrafted metrics, the MLP baseline and IC-Reward alike, the check of
the tensors they are given, and the registry of handcrafted metrics.

`scorer(image [B,3,H,W] in [0,1], video [B,T,3,H,W] in [0,1], prompt) -> [B]`, higher = more consistent.
A leaf module: `icreward.metrics` and `icreward.models` import it; it imports neither (`icreward.loading` does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from icreward.errors import IcrewardError

ScorerFactory = Callable[..., "Scorer"]
# The heads a reward can have, and the label of a pair record's `labels` that each one is judged (and trained) on.
HEAD_LABELS = {"consistency": "ic", "motion": "motion", "text": "text", "guidance": "overall"}
HEAD_NAMES = tuple(HEAD_LABELS)
_METRICS: dict[str, ScorerFactory] = {}

# The value ranges a caller may declare (`value_range=`): "0,1" is what every scorer computes on, "-1,1" (what VAE
# decoders and diffusion pipelines produce) is mapped to it with (x + 1) / 2. Nothing is guessed from the values.
VALUE_RANGES: dict[str, tuple[float, float]] = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0)}
# How far outside the declared range values may stray (float rounding, a resize's overshoot) before they are refused.
RANGE_TOLERANCE = 1e-3


class InputError(IcrewardError, ValueError):
    """Tensors given to a scorer have the wrong shape, or values outside their range or not finite; the message
    says what is wrong and how to fix it."""


class InputTypeError(IcrewardError, TypeError):
    """Tensors given to a scorer are not floating-point tensors (uint8 frames, numpy arrays, …)."""


def check_reward_inputs(
    image: torch.Tensor,
    video: torch.Tensor | Sequence[torch.Tensor],
    value_range: str = "0,1",
    *,
    layout: str = "batch",
) -> tuple[torch.Tensor, list[torch.Tensor] | torch.Tensor]:
    """Check the tensors a scorer is given and return them in [0, 1]: `(image, video)`, or `(image, [videos])` when
    `video` is a list (several videos of the same images).

    `layout` is "batch" (`image [B,3,H,W]`, videos `[B,T,3,H,W]` with the same B), "shared" (one `image [3,H,W]`
    for videos `[B,T,3,H,W]`) or "single" (`image [3,H,W]`, `video [T,3,H,W]`). T, H and W may be anything >= 1, and
    images and frames may differ in size. Values must be floats in `value_range` ("0,1", or "-1,1", converted with
    `(x + 1) / 2`) and finite. Raises `InputTypeError` (a TypeError) for a tensor that is not floating point and
    `InputError` (a ValueError) for a wrong shape or values, each saying how to fix it. Nothing is rescaled
    silently. Cheap: one `aminmax` per tensor and one device sync for them all; nothing is recorded for autograd,
    and the conversion of "-1,1" is differentiable.
    """
    videos = list(video) if isinstance(video, list | tuple) else [video]
    low, high = _value_range(value_range)
    image_dims, video_dims = {
        "batch": ("[B,3,H,W]", "[B,T,3,H,W]"),
        "shared": ("[3,H,W]", "[B,T,3,H,W]"),
        "single": ("[3,H,W]", "[T,3,H,W]"),
    }[layout]
    _check_tensor(image, "image", image_dims, value_range)
    for v in videos:
        _check_tensor(v, "video", video_dims, value_range)
    if layout == "batch" and any(v.shape[0] != image.shape[0] for v in videos):
        sizes = " and ".join(str(v.shape[0]) for v in videos)
        raise InputError(
            f"image and video batches differ in size: B = {image.shape[0]} for the images, {sizes} for the videos; "
            "give one image per video (image.expand(B, -1, -1, -1) repeats one image without a copy)"
        )
    if len(videos) > 1 and len({v.shape[-4] for v in videos}) > 1:
        raise InputError(f"videos of one call need the same T, got {[tuple(v.shape) for v in videos]}")
    tensors = {"image": image, **{("video" if len(videos) == 1 else f"video {i}"): v for i, v in enumerate(videos)}}
    for name, (lo, hi) in _value_bounds(tensors).items():
        _check_values(name, lo, hi, value_range, low, high)
    image, videos = _to_unit(image, low, high), [_to_unit(v, low, high) for v in videos]
    return image, (videos if isinstance(video, list | tuple) else videos[0])


def _value_range(value_range: str | Sequence[float]) -> tuple[float, float]:
    key = value_range if isinstance(value_range, str) else ",".join(f"{float(x):g}" for x in value_range)
    key = key.replace(" ", "")
    if key not in VALUE_RANGES:
        raise InputError(f"value_range must be one of {', '.join(map(repr, VALUE_RANGES))}, got {value_range!r}")
    return VALUE_RANGES[key]


def _to_unit(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return x if (low, high) == (0.0, 1.0) else (x - low) / (high - low)  # "-1,1": (x + 1) / 2


def _check_alone(x: torch.Tensor, name: str, dims: str, value_range: str) -> torch.Tensor:
    """One tensor checked as `check_reward_inputs` checks each, and returned in [0, 1]."""
    low, high = _value_range(value_range)
    _check_tensor(x, name, dims, value_range)
    for _, (lo, hi) in _value_bounds({name: x}).items():
        _check_values(name, lo, hi, value_range, low, high)
    return _to_unit(x, low, high)


_PERMUTE_HINTS = {  # layout wanted -> the permute that fixes a channels-last tensor of that layout
    "[B,3,H,W]": "permute(0, 3, 1, 2)",
    "[B,T,3,H,W]": "permute(0, 1, 4, 2, 3)",
    "[3,H,W]": "permute(2, 0, 1)",
    "[T,3,H,W]": "permute(0, 3, 1, 2)",
}


def _check_tensor(x: object, name: str, dims: str, value_range: str) -> None:
    """A floating-point tensor of the layout `dims` (e.g. "[B,T,3,H,W]"), every dimension at least 1."""
    if not isinstance(x, torch.Tensor):
        hint = " (convert a numpy array with torch.from_numpy)" if type(x).__module__ == "numpy" else ""
        raise InputTypeError(f"{name} must be a torch.Tensor {dims}, got {type(x).__name__}{hint}")
    if not x.is_floating_point():
        scale = "video.float() / 255" if x.dtype == torch.uint8 else "video.float(), scaled into [0, 1]"
        if x.dtype == torch.uint8 and value_range != "0,1":
            scale += " and value_range='0,1'"
        raise InputTypeError(
            f"{name} is {str(x.dtype).removeprefix('torch.')}: scorers take floats in [0, 1]; convert with "
            + scale.replace("video", name)
        )
    want = dims.strip("[]").split(",")
    shape = tuple(x.shape)
    channel = want.index("3")
    if len(shape) == len(want) and shape[channel] == 3 and min(shape) >= 1:
        return
    problem = f"{name} has shape {list(shape)}, expected {dims}"
    if len(shape) == len(want) and min(shape, default=0) < 1:
        raise InputError(f"{problem}: it is empty (a dimension of size 0)")
    if len(shape) == len(want) and shape[-1] == 3:
        raise InputError(f"{problem}: it looks channels-last; use {name}.{_PERMUTE_HINTS[dims]}")
    if len(shape) == len(want) and dims.endswith("T,3,H,W]") and shape[channel - 1] == 3:
        swap = "permute(0, 2, 1, 3, 4)" if len(want) == 5 else "permute(1, 0, 2, 3)"
        raise InputError(f"{problem}: channels come before time; use {name}.{swap}")
    if len(shape) == len(want):
        channels = f"{shape[channel]} channel" + ("" if shape[channel] == 1 else "s")
        raise InputError(
            f"{problem}: {channels} where RGB has 3 (repeat grey with .expand, drop or composite an alpha channel)"
        )
    if len(shape) == len(want) - 1 and dims.startswith("[B,"):
        raise InputError(f"{problem}: add the batch dimension with {name}[None] (or score one pair with .score)")
    if len(shape) == len(want) + 1 and not dims.startswith("[B,"):
        if shape[0] == 1:
            raise InputError(f"{problem}: drop the batch dimension with {name}[0]")
        raise InputError(f"{problem}: this takes one {name}, not a batch of {shape[0]} (call the scorer for batches)")
    raise InputError(problem)


def _value_bounds(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """`{name: (min, max)}` of each tensor (NaN where it holds one): one aminmax each, one device sync for all."""
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)()
    if compiling or any(t.device.type == "meta" for t in tensors.values()):
        return {}  # no values to look at while tracing
    with torch.no_grad():
        stats = [torch.stack(torch.aminmax(t.detach())).float() for t in tensors.values()]  # each (2,)
        if len({s.device for s in stats}) > 1:
            stats = [s.cpu() for s in stats]
        values = torch.stack(stats).tolist()  # (N, 2)
    return {name: (lo, hi) for name, (lo, hi) in zip(tensors, values, strict=True)}


def _check_values(name: str, lo: float, hi: float, value_range: str, low: float, high: float) -> None:
    """Raise `InputError` unless `[lo, hi]` is finite and inside `[low, high]` (give or take RANGE_TOLERANCE)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(
            f"{name} holds NaN or infinite values (it spans [{lo:.4g}, {hi:.4g}]): a reward of them would be NaN; "
            "find where they come from (torch.nan_to_num hides them)"
        )
    tol = RANGE_TOLERANCE * (high - low)
    if lo >= low - tol and hi <= high + tol:
        return
    declared = f"[{low:g}, {high:g}]" + (" (value_range='-1,1')" if low < 0 else "")
    if 2 < hi <= 255 + tol and lo >= -tol:
        hint = f"it looks like 0-255 pixel values: divide by 255 ({name}.float() / 255)"
        if low < 0:
            hint += " and pass value_range='0,1'"
    elif low >= 0 and lo >= -1 - tol and hi <= 1 + tol:
        hint = "it looks like values in [-1, 1]: pass value_range='-1,1' (mapped to [0, 1] with (x + 1) / 2)"
    else:
        hint = f"scale it into {declared}, or clamp it there with .clamp({low:g}, {high:g})"
    raise InputError(f"{name} values span [{lo:.4g}, {hi:.4g}], outside {declared}: {hint}")


class Scorer(nn.Module):
    """Base class of all rewards.

    Subclasses implement `forward`. `num_frames` is how many frames are sampled from a video file, and `max_side`
    caps the longer side frames are decoded at (memory stays at T frames of that size, whatever the source).

    Calling a scorer, `scorer(image [B,3,H,W], video [B,T,3,H,W], prompt=None, value_range="0,1")`, checks its
    tensors first (`check_reward_inputs`): floating point, those shapes with the same B, values in [0, 1] (or in
    [-1, 1] with `value_range="-1,1"`, mapped to [0, 1] with `(x + 1) / 2`) and finite; anything else raises
    `InputError` / `InputTypeError` saying how to fix it, instead of a wrong reward. Gradients flow through the
    call (guidance and fine-tuning loops call it on tensors that require grad).

    Any T >= 1 is accepted: a fine-tuning loop may decode one or a few frames. But rewards at small T are not those
    at the T the scorer samples from files (`num_frames`, 16 for the shipped model). Measured with the shipped model
    on the 32 real I2V clips of `shared/real-i2v` and `shared/real-i2v-pia` (16 frames each, sampled uniformly to
    T): T = 8 stays within 0.05 of T = 16 (rank correlation 0.99) and T = 4 within 0.16 (0.97), while T = 2 reads
    1.4 to 1.5 higher on average (up to 3.0) and T = 1 1.9 to 2.0 higher (up to 3.1), and the clips' order is mostly
    lost (rank correlation 0.3 and 0.0 on the 24 PIA clips): from one or two frames the model sees no drift or
    flicker and reads the video as nearly still. Compare rewards at one T, and use T >= 4 (better 8) where they
    should mean what file scores mean. A video file with fewer frames than `num_frames` is sampled with its frames
    repeated (`icreward.media.load_video` warns, `FewFramesWarning`): a 2-frame file is judged on its first and last
    frames alone, which on a looping clip (last frame close to the first) reads up to 2.2 higher than the clip.
    """

    name: str = "scorer"
    # The head a scorer's reward answers (`HEAD_NAMES`): "consistency" for image-video consistency, "motion" for a
    # motion measure (dynamic degree), "text" for agreement with the prompt (camera motion). Models with several
    # heads answer each of them (`RewardModel.head_names`).
    dimension: str = "consistency"
    num_frames: int = 16
    max_side: int | None = 512
    needs_weights: bool = False  # True where the scorer loads pretrained weights (not available offline)
    _selected_head: str | None = None  # set by `select_head` (None: the scorer's own `dimension`)

    def __call__(
        self,
        image: torch.Tensor,
        video: torch.Tensor,
        prompt: Sequence[str] | None = None,
        *args,
        value_range: str = "0,1",
        **kwargs,
    ):
        """`forward` on checked inputs (`check_reward_inputs`), `value_range` ("0,1" or "-1,1") saying what the
        tensors hold."""
        image, video = self.checked_inputs(image, video, value_range)
        return super().__call__(image, video, prompt, *args, **kwargs)

    @property
    def head_names(self) -> tuple[str, ...]:
        """The heads this scorer answers (a handcrafted metric: its one `dimension`)."""
        return (self.dimension,)

    @property
    def selected_head(self) -> str:
        """The head that calling the scorer returns (`reward` in every output): its `dimension` unless
        `select_head` chose another."""
        return self._selected_head or self.dimension

    def check_head(self, name: str) -> None:
        """Raise `IcrewardError` naming this scorer's heads when it has no head `name`."""
        if name not in self.head_names:
            raise IcrewardError(
                f"{self.name} has no {name!r} head; its heads: {', '.join(self.head_names)}"
                + (f" (heads: {', '.join(HEAD_NAMES)})" if name not in HEAD_NAMES else "")
            )

    def select_head(self, name: str) -> Scorer:
        """Make `name` the head that calling the scorer returns (`reward` in every output); returns the scorer."""
        self.check_head(name)
        self._selected_head = name
        return self

    def all_heads(
        self,
        image: torch.Tensor,
        video: torch.Tensor,
        prompt: Sequence[str | None] | None = None,
        *,
        value_range: str = "0,1",
    ) -> dict[str, torch.Tensor]:
        """Every head's reward `[B]`, by name (a handcrafted metric has one, its `dimension`)."""
        return {self.dimension: self(image, video, prompt, value_range=value_range)}

    def checked_inputs(self, image: torch.Tensor, video, value_range: str = "0,1", layout: str = "batch"):
        """`check_reward_inputs` (returns the tensors in [0, 1]), and float64 refused against lower-precision weights:
        what every public entry point of a scorer runs first."""
        image, video = check_reward_inputs(image, video, value_range, layout=layout)
        self._check_precision(image, *(video if isinstance(video, list) else [video]))
        return image, video

    def _check_precision(self, *tensors: torch.Tensor) -> None:
        """Refuse float64 inputs to a scorer with float32 (or lower) weights, which torch would refuse deep inside
        the model (numpy arrays are float64, and so is what `torch.from_numpy` makes of them)."""
        weights = next((p.dtype for p in self.parameters() if p.is_floating_point()), None)
        if weights is None or weights == torch.float64:
            return
        for name, x in zip(("image", "video", "video"), tensors, strict=False):
            if x.dtype == torch.float64:
                raise InputTypeError(
                    f"{name} is float64 but the scorer's weights are {str(weights).removeprefix('torch.')}: "
                    f"convert with {name}.float()"
                )

    def forward(
        self, image: torch.Tensor, video: torch.Tensor, prompt: Sequence[str] | None = None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def rewards_for_image(
        self,
        image: torch.Tensor,
        videos: torch.Tensor,
        prompt: Sequence[str] | None = None,
        *,
        value_range: str = "0,1",
    ) -> torch.Tensor:
        """Rewards `[B]` of B candidate `videos [B,T,3,H,W]` of one `image [3,H,W]` (best-of-N), checked as a call is.

        Here the image is broadcast to every video; learned models override this to encode it once.
        """
        image, videos = self.checked_inputs(image, videos, value_range, layout="shared")
        expanded = image.expand(videos.shape[0], *image.shape)  # (B, 3, H, W) view, no copy
        return nn.Module.__call__(self, expanded, videos, prompt)  # checked already

    @torch.no_grad()
    def score(
        self,
        image: str | Path | torch.Tensor,
        video: str | Path | torch.Tensor,
        prompt: str | None = None,
        *,
        value_range: str = "0,1",
    ) -> float:
        """Reward of one (image, video) pair given as files or as `[3,H,W]` / `[T,3,H,W]` float tensors in [0, 1]
        (or in [-1, 1] with `value_range="-1,1"`; files are always read into [0, 1]): the selected head's (NaN for
        the text head without a prompt)."""
        image, video = self._single(image, video, value_range)
        return float(self(image, video, None if prompt is None else [prompt])[0])

    @torch.no_grad()
    def score_heads(
        self,
        image: str | Path | torch.Tensor,
        video: str | Path | torch.Tensor,
        prompt: str | None = None,
        *,
        value_range: str = "0,1",
    ) -> dict[str, float | None]:
        """Every head's reward of one pair (as `score` takes it), by name; None where a head has no value (the
        text head without a prompt)."""
        image, video = self._single(image, video, value_range)
        return self.head_values(self.all_heads(image, video, None if prompt is None else [prompt]))

    @staticmethod
    def head_values(heads: dict[str, torch.Tensor]) -> dict[str, float | None]:
        """The first item's reward of each head (`all_heads`' `[B]` tensors) as a float, None where it has no
        value."""
        return {name: (float(v[0]) if math.isfinite(float(v[0])) else None) for name, v in heads.items()}

    def explain(
        self,
        image: torch.Tensor,
        video: torch.Tensor,
        prompt: str | None = None,
        *,
        value_range: str = "0,1",
    ):
        """Where and when `video [T,3,H,W]` drifts from `image [3,H,W]`: an `icreward.explain.Explanation` (per-frame
        curve `[T]`, per-frame inconsistency maps `[T,h,w]`, onset, region, one-line summary). Learned models and
        the consistency metrics explain; others raise `ExplainError` saying which can."""
        from icreward.explain import explain

        return explain(self, image, video, prompt, value_range=value_range)

    def _single(self, image, video, value_range: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One pair as `[1,3,H,W]`, `[1,T,3,H,W]` tensors in [0, 1] on the scorer's device (files decoded)."""
        from icreward.media import load_image, load_video

        if isinstance(image, torch.Tensor):  # what the caller gave is checked against value_range; files are in [0, 1]
            image = _check_alone(image, "image", "[3,H,W]", value_range)
        else:
            image = load_image(image, max_side=self.max_side)
        if isinstance(video, torch.Tensor):
            video = _check_alone(video, "video", "[T,3,H,W]", value_range)
        else:
            video = load_video(video, num_frames=self.num_frames, max_side=self.max_side)
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        return image[None].to(device), video[None].to(device)


def register_metric(name: str) -> Callable[[ScorerFactory], ScorerFactory]:
    """Register a handcrafted metric factory under `metric:<name>`."""

    def wrap(factory: ScorerFactory) -> ScorerFactory:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        _METRICS[name] = factory
        return factory

    return wrap


def metric_factory(name: str) -> ScorerFactory | None:
    """The factory registered under `metric:<name>`, or None (metrics register when `icreward.metrics` is imported)."""
    return _METRICS.get(name)


def registered_metrics() -> dict[str, ScorerFactory]:
    """Every registered metric factory by name (after `icreward.metrics` has been imported)."""
    return dict(_METRICS)
