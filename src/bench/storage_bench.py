"""Per-sample read latency and throughput of a store (any format).

Random access reads ``n`` distinct keys in a seeded random order; sequential
access reads the first ``n`` keys in key order. Each read is one
``retrieve_sample`` call (decode and checksum included), timed on its own.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from src.data.storage import open_storage
from src.errors import ConfigError

__all__ = ["benchmark_lmdb_performance", "benchmark_storage"]

logger = logging.getLogger(__name__)


def _sample_bytes(sample: dict[str, Any]) -> int:
    return sum(int(np.asarray(sample[name]).nbytes) for name in ("data", "audio") if sample.get(name) is not None)


def _summary(prefix: str, latencies: np.ndarray, nbytes: int) -> dict[str, float]:
    total = float(latencies.sum())
    return {
        f"avg_{prefix}_access_time_ms": float(latencies.mean() * 1e3),
        f"p50_{prefix}_access_time_ms": float(np.percentile(latencies, 50) * 1e3),
        f"p95_{prefix}_access_time_ms": float(np.percentile(latencies, 95) * 1e3),
        f"samples_per_second_{prefix}": len(latencies) / total if total > 0 else float("inf"),
        f"mb_per_second_{prefix}": nbytes / total / 1e6 if total > 0 else float("inf"),
    }


def benchmark_storage(db_path: str | os.PathLike, num_samples: int = 1000, *, seed: int = 0, warmup: int = 3, warm_cache: bool = True, **storage_options: Any) -> dict[str, Any]:
    """Time random and sequential single-sample reads of a store.

    Args:
        db_path: Store path (any format).
        num_samples: Samples to read per pattern; clamped to the store's size (logged).
        seed: Seed of the random order.
        warmup: Reads made (and not timed) before measuring.
        warm_cache: Read every benchmarked sample once first, so both patterns
            are measured with a warm page cache. False measures the first pass
            as it comes (cold for data not read recently).
        **storage_options: Passed to ``open_storage``.

    Returns:
        ``avg_random_access_time_ms``, ``avg_sequential_access_time_ms``,
        ``samples_per_second_random`` (the spec's keys), plus
        ``p50_*``/``p95_*`` latencies, ``samples_per_second_sequential``,
        ``mb_per_second_random``/``_sequential``, ``num_samples`` (used),
        ``requested_num_samples``, ``total_samples``, ``avg_sample_mb`` and ``format``.

    Raises:
        ConfigError: ``num_samples`` < 1 or an empty store.
        StorageError: No store at ``db_path``.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be an int >= 1; got {num_samples!r}")
    with open_storage(db_path, "r", **storage_options) as storage:
        keys = storage.get_all_keys()
        if not keys:
            raise ConfigError(f"{db_path}: the store is empty; nothing to benchmark")
        n = min(num_samples, len(keys))
        if n < num_samples:
            logger.info("%s: num_samples=%d exceeds the store's %d samples; benchmarking %d", db_path, num_samples, len(keys), n)
        rng = np.random.default_rng(seed)
        random_keys = [keys[i] for i in rng.permutation(len(keys))[:n]]
        # Warm the page cache over every sample either pass reads, so both patterns are
        # measured warm (otherwise whichever pass runs first pays the disk reads).
        if warm_cache:
            for key in keys[:n] + random_keys:
                storage.retrieve_sample(key, verify=False)
        for key in keys[: min(warmup, len(keys))]:
            storage.retrieve_sample(key)

        def timed(order: list[str]) -> tuple[np.ndarray, int]:
            latencies = np.empty(len(order))
            nbytes = 0
            for i, key in enumerate(order):
                start = time.perf_counter()
                sample = storage.retrieve_sample(key)
                latencies[i] = time.perf_counter() - start
                nbytes += _sample_bytes(sample)
            return latencies, nbytes

        random_lat, random_bytes = timed(random_keys)
        seq_lat, seq_bytes = timed(keys[:n])
        result: dict[str, Any] = {}
        result.update(_summary("random", random_lat, random_bytes))
        result.update(_summary("sequential", seq_lat, seq_bytes))
        result.update(
            num_samples=n,
            requested_num_samples=num_samples,
            total_samples=len(keys),
            avg_sample_mb=random_bytes / n / 1e6,
            format=storage.format,
        )
    return result


def benchmark_lmdb_performance(db_path: str | os.PathLike, num_samples: int = 1000, **options: Any) -> dict[str, Any]:
    """The spec's benchmark: random and sequential read latency of a store.

    Works on a store of any format despite the name. See :func:`benchmark_storage`.

    Example:
        >>> perf = benchmark_lmdb_performance("data/processed/FakeAVCeleb_v1.2/train/data.lmdb", num_samples=1000)
        >>> perf["avg_random_access_time_ms"], perf["samples_per_second_random"]
    """
    return benchmark_storage(db_path, num_samples, **options)
