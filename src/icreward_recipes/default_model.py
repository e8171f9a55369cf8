"""The recipe of the shipped default model (`icreward.load("default")`), reproducible from scratch on a CPU.

    python -m icreward_recipes.default_model --work build/default-model --out OUT_DIR \
        [--real-i2v ../shared/real-i2v ../shared/real-i2v-pia] [--yardstick benchmarks/fixtures/icbench-synth-wave1]

(`make default-model` runs it.) Steps, all seeded:
  1. `icreward synth` data: `n_sources` source images, half procedural scenes and half real imagery (library photos
     with emoji subjects, real video clips; the Debian packages are installed as root where missing), every
     failure mode including the identity/structure ones, most sources in the training split;
  2. every pair of one source's scored videos as a training pair (`expand_pairs`);
  3. IC-Reward with the monotone evidence branch (all measures, local ones included) and the IC head over the
     evidence maps (`head: map`) on the weight-free `patch-features` encoder with its grey-layout channels, trained
     with the Bradley-Terry-with-ties loss, early stopping on the validation split;
  4. an ablation on the validation split: where the model without its head (its mean part folded into the score
     normalisation) ranks the validation pairs at least as well, the head is dropped (`head: none`);
  5. stage 2, the task heads: data of their own (`heads_*`: prompts, the motion and text failure modes), the
     video features read once with the consistency model frozen, the motion and text heads trained for each text
     fusion (`film`, `cross`; the better on validation text accuracy kept), guidance's weights on `overall` labels
     (`icreward.training.heads`);
  6. evaluation on the recipe's own test split (sources never trained on), on the fixed wave-1 yardstick
     (`--yardstick`) and, where `--real-i2v` folders hold real I2V pairs, on the real-video check of
     `icreward.evaluation.robustness` (its `select` and `report` halves); with a head, each also without it (the
     head's output replaced by its validation mean);
     and of every task head (`evaluate_heads`: the heads' test split, the static test on the real videos, the camera
     text test, the PIA prompt check);
  7. the checkpoint (config.json, model.safetensors) and `card.json` (recipe, data, results, timings) written
     atomically to `--out`; the scoring frame count is set to `score_frames`. `--out` may be new, empty or an
     earlier checkpoint; a folder holding other files is refused before any work unless `--overwrite` (then only
     those three files are replaced, the others are kept).
Progress: bars on a terminal, a line now and then in a log; `--quiet` for neither.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DefaultRecipe:
    n_sources: int = 600  # source images of the synthetic data
    synth_seed: int = 1  # not the embedded benchmark's seed 0: its test scenes stay unseen
    real_share: float = 0.5  # share of sources from real imagery (photos with emoji subjects, real clips)
    modes: str = "all"  # failure modes drawn: "all" (wave-1 eleven + identity/structure modes) or "wave1"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test share of scenes
    tie_margin: float = 0.05  # the synth engine's margin, for the labels of the added pairs
    num_frames: int = 8  # frames per training video
    score_frames: int = 16  # frames the shipped checkpoint samples when scoring a file
    epochs: int = 6
    lr: float = 2e-3
    batch_size: int = 64
    seed: int = 0
    model: dict[str, Any] = field(
        default_factory=lambda: {
            "head": "map",
            "d_model": 32,
            "heads": 2,
            "head_queries": 2,
            "evidence": True,
            "evidence_measures": [  # icreward.models.evidence.ALL_MEASURES
                *("position", "match", "recall", "global", "pattern", "jitter", "local", "local_recall")
            ],
            "head_bound": 0.5,
        }
    )
    backbone_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"image_size": 128, "patch_size": 8, "structure": 4}
    )
    # Stage 2, the task heads (motion, text, guidance) on the consistency model of stage 1: data of their own with
    # prompts, the motion and text failure modes, and enough consistency failures for guidance to weigh them.
    heads_sources: int = 300
    heads_seed: int = 2
    heads_modes: tuple[str, ...] = (
        *("jitter", "pingpong", "stutter", "camera_mismatch", "subject_opposite", "motion_missing"),
        *("flicker", "color_drift", "subject_swap", "content_replacement", "subject_drift"),
    )
    heads_videos_per_image: int = 8
    heads_pairs_per_image: int = 12
    heads_split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    text_encoder: str = "minilm"
    text_fusions: tuple[str, ...] = ("film", "cross", "gate")  # each trained on one reading; best on validation kept
    head_epochs: int = 400
    camera_photos: int = 12  # held-out library photos of the camera text test


CHECKPOINT_MARKER = ("model.safetensors", "config.json")  # what marks an earlier checkpoint (config.json last)
OUTPUT_FILES = (*CHECKPOINT_MARKER, "card.json")  # what the recipe writes into --out


def synth_data(recipe: DefaultRecipe, work: Path, workers: int | None = None, progress: bool = True) -> Path:
    """The recipe's synthetic data folder under `work` (generated once, reused when complete)."""
    from icreward.synth import SynthConfig
    from icreward.synth.failures import CONSISTENCY_MODES

    if recipe.modes not in ("all", "wave1"):
        raise ValueError(f"modes must be 'all' or 'wave1', got {recipe.modes!r}")
    config = SynthConfig(
        n=recipe.n_sources,
        seed=recipe.synth_seed,
        split_fractions=recipe.split_fractions,
        real_share=recipe.real_share,
        modes=CONSISTENCY_MODES if recipe.modes == "all" else None,
    )
    return _generate_once(config, work / "synth", workers, progress)


