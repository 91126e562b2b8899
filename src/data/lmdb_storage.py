"""LMDB store: one record per sample, indexes as named sub-databases.

Layout inside the LMDB environment (``data.lmdb/``)::

    samples          sample_000001 -> record bytes (see src/data/record.py)
    meta             __meta__      -> JSON self-description (format version,
                                      schema, config, completion flag)
    idx:<field>      value         -> sample keys (dupsort), e.g. idx:label "1" -> sample_000002
                                      (the empty value of a missing field is the key b"\\x00")

Samples, their index entries and the metadata are written in one transaction,
so a crash can never leave the indexes out of step with the samples. Commits
happen every ``commit_every`` samples; the map grows itself on
``MapFullError``.

One environment is shared per path per process (py-lmdb refuses to open a path
twice in one process), and it is opened lazily in each process: a store object
that crosses a ``fork`` or is pickled into a ``spawn`` worker reopens the
environment in the new process and never touches the parent's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import lmdb

from src.data.record import decode_header, decode_sample, encode_sample
from src.data.storage import DEFAULT_INDEX_FIELDS, Storage, parse_meta, register_backend, sample_index_values
from src.errors import CorruptSampleError, StorageError, StoreVersionError

__all__ = ["LMDBStorage", "open_environment", "release_environment"]

logger = logging.getLogger(__name__)

_SAMPLES = b"samples"
_META = b"meta"
_META_KEY = b"__meta__"
_IDX_PREFIX = b"idx:"
_GB = 1024**3
_MAX_DBS = 64
_MAX_KEY_BYTES = 500  # LMDB's key limit is 511 bytes; sample keys are also index values
_SHARDSET_NAME = "shardset.json"  # marks a shard set (src.data.lmdb_shards.SHARDSET_NAME)
_EMPTY_INDEX_KEY = b"\x00"  # LMDB rejects empty keys: the empty value (a missing field) is stored as one NUL byte


def _index_key(value: str) -> bytes:
    return value.encode() or _EMPTY_INDEX_KEY


def _index_value(raw: bytes) -> str:
    return "" if raw == _EMPTY_INDEX_KEY else raw.decode()


@dataclass
class _SharedEnv:
    env: lmdb.Environment
    pid: int
    readonly: bool
    refs: int = 0
    dbs: dict[bytes, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: int = 0  # transactions open now (a fork copies the count: see open_environment)
    borrowed: bool = False  # an inherited environment read in a forked child, never closed there


class _Txn:
    """A transaction counted in its environment's ``active`` while its ``with`` block runs."""

    __slots__ = ("shared", "txn")

    def __init__(self, shared: _SharedEnv, write: bool, db: Any) -> None:
        # Counted before LMDB starts it: a fork in between must see it open.
        with shared.lock:
            shared.active += 1
        try:
            self.txn = shared.env.begin(write=write, db=db, buffers=not write)
        except BaseException:
            with shared.lock:
                shared.active -= 1
            raise
        self.shared = shared

    def __enter__(self) -> lmdb.Transaction:
        return self.txn.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self.txn.__exit__(*exc)
        finally:
            with self.shared.lock:
                self.shared.active -= 1


_ENVS: dict[str, _SharedEnv] = {}
_ENVS_LOCK = threading.Lock()
# Environments inherited through fork: kept referenced in the child (never garbage-collected
# at random there); see open_environment for when the child closes its copy.
_INHERITED: list[_SharedEnv] = []


def _forget_inherited_envs() -> None:
    _INHERITED.extend(_ENVS.values())
    _ENVS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_envs)


def _open_lmdb(path: Path, readonly: bool, map_size: int, max_readers: int, lock: bool, readahead: bool = True) -> lmdb.Environment:
    common = dict(subdir=True, max_dbs=_MAX_DBS, max_readers=max_readers, readahead=readahead)
    if readonly:
        try:
            return lmdb.open(str(path), readonly=True, lock=lock, create=False, **common)
        except lmdb.Error as exc:
            if lock and ("Permission denied" in str(exc) or "Read-only" in str(exc)):
                logger.info("%s: lock file not writable; reading without locking (no concurrent writer allowed)", path)
                return lmdb.open(str(path), readonly=True, lock=False, create=False, **common)
            raise
    path.mkdir(parents=True, exist_ok=True)
    return lmdb.open(str(path), map_size=map_size, meminit=False, **common)


