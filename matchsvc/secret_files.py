"""Secret files (the development token secret, key rings) written so no process sees half of one.

Every write goes to a temporary file in the same directory (mode 0600), is flushed and fsynced,
then renamed into place and the directory fsynced: a reader sees the old file or the new one,
never a partial one, and a crash leaves one of the two. Creation publishes with ``link``, which
fails when the name exists, so of several processes creating the same file at once exactly one
wins and every process ends up reading the winner's value.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["create_once", "write_private"]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _staged(path: Path, data: bytes) -> Path:
    """A fully written, fsynced, 0600 temporary file next to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (readers see old or new, never half)."""
    tmp = _staged(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def create_once(path: Path, make: Callable[[], bytes]) -> tuple[bytes, bool]:
    """The contents of ``path``, creating it from ``make()`` first if it does not exist.

    Returns ``(contents, created)``. Safe against concurrent creators: the first to publish wins
    and everyone (the others included) reads what it wrote.
    """
    if not path.exists():
        data = make()
        tmp = _staged(path, data)
        try:
            os.link(tmp, path)  # fails if another process published first
        except FileExistsError:
            pass
        else:
            _fsync_dir(path.parent)
            return data, True
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes(), False