def heads_synth_data(recipe: DefaultRecipe, work: Path, workers: int | None = None, progress: bool = True) -> Path:
    """The task heads' synthetic data folder under `work` (prompts, motion and text failures; made once)."""
    from icreward.synth import SynthConfig

    config = SynthConfig(
        n=recipe.heads_sources,
        seed=recipe.heads_seed,
        split_fractions=recipe.heads_split_fractions,
        real_share=recipe.real_share,
        modes=tuple(recipe.heads_modes),
        videos_per_image=recipe.heads_videos_per_image,
        pairs_per_image=recipe.heads_pairs_per_image,
    )
    return _generate_once(config, work / "synth-heads", workers, progress)


def _generate_once(config, root: Path, workers: int | None, progress: bool) -> Path:
    from icreward.synth.dataset import config_record, generate

    config.validate()
    summary = root / "synth.json"
    if summary.is_file() and json.loads(summary.read_text())["config"] == json.loads(json.dumps(config_record(config))):
        return root
    generate(config, root, workers=workers, progress=progress, overwrite=True)  # the recipe's own work folder
    return root


def _pair_accuracy(model, manifest) -> float:
    from icreward.evaluation.evaluate import pair_labels, reward_pairs
    from icreward.evaluation.stats import pair_accuracy

    rewards = reward_pairs(model, manifest, batch_size=16, device="cpu")
    return pair_accuracy(rewards[:, 0] - rewards[:, 1], pair_labels(manifest))


def evaluate_checkpoint(
    checkpoint: Path,
    test_manifest: Path,
    real_i2v: Sequence[Path] = (),
    yardstick: Path | None = None,
    head_offset: float | None = None,
) -> dict[str, Any]:
    """Pair accuracy on the synthetic test split, on the fixed wave-1 yardstick (`yardstick`: a synth folder whose
    `test.jsonl` is read) and, where `real_i2v` folders are given, the real-video check
    (`build_real_i2v_check`) on its `select` and `report` halves.

    With `head_offset` (the head's mean part over the validation videos), each result also gets `without_head`:
    the same check with the head's output replaced by that mean (`ICRewardModel.without_head`), the ablation that
    says how much ranking the head carries.
    """
    from icreward.evaluation.evaluate import pair_labels
    from icreward.loading import load
    from icreward.manifest import load_manifest

    model = load(str(checkpoint))
    models = {"model": model} | ({"without_head": model.without_head(head_offset)} if head_offset is not None else {})
    results: dict[str, Any] = {}
    checks = {"synth_test": test_manifest} | ({"yardstick": yardstick / "test.jsonl"} if yardstick else {})
    for name, path in checks.items():
        manifest = load_manifest(path, require_labels=True)
        results[name] = {"n_pairs": int((pair_labels(manifest) != 0).sum())}
        for key, m in models.items():
            accuracy = _pair_accuracy(m, manifest)
            results[name] |= {"pair_accuracy": accuracy} if key == "model" else {key: {"pair_accuracy": accuracy}}
    roots = [r for r in real_i2v if (r / "manifest.jsonl").is_file()]
    if roots:
        from icreward.evaluation.robustness import build_real_i2v_check, evaluate_real_i2v

        for split in ("select", "report"):
            cases = build_real_i2v_check(roots, split=split, seed=0)
            for key, m in models.items():
                real = {k: v for k, v in evaluate_real_i2v(m, cases).items() if k != "rows"}
                results.setdefault(f"real_i2v_{split}", {}).update(real if key == "model" else {key: real})
            del cases  # the uint8 videos of one half at a time
    return results


