"""Manifests: the JSONL or CSV files that list what to score, train on and evaluate.

A manifest holds one kind of record:

- pointwise: `{"id", "image", "video", "score"?, "prompt"?, "labels"?}`, `score` on the dataset's own scale;
- pair: `{"id", "image", "video_a", "video_b", "label"?, "score_a"?, "score_b"?, "prompt"?, "labels"?}`, `label`
  one of "A", "B", "tie" (which video keeps the image better), or derived from `score_a`/`score_b`.

`labels` holds per-dimension labels (`{"ic": "A", "motion": "tie"}` for pairs, `{"ic": 0.8}` for points). Media
paths are relative to the manifest's folder unless absolute. Unknown keys are kept in `extra` and written back.
Every problem raises `ManifestError` naming the manifest, the 1-based line and, when known, the record id.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from icreward.atomic import atomic_write
from icreward.errors import ManifestError
from icreward.rules import label_from_scores

MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv")
PAIR_LABELS = {"a": "A", "b": "B", "tie": "tie"}  # accepted spelling (lower-cased) -> stored label

_MEDIA_KEYS = {"point": ("image", "video"), "pair": ("image", "video_a", "video_b")}
_KNOWN_KEYS = {
    "point": {"id", "image", "video", "score", "prompt", "labels"},
    "pair": {"id", "image", "video_a", "video_b", "label", "score_a", "score_b", "prompt", "labels"},
}
_KIND_WORDS = {"point": "pointwise", "pair": "pair"}


@dataclass
class PointRecord:
    """One (image, video) with an optional human score. Media paths are absolute; `line` is 0 when not read."""

    id: str
    image: Path
    video: Path
    score: float | None = None  # human consistency score on the dataset's own scale
    prompt: str | None = None
    labels: dict[str, float] = field(default_factory=dict)  # per-dimension scores, e.g. {"ic": 0.8}
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, passed through untouched
    line: int = 0  # 1-based manifest line it was read from
    given_paths: dict[str, str] = field(default_factory=dict, repr=False)  # media paths as written in the file

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-able dict: media paths as written in the manifest, unknown keys merged back."""
        out: dict[str, Any] = {"id": self.id, **_paths_as_given(self, _MEDIA_KEYS["point"])}
        if self.score is not None:
            out["score"] = self.score
        return _with_common(out, self.prompt, self.labels, self.extra)


