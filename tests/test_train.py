import csv
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from icreward.cli import main
from icreward.manifest import load_manifest, write_manifest
from icreward.media import write_video
from icreward.models import load_checkpoint
from icreward.training import TrainConfig, aggregate_folds, kfold_split, train, train_kfold
from icreward.training.data import FileDigests, data_hash, epoch_batches
from icreward.training.trainer import FAULT_ENV, build_reward_model, cpu_has_native_bf16, resolve_precision

SIDE, T = 32, 8
ICR = {"d_model": 32, "heads": 2, "depth": 1, "head_queries": 2}
MLP = {"hidden": 32, "dropout": 0.1}  # dropout on: resuming must restore the generator states too


def make_split(root: Path, split: str, n_src: int, seed: int, pairs_per_source: int = 2) -> Path:
    """Pairs of one consistent video (the image, slightly shifted per frame) and one inconsistent video (another
    source's image, or noise), in random A/B order, with scores and the source recorded."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "vid").mkdir(exist_ok=True)
    images = []
    for s in range(n_src):
        coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        images.append(np.array(Image.fromarray(coarse).resize((SIDE, SIDE), Image.BILINEAR)))
        Image.fromarray(images[-1]).save(root / "img" / f"{split}{s}.png")
    records = []
    for s in range(n_src):
        for p in range(pairs_per_source):
            good = np.stack([np.roll(images[s], (k % 3, p + k % 2), axis=(0, 1)) for k in range(T)])
            if p % 2:
                bad = rng.integers(0, 256, (T, SIDE, SIDE, 3)).astype(np.uint8)
            else:
                bad = np.stack([images[(s + 1) % n_src]] * T)
            names = f"vid/{split}{s}_{p}_good.mp4", f"vid/{split}{s}_{p}_bad.mp4"
            write_video(root / names[0], good)
            write_video(root / names[1], bad)
            a_good = bool(rng.random() < 0.5)
            a, b = names if a_good else names[::-1]
            records.append(
                {
                    "id": f"{split}{s}_{p}",
                    "image": f"img/{split}{s}.png",
                    "video_a": a,
                    "video_b": b,
                    "label": "A" if a_good else "B",
                    "score_a": 0.9 if a_good else 0.1 + 0.1 * p,
                    "score_b": 0.1 + 0.1 * p if a_good else 0.9,
                    "source": f"{split}{s}",
                }
            )
    write_manifest(root / f"{split}.jsonl", records)
    return root / f"{split}.jsonl"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    splits = {"train": make_split(root, "train", 6, seed=0), "val": make_split(root, "val", 4, seed=1)}
    return {**splits, "cache": root / "cache"}  # one feature cache for the module: tokens are computed once


def config(tmp_path: Path, paths: dict[str, Path], **overrides) -> TrainConfig:
    values = dict(
        data=str(paths["train"]),
        val=str(paths["val"]),
        out=str(tmp_path / "run"),
        model_type="mlp",
        model=MLP,
        backbone_kwargs={"image_size": SIDE},
        num_frames=T,
        batch_size=4,
        epochs=2,
        lr=3e-3,
        precision="fp32",
        cache_dir=str(paths["cache"]),
        progress=False,
    )
    values.update(overrides)
    return TrainConfig(**values)


def cli_args(tmp_path: Path, data, out: str = "run", *extra: str) -> list[str]:
    return [
        "train",
        *("--data", str(data["train"]), "--val", str(data["val"]), "--out", str(tmp_path / out)),
        *("--model-type", "mlp", "--model-kwargs", json.dumps(MLP)),
        *("--backbone-kwargs", json.dumps({"image_size": SIDE})),
        *("--num-frames", str(T), "--batch-size", "2", "--lr", "3e-3", "--precision", "fp32", "--no-progress"),
        *("--cache-dir", str(data["cache"])),
        *extra,
    ]


def epoch_metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def assert_same_metrics(a: list[dict[str, str]], b: list[dict[str, str]], rtol: float = 1e-5) -> None:
    assert len(a) == len(b)
    for row_a, row_b in zip(a, b, strict=True):
        assert row_a.keys() == row_b.keys()
        for key in row_a:
            if row_a[key] in ("", "step", "epoch"):
                assert row_a[key] == row_b[key], key
            else:
                assert float(row_a[key]) == pytest.approx(float(row_b[key]), rel=rtol, abs=1e-6), key


def assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = (safetensors.torch.load_file(str(p / "model.safetensors")) for p in (a, b))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=1e-4, msg=k)


def run_cli_subprocess(args: list[str], env: dict | None = None, launcher: list[str] | None = None):
    cmd = [sys.executable, *(launcher or []), "-m", "icreward.cli", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=240)


# ---- the command line, end to end


def test_cli_trains_a_checkpoint_that_loads_and_scores(tmp_path, data, capsys):
    args = cli_args(tmp_path, data, "run", "--model-type", "icreward", "--model-kwargs", json.dumps(ICR))
    assert main([*args, "--epochs", "1", "--log-every", "2"]) == 0
    run = tmp_path / "run"
    for name in ("model.safetensors", "config.json", "train_config.json", "metrics.csv", "last/state.json"):
        assert (run / name).exists(), name
    model = load_checkpoint(run)
    cfg = model.config
    assert model.model_type == "icreward" and cfg.num_frames == T and cfg.backbone_kwargs == {"image_size": SIDE}
    assert cfg.score_std > 0 and cfg.tie_threshold is not None and cfg.training["loss"] == "btt"
    record = load_manifest(data["val"]).records[0]
    assert math.isfinite(model.score(record.image, record.video_a))
    kinds = [row["kind"] for row in epoch_metrics(run)]
    assert kinds.count("epoch") == 1 and kinds.count("step") >= 1
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and '"best_epoch": 1' in out
    if importlib.util.find_spec("tensorboard") is not None:
        assert list(run.glob("events.out.tfevents.*"))
    assert main(args) == 2  # the folder now holds a run: refused without --resume / --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_train_config_records_git_sha_and_data_hash(tmp_path, data):
    train(config(tmp_path, data, epochs=1))
    record = json.loads((tmp_path / "run" / "train_config.json").read_text())
    git = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert record["git_sha"] == (git.stdout.strip() if git.returncode == 0 else "unknown")
    assert record["data_sha256"] == data_hash(load_manifest(data["train"]), FileDigests())
    assert record["config"]["seed"] == 0 and record["config"]["model"] == MLP
    assert record["config"]["out"] == str(tmp_path / "run")  # the run record keeps the whole config, paths too
    training = load_checkpoint(tmp_path / "run").config.training
    assert training["data_sha256"] == record["data_sha256"] and training["seed"] == 0
    assert training["hyperparameters"]["model"] == MLP and training["hyperparameters"]["lr"] == 3e-3
    assert "config" not in training and str(tmp_path) not in json.dumps(training)  # provenance only: no paths
    assert not {"out", "data", "val", "cache_dir", "resume", "overwrite", "num_workers"} & set(
        training["hyperparameters"]
    )


def test_checkpoints_with_the_old_training_entry_still_load(tmp_path, data):
    train(config(tmp_path, data, epochs=1))
    path = tmp_path / "run" / "config.json"
    meta = json.loads(path.read_text())
    meta["training"] = {"data_sha256": "abc", "loss": "btt", "config": config(tmp_path, data).to_dict()}
    path.write_text(json.dumps(meta))
    assert load_checkpoint(tmp_path / "run").config.training["config"]["out"] == str(tmp_path / "run")


def test_config_file_under_flags(tmp_path, data):
    from icreward.cli import build_parser
    from icreward.cli.train import config_from_args

    path = tmp_path / "train.yaml"
    path.write_text("epochs: 7\nlr: 0.01\nloss: bt\nmodel:\n  d_model: 16\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--data", "x.jsonl", "--lr", "0.5", "--no-cache"])
    cfg = config_from_args(args)
    assert (cfg.epochs, cfg.lr, cfg.loss, cfg.model, cfg.cache, cfg.data) == (
        7,
        0.5,
        "bt",
        {"d_model": 16},
        False,
        "x.jsonl",
    )
    path.write_text("epochz: 3\n")
    assert main(["train", "--config", str(path)]) == 2


def test_bad_manifest_line_is_named_and_skip_bad_goes_on(tmp_path, data, capsys):
    lines = data["train"].read_text().splitlines()
    bad = data["train"].parent / "bad.jsonl"
    bad.write_text("\n".join([*lines[:2], '{"id": "x", "image": "img/train0.png", "video_a": "nope.mp4"', *lines[2:]]))
    broken = {**data, "train": bad}
    assert main(cli_args(tmp_path, broken, "run", "--epochs", "1")) == 2
    assert f"{bad}:3: malformed JSON" in capsys.readouterr().err
    assert main(cli_args(tmp_path, broken, "run", "--epochs", "1", "--skip-bad")) == 0
    assert "skipped 1 line" in capsys.readouterr().out
    assert (
        "malformed JSON"
        in json.loads((tmp_path / "run" / "train_config.json").read_text())["data"]["train"]["skipped"][0]
    )


# ---- learning, losses, precision


def test_training_learns_an_easy_task(tmp_path, data):
    result = train(config(tmp_path, data, epochs=6, model=dict(MLP, dropout=0.0)))
    first = result.epochs[0]["val_pair_accuracy"]
    assert result.best_val_accuracy >= 0.85 and result.best_val_accuracy >= first
    assert result.epochs[-1]["train_margin"] > result.epochs[0]["train_margin"]
    model = load_checkpoint(result.out_dir)
    assert model.config.score_mean == pytest.approx(result.score_mean) and model.config.training["best_epoch"] >= 1


@pytest.mark.parametrize(
    "loss,extra",
    [("mse", {}), ("bt", {}), ("btt", {"contrastive_weight": 0.5}), ("contrastive", {})],
)
def test_each_loss_runs(tmp_path, data, loss, extra):
    result = train(config(tmp_path, data, loss=loss, epochs=1, model_type="icreward", model=ICR, **extra))
    row = result.epochs[0]
    assert math.isfinite(row["loss"]) and math.isfinite(row["val_pair_accuracy"])
    assert math.isfinite(row["val_loss"]) == (loss != "contrastive")


def test_mse_on_a_pointwise_manifest(tmp_path, data):
    pairs = load_manifest(data["train"]).records
    points = [
        {"id": f"{r.id}_{k}", "image": str(r.image), "video": str(v), "score": s, "source": r.extra["source"]}
        for r in pairs
        for k, v, s in (("a", r.video_a, r.score_a), ("b", r.video_b, r.score_b))
    ]
    write_manifest(tmp_path / "points.jsonl", points)
    result = train(config(tmp_path, data, loss="mse", data=str(tmp_path / "points.jsonl"), val=None, epochs=1))
    assert result.best_val_accuracy is None and load_checkpoint(result.out_dir).config.tie_threshold is None
    with pytest.raises(Exception, match="needs a pair manifest"):
        train(config(tmp_path, data, loss="btt", data=str(tmp_path / "points.jsonl"), val=None, overwrite=True))


def test_bf16_autocast_really_runs_in_bf16(tmp_path, data):
    if cpu_has_native_bf16():
        assert resolve_precision("auto", cpu=True) == "bf16"
    dtypes = set()

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Linear) and module.training:
            dtypes.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        result = train(config(tmp_path, data, precision="bf16", epochs=1, model_type="icreward", model=ICR))
    finally:
        handle.remove()
    assert dtypes == {torch.bfloat16} and math.isfinite(result.epochs[0]["loss"])
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["precision"] == "bf16"


@pytest.mark.slow
def test_lora_backbone_trains_from_pixels_decoded_in_workers(tmp_path, data):
    from accelerate.utils import set_seed

    cfg = config(tmp_path, data, backbone_policy="lora", epochs=1, num_workers=1, val=None)
    result = train(cfg)
    assert result.cache_hits == result.cache_misses == 0  # a trainable backbone is never cached
    set_seed(cfg.seed)
    initial = build_reward_model(cfg).state_dict()
    trained = load_checkpoint(result.out_dir).state_dict()
    lora = [k for k in initial if "lora_B" in k]
    frozen = [k for k in initial if k.startswith("backbone.") and "lora_" not in k]
    assert lora and all(not torch.equal(initial[k], trained[k]) for k in lora)
    assert all(torch.equal(initial[k], trained[k]) for k in frozen)


# ---- feature cache, resume


@pytest.mark.slow
def test_feature_cache_matches_no_cache_and_is_reused(tmp_path, data):
    base = dict(epochs=1, model_type="icreward", model=ICR, cache_dir=str(tmp_path / "cache"))
    cached = train(config(tmp_path, data, out=str(tmp_path / "cached"), **base))
    assert cached.cache_misses > 0 and cached.cache_hits == 0
    again = train(config(tmp_path, data, out=str(tmp_path / "again"), **base))
    assert again.cache_hits == cached.cache_misses and again.cache_misses == 0
    plain = train(config(tmp_path, data, out=str(tmp_path / "plain"), cache=False, **base))
    assert plain.cache_hits == plain.cache_misses == 0
    assert_same_metrics(epoch_metrics(tmp_path / "cached"), epoch_metrics(tmp_path / "plain"), rtol=1e-4)
    assert_same_weights(tmp_path / "cached", tmp_path / "plain", atol=1e-4)
    assert_same_weights(tmp_path / "cached", tmp_path / "again", atol=0)


@pytest.mark.slow
def test_resume_after_a_crash_mid_epoch_gives_the_same_run(tmp_path, data):
    common = ("--epochs", "2", "--save-every", "4", "--log-every", "2")
    assert main(cli_args(tmp_path, data, "full", *common)) == 0
    crashed = run_cli_subprocess(cli_args(tmp_path, data, "resumed", *common), env={FAULT_ENV: "5"})
    assert crashed.returncode == 1, crashed.stderr
    state = json.loads((tmp_path / "resumed" / "last" / "state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 4, 4)  # 6 steps an epoch
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    assert main(cli_args(tmp_path, data, "resumed", *common, "--resume")) == 0
    assert_same_metrics(epoch_metrics(tmp_path / "full"), epoch_metrics(tmp_path / "resumed"))
    assert_same_weights(tmp_path / "full", tmp_path / "resumed")
    assert main(cli_args(tmp_path, data, "resumed", "--epochs", "3", "--resume")) == 2  # other settings: refused


def test_early_stopping_keeps_the_best_weights(tmp_path, data):
    swap = {"A": "B", "B": "A", "tie": "tie"}
    flipped = data["val"].with_name("val_flipped.jsonl")  # beside the media: relative paths still resolve
    write_manifest(flipped, [dict(r.to_dict(), label=swap[r.label]) for r in load_manifest(data["val"])])
    result = train(config(tmp_path, data, val=str(flipped), epochs=6, patience=2, model=dict(MLP, dropout=0.0)))
    accuracy = [row["val_pair_accuracy"] for row in result.epochs]
    assert result.stopped_early and len(accuracy) == result.best_epoch + 2 < 6
    assert result.best_val_accuracy == accuracy[result.best_epoch - 1] == max(accuracy)
    saved, best, last = (
        safetensors.torch.load_file(str(result.out_dir / name))
        for name in ("model.safetensors", "last/best.safetensors", "last/model.safetensors")
    )
    assert all(torch.equal(saved[k], best[k]) for k in best)
    assert not all(torch.equal(last[k], best[k]) for k in best)  # the last epoch's weights were not kept


# ---- data order, k-fold, optimiser


def test_epoch_order_depends_only_on_seed_and_epoch_and_shards_evenly():
    one = epoch_batches(10, 3, seed=1, epoch=2)
    assert one == epoch_batches(10, 3, seed=1, epoch=2) != epoch_batches(10, 3, seed=1, epoch=3)
    assert sorted(i for b in one for i in b) == list(range(10))
    shards = [epoch_batches(10, 2, seed=1, epoch=2, rank=r, world_size=3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and all(len(b) == len(s[0]) for s in zip(*shards, strict=True) for b in s)
    assert set(i for s in shards for b in s for i in b) == set(range(10))


def test_kfold_splits_by_source_without_overlap(tmp_path, data):
    manifest = load_manifest(data["train"])
    splits = kfold_split(manifest, 3, seed=0)
    sources = [r.extra["source"] for r in manifest.records]
    for train_idx, val_idx in splits:
        assert not {sources[i] for i in train_idx} & {sources[i] for i in val_idx}
        assert sorted(train_idx + val_idx) == list(range(len(manifest)))
    assert sorted(i for _, v in splits for i in v) == list(range(len(manifest)))
    results = train_kfold(config(tmp_path, data, val=None, epochs=1), manifest, k=2)
    assert [r.out_dir.name for r in results] == ["fold-0", "fold-1"]
    summary = json.loads((tmp_path / "run" / "kfold.json").read_text())
    assert summary["aggregate"] == aggregate_folds(results) and "best_val_accuracy" in summary["aggregate"]
    assert json.loads((tmp_path / "run" / "fold-1" / "train_config.json").read_text())["config"]["fold"] == 1


def test_no_weight_decay_on_biases_norms_and_embeddings(tmp_path, data):
    cfg = config(tmp_path, data, model_type="icreward", model=ICR, backbone_policy="last-1", backbone_lr=1e-5)
    model = build_reward_model(cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in model.param_groups(cfg.lr, cfg.weight_decay, cfg.backbone_lr)}
    no_decay = {names[id(p)] for g in groups.values() if g["weight_decay"] == 0 for p in g["params"]}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n, p in trainable.items() if p.ndim < 2} <= no_decay  # biases and norms
    assert {"type_embed", "ic_head.queries"} <= no_decay and "backbone.pos_embed" not in trainable
    assert "ic_head.mlp.0.weight" not in no_decay and groups["backbone"]["lr"] == 1e-5


# ---- many processes


@pytest.mark.slow
def test_two_process_run_makes_a_loadable_checkpoint(tmp_path, data):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    launcher += ["--master_port", str(port)]
    done = run_cli_subprocess([*cli_args(tmp_path, data, "ddp", "--epochs", "1"), "--cpu"], launcher=launcher)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "ddp" / "train_config.json").read_text())
    assert record["world_size"] == 2
    model = load_checkpoint(tmp_path / "ddp")
    assert model.config.training["steps"] == 3  # 12 pairs, 2 per process and step, 2 processes
    assert done.stdout.count('"best_epoch"') == 1  # only the main process reports


@pytest.mark.slow
@pytest.mark.parametrize("head", ["map", "none"])
def test_cached_evidence_trains_like_no_cache(tmp_path, data, head):
    """Heads that read the tokens through the evidence alone train on evidence cached beside the tokens (one file
    per distinct image and video pair), as they train without any cache."""
    model = {**ICR, "head": head, "evidence": True, "evidence_measures": ["position", "match", "local", "jitter"]}
    cache = tmp_path / "cache"
    base = dict(epochs=1, model_type="icreward", model=model, backbone="patch-features", cache_dir=str(cache))
    train(config(tmp_path, data, out=str(tmp_path / "cached"), **base))
    pairs = {(r.image, v) for m in ("train", "val") for r in load_manifest(data[m]) for v in (r.video_a, r.video_b)}
    files = {r.image for m in ("train", "val") for r in load_manifest(data[m])} | {v for _, v in pairs}
    stored = sorted(cache.rglob("*.safetensors"))
    assert len(stored) == len(files) + len(pairs)  # tokens of each file, evidence of each (image, video)
    train(config(tmp_path, data, out=str(tmp_path / "again"), **base))
    assert sorted(cache.rglob("*.safetensors")) == stored  # all found: nothing computed again
    train(config(tmp_path, data, out=str(tmp_path / "plain"), cache=False, **base))
    assert_same_metrics(epoch_metrics(tmp_path / "cached"), epoch_metrics(tmp_path / "plain"), rtol=1e-4)
    assert_same_weights(tmp_path / "cached", tmp_path / "plain", atol=1e-4)
    assert_same_weights(tmp_path / "cached", tmp_path / "again", atol=0)
