"""A whole preprocessing run: catalog -> splits -> workers -> one writer -> stores and reports.

The run is resumable by construction: every video has a fixed split and key
(a pure function of the catalog and the split seed), samples are committed in
chunks, and a re-run skips every key already stored. A fingerprint of the plan
and of the settings that shape a sample is kept in each store, so resuming with
different settings is refused instead of mixing two kinds of samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.config import Config, SplitsConfig, config_to_dict
from src.data.fsio import atomic_write
from src.data.lmdb_shards import ShardedLMDBStorage, ShardTarget, is_shard_set, sample_summary
from src.data.storage import DEFAULT_STORE_NAMES, Storage, open_storage
from src.datasets.catalog import Catalog, DatasetSpec, VideoRecord, catalog_spec, read_dataset
from src.errors import IncompleteStoreError, StorageError
from src.preprocessing.executors import make_executor
from src.preprocessing.pipeline import TaskResult, VideoProcessor, VideoTask
from src.preprocessing.splits import SPLITS, assign_keys, assign_splits, connected_groups, interleave_for_limit

__all__ = ["RunReport", "ProgressEvent", "plan_tasks", "run_preprocessing", "REPORT_NAME", "METADATA_NAME"]

logger = logging.getLogger(__name__)

REPORT_NAME = "preprocess_report.json"
METADATA_NAME = "metadata.json"
METADATA_VERSION = 1


@dataclass
class ProgressEvent:
    """Sent to the progress callback after each video.

    Attributes:
        done: Videos finished in this run.
        total: Videos to process in this run.
        failed: Failures so far.
        result: The last result.
    """

    done: int
    total: int
    failed: int
    result: TaskResult | None = None


@dataclass
class RunReport:
    """What a run did; written as ``preprocess_report.json``."""

    dataset: str
    output_root: str
    format: str
    catalog_videos: int
    already_stored: int = 0
    planned: int = 0
    stored: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped_no_face: list[dict[str, Any]] = field(default_factory=list)
    skipped_rows: list[dict[str, Any]] = field(default_factory=list)
    catalog_notes: list[dict[str, Any]] = field(default_factory=list)
    split_counts: dict[str, int] = field(default_factory=dict)
    split_labels: dict[str, dict[str, int]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    workers: int = 0
    interrupted: bool = False

    @property
    def videos_per_second(self) -> float:
        """Videos finished per second of wall time in this run."""
        done = self.stored + len(self.failed) + len(self.skipped_no_face)
        return done / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        out = {k: v for k, v in self.__dict__.items()}
        out["videos_per_second"] = round(self.videos_per_second, 3)
        return out


def _atomic_write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2).encode())


def _sample_settings(config: Config) -> dict[str, Any]:
    """The settings that change what a stored sample contains (resume must not mix them)."""
    c = config_to_dict(config)
    return {
        "dataset": {"name": c["dataset"]["name"], "label_policy": c["dataset"]["label_policy"]},
        "frames": c["frames"],
        "faces": c["faces"],
        "audio": c["audio"],
        "splits": c["splits"],
        "codec": {k: c["output"][k] for k in ("codec", "jpeg_quality", "zstd_level")},
    }


def _generated_splits(records: list[VideoRecord], s: SplitsConfig) -> dict[str, str]:
    """Split the videos without an official split: identity groups divided by the ratios,
    each record within the splits of its ``split_pool`` (all three when official splits are off)."""
    group_of = {rec.identity: rec.identity for rec in records}
    if s.group_by == "connected" and records:
        group_of = connected_groups([[rec.identity, *rec.linked_identities] for rec in records])
        sizes = Counter(group_of[rec.identity] for rec in records)
        logger.info("splits.group_by connected: %d identity groups, the largest holds %d of %d videos", len(sizes), max(sizes.values()), len(records))
    ratio = dict(zip(SPLITS, (s.train, s.val, s.test)))
    by_pool: dict[tuple[str, ...], dict[str, set[int]]] = {}
    for rec in records:
        pool = rec.split_pool if s.official else SPLITS
        by_pool.setdefault(tuple(pool), {}).setdefault(group_of[rec.identity], set()).add(rec.label)
    group_split: dict[tuple[tuple[str, ...], str], str] = {}
    for pool, labels in by_pool.items():
        weights = [ratio[name] if name in pool else 0.0 for name in SPLITS]
        if sum(weights) <= 0:  # the ratios give none of the pool's splits: its first one takes all
            weights = [1.0 if name == pool[0] else 0.0 for name in SPLITS]
        total = sum(weights)
        for group, split in assign_splits(labels, [w / total for w in weights], s.seed).items():
            group_split[pool, group] = split
    return {rec.relpath: group_split[tuple(rec.split_pool if s.official else SPLITS), group_of[rec.identity]] for rec in records}


def plan_tasks(catalog: Catalog, config: Config) -> tuple[list[VideoTask], str]:
    """Assign every catalog video a split and key.

    Returns:
        ``(tasks, fingerprint)``: tasks in ``--limit`` order (each split in
        proportion, lowest keys first) and a fingerprint of the plan plus the
        sample-shaping settings.
    """
    s = config.splits
    split_of = {rec.relpath: rec.split for rec in catalog.records if s.official and rec.split}
    split_of.update(_generated_splits([rec for rec in catalog.records if rec.relpath not in split_of], s))
    by_rel = {rec.relpath: rec for rec in catalog.records}
    assignments = assign_keys([(rec.relpath, split_of[rec.relpath]) for rec in catalog.records])
    tasks = []
    digest = hashlib.sha256(json.dumps(_sample_settings(config), sort_keys=True).encode())
    for rel in interleave_for_limit(assignments):
        a, rec = assignments[rel], by_rel[rel]
        metadata = {**rec.metadata, "split_origin": "official" if s.official and rec.split else "generated"}
        tasks.append(VideoTask(a.key, a.split, rel, str(rec.path), rec.label, rec.video_label, rec.audio_label, metadata))
    counts = Counter(a.split for a in assignments.values())
    empty = [name for name, ratio in zip(SPLITS, (s.train, s.val, s.test)) if ratio > 0 and not counts.get(name)]
    if empty and catalog.records:
        logger.warning("split(s) %s get no videos (%d videos; splits.group_by: %s, splits.official: %s)", ", ".join(empty), len(catalog.records), s.group_by, s.official)
    for rel in sorted(assignments):
        digest.update(f"{rel}\0{assignments[rel].split}\0{assignments[rel].key}\n".encode())
    return tasks, digest.hexdigest()


def _check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write_probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise StorageError(f"output directory {root} is not writable: {exc.strerror or exc}") from None


def _open_stores(root: Path, config: Config, fingerprint: str, overwrite: bool) -> dict[str, Storage]:
    fmt = config.output.format
    lm = config.output.lmdb
    options: dict[str, Any] = dict(
        codec=config.output.codec,
        codec_options={"jpeg_quality": config.output.jpeg_quality, "zstd_level": config.output.zstd_level},
        create_indexes=lm.create_indexes,
        index_fields=lm.index_fields,
        commit_every=lm.commit_every,
        config={"preprocessing": config_to_dict(config), "plan_fingerprint": fingerprint},
    )
    if fmt == "lmdb":
        options.update(map_size_gb=lm.map_size_gb, max_readers=lm.max_readers)
    sharded = config.writes_shards
    stores: dict[str, Storage] = {}
    try:
        for split in SPLITS:
            path = root / split / DEFAULT_STORE_NAMES[fmt]
            if overwrite and path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if path.exists() and fmt == "lmdb" and is_shard_set(path) != sharded:
                made, now = ("shards", "driver") if is_shard_set(path) else ("driver", "shards")
                raise StorageError(
                    f"{path} was written with processing.ray_write: {made} (executor ray{'' if made == 'shards' else ' or the process pool'}); "
                    f"this run would write it as {now}. Resume with the setting it was made with, or rerun with --overwrite"
                )
            if path.exists():
                try:
                    with open_storage(path, "r", fmt) as existing:
                        old = (existing.meta.get("config") or {}).get("plan_fingerprint")
                except IncompleteStoreError:
                    old = None  # a writer killed before its first commit: nothing to keep, nothing to compare
                    logger.warning("%s: no metadata yet (interrupted before the first commit); starting it", path)
                if old is not None and old != fingerprint:
                    raise StorageError(
                        f"{path} was made with other settings or another catalog (its plan differs); "
                        "rerun with --overwrite to start over, or restore the settings it was made with"
                    )
            path.parent.mkdir(parents=True, exist_ok=True)
            stores[split] = ShardedLMDBStorage(path, readonly=False, **options) if sharded else open_storage(path, "w", fmt, **options)
    except BaseException:
        for store in stores.values():
            store.close(complete=False)
        raise
    return stores


def _each(results: Iterable[TaskResult]) -> Iterator[TaskResult]:
    """``results`` as a generator, whose ``close()`` closes theirs if they have one (``yield from`` does)."""
    yield from results


def _shard_target(config: Config, stores: dict[str, Storage], spec: DatasetSpec) -> ShardTarget:
    """Where the workers write their shards: the split stores (shard sets), with the stores' own options."""
    lm, p = config.output.lmdb, config.processing
    first = next(iter(stores.values()))  # opened by _open_stores: a resumed set keeps what it was made with
    options = dict(
        codec=first.codec,
        codec_options=first.codec_options,
        create_indexes=bool(first.index_fields),
        index_fields=first.index_fields,
        config=first.meta.get("config"),
        map_size_gb=min(lm.map_size_gb, max(1.0, 2 * p.shard_mb / 1024)),  # grows itself when full
    )
    return ShardTarget(
        stores={split: str(store.path) for split, store in stores.items()},
        local_dir=p.shard_dir,
        seal_bytes=int(p.shard_mb * 1024 * 1024),
        seal_seconds=p.shard_seconds,
        options=options,
        summary_fields=tuple(spec.summary_fields),
        run_ids={split: store.run_id for split, store in stores.items() if getattr(store, "run_id", None)},
    )


