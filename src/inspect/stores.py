"""Find the stores under a path and open them with their self-description checked.

A path given to the inspection tools can be a store itself
(``train/data.lmdb``, ``train/data.h5``, ...), a split directory holding one
(``train``), or a dataset output root holding split directories
(``FakeAVCeleb_v1.2``). :func:`find_stores` turns any of them into the list of
stores to act on; :func:`open_checked` opens one read-only and refuses a store
whose ``__meta__`` is missing, unreadable or of another format version.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from src.data.storage import Storage, detect_format, open_storage
from src.errors import CorruptSampleError, StorageError

__all__ = ["StoreTarget", "find_stores", "open_checked", "store_size", "human_size", "one_line"]

# Splits the pipeline writes, in the order they are reported; other directories follow by name.
_SPLIT_ORDER = ("train", "val", "test")


class StoreTarget(NamedTuple):
    """One store found under the path the user gave.

    Attributes:
        name: Display name, ``<split directory>/<store name>`` (``train/data.lmdb``).
        split: The directory holding the store (``train``).
        path: The store's path.
    """

    name: str
    split: str
    path: Path


def _is_store(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        detect_format(path)
    except StorageError:
        return False
    return True


def _stores_in(directory: Path) -> list[Path]:
    try:
        children = sorted(directory.iterdir())
    except OSError:
        return []
    return [c for c in children if _is_store(c)]


def _split_rank(path: Path) -> tuple[int, str]:
    name = path.name
    return (_SPLIT_ORDER.index(name), "") if name in _SPLIT_ORDER else (len(_SPLIT_ORDER), name)


def _target(store: Path) -> StoreTarget:
    split = store.parent.name or str(store.parent)
    return StoreTarget(name=f"{split}/{store.name}", split=split, path=store)


def find_stores(path: str | os.PathLike) -> list[StoreTarget]:
    """Return the stores at ``path``: the store itself, the stores of a split, or of every split.

    Args:
        path: A store, a split directory or a dataset output root.

    Returns:
        The stores found, splits in ``train, val, test`` order then by name;
        empty when ``path`` does not exist or holds no store.
    """
    p = Path(path)
    if _is_store(p):
        return [_target(p)]
    if not p.is_dir():
        return []
    inside = _stores_in(p)
    if inside:
        return [_target(s) for s in inside]
    try:
        splits = sorted((c for c in p.iterdir() if c.is_dir()), key=_split_rank)
    except OSError:
        return []
    return [_target(s) for split in splits for s in _stores_in(split)]


def one_line(exc: BaseException) -> str:
    """An exception as one line of text: its message, or its type when the message is empty."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@contextmanager
def open_checked(path: str | os.PathLike) -> Iterator[Storage]:
    """Open a store read-only, check its metadata, and close it afterwards.

    Args:
        path: The store's path.

    Yields:
        The open store.

    Raises:
        StoreVersionError: The store was written by an unsupported format version.
        IncompleteStoreError: The store has no ``__meta__`` entry.
        StorageError: The store cannot be opened or its ``__meta__`` is unreadable.
    """
    try:
        store = open_storage(path, "r")
    except CorruptSampleError as exc:
        raise StorageError(f"{path}: unreadable __meta__: {exc.reason}") from exc
    except StorageError:
        raise
    except Exception as exc:  # a backend library's own error on a damaged file (h5py, torch, numpy)
        raise StorageError(f"{path}: cannot open store: {type(exc).__name__}: {one_line(exc)}") from exc
    try:
        try:
            _ = store.meta  # opening checked the version; reading the document checks its JSON
        except CorruptSampleError as exc:
            raise StorageError(f"{path}: unreadable __meta__: {exc.reason}") from exc
        yield store
    finally:
        store.close()


def store_size(path: str | os.PathLike) -> int:
    """Bytes a store occupies: the file's size, or the sum over the files of a store directory."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(p):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:  # a file removed while walking (a writer's temporary file)
                continue
    return total


def human_size(num_bytes: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    size, unit = float(num_bytes), 0
    while size >= 1024 and unit < len(units) - 1:
        size /= 1024
        unit += 1
    return f"{num_bytes} B" if unit == 0 else f"{size:.1f} {units[unit]}"