@dataclass
class PairRecord:
    """One image and two videos generated from it, with which video keeps the image better, if known."""

    id: str
    image: Path
    video_a: Path
    video_b: Path
    label: str | None = None  # "A", "B" or "tie"
    score_a: float | None = None
    score_b: float | None = None
    prompt: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # per-dimension labels, e.g. {"ic": "A", "motion": "tie"}
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, passed through untouched
    line: int = 0  # 1-based manifest line it was read from
    label_from: Literal["label", "labels", "scores"] | None = "label"  # "label" key, labels["ic"], or derived
    given_paths: dict[str, str] = field(default_factory=dict, repr=False)  # media paths as written in the file

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-able dict, as in the manifest: a label derived from scores is not written back."""
        out: dict[str, Any] = {"id": self.id, **_paths_as_given(self, _MEDIA_KEYS["pair"])}
        if self.label is not None and self.label_from == "label":
            out["label"] = self.label
        if self.score_a is not None:
            out["score_a"] = self.score_a
        if self.score_b is not None:
            out["score_b"] = self.score_b
        return _with_common(out, self.prompt, self.labels, self.extra)


@dataclass
class Manifest:
    """The valid records of one manifest file, with the lines skipped under `skip_bad`."""

    path: Path  # the manifest file, as given
    kind: Literal["point", "pair"]
    records: list[PointRecord | PairRecord]
    skipped: list[ManifestError] = field(default_factory=list)
    score_range: tuple[float, float] | None = None  # (min, max) of score / score_a / score_b: the data's own scale
    tie_margin: float = 0.0  # |score_a - score_b| <= tie_margin made a derived label "tie"

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PointRecord | PairRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> PointRecord | PairRecord:
        return self.records[index]


def load_manifest(
    path: str | Path,
    *,
    skip_bad: bool = False,
    check_files: bool = True,
    tie_margin: float = 0.0,
    require_labels: bool = False,
) -> Manifest:
    """Read and validate a `.jsonl` (also `.json`, one object per line) or `.csv` manifest.

    Raises `ManifestError` on the first invalid line; with `skip_bad` invalid lines go to `Manifest.skipped` instead,
    but a file with no valid record still raises. `check_files` checks that every media path exists.
    A pair without `label` takes `labels["ic"]`, else the label derived from `score_a`/`score_b`: "tie" when
    `|score_a - score_b| <= tie_margin` (up to float rounding), else the higher one. `require_labels` (training,
    evaluation) makes a pair without any label, or a pointwise record without `score`, an error.
    """
    if not (math.isfinite(tie_margin) and tie_margin >= 0):
        raise ValueError(f"tie_margin must be a finite number >= 0, got {tie_margin}")
    path = Path(path)
    if not path.exists():
        raise ManifestError(path, None, "manifest file not found")
    if path.is_dir():
        raise ManifestError(path, None, "is a folder, not a manifest file")
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ManifestError(path, None, f"not a manifest: expected a .jsonl, .json or .csv file, got '{path.name}'")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    parser = _RecordParser(path, check_files=check_files, tie_margin=tie_margin, require_labels=require_labels)
    records: list[PointRecord | PairRecord] = []
    skipped: list[ManifestError] = []
    with contextlib.closing(rows):
        for line, row in rows:
            try:
                if isinstance(row, ManifestError):
                    raise row
                records.append(parser.parse(row, line))
            except ManifestError as err:
                if not skip_bad:
                    raise
                skipped.append(err)
    if not records and not skipped:
        raise ManifestError(path, None, "empty manifest: no records")
    if not records:
        first = skipped[0]
        reason = f"no valid records: all {len(skipped)} non-blank lines are bad (line {first.line}: {first.reason})"
        raise ManifestError(path, None, reason)
    kind: Literal["point", "pair"] = "point" if isinstance(records[0], PointRecord) else "pair"
    scores = [s for r in records for s in _scores(r) if s is not None]
    score_range = (min(scores), max(scores)) if scores else None
    return Manifest(path, kind, records, skipped, score_range, tie_margin)


def write_manifest(path: str | Path, records: Iterable[dict[str, Any] | PointRecord | PairRecord]) -> None:
    """Write records (dicts, or records via `to_dict`) as JSON Lines, atomically. NaN and inf are refused."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        raise ValueError(f"write_manifest writes JSON Lines; name the file .jsonl, not {path.name}")
    with atomic_write(path) as f:
        for record in records:
            row = record.to_dict() if isinstance(record, PointRecord | PairRecord) else record
            if not isinstance(row, dict):
                raise TypeError(f"a manifest record must be a dict, got {type(row).__name__}")
            f.write(json.dumps(row, ensure_ascii=False, allow_nan=False, default=_path_to_str) + "\n")


def format_skipped(manifest: Manifest) -> str:
    """A human summary of the skipped lines, one per line, e.g. `line 4 (id x): missing file ...`; "" if none."""
    if not manifest.skipped:
        return ""
    n = len(manifest.skipped)
    lines = [f"skipped {n} line{'' if n == 1 else 's'} of {manifest.path}:"]
    for err in manifest.skipped:
        who = f" (id {err.record_id})" if err.record_id is not None else ""
        lines.append(f"  line {err.line}{who}: {err.reason}")
    return "\n".join(lines)