def _write_split_metadata(root: Path, split: str, store: Storage, config: Config, fingerprint: str, spec: DatasetSpec) -> tuple[int, dict[str, int]]:
    keys = store.get_all_keys()
    # A shard set's writers published each sample's summary: no record is read again here.
    published = store.sample_summaries(spec.summary_fields) if isinstance(store, ShardedLMDBStorage) else None
    if published is not None:
        samples = {key: published[key] for key in keys}
    else:
        samples = {key: sample_summary(*store.retrieve_metadata(key), spec.summary_fields) for key in keys}
    counts = {f: dict(sorted(Counter(str(s.get(f)) for s in samples.values()).items())) for f in spec.count_fields}
    meta = store.meta
    _atomic_write_json(
        root / split / METADATA_NAME,
        {
            "metadata_version": METADATA_VERSION,
            "split": split,
            "format": config.output.format,
            "store": DEFAULT_STORE_NAMES[config.output.format],
            "store_format_version": meta.get("format_version"),
            "num_samples": len(keys),
            "counts": counts,
            "schema": meta.get("schema"),
            "codec": meta.get("codec"),
            "plan_fingerprint": fingerprint,
            "config": config_to_dict(config),
            "samples": samples,
        },
    )
    return len(keys), counts.get("label", dict(Counter(str(s["label"]) for s in samples.values())))


