"""A generic catalog for any tree of videos: ``real/`` and ``fake/`` folders, or a ``labels.csv``.

Two layouts are read:

* ``ROOT/labels.csv`` with a header naming at least ``path,label`` and any of
  ``split``, ``method``, ``identity``. ``label`` is ``0``/``1`` or
  ``real``/``fake``; ``split`` is ``train``, ``val`` (or ``dev``) or ``test``
  and, when given, is kept (``split_origin: official``); ``identity`` groups
  the generated splits (without it every video is its own group).
* Otherwise ``ROOT/real/**`` (label 0) and ``ROOT/fake/**`` (label 1); a fake's
  method is its first folder under ``fake/`` (``fake`` for files right in it).

The output folder is named after ROOT.
"""

from __future__ import annotations

import csv
from pathlib import Path

from src.datasets.catalog import Catalog, DatasetCatalog
from src.datasets.layout import VIDEO_ONLY_POLICIES, CatalogBuilder, list_videos, video_only_spec
from src.errors import ConfigError, DatasetError

__all__ = ["CATALOG", "LABELS_FILE", "SPEC", "read_catalog"]

LABELS_FILE = "labels.csv"
_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}
_SPLITS = {"train": "train", "val": "val", "dev": "val", "validation": "val", "test": "test"}

SPEC = video_only_spec(None)


def _read_csv(root: Path, builder: CatalogBuilder) -> None:
    path = root / LABELS_FILE
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    if not {"path", "label"} <= set(header):
        raise DatasetError(f"{path}: the header must name path and label (optional: split, method, identity); got {','.join(header)!r}")
    for n, raw in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        rel = builder.relpath(n, row.get("path", ""), f"{LABELS_FILE}: ")
        if rel is None:
            continue
        label = _LABELS.get(row.get("label", "").lower())
        if label is None:
            builder.problem(n, f"{LABELS_FILE}: label {row.get('label')!r} is not 0, 1, real or fake", rel)
            continue
        split = None
        if row.get("split"):
            split = _SPLITS.get(row["split"].lower())
            if split is None:
                builder.problem(n, f"{LABELS_FILE}: unknown split {row['split']!r} (expected train, val or test)", rel)
                continue
        identity = row.get("identity") or rel
        method = row.get("method") or ("fake" if label else "real")
        builder.add(n, rel, video_label=label, identity=identity, method=method, split=split)


def _read_folders(root: Path, builder: CatalogBuilder) -> None:
    for folder, label in (("real", 0), ("fake", 1)):
        for n, path in enumerate(list_videos(root / folder), start=1):
            rel = path.relative_to(root).as_posix()
            parts = path.relative_to(root / folder).parts
            method = parts[0] if label and len(parts) > 1 else ("fake" if label else "real")
            builder.add(n, rel, video_label=label, identity=rel, method=method)


def read_catalog(root: str | Path, label_policy: str = "video") -> Catalog:
    """Read a generic video tree into records.

    Args:
        root: The folder holding ``labels.csv`` or ``real/`` and ``fake/``.
        label_policy: ``video`` (or ``multimodal``: one label per video).

    Returns:
        The catalog, named after ``root``.

    Raises:
        DatasetError: ``root`` missing, or neither layout found.
        ConfigError: Unknown label policy.
    """
    if label_policy not in VIDEO_ONLY_POLICIES:
        raise ConfigError(f"unknown label policy {label_policy!r} for folder; must be one of {', '.join(VIDEO_ONLY_POLICIES)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"input root not found: {root}")
    builder = CatalogBuilder(root, "folder", VIDEO_ONLY_POLICIES[label_policy])
    if (root / LABELS_FILE).is_file():
        _read_csv(root, builder)
    elif (root / "real").is_dir() or (root / "fake").is_dir():
        _read_folders(root, builder)
    else:
        raise DatasetError(f"{root}: neither {LABELS_FILE} nor real/ and fake/ folders found")
    name = root.resolve().name or "dataset"
    return Catalog(name=name, records=builder.records_sorted(), problems=builder.problems)


#: The registered dataset (``--dataset folder``).
CATALOG = DatasetCatalog(SPEC, read_catalog)
