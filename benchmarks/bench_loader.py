"""Loader throughput benchmark: CSV rows ``name,metric,value,unit`` and a summary.

Builds a temporary LMDB store of N synthetic uint8 clips (and the same clips as
pickled float32 dicts in a plain LMDB), then measures clips/s of a typical
pickle-LMDB DataLoader (2 workers), ``create_data_loader`` (defaults, 0 and 2
workers, worker processes, raw uint8) and the memcpy bound; delivery to CUDA
too when a GPU is present. Repeats are interleaved; medians are reported.

Usage::

    python benchmarks/bench_loader.py            # N=192 clips of 3x16x224x224
    python benchmarks/bench_loader.py --quick    # a few seconds, for smoke tests
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from src.bench.loader_bench import BenchResult, run_loader_benchmark  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-clips", "-n", type=int, default=192, help="clips per store (default 192)")
    parser.add_argument("--shape", default="3,16,224,224", help="clip shape C,T,H,W (default 3,16,224,224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per configuration (median reported)")
    parser.add_argument("--no-pickle", action="store_true", help="skip the pickle-LMDB baseline")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA measurements even with a GPU")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke tests: 24 clips of 3x4x32x32, 1 repeat")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        args.shape = tuple(int(s) for s in args.shape.split(","))
    except ValueError:
        parser.error(f"--shape must be four comma-separated integers; got {args.shape!r}")
    if len(args.shape) != 4 or min(args.shape) < 1:
        parser.error(f"--shape must be four positive integers C,T,H,W; got {args.shape}")
    if args.quick:
        args.num_clips, args.shape, args.repeats, args.batch_size = 24, (3, 4, 32, 32), 1, 8
    return args


def report(result: BenchResult) -> None:
    print("name,metric,value,unit")
    for name, metric, value, unit in result.rows():
        print(f"{name},{metric},{value:.3f},{unit}")
    print()
    print("summary:")
    for name in result.runs:
        print(f"  {name:22s} {result.median(name):9.1f} clips/s  {result.median(name) * result.clip_mb:9.1f} MB/s")
    for name, (num, den) in BenchResult.ratio_pairs().items():
        if num in result.runs and den in result.runs:
            print(f"  {name:22s} {result.median(num) / result.median(den):9.2f} x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        result = run_loader_benchmark(
            workdir,
            n=args.num_clips,
            shape=args.shape,
            batch_size=args.batch_size,
            repeats=args.repeats,
            include_pickle=not args.no_pickle,
            cuda=False if args.no_cuda else None,
        )
    report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
