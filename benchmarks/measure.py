"""The measurements of ``benchmarks/run.py``: phases, timing and the rows they produce.

Storage contenders (:mod:`benchmarks.contenders`) go through three phases, all
in this one process on the same clips, then preprocessing is timed:

1. **write**, once per contender: MB/s of raw clip bytes, fsync of the store's
   files included (so every number is durable); then bytes on disk per clip,
   and a read-back check: bit-exact for lossless stores, PSNR for lossy ones.
2. **warm** (the stores are in the page cache since they were written): a short
   untimed warm-up of every code path (a few reads, two batches of every
   DataLoader configuration); then ``repeats`` rounds, interleaved across
   contenders, each timing single random reads, one sequential pass and one
   epoch of each DataLoader configuration.
3. **cold random reads**: every store is closed, the page cache dropped
   (:func:`~benchmarks.workload.drop_page_cache`), then each contender opens its
   store and reads a few distinct random clips, each timed on its own.
4. **preprocessing** (:func:`run_preprocess`): this project's per-video
   pipeline against a DeepfakeBench-style one and bare decoding, reusing the
   functions of ``benchmarks/bench_preprocess.py``.

Throughputs are the median over repeats; latencies are percentiles of the
pooled single-read times. A contender that fails is reported with
``error: ...`` in the notes of every row and left out of later phases.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.contenders import LOADER_VARIANTS, Contender, NotApplicable, SameAs
from benchmarks.workload import drop_page_cache, fsync_files, page_cache_fraction, psnr

__all__ = [
    "CSV_COLUMNS",
    "PICKLE_REFERENCE",
    "MEMCPY_REFERENCE",
    "PREPROCESS_CONTENDERS",
    "PREPROCESS_METRICS",
    "RATIO_METRICS",
    "STORAGE_METRICS",
    "Row",
    "Settings",
    "ratio_rows",
    "run_preprocess",
    "run_storage",
]

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("contender", "metric", "value", "unit", "cache", "notes")

#: Metric -> (unit, cache state) of every storage contender, in report order.
STORAGE_METRICS: dict[str, tuple[str, str]] = {
    "write_mb_per_s": ("MB/s", "-"),
    "bytes_per_clip": ("bytes", "-"),
    "compression_ratio": ("x", "-"),
    "psnr_db": ("dB", "-"),
    "random_read_p50_ms": ("ms", "warm"),
    "random_read_p95_ms": ("ms", "warm"),
    "cold_read_p50_ms": ("ms", "cold"),
    "cold_read_p95_ms": ("ms", "cold"),
    "sequential_clips_per_s": ("clips/s", "warm"),
    **{f"dataloader_{v}_clips_per_s": ("clips/s", "warm") for v in LOADER_VARIANTS},
}

PREPROCESS_CONTENDERS: dict[str, str] = {
    "preprocess_pipeline": "this project's process_video: frame selection, face detection/tracking/cropping, audio cut + resampling",
    "preprocess_deepfakebench": "DeepfakeBench style (bench_preprocess.deepfakebench_style): cv2 reads every frame, dlib HOG per sampled frame, PNG per frame",
    "preprocess_decode_only": "decode every video and audio frame with PyAV, nothing else: the floor any pipeline pays",
}
PREPROCESS_METRICS: dict[str, str] = {"videos_per_s": "videos/s", "ms_per_video": "ms"}

PICKLE_REFERENCE = "pickle_lmdb_u8"
MEMCPY_REFERENCE = "memcpy"
#: Metric -> the memcpy metric it is divided by (memcpy has one DataLoader bound: one thread copying).
RATIO_METRICS: dict[str, str | None] = {
    "random_read_p50_ms": "random_read_p50_ms",
    "cold_read_p50_ms": None,
    "sequential_clips_per_s": "sequential_clips_per_s",
    "dataloader_w0_clips_per_s": "dataloader_w0_clips_per_s",
    "dataloader_w2_clips_per_s": "dataloader_w0_clips_per_s",
    "dataloader_default_clips_per_s": "dataloader_w0_clips_per_s",
}


@dataclass
class Row:
    """One line of ``results.csv``; ``value`` None means n/a (the notes say why)."""

    contender: str
    metric: str
    value: float | None
    unit: str
    cache: str
    notes: str

    def as_csv(self) -> dict[str, str]:
        """The row as CSV fields (``value`` empty when n/a; ``inf`` for lossless PSNR)."""
        value = "" if self.value is None else ("inf" if math.isinf(self.value) else f"{self.value:.6g}")
        return {"contender": self.contender, "metric": self.metric, "value": value, "unit": self.unit, "cache": self.cache, "notes": self.notes}


@dataclass(frozen=True)
class Settings:
    """Sizes of one run.

    Attributes:
        repeats: Timed rounds (interleaved across contenders).
        batch_size: Batch size of every DataLoader.
        random_reads: Random single-clip reads per contender per round (warm).
        cold_reads: Random single-clip reads per contender per round (cold).
        verify_clips: Clips read back after writing to check them (PSNR).
        seed: Seed of every random order.
        drop_system_cache: Also write to /proc/sys/vm/drop_caches when permitted.
    """

    repeats: int = 3
    batch_size: int = 16
    random_reads: int = 64
    cold_reads: int = 16
    verify_clips: int = 32
    seed: int = 0
    drop_system_cache: bool = True


@dataclass
class _Record:
    samples: dict[str, list[float]] = field(default_factory=dict)
    na: dict[str, str] = field(default_factory=dict)
    same_as: dict[str, tuple[str, str]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    #: Lowest fraction of the store in the page cache when a warm round started, highest before a cold read.
    warm_resident: float | None = None
    cold_resident: float | None = None

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)

    def saw(self, attr: str, fraction: float | None, lowest: bool) -> None:
        if fraction is None:
            return
        old = getattr(self, attr)
        setattr(self, attr, fraction if old is None else (min(old, fraction) if lowest else max(old, fraction)))


class _Runner:
    def __init__(self, contenders: Sequence[Contender], clips: Sequence[np.ndarray], labels: Sequence[int], settings: Settings) -> None:
        self.contenders = list(contenders)
        self.clips = clips
        self.labels = list(labels)
        self.s = settings
        self.n = len(clips)
        self.clip_bytes = int(clips[0].nbytes)
        self.records = {c.name: _Record() for c in self.contenders}
        self.cold_method = "not measured"
        self.cold_skipped: str | None = None

    # ------------------------------------------------------------------ helpers

    def alive(self, rotate: int = 0) -> list[Contender]:
        live = [c for c in self.contenders if self.records[c.name].error is None]
        k = rotate % len(live) if live else 0
        return live[k:] + live[:k]

    def guard(self, c: Contender, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            logger.error("%s: %s failed: %s\n%s", c.name, what, exc, traceback.format_exc())
            self.records[c.name].error = f"{what}: {type(exc).__name__}: {exc}"
            try:
                c.close()
            except Exception:
                logger.debug("%s: close after error failed", c.name, exc_info=True)
            return None

    # ------------------------------------------------------------------ phases

    def write_phase(self) -> None:
        for c in self.alive():
            self.guard(c, "write", lambda c=c: self._write_one(c))

    def _write_one(self, c: Contender) -> None:
        rec = self.records[c.name]
        c.prepare(self.n)
        start = time.perf_counter()
        c.write(self.clips, self.labels)
        fsync_files(c.files())
        elapsed = time.perf_counter() - start
        rec.add("write_mb_per_s", self.n * self.clip_bytes / elapsed / 1e6)
        rec.notes["write_mb_per_s"] = "one run (not a median): MB/s of raw uint8 clip bytes, fsync of the store's files included"
        size = c.disk_bytes() / self.n
        rec.add("bytes_per_clip", size)
        rec.notes["bytes_per_clip"] = "RAM, not disk" if not c.files() else "allocated on disk (du), metadata and indexes included, per clip"
        rec.add("compression_ratio", self.clip_bytes / size)
        rec.notes["compression_ratio"] = "raw clip bytes / bytes per clip"
        c.open()
        try:
            k = min(self.n, self.s.verify_clips)
            reader = c.read_all()
            try:
                quality = psnr(self.clips[:k], (c.as_uint8(x) for x in itertools.islice(reader, k)))
            finally:
                reader.close()
        finally:
            c.close()
        if not c.lossy and not math.isinf(quality):
            raise RuntimeError(f"lossless store read back different clips (PSNR {quality:.1f} dB)")
        rec.add("psnr_db", quality)
        rec.notes["psnr_db"] = f"lossy: PSNR of the first {k} clips read back" if c.lossy else f"lossless: first {k} clips read back bit-exact"
        logger.info("%-16s write %7.1f MB/s, %9.0f bytes/clip (%.2fx)", c.name, self.n * self.clip_bytes / elapsed / 1e6, size, self.clip_bytes / size)

    def cold_phase(self) -> None:
        k = min(self.n, self.s.cold_reads)
        for r in range(self.s.repeats):
            live = [c for c in self.alive(r) if c.no_cold_read is None and c.no_random_access is None]
            for c in live:
                c.close()
            paths = [p for c in live for p in c.files()]
            self.cold_method = drop_page_cache(paths, system_wide=self.s.drop_system_cache)
            rng = np.random.default_rng([self.s.seed, 1, r])
            for c in live:
                indices = rng.choice(self.n, size=k, replace=False)
                self.records[c.name].saw("cold_resident", page_cache_fraction(c.files()), lowest=False)
                self.guard(c, "cold read", lambda c=c, indices=indices: self._timed_reads(c, indices, "cold_read_ms", reopen=True))
        logger.info("cold reads: page cache dropped with %s", self.cold_method)

    def _timed_reads(self, c: Contender, indices: np.ndarray, key: str, reopen: bool) -> None:
        c.open()  # opening is not timed: a DataLoader epoch of a plain contender may have released the handles
        try:
            for i in indices:
                start = time.perf_counter()
                c.read(int(i))
                self.records[c.name].add(key, (time.perf_counter() - start) * 1e3)
        finally:
            if reopen:
                c.close()

    def warm_phase(self) -> None:
        epochs: dict[str, dict[str, Callable[[int | None], int]]] = {}
        for c in self.alive():
            epochs[c.name] = {}
            for variant in LOADER_VARIANTS:
                metric = f"dataloader_{variant}_clips_per_s"
                try:
                    epochs[c.name][variant] = c.epoch(variant, self.s.batch_size, self.s.seed)
                except SameAs as exc:
                    self.records[c.name].same_as[metric] = (f"dataloader_{exc.variant}_clips_per_s", str(exc))
                except NotApplicable as exc:
                    self.records[c.name].na[metric] = str(exc)

            def warm_up(c: Contender = c) -> None:
                # The stores are still in the page cache from writing; read their files once in case
                # something evicted them, then run each code path briefly (imports, worker start-up).
                _read_files(c.files())
                c.open()
                for _ in itertools.islice(c.read_all(), 2):
                    pass
                for run in epochs[c.name].values():
                    run(2)

            self.guard(c, "warm-up", warm_up)
        for r in range(self.s.repeats):
            rng = np.random.default_rng([self.s.seed, 2, r])
            order = rng.permutation(self.n)[: min(self.n, self.s.random_reads)]
            for c in self.alive(r):
                resident = page_cache_fraction(c.files())
                if resident is not None and resident < 0.999:  # something evicted a few pages: bring them back, untimed
                    self.guard(c, "page-cache refill", lambda c=c: _read_files(c.files()))
                    resident = page_cache_fraction(c.files())
                self.records[c.name].saw("warm_resident", resident, lowest=True)
                if resident is not None and resident < 0.99:
                    logger.warning("%s: only %.0f%% of the store is in the page cache: its warm numbers include disk reads", c.name, 100 * resident)
                start = time.perf_counter()
                self.guard(c, "warm reads", lambda c=c, order=order: self._warm_round(c, order, epochs[c.name]))
                logger.info("round %d %-16s %5.1f s", r + 1, c.name, time.perf_counter() - start)
            logger.info("warm round %d/%d done", r + 1, self.s.repeats)
        for c in self.contenders:
            self.guard(c, "close", c.close)

    def _warm_round(self, c: Contender, order: np.ndarray, epochs: dict[str, Callable[[int | None], int]]) -> None:
        rec = self.records[c.name]
        if c.no_random_access is None:
            self._timed_reads(c, order, "random_read_ms", reopen=False)
        c.open()
        start = time.perf_counter()
        count = sum(1 for _ in c.read_all())
        rec.add("sequential_clips_per_s", count / (time.perf_counter() - start))
        if count != self.n:
            raise RuntimeError(f"sequential read returned {count} clips, expected {self.n}")
        for variant, run in epochs.items():
            start = time.perf_counter()
            count = run(None)
            rec.add(f"dataloader_{variant}_clips_per_s", count / (time.perf_counter() - start))
            if count != self.n:
                raise RuntimeError(f"DataLoader {variant} delivered {count} clips, expected {self.n}")

    # ------------------------------------------------------------------ rows

    def rows(self) -> list[Row]:
        rows = []
        for c in self.contenders:
            rec = self.records[c.name]
            values = self._values(c, rec)
            for metric, (unit, cache) in STORAGE_METRICS.items():
                value, note = values.get(metric, (None, ""))
                if value is not None and cache == "warm" and rec.warm_resident is not None:
                    note += f"; >= {100 * rec.warm_resident:.0f}% of the store in the page cache at each round's start"
                if value is not None and cache == "cold" and rec.cold_resident is not None:
                    note += f"; <= {100 * rec.cold_resident:.1f}% of the store in the page cache before the reads"
                if rec.error is not None:
                    note = f"error: {rec.error}" if value is None else f"{note}; the contender failed later (error: {rec.error})"
                elif value is None and not note:
                    note = "n/a: " + rec.na.get(metric, "not measured")
                rows.append(Row(c.name, metric, value, unit, cache, f"{c.tag}; {note}" if note else c.tag))
        return rows

    def _values(self, c: Contender, rec: _Record) -> dict[str, tuple[float | None, str]]:
        out: dict[str, tuple[float | None, str]] = {}
        for metric in ("write_mb_per_s", "bytes_per_clip", "compression_ratio", "psnr_db", "sequential_clips_per_s"):
            if metric in rec.samples:
                out[metric] = (statistics.median(rec.samples[metric]), rec.notes.get(metric, f"median of {len(rec.samples[metric])} repeat(s)"))
        for variant in LOADER_VARIANTS:
            metric = f"dataloader_{variant}_clips_per_s"
            source, why = rec.same_as.get(metric, (metric, ""))
            if source in rec.samples:
                note = f"median of {len(rec.samples[source])} epoch(s), batch {self.s.batch_size}"
                out[metric] = (statistics.median(rec.samples[source]), f"{why}; {note}" if why else note)
            elif metric in rec.na:
                out[metric] = (None, "n/a: " + rec.na[metric])
        for prefix, cache, why in (("random_read", "warm", c.no_random_access), ("cold_read", "cold", c.no_cold_read or c.no_random_access or self.cold_skipped)):
            samples = rec.samples.get(f"{prefix}_ms")
            for q in (50, 95):
                metric = f"{prefix}_p{q}_ms"
                if samples:
                    note = f"{len(samples)} single-clip reads pooled over repeats"
                    if cache == "cold":
                        note += f"; page cache dropped with {self.cold_method}, stores reopened"
                    out[metric] = (float(np.percentile(samples, q)), note)
                elif why is not None:
                    out[metric] = (None, "n/a: " + why)
        return out


def _read_files(paths: Sequence[Path], chunk: int = 8 << 20) -> None:
    """Read files once, to bring them into the page cache."""
    buf = bytearray(chunk)
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def ratio_rows(rows: Sequence[Row]) -> list[Row]:
    """Ratios that hold across machines: each contender's value divided by memcpy's and by pickle-LMDB's.

    For latencies a ratio below 1 is better, for throughputs above 1.
    """
    values = {(r.contender, r.metric): r.value for r in rows}
    cache = {r.metric: r.cache for r in rows}
    out = []
    for contender in dict.fromkeys(r.contender for r in rows):
        for metric, memcpy_metric in RATIO_METRICS.items():
            value = values.get((contender, metric))
            for ref, ref_metric in ((MEMCPY_REFERENCE, memcpy_metric), (PICKLE_REFERENCE, metric)):
                suffix = "vs_memcpy" if ref == MEMCPY_REFERENCE else "vs_pickle"
                ref_value = values.get((ref, ref_metric)) if ref_metric is not None else None
                if value is not None and ref_value:
                    out.append(Row(contender, f"{metric}_{suffix}", value / ref_value, "x", cache.get(metric, "-"), f"{metric} / {ref}'s {ref_metric}"))
                    continue
                if ref_metric is None:
                    why = f"{ref} has no {metric}"
                elif value is None:
                    why = f"no {metric}"
                else:
                    why = f"{ref} has no {ref_metric}"
                out.append(Row(contender, f"{metric}_{suffix}", None, "x", cache.get(metric, "-"), f"n/a: {why}"))
    return out


def run_storage(contenders: Sequence[Contender], clips: Sequence[np.ndarray], labels: Sequence[int], settings: Settings, cold: bool = True) -> tuple[list[Row], str]:
    """Run the write, cold and warm phases on every contender.

    Returns:
        The rows (every contender x every storage metric, n/a ones included)
        and the page-cache drop method used for cold reads.
    """
    runner = _Runner(contenders, clips, labels, settings)
    logger.info("write phase: %d contenders, %d clips of %s", len(contenders), len(clips), "x".join(map(str, clips[0].shape)))
    runner.write_phase()
    # Warm first, while the stores are still in the page cache from writing; cold last, after every handle is closed.
    logger.info("warm phase")
    runner.warm_phase()
    if cold:
        logger.info("cold phase")
        runner.cold_phase()
    else:
        runner.cold_skipped = "cold reads skipped (--no-cold)"
    return runner.rows(), runner.cold_method


def run_preprocess(workdir: Path, videos: int, seconds: float, repeats: int) -> list[Row]:
    """Time this project's per-video pipeline against a DeepfakeBench-style one and bare decoding.

    Generates ``videos`` real 224x224 H.264/AAC talking-head mp4 files with
    :func:`benchmarks.bench_preprocess.make_dataset`, warms every method up on
    the first, then times each video with each method, interleaved, ``repeats``
    times, serially in this process.

    Returns:
        ``videos_per_s`` (1 / median seconds per video) and ``ms_per_video`` rows.
    """
    import dlib

    from benchmarks.bench_preprocess import decode_only, deepfakebench_style, make_dataset
    from src.config import config_from_dict
    from src.preprocessing.faces import create_detector
    from src.preprocessing.pipeline import VideoTask, process_video

    root = workdir / "raw" / "FakeAVCeleb_v1.2"
    paths = make_dataset(root, videos, seconds)
    config = config_from_dict({"dataset": {"input_dir": str(root)}, "output": {"dir": str(workdir / "out")}, "processing": {"workers": 1}})
    detector = create_detector(config.faces.detector, max_side=config.faces.max_side)
    hog = dlib.get_frontal_face_detector()
    tasks = [VideoTask(f"sample_{i + 1:06d}", "train", p.name, str(p), 1, 1, 0, {}) for i, p in enumerate(paths)]
    methods: dict[str, Callable[[int, int], Any]] = {
        "preprocess_pipeline": lambda r, i: process_video(tasks[i], config, detector),
        "preprocess_deepfakebench": lambda r, i: deepfakebench_style(paths[i], workdir / "png" / f"{r}_{i}", hog),
        "preprocess_decode_only": lambda r, i: decode_only(paths[i]),
    }
    for fn in methods.values():  # warm-up: detector models, codecs, caches
        fn(-1, 0)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(repeats):
        for i in range(len(paths)):
            for name, fn in methods.items():
                start = time.perf_counter()
                fn(r, i)
                times[name].append(time.perf_counter() - start)
    rows = []
    what = f"{videos} videos of {seconds:g} s, 224x224 at 25 fps, 16 frames sampled; median over videos x {repeats} repeat(s), one process"
    for name, samples in times.items():
        med = statistics.median(samples)
        rows.append(Row(name, "videos_per_s", 1.0 / med, "videos/s", "-", f"{PREPROCESS_CONTENDERS[name]}; {what}"))
        rows.append(Row(name, "ms_per_video", med * 1e3, "ms", "-", f"{PREPROCESS_CONTENDERS[name]}; {what}"))
    logger.info("preprocessing: %s", ", ".join(f"{n} {1 / statistics.median(t):.2f} videos/s" for n, t in times.items()))
    return rows
