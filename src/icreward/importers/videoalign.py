"""VideoAlign's CSVs (VideoGen-RewardBench, and its training CSV) -> a pair manifest.

The CSV has `path_A, path_B` (relative to the CSV's folder, or to `videos_root`), a label per dimension in `VQ`,
`MQ`, `TA` and (benchmark only) `Overall`, each `A`, `B` or `same`; any other string means "no label on this
dimension". Optional `MOS_A_<dim>` / `MOS_B_<dim>` hold mean opinion scores.

Each record: `labels` {"vq", "motion" (MQ), "text" (TA), "overall"}, `same` written "tie"; `label` the label of
`label_dim` (by default "overall" when the CSV has an Overall column, else none), left out where that dimension
has no label on the row (`load_manifest` accepts a pair without `label`; training and evaluation take only the
pairs that have one, or `labels["ic"]`). A row with no usable label on any dimension is left out. MOS columns are
kept as `score_a_<dim>` / `score_b_<dim>` (never `score_a`/`score_b`, from which a label would be derived), and
`prompt`, `A_model`, `B_model`, `fps_A`, `num_frames_A`, `fps_B`, `num_frames_B` and any other column are passed
through.

VideoAlign is text-to-video: it has no conditioning image, and none is made up. The CSV must have an `image`
column, or the caller must ask for `image_from="first-frame"`: the first frame of video A, written as a PNG.
That image is video A's own first frame, so it favours video A on image consistency; it is for scoring the other
dimensions with icreward's pipeline, not for measuring consistency.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from icreward.importers.common import (
    CsvRow,
    Issues,
    fail,
    finite_number,
    manifest_path,
    plain_number,
    read_csv,
    resolve,
)

DIMENSIONS = {"VQ": "vq", "MQ": "motion", "TA": "text", "Overall": "overall"}  # CSV column -> labels key
LABEL_WORDS = {"a": "A", "b": "B", "same": "tie", "tie": "tie"}
_NUMERIC = ("fps_A", "num_frames_A", "fps_B", "num_frames_B")
_CONSUMED = {"path_A", "path_B", "prompt", "image", "id"}
ImageFrom = Literal["column", "first-frame"]


@dataclass
class _Row:
    record: dict[str, Any]
    line: int
    video_a: Path  # absolute-or-cwd path, for the first frame


def label_of(cell: str | None) -> str | None:
    """ "A" / "B" / "tie" for a VideoAlign label cell; None for an empty cell or any other string ("ignore")."""
    return LABEL_WORDS.get(cell.strip().lower()) if cell is not None else None


def dimension_key(name: str) -> str:
    """The `labels` key of a CSV dimension: VQ -> vq, MQ -> motion, TA -> text, Overall -> overall, else lower-cased."""
    return DIMENSIONS.get(name, name.lower())


def videoalign_records(
    csv_path: str | Path,
    out_path: str | Path,
    *,
    videos_root: str | Path | None = None,
    image_from: ImageFrom | None = None,
    frames_dir: str | Path | None = None,
    label_dim: str | None = None,
    issues: Issues | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[Path, Path]], int]:
    """(records, frames to extract as (video A, PNG path), rows left out for having no label), paths relative to
    `out_path`'s folder. Nothing is written.

    `image_from`: None or "column" needs an `image` column (relative like the videos); "first-frame" makes each
    record's image `frames_dir/<id>.png` (default: `images/` beside `out_path`), to be extracted by `extract_frames`.
    `label_dim`: the `labels` key that becomes the top-level `label` (default: "overall" if the CSV has Overall).
    """
    issues = issues if issues is not None else Issues()
    csv_path = Path(csv_path)
    out_base = Path(out_path).parent
    header, rows = read_csv(csv_path, required=("path_A", "path_B"))
    dims = [c for c in header if c in DIMENSIONS]
    if not dims:
        fail(csv_path, "line 1", f"no label column: expected one or more of {', '.join(DIMENSIONS)}")
    keys = [dimension_key(d) for d in dims]
    if label_dim is None:
        label_dim = "overall" if "overall" in keys else None
    elif label_dim not in keys:
        fail(csv_path, "line 1", f"--label {label_dim}: the CSV has no such dimension (it has: {', '.join(keys)})")
    if image_from in (None, "column") and "image" not in header:
        fail(
            csv_path,
            "line 1",
            "no image column: VideoAlign data is text-to-video and has no conditioning image; add an image column, "
            "or give --image-from first-frame to use the first frame of video A (which favours video A on image "
            "consistency)",
        )
    base = Path(videos_root) if videos_root is not None else csv_path.parent
    frames = Path(frames_dir) if frames_dir is not None else out_base / "images"
    mos = _mos_columns(header)
    records: list[dict[str, Any]] = []
    pending: tuple[Path, Path] | None
    to_extract: list[tuple[Path, Path]] = []
    unlabelled = 0
    ids: dict[str, int] = {}
    for row in _rows(csv_path, rows, base, issues):
        r = row.record
        labels = r["labels"]
        if not labels:
            unlabelled += 1
            continue
        if label_dim is not None and label_dim in labels:
            r["label"] = labels[label_dim]
        rid = r["id"] if "id" in r else f"{csv_path.stem}-{row.line - 1}"
        if rid in ids:
            issues.bad(csv_path, f"line {row.line}", f'duplicate id "{rid}" (first on line {ids[rid]})')
            continue
        ids[rid] = row.line
        r["id"] = rid
        if image_from == "first-frame":
            png = frames / f"{_file_safe(rid)}.png"
            r["image"] = manifest_path(png, out_base)
            r["image_from"] = "first frame of video_a"
            pending = (row.video_a, png)
        elif "_image" not in r:
            issues.bad(csv_path, f"line {row.line}", "empty image cell")
            continue
        else:
            image = resolve(r.pop("_image"), base)
            if not image.is_file():
                issues.bad(csv_path, f"line {row.line}", f"image not found: {image}")
                continue
            r["image"] = manifest_path(image, out_base)
            pending = None
        r.pop("_image", None)
        for key in ("video_a", "video_b"):
            r[key] = manifest_path(r[key], out_base)
        for side, dim, column in mos:
            if column in r["_cells"]:
                value = finite_number(r["_cells"][column])
                if value is None:
                    issues.bad(csv_path, f"line {row.line}", f"{column} must be a number, got {r['_cells'][column]!r}")
                    break
                r[f"score_{side}_{dimension_key(dim)}"] = value
        else:
            r.pop("_cells")
            records.append(_ordered(r))
            if pending is not None:
                to_extract.append(pending)
    return records, to_extract, unlabelled


def _rows(csv_path: Path, rows: Iterator[tuple[int, CsvRow]], base: Path, issues: Issues) -> Iterator[_Row]:
    for line, cells in rows:
        where = f"line {line}"
        if isinstance(cells, str):
            issues.bad(csv_path, where, cells)
            continue
        missing = [k for k in ("path_A", "path_B") if k not in cells]
        if missing:
            issues.bad(csv_path, where, f"empty {' and '.join(missing)}")
            continue
        video_a, video_b = resolve(cells["path_A"], base), resolve(cells["path_B"], base)
        absent = [str(p) for p in (video_a, video_b) if not p.is_file()]
        if absent:
            issues.bad(csv_path, where, f"video not found: {', '.join(absent)}")
            continue
        labels = {dimension_key(d): lab for d in DIMENSIONS if (lab := label_of(cells.get(d))) is not None}
        record: dict[str, Any] = {"video_a": video_a, "video_b": video_b, "labels": labels, "_cells": cells}
        if "id" in cells:
            record["id"] = cells["id"]
        if "image" in cells:
            record["_image"] = cells["image"]
        if "prompt" in cells:
            record["prompt"] = cells["prompt"]
        for column, value in cells.items():
            if column in _CONSUMED or column in DIMENSIONS or column.startswith(("MOS_A_", "MOS_B_")):
                continue
            record[column] = plain_number(value) if column in _NUMERIC else value
        yield _Row(record, line, video_a)


def _mos_columns(header: list[str]) -> list[tuple[str, str, str]]:
    """(side "a"/"b", dimension, column) of every `MOS_A_<dim>` / `MOS_B_<dim>` column."""
    out = []
    for column in header:
        for prefix, side in (("MOS_A_", "a"), ("MOS_B_", "b")):
            if column.startswith(prefix) and len(column) > len(prefix):
                out.append((side, column[len(prefix) :], column))
    return out


def _file_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).lstrip(".") or "_"


def _ordered(r: dict[str, Any]) -> dict[str, Any]:
    first = ("id", "image", "video_a", "video_b", "label", "labels", "prompt")
    return {**{k: r[k] for k in first if k in r}, **{k: v for k, v in r.items() if k not in first}}


def extract_first_frame(video: str | Path, png: str | Path) -> None:
    """Write the first decodable frame of `video` to `png` (atomically). Raises `MediaError` if it has none."""
    import av
    from PIL import Image

    from icreward.atomic import atomic_write
    from icreward.errors import MediaError

    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise MediaError(video, "has no video stream")
            frame = next(iter(container.decode(video=0)), None)
    except MediaError:
        raise
    except Exception as exc:  # FFmpegError, and what PyAV raises converting what it read
        raise MediaError(video, f"could not read its first frame ({str(exc)[:200]})") from exc
    if frame is None:
        raise MediaError(video, "has no frame to decode")
    image: Image.Image = frame.to_image()
    with atomic_write(png, "wb") as f:
        image.save(f, format="PNG")


def extract_frames(
    to_extract: list[tuple[Path, Path]], records: list[dict[str, Any]], csv_path: str | Path, issues: Issues
) -> list[dict[str, Any]]:
    """Extract each first frame; the records whose frame could not be read are dropped (with `issues.skip_bad`) or
    raise `ImportInputError` naming the CSV and the video."""
    from icreward.errors import MediaError

    kept = []
    for (video, png), record in zip(to_extract, records, strict=True):
        try:
            extract_first_frame(video, png)
        except MediaError as err:
            issues.bad(csv_path, f"id {record['id']}", f"could not extract the first frame: {err}")
            continue
        kept.append(record)
    return kept
