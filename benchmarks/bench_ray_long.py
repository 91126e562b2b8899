#!/usr/bin/env python
"""Whole runs of a longer catalog, process pool vs Ray (actors writing shards): start-up amortised.

    python benchmarks/bench_ray_long.py [--videos 960] [--seconds 4] [--workers 2] [--repeats 2] [--quick]

``bench_ray.py`` measures everything on 240 rows, where Ray's fixed start-up
(a local instance, then actors loading their detectors: ~4-7 s) weighs on a
~13 s run. This runs the same default config (16 frames, 224x224 crops,
LMDB raw) on ``--videos`` rows (12 distinct 224x224 talking-head videos,
hard-linked) with the pool and with Ray (``ray_write: shards``), the same
number of workers, interleaved, and prints the medians and the ratio of
Ray's whole-run time to the pool's (the issue's "overhead of Ray over the
pool": at most 1.3x).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.bench_preprocess import make_dataset  # noqa: E402
from benchmarks.bench_ray import replicate, timed_run  # noqa: E402
from benchmarks.workload import machine_info  # noqa: E402
from src.config import config_from_dict  # noqa: E402

UNITS = {"videos_per_s": "videos/s", "steady_videos_per_s": "videos/s", "wall_s": "s", "first_result_s": "s", "driver_cpu_ms_per_video": "ms"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=960, help="catalog rows (hard links to 12 distinct videos)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="12 rows of 1 s clips, 1 repeat (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.seconds, args.repeats = 12, 1.0, 1
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_long_"))
    try:
        root = tmp / "raw" / "FakeAVCeleb_v1.2"
        paths = make_dataset(root, min(12, args.videos), args.seconds)
        replicate(root, paths, args.videos)

        def config(**processing):
            return config_from_dict({"dataset": {"input_dir": str(root)}, "output": {"dir": str(tmp / "out")}, "processing": processing})

        contenders = [("pool", {"executor": "process"}), ("ray_shards", {"executor": "ray", "ray_write": "shards"})]
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in contenders}
        for r in range(args.repeats):
            for name, processing in contenders if r % 2 == 0 else contenders[::-1]:
                runs[name].append(timed_run(config(workers=args.workers, **processing)))
        med = {name: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for name, rs in runs.items()}
        print("name,metric,value,unit")
        for name, metrics in med.items():
            for metric in UNITS:
                print(f"{name},{metric},{metrics[metric]:.4g},{UNITS[metric]}")
        info = machine_info(tmp)
        whole = med["pool"]["videos_per_s"] / med["ray_shards"]["videos_per_s"]
        steady = med["pool"]["steady_videos_per_s"] / med["ray_shards"]["steady_videos_per_s"]
        print(f"ray_vs_pool,whole_run_time_ratio,{whole:.4g},x")
        print(f"ray_vs_pool,steady_time_ratio,{steady:.4g},x")
        print(
            f"# {args.videos} rows of {args.seconds:g} s clips, {args.workers} workers, {args.repeats} repeat(s), median\n"
            f"# videos/s whole run (steady): pool {med['pool']['videos_per_s']:.2f} ({med['pool']['steady_videos_per_s']:.2f}), "
            f"Ray shards {med['ray_shards']['videos_per_s']:.2f} ({med['ray_shards']['steady_videos_per_s']:.2f})\n"
            f"# Ray's time / the pool's: {whole:.2f}x whole run, {steady:.2f}x steady (target: at most 1.3x)\n"
            f"# machine: {info['cpu']}, {info['cores']}, {info['ram']} RAM, Python {info['python']}, scratch {info['scratch disk']}\n"
            f"# reproduce: python benchmarks/bench_ray_long.py {shlex.join(argv if argv is not None else sys.argv[1:])}",
            file=sys.stderr,
        )
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
