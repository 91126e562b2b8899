#!/usr/bin/env python
"""Preprocessing on Ray vs the local process pool: videos/s, start-up, 1 -> 2 nodes, where the driver's time goes.

    python benchmarks/bench_ray.py [--videos 240] [--distinct 12] [--seconds 4] [--workers 2] [--repeats 2] [--quick]

Generates ``--distinct`` real 224x224 talking-head mp4 files (H.264 + AAC,
FakeAVCeleb layout, :func:`benchmarks.bench_preprocess.make_dataset`) and
lists them ``--videos`` times in the catalog (hard links, one identity each),
so that runs last long enough for a steady state; then measures, with the
default config (16 frames, 224x224 crops, LMDB, raw codec):

* ``import_ray`` / ``ray_start``: ``import ray`` in a fresh interpreter, and
  a local ``ray.init`` until the first actor has its face detector loaded;
* ``pool_wW`` / ``ray_local_wW``: whole ``run_preprocessing`` runs with the
  process pool and with a local Ray instance, W workers each, interleaved,
  ``repeats`` times (median). ``videos_per_s`` counts the start-up (Ray's
  start, the pool's spawn); ``steady_videos_per_s`` is the middle half of
  the results, once every worker runs;
* ``ray_cluster_1node`` / ``ray_cluster_2nodes``: the same run joining a
  ``ray.cluster_utils.Cluster`` of one node with one CPU, then of two such
  nodes (``pool_w1`` is the one-process reference);
* where the driver's time goes: ``driver_cpu_ms_per_video`` (this process's
  CPU over the middle half of the results: receiving and writing), the
  writer alone (``writer``: ``store_sample`` into LMDB, commits included),
  the executors alone with no writer (``*_executor_only``), the workers'
  time per video (``worker_ms_per_video``: decode + faces) and the bytes one
  clip costs on the wire (``clip``).

Prints CSV rows ``name,metric,value,unit``, then a summary with the ratios,
the machine and the command line on stderr.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.bench_preprocess import make_dataset  # noqa: E402
from benchmarks.workload import machine_info  # noqa: E402
from src.config import config_from_dict  # noqa: E402
from src.data import open_storage  # noqa: E402
from src.preprocessing.executors import ProcessExecutor  # noqa: E402
from src.preprocessing.pipeline import VideoProcessor, VideoTask  # noqa: E402
from src.preprocessing.runner import run_preprocessing  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed_run(config) -> dict[str, float]:
    """One ``run_preprocessing`` from scratch.

    ``steady_videos_per_s`` and ``driver_cpu_ms_per_video`` cover the middle
    half of the results (every worker started, none idle at the tail yet).
    """
    stamps: list[tuple[float, float]] = []
    start = time.perf_counter()
    report = run_preprocessing(config, overwrite=True, progress=lambda event: stamps.append((time.perf_counter(), _cpu())))
    wall = time.perf_counter() - start
    n = report.stored
    lo, hi = len(stamps) // 4, max(len(stamps) // 4 + 1, 3 * len(stamps) // 4)
    (t_lo, c_lo), (t_hi, c_hi) = stamps[lo], stamps[hi]
    return {
        "videos_per_s": n / wall,
        "steady_videos_per_s": (hi - lo) / (t_hi - t_lo),
        "first_result_s": stamps[0][0] - start,
        "wall_s": wall,
        "driver_cpu_ms_per_video": 1000 * (c_hi - c_lo) / (hi - lo),
        "worker_ms_per_video": 1000 * sum(report.stage_seconds.values()) / max(1, n),
    }


def executor_only(executor, tasks: list[VideoTask]) -> float:
    """Videos/s of an executor alone: results received and dropped, nothing written (start-up excluded)."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=240, help="catalog rows (hard links to the distinct videos)")
    parser.add_argument("--distinct", type=int, default=12, help="distinct videos generated")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
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

        def config(**processing):
            return config_from_dict({"dataset": {"input_dir": str(root)}, "output": {"dir": str(tmp / "out")}, "processing": processing})

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

        # Ray's fixed costs.
        from src.preprocessing.ray_executor import RayExecutor

        rows.append(("import_ray", "seconds", import_seconds(), "s"))
        ray_exec = RayExecutor(config(executor="ray", workers=w), w)
        ray_alone = executor_only(ray_exec, tasks)
        rows.append(("ray_executor_only", "videos_per_s", ray_alone, "videos/s"))
        s = ray_exec.stats
        rows.append(("ray_start", "init_seconds", s.start_seconds, "s"))
        rows.append(("ray_start", "first_actor_ready_seconds", s.first_ready_seconds, "s"))
        rows.append(("ray_executor_only", "get_ms_per_video", 1000 * s.get_seconds / max(1, s.results), "ms"))
        rows.append(("ray_executor_only", "payload_bytes_per_video", s.payload_bytes / max(1, s.results), "bytes"))
        pool_alone = executor_only(ProcessExecutor(config(workers=w), w), tasks)
        rows.append(("pool_executor_only", "videos_per_s", pool_alone, "videos/s"))

        # Whole runs, interleaved.
        runs: dict[str, list[dict[str, float]]] = {f"pool_w{w}": [], f"ray_local_w{w}": [], "pool_w1": []}
        for _ in range(args.repeats):
            runs[f"pool_w{w}"].append(timed_run(config(executor="process", workers=w)))
            runs[f"ray_local_w{w}"].append(timed_run(config(executor="ray", workers=w)))
            runs["pool_w1"].append(timed_run(config(executor="process", workers=1)))

        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        try:
            runs["ray_cluster_1node"] = [timed_run(config(executor="ray", ray_address=cluster.address)) for _ in range(args.repeats)]
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            runs["ray_cluster_2nodes"] = [timed_run(config(executor="ray", ray_address=cluster.address)) for _ in range(args.repeats)]
        finally:
            cluster.shutdown()

        med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
        units = {"videos_per_s": "videos/s", "steady_videos_per_s": "videos/s", "first_result_s": "s", "wall_s": "s", "driver_cpu_ms_per_video": "ms", "worker_ms_per_video": "ms"}
        for name, metrics in med.items():
            rows.extend((name, k, v, units[k]) for k, v in metrics.items())
        pool, ray_run = med[f"pool_w{w}"], med[f"ray_local_w{w}"]
        ratios = {
            "ray_vs_pool_steady_slowdown": pool["steady_videos_per_s"] / ray_run["steady_videos_per_s"],
            "ray_vs_pool_whole_run_slowdown": pool["videos_per_s"] / ray_run["videos_per_s"],
            "ray_vs_pool_executor_only_slowdown": pool_alone / ray_alone,
            "ray_nodes_2_vs_1_speedup": med["ray_cluster_2nodes"]["steady_videos_per_s"] / med["ray_cluster_1node"]["steady_videos_per_s"],
            "pool_workers_2_vs_1_speedup": pool["steady_videos_per_s"] / med["pool_w1"]["steady_videos_per_s"] if w == 2 else float("nan"),
        }
        rows.extend((name, "ratio", v, "x") for name, v in ratios.items())

        print("name,metric,value,unit")
        for name, metric, value, unit in rows:
            print(f"{name},{metric},{value:.4g},{unit}")
        value = {(r[0], r[1]): r[2] for r in rows}
        writer_ms, worker_ms = value["writer", "ms_per_video"], pool["worker_ms_per_video"]
        info = machine_info(tmp)
        print(
            f"\n# {args.videos} catalog rows ({args.distinct} distinct videos, hard-linked), 224x224, {args.seconds:g} s at 25 fps, default config (16 frames, 224 crops, LMDB raw), {args.repeats} repeat(s), median\n"
            f"# pool {pool['steady_videos_per_s']:.2f} videos/s vs Ray {ray_run['steady_videos_per_s']:.2f} steady ({w} workers): "
            f"Ray takes {ratios['ray_vs_pool_steady_slowdown']:.2f}x the pool's time per video (whole run with start-up "
            f"{ratios['ray_vs_pool_whole_run_slowdown']:.2f}x; executors alone, no writer, {ratios['ray_vs_pool_executor_only_slowdown']:.2f}x)\n"
            f"# Ray: import {value['import_ray', 'seconds']:.2f} s, local start {value['ray_start', 'init_seconds']:.2f} s, "
            f"first actor ready after {value['ray_start', 'first_actor_ready_seconds']:.2f} s\n"
            f"# 1 -> 2 nodes (1 CPU each): {med['ray_cluster_1node']['steady_videos_per_s']:.2f} -> {med['ray_cluster_2nodes']['steady_videos_per_s']:.2f} videos/s "
            f"= {ratios['ray_nodes_2_vs_1_speedup']:.2f}x (pool 1 -> 2 workers: {ratios['pool_workers_2_vs_1_speedup']:.2f}x)\n"
            f"# driver per video: the writer alone {writer_ms:.1f} ms wall ({value['writer', 'cpu_ms_per_video']:.1f} ms CPU, the rest waits for the disk); "
            f"driver CPU in a run {ray_run['driver_cpu_ms_per_video']:.1f} ms with Ray, {pool['driver_cpu_ms_per_video']:.1f} ms with the pool; "
            f"a worker spends {worker_ms:.0f} ms per video (pool, {w} workers), so one writer feeds about {worker_ms / max(writer_ms, 1e-9):.0f} workers\n"
            f"# clip on the wire: {value['clip', 'array_bytes'] / 1e6:.2f} MB of arrays, {value['clip', 'pickled_result_bytes'] / 1e6:.2f} MB pickled\n"
            f"# machine: {info['cpu']}, {info['cores']}, {info['ram']} RAM, Python {info['python']}, ray {__import__('ray').__version__}\n"
            f"# reproduce: {shlex.join([Path(sys.executable).name, 'benchmarks/bench_ray.py', *(argv if argv is not None else sys.argv[1:])])}",
            file=sys.stderr,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
