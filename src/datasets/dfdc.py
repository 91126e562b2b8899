"""DFDC (the full Kaggle set) catalog: per-part ``metadata.json`` files and an optional test folder.

Layout (selimsef/dfdc_deepfake_challenge ``preprocessing/utils.py``; DeepfakeBench ``rearrange.py``)::

    dfdc_train_part_N/metadata.json   {"x.mp4": {"label": "REAL"|"FAKE", "split": "train", "original": "y.mp4"|null}}
    dfdc_train_part_N/x.mp4
    test/labels.csv                   filename,label (1 fake), optional
    test/*.mp4

Unzipped parts may nest their folder (``dfdc_train_part_0/dfdc_train_part_0/``):
both are accepted, and so is a root one level up or down. Labels are per video
only (the metadata does not say which modality was altered): ``video_label`` is
the label, ``audio_label`` 0. ``test/`` is the official test split when present;
otherwise the test split is carved out too. The generated splits group by
*family*: a fake shares its split with its ``original``, so no source video
crosses splits.
"""

from __future__ import annotations

import csv
from pathlib import Path

from src.datasets.catalog import Catalog, DatasetCatalog, DatasetSpec
from src.datasets.layout import VIDEO_ONLY_POLICIES, CatalogBuilder, load_json, locate_root
from src.errors import ConfigError, DatasetError

__all__ = ["CATALOG", "DATASET_NAME", "SPEC", "read_catalog"]

DATASET_NAME = "DFDC"
_PART_PREFIX = "dfdc_train_part_"
_LABELS = {"REAL": 0, "FAKE": 1}
_KNOWN_SPLITS = ("train",)

SPEC = DatasetSpec(
    label_policies=VIDEO_ONLY_POLICIES,
    index_fields=("label",),
    summary_fields=("video_path", "label", "source", "split_origin", "num_frames", "face_found", "has_audio"),
    count_fields=("label", "split_origin"),
    dir_name=DATASET_NAME,
)


def _parts(root: Path) -> list[Path]:
    """The part folders holding a metadata.json (a nested same-named folder accepted)."""
    out = []
    for part in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PART_PREFIX)):
        nested = part / part.name
        out.append(nested if not (part / "metadata.json").is_file() and (nested / "metadata.json").is_file() else part)
    return out


def _read_part(root: Path, part: Path, builder: CatalogBuilder, pool: tuple[str, ...]) -> None:
    meta_path = part / "metadata.json"
    prefix = part.relative_to(root).as_posix()
    if not meta_path.is_file():
        builder.problem(0, f"{prefix}: no metadata.json; its videos are left out")
        return
    try:
        entries = load_json(meta_path)
    except DatasetError as exc:
        builder.problem(0, f"{exc}; the part is left out")
        return
    if not isinstance(entries, dict):
        builder.problem(0, f"{meta_path}: expected an object of file name -> entry; the part is left out")
        return
    for n, (name, entry) in enumerate(entries.items(), start=1):
        where = f"{prefix}/metadata.json entry {name!r}: "
        if not isinstance(entry, dict) or entry.get("label") not in _LABELS:
            builder.problem(n, f"{where}missing or unknown label (expected REAL or FAKE)")
            continue
        split = entry.get("split", "train")
        if split not in _KNOWN_SPLITS:
            builder.problem(n, f"{where}unknown split {split!r} (expected {', '.join(_KNOWN_SPLITS)})")
            continue
        if "/" in str(name) or "\\" in str(name):
            builder.problem(n, f"{where}a file name with a folder in it")
            continue
        rel = builder.relpath(n, f"{prefix}/{name}", where)
        if rel is None:
            continue
        fake = _LABELS[entry["label"]]
        original = entry.get("original")
        if fake and not (isinstance(original, str) and original.strip()):
            builder.problem(n, f"{where}a FAKE without its original; grouped on its own", rel, skipped=False)
            original = None
        family = Path(original).stem if fake and original else Path(name).stem
        builder.add(
            n,
            rel,
            video_label=fake,
            identity=family,
            method="fake" if fake else "real",
            metadata={"original": original, "part": part.name},
            split_pool=pool,
        )


def _read_test(root: Path, builder: CatalogBuilder) -> bool:
    """Add ``test/`` videos labelled by ``test/labels.csv``; False when there is no test set."""
    labels = root / "test" / "labels.csv"
    if not labels.is_file():
        return False
    try:
        with open(labels, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{labels}: cannot read: {exc}") from None
    if rows and not {"filename", "label"} <= set(rows[0]):
        raise DatasetError(f"{labels}: expected the columns filename,label; got {','.join(rows[0])}")
    for n, row in enumerate(rows, start=2):
        if row.get("label", "").strip() not in ("0", "1"):
            builder.problem(n, f"test/labels.csv: label {row.get('label')!r} is not 0 or 1")
            continue
        rel = builder.relpath(n, f"test/{(row.get('filename') or '').strip()}", "test/labels.csv: ")
        if rel is None:
            continue
        fake = int(row["label"])
        stem = Path(rel).stem
        builder.add(n, rel, video_label=fake, identity=f"test_{stem}", method="fake" if fake else "real", split="test")
    return True


def read_catalog(root: str | Path, label_policy: str = "video") -> Catalog:
    """Read DFDC's part metadata (and ``test/``) into records.

    Args:
        root: The folder holding the ``dfdc_train_part_N`` folders.
        label_policy: ``video`` (or ``multimodal``: the same, DFDC labels whole videos).

    Returns:
        The catalog.

    Raises:
        DatasetError: No DFDC part folder at or next to ``root``, or an unreadable ``test/labels.csv``.
        ConfigError: Unknown label policy.
    """
    if label_policy not in VIDEO_ONLY_POLICIES:
        raise ConfigError(f"unknown label policy {label_policy!r} for dfdc; must be one of {', '.join(VIDEO_ONLY_POLICIES)}")
    root = locate_root(root, lambda p: any(c.is_dir() and c.name.startswith(_PART_PREFIX) for c in p.iterdir()), "dfdc_train_part_N/ folders")
    builder = CatalogBuilder(root, "dfdc", VIDEO_ONLY_POLICIES[label_policy])
    has_test = _read_test(root, builder)
    pool = ("train", "val") if has_test else ("train", "val", "test")
    for part in _parts(root):
        _read_part(root, part, builder, pool)
    return Catalog(name=DATASET_NAME, records=builder.records_sorted(), problems=builder.problems)


#: The registered dataset (``--dataset dfdc``).
CATALOG = DatasetCatalog(SPEC, read_catalog)
