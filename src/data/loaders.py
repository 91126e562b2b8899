"""Training loaders: the spec's ``create_data_loader`` / ``create_train_val_loaders``.

A batch is a dict::

    data           float32 (batch, channels, frames, height, width) on the target
                   device, normalised ((x - mean) / std; the store's recorded
                   ``loader:`` mean/std, else ImageNet's)
    label          int64 (batch,)
    audio          float32 (batch, 1, samples), zero-padded (when the store has audio)
    audio_lengths  int64 (batch,)                           (when the store has audio)
    key            list of sample keys
    metadata       list of metadata dicts

Two paths, chosen by whether a per-sample ``transform`` is given:

* **Fast path** (no transform): whole batches are read at once into one
  buffer (:meth:`~src.data.dataset.ClipDataset.read_batch`), by a small pool
  of reader *threads* in the main process (``worker_type="thread"``, the
  default) or by DataLoader worker processes (``worker_type="process"``).
  Clips stay ``uint8`` until the end: for CUDA they are read into pinned
  buffers, copied with ``non_blocking=True`` and converted and normalised on
  the GPU; for the CPU the reader threads write normalised float32 straight
  from the LMDB map. Threads beat processes here because handing a batch from
  a worker process costs a fresh shared-memory segment per batch.
* **Per-sample path** (with a transform, e.g. the spec's ``CustomTransform``):
  worker processes (default) read and augment each sample, batches are
  collated as ``uint8`` (or whatever the transform returns) and finished on
  the target device in the main process. CUDA is never touched in a worker.

Each iteration is one epoch. Order is seeded: epoch ``e`` uses ``seed + e``;
``set_epoch(e)`` picks the next epoch explicitly (as with ``DistributedSampler``),
otherwise each new iteration advances the epoch by one.

Several stores (``db_path=[p1, p2, ...]``) read as one dataset
(:mod:`src.data.multi_store`); each batch's metadata then names every sample's
``dataset``, and ``balanced=True`` can even out datasets as well as labels.

Loaders are resumable and shard across ranks (:mod:`src.data.samplers`,
:mod:`src.data.state`): ``state_dict()`` / ``load_state_dict()`` follow
torchdata's ``StatefulDataLoader`` protocol, and a state saved mid-epoch
restores to exactly the rest of that epoch, on any number of reader threads,
worker processes or ranks.

This module is the facade and the wiring; the parts live in their own modules:
:mod:`src.data.loader_options` (options, normalisation precedence),
:mod:`src.data.memory` (allocators, pinned ring), :mod:`src.data.prefetch`
(the thread pipeline) and :mod:`src.data.batch` (the internal batch object).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from src.data.batch import RawBatch
from src.data.dataset import ClipDataset, SkippedSample
from src.data.loader_options import LOADER_OPTIONS, TRAIN_ONLY_OPTIONS, WORKER_TYPES, LoaderOptions, resolve_normalization
from src.data.memory import PinnedRing, RecyclingAllocator, worker_alloc
from src.data.multi_store import MultiStoreDataset, item_datasets
from src.data.prefetch import prefetch
from src.data.samplers import BalancedSampler, EpochSampler, GlobalOrderSampler
from src.data.state import LoaderState, dataset_fingerprint
from src.data.transforms import BatchFinisher, ClipAugmentation, LMDBDataTransform, resolve_device
from src.errors import ConfigError, CorruptSampleError, StorageError

__all__ = [
    "LOADER_OPTIONS",
    "WORKER_TYPES",
    "ClipLoader",
    "LoaderOptions",
    "LoaderStats",
    "RawBatch",
    "collate_samples",
    "create_data_loader",
    "create_train_val_loaders",
    "default_num_workers",
]

logger = logging.getLogger(__name__)

# Kept for code written against the single-module loader.
_PinnedRing = PinnedRing
_TRAIN_ONLY = TRAIN_ONLY_OPTIONS


def default_num_workers() -> int:
    """Reader threads / worker processes used when ``num_workers`` is not given: min(4, usable CPUs)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


@dataclass
class LoaderStats:
    """What a loader has delivered so far (all epochs).

    Attributes:
        batches: Batches yielded.
        samples: Samples yielded.
        skipped: Corrupt samples left out under ``on_error="skip"``.
        skipped_keys: Their keys, in the order met (repeats across epochs).
    """

    batches: int = 0
    samples: int = 0
    skipped: int = 0
    skipped_keys: list[str] = field(default_factory=list)


