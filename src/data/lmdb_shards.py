"""Sharded LMDB stores: many writers in parallel, one store to read.

A split's ``data.lmdb`` can be a *shard set* instead of one LMDB environment.
Each worker (a Ray actor on any node) writes its samples into a shard, an
ordinary LMDB store on its node's local disk, seals it, and publishes it
into the set. Readers open the set with the same call as any store:
``LMDBStorage("…/train/data.lmdb")`` returns a :class:`ShardedLMDBStorage`,
which has the whole :class:`~src.data.storage.Storage` API (keys, samples,
raw records for the batch loaders, queries, index counts, metadata).

Layout::

    data.lmdb/
        shardset.json               the set's metadata (format, config, completion flag, totals)
        run                         the id of the run that last opened it for writing
        .writer.lock                held (flock) by that run's driver
        shards/
            <name>.lmdb/data.mdb    one sealed LMDB store (samples, indexes, __meta__)
            <name>.json             its manifest: keys, byte size, schema, host
            <name>.summary          optional: per-sample summary fields (metadata.json's), JSON

* **Commit point**: a shard's manifest. The sealed store is moved or copied
  into ``shards/`` first (a temporary name, fsync, rename), and only then is
  the manifest written atomically, if the run that wrote the shard still
  holds the set (``run``). A shard without a manifest is an interrupted
  publish: readers ignore it and a later writer removes it once it has been
  untouched for 10 minutes. One run writes a set at a time (``.writer.lock``).
* **Discovery** reads the manifests only (small JSON files listing the keys);
  a shard's environment is opened on its first read, lock-free (sealed shards
  never change), and at most ``max_open_shards`` stay open per process (by
  default as many as the file-descriptor limit comfortably allows, up to 4096:
  reopening a shard costs ~0.1 ms, so a set read at random must keep them open).
* **Random reads** cost a dict lookup more than a single store's: the key's
  shard, then the same LMDB read.
* **Summaries**: a writer given ``summary_fields`` also publishes each
  sample's summary (read back from the sealed shard, as the runner reads a
  store) beside the manifest, so the run's ``metadata.json`` is assembled from
  small files instead of every record (:meth:`ShardedLMDBStorage.sample_summaries`).
* **Duplicates**: a video retried after its worker died may sit in two
  shards (the same bytes); the shard with the lowest name wins and
  :attr:`ShardedLMDBStorage.duplicate_keys` counts the others.
* **Compaction**: :func:`compact_shard_set` (``inspect_data.py compact``)
  copies a finished set's records, byte for byte, into one ordinary LMDB
  store at the same path, for tools that expect a single environment.
* **Node-local writes**: shards are written on local disk
  (:class:`ShardWriter`, ``processing.shard_dir``), never on a network file
  system; a published shard is only read, so a shared file system may hold the
  set. Work directories of writers that died are removed by the next writer
  on the same node (each holds an ``flock`` on its own, taken before the
  directory gets the name the sweep looks at).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.data.fsio import TMP_SUFFIX, acquire_writer_lock, atomic_write, fsync_dir, fsync_file, try_lock
from src.data.lmdb_storage import LMDBStorage
from src.data.storage import DEFAULT_INDEX_FIELDS, _merge_schema, parse_meta
from src.errors import CorruptSampleError, StorageError

__all__ = [
    "MANIFEST_VERSION",
    "SHARDSET_NAME",
    "SHARDS_DIR",
    "ShardManifest",
    "ShardTarget",
    "ShardWriter",
    "ShardedLMDBStorage",
    "compact_shard_set",
    "is_shard_set",
    "open_shard_budget",
    "publish_shard",
    "read_manifests",
    "remove_stale_workdirs",
    "sample_summary",
]

logger = logging.getLogger(__name__)

SHARDSET_NAME = "shardset.json"
SHARDS_DIR = "shards"
SUMMARY_SUFFIX = ".summary"
RUN_NAME = "run"  # the id of the run publishing into the set (see publish_shard)
_STALE_AFTER_S = 600.0  # an unpublished leftover younger than this may be a live publish of a killed run's actor
MANIFEST_VERSION = 1
_WORKDIR_PREFIX = "dfshard-"
_NEW_WORKDIR_PREFIX = ".dfshard-new-"  # created and locked under this name, then renamed: never seen unlocked
_SHARD_COMMIT_EVERY = 8  # samples buffered in an open shard (bounded memory per worker)


def sample_summary(label: int, metadata: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """A sample's entry in ``metadata.json``: ``fields`` of its metadata (``label`` is the label)."""
    return {f: label if f == "label" else metadata.get(f) for f in fields}


