"""The storage base class shared by every format, and the name -> backend registry.

A store maps string keys (``sample_000001``) to samples
``{"data": ndarray, "label": int, "metadata": dict, "audio": ndarray?}``. Every
backend offers the same API:

* read: :meth:`Storage.get_all_keys`, :meth:`Storage.retrieve_sample`,
  :meth:`Storage.retrieve_batch`, ``len``, ``in``, :meth:`Storage.query`;
* write: :meth:`Storage.store_sample`, :meth:`Storage.store_batch`,
  :meth:`Storage.flush`, :meth:`Storage.close` (which writes the completion
  marker last);
* a self-description, :attr:`Storage.meta` (format version, schema, counts,
  the config that produced the store).

Backends register themselves by name; :func:`open_storage` picks one from the
``format`` argument or, when reading, from what is on disk. Heavy optional
libraries (h5py) are imported only by the backend module that needs them.
"""

from __future__ import annotations

import abc
import datetime as _dt
import json
import logging
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np

from src.data.codecs import CODECS
from src.data.record import check_array, check_label, to_plain
from src.errors import ConfigError, CorruptSampleError, IncompleteStoreError, StorageError, StoreVersionError
from src.registry import Registry

__all__ = [
    "parse_meta",
    "STORE_FORMAT_VERSION",
    "DEFAULT_INDEX_FIELDS",
    "DEFAULT_STORE_NAMES",
    "BACKENDS",
    "Storage",
    "register_backend",
    "backend_names",
    "get_backend",
    "detect_format",
    "open_storage",
    "index_value",
    "sample_index_values",
]

logger = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1
DEFAULT_INDEX_FIELDS: tuple[str, ...] = ("label", "category", "method")

# The store name each format uses inside a split directory (a registered backend adds its own).
DEFAULT_STORE_NAMES: dict[str, str] = {
    "lmdb": "data.lmdb",
    "hdf5": "data.h5",
    "numpy": "data.numpy",
    "torch": "data.torch",
}


def _on_register(name: str, cls: type[Storage]) -> None:
    cls.format = name
    DEFAULT_STORE_NAMES.setdefault(name, cls.store_name or f"data{cls.suffixes[0] if cls.suffixes else '.' + name}")


#: Storage backends by format name; built-ins are imported on first use.
BACKENDS: Registry[type[Storage]] = Registry(
    "storage format",
    {
        "lmdb": "src.data.lmdb_storage:LMDBStorage",
        "hdf5": "src.data.hdf5_storage:HDF5Storage",
        "numpy": "src.data.numpy_storage:NumpyStorage",
        "torch": "src.data.torch_storage:TorchStorage",
    },
    on_register=_on_register,
)


def index_value(value: Any) -> str:
    """Normalise one indexed value to the string the indexes store.

    ``1``, ``np.int64(1)`` and ``"1"`` all index as ``"1"``; booleans as
    ``"true"``/``"false"``; ``None`` as ``""``.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def sample_index_values(label: int, metadata: Mapping[str, Any], fields: Iterable[str]) -> dict[str, str]:
    """Return ``{field: indexed value}`` for a sample's label and metadata."""
    return {f: index_value(label if f == "label" else metadata.get(f)) for f in fields}


def parse_meta(raw: bytes | str) -> dict[str, Any]:
    """Decode a stored ``__meta__`` JSON document.

    Raises:
        CorruptSampleError: Not JSON, or not a JSON object.
    """
    try:
        meta = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise CorruptSampleError("__meta__", f"store metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise CorruptSampleError("__meta__", "store metadata is not a JSON object")
    return meta


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _array_schema(array: np.ndarray | None) -> dict[str, Any] | None:
    if array is None:
        return None
    array = np.asarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape)}


def _merge_schema(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any] | None:
    """Merge two array schemas; dimensions that differ become ``None`` (variable)."""
    if old is None:
        return new
    if new is None:
        return old
    if len(old["shape"]) != len(new["shape"]):
        return {"dtype": old["dtype"], "shape": None}
    shape = [a if a == b else None for a, b in zip(old["shape"], new["shape"])] if old["shape"] is not None else None
    return {"dtype": old["dtype"], "shape": shape}