class _RecordParser:
    """Turns the raw rows of one manifest into records, remembering ids and the manifest's kind across lines."""

    def __init__(self, path: Path, *, check_files: bool, tie_margin: float, require_labels: bool):
        self.path = path
        self.base = path.absolute().parent
        self.check_files = check_files
        self.tie_margin = tie_margin
        self.require_labels = require_labels
        self.kind: Literal["point", "pair"] | None = None
        self.kind_line = 0
        self.id_lines: dict[str, int] = {}  # id -> line it was first seen on
        self.line = 0  # the line being parsed, and its id once known, for error messages
        self.rid: str | None = None

    def parse(self, raw: Any, line: int) -> PointRecord | PairRecord:
        """Validate one row (a parsed JSON value, or a CSV row as a dict of non-empty cells) into a record."""
        self.line, self.rid = line, None
        if not isinstance(raw, dict):
            self.fail(f"expected a JSON object, got {_json_type(raw)}")
        if raw.get("id") is not None:
            self.rid = self.record_id(raw["id"])
        kind = self.kind_of(raw)
        missing = [k for k in ("id", *_MEDIA_KEYS[kind]) if raw.get(k) is None]
        if missing:
            self.fail(f"missing required key{'s' if len(missing) > 1 else ''} " + ", ".join(f'"{k}"' for k in missing))
        given = {k: self.path_string(raw[k], k) for k in _MEDIA_KEYS[kind]}
        if raw.get("prompt") is not None and not isinstance(raw["prompt"], str):
            self.fail(f"prompt must be a string, got {_show(raw['prompt'])}")
        common = {
            "id": self.rid,
            "prompt": raw.get("prompt"),
            "labels": self.labels(raw.get("labels"), kind),
            "extra": {k: v for k, v in raw.items() if k not in _KNOWN_KEYS[kind]},
            "line": line,
            "given_paths": given,
        }
        media = {k: p if (p := Path(s)).is_absolute() else self.base / p for k, s in given.items()}
        record = self.point(raw, media, common) if kind == "point" else self.pair(raw, media, common)
        if self.check_files:
            absent = [f'missing file for "{k}": {p}' for k, p in media.items() if not p.exists()]
            if absent:
                self.fail("; ".join(absent))
        if self.kind is None:
            self.kind, self.kind_line = kind, line
        return record

    def point(self, raw: dict[str, Any], media: dict[str, Path], common: dict[str, Any]) -> PointRecord:
        score = self.number(raw.get("score"), "score")
        if score is None and self.require_labels:
            self.fail('no "score": training and evaluation need a human score on every record')
        return PointRecord(image=media["image"], video=media["video"], score=score, **common)

    def pair(self, raw: dict[str, Any], media: dict[str, Path], common: dict[str, Any]) -> PairRecord:
        score_a = self.number(raw.get("score_a"), "score_a")
        score_b = self.number(raw.get("score_b"), "score_b")
        if (score_a is None) != (score_b is None):
            given, absent = ("score_a", "score_b") if score_b is None else ("score_b", "score_a")
            self.fail(f'"{given}" is given without "{absent}": a pair needs both scores or neither')
        label_from: Literal["label", "labels", "scores"] | None
        if raw.get("label") is not None:
            label, label_from = self.pair_label(raw["label"], "label"), "label"
        elif "ic" in common["labels"]:
            label, label_from = common["labels"]["ic"], "labels"
        elif score_a is not None and score_b is not None:
            label, label_from = label_from_scores(score_a, score_b, self.tie_margin), "scores"
        else:
            label, label_from = None, None
        if label is None and self.require_labels:
            self.fail(
                'no label: give "label", labels["ic"], or "score_a" and "score_b" '
                "(training and evaluation need one on every pair)"
            )
        return PairRecord(
            image=media["image"],
            video_a=media["video_a"],
            video_b=media["video_b"],
            label=label,
            score_a=score_a,
            score_b=score_b,
            label_from=label_from,
            **common,
        )

    def kind_of(self, raw: dict[str, Any]) -> Literal["point", "pair"]:
        """Whether the row is pointwise ("video") or a pair ("video_a"/"video_b"), checked against earlier rows."""
        is_point = raw.get("video") is not None
        is_pair = raw.get("video_a") is not None or raw.get("video_b") is not None
        if is_point and is_pair:
            self.fail('has both "video" and "video_a"/"video_b": a record is either pointwise or a pair')
        kind = "point" if is_point else "pair" if is_pair else self.kind
        if kind is None:
            self.fail('missing required key "video" (pointwise record), or "video_a" and "video_b" (pair record)')
        if self.kind is not None and kind != self.kind:
            self.fail(
                f"{_KIND_WORDS[kind]} record in a {_KIND_WORDS[self.kind]} manifest (line {self.kind_line} is "
                f"{_KIND_WORDS[self.kind]}): a manifest holds one kind of record"
            )
        return kind

    def record_id(self, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.fail(f"id must be a string or an integer, got {_show(value)}")
        rid = str(value)
        if not rid.strip():
            self.fail("id is empty")
        if rid in self.id_lines:
            self.rid = rid
            self.fail(f'duplicate id "{rid}" (first seen on line {self.id_lines[rid]})')
        self.id_lines[rid] = self.line
        return rid

    def path_string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(f'"{key}" must be a non-empty path string, got {_show(value)}')
        if "\0" in value:
            self.fail(f'"{key}" holds a NUL character, which no file name can: {_show(value)}')
        return value

    def number(self, value: Any, what: str) -> float | None:
        """A finite float from a JSON number or a numeric string (CSV cells); None stays None (absent)."""
        if value is None:
            return None
        number = None
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                number = float(value)
            except (ValueError, OverflowError):
                pass
        if number is None or not math.isfinite(number):
            self.fail(f"{what} must be a finite number, got {_show(value)}")
        return number

    def pair_label(self, value: Any, what: str) -> str:
        if isinstance(value, str) and value.strip().lower() in PAIR_LABELS:
            return PAIR_LABELS[value.strip().lower()]
        self.fail(f'{what} must be "A", "B" or "tie", got {_show(value)}')

    def labels(self, value: Any, kind: Literal["point", "pair"]) -> dict[str, Any]:
        """Per-dimension labels: "A"/"B"/"tie" for pairs, finite numbers for pointwise records."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(f"labels must be an object of dimension -> label, got {_show(value)}")
        out: dict[str, Any] = {}
        for dim, label in value.items():
            if not dim.strip():
                self.fail("labels has an empty dimension name")
            what = f'labels["{dim}"]'
            if label is None:
                self.fail(f"{what} is null: leave the dimension out instead")
            out[dim] = self.pair_label(label, what) if kind == "pair" else self.number(label, what)
        return out

    def fail(self, reason: str) -> NoReturn:
        raise ManifestError(self.path, self.line, reason, self.rid)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, parsed JSON value or ManifestError) for each non-blank physical line, streamed."""
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            if line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            value: Any
            try:
                value = _parse_json(raw.rstrip(b"\r\n").decode("utf-8"))
            except UnicodeDecodeError:
                value = ManifestError(path, line, "line is not valid UTF-8 text")
            except json.JSONDecodeError as err:
                reason = f"malformed JSON: {err.msg} (column {err.colno}); each line must be one whole JSON object"
                value = ManifestError(path, line, reason)
            except ValueError as err:  # what _parse_json refuses
                value = ManifestError(path, line, f"malformed JSON: {err}")
            yield line, value


def _parse_json(text: str) -> Any:
    """`json.loads`, raising ValueError (not RecursionError) for nesting too deep to parse, and for escaped lone
    surrogates (\\ud800), which are not text (they could not be written back or printed)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if "\\u" in text:  # only an escape can make a lone surrogate out of valid UTF-8
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("it holds an escaped lone surrogate (\\ud800-\\udfff), which is not text") from None
        except RecursionError:
            raise ValueError("nested too deeply") from None
    return value


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, row or ManifestError) for each non-blank CSV row: the header's names to the non-empty cells.

    Cells are stripped and empty cells left out (absent); a `labels` cell is parsed as JSON. A row's line is the
    physical line it starts on, the header being line 1 when the file starts with it.
    """
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, skipinitialspace=True, strict=True)
        try:
            header: list[str] | None = None
            start = 1
            for cells in reader:
                line, start = start, reader.line_num + 1
                if not any(cell.strip() for cell in cells):
                    continue
                if header is None:
                    header = _csv_header(path, line, cells)
                    continue
                if len(cells) != len(header):
                    reason = f"row has {len(cells)} cells but the header has {len(header)} columns"
                    yield line, ManifestError(path, line, reason)
                    continue
                row: dict[str, Any] = {k: c.strip() for k, c in zip(header, cells, strict=True) if c.strip()}
                if "labels" in row:
                    try:
                        row["labels"] = _parse_json(row["labels"])
                    except json.JSONDecodeError as err:
                        yield line, ManifestError(path, line, f"labels is not valid JSON: {err.msg}", row.get("id"))
                        continue
                    except ValueError as err:  # too deep, a lone surrogate, an integer of thousands of digits
                        yield line, ManifestError(path, line, f"labels is not valid JSON: {err}", row.get("id"))
                        continue
                yield line, row
        except csv.Error as err:
            raise ManifestError(path, reader.line_num, f"malformed CSV: {err}") from err
        except UnicodeDecodeError as err:
            raise ManifestError(path, None, f"not UTF-8 text: {err}") from err


