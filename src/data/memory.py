"""Batch memory: huge-page CPU buffers, recycled regions, shared memory for workers, pinned staging rings.

Allocators share one signature, ``(shape, dtype) -> torch.Tensor`` (uninitialised,
contiguous, CPU), so the batch readers take any of them:

* :func:`alloc_cpu`: a fresh tensor, large ones on transparent huge pages.
* :class:`RecyclingAllocator`: a few reusable regions, reused only when provably free.
* :func:`shared_alloc` / :func:`worker_alloc`: shared memory inside DataLoader
  workers, so a batch crosses to the main process without another copy.
* :class:`PinnedRing`: reusable pinned staging buffers for CUDA batches.
"""

from __future__ import annotations

import mmap
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = [
    "Allocator",
    "PinnedRing",
    "RecyclingAllocator",
    "alloc_cpu",
    "shared_alloc",
    "worker_alloc",
]

#: ``(shape, dtype) -> uninitialised CPU tensor``.
Allocator = Callable[[Sequence[int], torch.dtype], torch.Tensor]

_HUGE_MIN_BYTES = 8 * 1024 * 1024


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


def alloc_cpu(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """Allocate an uninitialised CPU tensor; large ones on transparent huge pages.

    A fresh multi-megabyte allocation costs one page fault per 4 KiB page on its
    first write, which on virtual machines is slower than the write itself.
    Backing large tensors by an anonymous mapping advised ``MADV_HUGEPAGE``
    replaces ~500 faults per 2 MiB by one. The tensor keeps the mapping alive
    and releases it when the last view is gone.

    Args:
        shape: Tensor shape.
        dtype: Tensor dtype.

    Returns:
        A contiguous, writable CPU tensor.
    """
    shape = tuple(int(s) for s in shape)
    nbytes = _nbytes(shape, dtype)
    if nbytes < _HUGE_MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=dtype)
    try:
        region = _huge_region(nbytes)
    except (OSError, ValueError):
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(region, dtype=dtype).view(shape)


def _huge_region(nbytes: int) -> mmap.mmap:
    region = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            region.madvise(mmap.MADV_HUGEPAGE)
        except (OSError, ValueError):
            pass
    return region


class RecyclingAllocator:
    """Hands out CPU tensors over a few reusable memory regions, reusing one only when it is free.

    Page faults of fresh multi-megabyte buffers cost more than filling them, so
    batch buffers are recycled, the way ffcv reuses its batch memory, but
    safely: every tensor built over a region holds a reference to it (through
    its storage, whatever views or numpy arrays are made of it), so a region
    whose reference count is back to the pool's own is provably unused. A
    batch the caller keeps is never overwritten; while all regions are busy a
    fresh one is made (and kept only up to ``max_regions``).

    Args:
        max_regions: Regions kept for reuse.
    """

    _ROUND = 2 * 1024 * 1024

    def __init__(self, max_regions: int = 4) -> None:
        self.max_regions = max(1, int(max_regions))
        self._regions: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def _free_region(self, nbytes: int) -> mmap.mmap | None:
        for region in self._regions:
            # References: the list, this loop variable and getrefcount's argument.
            if len(region) >= nbytes and sys.getrefcount(region) <= 3:
                return region
        return None

    def __call__(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` and ``dtype`` (contents are stale bytes)."""
        shape = tuple(int(s) for s in shape)
        nbytes = _nbytes(shape, dtype)
        if nbytes < _HUGE_MIN_BYTES:
            return torch.empty(shape, dtype=dtype)
        with self._lock:
            region = self._free_region(nbytes)
            if region is None:
                region = _huge_region(-(-nbytes // self._ROUND) * self._ROUND)
                if len(self._regions) < self.max_regions:
                    self._regions.append(region)
                elif self._regions:
                    # Forget a busy region: its memory goes back to the OS when its holder lets go.
                    self._regions.pop(0)
                    self._regions.append(region)
            tensor = torch.frombuffer(region, dtype=torch.uint8, count=nbytes)
        return tensor.view(dtype).view(shape)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_regions": self.max_regions, "_regions": [], "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def shared_alloc(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor in shared memory, so a worker hands it over without another copy."""
    shape = tuple(int(s) for s in shape)
    numel = int(np.prod(shape, dtype=np.int64))
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(numel, device=elem.device)  # as default_collate does
    return elem.new(storage).resize_(shape)


def worker_alloc(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """:func:`shared_alloc` inside a DataLoader worker process, :func:`alloc_cpu` elsewhere."""
    return shared_alloc(shape, dtype) if get_worker_info() is not None else alloc_cpu(shape, dtype)


class PinnedRing:
    """Reusable pinned staging buffers for CUDA batches; a slot is reused only after its copy ran.

    Args:
        slots: Number of slots (batches in flight at most).
        device: The batches' target device; on CUDA a released slot waits for its copies.
        pin: Page-lock the buffers (False only for tests on machines without CUDA).
    """

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

    def allocator(self, slot: int) -> Allocator:
        """An allocator handing out this slot's buffers in call order, grown as needed."""
        buffers = self._buffers[slot]
        calls = [0]

        def allocate(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
            i = calls[0]
            calls[0] += 1
            shape = tuple(int(s) for s in shape)
            nbytes = _nbytes(shape, dtype)
            if i >= len(buffers):
                buffers.append(torch.empty(0, dtype=torch.uint8))
            if buffers[i].numel() < nbytes:
                buffers[i] = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=self.pin)
            return buffers[i][:nbytes].view(dtype).view(shape)

        return allocate
