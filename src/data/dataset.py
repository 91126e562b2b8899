"""The torch Dataset over a store of any format, index queries, and whole-batch reads.

* :func:`query_samples` and friends answer from a store's indexes; no clip is decoded.
* :func:`select_keys` turns subset options (``labels``, ``categories``,
  ``methods``, ``exclude_methods``) into a key list, through the indexes too.
* :class:`ClipDataset` is a map-style Dataset: ``dataset[i]`` is one transformed
  sample (the per-sample path, for augmentation). It opens its store lazily in
  each process, so it crosses ``fork`` and ``spawn`` into DataLoader workers.
* :meth:`ClipDataset.read_batch` reads a whole batch straight into one
  preallocated buffer (the fast path). On a store with the
  :meth:`~src.data.storage.Storage.raw_records` capability (LMDB) each clip is
  copied exactly once, from the store's buffer into its slot of the batch
  buffer, by the record module's copy-and-verify kernel; other formats go
  through ``Storage.retrieve_sample``. The per-clip work runs on an optional thread pool:
  LMDB reads, checksums and numpy copies release the GIL.

Corrupt records follow ``on_error``: ``"raise"`` lets
:class:`~src.errors.CorruptSampleError` (naming the key) propagate; ``"skip"``
leaves the sample out, logs it and reports it to the loader, which counts it.
A skipped sample is never replaced by another one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.batch import Normalizer, RawBatch
from src.data.codecs import decode_array
from src.data.memory import Allocator
from src.data.record import RecordHeader, copy_payload_into, decode_header, raw_array
from src.data.storage import Storage, open_storage
from src.data.transforms import LMDBDataTransform, alloc_cpu, convert_clip_into
from src.errors import ConfigError, CorruptSampleError, StorageError

__all__ = [
    "ON_ERROR_POLICIES",
    "ClipDataset",
    "SkippedSample",
    "assemble_rows",
    "query_samples",
    "query_samples_by_category",
    "query_samples_by_label",
    "query_samples_by_method",
    "select_keys",
]

logger = logging.getLogger(__name__)

ON_ERROR_POLICIES = ("raise", "skip")


# ----------------------------------------------------------------------------- queries


def query_samples(db_path: str | os.PathLike, **field_values: Any) -> list[str]:
    """Keys of the samples whose indexed fields equal all the given values, sorted.

    Answered from the store's indexes: no clip is decoded. Works while the same
    store is open elsewhere in the process.

    Args:
        db_path: Store path (any format).
        **field_values: e.g. ``label=1, method="fsgan"``; none returns every key.

    Returns:
        Sorted sample keys.

    Raises:
        ConfigError: A field that the store does not index.
        StorageError: No store at ``db_path``.
    """
    with open_storage(db_path) as storage:
        return storage.query(**field_values)


def query_samples_by_label(db_path: str | os.PathLike, label: int) -> list[str]:
    """Keys of the samples with ``label`` (0 real, 1 fake), sorted; from the index."""
    return query_samples(db_path, label=label)


def query_samples_by_category(db_path: str | os.PathLike, category: str) -> list[str]:
    """Keys of the samples of FakeAVCeleb ``category`` (``"A"``..``"D"``), sorted; from the index."""
    return query_samples(db_path, category=category)


def query_samples_by_method(db_path: str | os.PathLike, method: str) -> list[str]:
    """Keys of the samples made by manipulation ``method`` (e.g. ``"fsgan"``), sorted; from the index."""
    return query_samples(db_path, method=method)


def _as_list(name: str, values: Any) -> list[Any] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes, int, np.integer)):
        return [values]
    try:
        return list(values)
    except TypeError:
        raise ConfigError(f"{name} must be a value or a list of values; got {values!r}") from None


def _matching(storage: Storage, field_name: str, values: list[Any]) -> set[str]:
    matched: set[str] = set()
    for value in values:
        keys = storage.query(**{field_name: value})
        if not keys:
            present = sorted(storage.index_counts(field_name))
            logger.warning("%s: %s=%r matches no sample (values present: %s)", storage.path, field_name, value, ", ".join(present) or "none")
        matched.update(keys)
    return matched


def select_keys(
    storage: Storage,
    *,
    keys: Iterable[str] | None = None,
    labels: Any = None,
    categories: Any = None,
    methods: Any = None,
    exclude_methods: Any = None,
    allow_empty: bool = False,
) -> list[str]:
    """Choose a subset of a store's keys through its indexes (nothing is decoded).

    Filters combine with AND; each filter's values combine with OR.

    Args:
        storage: An open store.
        keys: Start from these keys (default: all).
        labels: Keep these labels, e.g. ``[1]``.
        categories: Keep these categories, e.g. ``["A", "C"]``.
        methods: Keep these manipulation methods.
        exclude_methods: Drop these methods (leave-one-method-out training).
        allow_empty: Return an empty list instead of raising when nothing is
            left (one store of several may contribute nothing).

    Returns:
        The selected keys, sorted.

    Raises:
        ConfigError: A filter on a field the store does not index, an unknown
            key, or a selection that leaves no sample (unless ``allow_empty``).
    """
    selected: set[str] | None = None
    if keys is not None:
        selected = set(keys)
        missing = [k for k in sorted(selected) if k not in storage]
        if missing:
            raise ConfigError(f"{len(missing)} key(s) not in {storage.path}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    for field_name, values in (("label", labels), ("category", categories), ("method", methods)):
        values = _as_list(field_name, values)
        if values is None:
            continue
        matched = _matching(storage, field_name, values)
        selected = matched if selected is None else selected & matched
    excluded = _as_list("exclude_methods", exclude_methods)
    if excluded:
        if selected is None:
            selected = set(storage.get_all_keys())
        selected -= _matching(storage, "method", excluded)
    result = storage.get_all_keys() if selected is None else sorted(selected)
    if not result and not allow_empty:
        raise ConfigError(
            f"no sample of {storage.path} is left after selecting labels={labels!r}, categories={categories!r}, "
            f"methods={methods!r}, exclude_methods={exclude_methods!r}"
        )
    return result


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class SkippedSample:
    """Stands in for a corrupt sample under ``on_error="skip"``; collation drops it.

    Attributes:
        key: The sample's key.
        reason: Why it was skipped.
        error: Raise it in the main process instead (``on_error="raise"`` across worker processes).
    """

    key: str
    reason: str
    error: bool = False


@dataclass
class _Row:
    """One sample of a batch between its header read and its copy."""

    key: str
    label: int = 0
    metadata: dict = field(default_factory=dict)
    buf: Any = None  # the record inside the LMDB map (fast path)
    header: RecordHeader | None = None
    sample: dict[str, Any] | None = None  # decoded sample (generic path)
    error: CorruptSampleError | None = None
    verify: bool = True  # check the record's digests while copying


class ClipDataset(Dataset):
    """Samples of one store as a map-style torch Dataset.

    Args:
        db_path: Store path (any format; see :func:`~src.data.storage.open_storage`).
        transform: Per-sample transform (default: :class:`LMDBDataTransform`).
        keys: Restrict to these keys.
        labels: Keep these labels (through the index).
        categories: Keep these categories (through the index).
        methods: Keep these methods (through the index).
        exclude_methods: Drop these methods (through the index).
        on_error: ``"raise"`` or ``"skip"`` for corrupt samples.
        verify: Check record checksums (default: the store's setting, on).
        storage_options: Extra arguments for ``open_storage`` (``format``, ...).
        tag: When set, every sample's metadata gets ``dataset = tag`` unless it
            has a ``dataset`` field already (the multi-store loader's tagging;
            None, the default, leaves metadata as stored).
        allow_empty: Accept a selection that leaves no sample.

    Raises:
        ConfigError: Bad option values or an empty selection.
        StorageError: No readable store at ``db_path``.
    """

    def __init__(
        self,
        db_path: str | os.PathLike,
        transform: Callable[[Mapping[str, Any]], Any] | None = None,
        *,
        keys: Iterable[str] | None = None,
        labels: Any = None,
        categories: Any = None,
        methods: Any = None,
        exclude_methods: Any = None,
        on_error: str = "raise",
        verify: bool | None = None,
        storage_options: Mapping[str, Any] | None = None,
        tag: str | None = None,
        allow_empty: bool = False,
    ) -> None:
        if on_error not in ON_ERROR_POLICIES:
            raise ConfigError(f"invalid on_error {on_error!r}; must be one of {', '.join(ON_ERROR_POLICIES)}")
        self.db_path = Path(db_path)
        self.transform = transform if transform is not None else LMDBDataTransform()
        self.on_error = on_error
        self.storage_options = dict(storage_options or {})
        self.tag = tag
        self._storage: Storage | None = None
        self._pid: int | None = None
        storage = self.storage
        self.verify = storage.verify if verify is None else bool(verify)
        self.keys = select_keys(
            storage, keys=keys, labels=labels, categories=categories, methods=methods, exclude_methods=exclude_methods, allow_empty=allow_empty
        )
        schema = storage.meta.get("schema") or {}
        self.has_audio = bool(schema.get("audio"))
        self._labels: np.ndarray | None = None

    # ------------------------------------------------------------------ process-local store

    @property
    def storage(self) -> Storage:
        """This process's open store (opened on first use in each process)."""
        if self._storage is None or self._pid != os.getpid():
            self._storage = open_storage(self.db_path, "r", **self.storage_options)
            self._pid = os.getpid()
        return self._storage

    def close(self) -> None:
        """Close this process's handle on the store."""
        if self._storage is not None and self._pid == os.getpid():
            self._storage.close()
        self._storage = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_storage"] = None  # reopened lazily by the receiving process
        state["_pid"] = None
        return state

    # ------------------------------------------------------------------ index

    @property
    def labels(self) -> np.ndarray:
        """Label of each item, from the store's label index (nothing decoded)."""
        if self._labels is None:
            storage = self.storage
            position = {k: i for i, k in enumerate(self.keys)}
            labels = np.full(len(self.keys), -1, dtype=np.int64)
            for value in storage.index_counts("label"):
                for key in storage.query(label=value):
                    i = position.get(key)
                    if i is not None:
                        labels[i] = int(value)
            unlabelled = [self.keys[i] for i in np.flatnonzero(labels < 0)[:5]]
            if unlabelled:
                raise StorageError(f"{self.db_path}: the label index lacks sample(s) {', '.join(unlabelled)}")
            self._labels = labels
        return self._labels

    # ------------------------------------------------------------------ per-sample path

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Any:
        """The transformed sample ``index`` (or a :class:`SkippedSample` under ``on_error="skip"``)."""
        key = self.keys[index]
        try:
            sample = self.storage.retrieve_sample(key, verify=self.verify)
        except CorruptSampleError as exc:
            if self.on_error == "raise":
                raise
            logger.warning("skipping corrupt sample %r: %s", key, exc.reason)
            return SkippedSample(key, exc.reason)
        sample["key"] = key
        if self.tag is not None:
            metadata = sample.get("metadata")
            sample["metadata"] = metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
            metadata.setdefault("dataset", self.tag)
        return self.transform(sample)

    # ------------------------------------------------------------------ whole-batch path

    def read_batch(
        self,
        indices: Sequence[int],
        allocate: Allocator | None = None,
        *,
        pool: Executor | None = None,
        convert: Normalizer | None = None,
    ) -> RawBatch:
        """Read the samples ``indices`` into one batch without any transform.

        Args:
            indices: Item indices.
            allocate: ``(shape, dtype) -> CPU tensor`` for the clip and audio
                buffers (pinned, shared or huge-page memory); default
                :func:`~src.data.transforms.alloc_cpu`.
            pool: Thread pool for the per-clip checks and copies (else inline).
            convert: A :class:`~src.data.batch.Normalizer` (the loader's): write
                float32 ``clip * scale + shift`` per channel instead of copying
                the stored dtype; the batch is then marked ``normalized``.

        Returns:
            A :class:`~src.data.batch.RawBatch`: ``data`` ``(B, C, T, H, W)``,
            ``label`` int64 ``(B,)``, ``keys``, ``metadata``, ``skipped``
            ``[(key, reason), ...]``, plus ``audio`` float32 ``(B, 1, samples)``
            zero-padded and ``audio_lengths`` int64 ``(B,)`` when the samples
            have audio. :meth:`~src.data.batch.RawBatch.as_dict` gives the spec's dict.

        Raises:
            CorruptSampleError: A damaged record under ``on_error="raise"``.
            StorageError: A key vanished, or clips of different shapes in one batch.
        """
        allocate = allocate or alloc_cpu
        keys = [self.keys[i] for i in indices]
        storage = self.storage
        if storage.has_raw_records:
            with storage.raw_records(keys) as bufs:
                rows = self._record_rows(keys, bufs)
                # Every copy finishes inside the block: the buffers may point into a memory map.
                return assemble_rows(rows, allocate, pool, convert, has_audio=self.has_audio, on_error=self.on_error, where=self.db_path)
        rows = self._decoded_rows(keys)
        return assemble_rows(rows, allocate, pool, convert, has_audio=self.has_audio, on_error=self.on_error, where=self.db_path)

    def read_rows(self, keys: Sequence[str], stack: ExitStack) -> list[_Row]:
        """The rows of ``keys`` for :func:`assemble_rows`: record headers (fast path) or decoded samples.

        Args:
            keys: Sample keys of this store.
            stack: Holds the store's read snapshot (the rows' buffers may point
                into a memory map) until the caller has assembled the batch.
        """
        if self.storage.has_raw_records:
            return self._record_rows(keys, stack.enter_context(self.storage.raw_records(keys)))
        return self._decoded_rows(keys)

    def _record_rows(self, keys: Sequence[str], bufs: Sequence[Any]) -> list[_Row]:
        rows = [self._record_row(key, buf) for key, buf in zip(keys, bufs)]
        if self.tag is not None:
            for row in rows:
                row.metadata.setdefault("dataset", self.tag)
        return rows

    def _decoded_rows(self, keys: Sequence[str]) -> list[_Row]:
        storage = self.storage
        rows = []
        for key in keys:
            try:
                sample = storage.retrieve_sample(key, verify=self.verify)
                rows.append(_Row(key, int(sample["label"]), dict(sample.get("metadata") or {}), sample=sample))
            except CorruptSampleError as exc:
                rows.append(_Row(key, error=exc))
            except KeyError:
                raise StorageError(f"{self.db_path}: sample {key!r} is no longer in the store") from None
        if self.tag is not None:
            for row in rows:
                row.metadata.setdefault("dataset", self.tag)
        return rows

    def _record_row(self, key: str, buf: Any) -> _Row:
        if buf is None:
            raise StorageError(f"{self.db_path}: sample {key!r} is no longer in the store")
        try:
            header = decode_header(buf, key)
            if "data" not in header.arrays:
                raise CorruptSampleError(key, "record has no 'data' array")
        except CorruptSampleError as exc:
            return _Row(key, error=exc)
        return _Row(key, header.label, header.metadata, buf=buf, header=header, verify=self.verify)


def assemble_rows(
    rows: list[_Row],
    allocate: Allocator,
    pool: Executor | None,
    convert: Normalizer | None,
    *,
    has_audio: bool,
    on_error: str,
    where: str | os.PathLike,
) -> RawBatch:
    """Copy (or convert) the rows' clips and audio into one batch buffer each.

    Rows may come from several stores (:mod:`src.data.multi_store`); they must
    stay readable (their stores' snapshots open) until this returns.

    Args:
        rows: From :meth:`ClipDataset.read_rows`, in batch order.
        allocate: ``(shape, dtype) -> CPU tensor`` for the buffers.
        pool: Thread pool for the per-clip checks and copies (else inline).
        convert: The loader's :class:`~src.data.batch.Normalizer`, or None.
        has_audio: Give the batch an audio buffer even if no row has audio.
        on_error: ``"raise"`` or ``"skip"`` for corrupt rows.
        where: Names the store(s) in error messages.

    Raises:
        CorruptSampleError: A damaged record under ``on_error="raise"``.
        StorageError: Clips of different shapes in one batch.
    """
    good = [r for r in rows if r.error is None]
    batch = RawBatch(normalized=convert is not None)
    if good:
        shape, dtype = _clip_layout(good[0])
        for row in good[1:]:
            if _clip_layout(row) != (shape, dtype):
                raise StorageError(
                    f"{where}: clips in one batch differ: {good[0].key!r} is {dtype} {shape}, {row.key!r} is "
                    f"{_clip_layout(row)[1]} {_clip_layout(row)[0]}; use a transform that crops/pads to one shape"
                )
        coeffs = convert.coefficients(shape[0], np.issubdtype(dtype, np.integer)) if convert is not None else None
        out_dtype = torch.float32 if coeffs is not None else _torch_dtype(dtype)
        data = allocate((len(good),) + shape, out_dtype)
        lengths = [_audio_length(r) for r in good]
        with_audio = has_audio or any(n is not None for n in lengths)
        lengths = [n or 0 for n in lengths]
        audio = allocate((len(good), 1, max(lengths, default=0)), torch.float32) if with_audio else None
        data_np = data.numpy()
        audio_np = audio.numpy() if audio is not None else None

        def fill(slot: int) -> CorruptSampleError | None:
            try:
                _fill(good[slot], data_np[slot], None if audio_np is None else audio_np[slot, 0], coeffs)
            except CorruptSampleError as exc:
                return exc
            return None

        if pool is None or len(good) == 1:
            errors = [fill(i) for i in range(len(good))]
        else:
            futures = [pool.submit(fill, i) for i in range(len(good))]
            errors = [f.result() for f in futures]  # waits for every copy, even after a failure
        for row, err in zip(good, errors):
            row.error = err
        keep = [i for i, err in enumerate(errors) if err is None]
        if len(keep) < len(good):
            data, audio, lengths = _compact(data, audio, lengths, keep)
            good = [good[i] for i in keep]
        batch.data = data
        if audio is not None:
            batch.audio = audio
            batch.audio_lengths = torch.tensor(lengths, dtype=torch.int64)
    failed = [r for r in rows if r.error is not None]
    if failed and on_error == "raise":
        raise failed[0].error  # type: ignore[misc]
    for row in failed:
        logger.warning("skipping corrupt sample %r: %s", row.key, row.error.reason)  # type: ignore[union-attr]
    batch.label = torch.tensor([r.label for r in good], dtype=torch.int64)
    batch.keys = [r.key for r in good]
    batch.metadata = [r.metadata for r in good]
    batch.skipped = [(r.key, r.error.reason) for r in failed]  # type: ignore[union-attr]
    return batch


def _fill(row: _Row, dst: np.ndarray, audio_dst: np.ndarray | None, convert: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Check one record and copy (or convert) its arrays into their batch slots."""
    clip = None
    if row.header is not None:
        header = row.header
        payload = memoryview(row.buf)[header.payload_offset :]
        spec = header.arrays["data"]
        direct = spec.codec == "raw" and dst.flags.c_contiguous
        # One pass over the stored bytes: each piece is copied (or converted), then hashed while in cache.
        copy_payload_into(payload, header, row.key, {"data": dst} if direct else None, affine=convert, verify=row.verify)
        if direct:
            convert = None
        else:
            clip = _array(payload, header, "data", row)
        audio = _array(payload, header, "audio", row) if "audio" in header.arrays else None
    else:
        assert row.sample is not None  # generic rows always carry their decoded sample
        clip = np.asarray(row.sample["data"])
        audio = row.sample.get("audio")
    if clip is not None:
        if convert is None:
            np.copyto(dst, clip, casting="unsafe")
        else:
            convert_clip_into(dst, clip, convert[0], convert[1])
    if audio_dst is not None:
        n = 0
        if audio is not None:
            flat = np.asarray(audio).reshape(-1)
            n = flat.size
            audio_dst[:n] = flat
        audio_dst[n:] = 0.0


def _array(payload: memoryview, header: RecordHeader, name: str, row: _Row) -> np.ndarray:
    """Array ``name`` of a record whose digest was already checked (raw: a view; else decoded)."""
    spec = header.arrays[name]
    if spec.codec == "raw":
        return raw_array(payload, spec, row.key)
    return decode_array(payload[spec.offset : spec.offset + spec.length], spec, row.key)


def _clip_layout(row: _Row) -> tuple[tuple[int, ...], np.dtype]:
    if row.header is not None:
        spec = row.header.arrays["data"]
        dtype = np.dtype(np.uint8) if spec.codec == "jpeg" else np.dtype(spec.dtype)
        return tuple(spec.shape), dtype
    data = np.asarray(row.sample["data"])  # type: ignore[index]
    return tuple(data.shape), data.dtype


def _audio_length(row: _Row) -> int | None:
    if row.header is not None:
        spec = row.header.arrays.get("audio")
        return None if spec is None else int(np.prod(spec.shape, dtype=np.int64))
    audio = row.sample.get("audio")  # type: ignore[union-attr]
    return None if audio is None else int(np.asarray(audio).size)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    try:
        return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    except TypeError:
        raise StorageError(f"clips of dtype {dtype} cannot become tensors") from None


def _compact(data: torch.Tensor, audio: torch.Tensor | None, lengths: list[int], keep: list[int]) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    """Move the kept rows to the front of the buffers (rare: only after a skip)."""
    for dst, src in enumerate(keep):
        if dst != src:
            data[dst].copy_(data[src])
            if audio is not None:
                audio[dst].copy_(audio[src])
    data = data[: len(keep)]
    if audio is not None:
        audio = audio[: len(keep)]
    return data, audio, [lengths[i] for i in keep]
