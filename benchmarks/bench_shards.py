#!/usr/bin/env python
"""Reading a shard set vs one LMDB store holding the same samples, and the cost of discovering a set's shards.

    python benchmarks/bench_shards.py [--samples 256] [--shards 1,8,64] [--rounds 7] [--reads 200] [--batch 32] [--batches 20]
                                      [--discovery 10,100,1000] [--keys-per-shard 100] [--quick]

A shard set (``src/data/lmdb_shards.py``) is what ``processing.ray_write:
shards`` leaves in a split's ``data.lmdb``; ``LMDBStorage(path)`` opens it as
one store. Two questions, both measured in this one process:

* **Random reads** (``single`` vs ``shards_K``): ``--samples`` clips (uint8
  3x16x224x224 plus 1 s of 16 kHz float32 audio, the default sample, random
  bytes) written once into an ordinary LMDB store and once into shard sets of
  K shards each (keys dealt round-robin, as actors take interleaved videos;
  written with :class:`ShardWriter` into a write-mode
  :class:`ShardedLMDBStorage`, as ``run_preprocessing`` does). Then, in
  ``--rounds`` interleaved rounds (the stores in rotated order, the same random
  keys for each store in a round; median over rounds):

  - ``retrieve_p50_ms`` / ``retrieve_p95_ms``: ``retrieve_sample(key)``
    (checksum verified, arrays copied: what a map-style dataset pays);
  - ``lookup_p50_us`` / ``lookup_p95_us``: ``raw_records([key])`` and the
    record's header, no copy: the lookup alone, where a set's extra dict
    lookup and shard bookkeeping would show;
  - ``batch_ms`` (and ``batch_clips_per_s``): ``ClipDataset.read_batch`` of
    ``--batch`` random samples (the loaders' fast path: one ``raw_records``
    call, the clips copied into one batch tensor, checksums verified);
    ``batch_lookup_ms``: the ``raw_records`` call and headers alone;
  - ``open_ms`` / ``touch_all_shards_ms``: opening the store, then reading one
    key of every shard (each shard's environment is opened on first use),
    once, before the rounds.

  Ratios ``shards_K_vs_single``: the set's time over the single store's
  (1.0 = the same cost). Reads are warm (the stores fit in the page cache):
  this compares the read paths, not the disk.
* **Discovery** (``discovery_N``): sets of N shards of ``--keys-per-shard``
  tiny samples each (shards written with ``LMDBStorage`` and published with
  :func:`publish_shard`), against one ordinary store holding the same keys
  (``discovery_single_N``): ``open_ms`` (``LMDBStorage(path)``: the set reads
  its ``shardset.json`` and every manifest), ``open_cold_ms`` (the same after
  ``posix_fadvise(DONTNEED)`` on those files: their pages are re-read, the
  dentries and inodes stay cached), ``first_read_ms`` (one random sample: one
  shard opened), ``keys_ms`` (``get_all_keys()``); median over rounds.

Prints CSV rows ``name,metric,value,unit`` on stdout, then a summary with the
machine and the command line on stderr.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.workload import CLIP_SHAPE, drop_page_cache, machine_info, tree_bytes  # noqa: E402
from src.data.dataset import ClipDataset  # noqa: E402
from src.data.lmdb_shards import SHARDS_DIR, SHARDSET_NAME, ShardedLMDBStorage, ShardTarget, ShardWriter, publish_shard  # noqa: E402
from src.data.lmdb_storage import LMDBStorage  # noqa: E402
from src.data.record import decode_header  # noqa: E402
from src.data.storage import open_storage  # noqa: E402

OPTIONS: dict[str, Any] = dict(codec="raw", create_indexes=True, index_fields=("label", "category", "method"))


def key_of(i: int) -> str:
    return f"sample_{i + 1:06d}"


def make_sample(i: int, clips: list[np.ndarray], audio: np.ndarray | None) -> dict[str, Any]:
    real = i % 4 == 0
    sample = {
        "data": clips[i % len(clips)],
        "label": 0 if real else 1,
        "metadata": {"category": "A" if real else "C", "method": "real" if real else "faceswap", "video_path": f"{i:05d}.mp4", "num_frames": 16},
    }
    if audio is not None:
        sample["audio"] = audio
    return sample


def write_single(path: Path, n: int, sample: Callable[[int], dict[str, Any]]) -> None:
    """One ordinary LMDB store, as the driver's writer makes it."""
    with open_storage(path, "w", "lmdb", commit_every=64, **OPTIONS) as store:
        for i in range(n):
            store.store_sample(key_of(i), sample(i))


