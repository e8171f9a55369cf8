"""Errors that name the file (and line) at fault, so a user can fix their input without a traceback hunt."""

from __future__ import annotations

from pathlib import Path


class IcrewardError(Exception):
    """Base class of every error icreward raises on purpose."""


class MediaError(IcrewardError):
    """An image or video could not be read. `path` is the file, `reason` what is wrong with it."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.reason))


class ManifestError(IcrewardError):
    """A manifest line is invalid. `path` is the manifest, `line` the 1-based line number (None: the whole file)."""

    def __init__(self, path: str | Path, line: int | None, reason: str, record_id: str | None = None):
        self.path = str(path)
        self.line = line
        self.reason = reason
        self.record_id = record_id
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.line, self.reason, self.record_id))


class BackboneError(IcrewardError):
    """A backbone could not be built or its weights could not be reached."""


class UnknownModelError(IcrewardError, KeyError):
    """A model name is neither a known metric nor a loadable checkpoint."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
