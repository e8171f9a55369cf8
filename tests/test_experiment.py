import json

import pytest

from icreward.cli import main

pytestmark = pytest.mark.slow  # a synthetic benchmark, k-fold training of two models and a report: end to end


def test_experiment_end_to_end_on_a_tiny_benchmark(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ICREWARD_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "synth"
    synth = ["synth", "--out", str(data), "--n", "14", "--frames", "4", "--size", "48", "--seed", "1"]
    assert main([*synth, "--holdout-modes", "flicker", "--workers", "1"]) == 0
    out = tmp_path / "report"
    args = ["experiment", "--data", str(data), "--out", str(out), "--folds", "2", "--seeds", "0", "--epochs", "1"]
    assert main([*args, "--num-frames", "4", "--bootstrap", "20"]) == 0

    results = json.loads((out / "results.json").read_text())
    models = results["models"]
    assert {"learned:mlp", "learned:icreward", "metric:color-hist"} <= set(models)
    for name in ("learned:mlp", "learned:icreward"):
        r = models[name]
        assert 0 <= r["pair_accuracy"] <= 1 and len(r["single_model_accuracies"]) == 2  # 2 folds x 1 seed
        assert "pair_accuracy_heldout" in r and "pair_accuracy_seen" in r
        assert -1 <= r["spearman"] <= 1 and r["n_points"] > 0
    assert results["meta"]["holdout_modes"] == ["flicker"]
    assert (out / "index.html").is_file() and (out / "attention_00.png").is_file()
    assert len(list((out / "runs").glob("*/fold-*/model.safetensors"))) == 4
    printed = capsys.readouterr().out
    assert "held-out modes %" in printed and "learned:icreward" in printed