def drop_idle_head(model, val_manifest: Path) -> tuple[Any, dict[str, Any]]:
    """The model without its head where that ranks the validation pairs at least as well, and the ablation.

    The head's mean part over the validation videos becomes the offset folded into `score_mean`
    (`ICRewardModel.without_head`), so rewards keep their scale.
    """
    import numpy as np
    import torch

    from icreward.evaluation.evaluate import reward_pairs
    from icreward.interface import Scorer
    from icreward.manifest import load_manifest

    class HeadPart(Scorer):  # what the head adds to the raw reward, scored like any reward
        def __init__(self):
            super().__init__()
            self.model, self.name = model, "head-part"
            self.num_frames, self.max_side = model.num_frames, model.max_side

        def forward(self, image, video, prompt=None):
            return self.model.head_part(*self.model.encode(image, video))[0]

    val = load_manifest(val_manifest, require_labels=True)
    with torch.no_grad():
        parts = reward_pairs(HeadPart(), val, batch_size=16, device="cpu")
        offset = float(np.mean(parts))
        pruned = model.without_head(offset)
        with_head, without = _pair_accuracy(model, val), _pair_accuracy(pruned, val)
    ablation = {
        "val_pair_accuracy_with_head": with_head,
        "val_pair_accuracy_without_head": without,
        "head_part_mean": offset,
        "head_part_range": [float(np.min(parts)), float(np.max(parts))],
        "head_dropped": without >= with_head,
    }
    return (pruned if without >= with_head else model), ablation


def train_heads(model, recipe: DefaultRecipe, data: Path, work: Path, real_i2v: Sequence[Path] = ()) -> dict[str, Any]:
    """Stage 2: the task heads on `model` (in place), trained on `data`'s pairs. Each text fusion in
    `recipe.text_fusions` is trained on the same reading of the videos; the one kept has the best mean of its
    validation text accuracy and its accuracy on a camera set of the library's validation photos (the test photos
    are kept for the report). Where `real_i2v` folders are given, the static-test pairs of the videos of the
    real-video check's `select` half (each real video preferred to a frozen copy of its image, the image jittering
    and the video looping back and forth) join guidance's fit; the `report` half stays for the report. Returns the
    training summary with every fusion's figures."""
    import copy

    from icreward.evaluation.heads_check import camera_check
    from icreward.manifest import load_manifest
    from icreward.synth.camera_set import build_camera_set
    from icreward.synth.real_sources import real_imagery_available
    from icreward.training.heads import HeadTrainConfig, read_features, train_task_heads

    train_manifest, val_manifest = load_manifest(data / "train.jsonl"), load_manifest(data / "val.jsonl")
    videos = read_features(model, [train_manifest, val_manifest], batch_size=16, device="cpu")
    select_dir = work / "camera-set-val" if real_imagery_available() else None  # the camera sets are of real photos
    if select_dir is not None and not (select_dir / "pairs.jsonl").is_file():
        build_camera_set(select_dir, n_photos=recipe.camera_photos, seed=0, split="val", overwrite=True)
    roots = [r for r in real_i2v if (r / "manifest.jsonl").is_file()]
    static_videos = None
    if roots:
        from icreward.evaluation.heads_check import real_videos

        static_videos = [v for v in real_videos(roots, num_frames=model.num_frames) if v.split == "select"]
    trials: dict[str, Any] = {}
    best = None
    for fusion in recipe.text_fusions:
        config = HeadTrainConfig(
            text_encoder=recipe.text_encoder, text_fusion=fusion, epochs=recipe.head_epochs, seed=recipe.seed
        )
        summary = train_task_heads(
            model, train_manifest, val_manifest, config, log=lambda _: None, videos=videos, static_videos=static_videos
        )
        score = summary["val_accuracy"].get("text", 0.0)
        if select_dir is not None:
            summary["camera_val"] = camera_check({"model": model}, select_dir)["model"]
            score = (score + summary["camera_val"]["accuracy"]) / 2
        trials[fusion] = summary
        if best is None or score > best[1]:
            best = (fusion, score, copy.deepcopy(model.task_heads))
    model.task_heads = best[2]
    model.config.task_heads = best[2].config.to_dict()
    return {"text_fusion": best[0], "fusions": trials}


