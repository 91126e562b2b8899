#!/usr/bin/env python
"""Preprocessing on Ray vs the local process pool, both Ray write modes: videos/s, start-up, 1 -> 2 nodes, the driver's cost.

    python benchmarks/bench_ray.py [--videos 240] [--distinct 12] [--seconds 4] [--workers 2] [--repeats 2] [--shard-mb MB] [--quick]

Generates ``--distinct`` real 224x224 talking-head mp4 files (H.264 + AAC,
FakeAVCeleb layout, :func:`benchmarks.bench_preprocess.make_dataset`) and
lists them ``--videos`` times in the catalog (hard links, one identity each),
so that runs last long enough for a steady state; then measures, with the
default config (16 frames, 224x224 crops, LMDB, raw codec). Every Ray
measurement is made in both write modes, ``MODE`` = ``shards`` (each actor
writes LMDB shards on node-local disk and publishes them into the split's
shard set; the default for LMDB output) and ``driver`` (the samples stream
back to the driver's one writer); the process pool is the baseline, run in
the same process, interleaved:

* ``import_ray`` / ``ray_start_MODE``: ``import ray`` in a fresh interpreter,
  and a local ``ray.init`` until the first actor has its face detector loaded
  (and, with shards, its shard writer);
* ``pool_wW`` / ``ray_local_wW_MODE``: whole ``run_preprocessing`` runs with
  the process pool and with a local Ray instance, W workers each,
  interleaved, ``repeats`` times (median). ``videos_per_s`` counts the
  start-up (Ray's start, the pool's spawn) and the end (shards sealed and
  published, split metadata written); ``steady_videos_per_s`` is the middle
  half of the results, once every worker runs;
* ``ray_cluster_1node_MODE`` / ``ray_cluster_2nodes_MODE``: the same run
  joining a ``ray.cluster_utils.Cluster`` of one node with one CPU, then of
  two such nodes (``pool_w1`` is the one-process reference);
* the driver's cost: ``driver_cpu_ms_per_video`` (this process's CPU, all its
  threads, over the middle half of the results: receiving, and in ``driver``
  mode writing), ``driver_cpu_whole_run_ms_per_video`` (the whole run's CPU
  in this process over the videos: the driver-side detector check, Ray's
  start, the end), the writer alone (``writer``: ``store_sample`` into LMDB,
  commits included), the executors alone with no store writer in the driver
  (``*_executor_only*``), the workers' time per video (``worker_ms_per_video``:
  decode + faces, + ``shard_write`` with shards);
* the bytes per video sent to the driver (``to_driver_MODE``): the pickled
  result with its clip (``driver``), or the pickled ``(TaskResult(stored=True,
  sample=None), published)`` an actor returns plus its share of the shard's
  publish message (``shards``); each run's ``payload_bytes_per_video`` is what
  the executor counted (clip and audio arrays received), ``videos_per_call``
  the videos per actor call (``processing.ray_batch``, where the checkout has it;
  ``ray_call,videos_per_call`` is the configured batch, used for the bytes);
* the shard layout a shards run leaves: ``shards_per_split`` (over the splits
  that got videos), ``mean_shard_mb``, ``samples_per_shard``.

Timing source: with shards a result is reported to the runner only once the
shard holding it is published (with the default ``shard_mb``/``shard_seconds``
that is the end of a short run), so the progress callback cannot time a
steady state. Ray runs (both modes, for symmetry) are timed at the results'
*arrival* in the driver (the executor's ``RayStats.results`` counter, hooked
here); pool runs at the progress callback. ``first_result_s`` is the first
arrival, ``first_stored_s`` the first progress event, ``tail_s`` the time from
the last arrival to the end of the run.

Prints CSV rows ``name,metric,value,unit`` on stdout, then a summary with the
ratios, the machine and the command line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import math
import os
import pickle
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.bench_preprocess import make_dataset  # noqa: E402
from benchmarks.workload import machine_info  # noqa: E402
from src.config import config_from_dict  # noqa: E402
from src.data import open_storage  # noqa: E402
from src.data.lmdb_shards import is_shard_set, read_manifests  # noqa: E402
from src.data.storage import DEFAULT_STORE_NAMES  # noqa: E402
from src.datasets.catalog import catalog_spec  # noqa: E402
from src.preprocessing import ray_executor  # noqa: E402  (imports no ray)
from src.preprocessing.executors import ProcessExecutor  # noqa: E402
from src.preprocessing.pipeline import TaskResult, VideoProcessor, VideoTask  # noqa: E402
from src.preprocessing.runner import _open_stores, _shard_target, run_preprocessing  # noqa: E402
from src.preprocessing.splits import SPLITS  # noqa: E402

MODES = ("shards", "driver")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Arrivals:
    """``(wall, CPU)`` stamps of every result a :class:`RayExecutor` receives, published or not, and its stats.

    Hooks the executor's ``RayStats.results`` counter (incremented when a
    result arrives in the driver, before it is held for its shard's publish).
    """

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []
        self.stats: list[ray_executor.RayStats] = []

    @contextlib.contextmanager
    def watch(self) -> Iterator[Arrivals]:
        sink, base = self, ray_executor.RayStats

        class StampedStats(base):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                sink.stats.append(self)

            def __setattr__(self, name: str, value: Any) -> None:
                if name == "results" and value:
                    sink.stamps.append((time.perf_counter(), _cpu()))
                super().__setattr__(name, value)

        ray_executor.RayStats = StampedStats
        try:
            yield self
        finally:
            ray_executor.RayStats = base


def _window(stamps: list[tuple[float, float]]) -> tuple[int, int]:
    """Indexes bounding the middle half of ``stamps`` (at least two stamps apart by one)."""
    lo = len(stamps) // 4
    hi = min(len(stamps) - 1, max(lo + 1, 3 * len(stamps) // 4))
    return lo, hi


def shard_layout(root: Path) -> dict[str, float]:
    """Shards per split and their sizes in the shard sets under ``root`` (``{}`` for ordinary stores)."""
    per_split: dict[str, list[int]] = {}
    keys = 0
    for split in SPLITS:
        path = root / split / DEFAULT_STORE_NAMES["lmdb"]
        if is_shard_set(path):
            manifests = read_manifests(path)
            per_split[split] = [m.bytes for m in manifests]
            keys += sum(len(m.keys) for m in manifests)
    if not per_split:
        return {}
    sizes = [b for split in per_split.values() for b in split]
    used = [s for s in per_split.values() if s]
    out = {
        "shards_per_split": len(sizes) / max(1, len(used)),
        "mean_shard_mb": statistics.fmean(sizes) / 1e6 if sizes else 0.0,
        "samples_per_shard": keys / max(1, len(sizes)),
    }
    out.update({f"shards_{split}": float(len(per_split.get(split, []))) for split in SPLITS})
    return out


def timed_run(config) -> dict[str, float]:
    """One ``run_preprocessing`` from scratch (see the module docstring for the timing source)."""
    progress: list[tuple[float, float]] = []
    arrivals = Arrivals()
    ray = config.processing.executor == "ray"
    hook = arrivals.watch() if ray else contextlib.nullcontext()
    start, cpu0 = time.perf_counter(), _cpu()
    with hook:
        report = run_preprocessing(config, overwrite=True, progress=lambda event: progress.append((time.perf_counter(), _cpu())))
    wall, cpu = time.perf_counter() - start, _cpu() - cpu0
    n = report.stored
    stamps = arrivals.stamps if ray else progress
    lo, hi = _window(stamps)
    (t_lo, c_lo), (t_hi, c_hi) = stamps[lo], stamps[hi]
    stages = report.stage_seconds
    out = {
        "videos_per_s": n / wall,
        "steady_videos_per_s": (hi - lo) / max(t_hi - t_lo, 1e-9),
        "first_result_s": stamps[0][0] - start,
        "first_stored_s": progress[0][0] - start,
        "tail_s": wall - (stamps[-1][0] - start),
        "wall_s": wall,
        "driver_cpu_ms_per_video": 1000 * (c_hi - c_lo) / (hi - lo),
        "driver_cpu_whole_run_ms_per_video": 1000 * cpu / max(1, n),
        "worker_ms_per_video": 1000 * sum(stages.values()) / max(1, n),
    }
    if ray:
        s = arrivals.stats[-1]
        out["get_ms_per_video"] = 1000 * s.get_seconds / max(1, s.results)
        out["payload_bytes_per_video"] = s.payload_bytes / max(1, s.results)
        if getattr(s, "calls", 0):  # a checkout whose actors take batches (processing.ray_batch)
            out["videos_per_call"] = s.results / s.calls
    if config.writes_shards:
        out["shard_write_ms_per_video"] = 1000 * stages.get("shard_write", 0.0) / max(1, n)
        out["shards_published"] = float(arrivals.stats[-1].shards)
        out.update(shard_layout(Path(report.output_root)))
    return out


def executor_only(executor, tasks: list[VideoTask]) -> float:
    """Videos/s of an executor alone: results received and dropped, no store written by the driver (start-up excluded).

    Ray executors are timed at the results' arrival (run them inside :meth:`Arrivals.watch`).
    """
    arrivals = Arrivals()
    if isinstance(executor, ray_executor.RayExecutor):
        with arrivals.watch():
            executor.stats = ray_executor.RayStats()  # the hooked class: its results counter stamps arrivals
            sum(1 for _ in executor.map(tasks))
        stamps = [t for t, _ in arrivals.stamps]
    else:
        stamps = [time.perf_counter() for _ in executor.map(tasks)]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def writer_ms_per_video(samples: list[dict[str, Any]], n: int, path: Path) -> tuple[float, float]:
    """``(wall, CPU)`` milliseconds per sample of the driver's writer alone (LMDB, raw codec, indexes, a commit every 64)."""
    shutil.rmtree(path, ignore_errors=True)
    start, cpu = time.perf_counter(), _cpu()
    with open_storage(path, "w", "lmdb", codec="raw", commit_every=64, create_indexes=True, index_fields=("label", "category", "method")) as store:
        for i in range(n):
            store.store_sample(f"sample_{i + 1:06d}", samples[i % len(samples)])
    return 1000 * (time.perf_counter() - start) / n, 1000 * (_cpu() - cpu) / n


