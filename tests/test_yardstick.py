"""The frozen wave-1 icbench-synth test (`benchmarks/fixtures/icbench-synth-wave1`) is intact: its manifests are the
ones the shipped model's card was measured on, and every file they name is there, and nothing else."""

import hashlib
import json
from pathlib import Path

from icreward.manifest import load_manifest

FIXTURE = Path(__file__).parents[1] / "benchmarks" / "fixtures" / "icbench-synth-wave1"
SHA256 = {
    "test.jsonl": "06b33524e440fd8a0c06c5d22872ff61438b14e1d7fd7ff73b19561ff7034d40",
    "val.jsonl": "49d9910a9e9242d0f4af3ff92f9b95ac49cb0532554a1ab87b347496631f7ff3",
    "synth.json": "4a01960be1c290fe933e91b32be3b249354a9138c61cf9cc4753de512bce1a45",
}


def test_the_manifests_are_the_wave_1_ones():
    for name, digest in SHA256.items():
        assert hashlib.sha256((FIXTURE / name).read_bytes()).hexdigest() == digest, name
    config = json.loads((FIXTURE / "synth.json").read_text())
    assert config["synth_version"] == 1 and config["seed"] == 0 and config["config"]["holdout_modes"] == []


def test_every_referenced_file_is_there_and_nothing_else():
    test = load_manifest(FIXTURE / "test.jsonl", require_labels=True)  # check_files: every file exists
    val = load_manifest(FIXTURE / "val.jsonl", require_labels=True)
    assert (len(test.records), len(val.records)) == (408, 90)
    assert len({r.extra["source"] for r in test.records}) == 68
    named = {Path(p).resolve() for m in (test, val) for r in m.records for p in (r.image, r.video_a, r.video_b)}
    media = {p.resolve() for p in FIXTURE.rglob("*") if p.is_file() and p.parent != FIXTURE}
    assert named == media and len(media) == 581
    assert sorted(p.name for p in FIXTURE.iterdir() if p.is_file()) == [
        "SOURCES.md",
        "synth.json",
        "test.jsonl",
        "val.jsonl",
    ]
    assert all(p.stat().st_size > 0 for p in media)
