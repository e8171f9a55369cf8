"""Score a manifest into a JSONL file: one result line per input line, in input order, resumable after a crash.

While a run goes, each finished result is appended to a side file (`partial_path(out)`), fsynced every few lines;
the output is written atomically at the end and the side file removed. `--resume` keeps what either already holds,
and what the per-process side files of a run under a launcher hold (`scoring/distributed.py`).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Container, Iterator
from pathlib import Path
from typing import IO

from icreward.interface import Scorer
from icreward.scoring.engine import Item, score_items


def reward_videos(record) -> list[tuple[str, Path]]:
    """(output key, video) of each video of a manifest record: `reward_a`/`reward_b` for pairs, else `reward`."""
    from icreward.manifest import PairRecord

    if isinstance(record, PairRecord):
        return [("reward_a", record.video_a), ("reward_b", record.video_b)]
    return [("reward", record.video)]


def iter_manifest_records(
    scorer: Scorer, manifest, *, skip: Container[str] = frozenset(), **kwargs
) -> Iterator[tuple[int, dict]]:
    """`(line, output record)` of each line of a loaded `Manifest` whose id is not in `skip`, each yielded as soon as
    its videos are scored: the manifest's invalid lines first, then the records in input order.

    Records are `{"id", "reward"}`, `{"id", "reward_a", "reward_b"}` or `{"id", "line", "error"}`; with
    `heads=True` (in `kwargs`, which go to `score_items`) also every head of the scorer: `"heads"` (pointwise) or
    `"heads_a"` / `"heads_b"` (pairs), `{head: value or null}`. Each record's `prompt` goes to the text head.
    """
    for err in manifest.skipped:
        yield err.line or 0, {"id": err.record_id, "line": err.line, "error": err.reason}
    todo = [rec for rec in manifest.records if rec.id not in skip]
    items = [
        Item(f"{rec.id}\0{key}", rec.image, video, rec.prompt) for rec in todo for key, video in reward_videos(rec)
    ]
    results = score_items(scorer, items, **kwargs)
    for rec in todo:
        parts = {key: next(results) for key, _ in reward_videos(rec)}
        errors = [r.error for r in parts.values() if r.error]
        if errors:
            yield rec.line, {"id": rec.id, "line": rec.line, "error": "; ".join(errors)}
        else:
            out = {"id": rec.id, **{key: r.reward for key, r in parts.items()}}
            for key, r in parts.items():
                if r.heads:
                    out[key.replace("reward", "heads")] = r.heads[0]
            yield rec.line, out


def score_manifest(scorer: Scorer, manifest_path: str | Path, **kwargs) -> list[dict]:
    """One output record per input line of the manifest, in input order.

    Point records give `{"id", "reward"}`, pair records `{"id", "reward_a", "reward_b"}`; a line that is invalid
    or whose media cannot be read gives `{"id", "line", "error"}` and the others go on.
    """
    from icreward.manifest import load_manifest

    manifest = load_manifest(manifest_path, skip_bad=True, check_files=False)
    return [record for _, record in sorted(iter_manifest_records(scorer, manifest, **kwargs), key=lambda x: x[0])]


def partial_path(out: str | Path) -> Path:
    """The side file where a manifest run appends finished results while it goes: `rewards.partial.jsonl`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial{out.suffix or '.jsonl'}")


