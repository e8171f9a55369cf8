"""Training the task heads (`motion`, `text`, `guidance`) of a reward model on per-dimension pair labels.

The consistency model stays as it is (its own trainer made it); what it feeds the task heads is weight-free and
frozen (the motion field, the text encoder's embeddings, the consistency z-score), so every video is read once and
the heads train on those features in seconds:

1. `motion` and `text` jointly, each with the Bradley-Terry-with-ties loss on the pairs that have its label
   (`labels.motion`, `labels.text` with a `prompt`), full batch with AdamW, the epoch with the best validation loss
   kept;
2. their z-normalisation from their raw outputs on the validation videos;
3. `guidance`'s three non-negative weights on `labels.overall`, the two heads frozen, then its own z-normalisation.

The result is a checkpoint: the base model's config and weights plus `task_heads` and the heads' weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from icreward.errors import IcrewardError
from icreward.losses import btt_loss
from icreward.models.task_heads import N_CAMERA
from icreward.rules import CONSISTENT_MODE, label_value

FEATURE_BATCH = 16  # videos per pass when reading features
MOVE_LOSS_WEIGHT = 0.5  # the gate fusion's auxiliary loss on the prompts' camera class, relative to the BTT loss
CAP_QUANTILE = 0.9  # guidance's consistency cap: this quantile of the faithful validation videos' consistency


@dataclass
class HeadTrainConfig:
    heads: tuple[str, ...] = ("motion", "text", "guidance")
    text_encoder: str = "minilm"
    text_fusion: str = "film"
    d_model: int = 32
    epochs: int = 400  # full-batch steps of the motion and text heads
    guidance_epochs: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-3
    theta: float = 5.0
    seed: int = 0
    batch_size: int = FEATURE_BATCH
    device: str = "cpu"


@dataclass
class VideoFeatures:
    """What the task heads read of every distinct (image, video) of some manifests."""

    keys: dict[tuple[str, str], int]  # (image, video) -> row
    modes: list[str | None]  # each video's failure mode where the manifest says (`mode_a` / `mode_b`), else None
    consistency: torch.Tensor  # [N] the base model's z-scores
    features: torch.Tensor  # [N, F] raw motion descriptors
    steps: torch.Tensor  # [N, T-1, S]


@dataclass
class PairSet:
    """Pairs of one dimension: rows of A and B in `VideoFeatures`, labels (+1 / -1 / 0), prompts."""

    a: torch.Tensor
    b: torch.Tensor
    labels: torch.Tensor
    prompts: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def read_features(
    model, manifests: Sequence, *, batch_size: int, device: str, log: Callable[[str], None] | None = None
) -> VideoFeatures:
    """Decode every distinct (image, video) of the pair manifests once: the model's consistency z-score and the
    motion inputs, in one pass per batch of equal shapes."""
    from icreward.models.task_heads import motion_inputs
    from icreward.scoring.engine import Item, _media_loader, prefetch

    items: dict[tuple[str, str], Item] = {}
    modes: dict[tuple[str, str], str | None] = {}
    for manifest in manifests:
        for rec in manifest.records:
            for video, mode in ((rec.video_a, rec.extra.get("mode_a")), (rec.video_b, rec.extra.get("mode_b"))):
                key = (str(rec.image), str(video))
                items.setdefault(key, Item(str(len(items)), rec.image, video))
                modes[key] = mode
    load = _media_loader(model.num_frames, model.max_side)
    rows: list[tuple[float, torch.Tensor, torch.Tensor]] = [None] * len(items)  # type: ignore[list-item]
    pending: list = []

    def flush() -> None:
        if not pending:
            return
        images = torch.stack([p[1] for p in pending]).to(device)
        videos = torch.stack([p[2] for p in pending]).to(device)
        with torch.no_grad():
            consistency = model.reward_from_tokens(*model.encode(images, videos))
            inputs = motion_inputs(videos)
        for i, (item, _, _) in enumerate(pending):
            rows[int(item.key)] = (float(consistency[i]), inputs.features[i].cpu(), inputs.steps[i].cpu())
        pending.clear()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        for n, (item, image, video, error) in enumerate(prefetch(load, items.values(), pool, 2 * batch_size)):
            if error is not None:
                raise IcrewardError(f"cannot read {item.video}: {error}")
            if pending and (pending[0][1].shape != image.shape or pending[0][2].shape != video.shape):
                flush()
            pending.append((item, image, video))
            if len(pending) >= batch_size:
                flush()
            if log is not None and (n + 1) % 500 == 0:
                log(f"  features of {n + 1} of {len(items)} videos")
        flush()
    return VideoFeatures(
        {k: int(item.key) for k, item in items.items()},
        [modes[k] for k in items],
        torch.tensor([r[0] for r in rows]),
        torch.stack([r[1] for r in rows]),
        torch.stack([r[2] for r in rows]),
    )


def pair_set(manifest, videos: VideoFeatures, label_key: str, need_prompt: bool = False) -> PairSet:
    """The pairs of `manifest` that carry `labels[label_key]` (and a prompt where needed)."""
    a, b, labels, prompts = [], [], [], []
    for rec in manifest.records:
        label = rec.labels.get(label_key)
        if label is None or (need_prompt and not rec.prompt):
            continue
        a.append(videos.keys[(str(rec.image), str(rec.video_a))])
        b.append(videos.keys[(str(rec.image), str(rec.video_b))])
        labels.append(label_value(label))
        prompts.append(rec.prompt)
    return PairSet(torch.tensor(a, dtype=torch.long), torch.tensor(b, dtype=torch.long), torch.tensor(labels), prompts)


def _accuracy(delta: torch.Tensor, labels: torch.Tensor) -> float:
    decided = labels != 0
    if not decided.any():
        return float("nan")
    return float(((delta[decided] > 0) == (labels[decided] > 0)).float().mean())


def strip_camera(prompt: str) -> str:
    """`prompt` without its camera phrase (VBench-I2V's, after a comma): "a cat, camera pans left" -> "a cat"."""
    from icreward.prompts import CAMERA_PHRASES

    for phrase in CAMERA_PHRASES.values():
        prompt = prompt.replace(f", {phrase}", "").replace(phrase, "")
    return prompt.strip(" ,")


class _Text:
    """Prompt embeddings of a pair set, computed once, and the camera class each prompt names (`CAMERA_MOVES`
    index, or 7 for none) for the `gate` fusion's auxiliary loss."""

    def __init__(self, heads, prompts: list[str | None]):
        from icreward.prompts import CAMERA_MOVES, camera_move

        has_text = heads.text is not None
        self.embedding = heads.embed([p or "" for p in prompts]) if prompts and has_text else None
        names = [camera_move(p) for p in prompts]
        self.moves = torch.tensor([CAMERA_MOVES.index(n) if n else len(CAMERA_MOVES) for n in names], dtype=torch.long)
        # For the gate fusion: the same prompts without their camera phrase, class "none", what a prompt that asks
        # for no camera move looks like (synthetic prompts always name one)
        stripped = sorted({strip_camera(p) for p in prompts if p and camera_move(p)} - {""})
        gate = has_text and heads.text.fusion == "gate"
        self.none_embedding = heads.embed(stripped) if stripped and gate else None


def _losses(heads, videos: VideoFeatures, sets: dict[str, PairSet], texts: dict[str, _Text], theta: float):
    """BTT loss and pair accuracy of the motion and text heads on their pair sets."""
    features = heads.standardised(videos.features)
    out = {}
    if heads.motion is not None and len(sets["motion"]):
        s = sets["motion"]
        r = heads.motion(features)[:, 0]
        delta = r[s.a] - r[s.b]
        out["motion"] = (btt_loss(r[s.a], r[s.b], s.labels, theta), _accuracy(delta.detach(), s.labels))
    if heads.text is not None and len(sets["text"]):
        s, e = sets["text"], texts["text"].embedding
        camera = videos.features[:, -N_CAMERA:]
        r_a = heads.text(features[s.a], videos.steps[s.a], e, camera[s.a])
        r_b = heads.text(features[s.b], videos.steps[s.b], e, camera[s.b])
        loss = btt_loss(r_a, r_b, s.labels, theta)
        if heads.text.fusion == "gate":  # the prompt's camera class, as the synthetic prompts phrase it
            t = texts["text"]
            logits, classes = heads.text.move_logits(e), t.moves
            if t.none_embedding is not None:
                none = heads.text.move_logits(t.none_embedding)
                logits = torch.cat([logits, none])
                classes = torch.cat([classes, classes.new_full((none.shape[0],), none.shape[1] - 1)])
            loss = loss + MOVE_LOSS_WEIGHT * F.cross_entropy(logits, classes)
        out["text"] = (loss, _accuracy((r_a - r_b).detach(), s.labels))
    return out


def _raw_outputs(heads, videos: VideoFeatures, rows: torch.Tensor, prompts: list[str | None] | None):
    from icreward.models.task_heads import MotionInputs

    with torch.no_grad():
        return heads.raw(MotionInputs(videos.features[rows], videos.steps[rows]), prompts)


def train_task_heads(
    model,
    train_manifest,
    val_manifest,
    config: HeadTrainConfig,
    log: Callable[[str], None] = print,
    videos: VideoFeatures | None = None,
    static_videos: Sequence | None = None,
) -> dict:
    """Give `model` (a `RewardModel`) trained task heads; returns a summary of the training (accuracies, weights).

    `videos`: the features of both manifests' videos when already read (`read_features`), e.g. to compare
    designs on one reading. `static_videos`: real videos (`icreward.evaluation.heads_check.RealVideo`) whose
    static-test pairs (the real video preferred to a frozen copy of its image, the image jittering in place and the
    video looping back and forth) join guidance's `overall` pairs, counted like any other pair."""
    from icreward.models.task_heads import TaskHeads, TaskHeadsConfig

    torch.manual_seed(config.seed)
    model = model.eval()
    if videos is None:
        log(f"reading {len(train_manifest.records)} + {len(val_manifest.records)} pairs")
        videos = read_features(
            model, [train_manifest, val_manifest], batch_size=config.batch_size, device=config.device, log=log
        )
    heads_config = TaskHeadsConfig(
        heads=list(config.heads), text_encoder=config.text_encoder, text_fusion=config.text_fusion,
        d_model=config.d_model,
    )  # fmt: skip
    if "text" in config.heads:
        from icreward.text_encoders import build_text_encoder

        encoder = build_text_encoder(config.text_encoder)
        heads_config.text_dim, heads_config.text_token_dim = encoder.dim, encoder.token_dim
    heads = TaskHeads(heads_config)
    train_rows = sorted(
        {videos.keys[(str(r.image), str(v))] for r in train_manifest.records for v in (r.video_a, r.video_b)}
    )
    heads.set_feature_statistics(videos.features[train_rows])
    sets = {
        split: {
            "motion": pair_set(m, videos, "motion"),
            "text": pair_set(m, videos, "text", need_prompt=True),
            "overall": pair_set(m, videos, "overall"),
        }
        for split, m in (("train", train_manifest), ("val", val_manifest))
    }
    for split, s in sets.items():
        log(f"{split}: " + ", ".join(f"{len(v)} {k} pairs" for k, v in s.items()))
    texts = {split: {"text": _Text(heads, s["text"].prompts)} for split, s in sets.items()}

    summary: dict = {"pairs": {split: {k: len(v) for k, v in s.items()} for split, s in sets.items()}}
    params = [p for name, p in heads.named_parameters() if not name.startswith("guidance")]
    if params:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        best, best_state = math.inf, None
        for epoch in range(config.epochs):
            heads.train()
            losses = _losses(heads, videos, sets["train"], texts["train"], config.theta)
            if not losses:
                raise IcrewardError("no motion or text labels in the training manifest (labels.motion, labels.text)")
            optimizer.zero_grad()
            sum(loss for loss, _ in losses.values()).backward()
            optimizer.step()
            heads.eval()
            with torch.no_grad():
                val = _losses(heads, videos, sets["val"], texts["val"], config.theta)
            val_loss = (
                sum(float(loss) for loss, _ in val.values()) if val else float(sum(x for x, _ in losses.values()))
            )
            if val_loss < best:
                best, best_state = val_loss, {k: v.clone() for k, v in heads.state_dict().items()}
                summary["best_epoch"] = epoch
                summary["val_accuracy"] = {k: acc for k, (_, acc) in val.items()}
                summary["train_accuracy"] = {k: acc for k, (_, acc) in losses.items()}
        heads.load_state_dict(best_state)
        log(f"motion/text heads: best epoch {summary['best_epoch']}, val accuracy {summary['val_accuracy']}")
    # z-normalisation of each head on the validation videos (text under the validation prompts)
    val_rows = sorted(
        {videos.keys[(str(r.image), str(v))] for r in val_manifest.records for v in (r.video_a, r.video_b)}
    )
    rows = torch.tensor(val_rows, dtype=torch.long)
    raw = _raw_outputs(heads, videos, rows, None)
    norm = {}
    if "motion" in raw:
        norm["motion"] = [float(raw["motion"].mean()), float(raw["motion"].std().clamp(min=1e-6))]
    if heads.text is not None and len(sets["val"]["text"]):
        s = sets["val"]["text"]
        both = torch.cat([s.a, s.b])
        text = _raw_outputs(heads, videos, both, s.prompts + s.prompts)["text"]
        norm["text"] = [float(text.mean()), float(text.std().clamp(min=1e-6))]
    heads.config.norm = norm
    if heads.guidance is not None:
        faithful = [r for r in val_rows if videos.modes[r] == CONSISTENT_MODE]
        if faithful:
            cap = float(torch.quantile(videos.consistency[faithful], CAP_QUANTILE).clamp(min=0.25))
            heads.config.consistency_cap = cap
        static = _static_pairs(model, heads, static_videos) if static_videos else None
        summary["guidance"] = _fit_guidance(heads, videos, sets, config, log, static)
        g = _guidance_values(heads, videos, rows, None).detach()
        heads.config.norm["guidance"] = [float(g.mean()), float(g.std().clamp(min=1e-6))]
    summary["norm"] = heads.config.norm
    model.task_heads = heads
    model.config.task_heads = heads.config.to_dict()
    return json.loads(json.dumps(summary))


def _guidance_values(heads, videos: VideoFeatures, rows: torch.Tensor, prompts) -> torch.Tensor:
    """Unnormalised guidance of `rows` (text under `prompts`, or dropped)."""
    return heads.combine(*_guidance_inputs(heads, videos, rows, prompts))


def _guidance_inputs(heads, videos: VideoFeatures, rows: torch.Tensor, prompts) -> tuple:
    """What guidance combines for `rows`: consistency, motion and text z-scores and the text's relevance."""
    raw = _raw_outputs(heads, videos, rows, prompts)
    motion = heads.normalise("motion", raw["motion"])
    text = relevance = None
    if "text" in raw:
        text = heads.normalise("text", raw["text"])
        with torch.no_grad():
            relevance = heads.text_relevance(prompts, len(rows))
    return videos.consistency[rows], motion, text, relevance


def _static_pairs(model, heads, items: Sequence) -> tuple:
    """Guidance inputs `(a, b)` of the static-test pairs of real videos: each video (A) against its frozen copy, its
    jitter and its loop (B), with the model's consistency and the (trained, frozen) heads."""
    from icreward.evaluation.heads_check import fallbacks
    from icreward.models.task_heads import motion_inputs

    rows_a, rows_b = [], []
    for i, item in enumerate(items):
        others = list(fallbacks(item, seed=i).values())
        clips = torch.stack([item.video, *others])  # (4, T, 3, h, w)
        prompts = [item.prompt] * len(clips)
        with torch.no_grad():
            images = item.image[None].expand(len(clips), -1, -1, -1)
            consistency = model.reward_from_tokens(*model.encode(images, clips))
            raw = heads.raw(motion_inputs(clips), prompts)
            motion = heads.normalise("motion", raw["motion"])
            text = heads.normalise("text", raw["text"]) if "text" in raw else None
            relevance = heads.text_relevance(prompts, len(clips)) if text is not None else None
        for k in range(1, len(clips)):
            pick = [0, k]
            parts = (consistency[pick], motion[pick], None if text is None else text[pick],
                     None if relevance is None else relevance[pick])  # fmt: skip
            rows_a.append(tuple(None if x is None else x[:1] for x in parts))
            rows_b.append(tuple(None if x is None else x[1:] for x in parts))

    def stack(rows: list) -> tuple:
        return tuple(None if rows[0][j] is None else torch.cat([r[j] for r in rows]) for j in range(4))

    return stack(rows_a), stack(rows_b)


def _fit_guidance(heads, videos: VideoFeatures, sets: dict, config: HeadTrainConfig, log, static=None) -> dict:
    """Fit guidance's weights on `labels.overall` with the other heads frozen (and, where given, on `static`: the
    static-test pairs of real videos from `_static_pairs`, the real video preferred)."""
    z = {}
    for split in ("train", "val"):
        s = sets[split]["overall"]
        if not len(s):
            continue
        prompts = s.prompts if heads.text is not None else None
        z[split] = (s, [_guidance_inputs(heads, videos, rows, prompts) for rows in (s.a, s.b)])
    if "train" not in z:
        raise IcrewardError("guidance needs labels.overall in the training manifest")
    optimizer = torch.optim.Adam([heads.guidance], lr=0.05)
    s, (a, b) = z["train"]
    n = len(s.labels)
    if static is not None:  # the static pairs, each counted like one overall pair
        n_static = len(static[0][0])
        static_labels = torch.ones(n_static, dtype=torch.long)
    for _ in range(config.guidance_epochs):
        loss = btt_loss(heads.combine(*a), heads.combine(*b), s.labels, config.theta)
        if static is not None:
            extra = btt_loss(heads.combine(*static[0]), heads.combine(*static[1]), static_labels, config.theta)
            loss = (loss * n + extra * n_static) / (n + n_static)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    result = {"weights": dict(zip(("consistency", "motion", "text"), heads.guidance_weights().tolist(), strict=True))}
    if static is not None:
        result["static_pairs"] = n_static
    with torch.no_grad():
        for split, (s, (a, b)) in z.items():
            delta = heads.combine(*a) - heads.combine(*b)
            result[f"{split}_accuracy"] = _accuracy(delta, s.labels)
    log(f"guidance: weights {result['weights']}, accuracy {result}")
    return result


def train_heads_run(
    init: str,
    data: str | Path,
    val: str | Path,
    out: str | Path,
    config: HeadTrainConfig,
    log: Callable[[str], None] = print,
) -> dict:
    """`icreward train --heads`: load `init` (a checkpoint or `default`), train its task heads on the `data` / `val`
    pair manifests and save the checkpoint to `out` (with the training summary under `training.task_heads`)."""
    from icreward.loading import load
    from icreward.manifest import load_manifest
    from icreward.models.base import RewardModel

    model = load(init)
    if not isinstance(model, RewardModel):
        raise IcrewardError(f"--init {init}: task heads go on a learned model, not on a handcrafted metric")
    train_manifest = load_manifest(data)
    val_manifest = load_manifest(val)
    summary = train_task_heads(model, train_manifest, val_manifest, config, log)
    training = dict(model.config.training)
    training["task_heads"] = {"config": {k: getattr(config, k) for k in config.__dataclass_fields__}, **summary}
    training["task_heads"]["data"] = {"train": str(data), "val": str(val)}
    model.save_pretrained(out, training=training)
    return summary