def run_preprocessing(
    config: Config,
    *,
    overwrite: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> RunReport:
    """Preprocess a dataset into ``<output.dir>/<dataset>/{train,val,test}``.

    Args:
        config: The validated config (input and output paths included).
        overwrite: Delete existing stores first instead of resuming.
        progress: Called after every video.

    Returns:
        The run report (also written to ``preprocess_report.json``).

    Raises:
        DatasetError: Missing input root or metadata.
        StorageError: Output not writable, a store made with other settings,
            or a write failure (e.g. the disk is full).
    """
    started = time.perf_counter()
    ds = config.dataset
    catalog = read_dataset(ds.name, ds.input_dir, ds.label_policy, compression=ds.compression, include_unlabelled=ds.include_unlabelled)
    spec = catalog_spec(config.dataset.name)
    root = Path(config.output.dir) / catalog.name
    _check_writable(root)
    tasks, fingerprint = plan_tasks(catalog, config)
    if config.processing.limit is not None:
        tasks = tasks[: config.processing.limit]

    report = RunReport(
        dataset=catalog.name,
        output_root=str(root),
        format=config.output.format,
        catalog_videos=len(catalog.records),
        skipped_rows=[{"line": p.line, "reason": p.reason, "video_path": p.relpath} for p in catalog.problems if p.skipped],
        catalog_notes=[{"line": p.line, "reason": p.reason, "video_path": p.relpath} for p in catalog.problems if not p.skipped],
        workers=config.processing.num_workers,
    )
    VideoProcessor(config)  # fail fast on a broken detector install, before any store is touched
    stores = _open_stores(root, config, fingerprint, overwrite)
    complete = False
    try:
        todo = [t for t in tasks if t.key not in stores[t.split]]
        report.already_stored = len(tasks) - len(todo)
        report.planned = len(todo)
        logger.info("%s: %d videos in the catalog, %d already stored, %d to process", catalog.name, len(tasks), report.already_stored, len(todo))
        stage = Counter()
        done = 0
        executor = make_executor(config, shards=_shard_target(config, stores, spec) if config.writes_shards else None)
        # closing() ends the executor (its workers, its Ray actors) before the stores close, on any error too
        with contextlib.closing(_each(executor.map(todo))) as results:
            for result in results:
                done += 1
                stage.update(result.timings)
                entry = {"video_path": result.task.relpath, "split": result.task.split, "key": result.task.key, "reason": result.error}
                if result.status == "ok" and result.stored:  # the worker published it into a shard
                    report.stored += 1
                elif result.status == "ok":
                    try:
                        stores[result.task.split].store_sample(result.task.key, result.sample)
                    except OSError as exc:
                        raise StorageError(f"writing {result.task.key} to the {result.task.split} store failed: {exc}") from exc
                    report.stored += 1
                elif result.status == "skipped":
                    report.skipped_no_face.append(entry)
                else:
                    report.failed.append(entry)
                    logger.warning("%s: %s", result.task.relpath, result.error)
                if progress is not None:
                    progress(ProgressEvent(done, len(todo), len(report.failed), result))
        report.stage_seconds = {k: round(v, 3) for k, v in stage.items()}
        report.workers = executor.workers_used
        complete = True
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        errors = []
        for store in stores.values():
            try:
                store.close(complete=complete)
            except Exception as exc:  # keep closing the others; committed samples stay readable
                errors.append(exc)
        report.wall_seconds = round(time.perf_counter() - started, 3)
        if errors and complete:
            raise StorageError(f"closing the stores failed: {errors[0]}") from errors[0]

    for split in SPLITS:
        with open_storage(root / split / DEFAULT_STORE_NAMES[config.output.format], "r", config.output.format) as store:
            report.split_counts[split], report.split_labels[split] = _write_split_metadata(root, split, store, config, fingerprint, spec)
    report.wall_seconds = round(time.perf_counter() - started, 3)
    _atomic_write_json(root / REPORT_NAME, {**report.to_dict(), "config": config_to_dict(config)})
    return report
