"""The recipe of the shipped default model (`icreward.load("default")`), reproducible from scratch on a CPU.

    python -m icreward_recipes.default_model --work build/default-model --out OUT_DIR [--real-i2v ../shared/real-i2v]

(`make default-model` runs it.) Steps, all seeded:
  1. `icreward synth` data: `n_sources` procedural scenes, every failure mode, most scenes in the training split;
  2. every pair of one scene's scored videos as a training pair (`expand_pairs`);
  3. IC-Reward with the monotone evidence branch on the weight-free `patch-features` encoder, trained with the
     Bradley-Terry-with-ties loss, early stopping on the validation split;
  4. evaluation on the recipe's own test split (scenes never trained on) and, where `../shared/real-i2v` (or
     `--real-i2v`) holds real I2V pairs, on the real-video robustness check of `icreward.evaluation.robustness`;
  5. an ablation on the validation split: where the model without its attention head (its mean part folded into the
     score normalisation) ranks the validation pairs at least as well, the head is dropped (`head: none`) and
     the checkpoint computes only what contributes;
  6. the checkpoint (config.json, model.safetensors) and `card.json` (recipe, data, results, timings) written
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DefaultRecipe:
    n_sources: int = 600  # procedural source scenes of the synthetic data
    synth_seed: int = 1  # not the embedded benchmark's seed 0: its test scenes stay unseen
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test share of scenes
    tie_margin: float = 0.05  # the synth engine's margin, for the labels of the added pairs
    num_frames: int = 8  # frames per training video
    score_frames: int = 16  # frames the shipped checkpoint samples when scoring a file
    epochs: int = 2
    lr: float = 5e-4
    batch_size: int = 16
    seed: int = 0
    model: dict[str, Any] = field(
        default_factory=lambda: {"d_model": 64, "depth": 1, "evidence": True, "head_bound": 1.0}
    )
    backbone_kwargs: dict[str, Any] = field(default_factory=lambda: {"image_size": 128, "patch_size": 8})


CHECKPOINT_MARKER = ("model.safetensors", "config.json")  # what marks an earlier checkpoint (config.json last)
OUTPUT_FILES = (*CHECKPOINT_MARKER, "card.json")  # what the recipe writes into --out


def synth_data(recipe: DefaultRecipe, work: Path, workers: int | None = None, progress: bool = True) -> Path:
    """The recipe's synthetic data folder under `work` (generated once, reused when complete)."""
    from icreward.synth import SynthConfig
    from icreward.synth.dataset import generate

    config = SynthConfig(n=recipe.n_sources, seed=recipe.synth_seed, split_fractions=recipe.split_fractions)
    config.validate()
    root = work / "synth"
    summary = root / "synth.json"
    if summary.is_file() and json.loads(summary.read_text())["config"] == json.loads(
        json.dumps(dataclasses.asdict(config))
    ):
        return root
    generate(config, root, workers=workers, progress=progress, overwrite=True)  # the recipe's own work folder
    return root


def evaluate_checkpoint(checkpoint: Path, test_manifest: Path, real_i2v: Path | None) -> dict[str, Any]:
    """Pair accuracy on the synthetic test split and, where given, the real I2V robustness results."""
    from icreward.evaluation.evaluate import pair_labels, reward_pairs
    from icreward.evaluation.stats import pair_accuracy
    from icreward.loading import load
    from icreward.manifest import load_manifest

    model = load(str(checkpoint))
    test = load_manifest(test_manifest, require_labels=True)
    rewards = reward_pairs(model, test, batch_size=16, device="cpu")
    labels = pair_labels(test)
    accuracy = pair_accuracy(rewards[:, 0] - rewards[:, 1], labels)
    results: dict[str, Any] = {"synth_test": {"n_pairs": int((labels != 0).sum()), "pair_accuracy": accuracy}}
    if real_i2v is not None and (real_i2v / "manifest.jsonl").is_file():
        from icreward.evaluation.robustness import build_real_i2v_tests, evaluate_real_i2v

        real = evaluate_real_i2v(model, build_real_i2v_tests(real_i2v, seed=0))
        results["real_i2v"] = {k: v for k, v in real.items() if k != "rows"}
    return results