def open_environment(
    path: str | os.PathLike, readonly: bool = True, map_size_gb: float = 10, max_readers: int = 1024, lock: bool = True, readahead: bool = True
) -> _SharedEnv:
    """Return this process's shared environment for ``path``, opening it if needed.

    Raises:
        StorageError: The store does not exist (read mode), cannot be opened, or
            is open read-only in this process while a writer asks for it.
    """
    p = Path(path)
    real = os.path.realpath(p)
    pid = os.getpid()
    with _ENVS_LOCK:
        shared = _ENVS.get(real)
        if shared is not None and shared.pid != pid:  # inherited without the fork hook
            _INHERITED.append(shared)
            shared = None
        if shared is not None and shared.readonly and not readonly:
            if shared.refs > 0:
                raise StorageError(f"{p}: already open read-only in this process; close the readers before opening it for writing")
            shared.env.close()
            shared = None
        if shared is None:
            if readonly and not (p / "data.mdb").exists():
                raise StorageError(f"{p}: no such LMDB store (missing data.mdb)")
            try:
                env = _open_lmdb(p, readonly, int(map_size_gb * _GB), max_readers, lock, readahead)
            except lmdb.Error as exc:
                # A forked child: py-lmdb refuses a second open while the parent's handle,
                # inherited, is open here. Reading through that handle registers reader slots
                # under the parent's pid, which no reader_check reclaims while the parent lives
                # (a leak that ends in ReadersFullError). When no transaction was open at the
                # fork, closing the child's copy touches nothing of the parent's (LMDB clears
                # only getpid()'s slots, fcntl locks are not inherited, the unmap is this
                # process's), so the child closes it and opens its own. A transaction open at
                # the fork would be aborted by that close, clearing the parent's reader slot
                # (or, for a write, wait forever on its lock): then the child borrows the
                # inherited handle for reading, as before.
                inherited = _inherited_env(real)
                if inherited is None or (inherited.active and not readonly):
                    raise StorageError(f"{p}: cannot open LMDB environment: {exc}") from exc
                if inherited.active:
                    env = None
                    shared = _SharedEnv(env=inherited.env, pid=pid, readonly=True, dbs=dict(inherited.dbs), borrowed=True)
                else:
                    _INHERITED.remove(inherited)
                    inherited.env.close()
                    try:
                        env = _open_lmdb(p, readonly, int(map_size_gb * _GB), max_readers, lock, readahead)
                    except lmdb.Error as again:
                        raise StorageError(f"{p}: cannot open LMDB environment: {again}") from again
            if env is not None:
                shared = _SharedEnv(env=env, pid=pid, readonly=readonly)
            _ENVS[real] = shared
        shared.refs += 1
        return shared


def release_environment(shared: _SharedEnv) -> None:
    """Drop one reference; the environment is closed when the last user releases it."""
    with _ENVS_LOCK:
        if shared.pid != os.getpid():
            return
        shared.refs -= 1
        if shared.refs <= 0:
            for real, other in list(_ENVS.items()):
                if other is shared:
                    del _ENVS[real]
            if not shared.borrowed:
                shared.env.close()


def _inherited_env(real: str) -> _SharedEnv | None:
    """The environment for ``real`` inherited from the parent process, if any."""
    for old in reversed(_INHERITED):
        try:
            if os.path.realpath(old.env.path()) == real:
                return old
        except lmdb.Error:
            continue
    return None