def write_set(path: Path, n: int, shards: int, sample: Callable[[int], dict[str, Any]], local: Path) -> None:
    """A shard set of ``shards`` shards holding samples ``0..n-1``, keys dealt round-robin.

    As ``run_preprocessing`` with ``ray_write: shards``: the split's set opened
    for writing (its metadata), one :class:`ShardWriter` sealing and publishing
    each shard, the set closed (totals, completion flag).
    """
    target_store = ShardedLMDBStorage(path, readonly=False, commit_every=64, **OPTIONS)
    writer = ShardWriter(ShardTarget(stores={"train": str(path)}, local_dir=str(local), seal_bytes=1 << 62, seal_seconds=1e9, options={**OPTIONS, "map_size_gb": 1}))
    try:
        for s in range(shards):
            for i in range(s, n, shards):
                writer.add("train", key_of(i), sample(i))
            writer.seal()
    finally:
        writer.close()
        target_store.close()


def write_small_set(path: Path, shards: int, per_shard: int, local: Path) -> None:
    """A set of ``shards`` small shards of ``per_shard`` tiny samples each, published with :func:`publish_shard`."""
    target_store = ShardedLMDBStorage(path, readonly=False, **OPTIONS)
    tiny = np.zeros((3, 1, 8, 8), np.uint8)
    try:
        for s in range(shards):
            name = f"{time.time_ns():x}-{uuid.uuid4().hex[:12]}"
            shard = local / f"{name}.lmdb"
            keys = [key_of(s * per_shard + j) for j in range(per_shard)]
            store = LMDBStorage(shard, readonly=False, map_size_gb=0.0625, commit_every=per_shard + 1, **OPTIONS)
            for j, key in enumerate(keys):
                store.store_sample(key, {"data": tiny, "label": j % 2, "metadata": {"category": "C", "method": "faceswap"}})
            store.flush()
            schema = store.meta.get("schema") or {}
            store.close()
            publish_shard(shard, path, name, keys, schema)
            shutil.rmtree(shard, ignore_errors=True)
    finally:
        target_store.close()


def write_small_single(path: Path, n: int) -> None:
    tiny = np.zeros((3, 1, 8, 8), np.uint8)
    with open_storage(path, "w", "lmdb", map_size_gb=1, commit_every=4096, **OPTIONS) as store:
        for i in range(n):
            store.store_sample(key_of(i), {"data": tiny, "label": i % 2, "metadata": {"category": "C", "method": "faceswap"}})


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_reads(store: Any, dataset: ClipDataset, reads: list[str], lookups: list[str], batches: list[list[int]], out: dict[str, list[float]]) -> None:
    """One round of one store: appends this round's figures to ``out``."""

    def lookup(key: str) -> None:
        with store.raw_records([key]) as (buf,):
            decode_header(buf, key)

    def batch_lookup(keys: list[str]) -> None:
        with store.raw_records(keys) as bufs:
            for key, buf in zip(keys, bufs):
                decode_header(buf, key)

    lat = [timed(lambda key=key: store.retrieve_sample(key)) for key in reads]
    out.setdefault("retrieve_p50_ms", []).append(1000 * pct(lat, 50))
    out.setdefault("retrieve_p95_ms", []).append(1000 * pct(lat, 95))
    lat = [timed(lambda key=key: lookup(key)) for key in lookups]
    out.setdefault("lookup_p50_us", []).append(1e6 * pct(lat, 50))
    out.setdefault("lookup_p95_us", []).append(1e6 * pct(lat, 95))
    lat = [timed(lambda b=b: batch_lookup([key_of(i) for i in b])) for b in batches]
    out.setdefault("batch_lookup_ms", []).append(1000 * statistics.median(lat))
    lat = [timed(lambda b=b: dataset.read_batch(b)) for b in batches]
    out.setdefault("batch_ms", []).append(1000 * statistics.median(lat))