def _csv_header(path: Path, line: int, cells: list[str]) -> list[str]:
    header = [c.strip() for c in cells]
    for i, name in enumerate(header, start=1):
        if not name:
            hint = " (written with a pandas index? use index=False)" if i == 1 else ""
            raise ManifestError(path, line, f"CSV header has an empty column name in column {i}{hint}")
        if name in header[: i - 1]:
            raise ManifestError(path, line, f'CSV header names column "{name}" twice')
    return header


def _scores(record: PointRecord | PairRecord) -> tuple[float | None, ...]:
    return (record.score,) if isinstance(record, PointRecord) else (record.score_a, record.score_b)


def _paths_as_given(record: PointRecord | PairRecord, keys: tuple[str, ...]) -> dict[str, str]:
    return {k: record.given_paths.get(k, str(getattr(record, k))) for k in keys}


def _with_common(out: dict[str, Any], prompt: str | None, labels: dict[str, Any], extra: dict[str, Any]) -> dict:
    if prompt is not None:
        out["prompt"] = prompt
    if labels:
        out["labels"] = dict(labels)
    out.update((k, v) for k, v in extra.items() if k not in out)
    return out


def _path_to_str(value: Any) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def _show(value: Any, limit: int = 60) -> str:
    """A value as it would read in the manifest (JSON), cut to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
