"""What the directory stores (numpy, torch) share: the JSON index, atomic writes, checksums.

A directory store keeps one or more payload files per sample next to one
``index.json``::

    {"format": "numpy",
     "meta": {...},                               # the store's __meta__ document
     "samples": {"sample_000001": {
         "label": 1,
         "metadata": {...},
         "index": {"label": "1", "category": "C", "method": "fsgan"},
         "checksums": {"data": "<xxh3-64 hex>", "audio": "..."},
         "arrays": {"data": {"file": "sample_000001.data.npy", "codec": "raw",
                             "dtype": "|u1", "shape": [3, 16, 224, 224], "frames": []}}}}}

Each flush first writes the payload files (to a temporary name, fsynced, then
renamed into place) and only then replaces ``index.json`` atomically (temporary
file, fsync, ``os.replace``, directory fsync). A sample that replaces an
existing key is written under the other of two names (``<file>`` or
``rewritten/<file>``), so the file the current index points at is never
touched; the old file is deleted only after the new index is in place. A writer
interrupted at any point therefore never leaves an index entry pointing at a
missing, partial or replaced file: the index on disk is always the one from the
last finished flush, and every file it names is intact.

Checksums are the xxh3-64 of the *stored* array bytes (for ``zstd``/``jpeg``
arrays, the encoded bytes), verified before anything is decoded, so a damaged
file raises :class:`~src.errors.CorruptSampleError` naming the key instead of
yielding a garbage array.
"""

from __future__ import annotations

import abc
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from src.data.fsio import TMP_SUFFIX as _TMP_SUFFIX
from src.data.fsio import acquire_writer_lock, atomic_write, fsync_dir
from src.data.postings import PostingsIndex
from src.data.record import to_plain
from src.data.storage import DEFAULT_INDEX_FIELDS, Storage, sample_index_values
from src.errors import CorruptSampleError, StorageError

__all__ = ["INDEX_NAME", "DirectoryStorage", "check_file_key"]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
REWRITE_DIR = "rewritten"  # second home of a file whose key is being overwritten


# ----------------------------------------------------------------------------- helpers


def check_file_key(key: str) -> None:
    """Reject keys that cannot safely name a file or an HDF5 group.

    Raises:
        ValueError: The key contains a path separator or starts with a dot.
    """
    if not isinstance(key, str) or not key or "/" in key or key.startswith("."):
        raise ValueError(f"invalid sample key {key!r} for a file-based store: no '/' and no leading '.'")


def _entry_files(entry: Mapping[str, Any]) -> set[str]:
    arrays = entry.get("arrays")
    if not isinstance(arrays, dict):
        return set()
    return {a["file"] for a in arrays.values() if isinstance(a, dict) and isinstance(a.get("file"), str)}


# ----------------------------------------------------------------------------- base class


