"""Training loaders: the spec's ``create_data_loader`` / ``create_train_val_loaders``.

A batch is a dict::

    data           float32 (batch, channels, frames, height, width) on the target
                   device, normalised ((x - mean) / std, ImageNet's by default)
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
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, get_worker_info

from src.data.dataset import ClipDataset, SkippedSample
from src.data.samplers import BalancedSampler, EpochSampler
from src.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchFinisher,
    ClipAugmentation,
    LMDBDataTransform,
    RecyclingAllocator,
    alloc_cpu,
    resolve_device,
)
from src.errors import ConfigError, CorruptSampleError, StorageError

__all__ = [
    "LOADER_OPTIONS",
    "WORKER_TYPES",
    "ClipLoader",
    "LoaderStats",
    "collate_samples",
    "create_data_loader",
    "create_train_val_loaders",
    "default_num_workers",
]

logger = logging.getLogger(__name__)

WORKER_TYPES = ("auto", "thread", "process")

#: Every option ``create_data_loader`` accepts through ``**options``, with its default.
LOADER_OPTIONS: dict[str, Any] = {
    "seed": 0,
    "drop_last": False,
    "balanced": False,
    "num_samples": None,
    "keys": None,
    "labels": None,
    "categories": None,
    "methods": None,
    "exclude_methods": None,
    "on_error": "raise",
    "verify": None,
    "worker_type": "auto",
    "persistent_workers": False,
    "multiprocessing_context": None,
    "prefetch": 2,
    "pin_memory": None,
    "timeout": 0.0,
    "mean": None,
    "std": None,
    "normalize": None,
    "rank": None,
    "world_size": None,
    "storage_options": None,
}

# Options that make no sense for a validation loader; create_train_val_loaders keeps them to training.
_TRAIN_ONLY = ("balanced", "num_samples", "drop_last")


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


# ----------------------------------------------------------------------------- allocation


def _shared_alloc(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor in shared memory, so a worker hands it over without another copy."""
    shape = tuple(int(s) for s in shape)
    numel = int(np.prod(shape, dtype=np.int64))
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(numel, device=elem.device)  # as default_collate does
    return elem.new(storage).resize_(shape)


def _worker_alloc(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    return _shared_alloc(shape, dtype) if get_worker_info() is not None else alloc_cpu(shape, dtype)


class _PinnedRing:
    """Reusable pinned staging buffers for CUDA batches; a slot is reused only after its copy ran."""

    def __init__(self, slots: int, device: torch.device, pin: bool = True) -> None:
        self.device = device
        self.pin = pin
        self._free: queue.Queue = queue.Queue()
        self._buffers: list[list[torch.Tensor]] = [[] for _ in range(slots)]
        for i in range(slots):
            self._free.put((i, None))

    def acquire(self, stop: threading.Event | None = None) -> int | None:
        """Wait for a free slot (None when ``stop`` is set first)."""
        while True:
            try:
                slot, event = self._free.get(timeout=0.1)
            except queue.Empty:
                if stop is not None and stop.is_set():
                    return None
                continue
            if event is not None:
                event.synchronize()
            return slot

    def release(self, slot: int, after_copy: bool) -> None:
        """Give ``slot`` back; with ``after_copy`` it is reused only once the queued copies are done."""
        event = None
        if after_copy and self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))  # the stream the copies were queued on
        self._free.put((slot, event))

    def allocator(self, slot: int) -> Callable[[Sequence[int], torch.dtype], torch.Tensor]:
        """An allocator handing out this slot's buffers in call order, grown as needed."""
        buffers = self._buffers[slot]
        calls = [0]

        def allocate(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
            i = calls[0]
            calls[0] += 1
            shape = tuple(int(s) for s in shape)
            nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
            if i >= len(buffers):
                buffers.append(torch.empty(0, dtype=torch.uint8))
            if buffers[i].numel() < nbytes:
                buffers[i] = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=self.pin)
            return buffers[i][:nbytes].view(dtype).view(shape)

        return allocate


# ----------------------------------------------------------------------------- collation


