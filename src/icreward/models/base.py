"""What every learned reward shares: a backbone encoding the image and frames together, a head, z-normalisation, and
self-describing checkpoints.

A model is `encode` (pixels -> backbone tokens) then `head` (tokens -> raw reward) then `normalize`. A trainer with a
frozen backbone can cache `encode`'s output and call `head` directly: that is exactly `forward` without the backbone.

Checkpoint folder: `model.safetensors` (the whole state dict, backbone included, so a randomly initialised or
fine-tuned backbone reloads exactly; a frozen `hf:` backbone is saved too, keeping the folder self-contained, unless
`save_pretrained(..., save_backbone=False)` asks to rebuild it from its spec instead) and `config.json` (the model
config's fields plus `model_type`, `icreward_version` and `backbone_saved`), written atomically.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import safetensors.torch
import torch
from torch import nn

from icreward.atomic import atomic_dir, current_umask
from icreward.backbones import build_backbone
from icreward.errors import IcrewardError
from icreward.interface import Scorer
from icreward.models.backbone_policy import apply_backbone_policy, count_trainable, parse_backbone_policy
from icreward.transforms import PreprocessConfig, preprocess

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

Tokens = dict[str, torch.Tensor]


@dataclass
class RewardModelConfig:
    backbone: str = "tiny-vit"  # backbone registry name, e.g. "hf:facebook/dinov2-small" (see icreward.backbones)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the backbone's factory
    backbone_policy: str = "frozen"  # what trains in the backbone: frozen | full | last-<k> | lora | lora-r<rank>
    num_frames: int = 16  # T sampled from a video file when scoring; the model itself accepts any T
    preprocess: dict[str, Any] | None = None  # PreprocessConfig fields; None = the backbone's own (filled in at build)
    score_mean: float = 0.0  # z-normalisation: forward returns (raw - score_mean) / score_std (set on validation data)
    score_std: float = 1.0
    tie_threshold: float | None = None  # |r_A - r_B| of normalised rewards up to which a pair is called a tie
    training: dict[str, Any] = field(default_factory=dict)  # the trainer's metadata: data hash, loss, epochs, ...
    task_heads: dict[str, Any] | None = None  # motion / text / guidance heads (`icreward.models.task_heads`)

    def __post_init__(self) -> None:
        """Check every field's type and range, so a bad config.json is refused at load naming the field (raises
        ValueError `"<field>: <problem>"`, which `from_pretrained` reports with the folder and config.json)."""
        check_str(self, "backbone")
        check_dict(self, "backbone_kwargs")
        check_str(self, "backbone_policy")
        try:
            parse_backbone_policy(self.backbone_policy)
        except ValueError as e:
            raise ValueError(f"backbone_policy: {e}") from None
        check_int(self, "num_frames", minimum=1)
        if self.preprocess is not None:
            check_dict(self, "preprocess")
            try:
                PreprocessConfig.from_dict(self.preprocess)
            except (TypeError, ValueError) as e:
                raise ValueError(f"preprocess: {e}") from None
        check_float(self, "score_mean")
        check_float(self, "score_std", above=0)
        check_float(self, "tie_threshold", minimum=0, optional=True)
        check_dict(self, "training")
        if self.task_heads is not None:
            check_dict(self, "task_heads")
            from icreward.models.task_heads import TaskHeadsConfig

            TaskHeadsConfig.from_dict(self.task_heads)  # raises ValueError naming the field

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RewardModelConfig:
        """Build from `to_dict()` output; unknown keys raise ValueError (a checkpoint from a newer icreward)."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def _problem(config: object, name: str, want: str) -> ValueError:
    return ValueError(f"{name}: must be {want}, got {json.dumps(getattr(config, name), default=repr)[:60]}")


