#!/usr/bin/env python
"""Benchmarks against the alternatives a researcher would pick: CSV, plots and a README table.

    python benchmarks/run.py [--quick] [--out DIR] [--clips N] [--repeats R] [--only a,b]

Stores the same synthetic face clips (3x16x224x224 uint8) with every contender
of ``benchmarks/contenders.py`` (this project's LMDB store with each codec and
its HDF5/numpy/torch stores; pickled dicts and per-frame PNGs in LMDB, plain
h5py/.npy/.pt files, WebDataset shards; memcpy and a flat file as physical
bounds), measures write speed, size, PSNR, random-read latency (warm and cold),
sequential reads and DataLoader throughput, then times preprocessing (this
pipeline vs a DeepfakeBench-style one). See ``benchmarks/measure.py`` for the
method. Writes to DIR (default ``benchmarks/results/``):

* ``results.csv``: every measurement: contender,metric,value,unit,cache,notes
  (value empty = n/a, the notes say why); also printed on stdout;
* ``results.md``: tables ready to paste into the README (absolute numbers and
  ratios against memcpy and pickle-LMDB), the machine and the exact command;
* PNG plots: random-read latency, DataLoader throughput, bytes per clip,
  write and sequential throughput, preprocessing speed.

``--quick`` (12 clips, one repeat, 3 one-second videos; under a minute) is the
smoke test run by ``tests/test_benchmarks.py``; the default (256 clips, about
620 MB of raw clips, 11 GB of scratch space that must fit in the page cache,
3 repeats) takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.contenders import CONTENDERS  # noqa: E402
from benchmarks.measure import Settings, ratio_rows, run_preprocess, run_storage  # noqa: E402
from benchmarks.plots import draw_all  # noqa: E402
from benchmarks.report import markdown, write_csv  # noqa: E402
from benchmarks.workload import CLIP_SHAPE, clip_labels, machine_info, make_clips, room_for  # noqa: E402

logger = logging.getLogger("benchmarks.run")

QUICK = {"clips": 12, "repeats": 1, "batch_size": 4, "random_reads": 12, "cold_reads": 4, "videos": 3, "seconds": 1.0, "preprocess_repeats": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output directory")
    parser.add_argument("--clips", type=int, default=256, help="clips per store")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, interleaved across contenders")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--random-reads", type=int, default=64, help="random single-clip reads per contender per round (warm)")
    parser.add_argument("--cold-reads", type=int, default=16, help="random single-clip reads per contender per round (cold)")
    parser.add_argument("--videos", type=int, default=6, help="videos for the preprocessing comparison")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each preprocessing video")
    parser.add_argument("--preprocess-repeats", type=int, default=3)
    parser.add_argument("--only", default="", help=f"comma-separated contenders (default all: {', '.join(CONTENDERS)})")
    parser.add_argument("--no-preprocess", action="store_true", help="skip the preprocessing comparison")
    parser.add_argument("--no-cold", action="store_true", help="skip cold reads (no page-cache dropping)")
    parser.add_argument("--fadvise-only", action="store_true", help="drop only the stores' pages (posix_fadvise), never /proc/sys/vm/drop_caches")
    parser.add_argument("--workdir", type=Path, default=None, help="where the scratch directory is made (default: the system's temp dir)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the stores after the run")
    parser.add_argument("--image-prefix", default="", help="prefix of the plot links in results.md, e.g. docs/benchmarks/ once the PNGs are copied there for the README")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        defaults = {k: parser.get_default(k) for k in QUICK}
        for key, value in QUICK.items():
            if getattr(args, key) == defaults[key]:  # explicit options still win over --quick
                setattr(args, key, value)
    args.only = [n for n in args.only.split(",") if n]
    unknown = [n for n in args.only if n not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; must be among {', '.join(CONTENDERS)}")
    for name in ("clips", "repeats", "batch_size", "random_reads", "cold_reads", "videos", "preprocess_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive; got {args.seconds}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        logging.getLogger("src").setLevel(logging.WARNING)
    command = shlex.join(["python", *(sys.argv if argv is None else [sys.argv[0], *argv])])
    started = time.perf_counter()
    names = args.only or list(CONTENDERS)
    settings = Settings(
        repeats=args.repeats,
        batch_size=args.batch_size,
        random_reads=args.random_reads,
        cold_reads=args.cold_reads,
        seed=args.seed,
        drop_system_cache=not args.fadvise_only,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench_run_", dir=args.workdir))
    try:
        machine = machine_info(workdir)
        # At most one raw copy of the clips per contender, four for float32 pickles.
        copies = sum(4 if n == "pickle_lmdb_f32" else 1 for n in names)
        for problem in room_for(workdir, args.clips * math.prod(CLIP_SHAPE) * copies):
            logger.warning("%s", problem)
        logger.info("generating %d clips of %s", args.clips, "x".join(map(str, CLIP_SHAPE)))
        clips = make_clips(args.clips, CLIP_SHAPE, seed=args.seed)
        contenders = [CONTENDERS[n](workdir / "stores", CLIP_SHAPE) for n in names]
        rows, cold_method = run_storage(contenders, clips, clip_labels(len(clips)), settings, cold=not args.no_cold)
        del clips
        for c in contenders:
            c.close()
        rows += ratio_rows(rows)
        if not args.no_preprocess:
            rows += run_preprocess(workdir / "preprocess", args.videos, args.seconds, args.preprocess_repeats)
    finally:
        if args.keep_workdir:
            logger.info("stores kept in %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    kinds = {n: CONTENDERS[n].kind for n in names}
    plots = draw_all(rows, kinds, args.out)
    write_csv(rows, args.out / "results.csv")
    clip_mb = CLIP_SHAPE[0] * CLIP_SHAPE[1] * CLIP_SHAPE[2] * CLIP_SHAPE[3] / 1e6
    run_settings = {
        "clips": f"{args.clips} synthetic face clips of {'x'.join(map(str, CLIP_SHAPE))} uint8 ({clip_mb:.2f} MB each, {args.clips * clip_mb:.0f} MB in all)",
        "repeats": f"{args.repeats} (interleaved), after one untimed warm-up pass",
        "random reads": f"{args.random_reads} warm and {args.cold_reads} cold per contender per repeat",
        "DataLoader": f"batch {args.batch_size}, shuffled (seeded) except webdataset; built per epoch (workers and this project's reader threads start afresh)",
        "cold reads": "skipped" if args.no_cold else f"page cache dropped with {cold_method}, stores closed first",
        "preprocessing": "skipped" if args.no_preprocess else f"{args.videos} videos of {args.seconds:g} s, {args.preprocess_repeats} repeat(s)",
        "wall time": f"{elapsed:.0f} s",
    }
    descriptions = {n: CONTENDERS[n].description for n in names}
    report = markdown(
        rows,
        kinds=kinds,
        descriptions=descriptions,
        machine=machine,
        command=command,
        settings=run_settings,
        plots=[f"{args.image_prefix.rstrip('/')}/{p.name}" if args.image_prefix else p.name for p in plots],
    )
    (args.out / "results.md").write_text(report)
    write_csv(rows, sys.stdout)
    failed = sorted({r.contender for r in rows if "error: " in r.notes})
    logger.info("done in %.0f s: %s (%d rows, %d plots)%s", elapsed, args.out, len(rows), len(plots), f"; FAILED: {', '.join(failed)}" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
