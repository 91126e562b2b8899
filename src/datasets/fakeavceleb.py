"""FakeAVCeleb v1.2 catalog: ``meta_data.csv`` and its quirks live here and only here.

The real file's quirks (all handled):

* The header is ``source,target1,target2,method,category,type,race,gender,path,``
  with a trailing comma: the unnamed 10th column holds the directory, prefixed
  ``FakeAVCeleb/``, while ``path`` holds only the file name.
* Directory names contain spaces and parentheses (``Asian (East)``).
* File names repeat across identities, so a video is keyed by its full relative path.
* 22 files are listed twice (once as ``faceswap-wav2lip``, once as ``wav2lip``):
  the first row wins and the duplicate is reported.
* Rows pointing outside the dataset root (``..``, absolute paths) are refused.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path, PurePosixPath

from src.datasets.catalog import AUDIO_VISUAL_POLICIES, Catalog, CatalogProblem, DatasetCatalog, DatasetSpec, VideoRecord
from src.datasets.layout import locate_root
from src.errors import ConfigError, DatasetError

__all__ = [
    "CATALOG",
    "CATEGORY_LABELS",
    "DATASET_NAME",
    "EXPECTED_HEADER",
    "LABEL_POLICIES",
    "LINKED_IDENTITY_FIELDS",
    "META_FILE",
    "SPEC",
    "labels_for",
    "read_catalog",
]

logger = logging.getLogger(__name__)

DATASET_NAME = "FakeAVCeleb_v1.2"
META_FILE = "meta_data.csv"
EXPECTED_HEADER = ("source", "target1", "target2", "method", "category", "type", "race", "gender", "path")
#: category -> (video_label, audio_label)
CATEGORY_LABELS = {"A": (0, 0), "B": (0, 1), "C": (1, 0), "D": (1, 1)}
_DIR_PREFIXES = ("FakeAVCeleb/", "FakeAVCeleb_v1.2/")


LABEL_POLICIES = AUDIO_VISUAL_POLICIES
#: Identity columns of a fake besides its source (a face swap's targets); "-" means none.
LINKED_IDENTITY_FIELDS = ("target1", "target2")
_NO_IDENTITY = ("", "-")

#: What the pipeline needs to know about FakeAVCeleb (the spec's index fields and metadata.json fields).
SPEC = DatasetSpec(
    label_policies=LABEL_POLICIES,
    index_fields=("label", "category", "method"),
    summary_fields=("video_path", "label", "category", "method", "source", "split_origin", "num_frames", "face_found", "has_audio"),
    count_fields=("label", "category", "method"),
    dir_name=DATASET_NAME,
)


def labels_for(category: str, policy: str) -> tuple[int, int, int]:
    """Return ``(label, video_label, audio_label)`` of a category under a label policy.

    Raises:
        ConfigError: Unknown policy.
        KeyError: Unknown category.
    """
    if policy not in LABEL_POLICIES:
        raise ConfigError(f"unknown label policy {policy!r}; must be one of {', '.join(LABEL_POLICIES)}")
    video, audio = CATEGORY_LABELS[category]
    return LABEL_POLICIES[policy](video, audio), video, audio


def _relpath(directory: str, filename: str) -> str | None:
    """Join the CSV's directory column and file name into a safe relative path, or None."""
    directory = directory.strip().replace("\\", "/")
    for prefix in _DIR_PREFIXES:
        if directory.startswith(prefix):
            directory = directory[len(prefix) :]
            break
    rel = PurePosixPath(directory) / filename.strip().replace("\\", "/")
    if rel.is_absolute() or ".." in rel.parts or not filename.strip():
        return None
    return rel.as_posix()


def read_catalog(root: str | Path, label_policy: str = "multimodal") -> Catalog:
    """Read FakeAVCeleb v1.2's ``meta_data.csv`` into video records.

    Args:
        root: The dataset root (the folder holding ``meta_data.csv``).
        label_policy: ``multimodal`` (fake if video or audio is fake), ``video`` or ``audio``.

    Returns:
        The catalog: usable records sorted by relative path, and skipped rows.

    Raises:
        DatasetError: Missing root or metadata file, or an unexpected header.
        ConfigError: Unknown label policy.
    """
    if label_policy not in LABEL_POLICIES:
        raise ConfigError(f"unknown label policy {label_policy!r}; must be one of {', '.join(LABEL_POLICIES)}")
    root = locate_root(root, lambda p: (p / META_FILE).is_file(), f"{META_FILE} (the FakeAVCeleb_v1.2 folder)")
    meta_path = root / META_FILE
    real_root = root.resolve()
    records: dict[str, VideoRecord] = {}
    problems: list[CatalogProblem] = []
    try:
        with open(meta_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{meta_path}: cannot read: {exc}") from None
    if not rows or tuple(c.strip() for c in rows[0][: len(EXPECTED_HEADER)]) != EXPECTED_HEADER:
        got = ",".join(rows[0]) if rows else "(empty file)"
        raise DatasetError(f"{meta_path}: unexpected header {got!r}; expected {','.join(EXPECTED_HEADER)}, (with the trailing comma)")

    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < 10:
            problems.append(CatalogProblem(line, f"malformed row: {len(row)} columns, expected 10"))
            continue
        fields = dict(zip(EXPECTED_HEADER, (c.strip() for c in row)))
        rel = _relpath(row[9], fields["path"])
        if rel is None:
            problems.append(CatalogProblem(line, f"path escapes the input root or is empty: {row[9]!r} / {fields['path']!r}"))
            continue
        if not (real_root / rel).resolve().is_relative_to(real_root):
            problems.append(CatalogProblem(line, "path escapes the input root through a symbolic link", rel))
            continue
        category = fields["category"]
        if category not in CATEGORY_LABELS:
            problems.append(CatalogProblem(line, f"unknown category {category!r}; expected one of A, B, C, D", rel))
            continue
        if not fields["source"]:
            problems.append(CatalogProblem(line, "empty source identity", rel))
            continue
        if rel in records:
            kept = records[rel].metadata["method"]
            problems.append(CatalogProblem(line, f"duplicate row for {rel} (method {fields['method']}); kept the first row (method {kept})", rel))
            continue
        label, video_label, audio_label = labels_for(category, label_policy)
        metadata = {k: fields[k] for k in ("category", "method", "source", "target1", "target2", "type", "gender", "race")}
        metadata.update(dataset="fakeavceleb", video_path=rel)
        records[rel] = VideoRecord(
            relpath=rel,
            path=root / rel,
            label=label,
            video_label=video_label,
            audio_label=audio_label,
            identity=fields["source"],
            metadata=metadata,
            linked_identities=tuple(fields[k] for k in LINKED_IDENTITY_FIELDS if fields[k] not in _NO_IDENTITY),
        )
    if problems:
        logger.warning("%s: skipped %d of %d rows (see the run report)", meta_path, len(problems), len(rows) - 1)
    return Catalog(name=DATASET_NAME, records=[records[k] for k in sorted(records)], problems=problems)


#: The registered dataset (``--dataset fakeavceleb``).
CATALOG = DatasetCatalog(SPEC, read_catalog)