_MAX_OPEN_SHARDS = 4096


def open_shard_budget(num_shards: int) -> int:
    """How many shard environments a reader may keep open: a quarter of ``RLIMIT_NOFILE``, at most 4096.

    A sealed shard read lock-free holds one file descriptor. When the set has
    more shards than the budget, the soft limit is raised towards the hard
    limit first (as far as 4 x 4096), since closing and reopening shards on
    random reads costs far more than a descriptor.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * min(num_shards, _MAX_OPEN_SHARDS)
    if soft != resource.RLIM_INFINITY and soft < want and (hard == resource.RLIM_INFINITY or hard > soft):
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            logger.info("raised the open-file limit from %d to %d for a shard set of %d shards", soft, new, num_shards)
            soft = new
    budget = _MAX_OPEN_SHARDS if soft == resource.RLIM_INFINITY else soft // 4
    return max(16, min(_MAX_OPEN_SHARDS, budget))


def is_shard_set(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a shard set (a directory holding ``shardset.json``)."""
    return (Path(path) / SHARDSET_NAME).is_file()


@dataclass(frozen=True)
class ShardManifest:
    """One published shard, as its manifest describes it.

    Attributes:
        name: The shard's name (``<name>.lmdb`` in ``shards/``); names sort by creation time.
        keys: The sample keys it holds, sorted.
        bytes: Size of its ``data.mdb`` (a shorter file is a damaged copy).
        schema: Array schemas of its samples (as in a store's ``__meta__``).
        host: The host that wrote it.
        created: When it was sealed (ISO 8601, UTC).
    """

    name: str
    keys: tuple[str, ...]
    bytes: int
    schema: dict[str, Any] = field(default_factory=dict)
    host: str = ""
    created: str = ""

    def to_json(self) -> bytes:
        """The manifest file's content."""
        body = {"manifest_version": MANIFEST_VERSION, "name": self.name, "num_samples": len(self.keys), "bytes": self.bytes,
                "schema": self.schema, "host": self.host, "created": self.created, "keys": list(self.keys)}
        return json.dumps(body, indent=1).encode()

    @classmethod
    def from_file(cls, path: Path) -> ShardManifest:
        """Read a manifest file.

        Raises:
            CorruptSampleError: Not a manifest of this version, or inconsistent.
        """
        where = f"{path.parent.parent.name}/{SHARDS_DIR}/{path.name}"
        try:
            body = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise CorruptSampleError(where, f"unreadable shard manifest: {exc}") from None
        if not isinstance(body, dict) or body.get("manifest_version") != MANIFEST_VERSION:
            raise CorruptSampleError(where, f"not a shard manifest of version {MANIFEST_VERSION}")
        keys = body.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or body.get("num_samples") != len(keys):
            raise CorruptSampleError(where, "shard manifest keys are missing or do not match num_samples")
        if body.get("name") != path.stem or not isinstance(body.get("bytes"), int):
            raise CorruptSampleError(where, "shard manifest name or size is wrong")
        return cls(path.stem, tuple(sorted(keys)), body["bytes"], dict(body.get("schema") or {}), str(body.get("host", "")), str(body.get("created", "")))


