"""benchmarks/bench_throughput.py: FLOP counting against hand counts, the bound, and a tiny run of its entry point."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from icreward.backbones import build_backbone
from icreward.media import write_video
from icreward.models import build_model

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bench_throughput.py"
_spec = importlib.util.spec_from_file_location("bench_throughput", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_count_flops_of_a_linear_layer_is_two_multiply_adds_per_weight_and_row():
    layer = nn.Linear(32, 16)
    assert bench.count_flops(layer, torch.randn(4, 32)) == 2 * 4 * 32 * 16


def test_count_flops_sees_attention_on_cpu():
    q, kv = torch.randn(2, 4, 20, 8), torch.randn(2, 4, 6, 8)  # (B, heads, L, d), (B, heads, S, d)
    # q @ k^T and weights @ v: two (L x d) by (d x S)-sized products per batch and head
    assert bench.count_flops(F.scaled_dot_product_attention, q, kv, kv) == 2 * (2 * 2 * 4 * 20 * 6 * 8)


def test_count_flops_of_patch_features_is_its_sobel_conv_and_orientation_einsum():
    backbone = build_backbone("patch-features")
    n, side, bins = 3, 64, backbone.config.orientations
    pixels = side * side
    sobel = 2 * pixels * 2 * 9  # 1 -> 2 channels, 3x3 kernel, per output pixel
    votes = 2 * pixels * 2 * bins  # (2,) gradient direction against each of the bin directions
    assert bench.count_flops(backbone, torch.rand(n, 3, side, side)) == n * (sobel + votes)


def test_bound_is_rate_over_flops():
    assert bench.bound_videos_per_second(100.0, 2_000_000) == pytest.approx(50_000.0)
    assert bench.bound_videos_per_second(50.0, 2_000_000) == pytest.approx(25_000.0)


def test_median_ratio_pairs_rounds():
    assert bench.median_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 3.0]) == pytest.approx(2.0)


def test_bound_table_divides_measured_by_the_fp32_bound():
    table = bench.bound_table({"whole model": 1_000_000}, {"fp32": 10.0, "bf16": 20.0}, {"whole model": 100.0})
    (row,) = table_rows(table, "part")
    assert row == ["whole model", "1.00", "10000", "20000", "100.0", "1.00%"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    model = build_model("icreward", backbone="patch-features", d_model=16, heads=2, depth=1, evidence=True)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def real_root(tmp_path_factory) -> Path:
    """Two (image, video) pairs laid out like shared/real-i2v."""
    root = tmp_path_factory.mktemp("real-i2v")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / f"img{i}.png")
        write_video(root / f"vid{i}.mp4", rng.integers(0, 256, (6, 48, 48, 3), dtype=np.uint8))
    lines = [json.dumps({"id": str(i), "image": f"img{i}.png", "video": f"vid{i}.mp4"}) for i in range(2)]
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


def table_rows(text: str, first_header_cell: str) -> list[list[str]]:
    """The body rows of the markdown table whose header starts with `first_header_cell`, split into cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header_cell} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_main_prints_every_table(checkpoint, real_root, capsys):
    argv = ["--model", str(checkpoint), "--repeats", "1", "--warmup", "1", "--batch-size", "2", "--num-frames", "3"]
    argv += ["--file-passes", "2", "--glibc-malloc"]  # the test process keeps malloc's defaults
    assert bench.main([*argv, "--side", "64", "--root", str(real_root), "--matmul-sizes", "64"]) == 0
    out = capsys.readouterr().out

    rows = table_rows(out, "scorer")
    scorers = [(r[0], r[1].split(",")[0].split(" [")[0], r[2]) for r in rows]
    model, metric = f"`{checkpoint}`", "`metric:vbench-i2v-subject`"
    assert scorers == [
        (model, "tensors", "fp32"),
        (metric, "tensors", "fp32"),
        (model, "tensors", "bf16"),
        (metric, "tensors", "bf16"),
        (model, "4 file pairs (2 x 2)", "fp32"),
        (metric, "4 file pairs (2 x 2)", "fp32"),
        ("decoding alone (2 threads)", "4 file pairs (2 x 2)", "-"),
    ]
    assert all(float(r[3]) > 0 for r in rows)
    assert re.search(
        r"per-round ratios\): [\d.]+x from tensors in fp32, [\d.]+x from tensors in bf16, [\d.]+x from", out
    )

    bounds = {r[0]: r for r in table_rows(out, "part")}
    assert list(bounds) == ["backbone alone", "head (whole - backbone)", "whole model", "metric"]
    # both scorers run the same encoder on 1 + 3 images at 64 px; the metric adds no counted FLOPs to it
    backbone_mflop = 4 * bench.count_flops(build_backbone("patch-features"), torch.rand(1, 3, 64, 64)) / 1e6
    assert float(bounds["backbone alone"][1]) == pytest.approx(backbone_mflop, abs=0.01)
    assert bounds["metric"][1] == bounds["backbone alone"][1]
    assert float(bounds["whole model"][1]) > float(bounds["backbone alone"][1])

    stages = [r[0] for r in table_rows(out, "stage")]
    assert stages == [
        "preprocess (resize, crop)",
        "backbone",
        "head (transformer + evidence)",
        "of which evidence branch",
        "whole forward",
    ]
    assert [r[0] for r in table_rows(out, "square matmul")] == ["64 x 64"]


def test_files_are_skipped_with_a_message_when_the_folder_is_missing(tmp_path, capsys):
    assert bench.time_files(tmp_path / "nowhere", {}, batch_size=1, num_frames=2, repeats=1) == ([], {})
    assert "skipping scoring from files" in capsys.readouterr().err


def test_main_reports_a_model_it_cannot_load(tmp_path, capsys):
    assert bench.main(["--model", str(tmp_path / "no-such-checkpoint"), "--root", str(tmp_path)]) == 2
    assert "cannot load --model" in capsys.readouterr().err
