"""Benchmarks of stores and loaders, as functions the CLI scripts in ``benchmarks/`` call.

* :func:`benchmark_lmdb_performance`: per-sample read latency and throughput of
  a store (the spec's section 5).
* :mod:`src.bench.loader_bench`: loader throughput against a pickle-LMDB
  baseline and the memcpy bound.
"""

from src.bench.storage_bench import benchmark_lmdb_performance, benchmark_storage

__all__ = ["benchmark_lmdb_performance", "benchmark_storage"]
