#!/usr/bin/env python
"""Inspect face-clip stores: describe them, verify them, preview their clips.

    python inspect_data.py info    data/processed/FakeAVCeleb_v1.2
    python inspect_data.py verify  data/processed/FakeAVCeleb_v1.2/train --strict
    python inspect_data.py preview data/processed/FakeAVCeleb_v1.2/train/data.lmdb --out train.png
    python inspect_data.py compact data/processed/FakeAVCeleb_v1.2

PATH is a store (data.lmdb, data.h5, data.numpy, data.torch), a split
directory holding one, or a dataset output root (every split found is used).
compact rewrites each shard set found (written by the Ray executor's actors)
as one ordinary LMDB store, byte for byte; other stores are left alone.
Exit status: 0 when everything is fine, 1 when a store is damaged, incomplete
under --strict, or cannot be opened, 2 when PATH holds no store or an argument
is invalid.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

from src.errors import DeepfakeDataError, StorageError
from src.inspect.info import LABEL_NAMES, StoreInfo, collect_info, compact_config, find_dataset_stores, summarize_datasets
from src.inspect.stores import StoreTarget, human_size, one_line, open_checked
from src.inspect.verify import VerifyReport, verify_store

EXIT_OK, EXIT_BAD, EXIT_USAGE = 0, 1, 2


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{info,verify,preview,compact}")

    info = commands.add_parser("info", help="format, counts, schema, codec, size, completeness and config (no sample is decoded)")
    info.add_argument("path", help="a store, a split directory or a dataset output root")
    info.add_argument("--json", action="store_true", help="print everything as JSON")

    verify = commands.add_parser("verify", help="decode every record with checksums and check the indexes")
    verify.add_argument("path", help="a store, a split directory or a dataset output root")
    verify.add_argument("--strict", action="store_true", help="a store without its completion marker is an error, not a warning")
    verify.add_argument("--json", action="store_true", help="print the reports as JSON")
    verify.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    preview = commands.add_parser("preview", help="write a PNG contact sheet of random clips")
    preview.add_argument("path", help="a store, a split directory or a dataset output root")
    preview.add_argument(
        "--out",
        default="preview.png",
        help="PNG file (default: preview.png); with several stores, one file each, named <stem>_<split><suffix>",
    )
    preview.add_argument("--num", type=_positive, default=8, help="clips, one per row (default: 8)")
    preview.add_argument("--seed", type=int, default=0, help="seed of the random choice of clips (default: 0)")
    preview.add_argument("--frames", type=_positive, default=8, help="evenly spaced frames per row (default: 8)")
    preview.add_argument("--tile", type=_positive, default=128, help="side of each frame's tile in pixels (default: 128)")
    preview.add_argument("--landmarks", action="store_true", help="draw the stored face landmarks (frames without a face are always marked)")

    compact = commands.add_parser("compact", help="rewrite each shard set as one ordinary LMDB store (records byte for byte)")
    compact.add_argument("path", help="a store, a split directory or a dataset output root")
    return parser.parse_args(argv)


class _QuietStoreWarnings(logging.Filter):
    """Drop src.data.storage's warnings below ERROR: this tool reports a store's state itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.name.startswith("src.data.storage")


def _configure_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if root.handlers:  # embedded (tests, notebooks): leave the host's logging alone
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(_QuietStoreWarnings())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


def _describe(target: StoreTarget, exc: Exception) -> str:
    if isinstance(exc, StorageError):
        return one_line(exc)  # names the store already
    return f"{target.path}: {type(exc).__name__}: {one_line(exc)}"


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- info


def _counts_line(name: str, counts: dict[str, int] | None) -> str:
    if counts is None:
        return "not indexed"
    if not counts:
        return "none"
    if name == "label":
        return ", ".join(
            f"{v} ({LABEL_NAMES[int(v)]}): {n}" if v.isdigit() and int(v) in LABEL_NAMES else f"{v}: {n}" for v, n in counts.items()
        )
    return ", ".join(f"{v or '(none)'}: {n}" for v, n in counts.items())