def read_manifests(store_path: str | os.PathLike) -> list[ShardManifest]:
    """The manifests of a shard set's published shards, by name (creation order).

    Raises:
        CorruptSampleError: A damaged manifest.
    """
    shards = Path(store_path) / SHARDS_DIR
    try:
        names = sorted(p for p in shards.iterdir() if p.suffix == ".json" and not p.name.endswith(TMP_SUFFIX))
    except FileNotFoundError:
        return []
    return [ShardManifest.from_file(p) for p in names]


def _shard_dir(store_path: Path, name: str) -> Path:
    return store_path / SHARDS_DIR / f"{name}.lmdb"


def publish_shard(
    local: Path,
    store_path: str | os.PathLike,
    name: str,
    keys: Iterable[str],
    schema: Mapping[str, Any],
    summaries: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> ShardManifest:
    """Move (same file system) or copy a sealed shard into a set, then commit its manifest.

    Args:
        local: The sealed shard's LMDB directory (its ``data.mdb`` is taken).
        store_path: The set (``…/train/data.lmdb``); created if missing.
        name: The shard's name in the set.
        keys: The keys it holds.
        schema: Its samples' array schemas.
        summaries: ``{"fields": [...], "samples": {key: summary}}``, written
            beside the manifest (before it: the manifest commits both).
        run_id: The run this shard belongs to (:attr:`ShardedLMDBStorage.run_id`):
            the manifest is written only while that run holds the set.

    Raises:
        StorageError: The set is now held by another run (an actor of a killed
            or replaced driver): the shard is left unpublished.

    Returns:
        The manifest written.
    """
    store_path = Path(store_path)
    shards = store_path / SHARDS_DIR
    shards.mkdir(parents=True, exist_ok=True)
    source = local / "data.mdb"
    staging = shards / f"{name}.lmdb.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
    staging.mkdir()
    try:
        try:
            os.rename(source, staging / "data.mdb")  # same file system: no copy (the data is already on disk)
        except OSError:
            shutil.copyfile(source, staging / "data.mdb")
        fsync_file(staging / "data.mdb")
        fsync_dir(staging)
        size = (staging / "data.mdb").stat().st_size
        os.rename(staging, _shard_dir(store_path, name))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if summaries is not None:
        atomic_write(shards / f"{name}{SUMMARY_SUFFIX}", json.dumps(summaries).encode())
    fsync_dir(shards)
    if run_id is not None:
        try:
            current = (store_path / RUN_NAME).read_text()
        except OSError:
            current = None
        if current != run_id:
            raise StorageError(f"{store_path}: the shard set is now written by another run; shard {name} is left unpublished")
    manifest = ShardManifest(name, tuple(sorted(keys)), size, dict(schema), socket.gethostname(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    atomic_write(shards / f"{name}.json", manifest.to_json())  # the commit point
    return manifest


def _remove_unpublished(store_path: Path, older_than_s: float = _STALE_AFTER_S) -> int:
    """Remove interrupted publishes (shard directories without a manifest, staging leftovers).

    Only leftovers untouched for ``older_than_s``: a younger one may belong to
    an actor of a killed driver still copying (it will not commit: see
    ``run_id`` in :func:`publish_shard`); readers ignore it meanwhile.
    """
    now = time.time()
    shards = store_path / SHARDS_DIR
    removed = 0
    try:
        entries = list(shards.iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        unpublished = entry.suffix in (".lmdb", SUMMARY_SUFFIX) and not (shards / f"{entry.stem}.json").exists()
        stale = entry.name.endswith(TMP_SUFFIX) or unpublished
        try:
            young = now - entry.stat().st_mtime < older_than_s
        except FileNotFoundError:
            continue
        if stale and not young:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("%s: removed %d interrupted shard publish(es)", store_path, removed)
    return removed


@dataclass
class _SetView:
    """What a shard set held at one scan: manifests by name, key -> manifest index, duplicates."""

    manifests: list[ShardManifest]
    where: dict[str, int]
    duplicates: int
    sorted_keys: list[str] | None = None


class ShardedLMDBStorage(LMDBStorage):
    """A shard set read (or, by its run's driver, opened for its metadata) as one LMDB store.

    ``LMDBStorage(path)`` returns one when ``path`` is a shard set; open it
    directly with the same arguments. In write mode it holds the set's
    metadata only (the shards are written by :class:`ShardWriter`); closing it
    records the totals and the completion flag.

    Args:
        path: The set (``…/train/data.lmdb``).
        readonly: Read (default), or hold the set's metadata for a run that publishes into it.
        max_open_shards: Shard environments kept open per process (least recently
            used closed first). None: :func:`open_shard_budget` (a quarter of the
            file-descriptor limit, which it raises towards the hard limit when the
            set is larger, up to 4096).
        readahead: Kernel read-ahead on the shards' memory maps (see :class:`LMDBStorage`).
        **options: See :class:`~src.data.storage.Storage`; the LMDB sizing options are accepted and unused.

    Raises:
        StorageError: ``path`` holds an ordinary LMDB store.
        CorruptSampleError: A damaged manifest or shard.
    """

    _process_local = ("_open", "_guard", "_active", "_writer_lock")

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
        max_open_shards: int | None = None,
        **options: Any,
    ) -> None:
        super(LMDBStorage, self).__init__(path, readonly, create_indexes=create_indexes, index_fields=index_fields, **options)
        if (self.path / "data.mdb").exists():
            raise StorageError(f"{self.path}: holds an ordinary LMDB store, not a shard set")
        self.map_size_gb, self.max_readers, self.lock, self.readahead = map_size_gb, max_readers, lock, readahead
        self._max_open = None if max_open_shards is None else max(1, int(max_open_shards))
        self._shared = None
        self._open: OrderedDict[str, LMDBStorage] | None = None  # by shard name: positions shift when refresh() finds new shards
        self._guard: threading.Lock | None = None
        self._active: Counter[str] | None = None
        self._pid = -1
        self._writer_lock = None
        #: Names this write-mode opening: only shards published for it commit (:func:`publish_shard`).
        self.run_id: str | None = None
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
            self._writer_lock = acquire_writer_lock(self.path)  # one run publishes into a set at a time
            if (self.path / "data.mdb").exists():  # compacted meanwhile
                self._writer_lock.close()
                raise StorageError(f"{self.path}: holds an ordinary LMDB store, not a shard set")
            self.run_id = uuid.uuid4().hex
            atomic_write(self.path / RUN_NAME, self.run_id.encode())  # before any of this run's actors starts
            _remove_unpublished(self.path)
        self._scan()
        self._init_meta()

    # ------------------------------------------------------------------ the set

    def _scan(self) -> None:
        manifests = read_manifests(self.path)
        where: dict[str, int] = {}
        duplicates = 0
        for i, manifest in enumerate(manifests):
            for key in manifest.keys:
                if key in where:
                    duplicates += 1
                else:
                    where[key] = i
        # One object, swapped whole: a reader thread never pairs new manifests with old positions.
        self._view = _SetView(manifests, where, duplicates)

    @property
    def _manifests(self) -> list[ShardManifest]:
        return self._view.manifests

    @property
    def _where(self) -> dict[str, int]:
        return self._view.where

    @property
    def duplicate_keys(self) -> int:
        """Keys held by more than one shard (a retried video); the first shard's copy is read."""
        return self._view.duplicates

    def refresh(self) -> None:
        """Re-read the manifests (see shards a running job published since this store was opened)."""
        self._check_open()
        self._scan()

    @property
    def max_open_shards(self) -> int:
        """Shard environments kept open per process."""
        if self._max_open is None:
            self._max_open = open_shard_budget(len(self._manifests))
        return self._max_open

    @property
    def shards(self) -> list[ShardManifest]:
        """The published shards' manifests, by name."""
        return list(self._manifests)

    def sample_summaries(self, fields: Sequence[str]) -> dict[str, dict[str, Any]] | None:
        """Every sample's summary ``fields``, from the files published beside the manifests.

        Returns:
            ``{key: summary}`` (a duplicate key: the copy that is read), or None
            when a shard has no summary of exactly these fields (read the
            records instead).
        """
        self._check_open()
        view = self._view
        manifests, where = view.manifests, view.where
        out: dict[str, dict[str, Any]] = {}
        for i, manifest in enumerate(manifests):
            try:
                body = json.loads((self.path / SHARDS_DIR / f"{manifest.name}{SUMMARY_SUFFIX}").read_bytes())
            except (OSError, ValueError):
                return None
            if not isinstance(body, dict):
                return None
            samples = body.get("samples")
            if body.get("fields") != list(fields) or not isinstance(samples, dict) or set(samples) != set(manifest.keys):
                return None
            out.update((k, v) for k, v in samples.items() if where.get(k) == i)
        return out

    def _local(self) -> tuple[OrderedDict[str, LMDBStorage], threading.Lock, Counter[str]]:
        if self._pid != os.getpid() or self._open is None:  # a fork or an unpickled copy: fresh bookkeeping
            self._open = self._open if self._open is not None else OrderedDict()
            self._guard, self._active, self._pid = threading.Lock(), Counter(), os.getpid()
        return self._open, self._guard, self._active  # type: ignore[return-value]

    def _acquire(self, manifest: ShardManifest) -> LMDBStorage:
        opened, guard, active = self._local()
        name = manifest.name
        with guard:
            store = opened.get(name)
            if store is None:
                shard = _shard_dir(self.path, name)
                try:
                    size = (shard / "data.mdb").stat().st_size
                except OSError as exc:
                    raise CorruptSampleError(f"{SHARDS_DIR}/{manifest.name}", f"shard is missing ({exc.strerror})") from None
                if size != manifest.bytes:
                    raise CorruptSampleError(f"{SHARDS_DIR}/{manifest.name}", f"shard holds {size} bytes; its manifest says {manifest.bytes} (a damaged copy)")
                store = LMDBStorage(shard, readonly=True, lock=False, readahead=self.readahead, verify=self.verify)
                opened[name] = store
                for old in [n for n in opened if active[n] == 0 and n != name][: max(0, len(opened) - self.max_open_shards)]:
                    opened.pop(old).close()
            opened.move_to_end(name)
            active[name] += 1
            return store

    def _release(self, manifest: ShardManifest) -> None:
        _, guard, active = self._local()
        with guard:
            active[manifest.name] -= 1

    # ------------------------------------------------------------------ primitives

    def _connect(self) -> Any:
        raise StorageError(f"{self.path}: a shard set has no single LMDB environment; read it through the Storage API")

    def _keys(self) -> list[str]:
        view = self._view
        if view.sorted_keys is None:
            view.sorted_keys = sorted(view.where)
        return list(view.sorted_keys)

    @contextlib.contextmanager
    def raw_records(self, keys: Sequence[str]) -> Iterator[list[memoryview | None]]:
        """The records of ``keys`` as buffers into the shards' memory maps (valid inside the block)."""
        self._check_open()
        view = self._view  # one view of the set, even if refresh() runs meanwhile
        manifests, where = view.manifests, view.where
        out: list[memoryview | None] = [None] * len(keys)
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            shard = where.get(key)
            if shard is not None:
                groups.setdefault(shard, []).append(i)
        with contextlib.ExitStack() as stack:
            for shard, positions in groups.items():
                store = self._acquire(manifests[shard])
                stack.callback(self._release, manifests[shard])
                bufs = stack.enter_context(store.raw_records([keys[i] for i in positions]))
                for i, buf in zip(positions, bufs):
                    out[i] = buf
            yield out

    def reader_check(self) -> int:
        """Sealed shards are read lock-free: there is no reader table to clear."""
        self._check_open()
        return 0

    def _count(self) -> int:
        return len(self._where)

    def _contains(self, key: str) -> bool:
        return key in self._where

    def _read_meta(self) -> dict[str, Any] | None:
        try:
            raw = (self.path / SHARDSET_NAME).read_bytes()
        except FileNotFoundError:
            return None
        return parse_meta(raw)

    def _write_meta(self, meta: dict[str, Any]) -> None:
        if (self.path / "data.mdb").exists():
            raise StorageError(f"{self.path}: was compacted into an ordinary LMDB store meanwhile; the set's metadata is not written")
        schema = dict(meta.get("schema") or {})
        for manifest in self._manifests:
            for name, part in manifest.schema.items():
                schema[name] = _merge_schema(schema.get(name), part)
        body = dict(meta, schema=schema, num_samples=len(self._where), num_shards=len(self._manifests), sharded=True)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / SHARDSET_NAME, json.dumps(body, sort_keys=True).encode())

    def _write(self, items: list[tuple[str, dict[str, Any]]], meta: dict[str, Any]) -> None:
        if items:
            raise StorageError(f"{self.path}: samples of a shard set are written into shards (ShardWriter), not into the set")
        self._write_meta(meta)

    def close(self, complete: bool = True) -> None:
        """Record the totals of every published shard (write mode) and release the shards."""
        if not self._closed and not self.readonly:
            self._scan()
        super().close(complete)

    def _query_field(self, field: str, value: str) -> list[str]:
        view = self._view
        manifests, where = view.manifests, view.where
        out: list[str] = []
        for index, manifest in enumerate(manifests):
            store = self._acquire(manifest)
            try:
                out.extend(k for k in store._query_field(field, value) if where.get(k) == index)
            finally:
                self._release(manifest)
        return out

    def _index_counts(self, field: str) -> dict[str, int]:
        view = self._view
        manifests, where, duplicates = view.manifests, view.where, view.duplicates
        counts: Counter[str] = Counter()
        for index, manifest in enumerate(manifests):
            store = self._acquire(manifest)
            try:
                if duplicates:
                    for value in store._index_counts(field):
                        counts[value] += sum(1 for k in store._query_field(field, value) if where.get(k) == index)
                else:
                    counts.update(store._index_counts(field))
            finally:
                self._release(manifest)
        return {k: v for k, v in counts.items() if v}

    def _close(self) -> None:
        if self._open is not None and self._pid == os.getpid():
            for store in self._open.values():
                store.close()
        self._open = None
        if self._writer_lock is not None:
            self._writer_lock.close()
            self._writer_lock = None


# ---------------------------------------------------------------------------- the writer side


@dataclass(frozen=True)
class ShardTarget:
    """Where and how a worker writes shards (sent to every Ray actor).

    Attributes:
        stores: Split name -> the split's shard set (``…/train/data.lmdb``).
        local_dir: Node-local scratch for open shards (``None``: the system temp dir).
        seal_bytes: Seal a shard once its samples' arrays reach this size.
        seal_seconds: ... or once it has been open this long.
        options: Store options of every shard (codec, codec options, index fields, config).
        summary_fields: Publish these fields of every sample beside each manifest
            (``metadata.json``'s per-sample fields); empty: none.
        run_ids: Split name -> the :attr:`ShardedLMDBStorage.run_id` of the
            driver's write-mode opening; a shard commits only while it holds.
    """

    stores: Mapping[str, str]
    local_dir: str | None = None
    seal_bytes: int = 2 << 30
    seal_seconds: float = 300.0
    options: Mapping[str, Any] = field(default_factory=dict)
    summary_fields: tuple[str, ...] = ()
    run_ids: Mapping[str, str] = field(default_factory=dict)


def remove_stale_workdirs(root: str | os.PathLike) -> int:
    """Remove the work directories of shard writers that died on this node (their lock is free).

    Returns:
        How many were removed.
    """
    removed = 0
    now = time.time()
    try:
        entries = [p for p in Path(root).iterdir() if p.name.startswith((_WORKDIR_PREFIX, _NEW_WORKDIR_PREFIX)) and p.is_dir()]
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.startswith(_NEW_WORKDIR_PREFIX):  # being set up, or a writer died doing so
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > _STALE_AFTER_S:
                    shutil.rmtree(entry, ignore_errors=True)
            continue
        try:
            lock = try_lock(entry / "lock")  # every published work directory has its lock file
        except FileNotFoundError:
            continue  # removed meanwhile
        if lock is None:
            continue  # a live writer
        try:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        finally:
            if lock is not None:
                lock.close()
    if removed:
        logger.info("%s: removed %d work directories of shard writers that died", root, removed)
    return removed


@dataclass
class _OpenShard:
    name: str
    local: Path
    store: LMDBStorage
    keys: list[str] = field(default_factory=list)
    keyset: set[str] = field(default_factory=set)
    bytes: int = 0


class ShardWriter:
    """One worker's open shards (one per split) on node-local disk; seals and publishes them.

    Args:
        target: Where the sets are and the sealing thresholds.

    Raises:
        StorageError: A set is not writable from this node.
    """

    def __init__(self, target: ShardTarget) -> None:
        self.target = target
        for split, store in target.stores.items():
            shards = Path(store) / SHARDS_DIR
            try:
                shards.mkdir(parents=True, exist_ok=True)
                probe = shards / f".probe-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
                probe.write_bytes(b"ok")
                probe.unlink()
            except OSError as exc:
                raise StorageError(
                    f"the {split} shard set {store} is not writable from {socket.gethostname()} ({exc.strerror or exc}); "
                    "with processing.ray_write: shards every node must reach the output directory (a shared file system), "
                    "or use processing.ray_write: driver"
                ) from None
        # The work directory only once the sets are known to be writable: a refused writer leaves nothing behind.
        root = Path(target.local_dir or tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_workdirs(root)
        # Locked before it gets the name the sweep looks at, so no other writer ever sees it unlocked.
        new = Path(tempfile.mkdtemp(prefix=_NEW_WORKDIR_PREFIX, dir=root))
        self._lock = try_lock(new / "lock")
        self.workdir = root / (_WORKDIR_PREFIX + new.name[len(_NEW_WORKDIR_PREFIX):])
        os.rename(new, self.workdir)
        self._open: dict[str, _OpenShard] = {}
        self._opened_at: float | None = None

    def add(self, split: str, key: str, sample: Mapping[str, Any]) -> None:
        """Write one sample into the split's open shard (committed before this returns)."""
        shard = self._open.get(split)
        if shard is None:
            name = f"{time.time_ns():x}-{uuid.uuid4().hex[:12]}"
            local = self.workdir / f"{split}-{name}.lmdb"
            options = {**dict(self.target.options), "commit_every": _SHARD_COMMIT_EVERY}  # durability comes at the seal
            store = LMDBStorage(local, readonly=False, **options)
            shard = self._open[split] = _OpenShard(name, local, store)
            self._opened_at = self._opened_at or time.monotonic()
        shard.store.store_sample(key, sample)
        if key not in shard.keyset:  # the same actor redoing a video overwrites its record: listed once
            shard.keyset.add(key)
            shard.keys.append(key)
        shard.bytes += sum(int(getattr(sample.get(n), "nbytes", 0)) for n in ("data", "audio"))

    @property
    def due(self) -> bool:
        """Whether the open shards should be sealed now (size or age)."""
        if not self._open:
            return False
        too_old = self._opened_at is not None and time.monotonic() - self._opened_at >= self.target.seal_seconds
        return too_old or any(s.bytes >= self.target.seal_bytes for s in self._open.values())

    def seal(self) -> list[dict[str, Any]]:
        """Close and publish every open shard.

        Returns:
            ``{"split", "name", "keys"}`` per published shard.
        """
        published = []
        for split, shard in list(self._open.items()):
            shard.store.flush()
            schema = shard.store.meta.get("schema") or {}
            fields = list(self.target.summary_fields)
            summaries = None
            if fields:  # read back as the runner reads a store, so metadata.json is the same either way
                samples = {k: sample_summary(*shard.store.retrieve_metadata(k), fields) for k in shard.keys}
                summaries = {"fields": fields, "samples": samples}
            shard.store.close(complete=True)
            publish_shard(shard.local, self.target.stores[split], shard.name, shard.keys, schema, summaries, self.target.run_ids.get(split))
            shutil.rmtree(shard.local, ignore_errors=True)
            del self._open[split]
            published.append({"split": split, "name": shard.name, "keys": list(shard.keys)})
        self._opened_at = None
        return published

    def close(self) -> None:
        """Drop unpublished shards and the work directory (their videos were never reported stored)."""
        for shard in self._open.values():
            with contextlib.suppress(Exception):
                shard.store.close(complete=False)
        self._open.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


# ---------------------------------------------------------------------------- compaction


def compact_shard_set(path: str | os.PathLike, batch: int = 64) -> int:
    """Replace a complete shard set by one ordinary LMDB store holding the same records.

    The records are copied byte for byte and verified on the way (nothing is
    decoded and encoded again); the indexes are rebuilt, and the metadata
    (config, schema, codec, creation time) is kept. The new store is written
    beside the set (``<path>.compact.tmp``), then swapped in: the set is renamed
    to ``<path>.shards.old``, the new store to ``path``, and the old set removed.
    A compaction that died between the two renames is finished by the next call.

    Args:
        path: The set (``…/train/data.lmdb``).
        batch: Records per write transaction.

    Returns:
        The number of records copied.

    Raises:
        StorageError: ``path`` is not a shard set, a run is writing it, or an
            earlier compaction left ``<path>.shards.old`` behind.
        IncompleteStoreError: The set has no completion marker (finish or
            resume its run first).
        CorruptSampleError: A damaged record or shard (nothing is replaced).
    """
    from src.errors import IncompleteStoreError

    path = Path(path)
    old = path.with_name(path.name + ".shards.old")
    tmp = path.with_name(path.name + ".compact" + TMP_SUFFIX)
    if not path.exists() and old.exists() and (tmp / "data.mdb").exists():  # died between its two renames
        with LMDBStorage(tmp) as done:
            complete = done.is_complete
        if complete:
            os.rename(tmp, path)
            fsync_dir(path.parent)
            shutil.rmtree(old, ignore_errors=True)
            logger.warning("%s: finished an interrupted compaction", path)
            with LMDBStorage(path) as finished:
                return len(finished)
    if old.exists():
        raise StorageError(f"{old} is left from an interrupted compaction: check {path} and {tmp}, then remove it")
    if not is_shard_set(path):
        raise StorageError(f"{path}: not a shard set")
    lock = acquire_writer_lock(path)  # no run may publish meanwhile, until the set is gone
    try:
        with ShardedLMDBStorage(path) as source:
            if not source.is_complete:
                raise IncompleteStoreError(f"{path}: the shard set is incomplete; finish or resume its run before compacting")
            meta = source.meta
            keys = source.get_all_keys()
            shutil.rmtree(tmp, ignore_errors=True)
            total = sum(m.bytes for m in source.shards)
            target = LMDBStorage(
                tmp,
                readonly=False,
                map_size_gb=max(1.0, 1.25 * total / 1024**3),
                codec=meta.get("codec"),
                codec_options=meta.get("codec_options"),
                index_fields=meta.get("index_fields") or (),
                create_indexes=bool(meta.get("index_fields")),
                config=meta.get("config"),
            )
            try:
                assert target._meta is not None
                target._meta.update({k: meta[k] for k in ("schema", "created") if k in meta})
                copied = target.copy_records(source, keys, batch)
                target.close(complete=True)
            except BaseException:
                target.close(complete=False)
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        os.rename(path, old)
        fsync_dir(path.parent)
        os.rename(tmp, path)
        fsync_dir(path.parent)
    finally:
        lock.close()
    shutil.rmtree(old, ignore_errors=True)
    logger.info("%s: compacted %d records into one LMDB store", path, copied)
    return copied