def check_int(config: object, name: str, minimum: int | None = None, optional: bool = False) -> None:
    """Raise ValueError `"<name>: must be ..."` unless the field is an int (not a bool) >= `minimum` (or None)."""
    value = getattr(config, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        want = "an integer" + ("" if minimum is None else f" >= {minimum}") + (" or null" if optional else "")
        raise _problem(config, name, want)


def check_float(
    config: object,
    name: str,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    optional: bool = False,
) -> None:
    """Raise ValueError unless the field is a finite number (int or float, not a bool) in the bounds (or None)."""
    value = getattr(config, name)
    if optional and value is None:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (above is None or value > above)
    if not (ok and (below is None or value < below)):
        bounds = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else ""]
        bounds.append(f"< {below:g}" if below is not None else "")
        want = " ".join(["a finite number", " and ".join(b for b in bounds if b)]).strip()
        raise _problem(config, name, want + (" or null" if optional else ""))


def check_bool(config: object, name: str) -> None:
    if not isinstance(getattr(config, name), bool):
        raise _problem(config, name, "true or false")


def check_str(config: object, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, str) or not value.strip():
        raise _problem(config, name, "a non-empty string")


def check_dict(config: object, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _problem(config, name, "a JSON object")


class RewardModel(Scorer):
    """Base of the learned rewards: `reward = normalize(head(*encode(image, video)))`.

    Subclasses set `model_type` and `config_class`, build their modules after `super().__init__(config)`, and
    implement `head`.
    """

    model_type: ClassVar[str]
    config_class: ClassVar[type[RewardModelConfig]] = RewardModelConfig
    types: ClassVar[dict[str, type[RewardModel]]] = {}  # model_type -> class, filled as subclasses are defined

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "model_type" in cls.__dict__:
            RewardModel.types[cls.model_type] = cls

    def __init__(self, config: RewardModelConfig):
        super().__init__()
        config = copy.deepcopy(config)  # the model owns its config; the caller's object is left alone
        self.backbone = build_backbone(config.backbone, **config.backbone_kwargs)
        if config.preprocess is None:
            config.preprocess = json.loads(json.dumps(self.backbone.preprocess_config.to_dict()))
        self.config = config
        self.preprocess_config = PreprocessConfig.from_dict(config.preprocess)
        self.name = self.model_type
        self.num_frames = config.num_frames
        self.backbone_trainable = apply_backbone_policy(self.backbone, config.backbone_policy)
        self.task_heads = None
        if config.task_heads is not None:
            from icreward.models.task_heads import TaskHeads, TaskHeadsConfig

            self.task_heads = TaskHeads(TaskHeadsConfig.from_dict(config.task_heads))
            config.task_heads = self.task_heads.config.to_dict()

    # ---- heads: consistency (the model's own head) and the task heads it carries

    @property
    def head_names(self) -> tuple[str, ...]:
        """The heads this model answers: consistency, then motion / text / guidance where it carries them."""
        return ("consistency", *(self.task_heads.names if self.task_heads is not None else ()))

    def all_heads(
        self,
        image: torch.Tensor,
        video: torch.Tensor,
        prompt: Sequence[str | None] | None = None,
        *,
        value_range: str = "0,1",
    ) -> dict[str, torch.Tensor]:
        """Every head's reward `[B]` from one encoder pass (NaN for `text` where an item has no prompt), inputs
        checked as a call is. `forward` returns the selected one of them (`select_head`)."""
        image, video = self.checked_inputs(image, video, value_range)
        return self._all_heads(image, video, prompt)

    def _all_heads(
        self, image: torch.Tensor, video: torch.Tensor, prompt: Sequence[str | None] | None
    ) -> dict[str, torch.Tensor]:
        return self.heads_from_tokens(*self.encode(image, video), video, prompt)

    def heads_from_tokens(
        self, img_tokens: Tokens, vid_tokens: Tokens, video: torch.Tensor, prompt: Sequence[str | None] | None = None
    ) -> dict[str, torch.Tensor]:
        """`all_heads` from backbone tokens already computed (`encode`) and the frames `video [B,T,3,H,W]` in [0, 1]
        that the motion features read: for a caller that needs the tokens too (`icreward.explain`)."""
        consistency = self.reward_from_tokens(img_tokens, vid_tokens)
        if self.task_heads is None:
            return {"consistency": consistency}
        from icreward.models.task_heads import motion_inputs

        return {"consistency": consistency, **self.task_heads(consistency, motion_inputs(video), prompt)}

    # ---- the model: encode -> head -> normalize

    def encode(self, image: torch.Tensor, video: torch.Tensor) -> tuple[Tokens, Tokens]:
        """Backbone tokens of `image [B,3,H,W]` and `video [B,T,3,H,W]` (both in [0, 1]), in one backbone batch.

        Returns `({"cls": [B,D], "patch": [B,N,D]}, {"cls": [B,T,D], "patch": [B,T,N,D]})`.
        """
        img_tokens, (vid_tokens,) = self.encode_videos(image, video)
        return img_tokens, vid_tokens

    def encode_image(self, image: torch.Tensor) -> Tokens:
        """Backbone tokens of `image [B,3,H,W]` in [0, 1]: `{"cls": [B,D], "patch": [B,N,D]}`."""
        if image.dim() != 4:
            raise ValueError(f"expected image [B,3,H,W], got {tuple(image.shape)}")
        return self.backbone(preprocess(image, self.preprocess_config))

    def encode_video(self, video: torch.Tensor) -> Tokens:
        """Backbone tokens of `video [B,T,3,H,W]` in [0, 1], frame by frame: `{"cls": [B,T,D], "patch": [B,T,N,D]}`."""
        if video.dim() != 5:
            raise ValueError(f"expected video [B,T,3,H,W], got {tuple(video.shape)}")
        b, t = video.shape[:2]
        tokens = self.backbone(preprocess(video, self.preprocess_config).flatten(0, 1))  # (B*T, ...)
        return {k: v.unflatten(0, (b, t)) for k, v in tokens.items()}  # (B, T, ...)

    def reward_from_tokens(self, img_tokens: Tokens, vid_tokens: Tokens) -> torch.Tensor:
        """Normalised reward `[B]` from backbone tokens: `forward` without the backbone (cached-feature training)."""
        return self.normalize(self.head(img_tokens, vid_tokens))

    def rewards_for_image(
        self,
        image: torch.Tensor,
        videos: torch.Tensor,
        prompt: Sequence[str] | None = None,
        *,
        value_range: str = "0,1",
    ) -> torch.Tensor:
        """Rewards `[B]` of B candidate `videos [B,T,3,H,W]` of one `image [3,H,W]`, the image encoded once.

        The B videos go through the backbone as one clip of B*T frames (it sees frames one by one), and the image's
        tokens are shared by every video in the head. Inputs are checked as a call is (`check_reward_inputs`).
        """
        if self.selected_head != "consistency":  # the task heads read the video alone: broadcast the image
            return super().rewards_for_image(image, videos, prompt, value_range=value_range)
        image, videos = self.checked_inputs(image, videos, value_range, layout="shared")
        b, t = videos.shape[:2]
        img_tokens, (vid_tokens,) = self.encode_videos(image[None], videos.flatten(0, 1)[None])  # (1,..), (1,B*T,..)
        img_tokens = {k: v.expand(b, *v.shape[1:]) for k, v in img_tokens.items()}  # (B, ...)
        vid_tokens = {k: v[0].unflatten(0, (b, t)) for k, v in vid_tokens.items()}  # (B, T, ...)
        return self.reward_from_tokens(img_tokens, vid_tokens)

    def head(self, img_tokens: Tokens, vid_tokens: Tokens, return_attention: bool = False) -> torch.Tensor:
        """Raw reward `[B]` from the tokens `encode` returns (with `return_attention`: `(reward, attention maps)`)."""
        raise NotImplementedError

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """z-normalise raw rewards with the stored validation statistics (identity until they are set)."""
        return (raw - self.config.score_mean) / self.config.score_std

    def forward(
        self,
        image: torch.Tensor,
        video: torch.Tensor,
        prompt: Sequence[str] | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """Normalised reward `[B]` of `image [B,3,H,W]` and `video [B,T,3,H,W]` in [0, 1], differentiable w.r.t. both:
        the selected head's (`select_head`; `consistency` unless another was chosen). `prompt` (one string or None
        per item) is read by the text head, and by guidance through it.
        """
        if self.selected_head != "consistency":
            if return_attention:
                raise ValueError(f"attention maps belong to the consistency head, not {self.selected_head!r}")
            return self._all_heads(image, video, prompt)[self.selected_head]
        out = self.head(*self.encode(image, video), return_attention=return_attention)
        if return_attention:
            return self.normalize(out[0]), out[1]
        return self.normalize(out)

    def forward_pairs(
        self,
        image: torch.Tensor,
        video_a: torch.Tensor,
        video_b: torch.Tensor,
        prompt: Sequence[str] | None = None,
        *,
        value_range: str = "0,1",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised rewards `(r_a [B], r_b [B])` of two videos made from the same images, in one forward pass.

        The image is encoded once; the frames of A and B go through the backbone in the same batch as the image.
        Inputs are checked as a call is (`check_reward_inputs`).
        """
        image, (video_a, video_b) = self.checked_inputs(image, [video_a, video_b], value_range)
        img_tokens, (a_tokens, b_tokens) = self.encode_videos(image, video_a, video_b)
        r_a, r_b = self.head_pairs(img_tokens, a_tokens, b_tokens)
        return self.normalize(r_a), self.normalize(r_b)

    def head_pairs(self, img_tokens: Tokens, a_tokens: Tokens, b_tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw rewards `(r_a, r_b)` from cached tokens: A and B are stacked into one head call and split again."""
        img = {k: torch.cat([v, v]) for k, v in img_tokens.items()}  # (2B, ...)
        vid = {k: torch.cat([a_tokens[k], b_tokens[k]]) for k in a_tokens}  # (2B, T, ...)
        return self.head(img, vid).chunk(2)  # (2B,) -> (B,), (B,)

    def encode_videos(self, image: torch.Tensor, *videos: torch.Tensor) -> tuple[Tokens, list[Tokens]]:
        """Tokens of one image batch `[B,3,H,W]` and of V videos `[B,T,3,H,W]` of the same images, in a single backbone
        call (what a training step on pairs needs): `(image tokens, [tokens of each video])`."""
        if image.dim() != 4:
            raise ValueError(f"expected image [B,3,H,W], got {tuple(image.shape)}")
        b = image.shape[0]
        for video in videos:
            if video.dim() != 5 or video.shape[0] != b or video.shape[1:2] != videos[0].shape[1:2]:
                raise ValueError(
                    f"expected videos [B,T,3,H,W] with B = {b} and one T, got {[tuple(v.shape) for v in videos]}"
                )
        t = videos[0].shape[1]
        img = preprocess(image, self.preprocess_config)  # (B, 3, h, w)
        frames = [preprocess(v, self.preprocess_config).flatten(0, 1) for v in videos]  # V x (B*T, 3, h, w)
        if any(f.shape[-2:] != img.shape[-2:] for f in frames):
            raise ValueError(
                f"image and frames preprocess to different sizes ({tuple(img.shape[-2:])} vs "
                f"{[tuple(f.shape[-2:]) for f in frames]}); set a crop in the preprocessing config"
            )
        tokens = self.backbone(torch.cat([img, *frames]))  # {"cls": (B + V*B*T, D), "patch": (B + V*B*T, N, D)}
        img_tokens = {k: v[:b] for k, v in tokens.items()}  # (B, ...)
        per_video = {k: v[b:].unflatten(0, (len(videos), b, t)) for k, v in tokens.items()}  # (V, B, T, ...)
        return img_tokens, [{k: v[i] for k, v in per_video.items()} for i in range(len(videos))]

    # ---- training helpers

    def train(self, mode: bool = True) -> RewardModel:
        """Like `nn.Module.train`, except that a frozen backbone stays in eval mode (no dropout, fixed statistics)."""
        super().train(mode)
        if parse_backbone_policy(self.config.backbone_policy).kind == "frozen":
            self.backbone.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts: total, trainable, and trainable in the backbone (for logging)."""
        return {
            "total": sum(p.numel() for p in self.parameters()),
            "trainable": count_trainable(self),
            "backbone_trainable": count_trainable(self.backbone),
        }

    def param_groups(self, lr: float, weight_decay: float, backbone_lr: float | None = None) -> list[dict]:
        """The optimizer's parameter groups (AdamW), each `{"params", "lr", "weight_decay", "name"}`.

        Trainable parameters split into backbone / head x decay / no decay x learning-rate multiple, in that sorted
        order (the optimizer state's layout: a resumed run relies on it). Biases, norms, embeddings, tokens and
        learned queries are never decayed. Trainable backbone parameters train at `backbone_lr` (None: `lr`).

        The contract with submodules: a submodule may declare `lr_scale` (a class or instance attribute); its own
        parameters (not its children's) then train at that multiple of their learning rate, in a group named
        `..._lr_x<scale>`. Raises `IcrewardError` when nothing is trainable.
        """
        norms = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.Embedding)
        embedding_names = re.compile(r"(embed|embedding|embeddings|token|tokens|queries)$")  # cls_token, pos_embed
        groups: dict[tuple[bool, bool, float], list[nn.Parameter]] = {}
        for module_name, module in self.named_modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad:
                    continue
                in_backbone = f"{module_name}.{name}".startswith("backbone.")
                decay = param.ndim >= 2 and not isinstance(module, norms) and not embedding_names.search(name)
                groups.setdefault((in_backbone, decay, float(getattr(module, "lr_scale", 1.0))), []).append(param)
        if not groups:
            raise IcrewardError("the model has no trainable parameters")
        backbone_lr = backbone_lr if backbone_lr is not None else lr
        return [
            {
                "params": params,
                "lr": scale * (backbone_lr if in_backbone else lr),
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{'backbone' if in_backbone else 'head'}{'' if decay else '_no_decay'}"
                + ("" if scale == 1.0 else f"_lr_x{scale:g}"),
            }
            for (in_backbone, decay, scale), params in sorted(groups.items())
        ]

    def set_score_normalization(self, mean: float, std: float) -> None:
        """Store the raw-reward mean and std measured on validation data; `forward` then returns z-scores."""
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(f"score normalisation needs a finite mean and a positive std, got {mean}, {std}")
        self.config.score_mean, self.config.score_std = float(mean), float(std)

    # ---- checkpoints

    def save_pretrained(
        self, path: str | Path, training: dict[str, Any] | None = None, save_backbone: bool = True
    ) -> None:
        """Write the checkpoint folder `path` atomically (a crash leaves any older checkpoint there intact).

        `training` (JSON-serialisable) replaces `config.training`. `save_backbone=False` leaves out the weights of a
        frozen `hf:` backbone, which `from_pretrained` then rebuilds from its spec (smaller, but no longer
        self-contained: loading needs the hub or the local folder the spec names).
        """
        if training is not None:
            self.config.training = json.loads(json.dumps(training))
        if self.task_heads is not None:  # the heads' statistics and normalisation live in their own config
            self.config.task_heads = json.loads(json.dumps(self.task_heads.config.to_dict()))
        if not save_backbone and not self._backbone_rebuilds_from_spec():
            raise ValueError(
                f"save_backbone=False needs a frozen hf: backbone (its weights come back from its spec); this one is "
                f"{self.config.backbone!r} with policy {self.config.backbone_policy!r}"
            )
        state = {
            k: v.detach().contiguous()
            for k, v in self.state_dict().items()
            if save_backbone or not k.startswith("backbone.")
        }
        from icreward.version import __version__

        meta = {"model_type": self.model_type, "icreward_version": __version__, "backbone_saved": save_backbone}
        meta.update(self.config.to_dict())
        # Into an earlier checkpoint or a new or empty folder; only config.json and model.safetensors are replaced
        # (other files, e.g. a card.json, stay), config.json last: a crash never leaves a mix that loads.
        files = (WEIGHTS_NAME, CONFIG_NAME)  # what marks an earlier checkpoint; config.json goes in last
        with atomic_dir(path, own=files, marker=files, what="checkpoint") as tmp:
            safetensors.torch.save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            os.chmod(tmp / WEIGHTS_NAME, 0o666 & ~current_umask())  # safetensors makes it 0600
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")

    def _backbone_rebuilds_from_spec(self) -> bool:
        return self.config.backbone.startswith("hf:") and self.config.backbone_policy == "frozen"

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> RewardModel:
        """Rebuild a model from a checkpoint folder (or a Hugging Face hub id), in eval mode.

        Called on `RewardModel` it returns whichever model type the folder holds. Raises `IcrewardError` naming the
        folder and what is wrong with it.
        """
        folder = _resolve_checkpoint(path)

        def fail(reason: str) -> IcrewardError:
            return IcrewardError(f"{folder}: {reason}")

        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for p in (config_path, weights_path):
            if not p.is_file():
                raise fail(f"not a checkpoint: {p.name} is missing")
        try:
            meta = json.loads(config_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise fail(f"{CONFIG_NAME} is unreadable: {e}") from e
        if not isinstance(meta, dict):
            raise fail(f"{CONFIG_NAME} is not a JSON object")
        model_type = meta.pop("model_type", None)
        meta.pop("icreward_version", None)
        backbone_saved = meta.pop("backbone_saved", True)
        if model_type not in RewardModel.types:
            known = ", ".join(RewardModel.types)
            raise fail(f"unknown model_type {model_type!r} in {CONFIG_NAME}; known: {known}")
        model_cls = RewardModel.types[model_type]
        if not issubclass(model_cls, cls):
            raise fail(f"holds a {model_type!r} model ({model_cls.__name__}), not a {cls.__name__}")
        try:
            model = model_cls(model_cls.config_class.from_dict(meta))
        except IcrewardError as e:
            raise fail(f"cannot rebuild the model: {e}") from e
        except (TypeError, ValueError) as e:
            raise fail(f"{CONFIG_NAME} does not describe a valid {model_cls.__name__}: {e}") from e
        try:
            state = safetensors.torch.load_file(str(weights_path), device=str(map_location))
        except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
            raise fail(f"{WEIGHTS_NAME} is unreadable: {e}") from e
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise fail(f"{WEIGHTS_NAME} does not fit the model its {CONFIG_NAME} describes: {e}") from e
        if not backbone_saved:
            missing = [k for k in missing if not k.startswith("backbone.")]
        if missing or unexpected:
            raise fail(
                f"{WEIGHTS_NAME} does not fit the model its {CONFIG_NAME} describes: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        return model.to(map_location).eval()


def _resolve_checkpoint(path: str | Path) -> Path:
    """A local folder as is; an `owner/name` that is not a local path is fetched from the Hugging Face hub."""
    local = Path(path)
    if local.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
        if not local.is_dir():
            raise IcrewardError(f"{local}: no such checkpoint folder")
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(path), allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as e:  # offline, unknown repo, no access: all the same to the user
        raise IcrewardError(f"{path}: no such checkpoint folder, nor a model on the Hugging Face hub ({e})") from e


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> RewardModel:
    """Load any learned reward from its checkpoint folder, dispatching on `model_type` in its config.json."""
    return RewardModel.from_pretrained(path, map_location=map_location)