def _reply(results: list[TaskResult], batch: int) -> Any:
    """What one actor call returns: ``(results, published)`` per batch (``processing.ray_batch``), or per video before batches."""
    return (results, []) if batch else (results[0], [])


def wire_bytes(result: TaskResult, batch: int, samples_per_shard: float) -> tuple[float, float, float]:
    """Bytes per video an actor sends the driver: ``(driver mode, shards result, shards publish message)``.

    Pickles what :meth:`VideoActor.process` returns, for ``batch`` distinct
    videos per call (0: one video per call, no batches): the results with their
    samples (``driver``), or ``TaskResult(stored=True, sample=None)`` each
    (``shards``: the sample went into the actor's open shard); plus, with shards,
    the publish message (``{"split", "name", "keys"}`` per sealed shard) shared
    by the shard's videos.
    """
    n = max(1, batch)

    def copies(stored: bool) -> list[TaskResult]:  # distinct objects: pickle must not share them
        return [
            dataclasses.replace(
                copy.deepcopy(result),
                task=dataclasses.replace(result.task, key=f"sample_{i + 1:06d}"),
                **({"sample": None, "stored": True, "timings": {**result.timings, "shard_write": 0.012345}} if stored else {}),
            )
            for i in range(n)
        ]

    driver = len(pickle.dumps(_reply(copies(False), batch), protocol=5)) / n
    shards = len(pickle.dumps(_reply(copies(True), batch), protocol=5)) / n
    k = max(1, round(samples_per_shard))
    message = [{"split": "train", "name": f"{time.time_ns():x}-{uuid.uuid4().hex[:12]}", "keys": [f"sample_{i + 1:06d}" for i in range(k)]}]
    return driver, shards, len(pickle.dumps(message, protocol=5)) / k


