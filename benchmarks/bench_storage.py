"""Storage benchmark: retrieve_sample against memcpy, write speed and size per format and codec.

Prints CSV rows ``name,metric,value,unit`` on stdout and a short summary on stderr.

Read latency (one 3x16x224x224 uint8 clip, 2.4 MB): the median time per clip of

* ``copyto``: ``np.copyto`` of the clip bytes from the LMDB map into a preallocated
  array (the memcpy bound: same bytes, same pages, no decoding);
* ``copyto_alloc``: the same into a fresh ``np.empty`` (what a returned array costs);
* ``retrieve_sample``: ``LMDBStorage.retrieve_sample`` with checksum verification
  (the default) and ``retrieve_sample_noverify`` without it;
* ``pickle_loads``: ``pickle.loads`` of a pickled sample dict (protocol 5);
* ``np_load``: ``np.load`` of in-memory ``.npy`` bytes;

over a small working set (8 clips, cache-hot) and a large one (400 clips, about
1 GB, far beyond the CPU caches). Every method reads the same clips in the same
shuffled order; after warm-up rounds, rounds are interleaved (method order
rotates) and the median over rounds is reported.

Write throughput (MB/s of raw clip bytes, close() included) and bytes per clip
are measured for every format and codec, plus the read latency of each.

Usage::

    python benchmarks/bench_storage.py              # full run (~1 GB of scratch space and RAM)
    python benchmarks/bench_storage.py --quick      # a few seconds, for smoke tests
"""

from __future__ import annotations

import argparse
import io
import logging
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from src.data.lmdb_storage import LMDBStorage  # noqa: E402
from src.data.record import decode_header, encode_array  # noqa: E402
from src.data.storage import DEFAULT_STORE_NAMES, backend_names, get_backend, open_storage  # noqa: E402

logger = logging.getLogger("bench_storage")

CODECS = ("raw", "zstd", "jpeg")
TARGET_RATIO = 1.5
Row = tuple[str, str, float, str]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="3,16,224,224", help="clip shape C,T,H,W (default 3,16,224,224)")
    parser.add_argument("--small", type=int, default=8, help="clips in the cache-hot working set (default 8)")
    parser.add_argument("--large", type=int, default=400, help="clips in the large working set (default 400, ~1 GB)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per method (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before measuring")
    parser.add_argument("--write-clips", type=int, default=32, help="clips written per format and codec (default 32)")
    parser.add_argument("--formats", default=",".join(backend_names()), help="formats for the write/size/read table")
    parser.add_argument("--codecs", default=",".join(CODECS), help="codecs for the write/size/read table")
    parser.add_argument("--skip-write", action="store_true", help="only the read-latency comparison")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one, removed after)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 4/12 clips, 2 rounds, 2 clips per format and codec")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        args.shape = tuple(int(s) for s in args.shape.split(","))
    except ValueError:
        parser.error(f"--shape must be four comma-separated integers; got {args.shape!r}")
    if len(args.shape) != 4 or min(args.shape) < 1 or args.shape[0] not in (1, 3):
        parser.error(f"--shape must be C,T,H,W with C in (1, 3); got {args.shape}")
    args.formats = [f for f in args.formats.split(",") if f]
    args.codecs = [c for c in args.codecs.split(",") if c]
    for fmt in args.formats:
        if fmt not in backend_names():
            parser.error(f"unknown format {fmt!r}; must be one of {', '.join(backend_names())}")
    for codec in args.codecs:
        if codec not in CODECS:
            parser.error(f"unknown codec {codec!r}; must be one of {', '.join(CODECS)}")
    if args.quick:
        args.small, args.large, args.rounds, args.warmup, args.write_clips = 4, 12, 2, 1, 2
    if min(args.small, args.large, args.rounds, args.write_clips) < 1 or args.small > args.large:
        parser.error("--small, --large, --rounds and --write-clips must be >= 1, with --small <= --large")
    return args


# ----------------------------------------------------------------------------- clips


