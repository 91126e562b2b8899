"""Loader throughput: this project's loaders against a typical pickle-LMDB DataLoader and memcpy.

Everything runs in one process on stores built here:

* ``pickle_lmdb_w2``: the usual research-repo loader: LMDB values are
  ``pickle.dumps({"data": float32 clip, "label": ..., "metadata": ...})``,
  read by a map-style Dataset in 2 DataLoader worker processes and collated by
  ``default_collate``.
* ``loader_*``: :func:`~src.data.loaders.create_data_loader` variants on an
  :class:`~src.data.lmdb_storage.LMDBStorage` of the same clips as ``uint8``.
* ``memcpy``: ``np.copyto`` of each clip's bytes into a batch buffer, one
  thread: the bound for delivering raw clips.

Configurations are interleaved within each repeat and the median of the
repeats is reported, after one warm-up epoch of each.
"""

from __future__ import annotations

import logging
import pickle
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.lmdb_storage import LMDBStorage
from src.data.loaders import create_data_loader, default_num_workers

__all__ = [
    "BenchResult",
    "PickleLMDBDataset",
    "build_clip_store",
    "build_pickle_store",
    "memcpy_epoch",
    "run_loader_benchmark",
]

logger = logging.getLogger(__name__)


def _clip(index: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(index).integers(0, 256, size=shape, dtype=np.uint8)


def build_clip_store(path: str | Path, n: int, shape: tuple[int, ...]) -> None:
    """Write ``n`` synthetic ``uint8`` clips into an LMDB store of this project."""
    with LMDBStorage(path, readonly=False, map_size_gb=max(0.1, 1.5 * n * int(np.prod(shape)) / 1024**3)) as store:
        for i in range(n):
            label = int(i % 10 != 0)
            store.store_sample(f"sample_{i + 1:06d}", {"data": _clip(i, shape), "label": label, "metadata": {"method": "real" if label == 0 else "fsgan"}})


def build_pickle_store(path: str | Path, n: int, shape: tuple[int, ...]) -> None:
    """Write the same clips the usual way: pickled dicts of float32 arrays in a plain LMDB."""
    nbytes = n * int(np.prod(shape)) * 4
    env = lmdb.open(str(path), map_size=int(nbytes * 1.5) + (64 << 20), subdir=True)
    try:
        for start in range(0, n, 16):
            with env.begin(write=True) as txn:
                for i in range(start, min(n, start + 16)):
                    sample = {"data": _clip(i, shape).astype(np.float32) / 255.0, "label": int(i % 10 != 0), "metadata": {"method": "fsgan"}}
                    txn.put(f"{i:08d}".encode(), pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))
    finally:
        env.close()


class PickleLMDBDataset(Dataset):
    """The typical research-repo Dataset: one pickled dict per LMDB value, opened lazily per worker."""

    def __init__(self, path: str | Path, n: int) -> None:
        self.path = str(path)
        self.n = n
        self.env: lmdb.Environment | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.env is None:
            self.env = lmdb.open(self.path, readonly=True, lock=False, readahead=False, subdir=True)
        with self.env.begin() as txn:
            sample = pickle.loads(txn.get(f"{index:08d}".encode()))  # noqa: S301 - the baseline being measured
        return {"data": torch.from_numpy(sample["data"]), "label": sample["label"]}


def memcpy_epoch(n: int, shape: tuple[int, ...], batch_size: int, pool_size: int = 48) -> Callable[[], int]:
    """An epoch of the memcpy bound: copy ``n`` clips' bytes into a batch buffer, one thread."""
    sources = [_clip(i, shape) for i in range(min(n, pool_size))]
    buffer = np.empty((batch_size,) + tuple(shape), dtype=np.uint8)

    def epoch() -> int:
        for i in range(n):
            np.copyto(buffer[i % batch_size], sources[i % len(sources)])
        return n

    return epoch


def _drain(batches: Iterable[dict[str, Any]], sync: bool) -> int:
    n = 0
    for batch in batches:
        n += int(batch["data"].shape[0])
    if sync:
        torch.cuda.synchronize()
    return n