@register_backend("lmdb")
class LMDBStorage(Storage):
    """Samples in an LMDB environment (the spec's ``data.lmdb``).

    Args:
        path: The ``data.lmdb`` directory.
        readonly: Open for reading (default) or for writing/appending.
        map_size_gb: Initial map size in GiB; the map doubles when full.
        max_readers: Maximum concurrent read transactions.
        create_indexes: Maintain the per-field indexes.
        index_fields: Fields to index.
        lock: Use LMDB's reader lock table (safe beside a concurrent writer).
            Falls back to lock-free reading when the lock file is not writable.
        readahead: Let the kernel read ahead on page faults. py-lmdb suggests
            turning it off for random access to small values; our values are
            clips of megabytes, and measured here a cold random read of a
            2.4 MB clip took 22-24 ms with readahead and 37 ms without (warm
            reads the same), so it is on by default. The first opener of a
            path in a process decides it for that process.
        **options: See :class:`~src.data.storage.Storage` (codec, commit_every, verify, config).

    Example:
        >>> with LMDBStorage("data/processed/FakeAVCeleb_v1.2/train/data.lmdb") as storage:
        ...     sample = storage.retrieve_sample("sample_000001")
    """

    suffixes = (".lmdb",)
    _process_local = ("_shared",)

    def __new__(cls, path: str | os.PathLike | None = None, readonly: bool = True, *args: Any, **kwargs: Any) -> LMDBStorage:
        # A shard set (see src/data/lmdb_shards.py) opens as one store with the same call.
        if cls is LMDBStorage and path is not None and (Path(path) / _SHARDSET_NAME).is_file():
            from src.data.lmdb_shards import ShardedLMDBStorage

            return super().__new__(ShardedLMDBStorage)
        return super().__new__(cls)

    @classmethod
    def sniff(cls, path: Path) -> bool:
        """An LMDB environment directory (holds ``data.mdb``), or a shard set of them."""
        return path.is_dir() and ((path / "data.mdb").exists() or (path / _SHARDSET_NAME).is_file())

    def __init__(
        self,
        path: str | os.PathLike,
        readonly: bool = True,
        map_size_gb: float = 10,
        max_readers: int = 1024,
        create_indexes: bool = True,
        index_fields: Iterable[str] = DEFAULT_INDEX_FIELDS,
        *,
        lock: bool = True,
        readahead: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(path, readonly, create_indexes=create_indexes, index_fields=index_fields, **options)
        if map_size_gb <= 0:
            raise StorageError(f"map_size_gb must be positive; got {map_size_gb}")
        self.map_size_gb = map_size_gb
        self.max_readers = max_readers
        self.lock = lock
        self.readahead = readahead
        self._shared: _SharedEnv | None = None
        self._last_key: bytes | None = None
        self._connect()
        self._init_meta()

    # ------------------------------------------------------------------ process-local environment

    def _connect(self) -> _SharedEnv:
        shared = self._shared
        if shared is not None and shared.pid == os.getpid():
            return shared
        shared = open_environment(self.path, self.readonly, self.map_size_gb, self.max_readers, self.lock, self.readahead)
        self._shared = shared
        return shared

    @property
    def env(self) -> lmdb.Environment:
        """This process's LMDB environment for the store."""
        self._check_open()
        return self._connect().env

    def _db(self, name: bytes, dupsort: bool = False) -> Any:
        shared = self._connect()
        db = shared.dbs.get(name)
        if db is None:
            with shared.lock:
                db = shared.dbs.get(name)
                if db is None:
                    try:
                        if shared.readonly:
                            db = shared.env.open_db(name, create=False, dupsort=dupsort)
                        else:
                            db = shared.env.open_db(name, create=True, dupsort=dupsort)
                    except lmdb.NotFoundError:
                        return None
                    except lmdb.Error as exc:
                        raise StorageError(f"{self.path}: cannot open sub-database {name.decode()!r}: {exc}") from exc
                    shared.dbs[name] = db
        return db

    def _begin(self, write: bool = False, db: Any = None) -> _Txn:
        shared = self._connect()
        try:
            return _Txn(shared, write, db)
        except lmdb.MapResizedError:
            shared.env.set_mapsize(0)  # adopt the size another process grew the map to
            return _Txn(shared, write, db)

    # ------------------------------------------------------------------ primitives

    def _keys(self) -> list[str]:
        db = self._db(_SAMPLES)
        if db is None:
            return []
        with self._begin(db=db) as txn:
            keys = []
            for raw in txn.cursor().iternext(keys=True, values=False):
                try:
                    keys.append(bytes(raw).decode())
                except UnicodeDecodeError:
                    raise CorruptSampleError(repr(bytes(raw)), "sample key is not UTF-8 (not written by this project)") from None
            return keys

    has_raw_records = True

    @contextlib.contextmanager
    def raw_records(self, keys: Sequence[str]) -> Iterator[list[memoryview | None]]:
        """The records of ``keys`` as buffers into the memory map, in one read transaction.

        The buffers are valid only inside the ``with`` block.
        """
        self._check_open()
        self.flush_if_writable()
        db = self._db(_SAMPLES)
        if db is None:
            yield [None] * len(keys)
            return
        with self._begin(db=db) as txn:
            yield [txn.get(key.encode()) for key in keys]

    def _get(self, key: str, verify: bool) -> dict[str, Any] | None:
        with self.raw_records([key]) as (buf,):
            return None if buf is None else decode_sample(buf, key, verify=verify, copy=True)

    def retrieve_batch(self, keys: Iterable[str], *, verify: bool | None = None) -> list[dict[str, Any] | None]:
        """Load several samples in one read transaction; ``None`` for each missing key."""
        v = self.verify if verify is None else verify
        keys = list(keys)
        with self.raw_records(keys) as bufs:
            return [None if buf is None else decode_sample(buf, key, verify=v, copy=True) for key, buf in zip(keys, bufs)]

    def reader_check(self) -> int:
        """Clear reader-table slots left by processes that died; return how many were cleared."""
        self._check_open()
        return int(self._connect().env.reader_check())

    def retrieve_metadata(self, key: str) -> tuple[int, dict[str, Any]]:
        """Return ``(label, metadata)`` from the record header alone (no clip is decoded).

        Raises:
            KeyError: Missing key.
            CorruptSampleError: Damaged header.
        """
        with self.raw_records([key]) as (buf,):
            if buf is None:
                raise KeyError(key)
            header = decode_header(buf, key)
        return header.label, header.metadata

    def retrieve_record(self, key: str) -> bytes:
        """Return the raw record bytes of ``key`` (for verification and copying tools).

        Raises:
            KeyError: Missing key.
        """
        with self.raw_records([key]) as (buf,):
            if buf is None:
                raise KeyError(key)
            return bytes(buf)

    def _count(self) -> int:
        db = self._db(_SAMPLES)
        if db is None:
            return 0
        with self._begin() as txn:
            return int(txn.stat(db)["entries"])

    def _contains(self, key: str) -> bool:
        db = self._db(_SAMPLES)
        if db is None:
            return False
        with self._begin(db=db) as txn:
            return txn.get(key.encode()) is not None

    def _read_meta(self) -> dict[str, Any] | None:
        db = self._db(_META)
        if db is None:
            return None
        with self._begin(db=db) as txn:
            raw = txn.get(_META_KEY)
            if raw is None:
                return None
            return parse_meta(bytes(raw))

    def _write_meta(self, meta: dict[str, Any]) -> None:
        self._write([], meta)

    def _query_field(self, field: str, value: str) -> list[str]:
        db = self._db(_IDX_PREFIX + field.encode(), dupsort=True)
        if db is None:
            return []
        with self._begin(db=db) as txn:
            cur = txn.cursor()
            if not cur.set_key(_index_key(value)):
                return []
            return [bytes(v).decode() for v in cur.iternext_dup(keys=False, values=True)]

    def _index_counts(self, field: str) -> dict[str, int]:
        db = self._db(_IDX_PREFIX + field.encode(), dupsort=True)
        if db is None:
            return {}
        counts = {}
        with self._begin(db=db) as txn:
            cur = txn.cursor()
            for key in cur.iternext_nodup(keys=True, values=False):
                cur.set_key(bytes(key))
                counts[_index_value(bytes(key))] = cur.count()
        return counts

    def _close(self) -> None:
        if self._shared is not None:
            release_environment(self._shared)
            self._shared = None

    # ------------------------------------------------------------------ writing

    def _index_dbs(self) -> dict[str, Any]:
        return {f: self._db(_IDX_PREFIX + f.encode(), dupsort=True) for f in self.index_fields}

    def _put_all(self, txn: lmdb.Transaction, records: list[tuple[bytes, bytes, dict[str, str]]], meta: dict[str, Any]) -> None:
        samples = self._db(_SAMPLES)
        index_dbs = self._index_dbs()
        last = self._last_key
        if last is None:
            cur = txn.cursor(db=samples)
            last = bytes(cur.key()) if cur.last() else b""
        for key, value, index in records:
            if key > last:
                if not txn.put(key, value, db=samples, append=True):
                    raise StorageError(f"{self.path}: LMDB refused the append of {key.decode()!r}")
                last = key
            else:
                old = txn.get(key, db=samples)
                if old is not None:
                    self._drop_index_entries(txn, key, old, index_dbs)
                txn.put(key, value, db=samples)
            for f, v in index.items():
                txn.put(_index_key(v), key, db=index_dbs[f])
        meta = dict(meta)
        meta["num_samples"] = int(txn.stat(samples)["entries"])
        txn.put(_META_KEY, json.dumps(meta, sort_keys=True).encode(), db=self._db(_META))
        self._pending_last = last

    def _drop_index_entries(self, txn: lmdb.Transaction, key: bytes, old: bytes, index_dbs: Mapping[str, Any]) -> None:
        try:
            header = decode_header(old, key.decode())
            values = sample_index_values(header.label, header.metadata, index_dbs)
            for f, v in values.items():
                txn.delete(_index_key(v), key, db=index_dbs[f])
        except (CorruptSampleError, StoreVersionError):
            # The old record is unreadable: remove the key from every index value instead.
            for db in index_dbs.values():
                cur = txn.cursor(db=db)
                for k in list(cur.iternext_nodup(keys=True, values=False)):
                    txn.delete(bytes(k), key, db=db)

    def _write(self, items: list[tuple[str, dict[str, Any]]], meta: dict[str, Any]) -> None:
        records = [
            (
                key.encode(),
                encode_sample(sample, self.codec, **self.codec_options),
                sample_index_values(sample["label"], sample["metadata"], self.index_fields),
            )
            for key, sample in items
        ]
        self._write_records(records, meta)

    def copy_records(self, source: Storage, keys: Sequence[str], batch: int = 64) -> int:
        """Copy the records of ``keys`` from ``source`` byte for byte, each verified first.

        For re-packing stores (a shard set into one environment): nothing is
        decoded and encoded again, so a lossy codec loses nothing more. The
        caller keeps this store's ``schema`` in step (``meta``).

        Args:
            source: A store with ``raw_records`` (LMDB or a shard set).
            keys: The keys to copy (sorted keys append fastest).
            batch: Records per write transaction.

        Returns:
            How many records were copied.

        Raises:
            CorruptSampleError: A source record is damaged or missing.
        """
        self._check_writable()
        self.flush()
        copied = 0
        for start in range(0, len(keys), batch):
            chunk = list(keys[start : start + batch])
            with source.raw_records(chunk) as buffers:
                records = []
                for key, buf in zip(chunk, buffers):
                    if buf is None:
                        raise CorruptSampleError(key, "record missing from the source store")
                    sample = decode_sample(buf, key, verify=True, fields=())  # checks the digest, decodes no array
                    records.append((key.encode(), bytes(buf), sample_index_values(sample["label"], sample["metadata"], self.index_fields)))
            assert self._meta is not None
            self._write_records(records, self._meta)
            copied += len(records)
        return copied

    def _write_records(self, records: list[tuple[bytes, bytes, dict[str, str]]], meta: dict[str, Any]) -> None:
        for key, _, index in records:
            if len(key) > _MAX_KEY_BYTES:
                raise ValueError(f"sample key {key.decode()[:40]!r}... is {len(key)} bytes; LMDB keys are at most {_MAX_KEY_BYTES}")
            for f, v in index.items():
                if len(v.encode()) > _MAX_KEY_BYTES:
                    raise ValueError(f"indexed field {f!r} value is too long to index ({len(v)} chars)")
                if "\0" in v:
                    raise ValueError(f"indexed field {f!r} value {v!r} contains a NUL byte")
        env = self._connect().env
        # Open (create) every sub-database before the write transaction: open_db
        # outside a transaction takes the write lock itself and would deadlock inside one.
        self._db(_SAMPLES)
        self._db(_META)
        self._index_dbs()
        while True:
            try:
                with self._begin(write=True) as txn:
                    self._put_all(txn, records, meta)
                self._last_key = self._pending_last
                return
            except lmdb.MapFullError:
                new_size = env.info()["map_size"] * 2
                logger.info("%s: map full, growing it to %.2f GiB", self.path, new_size / _GB)
                env.set_mapsize(new_size)
            except lmdb.Error as exc:
                # e.g. ENOSPC at commit: the transaction is aborted, every earlier commit stays readable.
                raise StorageError(f"{self.path}: write failed ({exc}); samples committed before this one are intact") from exc
