#!/usr/bin/env python
"""The driver's CPU per video against the videos per actor call (``processing.ray_batch``).

    python benchmarks/bench_ray_batch.py [--videos 600] [--batches 1,4,16] [--repeats 2] [--quick]

Light clips (1 s videos, 4 frames, 64x64 crops, Haar, no landmarks) keep two
actors fast, so that the driver's own work shows: its CPU over the middle half
of each run (``bench_ray.timed_run``), per video, for each batch size, with
the process pool as a reference. Runs are interleaved; medians.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=600, help="catalog rows (hard links to 6 distinct 1 s videos)")
    parser.add_argument("--batches", default="1,4,16", help="ray_batch values (comma-separated)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="24 rows, batches 1 and 4, 1 repeat (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.batches, args.repeats = 24, "1,4", 1
    batches = [int(b) for b in args.batches.split(",")]
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_batch_"))
    try:
        root = tmp / "raw" / "FakeAVCeleb_v1.2"
        replicate(root, make_dataset(root, min(6, args.videos), 1.0), args.videos)

        def config(**processing):
            return config_from_dict({
                "dataset": {"input_dir": str(root)}, "output": {"dir": str(tmp / "out")}, "frames": {"num_frames": 4},
                "faces": {"image_size": 64, "detector": "haar", "landmarks": None, "align": False}, "processing": processing,
            })

        runs: dict[str, list[dict[str, float]]] = {}
        for r in range(args.repeats):
            for b in batches if r % 2 == 0 else batches[::-1]:
                runs.setdefault(f"ray_batch{b}", []).append(timed_run(config(executor="ray", workers=2, ray_write="shards", ray_batch=b)))
            runs.setdefault("pool", []).append(timed_run(config(executor="process", workers=2)))
        print("name,metric,value,unit")
        med = {name: {m: statistics.median(x[m] for x in rs) for m in ("driver_cpu_ms_per_video", "steady_videos_per_s")} for name, rs in runs.items()}
        for name, metrics in med.items():
            print(f"{name},driver_cpu_ms_per_video,{metrics['driver_cpu_ms_per_video']:.4g},ms")
            print(f"{name},steady_videos_per_s,{metrics['steady_videos_per_s']:.4g},videos/s")
        info = machine_info(tmp)
        parts = [f"batch {b}: {med[f'ray_batch{b}']['driver_cpu_ms_per_video']:.2f} ms" for b in batches]
        print(
            f"# driver CPU per video ({args.videos} light 1 s clips, 2 actors, {args.repeats} repeat(s), median): "
            + ", ".join(parts) + f"; pool {med['pool']['driver_cpu_ms_per_video']:.2f} ms\n"
            f"# machine: {info['cpu']}, {info['cores']}, {info['ram']} RAM, Python {info['python']}, scratch {info['scratch disk']}\n"
            f"# reproduce: python benchmarks/bench_ray_batch.py {shlex.join(argv if argv is not None else sys.argv[1:])}",
            file=sys.stderr,
        )
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