class Storage(abc.ABC):
    """Base class of every store backend.

    Subclasses implement the primitives (``_keys``, ``_get``, ``_write``,
    ``_read_meta``, ``_write_meta``, ``_query_field``, ``_count``,
    ``_contains``, ``_close``); this class supplies buffering, validation,
    self-description and the public API.

    Args:
        path: Store location.
        readonly: Open for reading only (the default).
        codec: Codec for newly written clips (``raw``, ``zstd`` or ``jpeg``);
            default: the store's own codec when appending, else ``raw``.
        codec_options: ``jpeg_quality`` / ``zstd_level``.
        create_indexes: Maintain per-field indexes while writing.
        index_fields: Fields indexed (``label`` plus metadata keys).
        commit_every: Samples buffered before a write is committed.
        verify: Verify checksums on read (default True).
        config: The preprocessing config to record in the store's metadata.
    """

    format: ClassVar[str] = ""
    #: Path suffixes of stores of this format (``detect_format`` on a new path).
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: The store's name inside a split directory (default ``data<first suffix>``).
    store_name: ClassVar[str] = ""

    #: Attributes holding this process's handles: dropped when the store is pickled
    #: (a reader reopens them lazily in the receiving process).
    _process_local: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        if not self.readonly:
            raise StorageError(f"{self.path}: a store open for writing cannot be sent to another process")
        state = self.__dict__.copy()
        for name in self._process_local:
            state[name] = None
        return state

    @classmethod
    def sniff(cls, path: Path) -> bool:
        """Whether the existing ``path`` holds a store of this format (cheap: no full open).

        The default accepts a path with one of :attr:`suffixes`; backends
        override it to look at the bytes on disk.
        """
        return path.suffix in cls.suffixes

    def __init__(
        self,
        path: str | os.PathLike,
        readonly: bool = True,
        *,
        codec: str | None = None,
        codec_options: Mapping[str, Any] | None = None,
        create_indexes: bool = True,
        index_fields: Iterable[str] = DEFAULT_INDEX_FIELDS,
        commit_every: int = 64,
        verify: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if codec is not None:
            CODECS.get(codec)  # ConfigError naming the choices
        if commit_every < 1:
            raise ConfigError(f"commit_every must be >= 1; got {commit_every}")
        self.path = Path(path)
        self.readonly = readonly
        self._codec_given = codec is not None or codec_options is not None
        self.codec = codec or "raw"
        self.codec_options = dict(codec_options or {})
        self.create_indexes = create_indexes
        self.index_fields = tuple(index_fields) if create_indexes else ()
        self.commit_every = commit_every
        self.verify = verify
        self._config = dict(config) if config is not None else None
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._meta: dict[str, Any] | None = None
        self._closed = False

    # ------------------------------------------------------------------ primitives

    @abc.abstractmethod
    def _keys(self) -> list[str]:
        """All sample keys, sorted."""

    @abc.abstractmethod
    def _get(self, key: str, verify: bool) -> dict[str, Any] | None:
        """Decode one sample, or None when the key is absent."""

    @abc.abstractmethod
    def _write(self, items: list[tuple[str, dict[str, Any]]], meta: dict[str, Any]) -> None:
        """Durably write samples, their index entries and ``meta`` in one commit."""

    @abc.abstractmethod
    def _read_meta(self) -> dict[str, Any] | None:
        """The stored ``__meta__`` document, or None."""

    @abc.abstractmethod
    def _write_meta(self, meta: dict[str, Any]) -> None:
        """Durably replace the ``__meta__`` document."""

    @abc.abstractmethod
    def _query_field(self, field: str, value: str) -> list[str]:
        """Keys whose indexed ``field`` equals ``value``, sorted."""

    @abc.abstractmethod
    def _index_counts(self, field: str) -> dict[str, int]:
        """``{value: number of samples}`` for an indexed field."""

    @abc.abstractmethod
    def _count(self) -> int:
        """Number of samples."""

    @abc.abstractmethod
    def _contains(self, key: str) -> bool:
        """Whether ``key`` is stored."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release files and handles."""

    # ------------------------------------------------------------------ lifecycle

    def _init_meta(self) -> None:
        """Load or create ``__meta__``; call from a subclass's ``__init__`` once opened.

        On any error the store's handles are released before it propagates.
        """
        try:
            self._load_meta()
        except BaseException:
            self._closed = True
            self._close()
            raise

    def _load_meta(self) -> None:
        meta = self._read_meta()
        if meta is None:
            if self.readonly:
                raise IncompleteStoreError(
                    f"{self.path}: the store has no __meta__ record (not written by this project, or its writer died before the first commit)"
                )
            meta = {
                "format": self.format,
                "format_version": STORE_FORMAT_VERSION,
                "created": _now(),
                "codec": self.codec,
                "codec_options": self.codec_options,
                "index_fields": list(self.index_fields),
                "schema": {},
                "num_samples": 0,
                "complete": False,
                "config": self._config,
            }
        else:
            version = meta.get("format_version")
            if version != STORE_FORMAT_VERSION:
                raise StoreVersionError(
                    f"{self.path}: store format version {version!r} is not supported (this build reads version {STORE_FORMAT_VERSION})"
                )
            if meta.get("format", self.format) != self.format:
                raise StorageError(f"{self.path}: store says it is {meta.get('format')!r}, opened as {self.format!r}")
            if not self.readonly:
                if not self._codec_given:  # resuming without naming a codec keeps the store's own
                    self.codec = meta.get("codec", self.codec)
                    self.codec_options = dict(meta.get("codec_options") or {})
                self.index_fields = tuple(meta.get("index_fields", self.index_fields))
                self.create_indexes = bool(self.index_fields)
                if self._config is not None:
                    meta["config"] = self._config
        self._meta = meta
        if not self.readonly:
            # A store being written is incomplete until close() says otherwise.
            meta["complete"] = False
            meta["updated"] = _now()
            self._write_meta(meta)
        elif not meta.get("complete", False):
            logger.warning("%s: store has no completion marker (still being written, or the writer was interrupted)", self.path)

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)

    def close(self, complete: bool = True) -> None:
        """Flush pending samples, write the completion marker, release resources.

        Args:
            complete: In write mode, mark the store complete (the marker is
                written after every sample). Pass False to leave it marked
                incomplete, e.g. when stopping because of an error.
        """
        if self._closed:
            return
        try:
            if not self.readonly:
                self.flush()
                if self._meta is not None:
                    self._meta["complete"] = bool(complete)
                    self._meta["updated"] = _now()
                    self._write_meta(self._meta)
        finally:
            self._closed = True
            self._close()

    def __del__(self) -> None:  # best effort; never raise from a finaliser
        try:
            if not self._closed and self.readonly:
                self._closed = True
                self._close()
        except Exception:
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.path}: store is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise StorageError(f"{self.path}: store was opened read-only; open it with readonly=False (or mode='w') to write")

    # ------------------------------------------------------------------ description

    @property
    def meta(self) -> dict[str, Any]:
        """The store's self-description (format version, schema, counts, config)."""
        self._check_open()
        if self.readonly:
            self._meta = self._read_meta() or self._meta
        meta = dict(self._meta or {})
        meta["num_samples"] = len(self)
        return meta

    @property
    def is_complete(self) -> bool:
        """Whether the last writer closed the store cleanly."""
        return bool(self.meta.get("complete", False))

    def set_config(self, config: Mapping[str, Any]) -> None:
        """Record the configuration that produced this store in its metadata."""
        self._check_writable()
        assert self._meta is not None  # set by _init_meta for writable stores
        self._meta["config"] = dict(config)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        self._check_open()
        return self._count() + sum(1 for k, _ in self._pending if not self._contains(k))

    def __contains__(self, key: object) -> bool:
        self._check_open()
        return isinstance(key, str) and (self._contains(key) or any(k == key for k, _ in self._pending))

    def __iter__(self) -> Iterator[str]:
        return iter(self.get_all_keys())

    def get_all_keys(self) -> list[str]:
        """Return every sample key, sorted (``sample_000001`` order)."""
        self._check_open()
        self.flush_if_writable()
        return self._keys()

    def keys(self) -> list[str]:
        """Alias of :meth:`get_all_keys`."""
        return self.get_all_keys()

    def retrieve_sample(self, key: str, *, verify: bool | None = None) -> dict[str, Any]:
        """Load one sample.

        Args:
            key: Sample key, e.g. ``"sample_000001"``.
            verify: Check the checksum (default: the store's ``verify`` setting).

        Returns:
            ``{"data", "label", "metadata"}`` plus ``"audio"`` when stored.

        Raises:
            KeyError: The key is not in the store.
            CorruptSampleError: The record is damaged.
        """
        self._check_open()
        self.flush_if_writable()
        sample = self._get(key, self.verify if verify is None else verify)
        if sample is None:
            raise KeyError(key)
        return sample

    def retrieve_metadata(self, key: str) -> tuple[int, dict[str, Any]]:
        """Return ``(label, metadata)`` of a sample, decoding as little as the format allows.

        Raises:
            KeyError: The key is not in the store.
        """
        sample = self.retrieve_sample(key, verify=False)
        return sample["label"], sample["metadata"]

    def retrieve_batch(self, keys: Iterable[str], *, verify: bool | None = None) -> list[dict[str, Any] | None]:
        """Load several samples; ``None`` stands in for each missing key.

        Raises:
            CorruptSampleError: A record is damaged.
        """
        self._check_open()
        self.flush_if_writable()
        v = self.verify if verify is None else verify
        return [self._get(k, v) for k in keys]

    #: Whether :meth:`raw_records` is implemented (records kept as one contiguous buffer each).
    has_raw_records: ClassVar[bool] = False

    def raw_records(self, keys: Sequence[str]) -> AbstractContextManager[list[memoryview | None]]:
        """The encoded records of ``keys`` (see :mod:`src.data.record`), all read in one snapshot.

        A capability for zero-copy batch readers: the buffers are valid only
        inside the ``with`` block (for LMDB they point into the memory map,
        inside one read transaction). ``None`` stands for a missing key.
        Backends that do not keep records (``has_raw_records`` False) raise.

        Example:
            >>> with store.raw_records(["sample_000001"]) as (buf,):
            ...     header = decode_header(buf)

        Raises:
            NotImplementedError: The backend keeps no encoded records.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no encoded records; use retrieve_batch")

    def query(self, **field_values: Any) -> list[str]:
        """Keys whose indexed fields equal all the given values (no clip is decoded).

        Example: ``store.query(label=1, method="fsgan")``.

        Raises:
            ConfigError: A field that is not indexed.
        """
        self._check_open()
        self.flush_if_writable()
        if not field_values:
            return self.get_all_keys()
        result: set[str] | None = None
        for field, value in field_values.items():
            if field not in self.indexed_fields:
                raise ConfigError(f"field {field!r} is not indexed in {self.path}; indexed fields: {', '.join(self.indexed_fields) or 'none'}")
            keys = set(self._query_field(field, index_value(value)))
            result = keys if result is None else result & keys
        return sorted(result or ())

    def index_counts(self, field: str) -> dict[str, int]:
        """``{value: count}`` for an indexed field, e.g. samples per label."""
        self._check_open()
        self.flush_if_writable()
        if field not in self.indexed_fields:
            raise ConfigError(f"field {field!r} is not indexed in {self.path}; indexed fields: {', '.join(self.indexed_fields) or 'none'}")
        return self._index_counts(field)

    @property
    def indexed_fields(self) -> tuple[str, ...]:
        """The fields this store indexes."""
        meta = self._meta if self._meta is not None else (self._read_meta() or {})
        return tuple(meta.get("index_fields", self.index_fields))

    # ------------------------------------------------------------------ writing

    def store_sample(self, key: str, sample: Mapping[str, Any]) -> None:
        """Buffer one sample for writing; commits every ``commit_every`` samples.

        Args:
            key: Sample key (``sample_000001`` style keeps byte order = logical order).
            sample: ``{"data": ndarray, "label": int, "metadata": dict, "audio"?: ndarray}``.

        Raises:
            StorageError: The store is read-only or closed.
            ValueError: The sample is malformed.
        """
        self._check_writable()
        if not isinstance(key, str) or not key or key.startswith("__"):
            raise ValueError(f"invalid sample key {key!r}: keys are non-empty strings not starting with '__'")
        if "\\" in key or "\0" in key:
            raise ValueError(f"invalid sample key {key!r}: no backslashes or NUL bytes")
        data = sample.get("data")
        if data is None:
            raise ValueError(f"sample {key!r} has no 'data' array")
        label = check_label(sample.get("label"), key)
        # Check and copy now: a bad sample fails its own store_sample call, never a later
        # flush carrying good ones, and a caller reusing its buffers cannot change what is queued.
        item = {"data": np.array(check_array("data", data), copy=True), "label": label, "metadata": to_plain(dict(sample.get("metadata") or {}))}
        if sample.get("audio") is not None:
            item["audio"] = np.array(check_array("audio", sample["audio"]), copy=True)
        self._pending.append((key, item))
        if len(self._pending) >= self.commit_every:
            self.flush()

    def store_batch(self, items: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Store many samples: a mapping ``{key: sample}`` or an iterable of ``(key, sample)``.

        Returns:
            The number of samples stored.
        """
        pairs = items.items() if isinstance(items, Mapping) else items
        n = 0
        for key, sample in pairs:
            self.store_sample(key, sample)
            n += 1
        self.flush()
        return n

    def flush_if_writable(self) -> None:
        """Commit buffered samples when in write mode, so reads see them."""
        if not self.readonly and self._pending:
            self.flush()

    def flush(self) -> None:
        """Commit buffered samples (with their index entries and updated metadata)."""
        self._check_writable()
        if not self._pending:
            return
        items = self._pending
        assert self._meta is not None
        schema = dict(self._meta.get("schema") or {})
        for _, sample in items:
            for name in ("data", "audio"):
                if sample.get(name) is not None:
                    schema[name] = _merge_schema(schema.get(name), _array_schema(sample[name]))
        meta = dict(self._meta, schema=schema, updated=_now())
        self._write(items, meta)
        # Only a successful commit empties the buffer: after a failure (a full disk)
        # the samples are still queued and a later flush or close can retry them.
        self._meta = meta
        self._pending = []


