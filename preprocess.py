#!/usr/bin/env python
"""Preprocess a raw deepfake dataset into face-clip stores.

    python preprocess.py --dataset fakeavceleb

reads ``configs/preprocessing.yaml``, turns ``data/raw/FakeAVCeleb_v1.2`` into
``data/processed/FakeAVCeleb_v1.2/{train,val,test}/{data.lmdb,metadata.json}``
and prints a summary. Running the same command again resumes; ``--overwrite``
starts over. Exit status: 0 when the run completed (failed videos are listed in
the report), 2 for a bad config, dataset name or input path, 1 for a storage
error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from src.config import load_config
from src.data import CODECS, backend_names
from src.datasets.catalog import catalog_names
from src.errors import ConfigError, DatasetError, DeepfakeDataError, StorageError
from src.plugins import load_plugins
from src.preprocessing.registries import EXECUTORS

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "preprocessing.yaml"
PRESET_DIR = DEFAULT_CONFIG.parent / "presets"


def preset_names() -> list[str]:
    """The presets shipped in ``configs/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _config_path(args: argparse.Namespace) -> str:
    if args.preset and args.config:
        raise ConfigError("give --preset or --config, not both (a preset is a config file: configs/presets/NAME.yaml)")
    if args.preset:
        return str(PRESET_DIR / f"{args.preset}.yaml")
    return args.config or str(DEFAULT_CONFIG)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help=f"dataset catalog: {', '.join(catalog_names())}")
    parser.add_argument("--config", default=None, help="YAML config (default: configs/preprocessing.yaml)")
    parser.add_argument("--preset", choices=preset_names(), help="a standard setting of the field (configs/presets/NAME.yaml; see its header)")
    parser.add_argument(
        "--input-dir", help="dataset root (default: dataset.input_dir; for another dataset than the config's, its usual folder beside it)"
    )
    parser.add_argument("--output-dir", help="parent of the dataset's output folder (default: output.dir)")
    parser.add_argument("--format", choices=backend_names(), help="store format (default: output.format)")
    parser.add_argument("--codec", choices=CODECS, help="clip codec (default: output.codec)")
    parser.add_argument("--workers", type=int, help="worker processes (default: the number of CPU cores)")
    parser.add_argument("--executor", choices=EXECUTORS.names(), help="how videos are processed (default: processing.executor)")
    parser.add_argument(
        "--ray-address", metavar="auto|HOST:PORT", help="join this Ray cluster (implies --executor ray; default: processing.ray_address, null = a local instance)"
    )
    parser.add_argument("--limit", type=int, help="process at most N videos (each split in proportion)")
    parser.add_argument("--overwrite", action="store_true", help="delete existing stores and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def _print_summary(report) -> None:
    labels = sorted({label for counts in report.split_labels.values() for label in counts})
    names = {"0": "real", "1": "fake", "-1": "unlabelled"}
    header = ("split", "samples", *(names.get(label, f"label {label}") for label in labels))
    print(f"\n{report.dataset} -> {report.output_root} ({report.format})")
    print("  " + "".join(f"{h:<8}" if i == 0 else f"{h:>11}" for i, h in enumerate(header)))
    for split, n in report.split_counts.items():
        cells = [str(n), *(str(report.split_labels.get(split, {}).get(label, 0)) for label in labels)]
        print(f"  {split:<8}" + "".join(f"{c:>11}" for c in cells))
    print(
        f"  this run: {report.stored} stored, {len(report.failed)} failed, {len(report.skipped_no_face)} skipped (no face), "
        f"{report.already_stored} already stored, {len(report.skipped_rows)} metadata rows skipped, {len(report.catalog_notes)} fixed"
    )
    print(f"  {report.wall_seconds:.1f} s wall, {report.videos_per_second:.2f} videos/s with {report.workers} workers")
    for failure in report.failed[:10]:
        print(f"  failed: {failure['video_path']}: {failure['reason']}")
    if len(report.failed) > 10:
        print(f"  ... and {len(report.failed) - 10} more in {report.output_root}/preprocess_report.json")


def _default_input_dir(config_path: str, dataset: str) -> str | None:
    """The config's input folder; for another dataset than the config's, its usual folder beside it.

    ``--dataset faceforensics`` with the default config reads ``data/raw/FaceForensics++``.
    """
    from src.datasets.catalog import catalog_spec

    base = load_config(config_path).dataset
    if base.name.lower() == dataset.lower():
        return None
    dir_name = catalog_spec(dataset).dir_name
    return str(Path(base.input_dir).parent / dir_name) if dir_name else None


def main(argv: list[str] | None = None) -> int:
    try:
        load_plugins()  # $DEEPFAKE_DATA_PLUGINS: registered names become valid choices below
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.config = _config_path(args)
        overrides = {
            "dataset": {"name": args.dataset, "input_dir": args.input_dir},
            "output": {"dir": args.output_dir, "format": args.format, "codec": args.codec},
            "processing": {
                "workers": args.workers,
                "limit": args.limit,
                "executor": args.executor or ("ray" if args.ray_address else None),
                "ray_address": args.ray_address,
            },
        }
        from src.datasets.catalog import get_catalog

        get_catalog(args.dataset)  # unknown names fail before any work
        if args.input_dir is None:
            overrides["dataset"]["input_dir"] = _default_input_dir(args.config, args.dataset)
        config = load_config(args.config, overrides)
        from src.preprocessing.runner import run_preprocessing
        bar = None
        if not args.no_progress:
            from tqdm import tqdm

            def progress(event) -> None:
                nonlocal bar
                if bar is None:
                    bar = tqdm(total=event.total, unit="video", dynamic_ncols=True)
                bar.update(1)
                bar.set_postfix(failed=event.failed)
        else:
            progress = None
        try:
            if args.no_progress:
                report = run_preprocessing(config, overwrite=args.overwrite, progress=progress)
            else:
                from tqdm.contrib.logging import logging_redirect_tqdm

                with logging_redirect_tqdm():  # warnings print above the bar instead of breaking it
                    report = run_preprocessing(config, overwrite=args.overwrite, progress=progress)
        finally:
            if bar is not None:
                bar.close()
    except (ConfigError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (StorageError, DeepfakeDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: committed samples are kept; run the same command to resume", file=sys.stderr)
        return 130
    _print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
