"""Properties of k-fold splitting by source image (icreward.training.kfold_split) and of the labels a manifest derives
from scores, on small manifests written to temporary files (media files are not checked, so none are made)."""

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icreward.errors import IcrewardError
from icreward.manifest import load_manifest
from icreward.rules import label_from_scores
from icreward.training import kfold_split

# A record names its source image with `source`, or else is grouped by its image file.
RECORD = st.tuples(st.sampled_from(["s0", "s1", "s2", "s3", "s4", "s5", "s6", None]), st.integers(0, 3))


def load_pairs(rows: list[dict], **kwargs):
    """A pair manifest holding `rows` (ids and media paths filled in), read back with load_manifest."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pairs.jsonl"
        lines = [
            json.dumps({"id": f"p{i}", "image": "img.png", "video_a": f"a{i}.mp4", "video_b": f"b{i}.mp4", **row})
            for i, row in enumerate(rows)
        ]
        path.write_text("\n".join(lines) + "\n")
        return load_manifest(path, check_files=False, **kwargs)


def manifest_of(records: list[tuple[str | None, int]]):
    rows = []
    for source, image in records:
        row = {"image": f"img{image}.png", "label": "A"}
        if source is not None:
            row["source"] = source
        rows.append(row)
    return load_pairs(rows)


def source_key(source: str | None, image: int) -> tuple:
    return ("source", source) if source is not None else ("image", image)


@settings(max_examples=60)
@given(st.lists(RECORD, min_size=1, max_size=25), st.integers(2, 5), st.integers(0, 2**32 - 1))
def test_kfold_folds_partition_the_records_and_never_split_a_source_image(records, k, seed):
    manifest = manifest_of(records)
    members = defaultdict(list)
    for i, (source, image) in enumerate(records):
        members[source_key(source, image)].append(i)
    if len(members) < k:
        with pytest.raises(IcrewardError, match="folds"):
            kfold_split(manifest, k, seed)
        return
    splits = kfold_split(manifest, k, seed)
    assert len(splits) == k
    validation = [val for _, val in splits]
    assert sorted(i for val in validation for i in val) == list(range(len(records)))  # each record in one fold
    assert all(val for val in validation)  # no fold is empty
    for train, val in splits:
        assert sorted(train + val) == list(range(len(records))) and not set(train) & set(val)
    for rows in members.values():  # all records of one source image are validated together
        assert sum(bool(set(rows) & set(val)) for val in validation) == 1
    # balanced by record count: sizes differ by at most the largest source image's record count
    sizes = [len(val) for val in validation]
    assert max(sizes) - min(sizes) <= max(len(rows) for rows in members.values())
    assert kfold_split(manifest, k, seed) == splits  # same seed, same folds


SCORE = st.one_of(st.sampled_from([0.0, 0.1, 0.7, 0.8, 0.9, 1.0]), st.floats(-10, 10, allow_subnormal=False))


@settings(max_examples=30)
@given(st.lists(st.tuples(SCORE, SCORE), min_size=1, max_size=8), st.sampled_from([0.0, 0.05, 0.1, 0.25]))
def test_a_manifest_derives_pair_labels_with_the_shared_rule(scores, margin):
    """A pair with scores and no label takes label_from_scores' verdict, the rule synth labels its pairs with."""
    manifest = load_pairs([{"score_a": a, "score_b": b} for a, b in scores], tie_margin=margin)
    for record, (a, b) in zip(manifest.records, scores, strict=True):
        assert record.label == label_from_scores(a, b, margin)
        assert record.label == "tie" or (record.label == "A") == (a > b)