def collate_samples(samples: Sequence[Any]) -> dict[str, Any]:
    """Collate transformed samples into a batch; :class:`SkippedSample` entries are left out.

    Clips are stacked as they come (``uint8`` stays ``uint8``); inside a
    DataLoader worker the batch is built in shared memory directly. Audio is
    zero-padded to the longest clip. Other tensor fields are stacked when they
    share a shape, other values are gathered in lists.

    Raises:
        StorageError: Clips of different shapes or dtypes in one batch.
    """
    skipped = [(s.key, s.reason) for s in samples if isinstance(s, SkippedSample) and not s.error]
    errors = [(s.key, s.reason) for s in samples if isinstance(s, SkippedSample) and s.error]
    samples = [s for s in samples if not isinstance(s, SkippedSample)]
    batch: dict[str, Any] = {"key": [s.get("key") for s in samples], "metadata": [s.get("metadata", {}) for s in samples], "_skipped": skipped}
    if errors:
        return {"key": [], "_errors": errors}
    if not samples:
        batch["label"] = torch.empty(0, dtype=torch.int64)
        return batch
    clips = [s["data"] if isinstance(s["data"], torch.Tensor) else torch.as_tensor(s["data"]) for s in samples]
    first = clips[0]
    for key, clip in zip(batch["key"], clips):
        if clip.shape != first.shape or clip.dtype != first.dtype:
            raise StorageError(
                f"clips in one batch differ: {batch['key'][0]!r} is {first.dtype} {tuple(first.shape)}, {key!r} is "
                f"{clip.dtype} {tuple(clip.shape)}; make the transform return one shape"
            )
    data = _worker_alloc((len(clips),) + tuple(first.shape), first.dtype)
    torch.stack(clips, out=data)
    batch["data"] = data
    batch["label"] = torch.tensor([int(s["label"]) for s in samples], dtype=torch.int64)
    audios = [s.get("audio") for s in samples]
    if any(a is not None for a in audios):
        lengths = [0 if a is None else int(a.numel()) for a in audios]
        audio = _worker_alloc((len(samples), 1, max(lengths)), torch.float32)
        audio.zero_()
        for i, a in enumerate(audios):
            if a is not None:
                audio[i, 0, : lengths[i]] = a.reshape(-1)
        batch["audio"] = audio
        batch["audio_lengths"] = torch.tensor(lengths, dtype=torch.int64)
    for name in samples[0]:
        if name in batch or name in ("data", "label", "audio"):
            continue
        values = [s.get(name) for s in samples]
        if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            batch[name] = torch.stack(values)
        else:
            batch[name] = values
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

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        try:
            return self.dataset.read_batch(list(indices), _worker_alloc)
        except CorruptSampleError as exc:
            return {"key": [], "_errors": [(exc.key, exc.reason)]}


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


class _End:
    pass


@dataclass
class _Failure:
    exc: BaseException


