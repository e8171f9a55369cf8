"""Atomic writes and safe output paths: an output is either absent, the old whole output, or the new whole output,
never half-written; a folder output never deletes files its writer did not write; an output never overwrites an input.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from icreward.errors import IcrewardError

PathLike = str | os.PathLike


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit fsync it and rename it over `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---- output paths


def _where(path: PathLike, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def _real(path: PathLike) -> Path:
    """`path` absolute, with `..` and the symlinks of its existing part resolved."""
    return Path(os.path.realpath(os.path.abspath(path)))


def same_path(a: PathLike, b: PathLike) -> bool:
    """Whether `a` and `b` name the same file or folder (through symlinks and hard links too)."""
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return _real(a) == _real(b)


def is_within(path: PathLike, folder: PathLike) -> bool:
    """Whether `path` is `folder` or lies somewhere inside it (symlinks and `..` resolved)."""
    p, f = _real(path), _real(folder)
    return p == f or f in p.parents or same_path(path, folder)


def file_kind(path: PathLike) -> str | None:
    """None for a regular file, a folder or a missing path; else what it is ("a FIFO (named pipe)", ...).

    Reading a FIFO blocks until something writes to it, and a device may never end: neither is a media file or a
    manifest.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def check_readable_input(path: PathLike, flag: str | None = None) -> None:
    """Refuse an input that exists but is not a regular file or folder (a FIFO, a socket, a device)."""
    kind = file_kind(path)
    if kind is not None:
        raise IcrewardError(f"{_where(path, flag)}: is {kind}, not a regular file")


def check_not_an_input(
    out: PathLike, inputs: Mapping[str, PathLike | None], flag: str | None = None, folder: bool = False
) -> None:
    """Refuse an output that is one of `inputs` ({flag: path}), lies inside one, or (a `folder` output) holds an input
    folder. A folder output holding an input file is fine: writing beside an input manifest overwrites nothing."""
    for in_flag, inp in inputs.items():
        if inp is None:
            continue
        if same_path(out, inp):
            raise IcrewardError(f"{_where(out, flag)}: is the input {in_flag} {inp}; write the output elsewhere")
        if is_within(out, inp):
            raise IcrewardError(f"{_where(out, flag)}: lies inside the input {in_flag} {inp}; write it elsewhere")
        if folder and Path(inp).is_dir() and is_within(inp, out):
            raise IcrewardError(
                f"{_where(out, flag)}: holds the input {in_flag} {inp}; write the output to a folder of its own"
            )


def _check_can_create(path: Path, flag: str | None) -> None:
    """The nearest existing folder on the way to `path` is a folder we may write in."""
    parent = Path(os.path.abspath(path)).parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link: mkdir would fail
            break
        parent = parent.parent
    if not parent.is_dir():
        raise IcrewardError(f"{_where(path, flag)}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise IcrewardError(f"{_where(path, flag)}: cannot write in {parent} (permission denied)")


def check_output_file(
    path: PathLike, *, flag: str | None = None, inputs: Mapping[str, PathLike | None] | None = None
) -> None:
    """Refuse an output file path that is an input, an existing folder or special file, or not writable."""
    check_not_an_input(path, inputs or {}, flag)
    p = Path(path)
    if p.is_dir():
        raise IcrewardError(f"{_where(path, flag)}: is a folder; give the path of a file")
    if p.exists() and not p.is_file():
        raise IcrewardError(f"{_where(path, flag)}: is {file_kind(p) or 'not a regular file'}; give a file path")
    _check_can_create(p, flag)


def is_previous_output(path: PathLike, marker: Collection[str]) -> bool:
    """Whether the folder `path` holds every file of `marker` (what its writer always writes): an earlier output."""
    return bool(marker) and all((Path(path) / name).is_file() for name in marker)


def check_output_dir(
    path: PathLike,
    *,
    flag: str | None = None,
    inputs: Mapping[str, PathLike | None] | None = None,
    marker: Collection[str] = (),
    overwrite: bool = False,
    what: str = "output",
) -> None:
    """Refuse an output folder that is, holds or lies inside an input, is a file, cannot be written, or (unless
    `overwrite`) is a non-empty folder that is not an earlier output of the same writer (recognised by `marker`)."""
    check_not_an_input(path, inputs or {}, flag, folder=True)
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise IcrewardError(f"{_where(path, flag)}: is a file, not a folder")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise IcrewardError(f"{_where(path, flag)}: cannot write in this folder (permission denied)")
        if not overwrite and any(p.iterdir()) and not is_previous_output(p, marker):
            earlier = f"an earlier {what} (it has no {' / '.join(marker)})" if marker else f"an earlier {what}"
            raise IcrewardError(
                f"{_where(path, flag)}: the folder holds other files and is not {earlier}; give a new or empty "
                f"folder, or add --overwrite to write the {what}'s files into it (other files are kept)"
            )
    else:
        _check_can_create(p, flag)


# ---- folders


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _move(src: Path, dst: Path) -> None:
    """Put `src` at `dst`, replacing what is there (a file in one rename; a folder moved aside first)."""
    if dst.is_dir() and not dst.is_symlink():
        old = _aside(dst)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if src.is_dir() and (dst.exists() or dst.is_symlink()):
            dst.unlink()
        os.replace(src, dst)


def _commit(tmp: Path, path: Path, own: set[str], marker: Sequence[str]) -> None:
    new = set(os.listdir(tmp))
    own = own | new
    if not path.exists() and not path.is_symlink():
        os.replace(tmp, path)
        return
    existing = set(os.listdir(path))
    if not path.is_symlink() and existing <= own:  # nothing but the writer's own entries (or none): swap whole
        if not existing:
            os.replace(tmp, path)  # a rename onto an empty folder
            return
        old = _aside(path)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return
    # Others' files are in the folder: replace the writer's entries one by one, markers out first and in last, so
    # that a crash part way leaves a folder without its marker, which no reader takes for a whole output.
    for name in marker:
        _remove(path / name)
    for name in sorted(own - new):  # entries of an earlier output that this one does not have
        _remove(path / name)
    for name in sorted(new - set(marker)):
        _move(tmp / name, path / name)
    for name in marker:
        if name in new:
            _move(tmp / name, path / name)
    os.rmdir(tmp)


@contextlib.contextmanager
def atomic_dir(
    path: str | Path,
    *,
    own: Collection[str] = (),
    marker: Sequence[str] = (),
    overwrite: bool = False,
    what: str = "output",
    flag: str | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on a clean exit what was written there becomes `path`'s.

    Only the writer's own entries (the names in `own` and whatever it wrote) are ever replaced or removed in `path`:
    - `path` missing or empty, or holding nothing but own entries: the folder is put in place in one rename (an
      earlier one moved aside and deleted after);
    - otherwise own entries are replaced one by one and other files are kept, `marker` files (the ones a reader
      checks, e.g. `synth.json`, or `model.safetensors` + `config.json`) removed first and put back last, so a crash
      part way leaves a folder that does not look whole.
    Before anything is written, a non-empty `path` that is not an earlier output (it lacks a `marker` file) is
    refused with `IcrewardError` unless `overwrite` (see `check_output_dir`). On an exception the temporary folder
    is removed and `path` is left as it was; a crash leaves only a `.partial` folder that no loader mistakes for a
    whole one.
    """
    path = Path(path)
    check_output_dir(path, flag=flag, marker=marker, overwrite=overwrite, what=what)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        yield tmp
        _commit(tmp, path, set(own), marker)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