class DirectoryStorage(Storage):
    """Base of the stores kept as a directory of per-sample files plus ``index.json``.

    Subclasses implement :meth:`_save_sample` (write a sample's files through
    :meth:`_stage_file`) and :meth:`_load_sample` (read them back); this class
    keeps the index, the query tables and the crash-safe commit order.

    Args:
        path: The store directory (``data.numpy`` / ``data.torch``).
        readonly: Open for reading (default) or for writing/appending.
        create_indexes: Maintain the per-field indexes.
        index_fields: Fields to index.
        **options: See :class:`~src.data.storage.Storage`.
    """

    @classmethod
    def sniff(cls, path: Path) -> bool:
        """A directory whose ``index.json`` names this format."""
        index = path / INDEX_NAME
        if not index.is_file():
            return False
        try:
            doc = json.loads(index.read_bytes())
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and doc.get("format") == cls.format

    def __init__(
        self,
        path: str | os.PathLike,
        readonly: bool = True,
        create_indexes: bool = True,
        index_fields: Iterable[str] = DEFAULT_INDEX_FIELDS,
        **options: Any,
    ) -> None:
        super().__init__(path, readonly, create_indexes=create_indexes, index_fields=index_fields, **options)
        self._entries: dict[str, dict[str, Any]] = {}
        self._postings = PostingsIndex()
        self._sorted: list[str] | None = None
        self._doc_meta: dict[str, Any] | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._staged: list[tuple[Path, Path]] = []
        self._files: set[str] = set()  # every payload file the index names
        self._writer_lock: Any = None
        index = self.path / INDEX_NAME
        if readonly:
            if not index.is_file():
                raise StorageError(f"{self.path}: no such {self.format} store (missing {INDEX_NAME})")
        else:
            if self.path.exists() and not self.path.is_dir():
                raise StorageError(f"{self.path}: exists and is not a directory")
            self.path.mkdir(parents=True, exist_ok=True)
            self._writer_lock = acquire_writer_lock(self.path)
            for pattern in (f"*{_TMP_SUFFIX}", f"{REWRITE_DIR}/*{_TMP_SUFFIX}"):  # from an interrupted writer
                for leftover in self.path.glob(pattern):
                    leftover.unlink(missing_ok=True)
        self._load()
        self._init_meta()

    # ------------------------------------------------------------------ subclass hooks

    @abc.abstractmethod
    def _save_sample(self, key: str, sample: dict[str, Any]) -> dict[str, Any]:
        """Write one sample's files via :meth:`_stage_file`; return its index entry.

        The entry holds at least ``checksums`` and ``arrays`` (``label``,
        ``metadata`` and ``index`` are added by the caller).
        """

    @abc.abstractmethod
    def _load_sample(self, key: str, entry: Mapping[str, Any], verify: bool) -> dict[str, Any]:
        """Read and check one sample's files; raise CorruptSampleError on any fault."""

    def _stage_file(self, name: str, write: Any) -> str:
        """Write a payload file under a temporary name (fsynced); it is renamed at commit.

        Args:
            name: The file's name inside the store directory. When the index
                already names that file (the key is being overwritten), the file
                goes to ``rewritten/<name>`` instead (or back, on the next overwrite).
            write: ``write(fh)`` writing the file's bytes to a binary file object.

        Returns:
            The file's path relative to the store, to record in the index entry.
        """
        rel = name if name not in self._files else f"{REWRITE_DIR}/{name}"
        final = self.path / rel
        final.parent.mkdir(exist_ok=True)
        tmp = final.with_name(f"{final.name}.{os.getpid()}{_TMP_SUFFIX}")
        self._staged.append((tmp, final))
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        return rel

    def resolve_file(self, key: str, rel: Any) -> Path:
        """The path of a payload file named by an index entry.

        Raises:
            CorruptSampleError: The name could point outside the store.
        """
        if not isinstance(rel, str) or not rel:
            raise CorruptSampleError(key, f"index entry names no file ({rel!r})")
        head, _, tail = rel.rpartition("/")
        if head not in ("", REWRITE_DIR) or not tail or tail.startswith("."):
            raise CorruptSampleError(key, f"index entry names a file outside the store: {rel!r}")
        return self.path / rel

    # ------------------------------------------------------------------ index

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = (self.path / INDEX_NAME).stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> None:
        index = self.path / INDEX_NAME
        stamp = self._file_stamp()
        self._stamp = stamp
        if stamp is None:
            self._entries, self._doc_meta = {}, None
            self._rebuild_postings()
            return
        try:
            doc = json.loads(index.read_bytes())
        except (OSError, ValueError) as exc:
            raise CorruptSampleError("__meta__", f"{index}: unreadable index: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("samples"), dict) or not isinstance(doc.get("meta"), dict):
            raise CorruptSampleError("__meta__", f"{index}: not an index document (needs 'format', 'meta' and 'samples')")
        if doc.get("format") != self.format:
            raise StorageError(f"{self.path}: {INDEX_NAME} says the store is {doc.get('format')!r}, opened as {self.format!r}")
        self._entries = doc["samples"]
        self._doc_meta = doc["meta"]
        self._rebuild_postings()

    def _maybe_reload(self) -> None:
        """A reader picks up a newer ``index.json`` (written by another process)."""
        if self.readonly and self._file_stamp() != self._stamp:
            self._load()

    def _rebuild_postings(self) -> None:
        self._sorted = None
        self._postings.clear()
        self._files = set()
        for key, entry in self._entries.items():
            self._postings.add(key, entry.get("index") or {})
            self._files.update(_entry_files(entry))

    def _save_index(self, meta: Mapping[str, Any]) -> None:
        doc = {"format": self.format, "meta": dict(meta), "samples": self._entries}
        doc["meta"]["num_samples"] = len(self._entries)
        atomic_write(self.path / INDEX_NAME, json.dumps(doc, separators=(",", ":")).encode())
        self._doc_meta = doc["meta"]
        self._stamp = self._file_stamp()

    # ------------------------------------------------------------------ primitives

    def _keys(self) -> list[str]:
        self._maybe_reload()
        if self._sorted is None:
            self._sorted = sorted(self._entries)
        return list(self._sorted)

    def retrieve_metadata(self, key: str) -> tuple[int, dict[str, Any]]:
        """Return ``(label, metadata)`` from ``index.json`` (no sample file is read).

        Raises:
            KeyError: Missing key.
            CorruptSampleError: A malformed index entry.
        """
        self._check_open()
        self.flush_if_writable()
        entry = self._entries.get(key)
        if entry is None:
            self._maybe_reload()
            entry = self._entries.get(key)
        if entry is None:
            raise KeyError(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("label"), int) or not isinstance(entry.get("metadata"), dict):
            raise CorruptSampleError(key, "malformed index entry")
        return entry["label"], entry["metadata"]

    def _get(self, key: str, verify: bool) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            self._maybe_reload()
            entry = self._entries.get(key)
            if entry is None:
                return None
        if not isinstance(entry, dict):
            raise CorruptSampleError(key, "malformed index entry")
        return self._load_sample(key, entry, verify)

    def _count(self) -> int:
        self._maybe_reload()
        return len(self._entries)

    def _contains(self, key: str) -> bool:
        return key in self._entries

    def _read_meta(self) -> dict[str, Any] | None:
        self._maybe_reload()
        return dict(self._doc_meta) if self._doc_meta is not None else None

    def _write_meta(self, meta: dict[str, Any]) -> None:
        self._save_index(meta)

    def _query_field(self, field: str, value: str) -> list[str]:
        self._maybe_reload()
        return self._postings.query(field, value)

    def _index_counts(self, field: str) -> dict[str, int]:
        self._maybe_reload()
        return self._postings.counts(field)

    def _close(self) -> None:
        self._discard_staged()
        lock, self._writer_lock = self._writer_lock, None
        if lock is not None:
            lock.close()  # releases the flock

    # ------------------------------------------------------------------ writing

    def store_sample(self, key: str, sample: Mapping[str, Any]) -> None:
        """Buffer one sample for writing (see :meth:`Storage.store_sample`).

        Raises:
            ValueError: Also for keys that cannot name a file (``/``, leading ``.``).
        """
        check_file_key(key)
        super().store_sample(key, sample)

    def _discard_staged(self) -> None:
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged = []

    def _write(self, items: list[tuple[str, dict[str, Any]]], meta: dict[str, Any]) -> None:
        new: dict[str, dict[str, Any]] = {}
        latest = dict(items)  # a key stored twice in one commit: the last sample wins
        try:
            for key, sample in latest.items():
                entry = self._save_sample(key, sample)
                entry["label"] = int(sample["label"])
                entry["metadata"] = to_plain(sample.get("metadata") or {})
                entry["index"] = sample_index_values(sample["label"], sample.get("metadata") or {}, self.index_fields)
                new[key] = entry
        except BaseException:
            self._discard_staged()
            raise
        # Payload files first (each already fsynced), then the index that points at them.
        for tmp, final in self._staged:
            os.replace(tmp, final)
        self._staged = []
        if new:
            fsync_dir(self.path)
        obsolete: set[str] = set()
        for key, entry in new.items():
            old = self._entries.get(key)
            if old is not None:
                self._postings.drop(key, old.get("index") or {})
                obsolete |= _entry_files(old) - _entry_files(entry)
            self._entries[key] = entry
            self._postings.add(key, entry["index"])
            self._files |= _entry_files(entry)
        self._files -= obsolete
        self._sorted = None
        self._save_index(meta)
        for rel in obsolete:  # only once no index entry points at them any more
            (self.path / rel).unlink(missing_ok=True)