@dataclass
class BenchResult:
    """Clips per second of each configuration, per repeat."""

    clip_mb: float
    runs: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        """Median clips/s of ``name``."""
        return statistics.median(self.runs[name])

    def rows(self) -> Iterator[tuple[str, str, float, str]]:
        """``(name, metric, value, unit)`` rows: clips/s and MB/s per configuration, then ratios."""
        for name in self.runs:
            clips = self.median(name)
            yield name, "clips_per_s", clips, "clips/s"
            yield name, "mb_per_s", clips * self.clip_mb, "MB/s"
        for name, (num, den) in self.ratio_pairs().items():
            if num in self.runs and den in self.runs:
                yield "ratio", name, self.median(num) / self.median(den), "x"

    @staticmethod
    def ratio_pairs() -> dict[str, tuple[str, str]]:
        """Ratio name -> (numerator, denominator)."""
        return {
            "default_vs_pickle": ("loader_default", "pickle_lmdb_w2"),
            "default_vs_memcpy": ("loader_default", "memcpy"),
            "raw_vs_memcpy": ("loader_raw_uint8", "memcpy"),
            "cuda_vs_memcpy": ("loader_cuda", "memcpy"),
            "cuda_vs_pickle_cuda": ("loader_cuda", "pickle_lmdb_w2_cuda"),
        }


def run_loader_benchmark(
    workdir: str | Path,
    n: int = 192,
    shape: tuple[int, ...] = (3, 16, 224, 224),
    batch_size: int = 32,
    repeats: int = 3,
    include_pickle: bool = True,
    cuda: bool | None = None,
) -> BenchResult:
    """Build the stores under ``workdir`` and measure every configuration.

    Args:
        workdir: An empty scratch directory (stores are written there).
        n: Clips per store.
        shape: Clip shape (C, T, H, W).
        batch_size: Batch size of every loader.
        repeats: Timed epochs per configuration (interleaved).
        include_pickle: Measure the pickle-LMDB baseline.
        cuda: Also measure delivery to CUDA (default: when available).

    Returns:
        The per-repeat clips/s of each configuration.
    """
    workdir = Path(workdir)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    store = workdir / "clips.lmdb"
    build_clip_store(store, n, shape)
    pickled = workdir / "pickle.lmdb"
    if include_pickle:
        build_pickle_store(pickled, n, shape)

    threads = default_num_workers()
    loaders: dict[str, Any] = {
        "loader_default": create_data_loader(store, batch_size=batch_size),
        "loader_workers0": create_data_loader(store, batch_size=batch_size, num_workers=0),
        "loader_threads2": create_data_loader(store, batch_size=batch_size, num_workers=2),
        "loader_processes2": create_data_loader(store, batch_size=batch_size, num_workers=2, worker_type="process"),
        "loader_raw_uint8": create_data_loader(store, batch_size=batch_size, normalize=False),
    }
    configs: dict[str, Callable[[], int]] = {name: (lambda loader=loader: _drain(loader, False)) for name, loader in loaders.items()}
    if cuda:
        loaders["loader_cuda"] = create_data_loader(store, batch_size=batch_size, target_device="cuda")
        configs["loader_cuda"] = lambda: _drain(loaders["loader_cuda"], True)
    if include_pickle:
        pickle_loader = DataLoader(PickleLMDBDataset(pickled, n), batch_size=batch_size, shuffle=True, num_workers=2)
        configs["pickle_lmdb_w2"] = lambda: _drain(pickle_loader, False)
        if cuda:
            pickle_cuda = DataLoader(PickleLMDBDataset(pickled, n), batch_size=batch_size, shuffle=True, num_workers=2, pin_memory=True)

            def pickle_to_cuda() -> int:
                count = 0
                for batch in pickle_cuda:
                    count += int(batch["data"].to("cuda", non_blocking=True).shape[0])
                torch.cuda.synchronize()
                return count

            configs["pickle_lmdb_w2_cuda"] = pickle_to_cuda
    configs["memcpy"] = memcpy_epoch(n, shape, batch_size)
    logger.info("default loader: %d reader threads; configurations: %s", threads, ", ".join(configs))

    result = BenchResult(clip_mb=int(np.prod(shape)) / 1e6)
    for run in configs.values():  # warm-up: page cache, maps, worker start-up code paths
        run()
    for repeat in range(repeats):
        for name, run in configs.items():
            start = time.perf_counter()
            count = run()
            elapsed = time.perf_counter() - start
            result.runs.setdefault(name, []).append(count / elapsed)
            logger.info("repeat %d %s: %.1f clips/s", repeat, name, count / elapsed)
    for loader in loaders.values():
        loader.close()
    return result
