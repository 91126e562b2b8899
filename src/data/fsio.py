"""Crash-safe file primitives shared by the stores and the preprocessing runner.

* :func:`atomic_write`: temp file, fsync, ``os.replace``, directory fsync.
* :func:`fsync_dir`: make renames inside a directory durable.
* :func:`fsync_file`: make a file's content durable.
* :func:`try_lock`: an exclusive ``flock`` on a file, or None when it is held.
* :func:`acquire_writer_lock`: one writer per store directory (``flock``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from src.errors import StorageError

__all__ = ["TMP_SUFFIX", "acquire_writer_lock", "atomic_write", "fsync_dir", "fsync_file", "try_lock"]

#: Suffix of files being written; a writer removes leftovers with it on open.
TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so renames inside it survive a crash (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """fsync a file written by someone else (a closed LMDB environment's ``data.mdb``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def try_lock(path: str | os.PathLike) -> Any | None:
    """Take an exclusive ``flock`` on ``path`` (created if missing) without waiting.

    Returns:
        The open file, which holds the lock until closed; None when another
        open file (in any process) holds it.
    """
    import fcntl

    fh = open(path, "a+b")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def atomic_write(path: str | os.PathLike, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, ``os.replace``.

    Readers see either the old file or the new one, never a partial write.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def acquire_writer_lock(directory: Path) -> Any:
    """Hold an exclusive flock on ``<directory>/.writer.lock``, so two writers never interleave.

    Returns:
        The open lock file; closing it releases the lock.

    Raises:
        StorageError: Another process (or store object) holds the lock.
    """
    fh = try_lock(directory / ".writer.lock")
    if fh is None:
        raise StorageError(f"{directory}: another writer has this store open; close it first")
    return fh
