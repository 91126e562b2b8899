"""LAV-DF catalog: one ``metadata.json`` list with official splits and fake periods in seconds.

Layout (ControlNet/LAV-DF, ``dataset/lavdf.py``)::

    metadata.json          [{"file": "train/000001.mp4", "split": "train"|"dev"|"test",
                             "modify_video": bool, "modify_audio": bool,
                             "fake_periods": [[start_s, end_s], ...], "original": str|null, ...}]
    train/000001.mp4, dev/..., test/...

``metadata.min.json`` (the same without transcripts) is read when ``metadata.json``
is absent. The ``split`` field is the official split, ``dev`` becoming ``val``.
The fake periods apply to each modified track: they become the sample's
``fake_segments`` and, per modality, ``visual_fake_segments`` /
``audio_fake_segments``; the pipeline turns them into per-frame labels. The
metadata lists 136,304 entries for 138,010 files on disk: files without an entry
are reported, never guessed.
"""

from __future__ import annotations

from pathlib import Path

from src.datasets.catalog import AUDIO_VISUAL_POLICIES, Catalog, DatasetCatalog, DatasetSpec
from src.datasets.layout import CatalogBuilder, file_entries, list_videos, locate_root, parse_segments
from src.errors import ConfigError

__all__ = ["CATALOG", "DATASET_NAME", "SPEC", "read_catalog"]

DATASET_NAME = "LAV-DF"
_META_FILES = ("metadata.json", "metadata.min.json")
_SPLITS = {"train": "train", "dev": "val", "val": "val", "test": "test"}
_METHODS = {(0, 0): "real", (1, 0): "visual_modified", (0, 1): "audio_modified", (1, 1): "both_modified"}

SPEC = DatasetSpec(
    label_policies=AUDIO_VISUAL_POLICIES,
    index_fields=("label", "method"),
    summary_fields=("video_path", "label", "method", "video_label", "audio_label", "split_origin", "num_frames", "face_found", "has_audio"),
    count_fields=("label", "method", "split_origin"),
    dir_name=DATASET_NAME,
)


def _flag(entry: dict, name: str) -> int:
    value = entry.get(name, False)
    if not isinstance(value, bool) and value not in (0, 1):
        raise ValueError(f"{name} must be true or false; got {value!r}")
    return int(value)


def read_catalog(root: str | Path, label_policy: str = "multimodal") -> Catalog:
    """Read LAV-DF's metadata into records with official splits and fake segments.

    Args:
        root: The LAV-DF root (holding ``metadata.json``).
        label_policy: ``multimodal``, ``video`` or ``audio``.

    Returns:
        The catalog.

    Raises:
        DatasetError: No metadata at or next to ``root``, malformed JSON, or not a list.
        ConfigError: Unknown label policy.
    """
    if label_policy not in AUDIO_VISUAL_POLICIES:
        raise ConfigError(f"unknown label policy {label_policy!r} for lavdf; must be one of {', '.join(AUDIO_VISUAL_POLICIES)}")
    root = locate_root(root, lambda p: any((p / m).is_file() for m in _META_FILES), "metadata.json")
    meta_path = next(root / m for m in _META_FILES if (root / m).is_file())
    builder = CatalogBuilder(root, "lavdf", AUDIO_VISUAL_POLICIES[label_policy])
    for n, entry, rel, where in file_entries(meta_path, builder):
        split = _SPLITS.get(entry.get("split"))
        if split is None:
            builder.problem(n, f"{where}unknown split {entry.get('split')!r} (expected train, dev or test)", rel)
            continue
        try:
            video, audio = _flag(entry, "modify_video"), _flag(entry, "modify_audio")
            periods = parse_segments(entry.get("fake_periods"), "fake_periods")
        except ValueError as exc:
            builder.problem(n, f"{where}{exc}", rel)
            continue
        if (video or audio) and not periods:
            builder.problem(n, f"{where}modified but without fake_periods: no frame labels", rel, skipped=False)
        original = entry.get("original")
        builder.add(
            n,
            rel,
            video_label=video,
            audio_label=audio,
            identity=Path(original).stem if isinstance(original, str) and original else Path(rel).stem,
            method=_METHODS[video, audio],
            metadata={
                "original": original,
                "fake_segments": periods,
                "visual_fake_segments": periods if video else [],
                "audio_fake_segments": periods if audio else [],
                "duration_s": entry.get("duration"),
            },
            split=split,
        )
    listed = set(builder.records)
    for path in (p for d in ("train", "dev", "test") for p in list_videos(root / d)):
        rel = path.relative_to(root).as_posix()
        if rel not in listed:
            builder.problem(0, f"{rel} is on disk but has no {meta_path.name} entry; left out", rel)
    return Catalog(name=DATASET_NAME, records=builder.records_sorted(), problems=builder.problems)


#: The registered dataset (``--dataset lavdf``).
CATALOG = DatasetCatalog(SPEC, read_catalog)
