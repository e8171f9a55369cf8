"""A checkpoint's config.json is validated field by field at load: a bad value is refused by `icreward.load` with an
error naming the folder, config.json and the field, not a traceback (or a NaN reward) when scoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import icreward
from icreward.errors import IcrewardError
from icreward.models import ICRewardConfig, MLPRewardConfig, RewardModelConfig, build_model
from icreward.transforms import PreprocessConfig


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    build_model("icreward", backbone="patch-features", d_model=16, heads=2, depth=1).save_pretrained(root / "icreward")
    build_model("mlp", backbone="patch-features", hidden=16).save_pretrained(root / "mlp")
    return {"icreward": root / "icreward", "mlp": root / "mlp"}


def with_config(source: Path, folder: Path, **changes) -> Path:
    """A copy of the checkpoint `source` in `folder` with `changes` written into its config.json."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


COMMON = [  # (field, bad value): every model type
    ("num_frames", "sixteen"),
    ("num_frames", 0),
    ("num_frames", -1),
    ("num_frames", 16.5),
    ("num_frames", None),
    ("num_frames", True),
    ("score_std", 0),
    ("score_std", -1.0),
    ("score_std", "1"),
    ("score_std", None),
    ("score_mean", "NaN"),
    ("score_mean", None),
    ("score_mean", [1.0]),
    ("tie_threshold", -0.1),
    ("tie_threshold", "small"),
    ("backbone", 3),
    ("backbone", ""),
    ("backbone_kwargs", [1, 2]),
    ("backbone_policy", "defrosted"),
    ("backbone_policy", None),
    ("preprocess", "imagenet"),
    ("preprocess", {"resize": 0}),
    ("preprocess", {"crop": "224"}),
    ("preprocess", {"interpolation": "lanczos"}),
    ("preprocess", {"std": [0.2, 0.0, 0.2]}),
    ("preprocess", {"mean": [0.5, 0.5]}),
    ("preprocess", {"flip": True}),
    ("training", "yes"),
]
ICREWARD = [
    ("head", "transformer"),
    ("head", None),
    ("d_model", 0),
    ("d_model", 17),  # not a multiple of heads (2)
    ("d_model", "128"),
    ("heads", 0),
    ("depth", -1),
    ("depth", 1.5),
    ("mlp_ratio", 0),
    ("mlp_ratio", "2"),
    ("head_queries", 0),
    ("dropout", 1.0),
    ("dropout", -0.1),
    ("evidence", "yes"),
    ("head_bound", 0),
    ("head_bound", -1.0),
    ("head_reference", 1),
]
MLP = [("hidden", 0), ("hidden", "wide"), ("depth", -1), ("dropout", 1.5), ("l2_normalize", "true")]
CASES = [("icreward", f, v) for f, v in COMMON + ICREWARD] + [("mlp", f, v) for f, v in COMMON[:3] + MLP]


@pytest.mark.parametrize(("model_type", "field", "value"), CASES, ids=[f"{m}-{f}-{v!r}" for m, f, v in CASES])
def test_a_bad_field_is_refused_at_load_naming_config_json_and_the_field(
    checkpoints, tmp_path, model_type, field, value
):
    if field == "preprocess" and isinstance(value, dict):  # one bad sub-field in an otherwise valid preprocess
        value = {**json.loads((checkpoints[model_type] / "config.json").read_text())["preprocess"], **value}
    folder = with_config(checkpoints[model_type], tmp_path / "ckpt", **{field: value})
    with pytest.raises(IcrewardError) as err:
        icreward.load(str(folder))
    message = str(err.value)
    assert str(folder) in message and "config.json does not describe a valid" in message, message
    assert f"{field}:" in message or (field == "d_model" and "heads" in message), message


def test_json_nan_and_infinity_are_refused(checkpoints, tmp_path):
    for field, value in (("score_std", float("nan")), ("score_mean", float("inf")), ("tie_threshold", -float("inf"))):
        folder = with_config(checkpoints["icreward"], tmp_path / field, **{field: value})
        assert "NaN" in (folder / "config.json").read_text() or "Infinity" in (folder / "config.json").read_text()
        with pytest.raises(IcrewardError, match=rf"config\.json .*{field}: must be a finite number"):
            icreward.load(str(folder))


def test_valid_edge_values_load(checkpoints, tmp_path):
    edges = {"tie_threshold": 0.0, "dropout": 0.0, "head_bound": None, "num_frames": 1, "score_std": 1e-6}
    model = icreward.load(str(with_config(checkpoints["icreward"], tmp_path / "a", **edges)))
    assert model.config.tie_threshold == 0.0 and model.num_frames == 1
    model = icreward.load(str(with_config(checkpoints["icreward"], tmp_path / "b", score_mean=3, mlp_ratio=2)))
    assert model.config.score_mean == 3  # JSON integers are numbers too
    assert MLPRewardConfig(depth=0, dropout=0.0).depth == 0  # a linear read-out of the features


def test_the_shipped_model_still_loads_and_its_config_is_valid():
    model = icreward.load("default")
    assert isinstance(model.config, ICRewardConfig)
    ICRewardConfig.from_dict(model.config.to_dict())  # validated again, unchanged


def test_configs_are_validated_when_built_in_python_too():
    with pytest.raises(ValueError, match="num_frames: must be an integer >= 1"):
        RewardModelConfig(num_frames=0)
    with pytest.raises(ValueError, match="score_std: must be a finite number > 0"):
        ICRewardConfig(score_std=float("inf"))
    with pytest.raises(ValueError, match="hidden: must be an integer >= 1"):
        MLPRewardConfig(hidden=0)
    with pytest.raises(ValueError, match="interpolation: must be one of"):
        PreprocessConfig(interpolation="lanczos")
    with pytest.raises(IcrewardError, match="invalid icreward config: d_model: 30 is not a multiple of heads"):
        build_model("icreward", backbone="patch-features", d_model=30, heads=4)