class ClipLoader:
    """Iterable of finished batches; one iteration is one epoch.

    Built by :func:`create_data_loader`; see the module docstring for the
    batch layout and the two reading paths.

    Attributes:
        dataset: The :class:`~src.data.dataset.ClipDataset`.
        sampler: The index sampler (has ``set_epoch``).
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
        self._pool: ThreadPoolExecutor | None = None
        self._ring: _PinnedRing | None = None
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
        """Make the next iteration epoch ``epoch`` (its seeded order); later ones follow on."""
        self._next_epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._batch_sampler)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self._next_epoch
        self._next_epoch = epoch + 1
        self.epoch = epoch
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        if self._dataloader is not None:
            # Worker processes open the store themselves: drop this process's handle first so a
            # forked worker does not inherit an open environment (LMDB forbids using one across fork).
            self.dataset.close()
            source: Iterator[dict[str, Any]] = iter(self._dataloader)
        else:
            source = self._thread_batches(list(self._batch_sampler))
        try:
            for batch in source:
                finished = self._finish(batch)
                if finished is not None:
                    yield finished
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

    def _finish(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        errors = batch.pop("_errors", ())
        if errors:
            raise CorruptSampleError(*errors[0])
        skipped = batch.pop("_skipped", ())
        slot = batch.pop("_slot", None)
        normalized = batch.pop("_normalized", False)
        for key, reason in skipped:
            self.stats.skipped += 1
            self.stats.skipped_keys.append(key)
            logger.warning("skipped corrupt sample %r (%s); %d skipped so far", key, reason, self.stats.skipped)
        if not batch.get("key"):
            if slot is not None and self._ring is not None:
                self._ring.release(slot, after_copy=False)
            return None
        try:
            batch = self.finisher(batch, normalized=normalized)
        finally:
            if slot is not None and self._ring is not None:
                self._ring.release(slot, after_copy=True)
        self.stats.batches += 1
        self.stats.samples += len(batch["key"])
        return batch

    # ------------------------------------------------------------------ thread path

    def _ensure_pool(self) -> ThreadPoolExecutor | None:
        if self.num_workers > 0 and self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="clip-reader")
        if self.pin_memory and self.device.type == "cuda" and not self.per_sample and self._ring is None:
            # Staging buffers are reused, which is safe only because the batch then moves to the GPU.
            self._ring = _PinnedRing(self.prefetch + 3, self.device)
        return self._pool

    def _produce(self, indices: list[int], stop: threading.Event | None = None) -> dict[str, Any] | None:
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
            batch["_slot"] = slot
            return batch
        convert = self.finisher.affine if self._convert_in_reader else None
        batch = self.dataset.read_batch(indices, self._allocate, pool=pool, convert=convert)
        batch["_normalized"] = convert is not None
        return batch

    def _thread_batches(self, batches: list[list[int]]) -> Iterator[dict[str, Any]]:
        if self.num_workers == 0:
            for indices in batches:
                batch = self._produce(indices)
                if batch is not None:
                    yield batch
            return
        self._ensure_pool()
        out: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce_all() -> None:
            try:
                for indices in batches:
                    if stop.is_set():
                        return
                    batch = self._produce(indices, stop)
                    if batch is None or not put(batch):
                        if batch is not None:
                            self._drop(batch)
                        return
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put(_Failure(exc))
            finally:
                put(_End())

        producer = threading.Thread(target=produce_all, name="clip-loader-producer", daemon=True)
        producer.start()
        try:
            while True:
                item = out.get()
                if isinstance(item, _End):
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            stop.set()
            producer.join()
            while True:
                try:
                    item = out.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, dict):
                    self._drop(item)

    def _drop(self, batch: dict[str, Any]) -> None:
        slot = batch.pop("_slot", None)
        if slot is not None and self._ring is not None:
            self._ring.release(slot, after_copy=False)


# ----------------------------------------------------------------------------- builders


def _check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(LOADER_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown loader option(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(LOADER_OPTIONS)}")
    opts = {**LOADER_OPTIONS, **options}
    if opts["worker_type"] not in WORKER_TYPES:
        raise ConfigError(f"invalid worker_type {opts['worker_type']!r}; must be one of {', '.join(WORKER_TYPES)}")
    if not isinstance(opts["prefetch"], int) or opts["prefetch"] < 1:
        raise ConfigError(f"prefetch must be an int >= 1; got {opts['prefetch']!r}")
    ctx = opts["multiprocessing_context"]
    if isinstance(ctx, str) and ctx not in multiprocessing.get_all_start_methods():
        raise ConfigError(f"invalid multiprocessing_context {ctx!r}; must be one of {', '.join(multiprocessing.get_all_start_methods())}")
    if opts["timeout"] < 0:
        raise ConfigError(f"timeout must be >= 0; got {opts['timeout']!r}")
    return opts


def create_data_loader(
    db_path: str | os.PathLike,
    transform: Callable[..., Any] | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    shuffle: bool = True,
    target_device: str | torch.device | None = None,
    **options: Any,
) -> ClipLoader:
    """Build a loader over a store of any format.

    Args:
        db_path: Store path (``.../data.lmdb``, ``.h5``, ``.numpy``, ``.torch``).
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
        **options: See :data:`LOADER_OPTIONS`:

            * ``seed`` (0): base seed; epoch ``e`` uses ``seed + e``.
            * ``drop_last`` (False): drop the last incomplete batch (and the
              uneven tail between distributed ranks).
            * ``balanced`` (False): draw with replacement so each label is
              equally likely; ``num_samples`` draws per epoch (default: size).
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
            * ``mean``, ``std`` (ImageNet's), ``normalize`` (True): normalisation.
            * ``rank``, ``world_size``: distributed share (default: from
              ``torch.distributed`` when initialised).
            * ``storage_options``: extra arguments for ``open_storage``.

    Returns:
        A :class:`ClipLoader`.

    Raises:
        ConfigError: Unknown or invalid options, an unavailable device, an
            empty subset.
        StorageError: No readable store at ``db_path``.
    """
    opts = _check_options(options)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an int >= 1; got {batch_size!r}")
    if num_workers is None:
        num_workers = default_num_workers()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be an int >= 0; got {num_workers!r}")

    if transform is not None and not isinstance(transform, LMDBDataTransform):
        if not callable(transform):
            raise ConfigError(f"transform must be an LMDBDataTransform or a callable on clip tensors; got {transform!r}")
        transform = ClipAugmentation(transform, target_device if target_device is not None else "cpu")
    if target_device is not None:
        device = resolve_device(target_device)
        if transform is not None and transform.device != device:
            logger.info("loader target_device %s overrides the transform's %s", device, transform.device)
    else:
        device = transform.device if transform is not None else torch.device("cpu")
    base = transform if transform is not None else LMDBDataTransform()
    finisher = BatchFinisher(
        device,
        opts["mean"] if opts["mean"] is not None else (base.mean if transform is not None else IMAGENET_MEAN),
        opts["std"] if opts["std"] is not None else (base.std if transform is not None else IMAGENET_STD),
        opts["normalize"] if opts["normalize"] is not None else base.normalize,
    )

    per_sample = transform is not None
    worker_type = opts["worker_type"]
    if worker_type == "auto":
        worker_type = "process" if per_sample else "thread"
    if num_workers == 0:
        worker_type = "thread"  # read in the calling thread
    pin_memory = device.type == "cuda" if opts["pin_memory"] is None else bool(opts["pin_memory"])
    if pin_memory and not torch.cuda.is_available():
        raise ConfigError("pin_memory=True needs CUDA, which is not available on this machine")

    dataset = ClipDataset(
        db_path,
        transform,
        keys=opts["keys"],
        labels=opts["labels"],
        categories=opts["categories"],
        methods=opts["methods"],
        exclude_methods=opts["exclude_methods"],
        on_error=opts["on_error"],
        verify=opts["verify"],
        storage_options=opts["storage_options"],
    )
    if opts["balanced"]:
        sampler: Sampler[int] = BalancedSampler(
            dataset.labels, opts["num_samples"], seed=opts["seed"], rank=opts["rank"], world_size=opts["world_size"], drop_last=opts["drop_last"]
        )
    else:
        if opts["num_samples"] is not None:
            raise ConfigError("num_samples applies to balanced=True sampling only")
        sampler = EpochSampler(len(dataset), shuffle, seed=opts["seed"], rank=opts["rank"], world_size=opts["world_size"], drop_last=opts["drop_last"])
    if worker_type == "thread" and opts["persistent_workers"]:
        logger.debug("persistent_workers: reader threads always persist")
    loader = ClipLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=opts["drop_last"],
        num_workers=num_workers,
        worker_type=worker_type,
        per_sample=per_sample,
        finisher=finisher,
        prefetch=opts["prefetch"],
        pin_memory=pin_memory,
        persistent_workers=bool(opts["persistent_workers"]) and worker_type == "process",
        multiprocessing_context=opts["multiprocessing_context"],
        timeout=opts["timeout"],
    )
    logger.info("%r", loader)
    return loader


def create_train_val_loaders(
    train_db_path: str | os.PathLike,
    val_db_path: str | os.PathLike,
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
        train_db_path: Training store.
        val_db_path: Validation store.
        batch_size: Samples per batch (both loaders).
        num_workers: Reader threads / worker processes per loader.
        target_device: Where batches are delivered (``"cuda"`` needs a GPU).
        train_transform: Per-sample augmentation for training (optional).
        val_transform: Per-sample transform for validation (optional).
        **options: As for :func:`create_data_loader`; ``balanced``,
            ``num_samples`` and ``drop_last`` apply to training only.

    Returns:
        ``(train_loader, val_loader)``.

    Raises:
        ConfigError: Invalid options or an unavailable device.
    """
    _check_options(options)
    resolve_device(target_device)
    train_loader = create_data_loader(train_db_path, train_transform, batch_size, num_workers, True, target_device, **options)
    val_options = {k: v for k, v in options.items() if k not in _TRAIN_ONLY}
    val_loader = create_data_loader(val_db_path, val_transform, batch_size, num_workers, False, target_device, **val_options)
    return train_loader, val_loader

