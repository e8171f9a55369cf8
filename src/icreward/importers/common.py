"""What every importer shares: the error naming the input file and row, the list of skipped entries, CSV reading,
path arithmetic for manifests, and number parsing. Pure Python: importing it costs nothing.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from icreward.errors import IcrewardError


class ImportInputError(IcrewardError):
    """An input of an importer is invalid. `path` is the file, `where` the row or entry (None: the whole file)."""

    def __init__(self, path: str | Path, where: str | None, reason: str):
        self.path = str(path)
        self.where = where
        self.reason = reason
        super().__init__(f"{self.path}{f' ({where})' if where else ''}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.where, self.reason))


@dataclass
class Issues:
    """Bad entries: raised at once, or (with `skip_bad`) collected to be listed after the import."""

    skip_bad: bool = False
    skipped: list[ImportInputError] = field(default_factory=list)

    def bad(self, path: str | Path, where: str | None, reason: str) -> None:
        """Raise `ImportInputError`, or record it under `skip_bad` (the caller then drops the entry)."""
        err = ImportInputError(path, where, reason)
        if not self.skip_bad:
            raise err
        self.skipped.append(err)

    def lines(self) -> list[str]:
        return [str(err) for err in self.skipped]


def fail(path: str | Path, where: str | None, reason: str) -> NoReturn:
    raise ImportInputError(path, where, reason)


def manifest_path(path: Path, base: Path) -> str:
    """`path` as a manifest in folder `base` writes it: relative to `base` (POSIX slashes), absolute where it cannot
    be relative (another drive)."""
    absolute = os.path.abspath(path)
    try:
        return Path(os.path.relpath(absolute, os.path.abspath(base))).as_posix()
    except ValueError:
        return Path(absolute).as_posix()


def resolve(given: str, base: Path) -> Path:
    """A path from an input file: absolute as it is, else relative to `base`."""
    p = Path(given).expanduser()
    return p if p.is_absolute() else base / p


def finite_number(value: Any) -> float | None:
    """A finite float from a JSON number, a bool (1.0/0.0) or a numeric string; None when it is none of these."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float | str):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return None
        return number if math.isfinite(number) else None
    return None


def plain_number(text: str) -> int | float | str:
    """A CSV cell as an int or float where it reads as one (fps, frame counts), else the text unchanged."""
    try:
        return int(text)
    except ValueError:
        pass
    number = finite_number(text)
    return number if number is not None else text


CsvRow = dict[str, str] | str  # a row's non-empty cells by column, or why the row is bad


def read_csv(path: Path, required: tuple[str, ...] = ()) -> tuple[list[str], Iterator[tuple[int, CsvRow]]]:
    """The header and the rows of a UTF-8 CSV file: `(line, {column: stripped cell})` with empty cells left out, or
    `(line, reason)` for a row of the wrong width (the caller raises or skips it).

    Raises `ImportInputError` for a missing file, a malformed CSV or a missing column.
    """
    if not path.is_file():
        fail(path, None, "file not found" if not path.exists() else "not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        fail(path, None, f"not UTF-8 text: {err}")
    reader = csv.reader(text.splitlines(keepends=True), skipinitialspace=True, strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if any(cell.strip() for cell in cells):
                rows.append((line, cells))
    except csv.Error as err:
        fail(path, f"line {reader.line_num}", f"malformed CSV: {err}")
    if not rows:
        fail(path, None, "empty CSV: no header")
    header_line, header_cells = rows[0]
    header = [c.strip() for c in header_cells]
    for i, name in enumerate(header, start=1):
        if not name:
            fail(path, f"line {header_line}", f"the header has an empty column name in column {i}")
        if name in header[: i - 1]:
            fail(path, f"line {header_line}", f'the header names column "{name}" twice')
    missing = [c for c in required if c not in header]
    if missing:
        names = ", ".join(missing)
        has = ", ".join(header)
        fail(path, f"line {header_line}", f"missing column{'s' if len(missing) > 1 else ''} {names} (has: {has})")

    def body() -> Iterator[tuple[int, CsvRow]]:
        for line, cells in rows[1:]:
            if len(cells) != len(header):
                yield line, f"row has {len(cells)} cells but the header has {len(header)} columns"
                continue
            yield line, {k: c.strip() for k, c in zip(header, cells, strict=True) if c.strip()}

    return header, body()