def evaluate_heads(
    checkpoint: Path, data: Path, real_i2v: Sequence[Path], camera_dir: Path, recipe: DefaultRecipe
) -> dict[str, Any]:
    """The task heads measured: every head on the heads data's test split (against its own labels, and the static
    test), the static test on the real videos (all, and per half of the real-video check's split), the camera text
    test on the library's test photos (against `metric:camera-motion`) and the PIA prompt check."""
    from icreward.evaluation.evaluate import evaluate_model
    from icreward.evaluation.heads_check import camera_check, prompt_check, real_videos, static_check
    from icreward.loading import load
    from icreward.manifest import load_manifest
    from icreward.synth.camera_set import build_camera_set

    test = load_manifest(data / "test.jsonl", require_labels=True)
    val = load_manifest(data / "val.jsonl", require_labels=True)
    synth, _ = evaluate_model(str(checkpoint), test, val, n_resamples=200, seed=0, batch_size=16, device="cpu")
    results: dict[str, Any] = {"synth_test": {"heads": synth["heads"], "static_wins": synth["static_wins"]}}
    model = load(str(checkpoint))
    roots = [r for r in real_i2v if (r / "manifest.jsonl").is_file()]
    if roots:
        items = real_videos(roots, num_frames=model.num_frames)
        results["real_static"] = static_check(model, items)
        results["real_static_dynamic_degree"] = static_check(load("metric:dynamic-degree"), items)
        pia = [i for i in items if i.folder == "real-i2v-pia"]
        if pia:
            results["pia_prompts"] = prompt_check(model, pia)
    from icreward.synth.real_sources import real_imagery_available

    if real_imagery_available():  # the camera set is of real photographs
        if not (camera_dir / "pairs.jsonl").is_file():
            build_camera_set(camera_dir, n_photos=recipe.camera_photos, seed=0, split="test", overwrite=True)
        scorers = {"model": model, "metric:camera-motion": load("metric:camera-motion")}
        results["camera"] = camera_check(scorers, camera_dir)
    return results


CARD_CHECK_SYNTH = {"n": 4, "seed": 7, "frames": 8, "size": 128}  # a small synthetic set the card is checked on


def card_check(model, work: Path) -> dict[str, Any]:
    """Rewards of `model` on a small fixed synthetic set (`CARD_CHECK_SYNTH`, every split) and its pair accuracy.

    Stored in `card.json` as `check`; a test recomputes it with the current code, so the card cannot silently
    describe other code than what loads the checkpoint.
    """
    import numpy as np

    from icreward.evaluation.evaluate import pair_labels, reward_pairs
    from icreward.evaluation.stats import pair_accuracy
    from icreward.manifest import load_manifest
    from icreward.synth import SynthConfig
    from icreward.synth.dataset import generate

    root = work / "card-check"
    generate(SynthConfig(**CARD_CHECK_SYNTH), root, workers=1, progress=False, overwrite=True)
    rewards, labels = [], []
    for split in ("train", "val", "test"):
        manifest = load_manifest(root / f"{split}.jsonl", require_labels=True)
        rewards.append(reward_pairs(model, manifest, batch_size=16, device="cpu"))
        labels.append(pair_labels(manifest))
    rewards_ab, all_labels = np.concatenate(rewards), np.concatenate(labels)
    return {
        "synth": dict(CARD_CHECK_SYNTH),
        "n_pairs": len(all_labels),
        "pair_accuracy": pair_accuracy(rewards_ab[:, 0] - rewards_ab[:, 1], all_labels),
        "rewards": [[round(float(r), 6) for r in pair] for pair in rewards_ab],
    }


def _count_lines(path: Path) -> int:
    with open(path) as f:
        return sum(1 for _ in f)


def check_out(out: str | Path, work: str | Path, real_i2v: Sequence[Path] = (), overwrite: bool = False) -> None:
    """Refuse (`IcrewardError`) an `--out` that is the work folder, is, holds or lies inside `--real-i2v`, is a file,
    or is a non-empty folder that is not an earlier checkpoint (unless `overwrite`)."""
    from icreward.atomic import check_output_dir, same_path
    from icreward.errors import IcrewardError

    if same_path(out, work):
        raise IcrewardError(f"--out {out}: is the --work folder; give the checkpoint a folder of its own")
    inputs = {f"--real-i2v {root}": root for root in real_i2v}
    check_output_dir(out, flag="--out", inputs=inputs, marker=CHECKPOINT_MARKER, overwrite=overwrite, what="checkpoint")


