"""A generic CSV of one human score per video -> a pair manifest (or a pointwise one).

Columns: `image`, `video`, `score` (required), `prompt`, `id`, `group` (optional); paths relative to the CSV's
folder unless absolute. Pairs: every two videos of one group (the `group` cell where given, else the same image
and the same prompt), in CSV order (A is the earlier row), labelled with `icreward.rules.label_from_scores` at the
tie margin, `score_a`/`score_b` kept. Pointwise: one record per row. Other columns are passed through (pointwise).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

from icreward.importers.common import Issues, fail, finite_number, manifest_path, read_csv, resolve
from icreward.rules import label_from_scores

_KNOWN = {"image", "video", "score", "prompt", "id", "group"}


def score_rows(csv_path: str | Path, out_path: str | Path, issues: Issues | None = None) -> list[dict[str, Any]]:
    """One pointwise record per valid row, media paths relative to `out_path`'s folder; `id` defaults to the video
    path as written in the CSV. Nothing is written."""
    issues = issues if issues is not None else Issues()
    csv_path = Path(csv_path)
    out_base = Path(out_path).parent
    _, rows = read_csv(csv_path, required=("image", "video", "score"))
    records: list[dict[str, Any]] = []
    ids: dict[str, int] = {}
    for line, cells in rows:
        where = f"line {line}"
        if isinstance(cells, str):
            issues.bad(csv_path, where, cells)
            continue
        missing = [k for k in ("image", "video", "score") if k not in cells]
        if missing:
            issues.bad(csv_path, where, f"empty {', '.join(missing)}")
            continue
        score = finite_number(cells["score"])
        if score is None:
            issues.bad(csv_path, where, f"score must be a finite number, got {cells['score']!r}")
            continue
        image, video = resolve(cells["image"], csv_path.parent), resolve(cells["video"], csv_path.parent)
        absent = [f"{k} not found: {p}" for k, p in (("image", image), ("video", video)) if not p.is_file()]
        if absent:
            issues.bad(csv_path, where, "; ".join(absent))
            continue
        rid = cells.get("id", cells["video"])
        if rid in ids:
            issues.bad(csv_path, where, f'duplicate id "{rid}" (first on line {ids[rid]})')
            continue
        ids[rid] = line
        record: dict[str, Any] = {
            "id": rid,
            "image": manifest_path(image, out_base),
            "video": manifest_path(video, out_base),
            "score": score,
        }
        if "prompt" in cells:
            record["prompt"] = cells["prompt"]
        if "group" in cells:
            record["group"] = cells["group"]
        record.update((k, v) for k, v in cells.items() if k not in _KNOWN)
        records.append(record)
    if not records and not issues.skipped:
        fail(csv_path, None, "no rows")
    return records


def pairs_from_scores(points: list[dict[str, Any]], margin: float = 0.0) -> list[dict[str, Any]]:
    """Every pair of records of one group (the `group` where given, else same image and prompt), in input order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for p in points:
        key = ("group", p["group"]) if "group" in p else ("image", p["image"], p.get("prompt"))
        groups.setdefault(key, []).append(p)
    pairs = []
    for members in groups.values():
        for a, b in combinations(members, 2):
            pair: dict[str, Any] = {
                "id": f"{a['id']}~{b['id']}",
                "image": a["image"],
                "video_a": a["video"],
                "video_b": b["video"],
                "label": label_from_scores(a["score"], b["score"], margin),
                "score_a": a["score"],
                "score_b": b["score"],
                "tie_margin": margin,
            }
            if a.get("prompt") is not None and a.get("prompt") == b.get("prompt"):
                pair["prompt"] = a["prompt"]
            if "group" in a:
                pair["group"] = a["group"]
            if a["image"] != b["image"]:
                pair["image_b"] = b["image"]  # a group of several images: A's image is the one scored against
            pairs.append(pair)
    return pairs