# ---------------------------------------------------------------------------- registry


def register_backend(name: str, *, replace: bool = False):
    """Class decorator registering a :class:`Storage` subclass under ``name`` (see :data:`BACKENDS`).

    The class gets ``format = name``; ``open_storage(path, mode, format=name)``,
    the config's ``output.format`` and ``preprocess.py --format`` accept it, and
    :func:`detect_format` asks its :meth:`Storage.sniff`.
    """
    return BACKENDS.register(name, replace=replace)


def backend_names() -> tuple[str, ...]:
    """Names of every known store format (nothing is imported)."""
    return BACKENDS.names()


def get_backend(name: str) -> type[Storage]:
    """Return the backend class for a format name (importing its module on first use).

    Raises:
        ConfigError: Unknown format name.
    """
    return BACKENDS.get(name)


def detect_format(path: str | os.PathLike) -> str:
    """Tell a store's format from what is on disk (or, for a new path, its suffix).

    Every backend is asked in registration order (:meth:`Storage.sniff` on what
    exists, then :attr:`Storage.suffixes` for a path that does not).

    Raises:
        StorageError: Nothing at ``path`` looks like a store.
    """
    p = Path(path)
    names = backend_names()
    if p.exists():
        for fmt in names:
            if get_backend(fmt).sniff(p):
                return fmt
    for fmt in names:
        if p.suffix and p.suffix in get_backend(fmt).suffixes:
            return fmt
    raise StorageError(f"{p}: not a store of any known format ({', '.join(names)})" if p.exists() else f"{p}: no such store")


def open_storage(path: str | os.PathLike, mode: str = "r", format: str | None = None, **options: Any) -> Storage:
    """Open a store of any format with the common API.

    Args:
        path: Store path (``.../data.lmdb``, ``.../data.h5``, ``.../data.numpy``, ``.../data.torch``).
        mode: ``"r"`` to read, ``"w"`` to create or append.
        format: Format name; detected from ``path`` when omitted.
        **options: Passed to the backend (codec, map_size_gb, index_fields, ...).

    Returns:
        An open :class:`Storage`; use it as a context manager.

    Raises:
        ConfigError: Unknown mode or format.
        StorageError: Nothing readable at ``path``.
    """
    if mode not in ("r", "w"):
        raise ConfigError(f"invalid mode {mode!r}; must be 'r' or 'w'")
    fmt = format or detect_format(path)
    return get_backend(fmt)(path, readonly=(mode == "r"), **options)