def rank_partial_path(out: str | Path, rank: int, world_size: int) -> Path:
    """The side file of process `rank` of `world_size`: `rewards.partial.rank1-of-2.jsonl`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial.rank{rank}-of-{world_size}{out.suffix or '.jsonl'}")


def side_files(out: str | Path) -> list[Path]:
    """Every side file of `out` on disk: the single-process one and those of any world size, sorted."""
    out = Path(out)
    found = sorted(out.parent.glob(f"{glob.escape(out.stem)}.partial.rank*-of-*{out.suffix or '.jsonl'}"))
    single = partial_path(out)
    return ([single] if single.is_file() else []) + [p for p in found if p.is_file()]


def check_output_paths(manifest_path: str | Path, out: str | Path, out_flag: str | None = None) -> None:
    """Refuse (`IcrewardError`) an output that would overwrite the manifest (the output itself or its side file),
    is a folder, or cannot be written; nothing is created."""
    from icreward.atomic import check_output_file

    inputs = {"--manifest" if out_flag else "manifest": manifest_path}
    check_output_file(out, flag=out_flag, inputs=inputs)
    side = partial_path(out)
    check_output_file(side, flag=f"{out_flag}'s side file" if out_flag else None, inputs=inputs)


def finished_lines(path: Path) -> dict[str, tuple[str, dict]]:
    """id -> (line, record) of the result lines of an earlier run that are whole and not errors (a torn last line
    of a killed run's side file does not parse and is left out)."""
    if not path.is_file():
        return {}
    finished = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str) and "error" not in record:
            finished[record["id"]] = (line.strip(), record)
    return finished


class SideFile:
    """Appends result lines to the side file, flushed to the OS at once (a killed process loses none) and fsynced
    every `fsync_every` lines (a machine crash loses at most that many)."""

    def __init__(self, path: Path, fsync_every: int):
        self.path, self.fsync_every, self.unsynced = path, max(1, fsync_every), 0
        self.file: IO[str] | None = None

    def append(self, line: str) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a", encoding="utf-8")
            torn = False
            if self.file.tell():
                with self.path.open("rb") as f:
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
            if torn:  # end the torn line of a killed run, so the next line parses
                self.file.write("\n")
        self.file.write(line + "\n")
        self.file.flush()
        self.unsynced += 1
        if self.unsynced >= self.fsync_every:
            self.sync()

    def sync(self) -> None:
        if self.file is not None and self.unsynced:
            os.fsync(self.file.fileno())
            self.unsynced = 0

    def close(self) -> None:
        if self.file is not None:
            self.sync()
            self.file.close()
            self.file = None


def score_manifest_to_file(
    scorer: Scorer,
    manifest_path: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    flush_every: int = 64,
    log: Callable[[str], None] | None = None,
    **kwargs,
) -> list[dict]:
    """Score a manifest into the JSONL file `out` (one line per input line, in input order) and return the records.

    `out` is written atomically at the end. Meanwhile each finished result is appended to `partial_path(out)`
    (fsynced every `flush_every` results), which is removed once `out` is written. With `resume`, the ids that
    already have a result (not an error) in `out` or in the side file keep that line and are not scored again;
    the rest are. Resume with the same model: the lines kept are not checked against it. An `out` that is the
    manifest (or whose side file would be), a folder, or not writable is refused before anything is scored.
    """
    from icreward.atomic import atomic_write
    from icreward.manifest import load_manifest

    check_output_paths(manifest_path, out)
    out = Path(out)
    side = partial_path(out)
    manifest = load_manifest(manifest_path, skip_bad=True, check_files=False)
    rows: list[tuple[int, dict, str]] = []  # (manifest line, record, output line)
    if resume:
        finished = finished_lines(out)
        for path in side_files(out):  # the single-process side file and those of a run under a launcher
            finished.update(finished_lines(path))
        for rec in manifest.records:
            line, record = finished.get(rec.id, ("", {}))
            if all(key in record for key, _ in reward_videos(rec)):
                rows.append((rec.line, record, line))
        if log is not None:
            log(f"resuming: {len(rows)} of {len(manifest.records)} records already scored in {out} / {side.name}")
    else:
        for path in side_files(out):
            path.unlink(missing_ok=True)
    sidefile = SideFile(side, flush_every)
    try:
        kept = {record["id"] for _, record, _ in rows}
        for line_no, record in iter_manifest_records(scorer, manifest, skip=kept, **kwargs):
            line = json.dumps(record)
            if "error" not in record:
                sidefile.append(line)
            rows.append((line_no, record, line))
    finally:
        sidefile.close()
    rows.sort(key=lambda row: row[0])
    with atomic_write(out) as f:
        for _, _, line in rows:
            f.write(line + "\n")
    for path in side_files(out):
        path.unlink(missing_ok=True)
    return [record for _, record, _ in rows]