@dataclass
class _Progress:
    """How far the current (or last) iteration got, in batches yielded to the caller."""

    epoch: int
    start: int  # global position the iteration started from
    share: int  # indices of this rank's share in the iteration
    batches: int = 0  # batches consumed up to and including the last one yielded
    finished: bool = False


# ----------------------------------------------------------------------------- collation


def collate_samples(samples: Sequence[Any]) -> RawBatch:
    """Collate transformed samples into a :class:`~src.data.batch.RawBatch`; :class:`SkippedSample` entries are left out.

    Clips are stacked as they come (``uint8`` stays ``uint8``); inside a
    DataLoader worker the batch is built in shared memory directly. Audio is
    zero-padded to the longest clip. Other tensor fields are stacked when they
    share a shape, other values are gathered in lists (``RawBatch.extra``).
    :meth:`RawBatch.as_dict <src.data.batch.RawBatch.as_dict>` gives the batch dict.

    Raises:
        StorageError: Clips of different shapes or dtypes in one batch.
    """
    skipped = [(s.key, s.reason) for s in samples if isinstance(s, SkippedSample) and not s.error]
    errors = [(s.key, s.reason) for s in samples if isinstance(s, SkippedSample) and s.error]
    if errors:
        return RawBatch.failure(errors)
    samples = [s for s in samples if not isinstance(s, SkippedSample)]
    batch = RawBatch(keys=[s.get("key") for s in samples], metadata=[s.get("metadata", {}) for s in samples], skipped=skipped)
    if not samples:
        return batch
    clips = [s["data"] if isinstance(s["data"], torch.Tensor) else torch.as_tensor(s["data"]) for s in samples]
    first = clips[0]
    for key, clip in zip(batch.keys, clips):
        if clip.shape != first.shape or clip.dtype != first.dtype:
            raise StorageError(
                f"clips in one batch differ: {batch.keys[0]!r} is {first.dtype} {tuple(first.shape)}, {key!r} is "
                f"{clip.dtype} {tuple(clip.shape)}; make the transform return one shape"
            )
    data = worker_alloc((len(clips),) + tuple(first.shape), first.dtype)
    torch.stack(clips, out=data)
    batch.data = data
    batch.label = torch.tensor([int(s["label"]) for s in samples], dtype=torch.int64)
    audios = [s.get("audio") for s in samples]
    if any(a is not None for a in audios):
        lengths = [0 if a is None else int(a.numel()) for a in audios]
        audio = worker_alloc((len(samples), 1, max(lengths)), torch.float32)
        audio.zero_()
        for i, a in enumerate(audios):
            if a is not None:
                audio[i, 0, : lengths[i]] = a.reshape(-1)
        batch.audio = audio
        batch.audio_lengths = torch.tensor(lengths, dtype=torch.int64)
    for name in samples[0]:
        if name in ("data", "label", "audio", "audio_lengths", "key", "metadata"):
            continue
        values = [s.get(name) for s in samples]
        if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            batch.extra[name] = torch.stack(values)
        else:
            batch.extra[name] = values
    return batch


def _passthrough(batch: Any) -> Any:
    return batch


# DataLoader re-raises a worker's exception as ``type(msg)``, which a CorruptSampleError
# (key, reason) cannot survive; so workers hand corrupt-sample errors over as data and
# the main process raises them with their key.