def drop_idle_head(model, val_manifest: Path) -> tuple[Any, dict[str, Any]]:
    """The model without its attention head where that ranks the validation pairs at least as well, and the ablation.

    The head's mean part over the validation videos becomes the offset folded into `score_mean`
    (`ICRewardModel.without_attention_head`), so rewards keep their scale.
    """
    import numpy as np
    import torch

    from icreward.evaluation.evaluate import pair_labels, reward_pairs
    from icreward.evaluation.stats import pair_accuracy
    from icreward.interface import Scorer
    from icreward.manifest import load_manifest

    class AttentionPart(Scorer):  # what the head adds to the raw reward, scored like any reward
        def __init__(self):
            super().__init__()
            self.model, self.name = model, "attention-part"
            self.num_frames, self.max_side = model.num_frames, model.max_side

        def forward(self, image, video, prompt=None):
            return self.model.attention_part(*self.model.encode(image, video))[0]

    val = load_manifest(val_manifest, require_labels=True)
    labels = pair_labels(val)
    with torch.no_grad():
        parts = reward_pairs(AttentionPart(), val, batch_size=16, device="cpu")
        offset = float(np.mean(parts))
        pruned = model.without_attention_head(offset)
        with_head = pair_accuracy(np.subtract(*reward_pairs(model, val, batch_size=16, device="cpu").T), labels)
        without = pair_accuracy(np.subtract(*reward_pairs(pruned, val, batch_size=16, device="cpu").T), labels)
    ablation = {
        "val_pair_accuracy_with_head": with_head,
        "val_pair_accuracy_without_head": without,
        "head_part_mean": offset,
        "head_part_range": [float(np.min(parts)), float(np.max(parts))],
        "head_dropped": without >= with_head,
    }
    return (pruned if without >= with_head else model), ablation


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


def check_out(out: str | Path, work: str | Path, real_i2v: Path | None = None, overwrite: bool = False) -> None:
    """Refuse (`IcrewardError`) an `--out` that is the work folder, is, holds or lies inside `--real-i2v`, is a file,
    or is a non-empty folder that is not an earlier checkpoint (unless `overwrite`)."""
    from icreward.atomic import check_output_dir, same_path
    from icreward.errors import IcrewardError

    if same_path(out, work):
        raise IcrewardError(f"--out {out}: is the --work folder; give the checkpoint a folder of its own")
    inputs = {"--real-i2v": real_i2v} if real_i2v is not None else {}
    check_output_dir(out, flag="--out", inputs=inputs, marker=CHECKPOINT_MARKER, overwrite=overwrite, what="checkpoint")


def make_default_model(
    recipe: DefaultRecipe,
    work: str | Path,
    out: str | Path,
    real_i2v: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the recipe; returns the card written beside the checkpoint in `out`.

    `out` is checked first (`check_out`), so a refusal costs nothing; `progress` shows bars or lines on stderr.
    """
    from icreward.progress import silenced

    check_out(out, work, real_i2v, overwrite)
    with silenced(not progress):
        return _make_default_model(recipe, Path(work), Path(out), real_i2v, overwrite, progress)


def _make_default_model(
    recipe: DefaultRecipe, work: Path, out: Path, real_i2v: Path | None, overwrite: bool, progress: bool
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
        overwrite=True,
        progress=progress,
        tensorboard=False,
    )
    result = train(config, str(train_path), str(data / "val.jsonl"))
    train_seconds = time.perf_counter() - start - synth_seconds

    model = load(str(result.out_dir))
    model, ablation = drop_idle_head(model, data / "val.jsonl")
    model.config.num_frames = model.num_frames = recipe.score_frames
    card = {
        "recipe": dataclasses.asdict(recipe),
        "data": {split: _count_lines(data / f"{split}.jsonl") for split in ("train", "val", "test")}
        | {"train_all_pairs": _count_lines(train_path)},
        "training": {
            "best_epoch": result.best_epoch,
            "val_pair_accuracy": result.best_val_accuracy,
            "val_pair_accuracy_ties": result.val_accuracy_ties,
            "attention_head_ablation": ablation,
        },
        "seconds": {"synth": round(synth_seconds), "train": round(train_seconds)},
    }
    with atomic_dir(out, own=OUTPUT_FILES, marker=CHECKPOINT_MARKER, overwrite=overwrite, what="checkpoint") as tmp:
        model.save_pretrained(tmp)  # config.json and model.safetensors; the card joins them below
        card["results"] = evaluate_checkpoint(tmp, data / "test.jsonl", real_i2v)
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
    parser.add_argument("--real-i2v", type=Path, default=None, help="folder of real pairs (manifest.jsonl) to check on")
    parser.add_argument("--n-sources", type=int, default=defaults.n_sources)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    recipe = dataclasses.replace(defaults, n_sources=args.n_sources, epochs=args.epochs, seed=args.seed)
    try:
        card = make_default_model(
            recipe, args.work, args.out, args.real_i2v, overwrite=args.overwrite, progress=not args.quiet
        )
    except IcrewardError as e:
        print(f"default_model: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(card["results"] | {"seconds": card["seconds"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
