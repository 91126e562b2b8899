"""Print a summary of a preprocessed dataset: what is stored, one loaded batch, read speed.

    python -m src.demo_summary data/processed/FakeAVCeleb_v1.2

The last step of ``make demo``. It only uses the public API of the spec
(``src.utils.lmdb_utils``, ``src.data.lmdb_storage``), so it doubles as a check
that the spec's examples run on a store made by the pipeline.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="dataset output root, e.g. data/processed/FakeAVCeleb_v1.2")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from src.data.lmdb_storage import LMDBStorage
    from src.utils.lmdb_utils import benchmark_lmdb_performance, create_train_val_loaders, query_samples_by_category, query_samples_by_label

    root = args.root
    train, val = root / "train" / "data.lmdb", root / "val" / "data.lmdb"
    if not train.exists():
        print(f"error: no LMDB store at {train}; run preprocess.py first", file=sys.stderr)
        return 2

    print(f"\n== {root}")
    print(f"{'split':<6} {'samples':>7} {'real':>5} {'fake':>5}  methods")
    for split in ("train", "val", "test"):
        meta_file = root / split / "metadata.json"
        if not meta_file.exists():
            continue
        meta = json.loads(meta_file.read_text())
        labels = meta["counts"]["label"]
        methods = ", ".join(f"{m} {n}" for m, n in meta["counts"]["method"].items())
        print(f"{split:<6} {meta['num_samples']:>7} {labels.get('0', 0):>5} {labels.get('1', 0):>5}  {methods}")
    report_file = root / "preprocess_report.json"
    if report_file.exists():
        report = json.loads(report_file.read_text())
        print(f"failed videos: {len(report['failed'])} (reasons in {report_file})")
        for f in report["failed"]:
            print(f"  {f['video_path']}: {f['reason'].split(': ', 1)[-1]}")

    with LMDBStorage(train) as storage:
        keys = storage.get_all_keys()
        sample = storage.retrieve_sample(keys[0])
        print(f"\n{keys[0]}: data {sample['data'].shape} {sample['data'].dtype}, label {sample['label']}, "
              f"method {sample['metadata']['method']}, face_found {sample['metadata']['face_found']}, "
              f"audio {None if sample.get('audio') is None else sample['audio'].shape}")
    print(f"query: {len(query_samples_by_label(train, 0))} real, {len(query_samples_by_label(train, 1))} fake, "
          f"{len(query_samples_by_category(train, 'A'))} in category A")

    train_loader, val_loader = create_train_val_loaders(
        train_db_path=str(train), val_db_path=str(val), batch_size=args.batch_size, num_workers=2, target_device="cpu"
    )
    batch = next(iter(train_loader))
    audio = batch.get("audio")
    print(f"train batch: data {tuple(batch['data'].shape)} {batch['data'].dtype}, label {tuple(batch['label'].shape)}"
          + (f", audio {tuple(audio.shape)}" if audio is not None else ""))
    perf = benchmark_lmdb_performance(str(train), num_samples=1000)
    print(f"read speed: random {perf['avg_random_access_time_ms']:.2f} ms/sample, sequential {perf['avg_sequential_access_time_ms']:.2f} ms/sample, "
          f"{perf['samples_per_second_random']:.0f} samples/s random")
    return 0


if __name__ == "__main__":
    sys.exit(main())