class _BatchView(Dataset):
    """Hands DataLoader workers whole batches: ``__getitems__`` reads one batch at once."""

    def __init__(self, dataset: ClipDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> RawBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> RawBatch:
        try:
            return self.dataset.read_batch(list(indices), worker_alloc)
        except CorruptSampleError as exc:
            return RawBatch.failure([(exc.key, exc.reason)])


class _SampleView(Dataset):
    """Per-sample worker view of a dataset that hands corrupt-sample errors over as data."""

    def __init__(self, dataset: ClipDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except CorruptSampleError as exc:
            return SkippedSample(exc.key or self.dataset.keys[index], exc.reason, error=True)


# ----------------------------------------------------------------------------- loader


class ClipLoader:
    """Iterable of finished batches; one iteration is one epoch.

    Built by :func:`create_data_loader`; see the module docstring for the
    batch layout and the two reading paths.

    Attributes:
        dataset: The :class:`~src.data.dataset.ClipDataset` (or
            :class:`~src.data.multi_store.MultiStoreDataset` for several stores).
        sampler: The index sampler (has ``set_epoch``, ``state_dict``).
        batch_size: Samples per batch (the last may be smaller unless ``drop_last``).
        num_workers: Reader threads or worker processes.
        worker_type: ``"thread"`` or ``"process"``.
        device: Where batches are delivered.
        stats: A :class:`LoaderStats`.
        epoch: The epoch of the current (or last) iteration.
    """

    def __init__(
        self,
        dataset: ClipDataset,
        *,
        batch_size: int,
        sampler: Sampler[int],
        drop_last: bool,
        num_workers: int,
        worker_type: str,
        per_sample: bool,
        finisher: BatchFinisher,
        prefetch: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        multiprocessing_context: Any = None,
        timeout: float = 0.0,
    ) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.worker_type = worker_type
        self.per_sample = per_sample
        self.finisher = finisher
        self.device = finisher.device
        self.prefetch = prefetch
        self.pin_memory = pin_memory
        self.stats = LoaderStats()
        self.epoch: int | None = None
        self._next_epoch = 0
        self._progress: _Progress | None = None  # the current or last iteration
        self._pending: tuple[int, int] | None = None  # (epoch, position) loaded for the next iteration
        self._epoch_set = False  # set_epoch() was called since the last iteration started
        self._fingerprint: dict[str, Any] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._ring: PinnedRing | None = None
        self._allocate = RecyclingAllocator(prefetch + 3)  # batch buffers: in flight, queued, held by the caller
        self._batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self._dataloader: DataLoader | None = None
        if worker_type == "process":
            self._dataloader = DataLoader(
                _SampleView(dataset) if per_sample else _BatchView(dataset),
                batch_sampler=self._batch_sampler,
                collate_fn=collate_samples if per_sample else _passthrough,
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=persistent_workers,
                multiprocessing_context=multiprocessing_context,
                prefetch_factor=prefetch,
                timeout=timeout,
            )
        # Clips for the CPU are converted by the reader threads as they are copied out of the map.
        self._convert_in_reader = worker_type == "thread" and not per_sample and self.device.type == "cpu" and finisher.normalize

    # ------------------------------------------------------------------ public API

    @property
    def skipped(self) -> int:
        """Number of corrupt samples skipped so far (``on_error="skip"``)."""
        return self.stats.skipped

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its seeded order); later ones follow on.

        After :meth:`load_state_dict`, ``set_epoch`` with the loaded epoch keeps
        the loaded position (the ``DistributedSampler`` habit of calling it at
        the top of every epoch stays safe); another epoch starts from its beginning.
        """
        epoch = int(epoch)
        if self._pending is not None and self._pending[0] != epoch:
            logger.info("set_epoch(%d): the loaded state's position in epoch %d is dropped", epoch, self._pending[0])
            self._pending = None
            self._set_sampler(epoch, 0)
        self._next_epoch = epoch
        self._epoch_set = True

    def __len__(self) -> int:
        """Batches of the next (or current) iteration: after :meth:`load_state_dict`, what remains of the epoch."""
        return len(self._batch_sampler)

    # ------------------------------------------------------------------ state (torchdata's Stateful protocol)

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: a JSON-serialisable dict (format: :mod:`src.data.state`).

        Mid-iteration (or after leaving one early) it is the position reached
        by the batches yielded so far; batches read ahead but not yet yielded
        do not count. After a finished iteration it is the start of the next
        epoch. In a distributed job every rank's state is the same (the global
        position) when the ranks have yielded the same number of batches, as
        they do in lock-step training: saving rank 0's suffices.
        """
        sampler = self.sampler
        epoch, position, batches = self._next_epoch, 0, 0
        progress = self._progress
        if self._pending is not None:
            epoch, position = self._pending
        elif progress is not None and not progress.finished and not self._epoch_set:
            taken = min(progress.batches * self.batch_size, progress.share)
            epoch, batches = progress.epoch, progress.batches
            position = min(sampler.epoch_length, progress.start + taken * sampler.world_size)  # type: ignore[attr-defined]
        return LoaderState(
            epoch=epoch,
            position=position,
            epoch_length=sampler.epoch_length,  # type: ignore[attr-defined]
            order=sampler.order_spec(),  # type: ignore[attr-defined]
            dataset=self._dataset_id(),
            world_size=sampler.world_size,  # type: ignore[attr-defined]
            rank=sampler.rank,  # type: ignore[attr-defined]
            batch_size=self.batch_size,
            batches=batches,
            stats={"batches": self.stats.batches, "samples": self.stats.samples, "skipped": self.stats.skipped},
        ).to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue where ``state`` (from :meth:`state_dict`) was.

        The next iteration yields exactly the rest of the saved epoch (nothing,
        if it was saved after its last batch), in the same order, whatever the
        number of reader threads, worker processes, the batch size or the world
        size now; later iterations follow on with the next epochs.

        Raises:
            ConfigError: Not a loader state, or one saved for another dataset,
                seed, shuffle or sampler.
        """
        parsed = LoaderState.from_dict(state)
        sampler = self.sampler
        parsed.check_matches(sampler.order_spec(), sampler.epoch_length, self._dataset_id())  # type: ignore[attr-defined]
        self._pending = (parsed.epoch, parsed.position)
        self._next_epoch = parsed.epoch
        self._epoch_set = False
        self._set_sampler(parsed.epoch, parsed.position)
        for name in ("batches", "samples", "skipped"):
            if isinstance(parsed.stats.get(name), int):
                setattr(self.stats, name, parsed.stats[name])

    def _dataset_id(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = {"items": len(self.dataset), "fingerprint": dataset_fingerprint(self.dataset)}
        return dict(self._fingerprint)

    def _set_sampler(self, epoch: int, position: int) -> None:
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        if isinstance(self.sampler, GlobalOrderSampler):
            self.sampler.set_start(position)

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self._next_epoch
        self._next_epoch = epoch + 1
        self.epoch = epoch
        start = 0
        if self._pending is not None:
            start = self._pending[1] if self._pending[0] == epoch else 0
            self._pending = None
        self._set_sampler(epoch, start)
        progress = _Progress(epoch, start, len(self.sampler))  # type: ignore[arg-type]
        self._progress = progress
        self._epoch_set = False
        if self._dataloader is not None:
            # Worker processes open the store themselves: drop this process's handle first so a
            # forked worker does not inherit an open environment (LMDB forbids using one across fork).
            self.dataset.close()
            source: Iterator[RawBatch] = iter(self._dataloader)
        else:
            source = self._thread_batches(list(self._batch_sampler))
        try:
            consumed = 0
            for batch in source:
                finished = self._finish(batch)
                consumed += 1  # each raw batch is one batch of the sampler's, in order
                if finished is not None:
                    progress.batches = consumed  # counted before the caller has it: state_dict() in the loop body includes it
                    yield finished
            progress.batches = consumed
            progress.finished = True
        finally:
            # Shut non-persistent workers down now, not whenever a traceback holding this frame dies.
            close = getattr(source, "close", None)
            source = None
            if close is not None:
                close()

    def close(self) -> None:
        """Stop the reader threads and close the store handle (worker processes end with their iterator)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._dataloader = None
        self.dataset.close()

    def __enter__(self) -> ClipLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
        except Exception:
            pass

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.dataset.db_path)!r}, samples={len(self.dataset)}, batch_size={self.batch_size}, "
            f"{self.worker_type}s={self.num_workers}, device={str(self.device)!r})"
        )

    # ------------------------------------------------------------------ finishing

    def _finish(self, raw: RawBatch) -> dict[str, Any] | None:
        """Account for skipped samples, then unwrap ``raw`` into the user's dict and finish it on the device.

        The only place a :class:`~src.data.batch.RawBatch` becomes a batch dict:
        its bookkeeping (skips, errors, staging slot) stays here.
        """
        if raw.errors:
            self._release(raw, after_copy=False)
            raise CorruptSampleError(*raw.errors[0])
        for key, reason in raw.skipped:
            self.stats.skipped += 1
            self.stats.skipped_keys.append(key)
            logger.warning("skipped corrupt sample %r (%s); %d skipped so far", key, reason, self.stats.skipped)
        if not raw.keys:
            self._release(raw, after_copy=False)
            return None
        try:
            batch = self.finisher(raw.as_dict(), normalized=raw.normalized)
        finally:
            self._release(raw, after_copy=True)
        self.stats.batches += 1
        self.stats.samples += len(batch["key"])
        return batch

    def _release(self, raw: RawBatch, after_copy: bool) -> None:
        """Hand ``raw``'s staging slot back (once; a no-op without one)."""
        if raw.slot is not None and self._ring is not None:
            self._ring.release(raw.slot, after_copy=after_copy)
        raw.slot = None

    # ------------------------------------------------------------------ thread path

    def _ensure_pool(self) -> ThreadPoolExecutor | None:
        if self.num_workers > 0 and self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="clip-reader")
        if self.pin_memory and self.device.type == "cuda" and not self.per_sample and self._ring is None:
            # Staging buffers are reused, which is safe only because the batch then moves to the GPU.
            self._ring = PinnedRing(self.prefetch + 3, self.device)
        return self._pool

    def _produce(self, indices: list[int], stop: threading.Event | None = None) -> RawBatch | None:
        pool = self._ensure_pool()
        if self.per_sample:
            samples = list(pool.map(self.dataset.__getitem__, indices)) if pool is not None else [self.dataset[i] for i in indices]
            return collate_samples(samples)
        if self._ring is not None:
            slot = self._ring.acquire(stop)
            if slot is None:
                return None
            try:
                batch = self.dataset.read_batch(indices, self._ring.allocator(slot), pool=pool)
            except BaseException:
                self._ring.release(slot, after_copy=False)
                raise
            batch.slot = slot
            return batch
        convert = self.finisher.affine if self._convert_in_reader else None
        return self.dataset.read_batch(indices, self._allocate, pool=pool, convert=convert)

    def _thread_batches(self, batches: list[list[int]]) -> Iterator[RawBatch]:
        if self.num_workers == 0:
            for indices in batches:
                batch = self._produce(indices)
                if batch is not None:
                    yield batch
            return
        self._ensure_pool()
        yield from prefetch(
            batches,
            self._produce,
            depth=self.prefetch,
            drop=lambda batch: self._release(batch, after_copy=False),
            name="clip-loader-producer",
        )


