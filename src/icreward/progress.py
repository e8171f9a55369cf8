"""Progress of long runs: a tqdm bar on a terminal, a plain line now and then in a log file or pipe, or nothing.

`progress_bar(...)` is what every long loop uses (scoring, synth rendering, training epochs). Where the stream is
not a terminal (a log file, CI, `2> log`), a bar's carriage returns would pile up into one unreadable line, so the
bar prints whole lines instead: one every `LINE_INTERVAL` seconds, and one at each tenth of the way (at most one per
`LINE_MIN_GAP` seconds), plus a last one when the loop ends, e.g.

    scoring (default): 480/1200 video (40%), 01:02 elapsed, ~01:33 left

`silenced()` (the CLI's `--quiet`) turns every bar off for the calls made inside it; errors are not progress and
still print. Light to import: tqdm only, no torch.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

LINE_INTERVAL = 10.0  # seconds between two plain lines at most (while the loop advances)
LINE_MIN_GAP = 2.0  # seconds between two plain lines at least (a short loop prints few lines, or none)
_LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%), {elapsed} elapsed, ~{remaining} left{postfix}"
_LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} {unit}, {elapsed} elapsed{postfix}"

_silenced = False


@contextlib.contextmanager
def silenced(quiet: bool = True) -> Iterator[None]:
    """Within this block (when `quiet`), every `progress_bar` is disabled."""
    global _silenced
    before = _silenced
    _silenced = before or quiet
    try:
        yield
    finally:
        _silenced = before


def is_silenced() -> bool:
    return _silenced


class LineProgress(tqdm):
    """A tqdm bar for streams that are not terminals: whole lines, printed now and then (see the module docstring).

    The counting, rates and formatting are tqdm's; only when and how a line is shown differs.
    """

    def __init__(self, *args: Any, interval: float | None = None, min_gap: float | None = None, **kwargs: Any):
        self._interval = LINE_INTERVAL if interval is None else interval
        self._min_gap = LINE_MIN_GAP if min_gap is None else min_gap
        self._printed_t: float | None = None  # when the last line was printed (None: none yet)
        self._printed_n = 0
        self._printed_tenth = 0
        total = kwargs.get("total")
        if total is None and args:
            total = getattr(args[0], "__len__", lambda: None)()
        kwargs.setdefault("bar_format", _LINE_FORMAT if total else _LINE_FORMAT_NO_TOTAL)
        kwargs.update(mininterval=0, miniters=1)  # every update reaches `display`, which decides
        super().__init__(*args, **kwargs)
        self._started = time.monotonic()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None or not hasattr(self, "_started"):  # tqdm clearing or drawing before the start
            return False
        now = time.monotonic()
        since = now - (self._printed_t if self._printed_t is not None else self._started)
        tenth = int(10 * self.n / self.total) if self.total else 0
        due = since >= self._interval or (tenth > self._printed_tenth and since >= self._min_gap)
        if self.n == self._printed_n or not due:
            return False
        self._print_line(now, tenth)
        return True

    def _print_line(self, now: float, tenth: int) -> None:
        self.fp.write(self.__str__().rstrip() + "\n")
        getattr(self.fp, "flush", lambda: None)()
        self._printed_t, self._printed_n, self._printed_tenth = now, self.n, tenth

    def clear(self, nolock: bool = False) -> None:  # lines stay; there is nothing to erase
        return

    def close(self) -> None:
        if getattr(self, "disable", True):
            return
        started = getattr(self, "_started", None)
        if started is not None and self.n != self._printed_n:
            now = time.monotonic()
            if self._printed_t is not None or now - started >= self._min_gap:  # the last count of a visible run
                self._print_line(now, int(10 * self.n / self.total) if self.total else 0)
        self.disable = True
        self._decr_instances(self)


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    file: IO[str] | None = None,
    leave: bool = True,
    **kwargs: Any,
) -> tqdm:
    """A progress bar over `iterable` (or updated by hand up to `total`) on `file` (default: stderr).

    A tqdm bar when `file` is a terminal, a `LineProgress` (plain lines now and then) otherwise, and a disabled bar
    when not `enabled` or inside `silenced()`.
    """
    file = file if file is not None else sys.stderr
    mininterval = kwargs.pop("mininterval", 0.5)
    common = dict(total=total, desc=desc, unit=unit, file=file, leave=leave, **kwargs)
    if not enabled or _silenced:
        return tqdm(iterable, disable=True, **common)
    isatty = getattr(file, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(iterable, mininterval=mininterval, **common)
    return LineProgress(iterable, **common)