def read_rounds(paths: dict[str, Path], n: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Interleaved random-read rounds over the stores; per-store medians over rounds."""
    stores = {name: LMDBStorage(path) for name, path in paths.items()}
    datasets = {name: ClipDataset(path) for name, path in paths.items()}
    try:
        for name, store in stores.items():  # every page and shard environment warm
            assert len(store) == n, (name, len(store))
            for start in range(0, n, 16):
                store.retrieve_batch([key_of(i) for i in range(start, min(n, start + 16))])
            datasets[name].read_batch(list(range(min(n, args.batch))))
        per_round: dict[str, dict[str, list[float]]] = {name: {} for name in paths}
        names = list(paths)
        for r in range(args.rounds):
            rng = np.random.default_rng(r)
            reads = [key_of(int(i)) for i in rng.integers(0, n, args.reads)]
            lookups = [key_of(int(i)) for i in rng.integers(0, n, 5 * args.reads)]
            batches = [sorted(int(i) for i in rng.choice(n, min(n, args.batch), replace=False)) for _ in range(args.batches)]
            for name in names[r % len(names):] + names[: r % len(names)]:
                measure_reads(stores[name], datasets[name], reads, lookups, batches, per_round[name])
        med = {name: {k: statistics.median(v) for k, v in metrics.items()} for name, metrics in per_round.items()}
        for metrics in med.values():
            metrics["batch_clips_per_s"] = min(n, args.batch) / (metrics["batch_ms"] / 1000)
        return med
    finally:
        for dataset in datasets.values():
            dataset.storage.close()
        for store in stores.values():
            store.close()


def first_open(path: Path) -> tuple[float, float]:
    """``(open, open + one read per shard)`` milliseconds of a store nothing in this process has open yet."""
    start = time.perf_counter()
    store = LMDBStorage(path)
    opened = time.perf_counter()
    try:
        firsts = [m.keys[0] for m in store.shards if m.keys] if isinstance(store, ShardedLMDBStorage) else [key_of(0)]
        for key in firsts:
            with store.raw_records([key]) as (buf,):
                decode_header(buf, key)
        touched = time.perf_counter()
    finally:
        store.close()
    return 1000 * (opened - start), 1000 * (touched - start)


def set_files(path: Path) -> list[Path]:
    """The files discovery reads: the set's metadata and every manifest (or an ordinary store's data file)."""
    if (path / "data.mdb").exists():
        return [path / "data.mdb"]
    return [path / SHARDSET_NAME, *sorted((path / SHARDS_DIR).glob("*.json"))]


def discovery_rounds(paths: dict[str, Path], keys: dict[str, int], rounds: int) -> dict[str, dict[str, float]]:
    per_round: dict[str, dict[str, list[float]]] = {name: {} for name in paths}
    names = list(paths)
    for r in range(rounds):
        rng = np.random.default_rng(100 + r)
        for name in names[r % len(names):] + names[: r % len(names)]:
            path, out = paths[name], per_round[name]
            for cold in (False, True):
                if cold:
                    drop_page_cache(set_files(path), system_wide=False)  # never the whole machine's cache: others run beside
                start = time.perf_counter()
                store = LMDBStorage(path)
                opened = time.perf_counter()
                try:
                    if cold:
                        out.setdefault("open_cold_ms", []).append(1000 * (opened - start))
                        continue
                    out.setdefault("open_ms", []).append(1000 * (opened - start))
                    key = key_of(int(rng.integers(0, keys[name])))
                    started = time.perf_counter()
                    store.retrieve_sample(key)
                    listed = time.perf_counter()
                    got = store.get_all_keys()
                    out.setdefault("first_read_ms", []).append(1000 * (listed - started))
                    out.setdefault("keys_ms", []).append(1000 * (time.perf_counter() - listed))
                    assert len(got) == keys[name], (name, len(got))
                finally:
                    store.close()
    return {name: {k: statistics.median(v) for k, v in metrics.items()} for name, metrics in per_round.items()}


UNITS = {"_s": "s", "_ms": "ms", "_us": "us", "_per_s": "clips/s", "_mb": "MB", "_us_per_shard": "us"}


def unit(metric: str) -> str:
    return next((u for suffix, u in sorted(UNITS.items(), key=lambda kv: -len(kv[0])) if metric.endswith(suffix)), "")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256, help="clips in every store of the read part")
    parser.add_argument("--shards", type=ints, default=[1, 8, 64], help="shard counts of the read part (comma-separated)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--reads", type=int, default=200, help="random retrieve_sample calls per store and round (5x as many lookups)")
    parser.add_argument("--batch", type=int, default=32, help="samples per read_batch")
    parser.add_argument("--batches", type=int, default=20, help="read_batch calls per store and round")
    parser.add_argument("--discovery", type=ints, default=[10, 100, 1000], help="shard counts of the discovery part (comma-separated)")
    parser.add_argument("--keys-per-shard", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="64 clips, 2 rounds, discovery of 10 and 100 shards (a smoke run, < 30 s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.rounds, args.reads, args.batch, args.batches, args.discovery = 64, 2, 40, 16, 4, [10, 100]
    tmp = Path(tempfile.mkdtemp(prefix="bench_shards_"))
    rows: list[tuple[str, str, float, str]] = []
    try:
        rng = np.random.default_rng(0)
        clips = [rng.integers(0, 256, CLIP_SHAPE, dtype=np.uint8) for _ in range(4)]
        audio = rng.standard_normal(16000).astype(np.float32)

        def sample(i: int) -> dict[str, Any]:
            return make_sample(i, clips, audio)

        # Random reads: one store vs shard sets of the same samples.
        n = args.samples
        paths = {"single": tmp / "single" / "data.lmdb"}
        build: dict[str, float] = {"single": timed(lambda: write_single(paths["single"], n, sample))}
        for k in args.shards:
            paths[f"shards_{k}"] = tmp / f"shards_{k}" / "data.lmdb"
            build[f"shards_{k}"] = timed(lambda k=k: write_set(paths[f"shards_{k}"], n, k, sample, tmp / "local"))
        for name, path in paths.items():
            rows.append((name, "build_s", build[name], "s"))
            rows.append((name, "store_mb", tree_bytes(path) / 1e6, "MB"))
            open_ms, touch_ms = first_open(path)
            rows.append((name, "open_ms", open_ms, "ms"))
            rows.append((name, "touch_all_shards_ms", touch_ms, "ms"))
        reads = read_rounds(paths, n, args)
        for name, metrics in reads.items():
            rows.extend((name, metric, v, unit(metric)) for metric, v in metrics.items())
        for k in args.shards:
            s, one = reads[f"shards_{k}"], reads["single"]
            for metric in ("retrieve_p50_ms", "retrieve_p95_ms", "lookup_p50_us", "lookup_p95_us", "batch_lookup_ms", "batch_ms"):
                rows.append((f"shards_{k}_vs_single", f"{metric.rsplit('_', 1)[0]}_ratio", s[metric] / one[metric], "x"))
        for name in paths:
            shutil.rmtree(paths[name].parent, ignore_errors=True)

        # Discovery: N manifests vs one store holding the same keys.
        per = args.keys_per_shard
        dpaths: dict[str, Path] = {}
        dkeys: dict[str, int] = {}
        dbuild: dict[str, float] = {}
        for count in args.discovery:
            for name, writer in ((f"discovery_{count}", lambda p, c=count: write_small_set(p, c, per, tmp / "local")),
                                 (f"discovery_single_{count}", lambda p, c=count: write_small_single(p, c * per))):
                dpaths[name] = tmp / name / "data.lmdb"
                dkeys[name] = count * per
                dbuild[name] = timed(lambda p=dpaths[name], w=writer: w(p))
        found = discovery_rounds(dpaths, dkeys, max(3, args.rounds))
        for name, metrics in found.items():
            rows.append((name, "build_s", dbuild[name], "s"))
            rows.extend((name, metric, v, unit(metric)) for metric, v in metrics.items())
            if not name.startswith("discovery_single_"):
                count = int(name.rsplit("_", 1)[1])
                rows.append((name, "open_us_per_shard", 1000 * metrics["open_ms"] / count, "us"))
                rows.append((name, "manifests_mb", sum(p.stat().st_size for p in set_files(dpaths[name])) / 1e6, "MB"))

        print("name,metric,value,unit")
        for name, metric, value, u in rows:
            print(f"{name},{metric},{value:.4g},{u}")
        value = {(r[0], r[1]): r[2] for r in rows}
        info = machine_info(tmp)
        one = reads["single"]
        lines = [
            f"# random reads: {n} clips of {'x'.join(map(str, CLIP_SHAPE))} uint8 + 1 s of audio (raw codec, ~{value['single', 'store_mb'] / n:.1f} MB each), "
            f"warm page cache, {args.rounds} interleaved rounds of {args.reads} retrieve_sample, {5 * args.reads} lookups and {args.batches} read_batch of {min(n, args.batch)}, median",
            f"#   single store: retrieve p50 {one['retrieve_p50_ms']:.2f} ms / p95 {one['retrieve_p95_ms']:.2f} ms, lookup p50 {one['lookup_p50_us']:.1f} us, "
            f"read_batch {one['batch_ms']:.1f} ms ({one['batch_clips_per_s']:.0f} clips/s)",
        ]
        for k in args.shards:
            s, ratio = reads[f"shards_{k}"], f"shards_{k}_vs_single"
            lines.append(
                f"#   {k:>3} shards: retrieve p50 {s['retrieve_p50_ms']:.2f} ms ({value[ratio, 'retrieve_p50_ratio']:.2f}x) / p95 {s['retrieve_p95_ms']:.2f} ms "
                f"({value[ratio, 'retrieve_p95_ratio']:.2f}x), lookup p50 {s['lookup_p50_us']:.1f} us ({value[ratio, 'lookup_p50_ratio']:.2f}x), "
                f"read_batch {s['batch_ms']:.1f} ms ({value[ratio, 'batch_ratio']:.2f}x), raw_records batch {value[ratio, 'batch_lookup_ratio']:.2f}x; "
                f"open + every shard touched once {value[f'shards_{k}', 'touch_all_shards_ms']:.1f} ms (single {value['single', 'touch_all_shards_ms']:.1f} ms)"
            )
        lines.append(f"# discovery ({per} keys per shard; opening the set reads every manifest), median of {max(3, args.rounds)} rounds:")
        for count in args.discovery:
            d, s = found[f"discovery_{count}"], found[f"discovery_single_{count}"]
            lines.append(
                f"#   {count:>5} shards: open {d['open_ms']:.1f} ms warm / {d['open_cold_ms']:.1f} ms with the manifests' pages dropped "
                f"({value[f'discovery_{count}', 'open_us_per_shard']:.0f} us per shard, {value[f'discovery_{count}', 'manifests_mb']:.2f} MB of manifests); "
                f"first read {d['first_read_ms']:.2f} ms, all keys {d['keys_ms']:.1f} ms; one store of {count * per} keys: open {s['open_ms']:.2f} ms, "
                f"first read {s['first_read_ms']:.2f} ms, all keys {s['keys_ms']:.1f} ms"
            )
        lines.append(f"# machine: {info['cpu']}, {info['cores']}, {info['ram']} RAM, scratch {info['scratch disk']}, Python {info['python']}, {info['lmdb']}")
        lines.append(f"# reproduce: {shlex.join([Path(sys.executable).name, 'benchmarks/bench_shards.py', *(argv if argv is not None else sys.argv[1:])])}")
        print("\n" + "\n".join(lines), file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