def replicate(root: Path, paths: list[Path], n: int) -> None:
    """Grow the dataset to ``n`` catalog rows: hard links to the distinct videos, each under an identity of its own."""
    rows = []
    for i in range(len(paths), n):
        ident = f"id{i:05d}"
        category, folder, method = ("A", "RealVideo-RealAudio", "real") if i % 4 == 0 else ("C", "FakeVideo-RealAudio", "faceswap")
        rel_dir = f"{folder}/African/men/{ident}"
        (root / rel_dir).mkdir(parents=True, exist_ok=True)
        os.link(paths[i % len(paths)], root / rel_dir / f"{i:05d}.mp4")
        rows.append(f"{ident},-,-,{method},{category},{folder},African,men,{i:05d}.mp4,FakeAVCeleb/{rel_dir}\n")
    with open(root / "meta_data.csv", "a") as f:
        f.write("".join(rows))


def import_seconds(repeats: int = 3) -> float:
    code = "import time; t = time.perf_counter(); import ray; print(time.perf_counter() - t)"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout) for _ in range(repeats))


UNITS = {
    "videos_per_s": "videos/s",
    "steady_videos_per_s": "videos/s",
    "first_result_s": "s",
    "first_stored_s": "s",
    "tail_s": "s",
    "wall_s": "s",
    "driver_cpu_ms_per_video": "ms",
    "driver_cpu_whole_run_ms_per_video": "ms",
    "worker_ms_per_video": "ms",
    "get_ms_per_video": "ms",
    "payload_bytes_per_video": "bytes",
    "videos_per_call": "videos",
    "shard_write_ms_per_video": "ms",
    "shards_published": "shards",
    "shards_per_split": "shards",
    "mean_shard_mb": "MB",
    "samples_per_shard": "samples",
    **{f"shards_{split}": "shards" for split in SPLITS},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=240, help="catalog rows (hard links to the distinct videos)")
    parser.add_argument("--distinct", type=int, default=12, help="distinct videos generated")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shard-mb", type=float, default=None, help="processing.shard_mb of the shards runs (default: the config's)")
    parser.add_argument("--ray-batch", type=int, default=None, help="processing.ray_batch of the Ray runs (default: the config's, null: from the actors)")
    parser.add_argument("--quick", action="store_true", help="16 rows of 3 videos of 1 s, 1 repeat (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.distinct, args.seconds, args.repeats = 16, 3, 1.0, 1
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    ray_tmp = tempfile.mkdtemp(prefix="br-", dir="/tmp")  # short: the test cluster's sockets live under it
    os.makedirs(os.path.join(ray_tmp, "ray"))
    os.environ["RAY_TMPDIR"] = ray_tmp
    rows: list[tuple[str, str, float, str]] = []
    try:
        root = tmp / "raw" / "FakeAVCeleb_v1.2"
        paths = make_dataset(root, min(args.distinct, args.videos), args.seconds)
        replicate(root, paths, args.videos)
        w = args.workers
        shard_options = {} if args.shard_mb is None else {"shard_mb": args.shard_mb}

        def config(out: str = "out", **processing):
            if processing.get("executor") == "ray":
                processing = {**processing, **(shard_options if processing.get("ray_write") == "shards" else {})}
                if args.ray_batch is not None:
                    processing["ray_batch"] = args.ray_batch
            return config_from_dict({"dataset": {"input_dir": str(root)}, "output": {"dir": str(tmp / out)}, "processing": processing})

        # The clip on the wire, and the writer alone.
        processor = VideoProcessor(config())
        tasks = [VideoTask(f"sample_{i + 1:06d}", "train", f"{i}.mp4", str(paths[i % len(paths)]), 1, 1, 0, {"category": "C", "method": "faceswap"}) for i in range(args.videos)]
        results = [processor(t) for t in tasks[: min(4, len(paths))]]
        sample = results[0].sample
        rows.append(("clip", "array_bytes", sum(v.nbytes for v in sample.values() if hasattr(v, "nbytes")), "bytes"))
        rows.append(("clip", "pickled_result_bytes", len(pickle.dumps(results[0], protocol=5)), "bytes"))
        writer_wall, writer_cpu = writer_ms_per_video([r.sample for r in results], max(128, args.videos), tmp / "writer.lmdb")
        rows.append(("writer", "ms_per_video", writer_wall, "ms"))
        rows.append(("writer", "cpu_ms_per_video", writer_cpu, "ms"))
        del processor

        # Ray's fixed costs, and the executors alone (no store written by the driver; with shards the actors write theirs).
        rows.append(("import_ray", "seconds", import_seconds(), "s"))
        alone: dict[str, float] = {}
        for mode in MODES:
            cfg = config(out=f"alone_{mode}", executor="ray", workers=w, ray_write=mode)
            stores = _open_stores(Path(cfg.output.dir) / "alone", cfg, "bench_ray", overwrite=True) if mode == "shards" else {}
            try:
                ray_exec = ray_executor.RayExecutor(cfg, w, shards=_shard_target(cfg, stores, catalog_spec(cfg.dataset.name)) if stores else None)
                alone[mode] = executor_only(ray_exec, tasks)
            finally:
                for store in stores.values():
                    store.close()
            s = ray_exec.stats
            rows.append((f"ray_executor_only_{mode}", "videos_per_s", alone[mode], "videos/s"))
            rows.append((f"ray_start_{mode}", "init_seconds", s.start_seconds, "s"))
            rows.append((f"ray_start_{mode}", "first_actor_ready_seconds", s.first_ready_seconds, "s"))
            rows.append((f"ray_executor_only_{mode}", "get_ms_per_video", 1000 * s.get_seconds / max(1, s.results), "ms"))
            rows.append((f"ray_executor_only_{mode}", "payload_bytes_per_video", s.payload_bytes / max(1, s.results), "bytes"))
        alone["pool"] = executor_only(ProcessExecutor(config(workers=w), w), tasks)
        rows.append(("pool_executor_only", "videos_per_s", alone["pool"], "videos/s"))

        # Whole runs, interleaved (the two Ray modes alternate which goes first).
        local = {mode: f"ray_local_w{w}_{mode}" for mode in MODES}
        runs: dict[str, list[dict[str, float]]] = {f"pool_w{w}": [], **{name: [] for name in local.values()}, "pool_w1": []}
        for r in range(args.repeats):
            runs[f"pool_w{w}"].append(timed_run(config(executor="process", workers=w)))
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                runs[local[mode]].append(timed_run(config(executor="ray", workers=w, ray_write=mode)))
            runs["pool_w1"].append(timed_run(config(executor="process", workers=1)))

        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        try:
            for nodes in ("1node", "2nodes"):
                if nodes == "2nodes":
                    cluster.add_node(num_cpus=1)
                    cluster.wait_for_nodes()
                for r in range(args.repeats):
                    for mode in MODES if r % 2 == 0 else MODES[::-1]:
                        runs.setdefault(f"ray_cluster_{nodes}_{mode}", []).append(timed_run(config(executor="ray", ray_address=cluster.address, ray_write=mode)))
        finally:
            cluster.shutdown()

        med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
        for name, metrics in med.items():
            rows.extend((name, k, v, UNITS[k]) for k, v in metrics.items())

        # Bytes per video to the driver, per mode.
        batch = ray_executor.videos_per_call(config(executor="ray", workers=w).processing.ray_batch, w)
        driver_bytes, shard_result_bytes, publish_bytes = wire_bytes(results[0], batch, med[local["shards"]].get("samples_per_shard", 1.0))
        rows.append(("to_driver_driver", "bytes_per_video", driver_bytes, "bytes"))
        rows.append(("to_driver_shards", "result_bytes", shard_result_bytes, "bytes"))
        rows.append(("to_driver_shards", "publish_bytes_per_video", publish_bytes, "bytes"))
        rows.append(("to_driver_shards", "bytes_per_video", shard_result_bytes + publish_bytes, "bytes"))
        rows.append(("ray_call", "videos_per_call", max(1, batch), "videos"))

        # Ratios: Ray / pool videos/s (above 1: Ray is faster), driver CPU Ray / pool, 2 / 1 nodes.
        pool, pool1 = med[f"pool_w{w}"], med["pool_w1"]
        ratios: list[tuple[str, str, float]] = []
        for mode in MODES:
            ray_run = med[local[mode]]
            name = f"{local[mode]}_vs_pool_w{w}"
            ratios.append((name, "steady_speed_ratio", ray_run["steady_videos_per_s"] / pool["steady_videos_per_s"]))
            ratios.append((name, "whole_run_speed_ratio", ray_run["videos_per_s"] / pool["videos_per_s"]))
            ratios.append((name, "driver_cpu_ratio", ray_run["driver_cpu_ms_per_video"] / pool["driver_cpu_ms_per_video"]))
            ratios.append((f"ray_executor_only_{mode}_vs_pool", "speed_ratio", alone[mode] / alone["pool"]))
            one, two = med[f"ray_cluster_1node_{mode}"], med[f"ray_cluster_2nodes_{mode}"]
            ratios.append((f"ray_cluster_{mode}_2_vs_1_nodes", "steady_speedup", two["steady_videos_per_s"] / one["steady_videos_per_s"]))
            ratios.append((f"ray_cluster_{mode}_2_vs_1_nodes", "whole_run_speedup", two["videos_per_s"] / one["videos_per_s"]))
        shards_run, driver_run = med[local["shards"]], med[local["driver"]]
        ratios.append((f"ray_local_w{w}_shards_vs_driver", "steady_speed_ratio", shards_run["steady_videos_per_s"] / driver_run["steady_videos_per_s"]))
        ratios.append((f"ray_local_w{w}_shards_vs_driver", "whole_run_speed_ratio", shards_run["videos_per_s"] / driver_run["videos_per_s"]))
        ratios.append((f"ray_local_w{w}_shards_vs_driver", "driver_cpu_ratio", shards_run["driver_cpu_ms_per_video"] / driver_run["driver_cpu_ms_per_video"]))
        ratios.append(("pool_w2_vs_w1", "steady_speedup", pool["steady_videos_per_s"] / pool1["steady_videos_per_s"] if w == 2 else math.nan))
        rows.extend((name, metric, v, "x") for name, metric, v in ratios)

        print("name,metric,value,unit")
        for name, metric, value, unit in rows:
            print(f"{name},{metric},{value:.4g},{unit}")
        value = {(r[0], r[1]): r[2] for r in rows}
        writer_ms, worker_ms = value["writer", "ms_per_video"], pool["worker_ms_per_video"]
        info = machine_info(tmp)
        lines = [
            f"# {args.videos} catalog rows ({args.distinct} distinct videos, hard-linked), 224x224, {args.seconds:g} s at 25 fps, default config "
            f"(16 frames, 224 crops, LMDB raw{'' if args.shard_mb is None else f', shard_mb {args.shard_mb:g}'}), {args.repeats} repeat(s), median; "
            "Ray runs timed at the results' arrival in the driver",
            f"# {w} workers, videos/s steady (whole run): pool {pool['steady_videos_per_s']:.2f} ({pool['videos_per_s']:.2f})",
        ]
        for mode in MODES:
            ray_run, name = med[local[mode]], f"{local[mode]}_vs_pool_w{w}"
            lines.append(
                f"#   Ray {mode:6s} {ray_run['steady_videos_per_s']:.2f} ({ray_run['videos_per_s']:.2f}) = {value[name, 'steady_speed_ratio']:.2f}x the pool "
                f"({value[name, 'whole_run_speed_ratio']:.2f}x whole run; executors alone {value[f'ray_executor_only_{mode}_vs_pool', 'speed_ratio']:.2f}x); "
                f"first result {ray_run['first_result_s']:.1f} s, first stored {ray_run['first_stored_s']:.1f} s, end after the last result {ray_run['tail_s']:.1f} s"
            )
        lines.append(
            f"# driver CPU per video (middle half): pool {pool['driver_cpu_ms_per_video']:.2f} ms, Ray shards {shards_run['driver_cpu_ms_per_video']:.2f} ms, "
            f"Ray driver {driver_run['driver_cpu_ms_per_video']:.2f} ms (shards/driver {value[f'ray_local_w{w}_shards_vs_driver', 'driver_cpu_ratio']:.2f}x); "
            f"whole run incl. start and end: {pool['driver_cpu_whole_run_ms_per_video']:.1f} / {shards_run['driver_cpu_whole_run_ms_per_video']:.1f} / "
            f"{driver_run['driver_cpu_whole_run_ms_per_video']:.1f} ms"
        )
        lines.append(
            f"# the writer alone {writer_ms:.1f} ms wall ({value['writer', 'cpu_ms_per_video']:.1f} ms CPU) per video; a worker spends {worker_ms:.0f} ms per video "
            f"(pool, {w} workers), so one driver writer feeds about {worker_ms / max(writer_ms, 1e-9):.0f} workers; with shards each actor spends "
            f"{shards_run.get('shard_write_ms_per_video', math.nan):.1f} ms per video writing its shard"
        )
        for mode in MODES:
            one, two = med[f"ray_cluster_1node_{mode}"], med[f"ray_cluster_2nodes_{mode}"]
            lines.append(
                f"# 1 -> 2 nodes (1 CPU each), Ray {mode:6s}: {one['steady_videos_per_s']:.2f} -> {two['steady_videos_per_s']:.2f} videos/s steady = "
                f"{value[f'ray_cluster_{mode}_2_vs_1_nodes', 'steady_speedup']:.2f}x (whole run {one['videos_per_s']:.2f} -> {two['videos_per_s']:.2f} = "
                f"{value[f'ray_cluster_{mode}_2_vs_1_nodes', 'whole_run_speedup']:.2f}x)"
            )
        lines.append(f"#   pool 1 -> 2 workers: {value['pool_w2_vs_w1', 'steady_speedup']:.2f}x")
        lines.append(
            f"# bytes per video to the driver: driver mode {value['to_driver_driver', 'bytes_per_video'] / 1e6:.2f} MB (clip {value['clip', 'array_bytes'] / 1e6:.2f} MB of arrays); "
            f"shards {value['to_driver_shards', 'bytes_per_video']:.0f} B ({shard_result_bytes:.0f} B result + {publish_bytes:.0f} B of publish message; {max(1, batch)} video(s) per actor call); "
            f"arrays received per video: {driver_run['payload_bytes_per_video'] / 1e6:.2f} MB vs {shards_run['payload_bytes_per_video']:.0f} B"
        )
        for name in (local["shards"], "ray_cluster_1node_shards", "ray_cluster_2nodes_shards"):
            m = med[name]
            if "shards_per_split" in m:
                lines.append(
                    f"# shard layout {name}: {m['shards_per_split']:.1f} shards per split (train/val/test {m['shards_train']:.0f}/{m['shards_val']:.0f}/{m['shards_test']:.0f}), "
                    f"{m['mean_shard_mb']:.0f} MB and {m['samples_per_shard']:.1f} samples per shard on average"
                )
        lines.append(
            f"# Ray: import {value['import_ray', 'seconds']:.2f} s, local start {value['ray_start_shards', 'init_seconds']:.2f} / {value['ray_start_driver', 'init_seconds']:.2f} s "
            f"(shards / driver), first actor ready after {value['ray_start_shards', 'first_actor_ready_seconds']:.2f} / {value['ray_start_driver', 'first_actor_ready_seconds']:.2f} s"
        )
        lines.append(f"# machine: {info['cpu']}, {info['cores']}, {info['ram']} RAM, Python {info['python']}, ray {__import__('ray').__version__}, scratch {info['scratch disk']}")
        lines.append(f"# reproduce: {shlex.join([Path(sys.executable).name, 'benchmarks/bench_ray.py', *(argv if argv is not None else sys.argv[1:])])}")
        print("\n" + "\n".join(lines), file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
