import json

import pytest

from icreward.cli import main


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "synth"
    args = ["synth", "--out", str(out), "--n", "12", "--frames", "6", "--size", "48", "--seed", "3", "--workers", "1"]
    assert main(args) == 0
    return out


@pytest.mark.slow
def test_eval_writes_contract_results(bench, tmp_path, capsys):
    report = tmp_path / "report"
    args = ["eval", "--data", str(bench / "test.jsonl"), "--val", str(bench / "val.jsonl"), "--bootstrap", "50"]
    code = main([*args, "--model", "metric:vbench-i2v-pixel", "--model", "metric:color-hist", "--report", str(report)])
    assert code == 0
    results = json.loads((report / "results.json").read_text())
    assert set(results["models"]) == {"metric:vbench-i2v-pixel", "metric:color-hist"}
    n_pairs = sum(1 for _ in open(bench / "test.jsonl"))
    for r in results["models"].values():
        assert r["n_pairs"] == n_pairs
        assert 0 <= r["pair_accuracy"] <= 1 and 0 <= r["pair_accuracy_ties"] <= 1
        assert -1 <= r["spearman"] <= 1 and -1 <= r["kendall"] <= 1
        assert r["per_mode"] and all(0 <= v <= 1 for v in r["per_mode"].values())
        assert "tie_threshold" in r and "pair_accuracy_ties_test_swept" in r
    assert (report / "index.html").is_file() and (report / "accuracy.png").is_file()
    rows = (report / "pairs.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * n_pairs
    out = capsys.readouterr().out
    assert "pair acc %" in out and "per failure mode" in out


def test_eval_is_reproducible(bench, tmp_path):
    def run(report):
        args = ["eval", "--data", str(bench / "test.jsonl"), "--model", "metric:vbench-i2v-hog", "--bootstrap", "30"]
        assert main([*args, "--report", str(report)]) == 0
        models = json.loads((report / "results.json").read_text())["models"]
        return {name: {k: v for k, v in r.items() if k != "seconds"} for name, r in models.items()}  # wall time varies

    assert run(tmp_path / "a") == run(tmp_path / "b")


def test_metrics_offline_expands_to_weight_free_metrics():
    from icreward.evaluation.evaluate import expand_models

    names = expand_models(["metrics:offline", "metric:color-hist"])
    assert "metric:color-hist" in names and names.count("metric:color-hist") == 1
    assert "metric:vbench-i2v-subject" not in names and "metric:first-frame-ssim" in names


def test_eval_rejects_pointwise_manifest(bench, tmp_path, capsys):
    code = main(["eval", "--data", str(bench / "videos.jsonl"), "--model", "metric:color-hist"])
    assert code == 2
    assert "pair records" in capsys.readouterr().err


def test_eval_takes_a_synth_folder_as_its_test_and_val_manifests(bench, tmp_path):
    """`--data DIR` (what `icreward synth` wrote) is DIR/test.jsonl with DIR/val.jsonl for the tie thresholds."""

    def results(report, *data):
        args = ["eval", "--data", *data, "--model", "metric:color-hist", "--bootstrap", "20", "--report", str(report)]
        assert main(args) == 0
        return json.loads((report / "results.json").read_text())

    folder = results(tmp_path / "folder", str(bench))
    files = results(tmp_path / "files", str(bench / "test.jsonl"), "--val", str(bench / "val.jsonl"))
    untimed = [{k: v for k, v in r["models"]["metric:color-hist"].items() if k != "seconds"} for r in (folder, files)]
    assert untimed[0] == untimed[1]
    assert folder["meta"]["data"] == str(bench / "test.jsonl") and folder["meta"]["val"] == str(bench / "val.jsonl")
