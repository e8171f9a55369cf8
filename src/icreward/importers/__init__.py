"""Importers: turn labelled data users already have into icreward manifests (`icreward import FORMAT`).

- `vbench`: VBench(-I2V) `<name>_eval_results.json` + `vbench2_i2v_full_info.json` -> one pointwise manifest per
  dimension (`vbench_i2v_records`, `write_vbench_i2v`);
- `videoalign`: VideoAlign's VideoGen-RewardBench / training CSV -> a pair manifest (`videoalign_records`);
- `scores`: a CSV of one score per video -> pairs of videos of one image (`score_rows`, `pairs_from_scores`).

The functions return records (dicts, media paths relative to where the manifest goes); `icreward.manifest.
write_manifest` writes them atomically. Bad input raises `ImportInputError` naming the file and the row or entry;
with an `Issues(skip_bad=True)` the bad entries are collected in `Issues.skipped` and left out instead.
"""

from icreward.importers.common import ImportInputError, Issues
from icreward.importers.scores import pairs_from_scores, score_rows
from icreward.importers.vbench import I2VInfo, read_vbench_results, vbench_i2v_records, write_vbench_i2v
from icreward.importers.videoalign import extract_frames, videoalign_records

__all__ = [
    "I2VInfo",
    "ImportInputError",
    "Issues",
    "extract_frames",
    "pairs_from_scores",
    "read_vbench_results",
    "score_rows",
    "vbench_i2v_records",
    "videoalign_records",
    "write_vbench_i2v",
]