def make_default_model(
    recipe: DefaultRecipe,
    work: str | Path,
    out: str | Path,
    real_i2v: Sequence[Path] = (),
    yardstick: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the recipe; returns the card written beside the checkpoint in `out`.

    `real_i2v`: folders of real pairs for the real-video check; `yardstick`: the fixed wave-1 synthetic test folder.
    `out` is checked first (`check_out`), so a refusal costs nothing; `progress` shows bars or lines on stderr.
    """
    from icreward.progress import silenced

    real_i2v = [Path(r) for r in real_i2v]
    check_out(out, work, real_i2v, overwrite)
    with silenced(not progress):
        return _make_default_model(recipe, Path(work), Path(out), real_i2v, yardstick, overwrite, progress)


def _make_default_model(
    recipe: DefaultRecipe,
    work: Path,
    out: Path,
    real_i2v: Sequence[Path],
    yardstick: Path | None,
    overwrite: bool,
    progress: bool,
) -> dict[str, Any]:
    from icreward.atomic import atomic_dir
    from icreward.loading import load
    from icreward.training import TrainConfig, train
    from icreward_recipes.study import expand_pairs

    start = time.perf_counter()
    data = synth_data(recipe, work, progress=progress)
    synth_seconds = time.perf_counter() - start
    train_path = expand_pairs(data / "train.jsonl", work, recipe.tie_margin)
    config = TrainConfig(
        out=str(work / "run"),
        model_type="icreward",
        backbone="patch-features",
        backbone_kwargs=dict(recipe.backbone_kwargs),
        backbone_policy="frozen",
        model=dict(recipe.model),
        num_frames=recipe.num_frames,
        loss="btt",
        epochs=recipe.epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        resume=(work / "run" / "config.json").is_file(),  # a finished run of this work folder finalises at once
        overwrite=not (work / "run" / "config.json").is_file(),
        progress=progress,
        tensorboard=False,
    )
    result = train(config, str(train_path), str(data / "val.jsonl"))
    train_seconds = time.perf_counter() - start - synth_seconds

    model = load(str(result.out_dir))
    model, ablation = drop_idle_head(model, data / "val.jsonl")
    model.config.num_frames = model.num_frames = recipe.score_frames
    heads_start = time.perf_counter()
    heads_data = heads_synth_data(recipe, work, progress=progress)
    heads_synth_seconds = time.perf_counter() - heads_start
    heads_summary = train_heads(model, recipe, heads_data, work, real_i2v)
    heads_seconds = time.perf_counter() - heads_start - heads_synth_seconds
    card = {
        "recipe": dataclasses.asdict(recipe),
        "data": {split: _count_lines(data / f"{split}.jsonl") for split in ("train", "val", "test")}
        | {"train_all_pairs": _count_lines(train_path)},
        "training": {
            "best_epoch": result.best_epoch,
            "val_pair_accuracy": result.best_val_accuracy,
            "val_pair_accuracy_ties": result.val_accuracy_ties,
            "head_ablation": ablation,
            "task_heads": heads_summary,
        },
        "seconds": {
            "synth": round(synth_seconds),
            "train": round(train_seconds),
            "heads_synth": round(heads_synth_seconds),
            "heads_train": round(heads_seconds),
        },
    }
    with atomic_dir(out, own=OUTPUT_FILES, marker=CHECKPOINT_MARKER, overwrite=overwrite, what="checkpoint") as tmp:
        model.save_pretrained(tmp)  # config.json and model.safetensors; the card joins them below
        offset = None if ablation["head_dropped"] else ablation["head_part_mean"]
        card["results"] = evaluate_checkpoint(tmp, data / "test.jsonl", real_i2v, yardstick, offset)
        card["results"]["heads"] = evaluate_heads(tmp, heads_data, real_i2v, work / "camera-set", recipe)
        card["check"] = card_check(load(str(tmp)), work)
        card["seconds"]["total"] = round(time.perf_counter() - start)
        text = json.dumps(card, indent=2) + "\n"
        (tmp / "card.json").write_text(text)
    return json.loads(text)


def main(argv: list[str] | None = None) -> int:
    from icreward.errors import IcrewardError

    defaults = DefaultRecipe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="data and run folder")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="checkpoint folder to write atomically: new, empty or an earlier checkpoint (config.json, "
        "model.safetensors and card.json are replaced; other files are kept)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty folder that is not an earlier checkpoint"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    parser.add_argument(
        "--real-i2v", type=Path, nargs="*", default=[], help="folders of real pairs (manifest.jsonl) to check on"
    )
    parser.add_argument(
        "--yardstick", type=Path, default=None, help="the fixed wave-1 synthetic test (a synth folder) to check on"
    )
    parser.add_argument("--n-sources", type=int, default=defaults.n_sources)
    parser.add_argument("--heads-sources", type=int, default=defaults.heads_sources)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    recipe = dataclasses.replace(
        defaults, n_sources=args.n_sources, heads_sources=args.heads_sources, epochs=args.epochs, seed=args.seed
    )
    try:
        card = make_default_model(
            recipe,
            args.work,
            args.out,
            args.real_i2v,
            args.yardstick,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except IcrewardError as e:
        print(f"default_model: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(card["results"] | {"seconds": card["seconds"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