def make_clips(n: int, shape: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """``n`` distinct face-like clips: smooth shading, edges, slow motion and sensor noise.

    Synthetic but compressible roughly like real face crops, so the zstd and
    jpeg sizes mean something (pure noise would not compress at all).
    """
    channels, frames, height, width = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    clips = []
    for _ in range(n):
        cy, cx = rng.uniform(0.4, 0.6) * height, rng.uniform(0.4, 0.6) * width
        base = np.empty((channels, height, width), np.float32)
        for c in range(channels):
            tone = rng.uniform(80, 200)
            face = np.exp(-(((yy - cy) / (0.35 * height)) ** 2 + ((xx - cx) / (0.28 * width)) ** 2))
            stripes = 12 * np.sin(xx / rng.uniform(3, 9) + rng.uniform(0, 6)) * (face > 0.5)
            base[c] = 40 + tone * face + 0.2 * yy * rng.uniform(-1, 1) + stripes
        clip = np.empty(shape, np.uint8)
        for t in range(frames):
            shifted = np.roll(base, (t // 3, t // 2), axis=(1, 2))
            clip[:, t] = np.clip(shifted + rng.normal(0, 2.5, size=shifted.shape), 0, 255)
        clips.append(clip)
    return clips


def sample_of(clip: np.ndarray, i: int) -> dict:
    return {"data": clip, "label": i % 2, "metadata": {"category": "ABCD"[i % 4], "method": "fsgan" if i % 2 else "real", "index": i}}


# ----------------------------------------------------------------------------- timing


def interleaved_medians(methods: dict[str, Callable[[int], object]], n: int, rounds: int, warmup: int, seed: int) -> dict[str, float]:
    """Median seconds per call of each method over ``rounds`` interleaved rounds of ``n`` calls."""
    rng = np.random.default_rng(seed)
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        order = rng.permutation(n).tolist()
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = methods[name]
            t0 = time.perf_counter()
            for i in order:
                fn(i)
            elapsed = (time.perf_counter() - t0) / n
            if r >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(v) for name, v in times.items()}


def time_working_set(
    store: LMDBStorage, keys: list[str], sources: list[np.ndarray], pickled: list[bytes], npy: list[bytes], args: argparse.Namespace
) -> dict[str, float]:
    """Median seconds per clip of each read method over one working set."""
    dst = np.empty(args.shape, np.uint8)
    methods: dict[str, Callable[[int], object]] = {
        "copyto": lambda i: np.copyto(dst, sources[i]),
        "copyto_alloc": lambda i: np.copyto(np.empty(args.shape, np.uint8), sources[i]),
        "retrieve_sample": lambda i: store.retrieve_sample(keys[i]),
        "retrieve_sample_noverify": lambda i: store.retrieve_sample(keys[i], verify=False),
        "pickle_loads": lambda i: pickle.loads(pickled[i]),
        "np_load": lambda i: np.load(io.BytesIO(npy[i]), allow_pickle=False),
    }
    return interleaved_medians(methods, len(keys), args.rounds, args.warmup, args.seed)


def read_latency(workdir: Path, args: argparse.Namespace) -> list[Row]:
    """retrieve_sample vs np.copyto (and pickle, np.load) on a small and a large working set."""
    rows: list[Row] = []
    clips = make_clips(min(args.large, 16), args.shape, args.seed)  # distinct bytes: 16 variants, shifted per clip
    path = workdir / "read" / DEFAULT_STORE_NAMES["lmdb"]
    keys = [f"sample_{i:06d}" for i in range(args.large)]

    def clip_for(i: int) -> np.ndarray:
        return np.roll(clips[i % len(clips)], i // len(clips), axis=-1)

    logger.info("writing %d clips to %s", args.large, path)
    with LMDBStorage(path, readonly=False, map_size_gb=max(1, 2 * args.large * clips[0].nbytes / 1024**3), commit_every=32) as store:
        for i, key in enumerate(keys):
            store.store_sample(key, sample_of(clip_for(i), i))
    nbytes = clips[0].nbytes
    for label, n in (("small", args.small), ("large", args.large)):
        subset = keys[:n]
        pickled = [pickle.dumps(sample_of(clip_for(i), i), protocol=5) for i in range(n)]
        npy = []
        for i in range(n):
            buf = io.BytesIO()
            np.save(buf, clip_for(i), allow_pickle=False)
            npy.append(buf.getvalue())
        with LMDBStorage(path) as store:
            txn = store.env.begin(db=store._db(b"samples"), buffers=True)
            sources = []
            for key in subset:
                record = txn.get(key.encode())
                header = decode_header(record, key)
                spec = header.arrays["data"]
                start = header.payload_offset + spec.offset
                sources.append(np.frombuffer(record, np.uint8, count=spec.length, offset=start).reshape(args.shape))
            logger.info("timing %s working set: %d clips, %.0f MB", label, n, n * nbytes / 1e6)
            medians = time_working_set(store, subset, sources, pickled, npy, args)
            sources.clear()
            txn.abort()
        for name, seconds in medians.items():
            rows.append((f"read/{label}/{name}", "median_ms", seconds * 1e3, "ms"))
            rows.append((f"read/{label}/{name}", "throughput", nbytes / seconds / 1e6, "MB/s"))
        rows.append((f"read/{label}/retrieve_vs_copyto", "ratio", medians["retrieve_sample"] / medians["copyto"], "x"))
        rows.append((f"read/{label}/retrieve_noverify_vs_copyto", "ratio", medians["retrieve_sample_noverify"] / medians["copyto"], "x"))
        rows.append((f"read/{label}/retrieve_vs_copyto_alloc", "ratio", medians["retrieve_sample"] / medians["copyto_alloc"], "x"))
        rows.append((f"read/{label}/working_set", "size", n * nbytes / 1e6, "MB"))
    shutil.rmtree(path, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------- formats x codecs


def store_bytes(path: Path, fmt: str) -> int:
    """Bytes a store occupies (LMDB: pages in use, not the sparse map size)."""
    if fmt == "lmdb":
        import lmdb

        env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=64)
        try:
            return (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        finally:
            env.close()
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def time_reads(store, args: argparse.Namespace) -> float:
    """Median seconds per ``retrieve_sample`` over every key of a store."""
    keys = store.get_all_keys()
    return interleaved_medians({"read": lambda i: store.retrieve_sample(keys[i])}, len(keys), args.rounds, args.warmup, args.seed)["read"]


def formats_and_codecs(workdir: Path, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    clips = make_clips(args.write_clips, args.shape, args.seed + 1)
    nbytes = clips[0].nbytes
    for fmt in args.formats:  # one-off costs (importing torch, h5py, OpenCV) stay out of the timings
        get_backend(fmt)
    for codec in args.codecs:
        encode_array(clips[0], codec)
    for fmt in args.formats:
        for codec in args.codecs:
            path = workdir / "write" / codec / DEFAULT_STORE_NAMES[fmt]
            t0 = time.perf_counter()
            with open_storage(path, "w", format=fmt, codec=codec, commit_every=16) as store:
                for i, clip in enumerate(clips):
                    store.store_sample(f"sample_{i:06d}", sample_of(clip, i))
            elapsed = time.perf_counter() - t0
            size = store_bytes(path, fmt)
            name = f"{fmt}/{codec}"
            rows.append((f"write/{name}", "throughput", len(clips) * nbytes / elapsed / 1e6, "MB/s"))
            rows.append((f"size/{name}", "bytes_per_clip", size / len(clips), "bytes"))
            rows.append((f"size/{name}", "ratio_to_raw_clip", size / len(clips) / nbytes, "x"))
            with open_storage(path) as store:
                read_ms = time_reads(store, args) * 1e3
            rows.append((f"readfmt/{name}", "median_ms", read_ms, "ms"))
            logger.info("%s: %.0f MB/s written, %.0f bytes/clip, %.2f ms/read", name, rows[-4][2], rows[-3][2], rows[-1][2])
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return rows


# ----------------------------------------------------------------------------- report


def summary(rows: list[Row]) -> str:
    values = {(name, metric): value for name, metric, value, _ in rows}
    lines = ["summary:"]
    for label in ("small", "large"):
        if (f"read/{label}/copyto", "median_ms") not in values:
            continue
        ws = values[(f"read/{label}/working_set", "size")]
        ratio = values[(f"read/{label}/retrieve_vs_copyto", "ratio")]
        lines.append(
            f"  {label:5s} working set ({ws:.0f} MB): copyto {values[(f'read/{label}/copyto', 'median_ms')]:.3f} ms, "
            f"retrieve_sample {values[(f'read/{label}/retrieve_sample', 'median_ms')]:.3f} ms "
            f"(no verify {values[(f'read/{label}/retrieve_sample_noverify', 'median_ms')]:.3f}), "
            f"pickle.loads {values[(f'read/{label}/pickle_loads', 'median_ms')]:.3f} ms, np.load {values[(f'read/{label}/np_load', 'median_ms')]:.3f} ms"
        )
        lines.append(
            f"        retrieve_sample / copyto = {ratio:.2f}x (target <= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'MISSED'})"
        )
    table = [(n.split("/", 1)[1], v) for (n, m), v in values.items() if n.startswith("write/")]
    if table:
        lines.append(f"  {'format/codec':14s} {'write MB/s':>10s} {'bytes/clip':>12s} {'x raw':>6s} {'read ms':>8s}")
        for name, mbps in table:
            lines.append(
                f"  {name:14s} {mbps:10.0f} {values[(f'size/{name}', 'bytes_per_clip')]:12.0f} "
                f"{values[(f'size/{name}', 'ratio_to_raw_clip')]:6.2f} {values[(f'readfmt/{name}', 'median_ms')]:8.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_storage_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = read_latency(workdir, args)
        if not args.skip_write:
            rows += formats_and_codecs(workdir, args)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("name,metric,value,unit")
    for name, metric, value, unit in rows:
        print(f"{name},{metric},{value:.4f},{unit}")
    sys.stdout.flush()
    print(summary(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