def _schema_line(schema: dict) -> str:
    parts = []
    for name, spec in schema.items():
        if isinstance(spec, dict):
            shape = spec.get("shape")
            dims = "variable" if shape is None else "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
            parts.append(f"{name} {spec.get('dtype')} {dims}")
    return "; ".join(parts) or "empty"


def _print_info(info: StoreInfo, same_config_as: str | None = None) -> None:
    state = "complete" if info.complete else "INCOMPLETE (no completion marker)"
    codec = info.codec or "?"
    if info.codec_options:
        codec += " (" + " ".join(f"{k}={v}" for k, v in info.codec_options.items()) + ")"
    print(f"{info.name}  {info.path}")
    rows = [
        ("dataset", info.dataset or "?"),
        ("format", f"{info.format}, format version {info.format_version}, {state}"),
        ("samples", str(info.num_samples)),
        *([("layout", f"shard set of {info.extra_meta['num_shards']} shards (data.lmdb/shards/)")] if info.extra_meta.get("sharded") else []),
        ("size", f"{human_size(info.size_bytes)} ({info.size_bytes:,} bytes)"),
        ("codec", codec),
        ("schema", _schema_line(info.schema)),
    ]
    rows += [(f"by {name}", _counts_line(name, counts)) for name, counts in info.counts.items()]
    if info.created or info.updated:
        rows.append(("written", f"{info.created or '?'} .. {info.updated or '?'}"))
    for name, value in rows:
        print(f"  {name:<13}{value}")
    lines = compact_config(info.config)
    if same_config_as is not None:
        print(f"  {'config':<13}same as {same_config_as}")
    elif lines:
        print("  config")
        for section, text in lines:
            print(f"    {section}: {text}")
    else:
        print(f"  {'config':<13}not recorded")


def _run_info(targets: list[StoreTarget], args: argparse.Namespace) -> int:
    infos: list[StoreInfo] = []
    errors: list[dict[str, str]] = []
    for target in targets:
        try:
            with open_checked(target.path) as store:
                infos.append(collect_info(store, target))
        except Exception as exc:  # a damaged store is reported, never a traceback
            errors.append({"name": target.name, "path": str(target.path), "error": _describe(target, exc)})
    if args.json:
        datasets = [s.to_dict() for s in summarize_datasets(infos)]
        print(json.dumps({"path": args.path, "stores": [i.to_dict() for i in infos], "datasets": datasets, "errors": errors}, indent=2, default=str))
    else:
        for i, info in enumerate(infos):
            if i:
                print()
            # Splits of one run share their config: print it once.
            first = next(j for j in infos if j.config == info.config)
            _print_info(info, same_config_as=first.name if first is not info and info.config else None)
        summaries = summarize_datasets(infos)
        if len(summaries) > 1:
            print("\ndatasets:")
            for summary in summaries:
                labels = _counts_line("label", summary.counts.get("label"))
                splits = ", ".join(f"{split} {n}" for split, n in summary.splits.items())
                print(f"  {summary.name:<20} {summary.num_samples:>8} samples ({splits}); {labels}; {human_size(summary.size_bytes)}")
        if len(targets) > 1:
            total = sum(i.num_samples for i in infos)
            size = sum(i.size_bytes for i in infos)
            print(f"\ntotal: {total} samples, {human_size(size)} in {len(infos)} stores")
    for err in errors:
        _error(err["error"])
    return EXIT_BAD if errors else EXIT_OK


# --------------------------------------------------------------------------- verify


def _print_report(report: VerifyReport) -> None:
    count = "?" if report.num_samples is None else report.num_samples
    head = f"{report.name} ({report.format}, {count} samples, {report.decoded} decoded)"
    if report.ok:
        print(f"{head}: OK")
    else:
        found = []
        if report.bad_keys:
            found.append(f"{len(report.bad_keys)} bad key{'s' if len(report.bad_keys) != 1 else ''}")
        if report.problems:
            found.append(f"{len(report.problems)} store problem{'s' if len(report.problems) != 1 else ''}")
        print(f"{head}: FAILED, {', '.join(found)}")
    for key in sorted(report.bad_keys):
        for reason in report.bad_keys[key]:
            print(f"  bad key {key}: {reason}")
    for problem in report.problems:
        print(f"  problem: {problem}")
    for warning in report.warnings:
        print(f"  warning: {warning}")