# ----------------------------------------------------------------------------- builders


def _check_counts(batch_size: Any, num_workers: Any) -> int:
    """Check ``batch_size`` and ``num_workers``; returns the resolved ``num_workers``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an int >= 1; got {batch_size!r}")
    if num_workers is None:
        num_workers = default_num_workers()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be an int >= 0; got {num_workers!r}")
    return num_workers


def _transform_and_device(transform: Any, target_device: str | torch.device | None) -> tuple[LMDBDataTransform | None, torch.device]:
    """Wrap a plain callable as a :class:`ClipAugmentation`; pick the device (argument, else the transform's, else CPU)."""
    if transform is not None and not isinstance(transform, LMDBDataTransform):
        if not callable(transform):
            raise ConfigError(f"transform must be an LMDBDataTransform or a callable on clip tensors; got {transform!r}")
        transform = ClipAugmentation(transform, target_device if target_device is not None else "cpu")
    if target_device is None:
        return transform, transform.device if transform is not None else torch.device("cpu")
    device = resolve_device(target_device)
    if transform is not None and transform.device != device:
        logger.info("loader target_device %s overrides the transform's %s", device, transform.device)
    return transform, device


def _worker_policy(opts: LoaderOptions, per_sample: bool, num_workers: int, device: torch.device) -> tuple[str, bool]:
    """``(worker_type, pin_memory)``: threads for whole batches, processes for per-sample transforms."""
    worker_type = opts.worker_type
    if worker_type == "auto":
        worker_type = "process" if per_sample else "thread"
    if num_workers == 0:
        worker_type = "thread"  # read in the calling thread
    pin_memory = device.type == "cuda" if opts.pin_memory is None else opts.pin_memory
    if pin_memory and not torch.cuda.is_available():
        raise ConfigError("pin_memory=True needs CUDA, which is not available on this machine")
    if worker_type == "thread" and opts.persistent_workers:
        logger.debug("persistent_workers: reader threads always persist")
    return worker_type, pin_memory


def _finisher(opts: LoaderOptions, transform: LMDBDataTransform | None, dataset: ClipDataset | MultiStoreDataset, device: torch.device) -> BatchFinisher:
    """The batch finisher: device plus normalisation (see :func:`~src.data.loader_options.resolve_normalization`)."""
    storage = dataset.storages if isinstance(dataset, MultiStoreDataset) else dataset.storage
    mean, std = resolve_normalization(opts, transform, storage)
    normalize = opts.normalize if opts.normalize is not None else (transform.normalize if transform is not None else True)
    return BatchFinisher(device, mean, std, normalize)


def _dataset_groups(opts: LoaderOptions, dataset: ClipDataset | MultiStoreDataset) -> tuple[list[int], list[float] | None]:
    """Each item's dataset code (sorted names) and, with ``dataset_weights``, each code's weight."""
    names, codes = np.unique(item_datasets(dataset), return_inverse=True)
    if opts.dataset_weights is None:
        return codes.tolist(), None
    weights = dict(opts.dataset_weights)
    unknown = sorted(set(weights) - set(names.tolist()))
    missing = sorted(set(names.tolist()) - set(weights))
    if unknown or missing:
        raise ConfigError(
            f"dataset_weights must name each dataset of the loader exactly: {', '.join(names.tolist())}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    return codes.tolist(), [float(weights[n]) for n in names.tolist()]


def _sampler(opts: LoaderOptions, dataset: ClipDataset | MultiStoreDataset, shuffle: bool) -> Sampler[int]:
    """A :class:`BalancedSampler` with ``balanced=True``, else an :class:`EpochSampler`."""
    share = {"seed": opts.seed, "rank": opts.rank, "world_size": opts.world_size, "drop_last": opts.drop_last}
    if opts.balanced:
        if opts.balance_by == "label":
            return BalancedSampler(dataset.labels, opts.num_samples, **share)
        groups, weights = _dataset_groups(opts, dataset)
        labels = dataset.labels if opts.balance_by == "dataset_label" else None
        return BalancedSampler(labels, opts.num_samples, groups=groups, group_weights=weights, **share)
    return EpochSampler(len(dataset), shuffle, **share)


def _dataset(
    db_path: str | os.PathLike | Sequence[str | os.PathLike], transform: LMDBDataTransform | None, opts: LoaderOptions
) -> ClipDataset | MultiStoreDataset:
    subset = {name: getattr(opts, name) for name in ("keys", "labels", "categories", "methods", "exclude_methods")}
    common = {"on_error": opts.on_error, "verify": opts.verify, "storage_options": opts.storage_options}
    if isinstance(db_path, (list, tuple)):
        return MultiStoreDataset(db_path, transform, **common, **subset)
    return ClipDataset(db_path, transform, **common, **subset)


def create_data_loader(
    db_path: str | os.PathLike | Sequence[str | os.PathLike],
    transform: Callable[..., Any] | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    shuffle: bool = True,
    target_device: str | torch.device | None = None,
    **options: Any,
) -> ClipLoader:
    """Build a loader over a store of any format, or over several stores as one dataset.

    Args:
        db_path: Store path (``.../data.lmdb``, ``.h5``, ``.numpy``, ``.torch``),
            or a list of them (any mix of formats): read as one dataset whose
            batches mix the stores, each sample's metadata naming its
            ``dataset`` (see :mod:`src.data.multi_store`). Their clips must
            agree in shape and dtype, as stored or after ``transform``.
        transform: ``None`` for the fast whole-batch path; an
            :class:`~src.data.transforms.LMDBDataTransform` (gets the stored
            sample) or any callable on the clip tensor ``(C, T, H, W)`` such as a
            torchvision transform, for per-sample augmentation.
        batch_size: Samples per batch.
        num_workers: Reader threads (fast path) or worker processes (per-sample
            path); default :func:`default_num_workers`. 0 reads in the calling thread.
        shuffle: Shuffle each epoch (seeded).
        target_device: Where batches are delivered; default: the transform's
            ``target_device``, else ``"cpu"``.
        **options: The fields of :class:`~src.data.loader_options.LoaderOptions`:

            * ``seed`` (0): base seed; epoch ``e`` uses ``seed + e``.
            * ``drop_last`` (False): drop the last incomplete batch (and the
              uneven tail between distributed ranks).
            * ``balanced`` (False): draw with replacement so each label is
              equally likely; ``num_samples`` draws per epoch (default: size).
            * ``balance_by`` ("label"): with ``balanced``, even out
              ``"label"``, ``"dataset"`` or ``"dataset_label"`` (each dataset,
              then each label within it); ``dataset_weights``
              (``{name: weight}``) draws datasets in given proportions.
            * ``keys``, ``labels``, ``categories``, ``methods``,
              ``exclude_methods``: subset through the indexes.
            * ``on_error`` ("raise"): ``"skip"`` leaves corrupt samples out and
              counts them in ``loader.stats``.
            * ``verify`` (store's setting): check record checksums.
            * ``worker_type`` ("auto"): ``"thread"`` or ``"process"``; auto is
              threads without a transform, processes with one.
            * ``persistent_workers``, ``multiprocessing_context`` (``"fork"``,
              ``"spawn"``, ``"forkserver"``), ``timeout``: for worker processes.
            * ``prefetch`` (2): batches read ahead.
            * ``pin_memory`` (True for CUDA): pinned staging buffers.
            * ``mean``, ``std``, ``normalize`` (True): normalisation. Each of
              ``mean``/``std`` is, first match wins: this option; the
              transform's, if it was set explicitly; the store's recorded
              ``loader:`` section of the preprocessing config; ImageNet's.
            * ``rank``, ``world_size``: distributed share (default: from
              ``torch.distributed`` when initialised). Every rank reads one
              global order per ``(seed, epoch)``, whatever the world size,
              taking positions ``rank, rank + world_size, ...``; the uneven
              tail is padded (or dropped with ``drop_last``).
            * ``storage_options``: extra arguments for ``open_storage``.

    Returns:
        A :class:`ClipLoader` (``state_dict``/``load_state_dict`` to resume
        mid-epoch, ``set_epoch``).

    Raises:
        ConfigError: Unknown or invalid options, an unavailable device, an
            empty subset, stores whose clips disagree.
        StorageError: No readable store at ``db_path``.
    """
    opts = LoaderOptions.from_kwargs(options)
    num_workers = _check_counts(batch_size, num_workers)
    transform, device = _transform_and_device(transform, target_device)
    per_sample = transform is not None
    worker_type, pin_memory = _worker_policy(opts, per_sample, num_workers, device)
    dataset = _dataset(db_path, transform, opts)
    loader = ClipLoader(
        dataset,
        batch_size=batch_size,
        sampler=_sampler(opts, dataset, shuffle),
        drop_last=opts.drop_last,
        num_workers=num_workers,
        worker_type=worker_type,
        per_sample=per_sample,
        finisher=_finisher(opts, transform, dataset, device),
        prefetch=opts.prefetch,
        pin_memory=pin_memory,
        persistent_workers=opts.persistent_workers and worker_type == "process",
        multiprocessing_context=opts.multiprocessing_context,
        timeout=opts.timeout,
    )
    logger.info("%r", loader)
    return loader


def create_train_val_loaders(
    train_db_path: str | os.PathLike | Sequence[str | os.PathLike],
    val_db_path: str | os.PathLike | Sequence[str | os.PathLike],
    batch_size: int = 32,
    num_workers: int = 4,
    target_device: str | torch.device = "cuda",
    *,
    train_transform: Callable[..., Any] | None = None,
    val_transform: Callable[..., Any] | None = None,
    **options: Any,
) -> tuple[ClipLoader, ClipLoader]:
    """Build the training loader (shuffled) and the validation loader (in order).

    Args:
        train_db_path: Training store, or a list of stores read as one.
        val_db_path: Validation store, or a list of stores read as one.
        batch_size: Samples per batch (both loaders).
        num_workers: Reader threads / worker processes per loader.
        target_device: Where batches are delivered (``"cuda"`` needs a GPU).
        train_transform: Per-sample augmentation for training (optional).
        val_transform: Per-sample transform for validation (optional).
        **options: As for :func:`create_data_loader`; ``balanced``,
            ``num_samples``, ``balance_by``, ``dataset_weights`` and
            ``drop_last`` apply to training only.

    Returns:
        ``(train_loader, val_loader)``.

    Raises:
        ConfigError: Invalid options or an unavailable device.
    """
    LoaderOptions.from_kwargs(options)
    resolve_device(target_device)
    train_loader = create_data_loader(train_db_path, train_transform, batch_size, num_workers, True, target_device, **options)
    val_options = {k: v for k, v in options.items() if k not in TRAIN_ONLY_OPTIONS}
    val_loader = create_data_loader(val_db_path, val_transform, batch_size, num_workers, False, target_device, **val_options)
    return train_loader, val_loader