def _run_verify(targets: list[StoreTarget], args: argparse.Namespace) -> int:
    from tqdm import tqdm

    reports: list[VerifyReport] = []
    errors: list[dict[str, str]] = []
    for target in targets:

        def progress(keys, _name=target.name):
            return tqdm(
                keys, desc=f"verify {_name}", unit="sample", leave=False, file=sys.stderr, disable=True if args.no_progress else None
            )

        try:
            with open_checked(target.path) as store:
                report = verify_store(store, name=target.name, strict=args.strict, iterate=progress)
        except StorageError as exc:
            errors.append({"name": target.name, "path": str(target.path), "error": one_line(exc)})
            continue
        reports.append(report)
        if not args.json:
            _print_report(report)
    bad = [r for r in reports if not r.ok]
    if args.json:
        print(
            json.dumps(
                {"path": args.path, "ok": not bad and not errors, "stores": [r.to_dict() for r in reports], "errors": errors}, indent=2
            )
        )
    elif len(targets) > 1:
        print(f"\n{len(targets) - len(bad) - len(errors)} of {len(targets)} stores OK")
    for err in errors:
        _error(err["error"])
    return EXIT_BAD if bad or errors else EXIT_OK


# --------------------------------------------------------------------------- preview


def _preview_path(out: Path, target: StoreTarget, targets: list[StoreTarget]) -> Path:
    if len(targets) == 1:
        return out
    splits = [t.split for t in targets]
    tag = target.split if splits.count(target.split) == 1 else target.name
    return out.with_name(f"{out.stem}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', tag)}{out.suffix}")


def _run_preview(targets: list[StoreTarget], args: argparse.Namespace) -> int:
    from src.inspect.preview import contact_sheet, write_png

    status = EXIT_OK
    for target in targets:
        out = _preview_path(Path(args.out), target, targets)
        try:
            with open_checked(target.path) as store:
                sheet = contact_sheet(store, num=args.num, seed=args.seed, frames=args.frames, tile=args.tile, landmarks=args.landmarks)
            write_png(out, sheet.image)
        except Exception as exc:  # a damaged store is reported, never a traceback
            _error(_describe(target, exc))
            status = EXIT_BAD
            continue
        width, height = sheet.size
        print(f"{target.name}: wrote {out} ({len(sheet.keys)} clips x {args.frames} frames, {width}x{height} px)")
        for key, reason in sheet.failed.items():
            print(f"  unreadable {key}: {reason}")
        if sheet.failed:
            status = EXIT_BAD
    return status


# --------------------------------------------------------------------------- main

def _run_compact(targets: list[StoreTarget], args: argparse.Namespace) -> int:
    from src.data.lmdb_shards import compact_shard_set, is_shard_set

    status = EXIT_OK
    for target in targets:
        if not is_shard_set(target.path):
            print(f"{target.name}: not a shard set, left as it is")
            continue
        try:
            copied = compact_shard_set(target.path)
        except DeepfakeDataError as exc:
            _error(f"{target.name}: {one_line(exc)}")
            status = EXIT_BAD
            continue
        print(f"{target.name}: {copied} records now in one LMDB store")
    return status


_COMMANDS = {"info": _run_info, "verify": _run_verify, "preview": _run_preview, "compact": _run_compact}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _configure_logging(args.verbose)
    targets = find_dataset_stores(args.path)
    if not targets:
        what = (
            "does not exist" if not Path(args.path).exists() else "is not a store, a split directory holding one, or a dataset output root"
        )
        _error(f"{args.path}: {what}")
        return EXIT_USAGE
    try:
        return _COMMANDS[args.command](targets, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_BAD)
